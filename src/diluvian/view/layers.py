"""Neuroglancer layers from ZYX arrays: the one place where ZYX becomes neuroglancer's XYZ."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..util import fmt_list

__all__ = ["Layer", "LAYER_KINDS"]

LAYER_KINDS = ("image", "segmentation")


@dataclass(frozen=True)
class Layer:
    """One array to show in a viewer.

    Attributes
    ----------
    name : str
        Layer name (unique within a viewer).
    array : array-like, shape (Z, Y, X)
        NumPy array, h5py dataset, zarr array, ... Only the chunks the browser
        asks for are read.
    kind : {"image", "segmentation"}
        Images are drawn in grey (or in ``color``); segmentations with one
        colour per id (0 is background).
    resolution : tuple of 3 floats
        Voxel size in nm, ZYX.
    offset : tuple of 3 ints
        Position of the array's first voxel, in voxels of this layer, ZYX.
    color : str or None
        Images only: draw the values as a translucent overlay of this colour
        (``"#rrggbb"``), with opacity growing with the value; for masks and
        probability maps. ``None``: grey.
    value_range : tuple of 2 floats or None
        Images only: the values mapped to black and white (or to transparent
        and opaque). ``None``: ``(0, 1)`` for floats and booleans, the full
        range of the dtype for integers.
    """

    name: str
    array: Any
    kind: str = "image"
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[int, int, int] = (0, 0, 0)
    color: str | None = None
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise DataError(f"layer {self.name!r}: kind: expected one of {', '.join(LAYER_KINDS)}, got {self.kind!r}")
        shape = tuple(getattr(self.array, "shape", ()))
        if len(shape) != 3:
            raise DataError(f"layer {self.name!r}: expected a 3D (Z, Y, X) array, got shape {list(shape)}")
        res = tuple(float(r) for r in np.ravel(self.resolution))
        if len(res) != 3 or not all(np.isfinite(r) and r > 0 for r in res):
            raise DataError(f"layer {self.name!r}: resolution: expected 3 positive numbers (nm, ZYX), "
                            f"got {fmt_list(np.ravel(self.resolution))}")
        off = np.ravel(self.offset)
        if off.shape != (3,) or not np.all(np.equal(np.round(off), off)):
            raise DataError(f"layer {self.name!r}: offset: expected 3 integers (voxels, ZYX), got {fmt_list(off)}")
        dtype = np.dtype(self.array.dtype)
        if self.kind == "segmentation" and not (dtype.kind in "iu" or dtype == np.bool_):
            raise DataError(f"layer {self.name!r}: a segmentation needs integer ids, got dtype {dtype}")
        if self.color is not None:
            if self.kind == "segmentation":
                raise DataError(f"layer {self.name!r}: color applies to image layers only")
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", str(self.color)):
                raise DataError(f"layer {self.name!r}: color: expected '#rrggbb', got {self.color!r}")
        if self.value_range is not None and (len(self.value_range) != 2
                                             or not float(self.value_range[0]) < float(self.value_range[1])):
            raise DataError(f"layer {self.name!r}: value_range: expected (low, high) with low < high, "
                            f"got {self.value_range!r}")
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "offset", tuple(int(o) for o in off))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the array, ZYX."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]


def _served_dtype(dtype: np.dtype, kind: str) -> np.dtype:
    """The dtype neuroglancer gets for data of ``dtype``."""
    dtype = np.dtype(dtype)
    if kind == "segmentation":
        return dtype if dtype in (np.uint8, np.uint16, np.uint32, np.uint64) else np.dtype(np.uint64)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f" or dtype in (np.int64, np.uint64):
        return np.dtype(np.float32)
    return dtype


class _XYZArray:
    """A lazy XYZ (transposed) view of a ZYX array-like, in a dtype neuroglancer can serve.

    ``LocalVolume`` reads its data with ``data[x0:x1, y0:y1, z0:z1]``; this
    reads the matching ZYX block from the wrapped array and transposes it.
    """

    def __init__(self, zyx: Any, dtype: np.dtype):
        self._zyx = zyx
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in reversed(zyx.shape))

    def __getitem__(self, index_xyz: Any) -> np.ndarray:
        if not isinstance(index_xyz, tuple):
            index_xyz = (index_xyz,)
        index_xyz = index_xyz + (slice(None),) * (3 - len(index_xyz))
        block = np.asarray(self._zyx[tuple(reversed(index_xyz))])
        return block.astype(self.dtype, copy=False).T

    def transpose(self) -> np.ndarray:
        # Used by neuroglancer's mesh generator, which wants the C-order (ZYX) array.
        return np.ascontiguousarray(np.asarray(self._zyx[...]).astype(self.dtype, copy=False))


def _default_range(array: Any) -> tuple[float, float]:
    """Display range of an image: (0, 1) for floats and booleans, the dtype's range for 8 and 16
    bit integers, the data range for wider integers held in memory."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_ or dtype.kind == "f":
        return (0.0, 1.0)
    if dtype.itemsize > 2 and isinstance(array, np.ndarray) and array.size:
        lo, hi = float(array.min()), float(array.max())
        return (lo, hi) if hi > lo else (lo, lo + 1.0)
    info = np.iinfo(dtype)
    return (float(max(info.min, 0)), float(info.max))


def _image_shader(layer: Layer) -> str:
    lo, hi = layer.value_range if layer.value_range is not None else _default_range(layer.array)
    control = f"#uicontrol invlerp normalized(range=[{lo:g}, {hi:g}])\n"
    if layer.color is None:
        return control + "void main() {\n  emitGrayscale(normalized());\n}\n"
    return (control
            + f'#uicontrol vec3 color color(default="{layer.color}")\n'
            + "#uicontrol float opacity slider(min=0, max=1, default=0.6)\n"
            + "void main() {\n"
            + "  float v = clamp(normalized(), 0.0, 1.0);\n"
            + "  emitRGBA(vec4(color, v * opacity));\n"
            + "}\n")


def _local_volume(layer: Layer):
    import neuroglancer

    dims = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm",
                                        scales=list(reversed(layer.resolution)))
    data = _XYZArray(layer.array, _served_dtype(layer.array.dtype, layer.kind))
    return neuroglancer.LocalVolume(data, dimensions=dims, voxel_offset=list(reversed(layer.offset)),
                                    volume_type=layer.kind)


def _ng_layer(layer: Layer):
    import neuroglancer

    source = _local_volume(layer)
    if layer.kind == "segmentation":
        # a little more see-through than neuroglancer's default (0.5), so the EM shows under it
        return neuroglancer.SegmentationLayer(source=source, selected_alpha=0.35)
    return neuroglancer.ImageLayer(source=source, shader=_image_shader(layer))
