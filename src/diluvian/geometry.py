"""Boxes of voxels: one value type for a ZYX ``[start, stop)`` box, and basic-index parsing.

A :class:`Box` is immutable; its ``start`` and ``stop`` are read-only int64
arrays of 3 (ZYX), ``start <= stop``. It gives the shape, the slices that index
a ZYX array, intersection, containment, clipping, growing and the aligned
blocks that tile it. :func:`index_box` turns a basic NumPy index (slices
without steps, ints, ``...``) of a 3D array into a box. This module imports
nothing from the package but :mod:`diluvian.errors`.

>>> b = Box((0, 0, 0), (4, 8, 8))
>>> b.shape, b.slices
((4, 8, 8), (slice(0, 4, None), slice(0, 8, None), slice(0, 8, None)))
>>> b.grow(-1), b.intersection(Box((2, 2, 2), (10, 10, 10)))
(Box([1, 1, 1], [3, 7, 7]), Box([2, 2, 2], [4, 8, 8]))
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import DataError
from .util import fmt_list

__all__ = ["Box", "index_box", "index_bounds"]


def _ints3(value: Any) -> NDArray[np.int64] | None:
    """``value`` as 3 int64 (integral numbers only), or None."""
    try:
        arr = np.asarray(value).reshape(-1)
    except (TypeError, ValueError):
        return None
    if arr.shape != (3,) or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        return None
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
        return None
    return arr.astype(np.int64)


class Box:
    """The voxels ``start <= v < stop`` of a ZYX grid.

    Parameters
    ----------
    start, stop : 3 ints each
        Integral numbers (``4.0`` is fine, ``4.5`` is not), ``stop >= start``.
    where : str
        What the box is, for the error message (e.g. ``"volume 'a': box"``).

    Raises
    ------
    DataError
        ``start`` or ``stop`` is not 3 integral numbers, or ``stop < start``.
    """

    __slots__ = ("start", "stop")
    start: NDArray[np.int64]
    stop: NDArray[np.int64]

    def __init__(self, start: ArrayLike, stop: ArrayLike, *, where: str = "box") -> None:
        a, b = _ints3(start), _ints3(stop)
        if a is None or b is None or (b < a).any():
            raise DataError(f"{where}: expected start and stop of 3 ints each with stop >= start (ZYX), "
                            f"got {fmt_list(start)}-{fmt_list(stop)}")
        a.flags.writeable = False
        b.flags.writeable = False
        object.__setattr__(self, "start", a)
        object.__setattr__(self, "stop", b)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Box is immutable")

    @classmethod
    def _trusted(cls, start: NDArray[np.int64], stop: NDArray[np.int64]) -> "Box":
        """A box from int64 arrays known to be valid (no checks, no copies)."""
        box = object.__new__(cls)
        start.flags.writeable = False
        stop.flags.writeable = False
        object.__setattr__(box, "start", start)
        object.__setattr__(box, "stop", stop)
        return box

    @classmethod
    def from_shape(cls, shape: ArrayLike, start: ArrayLike = (0, 0, 0)) -> "Box":
        """The box of ``shape`` at ``start`` (default: the whole array of that shape)."""
        a = _ints3(start)
        s = _ints3(shape)
        if a is None or s is None or (s < 0).any():
            raise DataError(f"box: expected a shape of 3 ints >= 0 and a start of 3 ints, got shape {fmt_list(shape)}, "
                            f"start {fmt_list(start)}")
        return cls._trusted(a, a + s)

    # ------------------------------------------------------------------ properties

    @property
    def shape(self) -> tuple[int, int, int]:
        """``stop - start`` as 3 ints."""
        z, y, x = (int(n) for n in self.stop - self.start)
        return z, y, x

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.stop - self.start))

    @property
    def empty(self) -> bool:
        """Whether the box has no voxels."""
        return bool((self.stop <= self.start).any())

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """``(slice(start[0], stop[0]), ...)`` for indexing a ZYX array."""
        a, b = self.start, self.stop
        return slice(int(a[0]), int(b[0])), slice(int(a[1]), int(b[1])), slice(int(a[2]), int(b[2]))

    # ------------------------------------------------------------------ relations

    def contains(self, other: "Box | ArrayLike") -> bool:
        """Whether ``other`` (a box, or a voxel of 3 ints) lies inside this box.

        An empty box lies inside any box whose closure holds its corners.
        """
        if isinstance(other, Box):
            return bool((other.start >= self.start).all() and (other.stop <= self.stop).all())
        v = np.asarray(other)
        return bool((v >= self.start).all() and (v < self.stop).all())

    def intersection(self, other: "Box") -> "Box":
        """The voxels in both boxes; an empty box at the clipped start when they are disjoint."""
        a = np.maximum(self.start, other.start)
        b = np.maximum(a, np.minimum(self.stop, other.stop))
        return Box._trusted(a, b)

    def clip(self, bounds: "Box | ArrayLike") -> "Box":
        """This box clipped to ``bounds`` (a box, or a shape meaning ``[0, shape)``).

        Each corner is clipped on its own, so a box outside ``bounds`` becomes an
        empty box on the border nearest to it.
        """
        if not isinstance(bounds, Box):
            bounds = Box.from_shape(bounds)
        a = np.clip(self.start, bounds.start, bounds.stop)
        b = np.maximum(a, np.clip(self.stop, bounds.start, bounds.stop))
        return Box._trusted(a, b)

    def grow(self, margin: int | ArrayLike) -> "Box":
        """The box widened by ``margin`` (an int or 3 ints) on each side; negative shrinks.

        Raises
        ------
        DataError
            Shrinking would make ``stop < start``.
        """
        m = np.broadcast_to(np.asarray(margin, dtype=np.int64), (3,))
        return Box(self.start - m, self.stop + m, where=f"{self!r} grown by {m.tolist()}")

    def shift(self, offset: ArrayLike) -> "Box":
        """The box moved by ``offset`` (3 ints)."""
        o = np.asarray(offset, dtype=np.int64).reshape(3)
        return Box._trusted(self.start + o, self.stop + o)

    def blocks(self, block_shape: ArrayLike, origin: ArrayLike = (0, 0, 0)) -> Iterator["Box"]:
        """The blocks of the grid of ``block_shape`` (anchored at ``origin``) that meet this box, clipped to it.

        In C order (Z slowest). An empty box has no blocks.

        Raises
        ------
        DataError
            ``block_shape`` is not 3 ints >= 1.
        """
        bs = _ints3(block_shape)
        if bs is None or (bs < 1).any():
            raise DataError(f"box blocks: expected a block shape of 3 ints >= 1, got {fmt_list(block_shape)}")
        if self.empty:
            return
        o = np.asarray(origin, dtype=np.int64).reshape(3)
        first = (self.start - o) // bs
        last = (self.stop - 1 - o) // bs
        for idx in np.ndindex(*(last - first + 1)):
            lo = o + (first + np.asarray(idx)) * bs
            a = np.maximum(lo, self.start)
            b = np.minimum(lo + bs, self.stop)
            yield Box._trusted(a, b)

    # ------------------------------------------------------------------ value type

    def __iter__(self) -> Iterator[NDArray[np.int64]]:
        """``start, stop = box`` (writable copies)."""
        yield self.start.copy()
        yield self.stop.copy()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Box):
            return NotImplemented
        return bool(np.array_equal(self.start, other.start) and np.array_equal(self.stop, other.stop))

    def __hash__(self) -> int:
        return hash((tuple(self.start.tolist()), tuple(self.stop.tolist())))

    def __repr__(self) -> str:
        return f"Box({self.start.tolist()}, {self.stop.tolist()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Box, (self.start.tolist(), self.stop.tolist())


def index_box(key: Any, shape: Sequence[int]) -> tuple[Box, list[int]]:
    """Normalise a basic index of a 3D array to a box.

    Parameters
    ----------
    key : int, slice, Ellipsis or a tuple of them
        As for a NumPy array, but without steps, negative indices or clipping.
    shape : sequence of 3 ints
        Shape of the indexed array.

    Returns
    -------
    box : Box
        The indexed voxels.
    kept : list of ints
        The axes indexed by slices (ints drop their axis from the result).

    Raises
    ------
    IndexError
        A step, an index outside ``[0, shape]``, or more than 3 indices (an
        ``IndexError``, as NumPy raises for a bad index).
    """
    lo, hi, kept = index_bounds(key, shape)
    return Box._trusted(np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)), kept


def index_bounds(key: Any, shape: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """:func:`index_box` as plain lists ``(lo, hi, kept)``, for hot paths (array reads)."""
    if type(key) is tuple and len(key) == 3:  # the common case: 3 in-range slices without steps
        k0, k1, k2 = key
        if type(k0) is slice and type(k1) is slice and type(k2) is slice \
                and k0.step is None and k1.step is None and k2.step is None:
            lo = [0 if k.start is None else int(k.start) for k in key]
            hi = [int(n) if k.stop is None else int(k.stop) for k, n in zip(key, shape)]
            if all(0 <= a <= b <= n for a, b, n in zip(lo, hi, shape)):
                return lo, hi, [0, 1, 2]
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1:]
    if len(key) > 3:
        raise IndexError(f"too many indices for a 3D array: {len(key)}")
    key = key + (slice(None),) * (3 - len(key))
    lo, hi, kept = [], [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        n = int(n)
        if isinstance(k, slice):
            if k.step not in (None, 1):
                raise IndexError(f"axis {axis}: slice steps are not supported, got {k.step}")
            a = 0 if k.start is None else int(k.start)
            b = n if k.stop is None else int(k.stop)
            if a < 0 or b > n or a > b:
                raise IndexError(f"axis {axis}: slice {a}:{b} is outside [0, {n}]")
            kept.append(axis)
        else:
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
                raise IndexError(f"axis {axis}: expected an int or a slice, got {type(k).__name__}")
            a = int(k)
            if not 0 <= a < n:
                raise IndexError(f"axis {axis}: index {a} is outside [0, {n})")
            b = a + 1
        lo.append(a)
        hi.append(b)
    return lo, hi, kept
