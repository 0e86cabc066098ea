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
    xi = np.empty(fx, np.int64)
    for n in range(slots.shape[0]):
        s = slots[n]
        oz, oy, ox = origins[n, 0], origins[n, 1], origins[n, 2]
        z0, y0, x0 = starts[n, 0], starts[n, 1], starts[n, 2]
        mz0, my0, mx0 = z0 - oz, y0 - oy, x0 - ox
        if (z0 >= 0 and y0 >= 0 and x0 >= 0 and z0 + fz <= nz and y0 + fy <= ny and x0 + fx <= nx
                and mz0 >= 0 and my0 >= 0 and mx0 >= 0 and mz0 + fz <= wz and my0 + fy <= wy and mx0 + fx <= wx):
            # the common case: inside the box and the window, plain row copies (vectorised)
            for i in range(fz):
                for j in range(fy):
                    srow = image[z0 + i, y0 + j, x0:x0 + fx]
                    dst = out_image[n, i, j]
                    for k in range(fx):
                        dst[k] = srow[k]
                    prow = pool[s, mz0 + i, my0 + j, mx0:mx0 + fx]
                    mdst = out_mask[n, i, j]
                    for k in range(fx):
                        p = prow[k]
                        mdst[k] = p if p == p else v_false
            continue
        # near the box border (reflected) or the window's edge (unknown = v_false); plain scalars
        # only in the loops: the compiler reloads array elements after every store
        plain = x0 >= 0 and x0 + fx <= nx
        m0 = x0 - ox
        ka = min(max(0, -m0), fx)
        kb = max(min(fx, wx - m0), ka)
        for k in range(fx):
            xi[k] = _reflect(x0 + k, nx)
        for i in range(fz):
            z = _reflect(z0 + i, nz)
            mz = z - oz
            for j in range(fy):
                y = _reflect(y0 + j, ny)
                my = y - oy
                dst = out_image[n, i, j]
                mdst = out_mask[n, i, j]
                inwin = 0 <= mz < wz and 0 <= my < wy
                if plain:
                    srow = image[z, y, x0:x0 + fx]
                    for k in range(fx):
                        dst[k] = srow[k]
                    if inwin:
                        for k in range(ka):
                            mdst[k] = v_false
                        mrow = pool[s, mz, my, m0 + ka:m0 + kb]
                        seg = mdst[ka:kb]
                        for k in range(kb - ka):
                            p = mrow[k]
                            seg[k] = p if p == p else v_false
                        for k in range(kb, fx):
                            mdst[k] = v_false
                    else:
                        for k in range(fx):
                            mdst[k] = v_false
                else:
                    src = image[z, y]
                    for k in range(fx):
                        dst[k] = src[xi[k]]
                    if inwin:
                        prow = pool[s, mz, my]
                        for k in range(fx):
                            mx = xi[k] - ox
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
    tmp = np.empty(outputs.shape[3], np.float32)
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
        # plain scalars from here on: the compiler cannot keep array elements in registers
        # across the stores into the pool (they might alias)
        r = rows[n]
        z_a, z_b, y_a, y_b, x_a, x_b = lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]
        dz, dy, dx = o_start[0], o_start[1], o_start[2]
        pz, py, px = o[0], o[1], o[2]
        w = x_b - x_a
        for z in range(z_a, z_b):
            for y in range(y_a, y_b):
                out_row = outputs[r, z - dz, y - dy, x_a - dx:x_b - dx]
                prow = pool[s, z - pz, y - py, x_a - px:x_b - px]
                if bias:
                    # into a scratch row, then copied: a select that reads and writes the same row
                    # does not vectorise (masked stores)
                    for k in range(w):
                        src = out_row[k]
                        cur = prow[k]
                        # unknown (NaN) or > 0.5: take the prediction; otherwise it may only decrease
                        keep = (cur <= 0.5) & (src >= cur)
                        tmp[k] = cur if keep else src
                    for k in range(w):
                        prow[k] = tmp[k]
                else:
                    for k in range(w):
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
                # the slab's part inside the window (NaN elsewhere, which a maximum skips)
                z_lo, z_hi = max(s_lo[0] - pz, 0), min(s_hi[0] - pz, wz)
                y_lo, y_hi = max(s_lo[1] - py, 0), min(s_hi[1] - py, wy)
                x_lo, x_hi = max(s_lo[2] - px, 0), min(s_hi[2] - px, wx)
                best = -np.inf
                seen = False
                for mz in range(z_lo, z_hi):
                    for my in range(y_lo, y_hi):
                        prow = pool[s, mz, my]
                        for mx in range(x_lo, x_hi):
                            v = prow[mx]
                            if v == v:
                                seen = True
                                if v > best:
                                    best = v
                if not seen:
                    best = np.nan
                faces[n, 2 * axis + d] = best
