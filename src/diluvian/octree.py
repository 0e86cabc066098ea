"""Block-sparse, lazily populated 3D arrays.

:class:`OctreeVolume` keeps the name of the original's octree, but it is a
flat map from leaf index to leaf rather than a tree: in Python a dict lookup
per touched leaf is much faster than walking eight-way branch nodes, and every
feature the fill and the lazy image readers need (uniform regions that cost no
memory, lazy population, cheap reads and writes of small boxes) works on the
flat map as well. A region that is uniform over many leaves costs one dict
entry per leaf, except the whole-volume case (``vol[:] = v``), which costs none.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .geometry import index_box
from .errors import DataError
from .util import fmt_list

__all__ = ["OctreeVolume", "parse_index"]

Populator = Callable[[NDArray[np.int64], NDArray[np.int64]], ArrayLike]


def _same_value(a: Any, b: Any) -> bool:
    """``a == b`` for scalars, with NaN equal to NaN."""
    return bool(a == b) or (a != a and b != b)


def parse_index(key: Any, shape: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """:func:`diluvian.geometry.index_box` as lists: ``(lo, hi, kept)`` with the box ``[lo, hi)``.

    Raises
    ------
    IndexError
        A step, an index outside ``[0, shape]``, or more than 3 indices.
    """
    box, kept = index_box(key, shape)
    return box.start.tolist(), box.stop.tolist(), kept


class OctreeVolume:
    """A 3D (ZYX) array stored as a map of fixed-size leaves, dense or uniform.

    Parameters
    ----------
    leaf_shape : sequence of 3 ints
        Shape of one leaf (voxels, ZYX). The leaf grid starts at ``bounds[0]``;
        leaves at the far edges are cut to the bounds.
    bounds : ((z0, y0, x0), (z1, y1, x1))
        Box covered by the array, in some absolute voxel space (the origin need
        not be zero). The array has ``shape = bounds[1] - bounds[0]``.
    dtype : dtype-like
        Element type.
    populator : callable, optional
        ``populator(box_start, box_stop) -> ndarray`` returns the data of one
        leaf, given its box in the *absolute* coordinates of ``bounds``. It is
        called once per leaf, on the first read or partial write of that leaf.
        Without a populator, untouched leaves hold ``fill_value``.
    fill_value : scalar
        Value of untouched leaves when there is no populator.

    Notes
    -----
    Indexing is like a NumPy array of ``shape``: ``vol[z0:z1, y0:y1, x0:x1]``
    with indices relative to ``bounds[0]``; ints select (and drop) an axis,
    ``None`` slice bounds mean the array edge, and ``...`` or fewer than 3
    indices mean whole axes. Steps are not supported, negative indices are not
    wrapped, and indices outside ``[0, shape]`` raise :class:`IndexError`
    (NumPy would clip them silently).

    Reads return new arrays (never views of leaves). Writing a scalar over a
    whole leaf turns it into a uniform leaf and frees its memory, and
    ``vol[:] = v`` makes the whole array uniform (the populator is then no
    longer used).

    Leaves are held in a dict, so reading or writing a small box costs a few
    microseconds per touched leaf plus the copy.

    Examples
    --------
    >>> vol = OctreeVolume((4, 4, 4), ((0, 0, 0), (11, 6, 5)), np.float32, fill_value=np.nan)
    >>> vol[2:5, 0:2, 1:3] = 1.0  # touches 2 of the 3 x 2 x 2 leaves
    >>> float(vol[3, 1, 2]), vol.nbytes_allocated, vol.fullness() == 2 / 12
    (1.0, 512, True)
    """

    ndim = 3

    def __init__(self, leaf_shape: Sequence[int], bounds: Sequence[Sequence[int]], dtype: DTypeLike,
                 populator: Populator | None = None, fill_value: Any = 0) -> None:
        leaf = np.asarray(leaf_shape, dtype=np.int64).reshape(-1)
        if leaf.shape != (3,) or (leaf < 1).any():
            raise DataError(f"leaf_shape: expected 3 positive ints, got {fmt_list(np.ravel(leaf_shape))}")
        if len(bounds) != 2:
            raise DataError(f"bounds: expected (start, stop), got {fmt_list(bounds)}")
        start, stop = (np.asarray(b, dtype=np.int64).reshape(-1) for b in bounds)
        if start.shape != (3,) or stop.shape != (3,) or (stop <= start).any():
            raise DataError(f"bounds: expected a non-empty 3D box (start, stop), got {start.tolist()}, {stop.tolist()}")
        self.dtype = np.dtype(dtype)
        try:
            self._default = self.dtype.type(fill_value)
        except (TypeError, ValueError) as e:
            raise DataError(f"fill_value {fill_value!r} does not fit dtype {self.dtype}: {e}") from None
        self.leaf_shape: tuple[int, int, int] = tuple(int(v) for v in leaf)  # type: ignore[assignment]
        self.bounds: tuple[NDArray[np.int64], NDArray[np.int64]] = (start, stop)
        self.shape: tuple[int, int, int] = tuple(int(v) for v in stop - start)  # type: ignore[assignment]
        self.populator = populator
        self._populate = populator is not None
        self._grid = tuple(-(-s // ls) for s, ls in zip(self.shape, self.leaf_shape))
        # leaf index -> ndarray (dense) or numpy scalar (uniform); missing = default / not yet populated
        self._leaves: dict[tuple[int, int, int], Any] = {}
        self._nbytes = 0
        self._n_dense = 0

    # ------------------------------------------------------------------ properties

    @property
    def size(self) -> int:
        """Number of elements (as if dense)."""
        return int(np.prod(self.shape))

    @property
    def nbytes_allocated(self) -> int:
        """Bytes held in dense leaves (uniform and untouched leaves cost nothing)."""
        return self._nbytes

    @property
    def n_leaves(self) -> int:
        """Number of leaves the array is divided into."""
        return int(np.prod(self._grid))

    def fullness(self) -> float:
        """Fraction of leaves that are dense (allocated)."""
        return self._n_dense / self.n_leaves

    def __repr__(self) -> str:
        return (f"OctreeVolume(shape={self.shape}, leaf_shape={self.leaf_shape}, dtype={self.dtype}, "
                f"dense leaves={self._n_dense}/{self.n_leaves}, {self._nbytes} bytes)")

    # ------------------------------------------------------------------ leaf helpers

    def _leaf_box(self, idx: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        lo = tuple(i * ls for i, ls in zip(idx, self.leaf_shape))
        hi = tuple(min(a + ls, s) for a, ls, s in zip(lo, self.leaf_shape, self.shape))
        return lo, hi

    def _store(self, idx: tuple[int, int, int], value: Any) -> None:
        old = self._leaves.get(idx)
        if isinstance(old, np.ndarray):
            self._nbytes -= old.nbytes
            self._n_dense -= 1
        if isinstance(value, np.ndarray):
            self._nbytes += value.nbytes
            self._n_dense += 1
        self._leaves[idx] = value

    def _get_leaf(self, idx: tuple[int, int, int]) -> Any:
        """The leaf (ndarray or scalar), populating it if needed."""
        leaf = self._leaves.get(idx)
        if leaf is not None:
            return leaf
        if not self._populate:
            return self._default
        lo, hi = self._leaf_box(idx)
        base = self.bounds[0]
        box_start = base + np.asarray(lo, dtype=np.int64)
        box_stop = base + np.asarray(hi, dtype=np.int64)
        data = np.asarray(self.populator(box_start, box_stop))  # type: ignore[misc]
        shape = tuple(b - a for a, b in zip(lo, hi))
        if data.shape != shape:
            raise DataError(f"populator returned shape {list(data.shape)} for the box "
                             f"{box_start.tolist()}-{box_stop.tolist()}, expected {fmt_list(shape)}")
        first = data.flat[0]
        if np.all(data == first) or (first != first and np.isnan(data).all()):
            leaf = self.dtype.type(first)
        else:
            leaf = np.array(data, dtype=self.dtype, order="C")
        self._store(idx, leaf)
        return leaf

    def _dense_leaf(self, idx: tuple[int, int, int]) -> NDArray:
        """The leaf as a dense array (materialising a uniform or unpopulated one)."""
        leaf = self._get_leaf(idx)
        if isinstance(leaf, np.ndarray):
            return leaf
        lo, hi = self._leaf_box(idx)
        arr = np.full(tuple(b - a for a, b in zip(lo, hi)), leaf, dtype=self.dtype)
        self._store(idx, arr)
        return arr

    # ------------------------------------------------------------------ indexing

    def _parts(self, lo: list[int], hi: list[int]) -> list[list[tuple[int, slice, slice, bool]]]:
        """Per axis: (leaf index, slice in the box, slice in the leaf, whole leaf covered)."""
        axes = []
        for a in range(3):
            ls, n = self.leaf_shape[a], self.shape[a]
            parts = []
            for i in range(lo[a] // ls, (hi[a] - 1) // ls + 1):
                base = i * ls
                x, y = max(lo[a], base), min(hi[a], base + ls)
                whole = x == base and y == min(base + ls, n)
                parts.append((i, slice(x - lo[a], y - lo[a]), slice(x - base, y - base), whole))
            axes.append(parts)
        return axes

    def __getitem__(self, key: Any) -> NDArray:
        lo, hi, kept = parse_index(key, self.shape)
        shape = tuple(b - a for a, b in zip(lo, hi))
        lz, ly, lx = self.leaf_shape
        idx = (lo[0] // lz, lo[1] // ly, lo[2] // lx)
        if all(shape) and idx == ((hi[0] - 1) // lz, (hi[1] - 1) // ly, (hi[2] - 1) // lx):
            # fast path: the box lies in one leaf
            leaf = self._get_leaf(idx)
            if isinstance(leaf, np.ndarray):
                bz, by, bx = idx[0] * lz, idx[1] * ly, idx[2] * lx
                out = leaf[lo[0] - bz:hi[0] - bz, lo[1] - by:hi[1] - by, lo[2] - bx:hi[2] - bx].copy()
            else:
                out = np.full(shape, leaf, dtype=self.dtype)
        else:
            out = self._read_parts(lo, hi, shape)
        if len(kept) < 3:
            out = out.reshape(tuple(shape[a] for a in kept))
        return out

    def _read_parts(self, lo: list[int], hi: list[int], shape: tuple[int, ...]) -> NDArray:
        out = np.empty(shape, dtype=self.dtype)
        if out.size:
            pz, py, px = self._parts(lo, hi)
            for iz, dz, sz, _ in pz:
                for iy, dy, sy, _ in py:
                    for ix, dx, sx, _ in px:
                        leaf = self._get_leaf((iz, iy, ix))
                        if isinstance(leaf, np.ndarray):
                            out[dz, dy, dx] = leaf[sz, sy, sx]
                        else:
                            out[dz, dy, dx] = leaf
        return out

    def __setitem__(self, key: Any, value: ArrayLike) -> None:
        lo, hi, kept = parse_index(key, self.shape)
        shape = tuple(b - a for a, b in zip(lo, hi))
        arr = np.asarray(value)
        if arr.ndim == 0:
            scalar = self.dtype.type(arr)
            if tuple(lo) == (0, 0, 0) and tuple(hi) == self.shape:
                self._leaves.clear()
                self._nbytes = self._n_dense = 0
                self._default = scalar
                self._populate = False
                return
        else:
            scalar = None
            try:
                arr = np.broadcast_to(arr, tuple(shape[a] for a in kept)).reshape(shape)
            except ValueError:
                raise DataError(f"cannot assign an array of shape {list(np.shape(value))} to a box of shape "
                                 f"{fmt_list([shape[a] for a in kept])}") from None
        if not all(shape):
            return
        pz, py, px = self._parts(lo, hi)
        for iz, dz, sz, wz in pz:
            for iy, dy, sy, wy in py:
                for ix, dx, sx, wx in px:
                    idx = (iz, iy, ix)
                    whole = wz and wy and wx
                    if scalar is not None:
                        if whole:
                            self._store(idx, scalar)
                            continue
                        leaf = self._get_leaf(idx)
                        if not isinstance(leaf, np.ndarray):
                            if _same_value(leaf, scalar):
                                continue
                            leaf = self._dense_leaf(idx)
                        leaf[sz, sy, sx] = scalar
                    elif whole:
                        self._store(idx, np.array(arr[dz, dy, dx], dtype=self.dtype, order="C"))
                    else:
                        self._dense_leaf(idx)[sz, sy, sx] = arr[dz, dy, dx]

    def __array__(self, dtype: DTypeLike = None, copy: bool | None = None) -> NDArray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    # ------------------------------------------------------------------ whole-array operations

    def iter_leaves(self) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], Any]]:
        """Yield ``(start, stop, leaf)`` for every leaf that is stored.

        ``start`` and ``stop`` are array indices (relative to ``bounds[0]``, as
        for ``vol[start:stop]``); ``leaf`` is an ndarray (a dense leaf, not a
        copy) or a NumPy scalar (a uniform leaf). Untouched leaves (value
        ``fill_value``, or not yet populated) are not yielded.
        """
        for idx in sorted(self._leaves):
            lo, hi = self._leaf_box(idx)
            yield np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64), self._leaves[idx]

    def nonuniform_bounds(self) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
        """Bounding box ``(start, stop)`` (array indices) of the dense leaves, or None when there are none."""
        dense = [idx for idx, leaf in self._leaves.items() if isinstance(leaf, np.ndarray)]
        if not dense:
            return None
        idx = np.asarray(dense, dtype=np.int64)
        leaf = np.asarray(self.leaf_shape, dtype=np.int64)
        start = idx.min(axis=0) * leaf
        stop = np.minimum((idx.max(axis=0) + 1) * leaf, np.asarray(self.shape, dtype=np.int64))
        return start, stop

    def map_copy(self, dtype: DTypeLike, leaf_fn: Callable[[NDArray], ArrayLike],
                 uniform_fn: Callable[[Any], Any]) -> "OctreeVolume":
        """A new volume with ``leaf_fn`` applied to dense leaves and ``uniform_fn`` to uniform values.

        Parameters
        ----------
        dtype : dtype-like
            Element type of the copy.
        leaf_fn : callable
            ``ndarray -> ndarray`` of the same shape, for dense leaves.
        uniform_fn : callable
            ``scalar -> scalar``, for uniform leaves and the value of untouched
            leaves.

        Returns
        -------
        OctreeVolume
            Same bounds and leaf shape. Leaves of this volume that are not yet
            populated stay lazy in the copy: they are read from this volume
            (populating it) and passed through ``leaf_fn`` on first access.
        """
        base = self.bounds[0]
        populator = None
        if self._populate:
            def populator(start: NDArray[np.int64], stop: NDArray[np.int64]) -> ArrayLike:
                a, b = start - base, stop - base
                return leaf_fn(self[a[0]:b[0], a[1]:b[1], a[2]:b[2]])
        out = OctreeVolume(self.leaf_shape, self.bounds, dtype, populator=populator,
                           fill_value=uniform_fn(self._default))
        for idx, leaf in self._leaves.items():
            if isinstance(leaf, np.ndarray):
                out._store(idx, np.array(leaf_fn(leaf), dtype=out.dtype, order="C"))
            else:
                out._store(idx, out.dtype.type(uniform_fn(leaf)))
        return out
