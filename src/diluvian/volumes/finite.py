"""Non-finite image voxels (NaN, ±Inf): an error as they are read, or missing data (``[volume] nonfinite``).

A float image is wrapped so that every box read from it is checked (chunk by
chunk as a lazy volume is read, once for a volume loaded into memory). With
``nonfinite = "error"`` (the default) the first non-finite voxel is a
:class:`~diluvian.errors.DataError` naming the dataset and the voxel. With
``nonfinite = "mask"`` non-finite voxels read as 0 in the image, are left out
of the valid-data mask (so no seed or training sample lands on them) and read
as label 0 in the ground truth (which evaluation does not score). Integer
images cannot hold non-finite values and are left as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataError
from .base import LazyArray, Volume

__all__ = ["NONFINITE_POLICIES", "FiniteImage", "apply_nonfinite_policy"]

#: Values of ``[volume] nonfinite``.
NONFINITE_POLICIES = ("error", "mask")


def _box(start: NDArray[np.int64], stop: NDArray[np.int64]) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def _hint() -> str:
    return 'set [volume] nonfinite = "mask" to treat non-finite voxels as missing data'


class FiniteImage(LazyArray):
    """A float image whose reads are checked for NaN/Inf.

    Parameters
    ----------
    image : array-like (Z, Y, X) of floats
    where : str
        The dataset, for messages (e.g. ``"fib.h5: dataset 'volumes/raw'"``).
    policy : {"error", "mask"}
        Raise on a non-finite voxel, or read it as 0.
    """

    def __init__(self, image: Any, where: str, policy: str = "error") -> None:
        self.image = image
        self.where = where
        self.policy = policy
        self.shape = tuple(int(s) for s in image.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(image.dtype)

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        box = np.asarray(self.image[_box(start, stop)])
        finite = np.isfinite(box)
        if finite.all():
            return box
        if self.policy == "error":
            voxel = (np.argwhere(~finite)[0] + start).tolist()
            value = box[tuple(np.argwhere(~finite)[0])]
            raise DataError(f"{self.where}: image voxel [z, y, x] = {voxel} is {value} (not finite); {_hint()}")
        return np.where(finite, box, box.dtype.type(0))


class _FiniteMask(LazyArray):
    """The valid-data mask (or all valid) where the image is finite."""

    def __init__(self, image: Any, mask: Any) -> None:
        self.image, self.mask = image, mask
        self.shape = tuple(int(s) for s in image.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(bool)

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        valid = np.isfinite(np.asarray(self.image[_box(start, stop)]))
        if self.mask is not None:
            valid &= np.asarray(self.mask[_box(start, stop)]) != 0
        return valid


class _FiniteLabels(LazyArray):
    """Labels that read 0 (not evaluated, no object) where the image is not finite."""

    def __init__(self, image: Any, labels: Any) -> None:
        self.image, self.labels = image, labels
        self.shape = tuple(int(s) for s in labels.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(labels.dtype)

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        labels = np.asarray(self.labels[_box(start, stop)])
        finite = np.isfinite(np.asarray(self.image[_box(start, stop)]))
        return labels if finite.all() else np.where(finite, labels, labels.dtype.type(0))


def apply_nonfinite_policy(volume: Volume, policy: str = "error", where: str | None = None) -> Volume:
    """Make ``volume`` (a root volume, before :meth:`~Volume.to_memory`) check its image for NaN/Inf.

    Parameters
    ----------
    volume : Volume
        Changed in place (its ``image``, and with ``"mask"`` its ``mask`` and
        ``labels``, are wrapped); returned for convenience.
    policy : {"error", "mask"}
        See the module docstring.
    where : str, optional
        The image dataset for messages; by default the HDF5 file and dataset
        when the volume has them, else the volume name.

    Raises
    ------
    ConfigError
        An unknown policy.
    """
    if policy not in NONFINITE_POLICIES:
        raise ConfigError(f"[volume] nonfinite: expected one of {', '.join(map(repr, NONFINITE_POLICIES))}, "
                          f"got {policy!r}")
    image = volume.image
    if image is None or np.dtype(image.dtype).kind != "f" or isinstance(image, FiniteImage):
        return volume
    if where is None:
        path = getattr(volume, "path", None)
        dataset = (getattr(volume, "datasets", None) or {}).get("image")
        where = f"{path}: dataset {dataset!r} (volume {volume.name!r})" if path is not None and dataset else \
            f"{path or 'volume ' + repr(volume.name)}: image"
    volume.image = FiniteImage(image, where, policy)
    volume.nonfinite_policy = policy  # type: ignore[attr-defined]  (kept when an HDF5 volume is pickled)
    if policy == "mask":
        volume.mask = _FiniteMask(image, volume.mask)
        if volume.labels is not None:
            volume.labels = _FiniteLabels(image, volume.labels)
    return volume
