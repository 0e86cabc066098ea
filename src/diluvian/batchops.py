"""Batched FOV gather and mask update on pooled mask windows (compiled with numba).

The dense fill's per-FOV work, done for a whole batch in one call each way:

- :func:`gather` reads N input FOVs, image and mask, into the batch buffer
  (reflect-padded at the box border as ``np.pad`` does; mask voxels not predicted
  yet read as ``v_false``);
- :func:`apply` writes N network outputs into their regions' windows with the
  anti-merge rule, in batch order (so several moves of one region apply one after
  the other, as :meth:`Region.add_mask` would), and returns per FOV the maxima of
  its six face slabs (the move checks) and the box it wrote.

They compute exactly what :meth:`~diluvian.region.Region.get_next_block` and
:meth:`~diluvian.region.Region.add_mask` compute (comparisons and copies only,
no arithmetic on the values), which the tests check against that Python path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gather", "apply"]


@njit(cache=True, inline="always")
def _reflect(i: int, n: int) -> int:
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


@njit(cache=True, nogil=True)
def gather(image, pool, slots, origins, starts, v_false, out_image, out_mask):  # pragma: no cover - compiled
    """Read FOV n of ``image`` and of window ``pool[slots[n]]`` (at ``origins[n]``) from ``starts[n]``.

    ``image`` is the box (Z, Y, X); ``starts`` may lie outside it (reflected once).
    """
    nz, ny, nx = image.shape
    wz, wy, wx = pool.shape[1], pool.shape[2], pool.shape[3]
    fz, fy, fx = out_image.shape[1], out_image.shape[2], out_image.shape[3]
    zi = np.empty(fz, np.int64)
    yi = np.empty(fy, np.int64)
    xi = np.empty(fx, np.int64)
    mxi = np.empty(fx, np.int64)
    for n in range(slots.shape[0]):
        s = slots[n]
        oz, oy, ox = origins[n, 0], origins[n, 1], origins[n, 2]
        for i in range(fz):
            zi[i] = _reflect(starts[n, 0] + i, nz)
        for j in range(fy):
            yi[j] = _reflect(starts[n, 1] + j, ny)
        for k in range(fx):
            xi[k] = _reflect(starts[n, 2] + k, nx)
            mxi[k] = xi[k] - ox
        x0 = starts[n, 2]
        plain = x0 >= 0 and x0 + fx <= nx  # no reflection along x: contiguous rows
        for i in range(fz):
            z = zi[i]
            mz = z - oz
            for j in range(fy):
                y = yi[j]
                my = y - oy
                src = image[z, y]
                dst = out_image[n, i, j]
                mdst = out_mask[n, i, j]
                if plain:
                    srow = src[x0:x0 + fx]  # a slice: the loop vectorises
                    for k in range(fx):
                        dst[k] = srow[k]
                else:
                    for k in range(fx):
                        dst[k] = src[xi[k]]
                if 0 <= mz < wz and 0 <= my < wy:
                    prow = pool[s, mz, my]
                    if plain:
                        # the FOV's x range is contiguous: the part inside the window is one slice
                        m0 = x0 - ox
                        k0 = max(0, -m0)
                        k1 = min(fx, wx - m0)
                        for k in range(0, min(k0, fx)):
                            mdst[k] = v_false
                        if k1 > k0:
                            mrow = prow[m0 + k0:m0 + k1]
                            part = mdst[k0:k1]
                            for k in range(k1 - k0):
                                p = mrow[k]
                                part[k] = p if p == p else v_false
                        for k in range(max(k1, k0), fx):
                            mdst[k] = v_false
                    else:
                        for k in range(fx):
                            mx = mxi[k]
                            p = prow[mx] if 0 <= mx < wx else v_false
                            mdst[k] = p if p == p else v_false
                else:
                    for k in range(fx):
                        mdst[k] = v_false


@njit(cache=True, nogil=True)
def apply(pool, slots, origins, centers, outputs, rows, box_shape, output_radius, move_step, check_t, bias,
          faces, written):  # pragma: no cover - compiled
    """Write ``outputs[rows[n]]`` into window ``pool[slots[n]]`` around ``centers[n]``; fill ``faces``, ``written``.

    The caller guarantees that every written box lies inside its window.
    ``faces[n, 2 * axis + (direction > 0)]`` is the maximum over that face's slab
    (NaN when every voxel is NaN, -inf when the slab lies outside the box);
    ``written[n]`` is the written box ``(z0, y0, x0, z1, y1, x1)`` in box coordinates.
    """
    wz, wy, wx = pool.shape[1], pool.shape[2], pool.shape[3]
    for n in range(slots.shape[0]):
        s = slots[n]
        o = origins[n]
        c = centers[n]
        lo = np.empty(3, np.int64)
        hi = np.empty(3, np.int64)
        o_start = np.empty(3, np.int64)
        for a in range(3):
            o_start[a] = c[a] - output_radius[a]
            lo[a] = max(o_start[a], 0)
            hi[a] = min(o_start[a] + outputs.shape[a + 1], box_shape[a])
            written[n, a] = lo[a]
            written[n, a + 3] = hi[a]
        oz0, oy0, ox0 = o_start[0], o_start[1], o_start[2]
        r = rows[n]
        for z in range(lo[0], hi[0]):
            for y in range(lo[1], hi[1]):
                out_row = outputs[r, z - oz0, y - oy0, lo[2] - ox0:hi[2] - ox0]
                prow = pool[s, z - o[0], y - o[1], lo[2] - o[2]:hi[2] - o[2]]
                if bias:
                    for k in range(out_row.shape[0]):
                        src = out_row[k]
                        cur = prow[k]
                        # unknown (NaN) or > 0.5: take the prediction; otherwise it may only decrease
                        take = (cur > 0.5) | (cur != cur) | (src < cur)  # no branches: vectorises
                        prow[k] = src if take else cur
                else:
                    for k in range(out_row.shape[0]):
                        prow[k] = out_row[k]
        # face slabs: centre +- step on the other axes, (centre + d * step) +- t along the axis
        for axis in range(3):
            for d in range(2):
                direction = 1 if d == 1 else -1
                s_lo = np.empty(3, np.int64)
                s_hi = np.empty(3, np.int64)
                empty = False
                for a in range(3):
                    if a == axis:
                        m = c[a] + direction * move_step[a]
                        s_lo[a] = max(m - check_t, 0)
                        s_hi[a] = min(m + check_t + 1, box_shape[a])
                    else:
                        s_lo[a] = max(c[a] - move_step[a], 0)
                        s_hi[a] = min(c[a] + move_step[a] + 1, box_shape[a])
                    if s_hi[a] <= s_lo[a]:
                        empty = True
                if empty:
                    faces[n, 2 * axis + d] = -np.inf
                    continue
                best = np.nan
                for z in range(s_lo[0], s_hi[0]):
                    mz = z - o[0]
                    for y in range(s_lo[1], s_hi[1]):
                        my = y - o[1]
                        for x in range(s_lo[2], s_hi[2]):
                            mx = x - o[2]
                            if 0 <= mz < wz and 0 <= my < wy and 0 <= mx < wx:
                                v = pool[s, mz, my, mx]
                                if v == v and not (best >= v):
                                    best = v
                faces[n, 2 * axis + d] = best
