"""Validation: fill each fixed validation subvolume to completion and score it.

Every epoch each validation region is filled with the network in eval mode,
many regions batched per forward pass, and scored with ``validation_metric``
over the area its output FOVs can cover (:func:`run_validation`).
:func:`validate_model` does the same for a model file.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..config import Config
from ..device import DeviceSetup
from ..metrics import get_metric
from ..network import check_model_config, load_model
from ..region import Block, Region
from ..stepper import fill_regions
from .data import PreparedSubvolume, prepare_training_volumes, validation_subvolumes
from .objective import _sample_losses
from .outputs import progress_bar

__all__ = ["ValidationResult", "run_validation", "validate_model"]


@dataclass
class ValidationResult:
    """Result of validating a model on the fixed validation set.

    Attributes
    ----------
    metric : float
        Mean per-subvolume ``validation_metric`` (``val_subv_metric``).
    per_subvolume : list of float
    loss : float
        Mean BCE over all validation FOVs (``val_loss``).
    moves : list of int
        Moves per validation subvolume.
    """

    metric: float
    per_subvolume: list[float]
    loss: float
    moves: list[int] = field(default_factory=list)


class _ValidationPredictor:
    """The network in eval mode as a stepper predictor; keeps the last batch's logits for the loss."""

    asynchronous = False

    def __init__(self, model: torch.nn.Module, setup: DeviceSetup) -> None:
        self.model = model
        self.setup = setup
        self.device_type = setup.device.type
        self.logits: torch.Tensor | None = None
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
        self.loss_count = 0

    def submit(self, images: Any, masks: Any) -> np.ndarray:
        setup = self.setup
        x = setup.tensor(np.stack(images) if isinstance(images, list) else images)
        m = setup.tensor(np.stack(masks) if isinstance(masks, list) else masks)
        with setup.autocast_context():
            self.logits = self.model(x, m)
        return torch.sigmoid(self.logits.float()).cpu().numpy()[:, 0]

    def result(self, handle: np.ndarray) -> np.ndarray:
        return handle

    def add_loss(self, blocks: list[Block]) -> None:
        """BCE of the last batch's logits against its blocks' targets."""
        targets = torch.from_numpy(np.stack([b.target for b in blocks])).unsqueeze(1).to(self.setup.device)
        self.loss_sum += _sample_losses(self.logits, targets).double().sum()
        self.loss_count += len(blocks)


def run_validation(model: torch.nn.Module, subvolumes: Sequence[PreparedSubvolume], cfg: Config, *,
                   device: Any = None, batch_size: int | None = None, keep_regions: int = 0,
                   progress: bool = False) -> tuple[ValidationResult, list[Region]]:
    """Fill every validation subvolume to completion (batched across regions) and score it.

    The regions step through the fill's own stepper (:func:`diluvian.stepper.fill_regions`),
    one move per region per forward pass.

    Parameters
    ----------
    model : FloodFillNetwork
        Put in eval mode (left so).
    subvolumes : list of PreparedSubvolume
    batch_size : int, optional
        FOVs per forward pass (default ``training.batch_size``).
    keep_regions : int
        Return the first this many finished regions (for snapshots).

    Returns
    -------
    (ValidationResult, regions)
    """
    setup = DeviceSetup.from_config(cfg, device if device is not None else next(model.parameters()).device)
    batch_size = batch_size or cfg.training.batch_size
    vm = cfg.training.validation_metric
    metric = get_metric(vm.metric, vm.beta)
    n = len(subvolumes)
    scores: list[float] = [math.nan] * n
    moves: list[int] = [0] * n
    kept: dict[int, Region] = {}
    model.eval()
    predictor = _ValidationPredictor(model, setup)
    bar = progress_bar(total=n, desc="validation", enabled=progress)

    def regions():
        for i, sub in enumerate(subvolumes):
            yield Region(sub.image, cfg.model, sub.seed, target=sub.target, rng=np.random.default_rng(i))

    def done(i: int, region: Region, reason: str) -> None:
        scores[i] = float(region.prediction_metric(metric, vm.threshold))
        moves[i] = region.moves
        if i < keep_regions:
            kept[i] = region
        bar.update(1)

    with torch.inference_mode():
        fill_regions(regions(), predictor, move_batch_size=batch_size, on_done=done, on_batch=predictor.add_loss)
    kept_regions = [kept[i] for i in sorted(kept)]
    loss_sum, loss_count = predictor.loss_sum, predictor.loss_count
    bar.close()
    val_loss = float(loss_sum.item() / max(loss_count, 1))
    mean = float(np.mean(scores)) if n else math.nan
    return ValidationResult(metric=mean, per_subvolume=scores, loss=val_loss, moves=moves), kept_regions


def validate_model(cfg: Config, volumes: Mapping[str, Any], model_file: str | os.PathLike, *, device: Any = None,
                   progress: bool | None = None) -> ValidationResult:
    """Score a model on the fixed validation set of ``cfg`` (as training does every epoch).

    The model file's ``[network]`` and FOVs are used; the rest (partitions,
    ``validation_size``, metric, resolution ...) comes from ``cfg``.

    Raises
    ------
    ModelError
        ``model_file`` is not a diluvian model.
    DataError, ConfigError
        Unusable volumes or partitions.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    setup = DeviceSetup.from_config(cfg, device)
    model, file_cfg, _ = load_model(model_file, "cpu")
    cfg = check_model_config(file_cfg, cfg, explicitly_set=False, model_file=model_file)
    _, val_vols = prepare_training_volumes(cfg, volumes, need_training=False)
    model = setup.prepare_model(model)
    val_set = validation_subvolumes(cfg, val_vols)
    result, _ = run_validation(model, val_set, cfg, device=setup.device, progress=progress)
    return result
