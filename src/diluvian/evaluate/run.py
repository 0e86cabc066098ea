"""What ``diluvian evaluate`` runs: score two label sources given by name or spec, write the scores."""

from __future__ import annotations

import json
import os
from typing import Any

from ..util import atomic_path
from .chunked import evaluate_volumes
from .scores import SegmentationScores
from .sources import label_pair

__all__ = ["evaluate_named_volumes", "write_scores_json"]


def evaluate_named_volumes(volumes: dict, ground_truth: str, prediction: str, *, partition: tuple | None = None,
                           **kwargs: Any) -> SegmentationScores:
    """Evaluate two volumes given by name (from dataset TOMLs) or as ``FILE.h5:dataset`` specs.

    Parameters
    ----------
    volumes : dict of str -> Volume
        Volumes loaded from the ``-v`` dataset files.
    ground_truth, prediction : str
        Volume names, or direct array specs (see :func:`~diluvian.evaluate.open_label_array`).
    partition : (partitioning, index), optional
        Evaluate only this partition of the ground truth (see
        :func:`~diluvian.evaluate.sources.label_pair`).
    **kwargs
        Passed to :func:`~diluvian.evaluate.evaluate_volumes` (``border_threshold_nm``,
        ``pred_zero``, ``chunk_shape`` ...). ``resolution`` (nm) replaces the sources'
        resolution for the border mask.

    Raises
    ------
    DatasetNotFoundError
        A name is neither a loaded volume nor an existing array.
    DataError
        Different resolutions or shapes, no labels, non-integer labels.
    """
    gt, pred, resolution = label_pair(volumes, ground_truth, prediction, partition=partition)
    if kwargs.get("resolution") is None:
        kwargs["resolution"] = resolution
    return evaluate_volumes(gt, pred, **kwargs)


def write_scores_json(scores: SegmentationScores, path: str | os.PathLike) -> None:
    """Write every number and option of ``scores`` to ``path`` as JSON (atomically)."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(scores.to_dict(), indent=2) + "\n")
