"""Binary F-scores for the per-subvolume validation metric.

Two formulas (``[training.validation_metric] metric``):

``binary_f_score`` (default)
    The textbook F-beta: ``(1 + β²)·TP / ((1 + β²)·TP + β²·FN + FP)``, the
    weighted harmonic mean of precision and recall; β < 1 favours precision.
``diluvian_f_score``
    The original diluvian's variant: ``(1 + β)·TP / ((1 + β)·TP + β²·FN + FP)``
    (``(1 + β)`` where the textbook has ``(1 + β²)``). Equal to F1 for β = 1; kept to
    compare with numbers from the original.

Both are 0 when there are no true positives, including the degenerate case of
an empty target and an empty prediction (nothing to find and nothing found
scores 0, not 1: a fill that finds nothing never counts as a success). This is
the one F-beta of the package; the sparse fill's per-subvolume scores use
:func:`binary_scores`.

Examples
--------
>>> f_beta(tp=8, fp=2, fn=2, beta=1.0)
0.8
>>> round(f_beta(tp=8, fp=0, fn=8, beta=0.5), 4)  # precision 1, recall 0.5
0.8333
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["confusion_counts", "f_beta", "diluvian_f_beta", "binary_f_score", "binary_scores", "diluvian_f_score",
           "get_metric"]


def confusion_counts(target: ArrayLike, prediction: ArrayLike) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of two boolean arrays (nonzero = positive)."""
    t = np.asarray(target).astype(bool).ravel()
    p = np.asarray(prediction).astype(bool).ravel()
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return tp, fp, fn, t.size - tp - fp - fn


def f_beta(tp: float, fp: float, fn: float, beta: float = 0.5) -> float:
    """Textbook F-beta from confusion counts; 0 when ``tp == 0`` (also when all counts are 0)."""
    b2 = beta * beta
    num = (1.0 + b2) * tp
    den = num + b2 * fn + fp
    return float(num / den) if num > 0 else 0.0


def diluvian_f_beta(tp: float, fp: float, fn: float, beta: float = 0.5) -> float:
    """The original diluvian's F-beta variant, ``(1 + β)`` in place of ``(1 + β²)``."""
    num = (1.0 + beta) * tp
    den = num + beta * beta * fn + fp
    return float(num / den) if num > 0 else 0.0


def _soft_counts(target: np.ndarray, prediction: np.ndarray) -> tuple[float, float, float]:
    t = np.asarray(target, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    tp = float((t * p).sum())
    return tp, float(((1 - t) * p).sum()), float((t * (1 - p)).sum())


def _counts(target: ArrayLike, prediction: ArrayLike) -> tuple[float, float, float]:
    t, p = np.asarray(target), np.asarray(prediction)
    if t.dtype == bool and p.dtype == bool:
        tp, fp, fn, _ = confusion_counts(t, p)
        return tp, fp, fn
    return _soft_counts(t, p)  # soft (probability) arrays: expected counts


def binary_f_score(target: ArrayLike, prediction: ArrayLike, beta: float = 0.5) -> float:
    """Textbook F-beta of a prediction against a target.

    Boolean arrays give the usual counts; float arrays (probabilities, the
    unthresholded metric) give soft counts ``TP = Σ t·p`` etc.
    """
    return f_beta(*_counts(target, prediction), beta=beta)


def binary_scores(target: ArrayLike, prediction: ArrayLike, beta: float = 0.5) -> tuple[float, float, float]:
    """``(F-beta, precision, recall)`` of two boolean masks (nonzero = positive).

    F-beta is :func:`f_beta` of the counts; precision (recall) is 0 when the
    prediction (target) is empty. An empty target and an empty prediction give
    ``(0.0, 0.0, 0.0)``.

    Examples
    --------
    >>> binary_scores([1, 1, 0, 0], [1, 0, 1, 0], beta=1.0)
    (0.5, 0.5, 0.5)
    """
    tp, fp, fn, _ = confusion_counts(target, prediction)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return f_beta(tp, fp, fn, beta), precision, recall


def diluvian_f_score(target: ArrayLike, prediction: ArrayLike, beta: float = 0.5) -> float:
    """The original diluvian's F-beta variant of :func:`binary_f_score`."""
    return diluvian_f_beta(*_counts(target, prediction), beta=beta)


def get_metric(name: str, beta: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """``metric(target, prediction) -> float`` for ``[training.validation_metric]``."""
    fn = {"binary_f_score": binary_f_score, "diluvian_f_score": diluvian_f_score}[name]
    return lambda target, prediction: fn(target, prediction, beta)
