"""Volumes read through TensorStore (N5, neuroglancer precomputed, zarr v2/v3) and ``[[tensorstore]]`` TOML tables.

Each array is opened once, lazily: only the chunks a box touches are read.
Local paths (relative to the dataset TOML) and URLs that TensorStore knows
(``file://``, ``gs://``, ``s3://``, ``http(s)://``) are accepted, so the same
entry reads a local copy or the cloud original where the user has access.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import ConfigError, DataError, DatasetNotFoundError, DiluvianError
from ._entries import Entry
from .base import LazyArray, Volume

__all__ = ["DRIVERS", "TensorStoreArray", "TensorStoreVolume", "open_tensorstore"]

logger = logging.getLogger(__name__)

#: ``driver`` values of a ``[[tensorstore]]`` table (TensorStore's driver names).
DRIVERS = ("neuroglancer_precomputed", "n5", "zarr", "zarr3")

TENSORSTORE_KEYS = ("name", "driver", "image", "labels", "mask", "scale_index", "axes", "resolution", "mask_bounds")

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def kvstore_spec(location: str | os.PathLike) -> Any:
    """TensorStore kvstore spec of a local path or a URL (``file://``, ``gs://``, ``s3://``, ...)."""
    text = str(location)
    if _URL.match(text):
        return text if text.endswith("/") else text + "/"
    return {"driver": "file", "path": str(Path(text).expanduser().resolve())}


def open_tensorstore(driver: str, location: str | os.PathLike, *, scale_index: int | None = None,
                     axes: str | None = None, where: str = "") -> tuple[Any, NDArray[np.float64] | None]:
    """Open an array read-only as a ZYX TensorStore; returns ``(store, resolution or None)``.

    Parameters
    ----------
    driver : {"neuroglancer_precomputed", "n5", "zarr", "zarr3"}
    location : path-like or URL
    scale_index : int, optional
        Scale of a precomputed volume (default 0, the finest).
    axes : {"zyx", "xyz"}, optional
        Order of the array's dimensions when the store does not label them
        (default ``zyx``). Labelled dimensions (precomputed's ``x, y, z,
        channel``) are reordered by their labels; a channel dimension must have
        one channel.
    where : str
        Names the entry in messages.

    Returns
    -------
    store : tensorstore.TensorStore
        3D, dimensions Z, Y, X, origin 0.
    resolution : ndarray of 3 floats or None
        nm per voxel from the store's dimension units, when they are lengths.

    Raises
    ------
    DatasetNotFoundError
        Nothing at ``location``.
    DataError
        Not an array of this driver, not 3D, or several channels.
    """
    import tensorstore as ts

    where = where or str(location)
    if driver not in DRIVERS:
        raise ConfigError(f"{where}: driver: expected one of {', '.join(DRIVERS)}, got {driver!r}")
    spec: dict[str, Any] = {"driver": driver, "kvstore": kvstore_spec(location), "open": True}
    if driver == "neuroglancer_precomputed" and scale_index is not None:
        spec["scale_index"] = int(scale_index)
    try:
        store = ts.open(spec, read=True, write=False).result()
    except ValueError as e:
        text = " ".join(str(e).split("[tensorstore_spec")[0].split())
        if text.startswith("NOT_FOUND"):
            raise DatasetNotFoundError(f"{where}: no {driver} array at {location} ({text})") from None
        raise DataError(f"{where}: cannot open {location} as {driver}: {text}") from None
    labels = list(store.domain.labels)
    if "channel" in labels:
        channels = store.domain[labels.index("channel")]
        if channels.size != 1:
            raise DataError(f"{where}: {location}: expected one channel, got {channels.size}")
        store = store[ts.d["channel"][channels.inclusive_min]]
        labels = list(store.domain.labels)
    if store.rank != 3:
        raise DataError(f"{where}: {location}: expected a 3D (Z, Y, X) array, got shape {list(store.shape)}")
    if sorted(labels) == ["x", "y", "z"]:
        store = store[ts.d["z", "y", "x"].transpose[0, 1, 2]]
    elif (axes or "zyx") == "xyz":
        store = store.T
    elif (axes or "zyx") != "zyx":
        raise ConfigError(f"{where}: axes: expected \"zyx\" or \"xyz\", got {axes!r}")
    store = store.translate_to[0, 0, 0]
    resolution = None
    units = store.dimension_units
    if all(u is not None and u.base_unit in ("nm", "um", "µm") for u in units):
        factor = {"nm": 1.0, "um": 1000.0, "µm": 1000.0}
        resolution = np.asarray([u.multiplier * factor[u.base_unit] for u in units], dtype=np.float64)
    return store, resolution


class TensorStoreArray(LazyArray):
    """A read-only ZYX TensorStore as an array-like (``shape``, ``dtype``, 3D slicing), read by chunk."""

    def __init__(self, store: Any, where: str = "") -> None:
        self.store = store
        self.shape = tuple(int(s) for s in store.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.where = where

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        box = self.store[int(start[0]):int(stop[0]), int(start[1]):int(stop[1]), int(start[2]):int(stop[2])]
        try:
            return np.asarray(box.read().result())
        except ValueError as e:
            raise DataError(f"{self.where}: reading {start.tolist()}-{stop.tolist()}: {e}") from None


class TensorStoreVolume(Volume):
    """A volume whose arrays are TensorStore arrays (N5, neuroglancer precomputed, zarr v2/v3), read lazily.

    Parameters
    ----------
    name : str
    driver : {"neuroglancer_precomputed", "n5", "zarr", "zarr3"}
    image, labels, mask : path-like or URL, optional
        Locations of the arrays (at least one of image and labels).
    scale_index : int, optional
        Scale of precomputed arrays (default 0).
    axes : {"zyx", "xyz"}, optional
        Dimension order of arrays without dimension labels (default ``zyx``).
    resolution : 3 floats, optional
        nm, ZYX. Default: the image's (else the labels') dimension units, else
        [1, 1, 1] with a warning.
    mask_bounds : ((z0, y0, x0), (z1, y1, x1)), optional

    Raises
    ------
    DatasetNotFoundError, DataError
        See :func:`open_tensorstore` and :class:`Volume`.
    """

    def __init__(self, name: str, driver: str, image: str | os.PathLike | None = None,
                 labels: str | os.PathLike | None = None, mask: str | os.PathLike | None = None, *,
                 scale_index: int | None = None, axes: str | None = None, resolution: ArrayLike | None = None,
                 mask_bounds: ArrayLike | None = None) -> None:
        if image is None and labels is None:
            raise DataError(f"volume {name!r}: give an image, labels or both")
        self.driver = driver
        self.locations = {"image": image, "labels": labels, "mask": mask}
        arrays: dict[str, Any] = {}
        found: NDArray[np.float64] | None = None
        for what, location in self.locations.items():
            if location is None:
                arrays[what] = None
                continue
            where = f"volume {name!r} {what}"
            store, res = open_tensorstore(driver, location, scale_index=scale_index, axes=axes, where=where)
            arrays[what] = TensorStoreArray(store, f"{location} ({where})")
            if found is None and what != "mask" and res is not None:
                found = res
        if resolution is None:
            if found is None:
                logger.warning("volume %r: no resolution given and none in the store; assuming [1, 1, 1] nm", name)
                found = np.ones(3, dtype=np.float64)
            resolution = found
        super().__init__(name, arrays["image"], arrays["labels"], arrays["mask"], resolution,
                         mask_bounds=mask_bounds, where=f"{image or labels} (volume {name!r})")

    @classmethod
    def from_entry(cls, entry: dict[str, Any], toml_path: str | os.PathLike,
                   number: int = 1) -> "TensorStoreVolume":
        """The volume described by one ``[[tensorstore]]`` table of a dataset TOML.

        Keys: ``name`` and ``driver`` (required), ``image``, ``labels`` (at
        least one; a path relative to the TOML's directory, or a URL),
        ``mask``, ``scale_index``, ``axes``, ``resolution``, ``mask_bounds``.

        Raises
        ------
        ConfigError
            An unknown or missing key, or a value of the wrong type.
        DatasetNotFoundError, DataError
            As for the constructor, with the TOML file and entry in front.
        """
        e = Entry(entry, toml_path, "tensorstore", TENSORSTORE_KEYS, required=("driver",), number=number)
        driver = e.string("driver")
        if driver not in DRIVERS:
            raise e.error("driver", f"one of {', '.join(DRIVERS)}")
        locations = {}
        for key in ("image", "labels", "mask"):
            text = e.string(key)
            locations[key] = None if text is None else (text if _URL.match(text) else e.path(key))
        if locations["image"] is None and locations["labels"] is None:
            raise ConfigError(f"{e.where}: expected image or labels (or both)")
        scale_index = e.values.get("scale_index")
        if scale_index is not None and (not isinstance(scale_index, int) or isinstance(scale_index, bool)
                                        or scale_index < 0):
            raise e.error("scale_index", "an int >= 0")
        axes = e.string("axes")
        if axes is not None and axes not in ("zyx", "xyz"):
            raise e.error("axes", "\"zyx\" or \"xyz\"")
        try:
            return cls(e.name, driver, scale_index=scale_index, axes=axes, resolution=e.resolution(),
                       mask_bounds=e.box(), **locations)  # type: ignore[arg-type]
        except DiluvianError as err:
            raise e.reraise(err) from None
