"""Label sources for evaluation: ``FILE.h5:dataset`` / ``STORE.zarr[:array]`` specs and volumes by name,
partitions, and the upsampling of a coarser prediction onto the ground truth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import DataError, DatasetNotFoundError
from ..volumes.base import UpsampledLabels, as_resolution
from ..volumes.views import partition_volume

__all__ = ["open_label_array", "label_pair"]

logger = logging.getLogger(__name__)


def open_label_array(spec: str) -> tuple[Any, NDArray[np.float64] | None]:
    """Open a label array lazily from ``FILE.h5:dataset/path`` or ``STORE.zarr[:array/path]``.

    Parameters
    ----------
    spec : str
        An HDF5 file and a dataset in it, separated by the last ``:``; or a zarr
        store directory, optionally followed by ``:`` and an array path in it.
        A path that is a directory is read as a zarr store, a file as HDF5.

    Returns
    -------
    array : h5py.Dataset or zarr.Array
        Not read: slice it to read.
    resolution : ndarray of float64, shape (3,), or None
        The ``resolution`` attribute (nm, ZYX), None when absent.

    Raises
    ------
    DatasetNotFoundError
        The file or store, or the dataset/array in it, does not exist.
    DataError
        The file is not HDF5 (or the store not zarr), the path names a group,
        no dataset was given for an HDF5 file, or the resolution attribute is
        malformed.
    """
    file_part, sep, inner = spec.rpartition(":")
    if not sep:
        file_part, inner = spec, ""
    path = Path(file_part)
    inner = inner.strip("/")
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file or zarr store")
    if path.is_dir():
        array = _open_zarr(path, inner)
    else:
        array = _open_hdf5(path, inner)
    where = f"{path}:{inner}" if inner else str(path)
    resolution = None
    if "resolution" in array.attrs:
        resolution = as_resolution(array.attrs["resolution"], f"{where}: attribute")
    return array, resolution


def _open_hdf5(path: Path, inner: str) -> Any:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open as HDF5: {e}") from None
    if not inner:
        names: list[str] = []
        f.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
        f.close()
        raise DataError(f"{path}: expected FILE.h5:DATASET; datasets in the file: {', '.join(names) or 'none'}")
    if inner not in f:
        f.close()
        raise DatasetNotFoundError(f"{path}: no dataset {inner!r}")
    node = f[inner]
    if not isinstance(node, h5py.Dataset):
        f.close()
        raise DataError(f"{path}: {inner!r} is a group, not a dataset")
    return node  # keeps the file open


def _open_zarr(path: Path, inner: str) -> Any:
    import zarr

    try:
        root = zarr.open(store=str(path), mode="r")
    except Exception as e:  # zarr raises several unrelated types for "not zarr"
        raise DataError(f"{path}: not a zarr store: {e}") from None
    if not inner:
        node = root
    else:
        if not isinstance(root, zarr.Group) or inner not in root:
            raise DatasetNotFoundError(f"{path}: no array {inner!r}")
        node = root[inner]
    if not isinstance(node, zarr.Array):
        raise DataError(f"{path}: {inner or '/'!r} is a group, not an array; give STORE.zarr:ARRAY")
    return node


class _VolumeLabels:
    """Array-like over a :class:`~diluvian.volumes.Volume`'s labels (reads boxes on demand)."""

    def __init__(self, volume: Any) -> None:
        self.volume = volume
        self.shape = tuple(int(s) for s in volume.shape)
        self.dtype = np.dtype(getattr(volume.labels, "dtype", np.uint64))
        self.ndim = 3

    def __getitem__(self, key: Any) -> NDArray:
        from ..octree import parse_index

        lo, hi, _ = parse_index(key, self.shape)
        return np.asarray(self.volume.get_labels(np.asarray(lo), np.asarray(hi)))


def _upsample_to_ground_truth(pred: Any, pred_res: NDArray, gt_res: NDArray, shapes: Sequence[tuple],
                              names: tuple[str, str]) -> Any:
    """``pred`` at ``gt_res``: nearest-neighbour upsampled when its resolution is an integer multiple."""
    factors = pred_res / gt_res
    rounded = np.round(factors)
    if not (np.allclose(factors, rounded, atol=1e-6) and (rounded >= 1).all()):
        raise DataError(f"{names[1]!r} has resolution {pred_res.tolist()} nm but the ground truth {names[0]!r} "
                        f"has {gt_res.tolist()} nm: expected the same resolution or an integer multiple of it")
    f = rounded.astype(np.int64)
    fine = np.asarray(pred.shape) * f
    shape = next((s for s in shapes if (np.abs(fine - np.asarray(s)) < f).all()), tuple(fine))
    logger.info("%s: upsampling the prediction from %s nm to the ground truth's %s nm (x%s)", names[1],
             pred_res.tolist(), gt_res.tolist(), f.tolist())
    return UpsampledLabels(pred, f, shape)


def _label_source(name: str, volumes: dict) -> tuple[Any, Any, NDArray[np.float64] | None]:
    """(volume or None, label array-like, resolution) for a volume name or a direct ``FILE.h5:dataset`` spec."""
    if name in volumes:
        volume = volumes[name]
        if volume.labels is None:
            raise DataError(f"volume {name!r} has no labels to evaluate")
        return volume, _VolumeLabels(volume), np.asarray(volume.resolution, dtype=np.float64)
    if ":" in name or name.rstrip("/").endswith(".zarr"):
        array, res = open_label_array(name)
        return None, array, res
    raise DatasetNotFoundError(f"no volume named {name!r}; volumes: {sorted(volumes) or 'none (give -v files)'}")


def label_pair(volumes: dict, ground_truth: str, prediction: str, *,
               partition: tuple | None = None) -> tuple[Any, Any, NDArray[np.float64] | None]:
    """The ground truth and prediction label arrays to compare, and their resolution.

    Parameters
    ----------
    volumes : dict of str -> Volume
        Volumes loaded from dataset TOMLs.
    ground_truth, prediction : str
        Volume names, or direct array specs (see :func:`open_label_array`).
    partition : (partitioning, index), optional
        Only this partition of the ground truth. A prediction of the ground
        truth's full shape is partitioned the same way; one of the partition's
        shape (e.g. written by ``fill --partition-volumes``) is used as is.

    Returns
    -------
    (gt, pred, resolution)
        Array-likes of equal resolution (a prediction at an integer multiple of
        the ground truth's resolution is upsampled, nearest neighbour) and that
        resolution in nm (None when neither source has one).

    Raises
    ------
    DatasetNotFoundError
        A name is neither a loaded volume nor an existing array.
    DataError
        Resolutions that are not equal nor an integer multiple, no labels, or a
        partition of a ground truth that is not a volume.
    """
    gt_vol, gt, gt_res = _label_source(ground_truth, volumes)
    pred_vol, pred, pred_res = _label_source(prediction, volumes)
    if gt_res is not None and pred_res is not None and not np.allclose(gt_res, pred_res):
        shapes = [tuple(gt.shape)]
        if partition is not None and gt_vol is not None:
            shapes.insert(0, tuple(partition_volume(gt_vol, *partition).shape))
        pred = _upsample_to_ground_truth(pred, pred_res, gt_res, shapes, (ground_truth, prediction))
        pred_vol = None
        pred_res = gt_res
    if partition is not None:
        if gt_vol is None:
            raise DataError("partitioning needs the ground truth as a volume name from a dataset file")
        full_shape = tuple(gt_vol.shape)
        gt_part = partition_volume(gt_vol, *partition)
        gt = _VolumeLabels(gt_part)
        if tuple(pred.shape) == full_shape:
            if pred_vol is not None:
                pred = _VolumeLabels(partition_volume(pred_vol, *partition))
            else:
                start = np.asarray(gt_part.offset)
                stop = start + np.asarray(gt_part.shape)
                pred = np.asarray(pred[tuple(slice(a, b) for a, b in zip(start, stop))])
    return gt, pred, gt_res if gt_res is not None else pred_res
