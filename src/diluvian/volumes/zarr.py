"""Zarr-backed volumes (a zarr group holding image/label/mask arrays) and ``[[zarr]]`` TOML tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError, DatasetNotFoundError, DiluvianError
from ._entries import Entry
from .base import Volume
from .hdf5 import attribute_resolution

__all__ = ["ZarrVolume"]

ZARR_KEYS = ("name", "store", "image_array", "label_array", "mask_array", "resolution", "mask_bounds")


class ZarrVolume(Volume):
    """A volume whose arrays live in a zarr group (zarr v2 or v3 format), read lazily.

    Parameters
    ----------
    name : str
    store : path-like
        Directory of the zarr group.
    image_array, label_array, mask_array : str or None
        Paths of the arrays in the group, e.g. ``volumes/raw``. At least one of
        image and labels.
    resolution : 3 floats, optional
        nm, ZYX. Default: the ``resolution`` attribute of the image array, else
        of the labels, else [1, 1, 1] with a warning.
    mask_bounds : ((z0, y0, x0), (z1, y1, x1)), optional

    Raises
    ------
    DatasetNotFoundError
        The store, or an array in it, does not exist.
    DataError
        The store is not a zarr group, a path names a group, or the arrays are
        unusable (see :class:`Volume`).
    """

    def __init__(self, name: str, store: str | os.PathLike, image_array: str | None = None,
                 label_array: str | None = None, mask_array: str | None = None,
                 resolution: ArrayLike | None = None, mask_bounds: ArrayLike | None = None) -> None:
        import zarr

        self.store = Path(store)
        self.arrays = {"image": image_array, "labels": label_array, "mask": mask_array}
        if image_array is None and label_array is None:
            raise DataError(f"{self.store}: volume {name!r}: give an image array, a label array or both")
        if not self.store.exists():
            raise DatasetNotFoundError(f"{self.store}: no such zarr store (volume {name!r})")
        try:
            group = zarr.open_group(store=str(self.store), mode="r")
        except Exception as e:  # zarr raises several unrelated types for "not a group"
            raise DataError(f"{self.store}: not a zarr group: {e}") from None
        arrays: dict[str, Any] = {}
        for what, path in self.arrays.items():
            if path is None:
                arrays[what] = None
                continue
            if path not in group:
                raise DatasetNotFoundError(f"{self.store}: no array {path!r} (volume {name!r} {what})")
            node = group[path]
            if not isinstance(node, zarr.Array):
                raise DataError(f"{self.store}: {path!r} is a group, not an array (volume {name!r} {what})")
            if node.ndim != 3:
                raise DataError(f"{self.store}: array {path!r}: expected a 3D (Z, Y, X) array, "
                                f"got shape {list(node.shape)}")
            arrays[what] = node
        if resolution is None:
            resolution = attribute_resolution(arrays, str(self.store))
        super().__init__(name, arrays["image"], arrays["labels"], arrays["mask"], resolution,
                         mask_bounds=mask_bounds, where=f"{self.store} (volume {name!r})")

    @classmethod
    def from_entry(cls, entry: dict[str, Any], toml_path: str | os.PathLike, number: int = 1) -> "ZarrVolume":
        """The volume described by one ``[[zarr]]`` table of a dataset TOML.

        Keys: ``name`` and ``store`` (required; relative to the TOML's
        directory), ``image_array``, ``label_array`` (at least one),
        ``mask_array``, ``resolution``, ``mask_bounds``.

        Raises
        ------
        ConfigError
            An unknown or missing key, or a value of the wrong type.
        DatasetNotFoundError, DataError
            As for the constructor, with the TOML file and entry in front.
        """
        e = Entry(entry, toml_path, "zarr", ZARR_KEYS, required=("store",), number=number)
        image, labels, mask = (e.string(k) for k in ("image_array", "label_array", "mask_array"))
        if image is None and labels is None:
            raise ConfigError(f"{e.where}: expected image_array or label_array (or both)")
        store, resolution, mask_bounds = e.path("store"), e.resolution(), e.box()
        try:
            return cls(e.name, store, image, labels, mask, resolution, mask_bounds)  # type: ignore[arg-type]
        except DiluvianError as err:
            raise e.reraise(err) from None
