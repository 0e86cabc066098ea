"""The :class:`Volume` API and the in-memory :class:`NdarrayVolume`.

A volume is an image, and optionally object labels and a valid-data mask, on one
ZYX voxel grid with a resolution in nm. Backends (HDF5, zarr, image stacks) are
volumes whose arrays read lazily from files; views (:mod:`.views`) are volumes
derived from a parent (a partition, a downsampling) that read through it.

Coordinates: every volume has its own *local* voxel grid (``0 <= voxel <
shape``). *World* coordinates are the voxel grid of the root volume at the
bottom of a chain of views, i.e. the native data. A local voxel ``v`` covers
the world box ``[v * world_scale + world_offset, (v + 1) * world_scale +
world_offset)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..arrays import LazyArray, UpsampledLabels
from ..errors import ConfigError, DataError
from ..geometry import Box

__all__ = ["LABEL_DOWNSAMPLING_MODES", "Box", "LazyArray", "NdarrayVolume", "UpsampledLabels", "Volume",
           "image_to_float"]

logger = logging.getLogger(__name__)

LABEL_DOWNSAMPLING_MODES = ("majority", "conjunction")


def image_to_float(data: ArrayLike) -> NDArray[np.float32]:
    """Image data as float32 in [0, 1].

    Unsigned and signed integers are divided by the dtype's maximum + 1 (256
    for uint8, 65536 for uint16); booleans become 0/1; floats are kept as they
    are (only cast to float32).
    """
    arr = np.asarray(data)
    if arr.dtype.kind in "iu":
        scale = np.float32(1.0 / (int(np.iinfo(arr.dtype).max) + 1))
        return arr.astype(np.float32) * scale
    return arr.astype(np.float32, copy=False)


def as_resolution(value: Any, where: str) -> NDArray[np.float64]:
    """``value`` as 3 positive finite floats (nm, ZYX), or :class:`DataError` naming ``where``."""
    try:
        res = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        res = None
    if res is None or res.shape != (3,) or not (np.isfinite(res).all() and (res > 0).all()):
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        raise DataError(f"{where}: resolution: expected 3 positive numbers (nm, ZYX), got {shown!r}")
    return res


def _check_mode(mode: str) -> None:
    if mode not in LABEL_DOWNSAMPLING_MODES:
        raise ConfigError(f"label_downsampling: expected one of {', '.join(map(repr, LABEL_DOWNSAMPLING_MODES))}, "
                          f"got {mode!r}")


class Volume:
    """An image with optional labels and mask on one ZYX grid.

    The base class holds arbitrary array-likes (NumPy arrays, h5py datasets,
    zarr arrays, :class:`~diluvian.octree.OctreeVolume`, ...): anything with
    ``shape``, ``dtype`` and NumPy basic slicing by 3 slices.

    Parameters
    ----------
    name : str
        Volume name (used by partition regexes and output names).
    image : array-like, shape (Z, Y, X), or None
        Raw intensities: integers (scaled by the dtype's max + 1) or floats in
        [0, 1]. None only for label-only volumes (e.g. segmentations).
    labels : array-like of integers, shape (Z, Y, X), or None
        Object ids.
    mask : array-like of bool or integers, shape (Z, Y, X), or None
        Valid-data mask (nonzero = valid).
    resolution : sequence of 3 floats
        Voxel size in nm, ZYX.
    mask_bounds : ((z0, y0, x0), (z1, y1, x1)), optional
        Precomputed bounding box of the mask (stop exclusive); computed from the
        mask on first use otherwise.

    Attributes
    ----------
    name : str
    image, labels, mask : array-like or None
        The data in this volume's local coordinates.
    resolution : ndarray of float64, shape (3,)
        nm per voxel, ZYX.
    shape : tuple of 3 ints
    parent : Volume or None
        The volume a view reads through; None for a root volume.

    Raises
    ------
    DataError
        No image and no labels, arrays that are not 3D or differ in shape,
        non-integer labels, a mask that is neither bool nor integer, or a bad
        resolution or ``mask_bounds``.
    """

    parent: "Volume | None" = None

    def __init__(self, name: str, image: Any = None, labels: Any = None, mask: Any = None,
                 resolution: ArrayLike = (1.0, 1.0, 1.0), *, mask_bounds: ArrayLike | None = None,
                 where: str | None = None) -> None:
        self.name = str(name)
        where = where or f"volume {self.name!r}"
        if image is None and labels is None:
            raise DataError(f"{where}: needs an image or labels (or both)")
        shapes = {}
        for what, arr, kinds in (("image", image, "biuf"), ("labels", labels, "iu"), ("mask", mask, "biu")):
            if arr is None:
                continue
            shape = tuple(int(s) for s in getattr(arr, "shape", ()))
            if len(shape) != 3:
                raise DataError(f"{where}: {what}: expected a 3D (Z, Y, X) array, got shape {list(shape)}")
            dtype = np.dtype(getattr(arr, "dtype", np.float64))
            if dtype.kind not in kinds:
                expected = {"image": "numbers", "labels": "integer object ids", "mask": "bool or integers"}[what]
                raise DataError(f"{where}: {what}: expected {expected}, got dtype {dtype}")
            shapes[what] = shape
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
            raise DataError(f"{where}: arrays differ in shape: {listed}")
        self.image, self.labels, self.mask = image, labels, mask
        self.shape: tuple[int, int, int] = next(iter(shapes.values()))  # type: ignore[assignment]
        if 0 in self.shape:
            raise DataError(f"{where}: empty array of shape {list(self.shape)}")
        self.resolution = as_resolution(resolution, where)
        self._mask_bounds: Box | None = None  # local voxels
        if mask_bounds is not None:
            self._mask_bounds = self._checked_mask_bounds(mask_bounds, where)

    def _checked_mask_bounds(self, value: ArrayLike, where: str) -> Box:
        try:
            mb = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            mb = np.zeros(0)
        shape = np.asarray(self.shape)
        if (mb.shape != (2, 3) or not np.array_equal(mb, np.round(mb)) or (mb[0] < 0).any()
                or (mb[1] > shape).any() or (mb[1] < mb[0]).any()):
            raise DataError(f"{where}: mask_bounds: expected [[z0, y0, x0], [z1, y1, x1]] inside the volume "
                            f"of shape {list(self.shape)}, got {np.asarray(value).tolist()}")
        return Box(mb[0], mb[1])

    def __repr__(self) -> str:
        parts = [k for k in ("image", "labels", "mask") if getattr(self, k) is not None]
        return (f"{type(self).__name__}({self.name!r}, shape={list(self.shape)}, "
                f"resolution={self.resolution.tolist()}, {'+'.join(parts)})")

    # ------------------------------------------------------------------ coordinates

    @property
    def root(self) -> "Volume":
        """The volume at the bottom of the chain of views (this one for a root volume)."""
        vol = self
        while vol.parent is not None:
            vol = vol.parent
        return vol

    @property
    def world_scale(self) -> NDArray[np.int64]:
        """World (root) voxels per local voxel, per axis."""
        return np.ones(3, dtype=np.int64)

    @property
    def world_offset(self) -> NDArray[np.int64]:
        """World coordinates of local voxel (0, 0, 0)."""
        return np.zeros(3, dtype=np.int64)

    def local_to_world(self, coords: ArrayLike) -> NDArray[np.int64]:
        """World (root) coordinates of the first corner of local voxels ``coords`` (shape (..., 3))."""
        return np.asarray(coords, dtype=np.int64) * self.world_scale + self.world_offset

    def world_to_local(self, coords: ArrayLike) -> NDArray[np.int64]:
        """The local voxels that contain world voxels ``coords`` (shape (..., 3)); floor division."""
        return (np.asarray(coords, dtype=np.int64) - self.world_offset) // self.world_scale

    def local_box_to_world(self, start: ArrayLike, stop: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The world box ``(start, stop)`` covered by the local box ``[start, stop)``."""
        return self.local_to_world(start), self.local_to_world(stop)

    # ------------------------------------------------------------------ reading

    def _check_box(self, start: ArrayLike, stop: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(start, stop)`` as int64 arrays, or a DataError unless the box lies inside the volume."""
        try:
            box: Box | None = Box(start, stop)
        except DataError:
            box = None
        if box is None or (box.start < 0).any() or (box.stop > np.asarray(self.shape)).any():
            raise DataError(f"volume {self.name!r}: box {np.asarray(start).tolist()}-{np.asarray(stop).tolist()} "
                            f"is not inside the volume of shape {list(self.shape)}")
        return box.start.copy(), box.stop.copy()

    def get_image(self, start: ArrayLike, stop: ArrayLike) -> NDArray[np.float32]:
        """The image in the box ``[start, stop)`` as float32 in [0, 1] (see :func:`image_to_float`).

        Raises
        ------
        DataError
            The box is not inside the volume, or the volume has no image.
        """
        a, b = self._check_box(start, stop)
        if self.image is None:
            raise DataError(f"volume {self.name!r} has no image (labels only)")
        return self._read_image(a, b)

    def get_labels(self, start: ArrayLike, stop: ArrayLike) -> NDArray:
        """The object ids in the box ``[start, stop)`` (the labels' integer dtype).

        Raises
        ------
        DataError
            The box is not inside the volume, or the volume has no labels.
        """
        a, b = self._check_box(start, stop)
        if self.labels is None:
            raise DataError(f"volume {self.name!r} has no labels")
        return self._read_labels(a, b)

    def get_mask(self, start: ArrayLike, stop: ArrayLike) -> NDArray[np.bool_] | None:
        """The valid-data mask in the box ``[start, stop)`` as bool, or None when the volume has no mask.

        Raises
        ------
        DataError
            The box is not inside the volume.
        """
        a, b = self._check_box(start, stop)
        if self.mask is None:
            return None
        return self._read_mask(a, b)

    def get_label_mask(self, start: ArrayLike, stop: ArrayLike, label_id: int,
                       mode: str = "majority") -> NDArray[np.bool_]:
        """Binary mask of object ``label_id`` in the box ``[start, stop)``.

        On a downsampled volume the mask is computed at the native resolution
        and pooled per block: ``"majority"`` keeps voxels whose block is more
        than half the object, ``"conjunction"`` those whose block is all object.
        At native resolution both modes give ``labels == label_id``.

        Raises
        ------
        DataError
            The box is not inside the volume, or the volume has no labels.
        ConfigError
            An unknown ``mode``.
        """
        _check_mode(mode)
        a, b = self._check_box(start, stop)
        if self.labels is None:
            raise DataError(f"volume {self.name!r} has no labels")
        return self._read_label_mask(a, b, label_id, mode)

    # Root implementations: read the arrays. Views override these.
    def _read_image(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.float32]:
        return image_to_float(self.image[Box(start, stop).slices])

    def _read_labels(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        return np.asarray(self.labels[Box(start, stop).slices])

    def _read_mask(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.asarray(self.mask[Box(start, stop).slices]) != 0

    def _read_label_mask(self, start: NDArray[np.int64], stop: NDArray[np.int64], label_id: int,
                         mode: str) -> NDArray[np.bool_]:
        return self._read_labels(start, stop) == label_id

    def world_block_label(self, voxel: ArrayLike) -> int | None:
        """The object id of the native (world) block under local ``voxel`` if the block is one object, else None.

        At native resolution the block is the voxel itself.
        """
        a, b = self._check_box(voxel, np.asarray(voxel) + 1)
        if self.labels is None:
            raise DataError(f"volume {self.name!r} has no labels")
        wa, wb = self.local_box_to_world(a, b)
        block = self.root._read_labels(wa, wb)
        first = block.flat[0]
        return int(first) if (block == first).all() else None

    # ------------------------------------------------------------------ mask bounds

    @property
    def mask_bounds(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Bounding box ``(start, stop)`` (local voxels, stop exclusive) of the valid-data mask.

        The whole volume when there is no mask; an empty box when the mask is empty.
        """
        if self._mask_bounds is None:
            self._mask_bounds = self._compute_mask_bounds()
        return self._mask_bounds.start.copy(), self._mask_bounds.stop.copy()

    def _compute_mask_bounds(self) -> Box:
        shape = np.asarray(self.shape, dtype=np.int64)
        if self.mask is None:
            return Box.from_shape(shape)
        # Read in slabs of Z to bound memory on large lazy masks.
        any_z = np.zeros(shape[0], dtype=bool)
        any_y = np.zeros(shape[1], dtype=bool)
        any_x = np.zeros(shape[2], dtype=bool)
        step = max(1, int(2 ** 26 // max(1, shape[1] * shape[2])))
        for z in range(0, int(shape[0]), step):
            z1 = min(int(shape[0]), z + step)
            slab = self._read_mask(np.array([z, 0, 0]), np.array([z1, shape[1], shape[2]]))
            any_z[z:z1] = slab.any(axis=(1, 2))
            any_y |= slab.any(axis=(0, 2))
            any_x |= slab.any(axis=(0, 1))
        if not any_z.any():
            return Box((0, 0, 0), (0, 0, 0))
        start, stop = [], []
        for flags in (any_z, any_y, any_x):
            idx = np.flatnonzero(flags)
            start.append(idx[0])
            stop.append(idx[-1] + 1)
        return Box(start, stop)

    def to_memory(self) -> "NdarrayVolume":
        """An :class:`NdarrayVolume` holding this volume's data (in its local coordinates).

        The result is a root volume: for views the link to the parent
        coordinates is dropped.
        """
        arrays = {k: (None if getattr(self, k) is None else np.asarray(getattr(self, k)[...]))
                  for k in ("image", "labels", "mask")}
        mb = self._mask_bounds if self.parent is None else None
        return NdarrayVolume(self.name, resolution=self.resolution,
                             mask_bounds=None if mb is None else np.stack(tuple(mb)), **arrays)

class NdarrayVolume(Volume):
    """A volume held in memory as NumPy arrays.

    Same parameters as :class:`Volume`; the arrays are converted with
    ``np.asarray`` and exposed through read-only views (the caller's arrays stay
    writable).

    Examples
    --------
    >>> vol = NdarrayVolume("toy", np.zeros((4, 8, 8), np.uint8), np.ones((4, 8, 8), np.uint64))
    >>> vol.get_image((0, 0, 0), (1, 2, 2)).dtype
    dtype('float32')
    """

    def __init__(self, name: str, image: ArrayLike | None = None, labels: ArrayLike | None = None,
                 mask: ArrayLike | None = None, resolution: ArrayLike = (1.0, 1.0, 1.0), *,
                 mask_bounds: ArrayLike | None = None, where: str | None = None) -> None:
        def readonly(a: ArrayLike | None) -> NDArray | None:
            if a is None:
                return None
            view = np.asarray(a).view()
            view.flags.writeable = False
            return view

        super().__init__(name, readonly(image), readonly(labels), readonly(mask), resolution,
                         mask_bounds=mask_bounds, where=where)

    def to_memory(self) -> "NdarrayVolume":
        """This volume (already in memory)."""
        return self
