"""Choosing the trained model by what it will be used for: a dense fill of validation data.

Training keeps ``BASE.pt`` at the epoch with the best validation F-score of its
subvolume fills, which are bounded by one FOV-sized box each: such a score cannot see a
region that runs on across neurons, and a model that floods can have the best F-score
of its run. With ``[training] select_by = "dense_fill"`` training also keeps the
``select_candidates`` best epochs by that score (``BASE.candidates/``), and
:func:`select_model` fills a ``select_fill_shape`` box at the centre of every validation
part densely with each of them, as ``diluvian fill`` would (seeds, flood guards,
claiming), scores it against the labels (CREMI protocol, 25 nm border) and makes the
candidate with the lowest mean CREMI score ``BASE.pt``. Only the validation partition
is used, which is where the checkpoint is chosen anyway.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .claim import claim_result
from .config import Config
from .evaluate import evaluate_volumes
from .fill.box import fill_box
from .network import check_model_config, load_model
from .training.data import prepare_training_volumes
from .util import atomic_path

log = logging.getLogger(__name__)

__all__ = ["CandidateScore", "SelectionResult", "centre_box", "score_by_dense_fill", "select_model"]


@dataclass
class CandidateScore:
    """One candidate's dense-fill scores."""

    model_file: Path
    epoch: int | None
    val_metric: float
    cremi: float
    voi_split: float
    voi_merge: float
    adapted_rand_error: float
    seconds: float


@dataclass
class SelectionResult:
    """What :func:`select_model` chose and why."""

    chosen: CandidateScore
    candidates: list[CandidateScore] = field(default_factory=list)
    model_file: Path | None = None

    def summary(self) -> str:
        rows = ", ".join(f"epoch {c.epoch}: CREMI {c.cremi:.3f} (val F {c.val_metric:.3f})" for c in self.candidates)
        return f"model selection by dense fill: epoch {self.chosen.epoch} chosen of {rows}; {self.model_file}"


def centre_box(shape: Sequence[int], box_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A ``box_shape`` box (clipped to ``shape``) at the centre of a volume of ``shape``."""
    shape = np.asarray(shape, dtype=np.int64)
    size = np.minimum(np.asarray(box_shape, dtype=np.int64), shape)
    start = (shape - size) // 2
    return start, start + size


def score_by_dense_fill(model: Any, cfg: Config, volumes: Mapping[str, Any], box_shape: Sequence[int], *,
                        seed: int = 0) -> dict[str, float]:
    """Mean CREMI scores of dense fills of a centred box of each volume (they need labels).

    The box is filled as ``diluvian fill`` fills a volume (``cfg``'s seeds, ``[fill]`` and
    flood guards), its unclaimed voxels claimed as ``fill`` does, and scored against the
    volume's labels with the CREMI protocol (25 nm border, at the volume's resolution).

    Returns
    -------
    dict
        ``cremi``, ``voi_split``, ``voi_merge``, ``adapted_rand_error``: means over the volumes.
    """
    rows = []
    for name, volume in volumes.items():
        start, stop = centre_box(volume.shape[-3:], box_shape)
        result = fill_box(volume, model, cfg, (start, stop), rng=np.random.default_rng(seed), progress=False)
        image = volume.get_image(start, stop)
        labels = claim_result(image, result, cfg, int(cfg.fill.background_label_id)).labels
        gt = volume.get_labels(start, stop)
        scores = evaluate_volumes(gt, labels, border_threshold_nm=25.0, resolution=volume.resolution, progress=False)
        log.debug("%s %s-%s: %s", name, start.tolist(), stop.tolist(), scores.cremi_score)
        rows.append((scores.cremi_score, scores.voi_split, scores.voi_merge, scores.adapted_rand_error))
    cremi, split, merge, arand = (float(np.mean(column)) for column in zip(*rows))
    return {"cremi": cremi, "voi_split": split, "voi_merge": merge, "adapted_rand_error": arand}


def select_model(candidates: Sequence[str | os.PathLike], volumes: Mapping[str, Any], cfg: Config,
                 model_file: str | os.PathLike | None = None, *, device: Any = "cpu") -> SelectionResult:
    """Score candidate model files by dense fills of the validation parts; copy the best to ``model_file``.

    Parameters
    ----------
    candidates : sequence of path-like
        Model files, best validation metric first (``TrainingResult.candidates``); ties in
        the CREMI score go to the earlier one.
    volumes : mapping of name -> Volume
        The volumes training used (labelled); their ``[training]`` validation parts are filled.
    cfg : Config
        The training config (partitions, ``select_fill_shape``, ``[fill]``, ``[postprocessing]``).
    model_file : path-like, optional
        Where the chosen model goes (written atomically); None leaves files as they are.
    device : torch device for the candidates' networks.

    Returns
    -------
    SelectionResult
    """
    if not candidates:
        raise ValueError("select_model: no candidate model files")
    scored = []
    val_vols: dict[str, Any] | None = None
    for path in candidates:
        t0 = time.perf_counter()
        model, file_cfg, info = load_model(path, device)
        fill_cfg = check_model_config(file_cfg, cfg, explicitly_set=False, model_file=path)
        if val_vols is None:
            _, val_vols = prepare_training_volumes(fill_cfg, volumes, need_training=False)
        scores = score_by_dense_fill(model, fill_cfg, val_vols, fill_cfg.training.select_fill_shape,
                                     seed=int(fill_cfg.random_seed))
        metrics = info.get("metrics") or {}
        row = CandidateScore(Path(path), info.get("epoch"), float(metrics.get("val_subv_metric", np.nan)),
                             scores["cremi"], scores["voi_split"],
                             scores["voi_merge"], scores["adapted_rand_error"], time.perf_counter() - t0)
        log.info("candidate %s (epoch %s, val_subv_metric %.4f): dense fill CREMI %.4f (VOI split %.3f, merge %.3f, "
                 "ARAND %.3f) in %.0f s", Path(path).name, row.epoch, row.val_metric, row.cremi, row.voi_split,
                 row.voi_merge, row.adapted_rand_error, row.seconds)
        scored.append(row)
    chosen = min(scored, key=lambda c: (c.cremi if np.isfinite(c.cremi) else np.inf))
    if model_file is not None:
        with atomic_path(model_file, suffix=".pt") as tmp:
            shutil.copyfile(chosen.model_file, tmp)
    result = SelectionResult(chosen=chosen, candidates=scored, model_file=Path(model_file) if model_file else None)
    log.info("%s", result.summary())
    return result
