"""Views of a parent volume: a partition (a crop) and a power-of-2 downsampling.

Views compose (a partition of a downsampled volume, ...): each keeps the
affine map from its voxels to the root's (``world_scale``, ``world_offset``)
and reads the root's native data over the mapped box, pooling once. Object
masks, the valid-data mask and the "uniform label under the centre" test are
therefore always evaluated on the native (root) data and then pooled, never on
already pooled data.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..arrays import CroppedArray, LazyArray
from ..errors import ConfigError, DataError
from ..geometry import Box
from .base import Volume

__all__ = ["DownsampledVolume", "PartitionedVolume", "block_mode", "downsample_volume", "partition_volume"]


class _VolumeArray(LazyArray):
    """One of a volume's ``get_image``/``get_labels``/``get_mask`` as an array-like."""

    def __init__(self, volume: Volume, kind: str, dtype: Any) -> None:
        self._volume = volume
        self._kind = kind
        self.shape = volume.shape
        self.dtype = np.dtype(dtype)

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        return getattr(self._volume, f"_read_{self._kind}")(start, stop)


class _View(Volume):
    """Common plumbing of views: no validation (the parent was validated)."""

    def __init__(self, parent: Volume, shape: tuple[int, int, int], resolution: NDArray[np.float64],
                 scale: NDArray[np.int64], offset: NDArray[np.int64]) -> None:
        self.parent = parent
        self.name = parent.name
        self.shape = shape
        self.resolution = resolution
        # local -> parent: parent = local * scale + offset
        self._scale = scale
        self._offset = offset
        self._world_scale = scale * parent.world_scale
        self._world_offset = offset * parent.world_scale + parent.world_offset
        self._mask_bounds: Box | None = None

    @property
    def world_scale(self) -> NDArray[np.int64]:
        return self._world_scale.copy()

    @property
    def world_offset(self) -> NDArray[np.int64]:
        return self._world_offset.copy()

    def local_to_parent(self, coords: ArrayLike) -> NDArray[np.int64]:
        """Parent coordinates of the first corner of local voxels ``coords``."""
        return np.asarray(coords, dtype=np.int64) * self._scale + self._offset

    def parent_to_local(self, coords: ArrayLike) -> NDArray[np.int64]:
        """The local voxels that contain parent voxels ``coords``."""
        return (np.asarray(coords, dtype=np.int64) - self._offset) // self._scale

    # Every read goes to the root's native data over the world box, then pools by
    # the composed world scale: chains never pool already pooled data.
    def _world_read(self, kind: str, start: NDArray[np.int64], stop: NDArray[np.int64], *args: Any) -> NDArray:
        wa, wb = self.local_box_to_world(start, stop)
        return getattr(self.root, f"_read_{kind}")(wa, wb, *args)

    def _blocks(self, full: NDArray) -> NDArray | None:
        """``full`` reshaped to (nz, sz, ny, sy, nx, sx) blocks, or None at native resolution."""
        if (self._world_scale == 1).all():
            return None
        return full.reshape(_pool_shape(full, self._world_scale))

    def _read_image(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.float32]:
        full = self._world_read("image", start, stop)
        blocks = self._blocks(full)
        return full if blocks is None else blocks.mean(axis=(1, 3, 5), dtype=np.float32)

    def _read_labels(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        full = self._world_read("labels", start, stop)
        return full if (self._world_scale == 1).all() else block_mode(full, self._world_scale)

    def _read_mask(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.bool_]:
        full = self._world_read("mask", start, stop)
        blocks = self._blocks(full)
        return full if blocks is None else blocks.all(axis=(1, 3, 5))

    def _read_label_mask(self, start: NDArray[np.int64], stop: NDArray[np.int64], label_id: int,
                         mode: str) -> NDArray[np.bool_]:
        full = self._world_read("label_mask", start, stop, label_id, mode)
        blocks = self._blocks(full)
        if blocks is None:
            return full
        if mode == "conjunction":
            return blocks.all(axis=(1, 3, 5))
        return blocks.mean(axis=(1, 3, 5), dtype=np.float32) > 0.5


def _as_ints(value: Any, what: str, name: str) -> NDArray[np.int64]:
    arr = np.asarray(value).reshape(-1)
    if arr.shape != (3,) or not np.issubdtype(arr.dtype, np.number) or not np.array_equal(arr, np.round(arr)):
        raise ConfigError(f"volume {name!r}: {what}: expected 3 ints, got {np.asarray(value).tolist()}")
    return arr.astype(np.int64)


class PartitionedVolume(_View):
    """One part of a regular division of ``parent`` (spec §4.1).

    Parameters
    ----------
    parent : Volume
    partitioning : 3 ints >= 1
        Parts per axis. The part shape is ``parent.shape // partitioning``;
        remainders at the far ends belong to no part.
    index : 3 ints, ``0 <= index < partitioning``

    Attributes
    ----------
    offset : ndarray of int64, shape (3,)
        Position of the part in the parent: ``partition_shape * index``.
    image, labels, mask : array-like or None
        Crops of the parent's arrays (same dtypes).
    """

    def __init__(self, parent: Volume, partitioning: Sequence[int], index: Sequence[int]) -> None:
        p = _as_ints(partitioning, "partitioning", parent.name)
        i = _as_ints(index, "partition index", parent.name)
        if (p < 1).any():
            raise ConfigError(f"volume {parent.name!r}: partitioning: expected ints >= 1, got {p.tolist()}")
        if (i < 0).any() or (i >= p).any():
            raise ConfigError(f"volume {parent.name!r}: partition index {i.tolist()} is outside the "
                              f"partitioning {p.tolist()}")
        size = np.asarray(parent.shape, dtype=np.int64) // p
        if (size == 0).any():
            raise DataError(f"volume {parent.name!r}: partitioning {p.tolist()} of shape {list(parent.shape)} "
                            "gives empty parts")
        offset = size * i
        shape: tuple[int, int, int] = tuple(int(s) for s in size)  # type: ignore[assignment]
        super().__init__(parent, shape, parent.resolution.copy(), np.ones(3, dtype=np.int64), offset)
        self.partitioning = p
        self.index = i
        self.offset = offset
        self.image = None if parent.image is None else CroppedArray(parent.image, offset, shape)
        self.labels = None if parent.labels is None else CroppedArray(parent.labels, offset, shape)
        self.mask = None if parent.mask is None else CroppedArray(parent.mask, offset, shape)

    def __repr__(self) -> str:
        return (f"PartitionedVolume({self.parent!r}, partitioning={self.partitioning.tolist()}, "
                f"index={self.index.tolist()})")

    def _compute_mask_bounds(self) -> Box:
        pa, pb = self.parent.mask_bounds
        return Box(pa, pb).shift(-self.offset).clip(self.shape)


def _pool_shape(arr: NDArray, factor: NDArray[np.int64]) -> tuple[int, ...]:
    n = np.asarray(arr.shape) // factor
    return (int(n[0]), int(factor[0]), int(n[1]), int(factor[1]), int(n[2]), int(factor[2]))


def block_mode(labels: NDArray, factor: Sequence[int]) -> NDArray:
    """The most frequent value in each ``factor``-shaped block of ``labels``.

    Parameters
    ----------
    labels : ndarray, shape (Z, Y, X), each a multiple of ``factor``
    factor : 3 ints
        Block shape.

    Returns
    -------
    ndarray, shape ``labels.shape // factor``, dtype of ``labels``
        Ties go to the smallest value.
    """
    f = np.asarray(factor, dtype=np.int64)
    out_shape = tuple(int(s) for s in np.asarray(labels.shape) // f)
    k = int(np.prod(f))
    blocks = labels.reshape(_pool_shape(labels, f)).transpose(0, 2, 4, 1, 3, 5).reshape(-1, k)
    out = blocks[:, 0].copy()
    mixed = np.flatnonzero((blocks != blocks[:, :1]).any(axis=1))
    if mixed.size:
        s = np.sort(blocks[mixed], axis=1)
        new = np.ones(s.shape, dtype=bool)
        new[:, 1:] = s[:, 1:] != s[:, :-1]
        starts = np.flatnonzero(new.ravel())
        lengths = np.diff(np.append(starts, s.size))
        rows = starts // k
        order = np.lexsort((starts, -lengths, rows))  # by row, longest run first, then smallest value
        first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
        out[mixed] = s.ravel()[starts[first]]
    return out.reshape(out_shape)


class DownsampledVolume(_View):
    """``parent`` at ``2**factor`` times coarser voxels per axis.

    Parameters
    ----------
    parent : Volume
        A downsampled parent is folded in (factors add up), so pooling is
        always over native blocks.
    factor : 3 non-negative ints
        log2 of the block shape.

    Notes
    -----
    The shape is ``parent.shape // 2**factor`` (remainders are dropped).
    Local voxel ``v`` covers the parent block ``[v * s, (v + 1) * s)``, ``s =
    2**factor``, and the native block ``local_box_to_world(v, v + 1)``. Reads
    pool the native block (so a chain such as downsample / partition /
    downsample pools once, over all the native voxels):

    * ``get_image``: the mean of the block (float32);
    * ``get_labels``: the most frequent id (ties: the smallest id);
    * ``get_label_mask(..., mode)``: the object mask pooled by majority (more
      than half) or conjunction (all);
    * ``get_mask``: valid only when the whole block is valid, so a test on the
      pooled mask is a test on the native mask.

    ``image``, ``labels`` and ``mask`` are lazy array-likes of these (the image
    as float32 in [0, 1]).
    """

    def __init__(self, parent: Volume, factor: Sequence[int]) -> None:
        k = _as_ints(factor, "downsampling factor", parent.name)
        if (k < 0).any():
            raise ConfigError(f"volume {parent.name!r}: downsampling factor: expected ints >= 0, got {k.tolist()}")
        if isinstance(parent, DownsampledVolume):
            k = k + parent.factor
            parent = parent.parent  # type: ignore[assignment]
        scale = (2 ** k).astype(np.int64)
        size = np.asarray(parent.shape, dtype=np.int64) // scale
        if (size == 0).any():
            raise DataError(f"volume {parent.name!r}: downsampling shape {list(parent.shape)} by "
                            f"{scale.tolist()} leaves nothing")
        shape: tuple[int, int, int] = tuple(int(s) for s in size)  # type: ignore[assignment]
        super().__init__(parent, shape, parent.resolution * scale, scale, np.zeros(3, dtype=np.int64))
        self.factor = k
        self.scale = scale
        self.image = None if parent.image is None else _VolumeArray(self, "image", np.float32)
        self.labels = None if parent.labels is None else _VolumeArray(self, "labels", parent.labels.dtype)
        self.mask = None if parent.mask is None else _VolumeArray(self, "mask", np.bool_)

    def __repr__(self) -> str:
        return f"DownsampledVolume({self.parent!r}, factor={self.factor.tolist()})"

    def _compute_mask_bounds(self) -> Box:
        if self.mask is None:
            return Box.from_shape(self.shape)
        pa, pb = self.parent.mask_bounds
        # Pooled voxels are valid only when their whole block is, so they lie inside these bounds.
        start = np.minimum(-(-pa // self.scale), self.shape)
        return Box(start, np.maximum(start, np.minimum(pb // self.scale, self.shape)))


def partition_volume(volume: Volume, partitioning: Sequence[int], index: Sequence[int]) -> Volume:
    """One part of a regular division of ``volume`` (spec §4.1).

    Parameters
    ----------
    volume : Volume
    partitioning : 3 ints >= 1
        Number of parts per axis.
    index : 3 ints
        Which part, ``0 <= index < partitioning``.

    Returns
    -------
    Volume
        ``volume`` for ``[1, 1, 1]``, else a :class:`PartitionedVolume` of
        shape ``shape // partitioning`` starting at ``shape // partitioning *
        index`` (remainders at the far ends are dropped).

    Raises
    ------
    ConfigError
        Bad partitioning or index.
    DataError
        A part would be empty.
    """
    p = np.asarray(partitioning).reshape(-1)
    if p.shape == (3,) and np.array_equal(p, np.round(p)) and (p == 1).all():
        i = np.asarray(index).reshape(-1)
        if i.shape == (3,) and (i == 0).all():
            return volume
    return PartitionedVolume(volume, partitioning, index)


def downsample_volume(volume: Volume, resolution: ArrayLike) -> Volume:
    """``volume`` at a coarser resolution.

    Parameters
    ----------
    volume : Volume
    resolution : 3 floats, nm ZYX
        Target resolution; 0 on an axis means the volume's resolution there.
        Each axis must be the volume's resolution times a power of 2 (1, 2,
        4, ...).

    Returns
    -------
    Volume
        ``volume`` when nothing changes, else a :class:`DownsampledVolume`.

    Raises
    ------
    DataError
        The target is not a power-of-2 multiple of the resolution, or the
        downsampled volume would be empty.
    """
    target = np.asarray(resolution, dtype=np.float64).reshape(-1)
    if target.shape != (3,) or not np.isfinite(target).all() or (target < 0).any():
        raise DataError(f"volume {volume.name!r}: cannot downsample to resolution {target.tolist()}: "
                        "expected 3 non-negative numbers (nm, ZYX)")
    target = np.where(target == 0, volume.resolution, target)
    ratio = target / volume.resolution
    k = np.round(np.log2(ratio))
    if (k < 0).any() or not np.allclose(2.0 ** k, ratio, rtol=1e-6, atol=0):
        raise DataError(f"volume {volume.name!r}: cannot downsample from resolution {volume.resolution.tolist()} nm "
                        f"to {target.tolist()} nm: each axis must be a power-of-2 multiple (1, 2, 4, ...) "
                        "of the volume's resolution")
    if (k == 0).all():
        return volume
    return DownsampledVolume(volume, k.astype(np.int64))
