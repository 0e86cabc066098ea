"""Classical baselines to put the network's scores in context.

* :func:`seeded_watershed`: smoothed intensity → foreground threshold →
  distance-transform peaks as seeds → watershed on the inverted intensity
  (membranes are dark in EM).
* :func:`connected_components`: 6-connected components of the thresholded,
  smoothed intensity.
* :func:`one_segment`: every voxel in one segment (the trivial all-merge answer).

:func:`tune_baseline` grid-searches a baseline's parameters on a training
volume with a scoring function; the tuned parameters are then applied,
unchanged, to validation data.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from scipy import ndimage

from .postprocessing import label_components

log = logging.getLogger(__name__)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return ndimage.gaussian_filter(image, sigma) if sigma > 0 else image


def seeded_watershed(
    image: np.ndarray,
    *,
    sigma: float = 1.0,
    threshold_percentile: float = 50.0,
    min_distance: int = 5,
) -> np.ndarray:
    """Seeded watershed of an EM image (membranes dark).

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        Raw intensity (any dtype).
    sigma : float
        Gaussian smoothing in voxels.
    threshold_percentile : float
        Voxels brighter than this percentile of the smoothed image are cell interior.
    min_distance : int
        Minimum distance between seeds (peaks of the interior's distance transform).

    Returns
    -------
    ndarray of uint64, shape (Z, Y, X)
        Segment ids from 1; every voxel is assigned.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    smooth = _smooth(image, sigma)
    interior = smooth > np.percentile(smooth, threshold_percentile)
    dist = ndimage.distance_transform_edt(interior)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=label_components(interior)[0], exclude_border=False)
    markers = np.zeros(image.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    if not len(peaks):
        return np.ones(image.shape, dtype=np.uint64)
    return watershed(-smooth, markers).astype(np.uint64)


def connected_components(image: np.ndarray, *, sigma: float = 1.0, threshold_percentile: float = 50.0) -> np.ndarray:
    """6-connected components of the smoothed image above a percentile; 0 elsewhere."""
    smooth = _smooth(image, sigma)
    interior = smooth > np.percentile(smooth, threshold_percentile)
    labels, _ = label_components(interior)
    return labels.astype(np.uint64)


def one_segment(image: np.ndarray) -> np.ndarray:
    """Every voxel in segment 1."""
    return np.ones(np.shape(image), dtype=np.uint64)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "watershed": seeded_watershed,
    "connected_components": connected_components,
    "one_segment": one_segment,
}

PARAMETER_GRIDS: dict[str, dict[str, list[Any]]] = {
    "watershed": {"sigma": [1.0, 2.0], "threshold_percentile": [30.0, 45.0, 60.0], "min_distance": [4, 8, 14]},
    "connected_components": {"sigma": [1.0, 2.0], "threshold_percentile": [30.0, 50.0, 70.0]},
    "one_segment": {},
}


@dataclass
class TunedBaseline:
    """Result of :func:`tune_baseline`: the best parameters and every score tried."""

    name: str
    params: dict[str, Any]
    score: float
    trials: list[tuple[dict[str, Any], float]]

    def apply(self, image: np.ndarray) -> np.ndarray:
        return BASELINES[self.name](image, **self.params)


def tune_baseline(
    name: str,
    image: np.ndarray,
    score: Callable[[np.ndarray], float],
    grid: Mapping[str, Iterable[Any]] | None = None,
) -> TunedBaseline:
    """Grid-search a baseline's parameters, minimising ``score(segmentation)``.

    Parameters
    ----------
    name : {"watershed", "connected_components", "one_segment"}
    image : ndarray
        Training image (never the validation data).
    score : callable
        Lower is better, e.g. the CREMI score against the training ground truth.
    grid : mapping, optional
        Parameter name -> values; default :data:`PARAMETER_GRIDS`.
    """
    grid = dict(PARAMETER_GRIDS[name] if grid is None else grid)
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        s = float(score(BASELINES[name](image, **params)))
        log.info("baseline %s %s: %.4f", name, params, s)
        trials.append((params, s))
    best = min(trials, key=lambda t: t[1])
    return TunedBaseline(name=name, params=best[0], score=best[1], trials=trials)
