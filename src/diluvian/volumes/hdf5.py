"""HDF5-backed volumes (CREMI layout) and ``[[dataset]]`` TOML tables."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import ConfigError, DataError, DatasetNotFoundError, DiluvianError
from ._entries import Entry
from .base import NdarrayVolume, Volume, as_resolution

__all__ = ["HDF5Volume"]

logger = logging.getLogger(__name__)

DATASET_KEYS = ("name", "hdf5_file", "image_dataset", "label_dataset", "mask_dataset", "resolution", "mask_bounds")


def attribute_resolution(arrays: dict[str, Any], where: str) -> NDArray[np.float64]:
    """Resolution from the ``resolution`` attribute of the image, else the labels, else [1, 1, 1] (warned).

    ``arrays`` maps "image"/"labels" to objects with ``attrs`` (h5py datasets,
    zarr arrays); ``where`` names the file in messages.
    """
    found = {}
    for what in ("image", "labels"):
        arr = arrays.get(what)
        if arr is not None and "resolution" in arr.attrs:
            found[what] = as_resolution(arr.attrs["resolution"], f"{where}: {what} attribute")
    if len(found) == 2 and not np.allclose(found["image"], found["labels"]):
        logger.warning("%s: the image and labels resolution attributes differ (%s, %s); using the image's",
                       where, found["image"].tolist(), found["labels"].tolist())
    if found:
        return next(iter(found.values()))
    logger.warning("%s: no resolution given and no 'resolution' attribute; assuming [1, 1, 1] nm", where)
    return np.ones(3, dtype=np.float64)


class HDF5Volume(Volume):
    """A volume whose arrays are datasets of an HDF5 file, read lazily.

    Parameters
    ----------
    name : str
    path : path-like
        HDF5 file (opened read-only and kept open; see :meth:`close`).
    image_dataset, label_dataset, mask_dataset : str or None
        Paths of the datasets in the file, e.g. ``volumes/raw`` and
        ``volumes/labels/neuron_ids``. At least one of image and labels.
    resolution : 3 floats, optional
        nm, ZYX. Default: the ``resolution`` attribute of the image dataset,
        else of the labels, else [1, 1, 1] with a warning.
    mask_bounds : ((z0, y0, x0), (z1, y1, x1)), optional
        Precomputed bounding box of the mask.

    Raises
    ------
    DatasetNotFoundError
        The file, or a dataset in it, does not exist.
    DataError
        The file is not HDF5, a path names a group, or the arrays are unusable
        (see :class:`Volume`).

    Notes
    -----
    Volumes pickle by path (the file is reopened), so they can go to worker
    processes.
    """

    def __init__(self, name: str, path: str | os.PathLike, image_dataset: str | None = None,
                 label_dataset: str | None = None, mask_dataset: str | None = None,
                 resolution: ArrayLike | None = None, mask_bounds: ArrayLike | None = None) -> None:
        import h5py

        self.path = Path(path)
        self.datasets = {"image": image_dataset, "labels": label_dataset, "mask": mask_dataset}
        self._init_args = (name, path, image_dataset, label_dataset, mask_dataset, resolution, mask_bounds)
        if image_dataset is None and label_dataset is None:
            raise DataError(f"{self.path}: volume {name!r}: give an image dataset, a label dataset or both")
        if not self.path.is_file():
            raise DatasetNotFoundError(f"{self.path}: no such HDF5 file (volume {name!r})")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(f"{self.path}: cannot open as HDF5: {e}") from None
        try:
            arrays = {}
            for what, ds_path in self.datasets.items():
                if ds_path is None:
                    arrays[what] = None
                    continue
                if ds_path not in self._file:
                    raise DatasetNotFoundError(f"{self.path}: no dataset {ds_path!r} (volume {name!r} {what})")
                node = self._file[ds_path]
                if not isinstance(node, h5py.Dataset):
                    raise DataError(f"{self.path}: {ds_path!r} is a group, not a dataset (volume {name!r} {what})")
                if node.ndim != 3:
                    raise DataError(f"{self.path}: dataset {ds_path!r}: expected a 3D (Z, Y, X) array, "
                                    f"got shape {list(node.shape)}")
                arrays[what] = node
            if resolution is None:
                resolution = attribute_resolution(arrays, str(self.path))
            super().__init__(name, arrays["image"], arrays["labels"], arrays["mask"], resolution,
                             mask_bounds=mask_bounds, where=f"{self.path} (volume {name!r})")
        except BaseException:
            self._file.close()
            raise

    @classmethod
    def from_entry(cls, entry: dict[str, Any], toml_path: str | os.PathLike, number: int = 1) -> "HDF5Volume":
        """The volume described by one ``[[dataset]]`` table of a dataset TOML.

        Keys: ``name`` and ``hdf5_file`` (required; relative paths are relative
        to the TOML's directory), ``image_dataset``, ``label_dataset`` (at least
        one), ``mask_dataset``, ``resolution``, ``mask_bounds``.

        Raises
        ------
        ConfigError
            An unknown or missing key, or a value of the wrong type; the message
            names the TOML file, the entry and the key.
        DatasetNotFoundError, DataError
            As for the constructor, with the TOML file and entry in front.
        """
        e = Entry(entry, toml_path, "dataset", DATASET_KEYS, required=("hdf5_file",), number=number)
        image, labels, mask = (e.string(k) for k in ("image_dataset", "label_dataset", "mask_dataset"))
        if image is None and labels is None:
            raise ConfigError(f"{e.where}: expected image_dataset or label_dataset (or both)")
        path, resolution, mask_bounds = e.path("hdf5_file"), e.resolution(), e.box()
        try:
            return cls(e.name, path, image, labels, mask, resolution, mask_bounds)  # type: ignore[arg-type]
        except DiluvianError as err:
            raise e.reraise(err) from None

    def close(self) -> None:
        """Close the HDF5 file (reads fail afterwards)."""
        self._file.close()

    def to_memory(self) -> NdarrayVolume:
        """Load all arrays into an :class:`NdarrayVolume` and close the file."""
        out = super().to_memory()
        self.close()
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"init_args": self._init_args, "resolution": self.resolution, "mask_bounds": self._mask_bounds,
                "nonfinite": getattr(self, "nonfinite_policy", None)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        args = list(state["init_args"])
        args[5] = state["resolution"]
        self.__init__(*args)  # type: ignore[misc]
        if state.get("nonfinite"):  # the NaN/Inf check goes with the volume to worker processes
            from .finite import apply_nonfinite_policy

            apply_nonfinite_policy(self, state["nonfinite"])
        self._mask_bounds = state["mask_bounds"]
