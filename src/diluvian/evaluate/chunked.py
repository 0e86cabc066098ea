"""CREMI evaluation of two label array-likes, block by block: border mask, table, scores."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError
from ..volumes.base import as_resolution
from .border import _border_mask_block
from .scores import SegmentationScores, _check_pred_zero, compute_scores
from .table import ContingencyTable, _check_int_dtype

__all__ = ["evaluate_volumes"]

logger = logging.getLogger(__name__)


def _as_chunk_shape(value: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in value)
        ok = len(shape) == 3 and all(s > 0 for s in shape) and all(int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"chunk_shape: expected 3 positive ints (Z, Y, X), got {value!r}")
    return shape  # type: ignore[return-value]


def evaluate_volumes(gt: Any, pred: Any, *, border_threshold_nm: float | None = 25.0,
                     resolution: ArrayLike | None = None, pred_zero: str = "cremi",
                     chunk_shape: Sequence[int] = (32, 512, 512), n_worst: int = 10,
                     progress: bool = True) -> SegmentationScores:
    """CREMI evaluation of a predicted segmentation against a GT, chunk by chunk.

    Parameters
    ----------
    gt, pred : array-like of int, shape (Z, Y, X)
        GT and predicted labels: anything with ``.shape``, ``.dtype`` and numpy
        slicing (numpy arrays, h5py datasets, zarr arrays). Any integer dtype.
    border_threshold_nm : float or None
        CREMI border threshold, nm (25 on the CREMI leaderboard). GT pixels
        within this distance of a label boundary in their Z section are not
        evaluated (see :func:`border_mask`). None or 0 disables the mask (as
        cremi_python, which skips masking for a falsy threshold).
    resolution : 3 floats, optional
        Voxel size in nm, ZYX. Needed when the border mask is on; Y and X must
        be equal (the threshold in pixels is ``border_threshold_nm / resolution[1]``).
    pred_zero : {"cremi", "segment"}
        Handling of prediction label 0 (see the module docstring).
    chunk_shape : 3 ints
        Block size read at a time (memory is bounded by it and the table). With
        the border mask on, blocks are read with an in-plane halo of
        ``ceil(threshold_px) + 1`` pixels so the result does not depend on it.
    n_worst : int
        Number of worst splits and merges to list.
    progress : bool
        Show a tqdm progress bar over the chunks.

    Returns
    -------
    SegmentationScores
        Identical (bit for bit) for every ``chunk_shape``.

    Raises
    ------
    DataError
        The shapes differ, an array is not 3D or not of an integer dtype, the
        border threshold is negative, the resolution is missing or has
        different Y and X, or nothing is left to evaluate.
    ConfigError
        ``pred_zero``, ``chunk_shape`` or ``n_worst`` is invalid.

    Notes
    -----
    See :func:`compute_scores` for the formulas.
    """
    gt_shape, pred_shape = tuple(gt.shape), tuple(pred.shape)
    if gt_shape != pred_shape:
        raise DataError(f"shapes differ: ground truth {list(gt_shape)}, prediction {list(pred_shape)}")
    if len(gt_shape) != 3:
        raise DataError(f"expected 3D (Z, Y, X) label arrays, got shape {list(gt_shape)}")
    _check_int_dtype(gt.dtype, "ground truth")
    _check_int_dtype(pred.dtype, "prediction")
    _check_pred_zero(pred_zero)
    if not isinstance(n_worst, (int, np.integer)) or n_worst < 0:
        raise ConfigError(f"n_worst: expected an int >= 0, got {n_worst!r}")
    chunk = _as_chunk_shape(chunk_shape)
    threshold_px: float | None = None
    if border_threshold_nm is not None:
        if not border_threshold_nm >= 0:
            raise DataError(f"border threshold must be >= 0 nm, got {border_threshold_nm}")
        if border_threshold_nm > 0:
            if resolution is None:
                raise DataError(f"border threshold {border_threshold_nm} nm needs the resolution; "
                                "pass resolution=(z, y, x) nm or border_threshold_nm=0")
            res = as_resolution(resolution, "evaluate")
            if res[1] != res[2]:
                raise DataError(f"resolution: the border mask needs equal Y and X resolutions, "
                                f"got {res.tolist()}")
            threshold_px = float(border_threshold_nm) / float(res[1])
    halo = math.ceil(threshold_px) + 1 if threshold_px is not None else 0

    from tqdm import tqdm

    table = ContingencyTable()
    starts = [range(0, size, step) for size, step in zip(gt_shape, chunk)]
    n_chunks = math.prod(len(r) for r in starts)
    with tqdm(total=n_chunks, desc="evaluate", unit="chunk", disable=not progress) as bar:
        for z0 in starts[0]:
            z1 = min(z0 + chunk[0], gt_shape[0])
            for y0 in starts[1]:
                y1 = min(y0 + chunk[1], gt_shape[1])
                for x0 in starts[2]:
                    x1 = min(x0 + chunk[2], gt_shape[2])
                    pred_block = np.asarray(pred[z0:z1, y0:y1, x0:x1])
                    if threshold_px is None:
                        table.add(np.asarray(gt[z0:z1, y0:y1, x0:x1]), pred_block)
                    else:
                        hy0, hy1 = max(y0 - halo, 0), min(y1 + halo, gt_shape[1])
                        hx0, hx1 = max(x0 - halo, 0), min(x1 + halo, gt_shape[2])
                        gt_halo = np.asarray(gt[z0:z1, hy0:hy1, hx0:hx1])
                        excluded = _border_mask_block(gt_halo, threshold_px)
                        core = (slice(None), slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0))
                        table.add(gt_halo[core], pred_block, valid_mask=~excluded[core])
                    bar.update(1)
    logger.debug("contingency table: %d pairs", table.n_pairs)
    return compute_scores(table, pred_zero=pred_zero, n_worst=n_worst,
                          border_threshold_nm=None if threshold_px is None else border_threshold_nm,
                          border_threshold_px=threshold_px)
