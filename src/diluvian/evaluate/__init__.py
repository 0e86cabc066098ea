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
``FILE.h5:dataset`` or ``STORE.zarr[:array]`` specs, and
:func:`evaluate_named_volumes` is what ``diluvian evaluate`` runs (volumes by
name or spec, partitions, a coarser prediction upsampled).

Modules
-------
``table``
    :class:`ContingencyTable` (pure numpy).
``scores``
    :func:`compute_scores`, :class:`SegmentationScores`, :func:`format_scores` (pure numpy).
``border``
    :func:`border_mask`, CREMI's per-section border mask (pure numpy).
``chunked``
    :func:`evaluate_volumes`: block by block over array-likes.
``sources``
    :func:`open_label_array`, volumes by name, partitions, upsampling.
``run``
    :func:`evaluate_named_volumes`, :func:`write_scores_json` (the command line's).

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

from ..volumes.base import UpsampledLabels  # noqa: F401  (was importable from here)
from .border import border_mask
from .chunked import evaluate_volumes
from .run import evaluate_named_volumes, write_scores_json
from .scores import PRED_ZERO_MODES, MergeEntry, SegmentationScores, SplitEntry, compute_scores, format_scores
from .sources import label_pair, open_label_array
from .table import ContingencyTable

__all__ = [
    "PRED_ZERO_MODES",
    "SplitEntry",
    "MergeEntry",
    "SegmentationScores",
    "ContingencyTable",
    "border_mask",
    "compute_scores",
    "evaluate_volumes",
    "evaluate_named_volumes",
    "label_pair",
    "open_label_array",
    "format_scores",
    "write_scores_json",
]
