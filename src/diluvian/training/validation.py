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


def run_validation(model: torch.nn.Module, subvolumes: Sequence[PreparedSubvolume], cfg: Config, *,
                   device: Any = None, batch_size: int | None = None, keep_regions: int = 0,
                   progress: bool = False) -> tuple[ValidationResult, list[Region]]:
    """Fill every validation subvolume to completion (batched across regions) and score it.

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
    kept: list[Region] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
    loss_count = 0
    active: list[tuple[int, Region]] = []
    next_index = 0
    model.eval()
    bar = progress_bar(total=n, desc="validation", enabled=progress)
    with torch.inference_mode():
        while True:
            candidates = active
            active = []
            blocks: list[Block] = []
            while len(blocks) < batch_size and (candidates or next_index < n):
                if candidates:
                    i, region = candidates.pop(0)
                else:
                    sub = subvolumes[next_index]
                    i, region = next_index, Region(sub.image, cfg.model, sub.seed, target=sub.target,
                                                   rng=np.random.default_rng(next_index))
                    next_index += 1
                block = region.get_next_block()
                if block is None:
                    scores[i] = float(region.prediction_metric(metric, vm.threshold))
                    moves[i] = region.moves
                    if i < keep_regions:
                        kept.append(region)
                    bar.update(1)
                    continue
                blocks.append(block)
                active.append((i, region))
            if not blocks:
                break
            images = setup.tensor(np.stack([b.image for b in blocks]))
            masks = setup.tensor(np.stack([b.mask for b in blocks]))
            targets = torch.from_numpy(np.stack([b.target for b in blocks])).unsqueeze(1).to(setup.device)
            with setup.autocast_context():
                logits = model(images, masks)
            loss_sum += _sample_losses(logits, targets).double().sum()
            loss_count += len(blocks)
            probs = torch.sigmoid(logits.float()).cpu().numpy()
            for (i, region), block, out in zip(active, blocks, probs):
                region.add_mask(block, out[0])
    bar.close()
    val_loss = float(loss_sum.item() / max(loss_count, 1))
    mean = float(np.mean(scores)) if n else math.nan
    return ValidationResult(metric=mean, per_subvolume=scores, loss=val_loss, moves=moves), kept


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
