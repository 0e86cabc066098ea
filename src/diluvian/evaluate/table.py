"""The contingency table of two label arrays, accumulated chunk by chunk (pure numpy, no file I/O).

Every CREMI metric is a function of the table ``n_ij`` = number of evaluated
voxels with ground-truth label ``i`` and predicted label ``j``.
:class:`ContingencyTable` holds it sparsely (memory grows with the number of
distinct pairs, not with the volume) and exactly (integer counts), so a chunked
evaluation scores bit for bit as an unchunked one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import DataError

__all__ = ["ContingencyTable"]

# A pending (not yet reduced) part of the table may grow to this many pairs
# (or twice the reduced table) before it is folded in.
_PENDING_PAIRS = 1 << 20

# Largest dense count table (bins) used per chunk before falling back to a sort.
_MAX_BINS = 1 << 23


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
