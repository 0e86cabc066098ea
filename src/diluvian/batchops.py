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

:func:`gather_torch` and :func:`apply_torch` do the same on torch tensors, for a
pool and box image that live on the model's device (CUDA): a step then moves no
FOV through host memory, only index arrays in and the (N, 6) face maxima out.
The tests check them against the compiled pair on the CPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["gather", "apply", "gather_torch", "apply_torch"]


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


# ---- the same two operations on torch tensors (the pool and the box image on the model's device) ----


def _reflect_t(i: Any, n: int) -> Any:
    import torch

    return torch.where(i < 0, -i, torch.where(i >= n, 2 * (n - 1) - i, i))


def _upload(array: NDArray[np.int64], device: Any, upload: Any) -> Any:
    import torch

    return upload(array) if upload is not None else torch.as_tensor(array, device=device)


def _grid(parts: Sequence[Any]) -> Any:
    """The (N, A, B, C) outer "and" of three (N, A), (N, B), (N, C) masks."""
    return parts[0][:, :, None, None] & parts[1][:, None, :, None] & parts[2][:, None, None, :]


def _window_index(ints: Any, col: int, box: Sequence[int], win: Sequence[int], lengths: Sequence[int],
                  shift: Sequence[int]) -> tuple[list, list, list]:
    """Per axis, for boxes ``[ints[:, col + a] + shift[a], ... + lengths[a])``: window indices (clamped),
    and which positions are inside the box and the window. ``ints[:, 1:4]`` are the windows' origins."""
    import torch

    idx, in_box, in_win = [], [], []
    for a in range(3):
        p = ints[:, col + a, None] + (torch.arange(lengths[a], device=ints.device) + int(shift[a]))
        q = p - ints[:, 1 + a, None]
        in_box.append((p >= 0) & (p < box[a]))
        in_win.append((q >= 0) & (q < win[a]))
        idx.append(q.clamp(0, win[a] - 1))
    return idx, in_box, in_win


def gather_torch(image: Any, pool: Any, slots: NDArray[np.int64], origins: NDArray[np.int64],
                 starts: NDArray[np.int64], v_false: float, out_image: Any, out_mask: Any,
                 upload: Any = None) -> None:
    """:func:`gather` for tensors: ``image`` (Z, Y, X), ``pool`` (C, *window), outputs (N, *fov).

    The index arrays are host arrays, sent in one small copy (``upload(array)``, e.g. a
    :class:`~diluvian.device.Uploader`); everything else stays on the tensors' device.
    Same values as :func:`gather`, bit for bit (tested).
    """
    import torch

    dev = image.device
    fov = out_image.shape[1:]
    ints = _upload(np.concatenate([np.asarray(slots, np.int64)[:, None], origins, starts], axis=1), dev, upload)
    z, y, x = (_reflect_t(ints[:, 4 + a, None] + torch.arange(fov[a], device=dev), int(image.shape[a]))
               for a in range(3))
    out_image.copy_(image[z[:, :, None, None], y[:, None, :, None], x[:, None, None, :]])
    win = pool.shape[1:]
    m = [v - ints[:, 1 + a, None] for a, v in enumerate((z, y, x))]
    ok = _grid([(v >= 0) & (v < w) for v, w in zip(m, win)])
    m = [v.clamp(0, w - 1) for v, w in zip(m, win)]
    vals = pool[ints[:, 0, None, None, None], m[0][:, :, None, None], m[1][:, None, :, None], m[2][:, None, None, :]]
    out_mask.copy_(torch.where(ok & ~torch.isnan(vals), vals, torch.full_like(vals, float(v_false))))


def _rounds(slots: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """Batch positions split so that no window appears twice in one round, in batch order."""
    seen: dict[int, int] = {}
    rounds: list[list[int]] = []
    for n, s in enumerate(slots.tolist()):
        k = seen.get(s, 0)
        seen[s] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(n)
    return [np.asarray(r, dtype=np.int64) for r in rounds]


def apply_torch(pool: Any, trash: int, slots: NDArray[np.int64], origins: NDArray[np.int64],
                centers: NDArray[np.int64], outputs: Any, rows: NDArray[np.int64], box_shape: NDArray[np.int64],
                output_radius: NDArray[np.int64], move_step: NDArray[np.int64], check_t: int, bias: bool,
                upload: Any = None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """:func:`apply` for tensors: returns ``(faces, written)`` as host arrays.

    ``pool`` is (C, *window) on the device of ``outputs`` (N', *output_fov); window
    ``trash`` takes the writes that fall outside the box (its contents mean nothing).
    Several FOVs of one window apply in rounds, in batch order, and each FOV's face
    maxima are taken right after its round, so the result is :func:`apply`'s. One
    small copy in (``upload``), one (N, 6) copy out.
    """
    import torch

    dev = outputs.device
    win = pool.shape[1:]
    out_fov = tuple(outputs.shape[1:])
    box = [int(v) for v in box_shape]
    radius = np.asarray(output_radius, dtype=np.int64)
    step = [int(v) for v in move_step]
    t = int(check_t)
    o_start = centers - radius
    lo = np.maximum(o_start, 0)
    hi = np.minimum(o_start + np.asarray(out_fov, dtype=np.int64), np.asarray(box, dtype=np.int64))
    written = np.concatenate([lo, hi], axis=1)
    rounds = _rounds(np.asarray(slots, dtype=np.int64))
    order = np.concatenate(rounds)
    ints = _upload(np.concatenate([np.asarray(slots, np.int64)[order, None], origins[order], centers[order],
                                   np.asarray(rows, np.int64)[order, None]], axis=1), dev, upload)
    reach = [v + t for v in step]
    cube = [2 * r + 1 for r in reach]
    # per face (axis, direction): its slab inside the cube centre +- (step + t)
    slabs = []
    for axis in range(3):
        for d in range(2):
            sl = [slice(t, t + 2 * v + 1) for v in step]
            m = reach[axis] + (1 if d else -1) * step[axis]
            sl[axis] = slice(m - t, m + t + 1)
            slabs.append(tuple(sl))
    faces = []
    begin = 0
    for sel in rounds:
        part = ints[begin:begin + len(sel)]
        begin += len(sel)
        idx, in_box, _ = _window_index(part, 4, box, win, out_fov, -radius)
        s4 = torch.where(_grid(in_box), part[:, 0, None, None, None], trash)  # the caller keeps the rest in the window
        key = (s4, idx[0][:, :, None, None], idx[1][:, None, :, None], idx[2][:, None, None, :])
        src = outputs[part[:, 7]]
        if bias:
            cur = pool[key]
            src = torch.where((cur <= 0.5) & (src >= cur), cur, src)
        pool.index_put_(key, src)
        idx, in_box, in_win = _window_index(part, 4, box, win, cube, [-r for r in reach])
        vals = pool[part[:, 0, None, None, None], idx[0][:, :, None, None], idx[1][:, None, :, None],
                    idx[2][:, None, None, :]]
        good = _grid(in_box) & _grid(in_win) & ~torch.isnan(vals)
        vals = torch.where(good, vals, torch.full_like(vals, -float("inf")))
        best = torch.stack([vals[(slice(None),) + sl].amax(dim=(1, 2, 3)) for sl in slabs], 1)
        seen = torch.stack([good[(slice(None),) + sl].any(dim=(1, 2, 3)) for sl in slabs], 1)
        faces.append(torch.where(seen, best, torch.full_like(best, float("nan"))))
    out = np.empty((len(order), 6), dtype=np.float32)
    out[order] = torch.cat(faces).cpu().numpy()
    # a slab that lies wholly outside the box: -inf (known on the host)
    for axis in range(3):
        for d in range(2):
            m = centers[:, axis] + (1 if d else -1) * step[axis]
            empty = (np.minimum(m + t + 1, box[axis]) <= np.maximum(m - t, 0))
            for a in range(3):
                if a != axis:
                    empty |= np.minimum(centers[:, a] + step[a] + 1, box[a]) <= np.maximum(centers[:, a] - step[a], 0)
            out[empty, 2 * axis + d] = -np.inf
    return out, written
