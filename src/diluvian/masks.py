"""Storage for the object-probability masks of regions being filled.

A dense fill runs many regions at once, each with a float32 mask over the
whole box (NaN = not predicted yet). Two storages give them the array API that
:class:`~diluvian.region.Region` uses (3D slicing, ``shape``):

- :class:`MaskPool` hands out dense *windows*: one preallocated array per region
  in flight, covering a box around the seed, reused by the next region once the
  first is done. Reads and writes inside the window are plain slices (views), so
  a move costs no per-leaf bookkeeping.
- :func:`sparse_mask`, a block-sparse :class:`~diluvian.octree.OctreeVolume`,
  whose memory follows the object wherever it goes.

A write outside a region's window first *shifts* the window over the box
(the written values move with it) when all that was written and the new write
fit in one window; a window that a region outgrows *spills*: its written part
is copied into a block-sparse mask, which serves the rest of that region's fill. Both hold the
same values, so the segmentation does not depend on the storage (tested).

Windows are NaN-initialised lazily: each keeps the z-planes of it known to be
NaN (or written by its region) and grows them before a read or write reaches
beyond them (:meth:`WindowMask.prepare`). A small object touches a small part of
its window, and a window reused by the next region is reset only where it was
written.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from .arrays import large_empty

__all__ = ["MaskPool", "WindowMask", "sparse_mask", "window_shape_for"]


def sparse_mask(shape: Sequence[int], leaf_shape: Sequence[int]) -> Any:
    """A NaN-initialised, block-sparse float32 mask of ``shape`` (an ``OctreeVolume``)."""
    from .octree import OctreeVolume

    return OctreeVolume(tuple(int(s) for s in leaf_shape), (np.zeros(3, dtype=np.int64), np.asarray(shape)),
                        np.float32, fill_value=np.nan)


def window_shape_for(box_shape: Sequence[int], fov_shape: Sequence[int], regions: int,
                     memory_bytes: int) -> tuple[int, int, int]:
    """The mask window of a pool: the whole box when ``regions`` of them fit ``memory_bytes``.

    Otherwise a box around the seed, the same fraction of the box along each axis,
    but at least three FOVs (or the box) along each axis.
    """
    box = np.asarray(box_shape, dtype=np.int64)
    per_region = memory_bytes / max(1, regions) / 4  # float32 voxels
    if np.prod(box) <= per_region:
        return tuple(int(v) for v in box)  # type: ignore[return-value]
    scale = (per_region / np.prod(box)) ** (1 / 3)
    floor = np.minimum(box, 3 * np.asarray(fov_shape, dtype=np.int64))
    win = np.maximum(floor, np.floor(box * scale).astype(np.int64))
    return tuple(int(v) for v in np.minimum(win, box))  # type: ignore[return-value]


class WindowMask:
    """A region's mask: a dense window of a :class:`MaskPool`, NaN outside it.

    Reads may return views of the window: callers copy before they modify what
    they read (``Region`` does). A write outside the window spills the mask into
    block-sparse storage for the rest of its life.
    """

    __slots__ = ("pool", "shape", "dtype", "origin", "end", "data", "sparse", "written_lo", "written_hi", "slot",
                 "_o", "_ready")

    def __init__(self, pool: "MaskPool", slot: int, origin: NDArray[np.int64]) -> None:
        self.pool = pool
        self.shape = pool.box_shape
        self.dtype = np.dtype(np.float32)
        self.slot = slot
        self.origin = origin
        self.end = origin + np.asarray(pool.window, dtype=np.int64)
        self.data: NDArray[np.float32] | None = pool.data[slot]
        self.sparse: Any = None
        # box written so far, in window coordinates (empty: lo > hi)
        self.written_lo = np.asarray(pool.window, dtype=np.int64)
        self.written_hi = np.zeros(3, dtype=np.int64)
        self._o = tuple(int(v) for v in origin)
        self._ready = pool._ready[slot]  # the window's NaN-or-written box (z0, y0, x0, z1, y1, x1), shared

    def prepare(self, lo: Sequence[int], hi: Sequence[int]) -> None:
        """Make the window's part of the box ``[lo, hi)`` (box coordinates) valid to read and write.

        Voxels of the window not initialised yet become NaN; nothing else changes.
        """
        if self.data is None:
            return
        o, w = self._o, self.pool.window
        self._ensure(max(int(lo[0]) - o[0], 0), max(int(lo[1]) - o[1], 0), max(int(lo[2]) - o[2], 0),
                     min(int(hi[0]) - o[0], w[0]), min(int(hi[1]) - o[1], w[1]), min(int(hi[2]) - o[2], w[2]))

    def value(self, z: int, y: int, x: int) -> float:
        """The mask at one voxel (box coordinates), as a float (NaN: not predicted)."""
        if self.sparse is None:
            o, r = self._o, self._ready
            a0, a1, a2 = z - o[0], y - o[1], x - o[2]
            if r[0] <= a0 < r[3] and r[1] <= a1 < r[4] and r[2] <= a2 < r[5]:
                return float(self.data[a0, a1, a2])  # type: ignore[index]
            return float("nan")  # outside the window's initialised part: never written
        return float(np.asarray(self.sparse[z:z + 1, y:y + 1, x:x + 1]).reshape(()))

    @property
    def spilled(self) -> bool:
        return self.sparse is not None

    def _local(self, key: tuple[slice, slice, slice]) -> tuple[int, int, int, int, int, int] | None:
        o, e = self.origin, self.end
        z, y, x = key
        if z.start >= o[0] and z.stop <= e[0] and y.start >= o[1] and y.stop <= e[1] \
                and x.start >= o[2] and x.stop <= e[2]:
            return (z.start - o[0], z.stop - o[0], y.start - o[1], y.stop - o[1], x.start - o[2], x.stop - o[2])
        return None

    def __getitem__(self, key: tuple[slice, slice, slice]) -> NDArray[np.float32]:
        if self.sparse is not None:
            return self.sparse[key]
        loc = self._local(key)
        if loc is not None:
            a0, b0, a1, b1, a2, b2 = loc
            self._ensure(a0, a1, a2, b0, b1, b2)
            return self.pool.host(self.data[a0:b0, a1:b1, a2:b2])  # type: ignore[index]
        lo = np.array([k.start for k in key], dtype=np.int64)
        hi = np.array([k.stop for k in key], dtype=np.int64)
        self.prepare(lo, hi)
        out = np.full(tuple(hi - lo), np.nan, dtype=np.float32)
        a = np.maximum(lo, self.origin)
        b = np.minimum(hi, self.end)
        if (b > a).all():
            out[tuple(slice(int(p), int(q)) for p, q in zip(a - lo, b - lo))] = self.pool.host(
                self.data[tuple(slice(int(p), int(q)) for p, q in zip(a - self.origin, b - self.origin))])
        return out

    def __setitem__(self, key: tuple[slice, slice, slice], value: Any) -> None:
        if self.sparse is None:
            loc = self._local(key)
            if loc is not None:
                a0, b0, a1, b1, a2, b2 = loc
                self._ensure(a0, a1, a2, b0, b1, b2)
                self.data[a0:b0, a1:b1, a2:b2] = self.pool.put(value)  # type: ignore[index]
                wl, wh = self.written_lo, self.written_hi
                if a0 < wl[0]: wl[0] = a0  # noqa: E701 - hot path, plain compares
                if a1 < wl[1]: wl[1] = a1  # noqa: E701
                if a2 < wl[2]: wl[2] = a2  # noqa: E701
                if b0 > wh[0]: wh[0] = b0  # noqa: E701
                if b1 > wh[1]: wh[1] = b1  # noqa: E701
                if b2 > wh[2]: wh[2] = b2  # noqa: E701
                return
            if self._shift(key):
                self[key] = value
                return
            self._spill()
        self.sparse[key] = value

    def _shift(self, key: tuple[slice, slice, slice]) -> bool:
        """Move the window over the box so that it holds all that was written and ``key``.

        The written values move with it (the rest of the window is NaN again). False
        when they do not fit in one window: then the mask spills.
        """
        win = np.asarray(self.pool.window, dtype=np.int64)
        lo = np.array([k.start for k in key], dtype=np.int64)
        hi = np.array([k.stop for k in key], dtype=np.int64)
        w_lo, w_hi = self.written_lo, self.written_hi
        written = bool((w_hi > w_lo).all())
        if written:
            lo, hi = np.minimum(lo, self.origin + w_lo), np.maximum(hi, self.origin + w_hi)
        if ((hi - lo) > win).any():
            return False
        origin = np.clip((lo + hi) // 2 - win // 2, 0, np.asarray(self.shape, dtype=np.int64) - win)
        if (origin > lo).any() or (origin + win < hi).any():
            return False
        saved = None
        if written:
            part = self.data[w_lo[0]:w_hi[0], w_lo[1]:w_hi[1], w_lo[2]:w_hi[2]]  # type: ignore[index]
            saved = part.copy() if isinstance(part, np.ndarray) else part.clone()
        self.data[...] = np.nan  # type: ignore[index]
        self._ready[:] = [0, 0, 0, *self.pool.window]
        g_lo, g_hi = self.origin + w_lo, self.origin + w_hi
        self.origin, self.end, self._o = origin, origin + win, tuple(int(v) for v in origin)
        if saved is not None:
            n_lo, n_hi = g_lo - origin, g_hi - origin
            self.data[n_lo[0]:n_hi[0], n_lo[1]:n_hi[1], n_lo[2]:n_hi[2]] = saved  # type: ignore[index]
            self.written_lo, self.written_hi = n_lo, n_hi
        self.pool.shifts += 1
        return True

    def _ensure(self, a0: int, a1: int, a2: int, b0: int, b1: int, b2: int) -> None:
        """:meth:`prepare` for a box in window coordinates, clipped to the window (may be empty)."""
        r = self._ready
        if not (a0 >= r[0] and a1 >= r[1] and a2 >= r[2] and b0 <= r[3] and b1 <= r[4] and b2 <= r[5]) \
                and a0 < b0 and a1 < b1 and a2 < b2:
            self.pool._grow(self.slot, (a0, a1, a2), (b0, b1, b2))

    def note_written(self, lo: NDArray[np.int64], hi: NDArray[np.int64]) -> None:
        """Record a write into ``[lo, hi)`` (box coordinates) made directly in :attr:`data`."""
        np.minimum(self.written_lo, lo - self.origin, out=self.written_lo)
        np.maximum(self.written_hi, hi - self.origin, out=self.written_hi)

    def _spill(self) -> None:
        """Move the written part of the window into block-sparse storage."""
        pool = self.pool
        self.sparse = sparse_mask(self.shape, pool.leaf_shape)
        lo, hi = self.written_lo, self.written_hi
        if (hi > lo).all():
            g_lo, g_hi = self.origin + lo, self.origin + hi
            self.sparse[g_lo[0]:g_hi[0], g_lo[1]:g_hi[1], g_lo[2]:g_hi[2]] = \
                pool.host(self.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])  # type: ignore[index]
        pool.spills += 1
        self.release()

    def release(self) -> None:
        """Give the window back to the pool (reset to NaN where it was written)."""
        if self.data is None:
            return
        lo, hi = self.written_lo, self.written_hi
        if (hi > lo).all():
            self.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = np.nan
        self.pool._free.append(self.slot)
        self.data = None


class MaskPool:
    """Dense mask windows for the regions in flight, in one array, reused from region to region.

    Parameters
    ----------
    box_shape : 3 ints
        Shape of the box being filled (every mask has this shape).
    window_shape : 3 ints
        Shape of one window (clipped to the box); see :func:`window_shape_for`.
    capacity : int
        Windows in the pool; a region that finds none free gets block-sparse storage.
    leaf_shape : 3 ints
        Leaves of the block-sparse storage a window spills into.
    device : torch.device, optional
        Keep the windows in a torch tensor on this device (the model's), for
        :func:`diluvian.batchops.gather_torch` / :func:`~diluvian.batchops.apply_torch`;
        one more window (:attr:`trash`) takes their writes outside the box. Reads
        through :class:`WindowMask` then return host copies.

    Attributes
    ----------
    data : ndarray of float32, shape (capacity, *window)
        The windows. Allocated at once (on huge pages where the system has them) but
        NaN-filled only where their regions reach, so the memory in use follows the
        objects in flight.

    Notes
    -----
    A window is centred on its region's seed and shifted to lie inside the box.
    """

    def __init__(self, box_shape: Sequence[int], window_shape: Sequence[int], capacity: int,
                 leaf_shape: Sequence[int], device: Any = None) -> None:
        self.box_shape = tuple(int(s) for s in box_shape)
        self.window = tuple(int(min(w, b)) for w, b in zip(window_shape, self.box_shape))
        self.leaf_shape = tuple(int(s) for s in leaf_shape)
        self.capacity = int(capacity)
        self.device = device
        self.trash = self.capacity
        self.upload: Any = None
        if device is None:
            self.data: Any = large_empty((self.capacity, *self.window), np.float32)
        else:
            import torch

            self.data = torch.empty((self.capacity + 1, *self.window), dtype=torch.float32, device=device)
            from .device import Uploader

            self.upload = Uploader(torch.device(device))
        self._free: list[int] = []
        self._unused = 0  # windows [self._unused, capacity) were never used
        # per window, the box (window coordinates, whole z-planes) that is NaN or written by its
        # region; empty at first
        self._ready = [[*self.window, 0, 0, 0] for _ in range(int(capacity))]
        self.spills = 0
        self.shifts = 0
        self.overflow = 0

    def acquire(self, seed: Sequence[int]) -> Any:
        """NaN mask storage for a region grown from ``seed`` (box coordinates).

        A window around the seed, or block-sparse storage when every window is in use.
        """
        if self._free:
            slot = self._free.pop()
        elif self._unused < self.capacity:
            slot = self._unused
            self._unused += 1
        else:
            self.overflow += 1
            return sparse_mask(self.box_shape, self.leaf_shape)
        win = np.asarray(self.window, dtype=np.int64)
        origin = np.clip(np.asarray(seed, dtype=np.int64) - win // 2, 0, np.asarray(self.box_shape) - win)
        return WindowMask(self, slot, origin)

    def host(self, values: Any) -> NDArray[np.float32]:
        """``values`` (a part of :attr:`data`) as a host array."""
        return values if self.device is None else values.cpu().numpy()

    def put(self, value: Any) -> Any:
        """``value`` (an array or a number) ready to be written into :attr:`data`."""
        if self.device is None or np.isscalar(value):
            return value
        import torch

        return torch.as_tensor(np.asarray(value, dtype=np.float32), device=self.device)

    def _grow(self, slot: int, lo: Sequence[int], hi: Sequence[int]) -> None:
        """NaN-fill window ``slot`` so that its ready box covers ``[lo, hi)`` (window coordinates).

        The ready box grows by whole z-planes of the window: each fill is one contiguous
        run of memory, and a region that stays in a few planes touches only those.
        """
        r = self._ready[slot]
        win = self.data[slot]
        if r[0] >= r[3]:  # nothing ready yet
            win[lo[0]:hi[0]] = np.nan
            r[:] = [lo[0], 0, 0, hi[0], *self.window[1:]]
            return
        if lo[0] < r[0]:
            win[lo[0]:r[0]] = np.nan
            r[0] = lo[0]
        if hi[0] > r[3]:
            win[r[3]:hi[0]] = np.nan
            r[3] = hi[0]
