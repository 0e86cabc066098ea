"""Volumes: image, labels and mask on a ZYX voxel grid, from memory, HDF5, zarr or image stacks.

* :class:`Volume` (:mod:`.base`): the array API: ``get_image``, ``get_labels``,
  ``get_mask``, ``get_label_mask``, ``to_memory`` and coordinate mapping.
* Backends: :class:`NdarrayVolume`, :class:`HDF5Volume`, :class:`ZarrVolume`,
  :class:`ImageStackVolume`.
* Views (:mod:`.views`): :func:`partition_volume`, :func:`downsample_volume`
  (:class:`PartitionedVolume`, :class:`DownsampledVolume`).
* Dataset TOMLs: :func:`load_volumes`; config partitions: :func:`partition_volumes`.
* Training subvolumes (:mod:`.sampling`): :func:`sample_subvolume_bounds`,
  :class:`SubvolumeBounds`, :func:`get_subvolume`, :class:`Subvolume` and their CSV files.
"""

from .base import LABEL_DOWNSAMPLING_MODES, LazyArray, NdarrayVolume, Volume, image_to_float
from .datasets import load_volumes, partition_volumes, read_dataset_toml
from .hdf5 import HDF5Volume
from .imagestack import ImageStackVolume, find_sections
from .sampling import (
    Subvolume,
    SubvolumeBounds,
    get_subvolume,
    read_subvolume_bounds_csv,
    sample_subvolume_bounds,
    write_subvolume_bounds_csv,
)
from .views import DownsampledVolume, PartitionedVolume, block_mode, downsample_volume, partition_volume
from .zarr import ZarrVolume

__all__ = [
    "LABEL_DOWNSAMPLING_MODES",
    "DownsampledVolume",
    "HDF5Volume",
    "ImageStackVolume",
    "LazyArray",
    "NdarrayVolume",
    "PartitionedVolume",
    "Subvolume",
    "SubvolumeBounds",
    "Volume",
    "ZarrVolume",
    "block_mode",
    "downsample_volume",
    "find_sections",
    "get_subvolume",
    "image_to_float",
    "load_volumes",
    "partition_volume",
    "partition_volumes",
    "read_dataset_toml",
    "read_subvolume_bounds_csv",
    "sample_subvolume_bounds",
    "write_subvolume_bounds_csv",
]
