"""VOI, adapted Rand error and CREMI score of a contingency table, and their report (pure numpy).

See the package docstring (:mod:`diluvian.evaluate`) for the conventions
(``pred_zero``, GT label 0, bits).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataError
from .table import ContingencyTable

__all__ = ["PRED_ZERO_MODES", "SplitEntry", "MergeEntry", "SegmentationScores", "compute_scores", "format_scores"]

PRED_ZERO_MODES = ("cremi", "segment")
"""Valid values of the ``pred_zero`` option (see :mod:`diluvian.evaluate`)."""

#: At most this many GT objects are listed per entry of ``worst_merges``.
MAX_MERGED_LISTED = 5


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
