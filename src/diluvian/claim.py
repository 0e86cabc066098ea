"""Claim the voxels a dense fill left unclaimed (postprocessing after the fill).

A flood-filling network leaves voxels that no body reached: small axons whose seed never
rose above ``t_final``, dark cytoplasm, the rims of bodies. Under the CREMI rule label 0
is one segment, so those voxels count as one huge merge. :func:`claim_unclaimed`, using
the image's boundary evidence (:func:`~diluvian.postprocessing.boundary_evidence`; the
``membrane_fraction`` of voxels where it is strongest are membranes):

1. **Grow** the bodies into unclaimed non-membrane voxels within ``grow_distance``
   voxels of them (a seeded watershed over the boundary evidence, so a voxel goes to
   the body it is reached from over the weakest boundaries); membranes bound the growth,
   so a body does not leak through them.
2. **New labels** for the unclaimed non-membrane pieces that no body reached: each
   6-connected piece (split at its necks by a distance-transform watershed when
   ``split_distance`` > 0) of at least ``min_size`` voxels becomes a segment.
3. **The rest** (membranes, smaller pieces) goes to the neighbouring segment by a
   watershed over the boundary evidence: every voxel ends up labelled.

:func:`claim_result` applies it to a fill's result with the ``[postprocessing]`` keys
``claim``, ``claim_grow_distance``, ``claim_min_size``, ``boundary_sigma`` and
``membrane_fraction`` (:func:`claim_labels`); ``diluvian fill`` runs it before writing, and
``fill --blockwise`` runs it block by block after reconciliation (:mod:`diluvian.fill.blockwise`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from .errors import DataError
from .postprocessing import boundary_evidence, label_components, membrane_mask
from .util import fmt_list

log = logging.getLogger(__name__)


@dataclass
class ClaimStats:
    """What :func:`claim_unclaimed` did (voxel counts)."""

    unclaimed_before: int = 0
    grown: int = 0
    new_segments: int = 0
    new_segment_voxels: int = 0
    assigned_rest: int = 0
    unclaimed_after: int = 0

    def summary(self) -> str:
        return (f"claimed unclaimed voxels: {self.unclaimed_before} before, {self.grown} grown into by bodies, "
                f"{self.new_segment_voxels} in {self.new_segments} new segments, {self.assigned_rest} to "
                f"neighbours; {self.unclaimed_after} left")


def claim_unclaimed(
    labels: NDArray,
    image: NDArray,
    *,
    grow_distance: float = 2.0,
    min_size: int = 50,
    split_distance: float = 0.0,
    sigma: float = 1.0,
    membrane_fraction: float = 0.2,
    assign_rest: bool = True,
    background: int = 0,
) -> tuple[NDArray[np.uint64], ClaimStats]:
    """Give the unclaimed voxels of a segmentation to bodies or to new segments.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
        The fill's segmentation; ``background`` marks unclaimed voxels. Not modified.
    image : ndarray, shape (Z, Y, X)
        The image it was filled from (membranes dark).
    grow_distance : float
        Voxels: how far a body grows into unclaimed voxels (0: no growth).
    min_size : int
        Unclaimed pieces that no body reached become segments from this many voxels.
    split_distance : float
        When > 0, those pieces are split by a watershed from the peaks of their distance
        transform at least this many voxels apart (as the seeded watershed baseline), so
        that small neurites joined through gaps in the membranes become separate segments.
    sigma : float
        Scale of the boundary evidence, in voxels.
    membrane_fraction : float
        The share of voxels with the strongest boundary evidence that are membranes:
        bodies do not grow through them and new segments end at them.
    assign_rest : bool
        Give every voxel still unclaimed after steps 1-2 to its neighbouring segment.
    background : int
        Label of unclaimed voxels.

    Returns
    -------
    labels : ndarray of uint64
        New segmentation; existing labels are kept, new segments are numbered above
        the largest existing label.
    stats : ClaimStats
    """
    from skimage.segmentation import watershed

    labels = np.asarray(labels)
    if labels.shape != np.shape(image):
        raise DataError(f"labels of shape {fmt_list(labels.shape)} and image of shape {fmt_list(np.shape(image))} "
                        "differ")
    landscape = boundary_evidence(image, sigma)
    walls = membrane_mask(landscape, membrane_fraction)
    # watershed markers: the existing labels renumbered 1..n, 0 for unclaimed
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    keep = ids != background
    lookup = np.zeros(len(ids), dtype=np.int64)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    out = lookup[inverse]
    ids = ids[keep]
    stats = ClaimStats(unclaimed_before=int(np.count_nonzero(out == 0)))

    # 1. bodies grow through non-membrane voxels, up to grow_distance
    if grow_distance > 0 and out.any() and stats.unclaimed_before:
        dist = ndimage.distance_transform_edt(out == 0)
        reach = (out == 0) & ~walls & (dist <= grow_distance)
        grown = watershed(landscape, out, mask=(out > 0) | reach)
        take = reach & (grown > 0)
        out[take] = grown[take]
        stats.grown = int(np.count_nonzero(take))

    # 2. pieces no body reached become segments (split at their necks when split_distance is set)
    rest = (out == 0) & ~walls
    pieces, n = label_components(rest)
    if n and split_distance > 0:
        from skimage.feature import peak_local_max

        peaks = peak_local_max(ndimage.distance_transform_edt(rest), min_distance=int(split_distance),
                               labels=pieces, exclude_border=False)
        seeds = np.zeros(rest.shape, dtype=np.int64)
        seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        pieces = watershed(landscape, seeds, mask=rest)
        n = len(peaks)
    if n:
        sizes = np.bincount(pieces.ravel())
        big = np.flatnonzero(sizes >= max(1, min_size))
        big = big[big > 0]
        if len(big):
            lookup = np.zeros(n + 1, dtype=np.int64)
            lookup[big] = out.max() + 1 + np.arange(len(big))
            new = lookup[pieces]
            out[new > 0] = new[new > 0]
            stats.new_segments = len(big)
            stats.new_segment_voxels = int(np.count_nonzero(new))

    # 3. membranes and small pieces go to their neighbours
    if assign_rest and (out == 0).any() and out.any():
        before = int(np.count_nonzero(out == 0))
        out = watershed(landscape, out)
        stats.assigned_rest = before - int(np.count_nonzero(out == 0))
    stats.unclaimed_after = int(np.count_nonzero(out == 0))

    # back to the caller's ids; new segments are numbered above the largest label, skipping background
    top = int(max(ids.max() if len(ids) else 0, background))
    extra = np.arange(top + 1, top + 2 + out.max() - len(ids), dtype=np.uint64)
    extra = extra[extra != background][: out.max() - len(ids)]
    back = np.concatenate([np.array([background], dtype=np.uint64), ids.astype(np.uint64), extra])
    result = back[out]
    return result, stats


def claim_labels(labels: NDArray, image: NDArray, pp: Any, background: int = 0) -> tuple[NDArray[np.uint64], ClaimStats]:
    """:func:`claim_unclaimed` with the ``[postprocessing]`` keys of ``pp`` (a :class:`~diluvian.config.PostprocessingConfig`).

    The one place that maps the config onto the claiming step: the single-process fill
    (:func:`claim_result`) and the blockwise fill's claim phase both call it.
    """
    return claim_unclaimed(labels, image, grow_distance=pp.claim_grow_distance, min_size=pp.claim_min_size,
                           split_distance=pp.claim_split_distance, sigma=pp.boundary_sigma,
                           membrane_fraction=pp.membrane_fraction, background=background)


def claim_result(volume: Any, result: Any, cfg: Any, background: int = 0) -> Any:
    """A fill result with its unclaimed voxels claimed, by ``cfg.postprocessing`` (unchanged when ``claim`` is off).

    Parameters
    ----------
    volume : Volume or ndarray
        The filled volume (the whole of it: ``result.labels`` covers it).
    result : FillResult
    cfg : Config
    """
    if not cfg.postprocessing.claim:
        return result
    labels = np.asarray(result.labels)
    if isinstance(volume, np.ndarray):
        image = volume
    else:
        image = volume.get_image((0, 0, 0), tuple(int(s) for s in labels.shape))
    claimed, stats = claim_labels(labels, image, cfg.postprocessing, background)
    log.info("%s: %s", getattr(volume, "name", "array"), stats.summary())
    return dataclasses.replace(result, labels=claimed)
