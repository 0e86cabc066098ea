"""CREMI segmentation metrics (VOI, adapted Rand error, CREMI score), chunked and exact.

Every metric here is a function of the *contingency table* ``n_ij`` = number of
evaluated voxels with ground-truth (GT) label ``i`` and predicted label ``j``.
:class:`ContingencyTable` accumulates that table chunk by chunk (memory grows
with the number of distinct (GT, prediction) pairs, not with the volume), and
:func:`compute_scores` turns it into a :class:`SegmentationScores`. Because the
table holds exact integer counts, a chunked evaluation gives bit-for-bit the
same scores as an unchunked one.

:func:`evaluate_volumes` does the whole CREMI procedure on two array-likes
(numpy arrays, h5py datasets, zarr arrays): per-section border masking of the
GT, then the table, then the scores. :func:`open_label_array` opens
``FILE.h5:dataset`` or ``STORE.zarr[:array]`` specs, and :func:`main` is a small
command line (``python -m diluvian.evaluate GT PRED``).

Conventions
-----------
* GT label 0 is not evaluated, nor are GT voxels removed by the border mask.
* Prediction label 0 means "unclaimed" (a fill that reached no object). How it
  counts is the explicit option ``pred_zero``:

  ``"cremi"`` (default)
      as the CREMI evaluation code: one ordinary segment for VOI; for the
      adapted Rand error every prediction-0 voxel is a *singleton* segment of
      its own. This is exact singleton semantics; cremi_python (from gala)
      approximates it by adding ``c / n_total`` instead of ``c`` (see Notes of
      :func:`compute_scores`), a difference of order ``c / Σ n_ij²``.
  ``"segment"``
      prediction 0 is an ordinary segment for both metrics (as waterz and
      scikit-image do).
* Logarithms are base 2: VOI is in bits.

Examples
--------
>>> import numpy as np
>>> gt = np.array([[[1, 1, 2, 2]]])
>>> pred = np.array([[[5, 5, 5, 5]]])                    # a full merge
>>> s = evaluate_volumes(gt, pred, border_threshold_nm=0, progress=False)
>>> (s.voi_split, s.voi_merge)                            # VOI merge = H(GT) = 1 bit
(0.0, 1.0)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import ConfigError, DataError, DatasetNotFoundError, DiluvianError
from .volumes.base import UpsampledLabels, as_resolution

__all__ = [
    "PRED_ZERO_MODES",
    "SplitEntry",
    "MergeEntry",
    "SegmentationScores",
    "ContingencyTable",
    "border_mask",
    "compute_scores",
    "evaluate_volumes",
    "open_label_array",
    "format_scores",
    "main",
]

logger = logging.getLogger(__name__)

PRED_ZERO_MODES = ("cremi", "segment")
"""Valid values of the ``pred_zero`` option (see the module docstring)."""

#: At most this many GT objects are listed per entry of ``worst_merges``.
MAX_MERGED_LISTED = 5

# A pending (not yet reduced) part of the table may grow to this many pairs
# (or twice the reduced table) before it is folded in.
_PENDING_PAIRS = 1 << 20

# Largest dense count table (bins) used per chunk before falling back to a sort.
_MAX_BINS = 1 << 23


# --------------------------------------------------------------------------- results


class SplitEntry(NamedTuple):
    """One GT object in :attr:`SegmentationScores.worst_splits`.

    Attributes
    ----------
    gt_id : int
        GT label.
    voxels : int
        Evaluated voxels of the object (``a_i``).
    voi_split_bits : float
        Its share of VOI split, ``(1/N) Σ_j n_ij log2(a_i / n_ij)``; the shares of
        all GT objects sum to VOI split.
    n_pred_segments : int
        Number of distinct prediction labels it overlaps (label 0 counts as one).
    """

    gt_id: int
    voxels: int
    voi_split_bits: float
    n_pred_segments: int


class MergeEntry(NamedTuple):
    """One predicted segment in :attr:`SegmentationScores.worst_merges`.

    Attributes
    ----------
    pred_id : int
        Prediction label (0 = the unclaimed voxels, one segment for VOI).
    voxels : int
        Evaluated voxels of the segment (``b_j``; GT-0 voxels are not counted).
    voi_merge_bits : float
        Its share of VOI merge, ``(1/N) Σ_i n_ij log2(b_j / n_ij)``; the shares of
        all segments sum to VOI merge.
    n_gt_objects : int
        Number of GT objects it overlaps.
    gt_overlaps : tuple of (gt_id, voxels)
        The GT objects it merges, largest overlap first, at most
        :data:`MAX_MERGED_LISTED` of them (``n_gt_objects`` gives the total).
    """

    pred_id: int
    voxels: int
    voi_merge_bits: float
    n_gt_objects: int
    gt_overlaps: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class SegmentationScores:
    """Scores of a segmentation against a ground truth (see :func:`compute_scores`).

    Attributes
    ----------
    voi_split : float
        ``H(pred | GT)`` in bits: false splits (over-segmentation).
    voi_merge : float
        ``H(GT | pred)`` in bits: false merges (under-segmentation).
    adapted_rand_error : float
        ``1 − 2PR / (P + R)`` (SNEMI3D / CREMI).
    rand_precision, rand_recall : float
        ``P`` and ``R`` of the adapted Rand error.
    cremi_score : float
        ``sqrt(adapted_rand_error × (voi_split + voi_merge))``.
    n_gt_objects : int
        Distinct nonzero GT labels among the evaluated voxels.
    n_pred_objects : int
        Distinct nonzero prediction labels among the evaluated voxels.
    n_voxels_evaluated : int
        ``N``: voxels with GT ≠ 0 outside the border mask.
    fraction_pred_zero : float
        Fraction of the evaluated voxels whose prediction is 0 (unclaimed).
    worst_splits : list of SplitEntry
        The GT objects with the largest shares of VOI split, largest first
        (objects with a zero share are not listed).
    worst_merges : list of MergeEntry
        The predicted segments with the largest shares of VOI merge, largest
        first, each with the GT objects it merges (zero shares not listed).
    border_threshold_nm : float or None
        CREMI border threshold used, nm (None: no border mask).
    border_threshold_px : float or None
        The same in in-plane pixels.
    pred_zero : str
        Handling of prediction label 0, ``"cremi"`` or ``"segment"``.
    """

    voi_split: float
    voi_merge: float
    adapted_rand_error: float
    rand_precision: float
    rand_recall: float
    cremi_score: float
    n_gt_objects: int
    n_pred_objects: int
    n_voxels_evaluated: int
    fraction_pred_zero: float
    worst_splits: list[SplitEntry]
    worst_merges: list[MergeEntry]
    border_threshold_nm: float | None
    border_threshold_px: float | None
    pred_zero: str

    @property
    def voi(self) -> float:
        """``voi_split + voi_merge``, bits."""
        return self.voi_split + self.voi_merge

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict; worst splits/merges as lists of dicts."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.name not in ("worst_splits", "worst_merges"):
                out[field.name] = getattr(self, field.name)
        out["voi"] = self.voi
        out["worst_splits"] = [e._asdict() for e in self.worst_splits]
        out["worst_merges"] = [
            {**e._asdict(), "gt_overlaps": [{"gt_id": g, "voxels": v} for g, v in e.gt_overlaps]}
            for e in self.worst_merges
        ]
        return out


# --------------------------------------------------------------------------- contingency table


def _check_int_dtype(dtype: np.dtype, what: str) -> None:
    if np.dtype(dtype).kind not in "iu":
        raise DataError(f"{what}: expected an integer label dtype, got {np.dtype(dtype)}")


def _id_dtype(dtype: np.dtype) -> np.dtype:
    """Table dtype for ids of ``dtype``: uint64 for unsigned inputs, int64 for signed ones."""
    return np.dtype(np.uint64) if np.dtype(dtype).kind == "u" else np.dtype(np.int64)


def _offsets(values: NDArray[np.integer], lo: Any) -> NDArray[np.intp]:
    """``values - lo`` as intp (exact when the values span a small range, whatever the dtype)."""
    if values.dtype.kind == "u":
        return (values - lo).astype(np.intp, copy=False)
    return values.astype(np.int64) - np.int64(lo)


def _ids_from_offsets(offsets: NDArray[np.integer], lo: Any, dtype: np.dtype) -> NDArray:
    """Inverse of :func:`_offsets`, in the table dtype of ``dtype``."""
    out_dtype = _id_dtype(dtype)
    return offsets.astype(out_dtype) + out_dtype.type(lo)


def _compact(values: NDArray[np.integer]) -> tuple[NDArray[np.integer], NDArray[np.intp]]:
    """``(unique, inverse)`` of a 1-D integer array, like ``np.unique(..., return_inverse=True)``.

    When the values span a range not much larger than their number, a
    bincount/cumsum lookup table replaces the sort (O(n) instead of O(n log n)).
    ``unique`` is in the table dtype (:func:`_id_dtype`).
    """
    if values.size == 0:
        return np.empty(0, _id_dtype(values.dtype)), np.empty(0, np.intp)
    lo, hi = values.min(), values.max()
    span = int(hi) - int(lo) + 1
    if span <= 2 * values.size + (1 << 16):
        offset = _offsets(values, lo)
        present = np.bincount(offset, minlength=span).astype(bool)
        lut = np.cumsum(present, dtype=np.intp) - 1
        return _ids_from_offsets(np.flatnonzero(present), lo, values.dtype), lut[offset]
    unique, inverse = np.unique(values, return_inverse=True)
    return unique.astype(_id_dtype(values.dtype), copy=False), inverse.reshape(-1)


def _count_values(gt: NDArray[np.integer], pred: NDArray[np.integer],
                  weights: NDArray[np.integer] | None) -> tuple[NDArray, NDArray, NDArray[np.int64]]:
    """Sparse ``(gt_ids, pred_ids, counts)``: the (weighted) number of each (gt, pred) pair.

    Pairs are counted with one ``bincount`` on a combined key: of the raw
    offsets from the minima when the two label ranges are small, else of
    compacted ids (or a sort when even the compact key space is large).
    """
    id_dtypes = (_id_dtype(gt.dtype), _id_dtype(pred.dtype))
    if gt.size == 0:
        return np.empty(0, id_dtypes[0]), np.empty(0, id_dtypes[1]), np.empty(0, np.int64)
    limit = max(min(4 * gt.size, _MAX_BINS), 1 << 20)  # dense bincount tables stay small
    g_lo, p_lo = gt.min(), pred.min()
    g_span = int(gt.max()) - int(g_lo) + 1
    p_span = int(pred.max()) - int(p_lo) + 1
    if g_span * p_span <= limit:
        key = _offsets(gt, g_lo) * p_span
        key += _offsets(pred, p_lo)
        summed = np.bincount(key, weights=weights, minlength=g_span * p_span)
        used = np.flatnonzero(summed)
        return (_ids_from_offsets(used // p_span, g_lo, gt.dtype), _ids_from_offsets(used % p_span, p_lo, pred.dtype),
                summed[used].astype(np.int64))
    gt_ids, gt_idx = _compact(gt)
    pred_ids, pred_idx = _compact(pred)
    n_pred = pred_ids.size
    key = gt_idx.astype(np.int64) * n_pred + pred_idx
    if gt_ids.size * n_pred <= limit:
        summed = np.bincount(key, weights=weights, minlength=gt_ids.size * n_pred)
        used = np.flatnonzero(summed)
        counts = summed[used].astype(np.int64)
    else:
        used, inverse = np.unique(key, return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=weights).astype(np.int64)
    return gt_ids[used // n_pred], pred_ids[used % n_pred], counts


def _count_pairs(gt: NDArray[np.integer], pred: NDArray[np.integer]) -> tuple[NDArray, NDArray, NDArray[np.int64]]:
    """Sparse ``(gt_ids, pred_ids, counts)`` of two flat label arrays, GT 0 dropped.

    The arrays are first run-length encoded: labels are piecewise constant
    along X, so there are usually far fewer runs of equal (gt, pred) than
    voxels, and only the runs (weighted by their lengths) are counted. When
    runs are short (noisy labels) the voxels are counted directly.
    """
    n = gt.size
    if n == 0:
        return _count_values(gt, pred, None)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(gt[1:], gt[:-1], out=change[1:])
    change[1:] |= pred[1:] != pred[:-1]
    starts = np.flatnonzero(change)
    del change
    if 3 * starts.size < n:
        lengths = np.diff(starts, append=n)
        gt_runs, pred_runs = gt[starts], pred[starts]
        keep = gt_runs != 0
        if not keep.all():
            gt_runs, pred_runs, lengths = gt_runs[keep], pred_runs[keep], lengths[keep]
        return _count_values(gt_runs, pred_runs, lengths)
    del starts
    gt_ids, pred_ids, counts = _count_values(gt, pred, None)
    keep = gt_ids != 0
    return gt_ids[keep], pred_ids[keep], counts[keep]


def _sum_duplicates(gt: NDArray, pred: NDArray, counts: NDArray[np.int64]) -> tuple[NDArray, NDArray, NDArray[np.int64]]:
    """Merge repeated (gt, pred) pairs; the result is sorted by gt, then pred."""
    if gt.size == 0:
        return gt, pred, counts
    gt_ids, gt_idx = np.unique(gt, return_inverse=True)
    pred_ids, pred_idx = np.unique(pred, return_inverse=True)
    n_pred = pred_ids.size
    key = gt_idx.reshape(-1).astype(np.int64) * n_pred + pred_idx.reshape(-1)
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    summed = np.add.reduceat(counts[order], first)
    key = key[first]
    return gt_ids[key // n_pred], pred_ids[key % n_pred], summed.astype(np.int64, copy=False)


class ContingencyTable:
    """Sparse (GT label, prediction label) → voxel count table, accumulated chunk by chunk.

    Memory is proportional to the number of distinct pairs, never to the
    number of voxels. Voxels whose GT label is 0 (or that ``valid_mask``
    excludes) are not counted.

    Ids are stored as 64-bit integers: uint64 when the first chunk's dtype is
    unsigned, int64 when it is signed (GT and prediction separately); later
    chunks are cast to the same type.

    Examples
    --------
    >>> t = ContingencyTable()
    >>> t.add(np.array([1, 1, 2, 0]), np.array([7, 8, 8, 8]))
    >>> t.gt_ids.tolist(), t.pred_ids.tolist(), t.counts.tolist()
    ([1, 1, 2], [7, 8, 8], [1, 1, 1])
    """

    def __init__(self) -> None:
        self._gt: NDArray | None = None
        self._pred: NDArray | None = None
        self._counts = np.empty(0, np.int64)
        self._pending: list[tuple[NDArray, NDArray, NDArray[np.int64]]] = []
        self._pending_pairs = 0

    def add(self, gt_chunk: ArrayLike, pred_chunk: ArrayLike, valid_mask: ArrayLike | None = None) -> None:
        """Count the voxel pairs of one chunk.

        Parameters
        ----------
        gt_chunk, pred_chunk : array of int, same shape
            GT and predicted labels (any integer dtype, any shape).
        valid_mask : array of bool, same shape, optional
            Voxels to count; False voxels are skipped (as if GT were 0).

        Raises
        ------
        DataError
            Shapes differ or a dtype is not integer.
        """
        gt = np.asarray(gt_chunk)
        pred = np.asarray(pred_chunk)
        if gt.shape != pred.shape:
            raise DataError(f"contingency table: GT chunk shape {list(gt.shape)} != "
                            f"prediction chunk shape {list(pred.shape)}")
        _check_int_dtype(gt.dtype, "ground truth")
        _check_int_dtype(pred.dtype, "prediction")
        if valid_mask is not None:
            mask = np.asarray(valid_mask, dtype=bool)
            if mask.shape != gt.shape:
                raise DataError(f"contingency table: valid_mask shape {list(mask.shape)} != "
                                f"chunk shape {list(gt.shape)}")
            gt = np.where(mask, gt, gt.dtype.type(0))
        gt_ids, pred_ids, counts = _count_pairs(np.ravel(gt), np.ravel(pred))
        if self._gt is None:
            self._gt = np.empty(0, gt_ids.dtype)
            self._pred = np.empty(0, pred_ids.dtype)
        assert self._pred is not None
        self._pending.append((gt_ids.astype(self._gt.dtype, copy=False),
                              pred_ids.astype(self._pred.dtype, copy=False), counts))
        self._pending_pairs += counts.size
        if self._pending_pairs > max(_PENDING_PAIRS, 2 * self._counts.size):
            self._reduce()

    def merge(self, other: "ContingencyTable") -> None:
        """Add the counts of another table (e.g. one filled by another worker)."""
        if other._gt is None:
            return
        other._reduce()
        if self._gt is None:
            self._gt = np.empty(0, other._gt.dtype)
            self._pred = np.empty(0, other._pred.dtype)  # type: ignore[union-attr]
        assert self._pred is not None and other._pred is not None
        self._pending.append((other._gt.astype(self._gt.dtype, copy=False),
                              other._pred.astype(self._pred.dtype, copy=False), other._counts))
        self._pending_pairs += other._counts.size
        self._reduce()

    def _reduce(self) -> None:
        if not self._pending:
            return
        assert self._gt is not None and self._pred is not None
        parts = [(self._gt, self._pred, self._counts), *self._pending]
        self._gt, self._pred, self._counts = _sum_duplicates(
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))
        self._pending = []
        self._pending_pairs = 0

    @property
    def gt_ids(self) -> NDArray:
        """GT label of each pair (sorted by GT, then prediction), shape (n_pairs,)."""
        self._reduce()
        return self._gt if self._gt is not None else np.empty(0, np.uint64)

    @property
    def pred_ids(self) -> NDArray:
        """Prediction label of each pair, shape (n_pairs,)."""
        self._reduce()
        return self._pred if self._pred is not None else np.empty(0, np.uint64)

    @property
    def counts(self) -> NDArray[np.int64]:
        """Voxel count ``n_ij`` of each pair, shape (n_pairs,)."""
        self._reduce()
        return self._counts

    @property
    def n_pairs(self) -> int:
        """Number of distinct (GT, prediction) pairs."""
        return int(self.counts.size)

    @property
    def n_voxels(self) -> int:
        """Number of voxels counted, ``N``."""
        return int(self.counts.sum())

    def __repr__(self) -> str:
        return f"ContingencyTable(n_pairs={self.n_pairs}, n_voxels={self.n_voxels})"


# --------------------------------------------------------------------------- metrics


def _check_pred_zero(pred_zero: str) -> None:
    if pred_zero not in PRED_ZERO_MODES:
        raise ConfigError(f"pred_zero: expected one of {', '.join(PRED_ZERO_MODES)}, got {pred_zero!r}")


def _group_sizes(table: ContingencyTable) -> tuple[NDArray, NDArray[np.intp], NDArray[np.int64],
                                                    NDArray, NDArray[np.intp], NDArray[np.float64]]:
    """GT and prediction groups of the table's pairs.

    Returns ``(gt_ids, gt_first, a, pred_ids, pred_of_pair, b)``: the distinct GT
    ids, the index of each one's first pair (pairs are sorted by GT), their
    sizes ``a_i``; the distinct prediction ids, the prediction index of every
    pair, and the segment sizes ``b_j`` (float64).
    """
    gt, pred, counts = table.gt_ids, table.pred_ids, table.counts
    gt_first = np.flatnonzero(np.concatenate(([True], gt[1:] != gt[:-1]))) if gt.size else np.empty(0, np.intp)
    a = np.add.reduceat(counts, gt_first) if gt.size else counts
    pred_ids, pred_of_pair = np.unique(pred, return_inverse=True)
    pred_of_pair = pred_of_pair.reshape(-1)
    b = np.bincount(pred_of_pair, weights=counts.astype(np.float64), minlength=pred_ids.size)
    return gt[gt_first], gt_first, a, pred_ids, pred_of_pair, b


def _rand_sums_of(counts: NDArray[np.int64], pred: NDArray, a: NDArray[np.int64], b: NDArray[np.float64],
                  pred_ids: NDArray, pred_zero: str) -> tuple[float, float, float]:
    n = counts.astype(np.float64)
    a = a.astype(np.float64)
    sum_a2 = float(a @ a)
    if pred_zero == "segment":
        return float(n @ n), sum_a2, float(b @ b)
    zero = pred == 0
    c0 = float(n[zero].sum())
    n_nz = n[~zero]
    b_nz = b[pred_ids != 0]
    return float(n_nz @ n_nz) + c0, sum_a2, float(b_nz @ b_nz) + c0


def _rand_sums(table: ContingencyTable, pred_zero: str = "cremi") -> tuple[float, float, float]:
    """``(Σ_ij n_ij², Σ_i a_i², Σ_j b_j²)`` of the adapted Rand error, with ``pred_zero`` applied.

    With ``pred_zero="cremi"`` each prediction-0 voxel is its own segment, so the
    ``c = Σ_i n_i0`` such voxels add ``c`` (not ``n_i0²`` or ``b_0²``) to the
    first and third sums.
    """
    _check_pred_zero(pred_zero)
    _, _, a, pred_ids, _, b = _group_sizes(table)
    return _rand_sums_of(table.counts, table.pred_ids, a, b, pred_ids, pred_zero)


def compute_scores(table: ContingencyTable, *, pred_zero: str = "cremi", n_worst: int = 10,
                   border_threshold_nm: float | None = None,
                   border_threshold_px: float | None = None) -> SegmentationScores:
    """VOI, adapted Rand error and CREMI score from a contingency table (exact).

    Parameters
    ----------
    table : ContingencyTable
        Counts ``n_ij`` over the evaluated voxels (GT 0 already excluded).
    pred_zero : {"cremi", "segment"}
        Handling of prediction label 0 (see the module docstring).
    n_worst : int
        Length of ``worst_splits`` and ``worst_merges``.
    border_threshold_nm, border_threshold_px : float or None
        Only recorded in the result.

    Returns
    -------
    SegmentationScores

    Raises
    ------
    DataError
        The table is empty (no voxel to evaluate).
    ConfigError
        ``pred_zero`` or ``n_worst`` is invalid.

    Notes
    -----
    With ``a_i = Σ_j n_ij`` (GT sizes), ``b_j = Σ_i n_ij`` (segment sizes) and
    ``N = Σ_ij n_ij``:

    * VOI split ``= H(pred | GT) = (1/N) Σ_ij n_ij log2(a_i / n_ij)``
    * VOI merge ``= H(GT | pred) = (1/N) Σ_ij n_ij log2(b_j / n_ij)``
    * Rand precision ``P = Σ_ij n_ij² / Σ_j b_j²``, recall ``R = Σ_ij n_ij² / Σ_i a_i²``,
      adapted Rand error ``= 1 − 2PR / (P + R) = 1 − 2 Σ n_ij² / (Σ a_i² + Σ b_j²)``
    * CREMI score ``= sqrt(ARAND × (VOI split + VOI merge))``

    Prediction 0 is always one segment for VOI. For the Rand sums with
    ``pred_zero="cremi"`` the ``c = Σ_i n_i0`` unclaimed voxels are singletons:
    ``Σ n_ij² = Σ_{j≠0} n_ij² + c`` and ``Σ b_j² = Σ_{j≠0} b_j² + c``, which equals
    relabelling every such voxel with a fresh id. (cremi_python adds ``c / n``,
    ``n`` = all voxels of the volume, in place of ``c``; the difference is of
    order ``c / Σ n_ij²``.)
    """
    _check_pred_zero(pred_zero)
    if not isinstance(n_worst, (int, np.integer)) or n_worst < 0:
        raise ConfigError(f"n_worst: expected an int >= 0, got {n_worst!r}")
    gt, pred, counts = table.gt_ids, table.pred_ids, table.counts
    total = int(counts.sum())
    if total == 0:
        raise DataError("nothing to evaluate: every ground-truth voxel is 0 or inside the border mask")
    n = counts.astype(np.float64)
    gt_ids, gt_first, a, pred_ids, pred_of_pair, b = _group_sizes(table)
    gt_of_pair = np.repeat(np.arange(gt_ids.size), np.diff(gt_first, append=gt.size))

    # per-pair terms are >= 0, so the sums have no cancellation
    split_share = np.add.reduceat(n * np.log2(a[gt_of_pair] / n), gt_first) / total
    merge_share = np.bincount(pred_of_pair, weights=n * np.log2(b[pred_of_pair] / n),
                              minlength=pred_ids.size) / total
    voi_split = float(split_share.sum())
    voi_merge = float(merge_share.sum())

    sum_n2, sum_a2, sum_b2 = _rand_sums_of(counts, pred, a, b, pred_ids, pred_zero)
    precision = sum_n2 / sum_b2
    recall = sum_n2 / sum_a2
    arand = 1.0 - 2.0 * sum_n2 / (sum_a2 + sum_b2)
    arand = max(arand, 0.0)  # round-off of a perfect segmentation

    zero = pred == 0
    pred_zero_voxels = int(counts[zero].sum())

    worst_splits = []
    for k in _top(split_share, gt_ids, n_worst):
        lo = gt_first[k]
        hi = gt_first[k + 1] if k + 1 < gt_first.size else gt.size
        worst_splits.append(SplitEntry(int(gt_ids[k]), int(a[k]), float(split_share[k]), int(hi - lo)))

    worst_merges = []
    top_merges = _top(merge_share, pred_ids, n_worst)
    if top_merges.size:
        pairs = np.flatnonzero(np.isin(pred_of_pair, top_merges))
        for k in top_merges:
            mine = pairs[pred_of_pair[pairs] == k]
            order = np.lexsort((gt[mine], -counts[mine]))
            listed = tuple((int(gt[i]), int(counts[i])) for i in mine[order[:MAX_MERGED_LISTED]])
            worst_merges.append(MergeEntry(int(pred_ids[k]), int(round(b[k])), float(merge_share[k]),
                                           int(mine.size), listed))

    return SegmentationScores(
        voi_split=voi_split,
        voi_merge=voi_merge,
        adapted_rand_error=float(arand),
        rand_precision=float(precision),
        rand_recall=float(recall),
        cremi_score=math.sqrt(arand * (voi_split + voi_merge)),
        n_gt_objects=int(gt_ids.size),
        n_pred_objects=int(np.count_nonzero(pred_ids != 0)),
        n_voxels_evaluated=total,
        fraction_pred_zero=pred_zero_voxels / total,
        worst_splits=worst_splits,
        worst_merges=worst_merges,
        border_threshold_nm=None if border_threshold_nm is None else float(border_threshold_nm),
        border_threshold_px=None if border_threshold_px is None else float(border_threshold_px),
        pred_zero=pred_zero,
    )


def _top(share: NDArray[np.float64], ids: NDArray, n: int) -> NDArray[np.intp]:
    """Indices of the ``n`` largest positive shares, largest first (ties: smaller id first)."""
    positive = np.flatnonzero(share > 0)
    if n == 0 or positive.size == 0:
        return np.empty(0, np.intp)
    order = np.lexsort((ids[positive], -share[positive]))
    return positive[order[:n]]


# --------------------------------------------------------------------------- border mask


def _boundaries(block: NDArray) -> NDArray[np.bool_]:
    """Pixels whose in-plane 4-neighbourhood holds another label, per Z section of a (Z, Y, X) block.

    Image edges are not boundaries (as if the image were edge-padded).
    """
    out = np.zeros(block.shape, dtype=bool)
    d = block[:, 1:, :] != block[:, :-1, :]
    out[:, 1:, :] |= d
    out[:, :-1, :] |= d
    d = block[:, :, 1:] != block[:, :, :-1]
    out[:, :, 1:] |= d
    out[:, :, :-1] |= d
    return out


def _disk_half_widths(threshold_px: float) -> list[tuple[int, int]]:
    """``(dy, w)`` pairs: the integer offsets ``(dy, dx)`` with ``sqrt(dy² + dx²) <= threshold_px`` are ``|dx| <= w``.

    The test is the same float computation as a Euclidean distance transform's,
    so the disk matches ``distance_transform_edt(...) <= threshold_px`` exactly.
    """
    r = int(math.floor(threshold_px))
    rows = []
    for dy in range(-r, r + 1):
        dx = np.arange(r + 1)
        inside = np.sqrt((dy * dy + dx * dx).astype(np.float64)) <= threshold_px
        rows.append((dy, int(np.count_nonzero(inside)) - 1))
    return rows


def _dilate_disk(boundary: NDArray[np.bool_], threshold_px: float) -> NDArray[np.bool_]:
    """Per-section dilation of a (Z, Y, X) boolean block by the disk of :func:`_disk_half_widths`.

    The disk is a stack of horizontal segments: for each half-width ``w`` a
    sliding-window count along X (from one cumulative sum) gives the row
    dilation ``H_w``, and the result is the OR over ``dy`` of ``H_w(dy)`` shifted
    by ``dy`` along Y. Cost: O(voxels × threshold), independent of the number of
    boundary pixels.
    """
    nz, ny, nx = boundary.shape
    rows = _disk_half_widths(threshold_px)
    pad = max(w for _, w in rows)
    # csum[k] = number of boundary pixels at x < clip(k - pad, 0, nx): padded so that every
    # window below is a plain slice
    csum = np.empty((nz, ny, nx + 1 + 2 * pad), dtype=np.int32)
    csum[:, :, : pad + 1] = 0
    np.cumsum(boundary, axis=2, dtype=np.int32, out=csum[:, :, pad + 1 : pad + 1 + nx])
    csum[:, :, pad + 1 + nx :] = csum[:, :, pad + nx : pad + 1 + nx]
    out = np.zeros(boundary.shape, dtype=bool)
    for w in sorted({w for _, w in rows}):
        # h[x] = any(boundary[max(x - w, 0) : min(x + w + 1, nx)])
        h = np.greater(csum[:, :, pad + w + 1 : pad + w + 1 + nx], csum[:, :, pad - w : pad - w + nx])
        for dy, w_dy in rows:
            if w_dy != w or abs(dy) >= ny:
                continue
            if dy >= 0:
                out[:, : ny - dy] |= h[:, dy:]
            else:
                out[:, -dy:] |= h[:, : ny + dy]
    return out


def _border_mask_block(block: NDArray, threshold_px: float) -> NDArray[np.bool_]:
    """:func:`border_mask` of every Z section of a (Z, Y, X) block, computed together."""
    boundary = _boundaries(block)
    if threshold_px < 1 or not boundary.any():  # nothing else is within < 1 px of a boundary
        return boundary
    return _dilate_disk(boundary, threshold_px)


def border_mask(gt_section: ArrayLike, threshold_px: float) -> NDArray[np.bool_]:
    """CREMI border mask of one 2D GT section: True where pixels are *excluded*.

    Parameters
    ----------
    gt_section : array of int, shape (Y, X)
        GT labels of one Z section.
    threshold_px : float
        Border threshold in pixels (``border_threshold_nm / resolution_yx``).

    Returns
    -------
    ndarray of bool, shape (Y, X)
        True for pixels within Euclidean distance ``<= threshold_px`` of a
        boundary pixel (boundary pixels themselves included, even for 0).

    Raises
    ------
    DataError
        ``threshold_px`` < 0, or the section is not 2D.

    Notes
    -----
    The rule of cremi_python's ``create_border_mask_2d``: a pixel is a
    *boundary* pixel when one of its 4-neighbours has a different label (pixels
    outside the image count as equal, so image edges are not boundaries);
    ``d(p)`` is the Euclidean distance from ``p`` to the nearest boundary pixel
    (0 on boundaries), as ``scipy.ndimage.distance_transform_edt`` of the
    non-boundary pixels gives it; excluded = ``d(p) <= threshold_px``. A section
    without any boundary excludes nothing.

    It is computed without a distance transform, as the dilation of the
    boundary pixels by the digital disk ``{(dy, dx): sqrt(dy² + dx²) <= threshold_px}``
    (the same set of pixels, several times faster for CREMI-sized thresholds).

    Examples
    --------
    >>> sec = np.array([[1, 1, 2, 2, 2]])
    >>> border_mask(sec, 1.0).astype(int).tolist()
    [[1, 1, 1, 1, 0]]
    """
    section = np.asarray(gt_section)
    if section.ndim != 2:
        raise DataError(f"border_mask: expected a 2D (Y, X) section, got shape {list(section.shape)}")
    if not threshold_px >= 0:
        raise DataError(f"border_mask: threshold must be >= 0 pixels, got {threshold_px}")
    return _border_mask_block(section[None], float(threshold_px))[0]


# --------------------------------------------------------------------------- volumes


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


def open_label_array(spec: str) -> tuple[Any, NDArray[np.float64] | None]:
    """Open a label array lazily from ``FILE.h5:dataset/path`` or ``STORE.zarr[:array/path]``.

    Parameters
    ----------
    spec : str
        An HDF5 file and a dataset in it, separated by the last ``:``; or a zarr
        store directory, optionally followed by ``:`` and an array path in it.
        A path that is a directory is read as a zarr store, a file as HDF5.

    Returns
    -------
    array : h5py.Dataset or zarr.Array
        Not read: slice it to read.
    resolution : ndarray of float64, shape (3,), or None
        The ``resolution`` attribute (nm, ZYX), None when absent.

    Raises
    ------
    DatasetNotFoundError
        The file or store, or the dataset/array in it, does not exist.
    DataError
        The file is not HDF5 (or the store not zarr), the path names a group,
        no dataset was given for an HDF5 file, or the resolution attribute is
        malformed.
    """
    file_part, sep, inner = spec.rpartition(":")
    if not sep:
        file_part, inner = spec, ""
    path = Path(file_part)
    inner = inner.strip("/")
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file or zarr store")
    if path.is_dir():
        array = _open_zarr(path, inner)
    else:
        array = _open_hdf5(path, inner)
    where = f"{path}:{inner}" if inner else str(path)
    resolution = None
    if "resolution" in array.attrs:
        resolution = as_resolution(array.attrs["resolution"], f"{where}: attribute")
    return array, resolution


def _open_hdf5(path: Path, inner: str) -> Any:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open as HDF5: {e}") from None
    if not inner:
        names: list[str] = []
        f.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
        f.close()
        raise DataError(f"{path}: expected FILE.h5:DATASET; datasets in the file: {', '.join(names) or 'none'}")
    if inner not in f:
        f.close()
        raise DatasetNotFoundError(f"{path}: no dataset {inner!r}")
    node = f[inner]
    if not isinstance(node, h5py.Dataset):
        f.close()
        raise DataError(f"{path}: {inner!r} is a group, not a dataset")
    return node  # keeps the file open


def _open_zarr(path: Path, inner: str) -> Any:
    import zarr

    try:
        root = zarr.open(store=str(path), mode="r")
    except Exception as e:  # zarr raises several unrelated types for "not zarr"
        raise DataError(f"{path}: not a zarr store: {e}") from None
    if not inner:
        node = root
    else:
        if not isinstance(root, zarr.Group) or inner not in root:
            raise DatasetNotFoundError(f"{path}: no array {inner!r}")
        node = root[inner]
    if not isinstance(node, zarr.Array):
        raise DataError(f"{path}: {inner or '/'!r} is a group, not an array; give STORE.zarr:ARRAY")
    return node


# --------------------------------------------------------------------------- reporting


def format_scores(scores: SegmentationScores) -> str:
    """A readable multi-line table of the scores, for stdout."""
    border = ("off" if scores.border_threshold_nm is None else
              f"{scores.border_threshold_nm:g} nm ({scores.border_threshold_px:.3g} px)")
    lines = [
        f"{'VOI split':<24}{scores.voi_split:>12.4f}  bits",
        f"{'VOI merge':<24}{scores.voi_merge:>12.4f}  bits",
        f"{'VOI':<24}{scores.voi:>12.4f}  bits",
        f"{'Adapted Rand error':<24}{scores.adapted_rand_error:>12.4f}",
        f"{'  Rand precision':<24}{scores.rand_precision:>12.4f}",
        f"{'  Rand recall':<24}{scores.rand_recall:>12.4f}",
        f"{'CREMI score':<24}{scores.cremi_score:>12.4f}  sqrt(ARAND x VOI)",
        "",
        f"{'GT objects':<24}{scores.n_gt_objects:>12d}",
        f"{'Predicted segments':<24}{scores.n_pred_objects:>12d}",
        f"{'Voxels evaluated':<24}{scores.n_voxels_evaluated:>12d}",
        f"{'Unclaimed (pred 0)':<24}{100 * scores.fraction_pred_zero:>11.2f}%",
        f"{'Border mask':<24}{border:>12}",
        f"{'Prediction 0 as':<24}{scores.pred_zero:>12}",
    ]
    if scores.worst_splits:
        lines += ["", "Worst splits (GT objects by share of VOI split)",
                  f"  {'GT id':>20} {'voxels':>12} {'bits':>8} {'segments':>9}"]
        lines += [f"  {e.gt_id:>20d} {e.voxels:>12d} {e.voi_split_bits:>8.4f} {e.n_pred_segments:>9d}"
                  for e in scores.worst_splits]
    if scores.worst_merges:
        lines += ["", "Worst merges (predicted segments by share of VOI merge)",
                  f"  {'segment':>20} {'voxels':>12} {'bits':>8} {'GT objs':>8}  largest GT overlaps (id:voxels)"]
        for e in scores.worst_merges:
            name = f"{e.pred_id} (unclaimed)" if e.pred_id == 0 else str(e.pred_id)
            overlaps = ", ".join(f"{g}:{v}" for g, v in e.gt_overlaps)
            more = ", ..." if e.n_gt_objects > len(e.gt_overlaps) else ""
            lines.append(f"  {name:>20} {e.voxels:>12d} {e.voi_merge_bits:>8.4f} {e.n_gt_objects:>8d}  "
                         f"{overlaps}{more}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diluvian.evaluate",
        description="CREMI metrics (VOI split/merge, adapted Rand error, CREMI score) of a "
                    "segmentation against a ground truth, chunk by chunk.")
    p.add_argument("ground_truth", help="FILE.h5:DATASET or STORE.zarr[:ARRAY]")
    p.add_argument("prediction", help="FILE.h5:DATASET or STORE.zarr[:ARRAY]")
    p.add_argument("--border-threshold", type=float, default=25.0, metavar="NM",
                   help="CREMI border threshold in nm; 0 disables the mask (default: 25)")
    p.add_argument("--resolution", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="voxel size in nm (default: the GT's 'resolution' attribute)")
    p.add_argument("--pred-zero", choices=PRED_ZERO_MODES, default="cremi",
                   help="prediction label 0: 'cremi' (singletons for Rand, a segment for VOI) "
                        "or 'segment' (default: cremi)")
    p.add_argument("--chunk-shape", type=int, nargs=3, default=(32, 512, 512), metavar=("Z", "Y", "X"),
                   help="block read at a time (default: 32 512 512)")
    p.add_argument("--n-worst", type=int, default=10, help="worst splits/merges to list (default: 10)")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class _VolumeLabels:
    """Array-like over a :class:`~diluvian.volumes.Volume`'s labels (reads boxes on demand)."""

    def __init__(self, volume: Any) -> None:
        self.volume = volume
        self.shape = tuple(int(s) for s in volume.shape)
        self.dtype = np.dtype(getattr(volume.labels, "dtype", np.uint64))
        self.ndim = 3

    def __getitem__(self, key: Any) -> NDArray:
        from .octree import parse_index

        lo, hi, _ = parse_index(key, self.shape)
        return np.asarray(self.volume.get_labels(np.asarray(lo), np.asarray(hi)))


def _upsample_to_ground_truth(pred: Any, pred_res: NDArray, gt_res: NDArray, shapes: Sequence[tuple],
                              names: tuple[str, str]) -> Any:
    """``pred`` at ``gt_res``: nearest-neighbour upsampled when its resolution is an integer multiple."""
    factors = pred_res / gt_res
    rounded = np.round(factors)
    if not (np.allclose(factors, rounded, atol=1e-6) and (rounded >= 1).all()):
        raise DataError(f"{names[1]!r} has resolution {pred_res.tolist()} nm but the ground truth {names[0]!r} "
                        f"has {gt_res.tolist()} nm: expected the same resolution or an integer multiple of it")
    f = rounded.astype(np.int64)
    fine = np.asarray(pred.shape) * f
    shape = next((s for s in shapes if (np.abs(fine - np.asarray(s)) < f).all()), tuple(fine))
    logger.info("%s: upsampling the prediction from %s nm to the ground truth's %s nm (x%s)", names[1],
             pred_res.tolist(), gt_res.tolist(), f.tolist())
    return UpsampledLabels(pred, f, shape)


def _label_source(name: str, volumes: dict) -> tuple[Any, Any, NDArray[np.float64] | None]:
    """(volume or None, label array-like, resolution) for a volume name or a direct ``FILE.h5:dataset`` spec."""
    if name in volumes:
        volume = volumes[name]
        if volume.labels is None:
            raise DataError(f"volume {name!r} has no labels to evaluate")
        return volume, _VolumeLabels(volume), np.asarray(volume.resolution, dtype=np.float64)
    if ":" in name or name.rstrip("/").endswith(".zarr"):
        array, res = open_label_array(name)
        return None, array, res
    raise DatasetNotFoundError(f"no volume named {name!r}; volumes: {sorted(volumes) or 'none (give -v files)'}")


def evaluate_named_volumes(volumes: dict, ground_truth: str, prediction: str, *, partition: tuple | None = None,
                           **kwargs: Any) -> SegmentationScores:
    """Evaluate two volumes given by name (from dataset TOMLs) or as ``FILE.h5:dataset`` specs.

    Parameters
    ----------
    volumes : dict of str -> Volume
        Volumes loaded from the ``-v`` dataset files.
    ground_truth, prediction : str
        Volume names, or direct array specs (see :func:`open_label_array`).
    partition : (partitioning, index), optional
        Evaluate only this partition of the ground truth. A prediction of the
        ground truth's full shape is partitioned the same way; one of the
        partition's shape (e.g. written by ``fill --partition-volumes``) is used as is.
    **kwargs
        Passed to :func:`evaluate_volumes` (``border_threshold_nm``, ``pred_zero`` ...).

    Raises
    ------
    DatasetNotFoundError
        A name is neither a loaded volume nor an existing array.
    DataError
        Different resolutions or shapes, no labels, non-integer labels.
    """
    gt_vol, gt, gt_res = _label_source(ground_truth, volumes)
    pred_vol, pred, pred_res = _label_source(prediction, volumes)
    if gt_res is not None and pred_res is not None and not np.allclose(gt_res, pred_res):
        shapes = [tuple(gt.shape)]
        if partition is not None and gt_vol is not None:
            shapes.insert(0, tuple(gt_vol.partition(*partition).shape))
        pred = _upsample_to_ground_truth(pred, pred_res, gt_res, shapes, (ground_truth, prediction))
        pred_vol = None
        pred_res = gt_res
    if partition is not None:
        if gt_vol is None:
            raise DataError("partitioning needs the ground truth as a volume name from a dataset file")
        full_shape = tuple(gt_vol.shape)
        gt_part = gt_vol.partition(*partition)
        gt = _VolumeLabels(gt_part)
        if tuple(pred.shape) == full_shape:
            if pred_vol is not None:
                pred = _VolumeLabels(pred_vol.partition(*partition))
            else:
                start = np.asarray(gt_part.offset)
                stop = start + np.asarray(gt_part.shape)
                pred = np.asarray(pred[tuple(slice(a, b) for a, b in zip(start, stop))])
    resolution = kwargs.pop("resolution", None)
    if resolution is None:
        resolution = gt_res if gt_res is not None else pred_res
    return evaluate_volumes(gt, pred, resolution=resolution, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the scores of ``prediction`` against ``ground_truth``.

    Returns the exit code: 0, or 2 after one line on stderr for a
    :class:`~diluvian.errors.DiluvianError`.
    """
    args = _make_parser().parse_args(argv)
    try:
        gt, gt_res = open_label_array(args.ground_truth)
        pred, pred_res = open_label_array(args.prediction)
        resolution = args.resolution
        if resolution is None:
            if gt_res is not None and pred_res is not None and not np.allclose(gt_res, pred_res):
                raise DataError(f"resolution attributes differ: ground truth {gt_res.tolist()}, "
                                f"prediction {pred_res.tolist()}")
            resolution = gt_res if gt_res is not None else pred_res
        scores = evaluate_volumes(gt, pred, border_threshold_nm=args.border_threshold, resolution=resolution,
                                  pred_zero=args.pred_zero, chunk_shape=args.chunk_shape,
                                  n_worst=args.n_worst, progress=not args.no_progress)
        print(format_scores(scores))
        if args.json:
            from .util import atomic_path

            with atomic_path(args.json, suffix=".json") as tmp:
                tmp.write_text(json.dumps(scores.to_dict(), indent=2) + "\n")
    except DiluvianError as e:
        print(f"diluvian evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
