"""Join the pieces of a neuron that a dense fill left apart (postprocessing after claiming).

A flood-filling network stops a region where it is unsure, so one neuron often ends up
in several touching segments (VOI split). google/ffn's pipelines join them by
*resegmentation*: at a contact between two segments, the network fills again from a
point inside each one, in a small box around the contact, and the two are one object
when each fill runs into the other (they agree). Two neurons that merely touch stop at
their membrane, so their fills stay apart.

:func:`agglomerate` does that for every pair of segments that touch over at least
``min_contact`` voxel faces:

1. the pair's contact point is the contact voxel nearest to the mean of its contacts;
2. in the box of ``box_radius`` voxels around it, each segment's seed is its voxel
   nearest to the contact point among those at least a move step inside it (distance
   transform; the box border does not count as a boundary);
3. both seeds are filled with the model in the box for at most ``max_moves`` moves
   (all pairs batched together, with the fill's anti-merge bias), and thresholded at
   ``t_final``;
4. the pair joins when the fill from each segment covers at least ``agreement`` of the
   other segment's voxels near the contact (within half an input FOV of it).

Joined segments are united (union-find) and take the smallest label of their group.
:func:`agglomerate_result` applies it to a fill result with the ``[postprocessing]``
keys ``agglomerate``, ``agglomerate_min_contact`` and ``agglomerate_agreement``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..config import Config
from ..region import Region
from ..stepper import fill_regions
from ..util import UnionFind

log = logging.getLogger(__name__)

__all__ = ["AgglomerationStats", "agglomerate", "agglomerate_result", "contacts"]


@dataclass
class AgglomerationStats:
    """What :func:`agglomerate` did."""

    pairs: int = 0
    tested: int = 0
    joined: int = 0
    segments_before: int = 0
    segments_after: int = 0

    def summary(self) -> str:
        return (f"agglomeration: {self.pairs} touching pairs, {self.tested} tested by refilling, {self.joined} joined; "
                f"{self.segments_before} -> {self.segments_after} segments")


def contacts(labels: NDArray, min_contact: int, background: int = 0) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Pairs of labels that touch over at least ``min_contact`` voxel faces, and a contact voxel of each.

    Returns ``(pairs, points)``: ``pairs`` (P, 2) with ``a < b``, ``points`` (P, 3) the
    voxel (of either side) nearest to the mean of the pair's contact faces.
    """
    keys, coords = [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        touch = (a != b) & (a != background) & (b != background)
        if not touch.any():
            continue
        pa, pb = a[touch].astype(np.uint64), b[touch].astype(np.uint64)
        keys.append(np.stack([np.minimum(pa, pb), np.maximum(pa, pb)], 1))
        coords.append(np.argwhere(touch))
    if not keys:
        return np.zeros((0, 2), np.uint64), np.zeros((0, 3), np.int64)
    k, c = np.concatenate(keys), np.concatenate(coords)
    pairs, inverse, counts = np.unique(k, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    mean = np.stack([np.bincount(inverse, weights=c[:, a]) for a in range(3)], 1) / counts[:, None]
    dist = ((c - mean[inverse]) ** 2).sum(1)
    order = np.lexsort((dist, inverse))  # per pair, nearest contact first
    first = order[np.searchsorted(inverse[order], np.arange(len(pairs)))]
    keep = counts >= min_contact
    return pairs[keep], c[first][keep].astype(np.int64)


def _seed(mask: NDArray[np.bool_], center: NDArray[np.int64], reach: NDArray[np.int64],
          depth: float) -> NDArray[np.int64] | None:
    """A voxel of ``mask`` near ``center`` (within ``reach``) and at least ``depth`` voxels inside it.

    The nearest to ``center`` of the voxels at least ``depth`` deep (or as deep as the
    segment gets there), so that a refill starts inside the segment but by the contact.
    """
    lo = np.maximum(center - reach, 0)
    hi = np.minimum(center + reach + 1, mask.shape)
    near = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if not near.any():
        return None
    inside = ndimage.distance_transform_edt(mask)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    deep = near & (inside >= min(depth, float(inside[near].max())))
    idx = np.argwhere(deep) + lo
    return idx[int(np.argmin(((idx - center) ** 2).sum(1)))].astype(np.int64)


def agglomerate(labels: NDArray, image: NDArray, model: Any, cfg: Config, *, min_contact: int = 20,
                agreement: float = 0.5, box_radius: Any = None, max_moves: int = 30, background: int = 0,
                move_batch_size: int = 32) -> tuple[NDArray, AgglomerationStats]:
    """Join touching segments of ``labels`` whose refills from both sides agree (see the module docstring).

    Parameters
    ----------
    labels : ndarray of ints (Z, Y, X)
    image : ndarray of float32, the same shape
    model
        A torch network, a predictor or a ``predict(images, masks)`` callable.
    cfg : Config
        ``[model]`` gives the FOVs, moves and ``t_final``; ``[fill] bias`` the anti-merge rule.
    min_contact : int
        Voxel faces two segments must share to be tested.
    agreement : float
        Fraction of the other segment's voxels near the contact that each refill must cover.
    box_radius : 3 ints, optional
        Half-size of the refill box around the contact (default: half the input FOV plus
        two moves).
    max_moves : int
        Moves of each refill (bounds the cost: two refills per tested pair).

    Returns
    -------
    (labels, stats)
        The joined labels (a new array; every group takes its smallest label).
    """
    m = cfg.model
    fov = np.asarray(m.input_fov_shape, dtype=np.int64)
    step = np.asarray(m.move_step, dtype=np.int64)
    radius = np.asarray(box_radius if box_radius is not None else fov // 2 + 2 * step, dtype=np.int64)
    depth = float(max(1, int(np.min(step))))  # seeds a move step inside their segments
    labels = np.asarray(labels)
    stats = AgglomerationStats(segments_before=int(len(np.unique(labels[labels != background]))))
    pairs, points = contacts(labels, min_contact, background)
    stats.pairs = len(pairs)
    shape = np.asarray(labels.shape, dtype=np.int64)
    regions: list[Region] = []
    tests: list[tuple[int, int, tuple[slice, ...], tuple[slice, ...], int]] = []  # a, b, box, near, region
    for (a, b), p in zip(pairs.tolist(), points):
        lo, hi = np.maximum(p - radius, 0), np.minimum(p + radius + 1, shape)
        box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))
        sub = labels[box]
        seeds = [_seed(sub == v, p - lo, fov // 2, depth) for v in (a, b)]
        if seeds[0] is None or seeds[1] is None:
            continue
        crop = np.ascontiguousarray(image[box], dtype=np.float32)
        n_lo, n_hi = np.maximum(p - fov // 2, lo) - lo, np.minimum(p + fov // 2 + 1, hi) - lo
        near = tuple(slice(int(x), int(y)) for x, y in zip(n_lo, n_hi))
        tests.append((a, b, box, near, len(regions)))
        for s in seeds:
            regions.append(Region(crop, m, s, mask=np.full(crop.shape, np.nan, np.float32), block_padding="reflect",
                                  bias_against_merge=bool(cfg.fill.bias)))
    stats.tested = len(tests)
    if regions:
        fill_regions(regions, model, move_batch_size=move_batch_size, max_moves=max_moves)
    uf = UnionFind()
    for a, b, box, near, i in tests:
        sub = labels[box][near]
        fill_a = regions[i].mask[near] >= m.t_final
        fill_b = regions[i + 1].mask[near] >= m.t_final
        in_a, in_b = sub == a, sub == b
        covers_b = (fill_a & in_b).sum() / max(int(in_b.sum()), 1)
        covers_a = (fill_b & in_a).sum() / max(int(in_a.sum()), 1)
        if min(covers_a, covers_b) >= agreement:
            uf.union(int(a), int(b))
            stats.joined += 1
    out = labels.copy()
    if uf.parent:
        ids, inverse = np.unique(labels, return_inverse=True)
        roots = np.array([uf.find(int(v)) for v in ids.tolist()], dtype=labels.dtype)
        out = roots[inverse.reshape(labels.shape)]
    stats.segments_after = int(len(np.unique(out[out != background])))
    return out, stats


def agglomerate_result(volume: Any, result: Any, model: Any, cfg: Config, background: int = 0) -> Any:
    """A fill result with touching pieces joined, by ``cfg.postprocessing`` (unchanged when ``agglomerate`` is off)."""
    pp = cfg.postprocessing
    if not pp.agglomerate:
        return result
    labels = np.asarray(result.labels)
    image = volume if isinstance(volume, np.ndarray) else volume.get_image((0, 0, 0), tuple(labels.shape))
    joined, stats = agglomerate(labels, np.asarray(image, dtype=np.float32), model, cfg,
                                min_contact=pp.agglomerate_min_contact, agreement=pp.agglomerate_agreement,
                                background=background)
    log.info("%s: %s", getattr(volume, "name", "array"), stats.summary())
    return dataclasses.replace(result, labels=joined.astype(labels.dtype, copy=False))
