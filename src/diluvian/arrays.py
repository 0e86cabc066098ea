"""Read-only lazy array views: the base class, a crop, an integer upsampling and a chunk-cached image.

Each view has ``shape``, ``dtype`` and ``ndim`` and is indexed like a NumPy
array with basic indices (slices without steps, ints, ``...``; see
:func:`diluvian.geometry.index_box`); ``np.asarray(view)`` reads everything.

* :class:`LazyArray`: the base; subclasses implement ``_read(start, stop)``.
* :class:`CroppedArray`: the box ``[start, start + shape)`` of a parent array-like.
* :class:`UpsampledLabels`: nearest-neighbour upsampling by integer factors.
* :class:`ChunkCachedImage`: a box of a volume's image, fetched by chunk and
  kept in an LRU cache (what a fill reads its image through).

And :func:`large_empty`, an uninitialised array on transparent huge pages (the
fill's mask pool and batch buffers).

Imports nothing from the package but :mod:`diluvian.geometry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from .geometry import Box, index_bounds

__all__ = ["LazyArray", "CroppedArray", "UpsampledLabels", "ChunkCachedImage"]


class LazyArray(ABC):
    """Base of read-only array-likes that compute a box on demand.

    Subclasses set ``shape`` and ``dtype`` and implement ``_read(start, stop)``.
    Indexing follows :func:`diluvian.geometry.index_box` (slices without steps,
    ints, ``...``), so ``arr[...]`` or ``np.asarray(arr)`` reads everything.
    """

    ndim = 3
    shape: tuple[int, int, int]
    dtype: np.dtype

    @abstractmethod
    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        """The box ``[start, stop)`` (inside ``shape``, checked by the caller) as an ndarray."""

    def __getitem__(self, key: Any) -> NDArray:
        lo, hi, kept = index_bounds(key, self.shape)
        out = np.asarray(self._read(np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)))
        if len(kept) < 3:
            out = out.reshape(tuple(hi[a] - lo[a] for a in kept))
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class CroppedArray(LazyArray):
    """The box ``[start, start + shape)`` of a ZYX array-like, read on demand.

    Parameters
    ----------
    array : array-like (Z, Y, X)
        Anything with ``dtype`` and NumPy basic slicing by 3 slices.
    start : 3 ints
        Position of the crop in ``array``.
    shape : 3 ints
        Shape of the crop (not checked against ``array``: a read outside it
        gets what ``array`` gives).
    """

    def __init__(self, array: Any, start: Sequence[int], shape: Sequence[int]) -> None:
        self.array = array
        self.start = np.asarray(start, dtype=np.int64)
        self.shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
        self.dtype = np.dtype(array.dtype)

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        return np.asarray(self.array[Box._trusted(self.start + start, self.start + stop).slices])


class UpsampledLabels(LazyArray):
    """Nearest-neighbour upsampling of a label array by integer factors, read box by box.

    Parameters
    ----------
    labels : array-like (Z, Y, X)
        Labels at the coarser resolution.
    factors : 3 ints
        Upsampling factor per axis.
    shape : 3 ints
        Shape of the result; voxels beyond ``labels.shape * factors`` are 0.
    """

    def __init__(self, labels: Any, factors: Sequence[int], shape: Sequence[int]) -> None:
        self.labels = labels
        self.factors = np.asarray(factors, dtype=np.int64)
        self.shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
        self.dtype = np.dtype(labels.dtype)

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        f = self.factors
        out = np.zeros(tuple(int(n) for n in stop - start), dtype=self.dtype)
        lo = start // f
        hi = np.minimum(-(-stop // f), np.asarray(self.labels.shape))
        if (hi <= lo).any():
            return out
        coarse = np.asarray(self.labels[Box._trusted(lo, hi).slices])
        fine = coarse.repeat(f[0], axis=0).repeat(f[1], axis=1).repeat(f[2], axis=2)
        a = start - lo * f
        b = np.minimum(stop, hi * f) - lo * f
        part = fine[Box._trusted(a, b).slices]
        out[tuple(slice(0, n) for n in part.shape)] = part
        return out


class ChunkCachedImage(LazyArray):
    """Read-only float32 view of a box of a volume's image, fetched by chunk and cached.

    Parameters
    ----------
    volume
        Anything with ``get_image(start, stop) -> float32 ndarray``.
    start, stop : 3 ints
        The box, in volume voxels.
    chunk_shape : 3 ints
        Fetch granularity: chunks are aligned to ``start`` and clipped to the box.
    max_chunks : int
        Chunks kept in the LRU cache.
    """

    def __init__(self, volume: Any, start: Sequence[int], stop: Sequence[int],
                 chunk_shape: Sequence[int] = (64, 64, 64), max_chunks: int = 256) -> None:
        box = Box(start, stop, where="chunk-cached image")
        self.volume = volume
        self.start = box.start.copy()
        self.shape = box.shape
        self.dtype = np.dtype(np.float32)
        self.chunk = np.asarray(chunk_shape, dtype=np.int64)
        self.max_chunks = max_chunks
        self._cache: OrderedDict[tuple[int, int, int], NDArray[np.float32]] = OrderedDict()

    def _get_chunk(self, idx: tuple[int, int, int]) -> NDArray[np.float32]:
        arr = self._cache.get(idx)
        if arr is not None:
            self._cache.move_to_end(idx)
            return arr
        lo = np.asarray(idx, dtype=np.int64) * self.chunk
        hi = np.minimum(lo + self.chunk, self.shape)
        arr = np.asarray(self.volume.get_image(tuple(self.start + lo), tuple(self.start + hi)), dtype=np.float32)
        self._cache[idx] = arr
        if len(self._cache) > self.max_chunks:
            self._cache.popitem(last=False)
        return arr

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.float32]:
        # plain ints: this runs for every FOV a fill reads
        lo, hi = start.tolist(), stop.tolist()
        c = self.chunk.tolist()
        out = np.empty([b - a for a, b in zip(lo, hi)], dtype=np.float32)
        if out.size == 0:
            return out
        for cz in range(lo[0] // c[0], (hi[0] - 1) // c[0] + 1):
            for cy in range(lo[1] // c[1], (hi[1] - 1) // c[1] + 1):
                for cx in range(lo[2] // c[2], (hi[2] - 1) // c[2] + 1):
                    base = (cz * c[0], cy * c[1], cx * c[2])
                    arr = self._get_chunk((cz, cy, cx))
                    a = [max(x, b0) for x, b0 in zip(lo, base)]
                    b = [min(y, b0 + n) for y, b0, n in zip(hi, base, arr.shape)]
                    out[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1], a[2] - lo[2]:b[2] - lo[2]] = \
                        arr[a[0] - base[0]:b[0] - base[0], a[1] - base[1]:b[1] - base[1], a[2] - base[2]:b[2] - base[2]]
        return out


def large_empty(shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """An uninitialised array whose memory the kernel may back with 2 MiB pages (Linux).

    Large arrays that are read FOV by FOV (the fill's mask windows and batch rows)
    cost fewer TLB misses and page faults on huge pages: a first touch of fresh
    memory runs several times faster. The memory is anonymous and private, freed
    with the array; where ``madvise`` is not available this is ``np.empty``.
    """
    import mmap

    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or nbytes < (4 << 20):
        return np.empty(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(advice)
    except OSError:  # huge pages switched off: plain pages
        pass
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
