"""Flood filling with a trained network: dense fill, single regions, sparse fill, subvolume bounds.

Public API
----------
fill_volume_with_model
    Dense segmentation of a volume (or a box of it), batched across objects.
fill_region_with_model
    Fill a single object from a seed.
sparse_fill
    Fill single objects in many subvolumes (with ground truth: F-scores).
generate_subvolume_bounds
    Random subvolume bounds for sparse fills (``gen-subv-bounds``).
"""

from .box import fill_box, fill_volume_with_model
from .dense import DenseFiller, LazyImage
from .state import FillResult, FillState, FillStats, fill_options, with_fill_options
from ..stepper import RegionStepper, fill_regions
from .output import Checkpointer, load_resume, write_segmentation
from ..predict import TorchPredictor, default_move_batch_size, make_predictor
from .single import FilledRegion, fill_region_with_model
from .sparse import SparseRegion, generate_subvolume_bounds, sparse_fill, subvolume_shape, write_subvolume_bounds

__all__ = [
    "fill_volume_with_model",
    "fill_region_with_model",
    "FilledRegion",
    "sparse_fill",
    "SparseRegion",
    "generate_subvolume_bounds",
    "write_subvolume_bounds",
    "subvolume_shape",
    "Checkpointer",
    "load_resume",
    "write_segmentation",
    "FillResult",
    "FillState",
    "FillStats",
    "DenseFiller",
    "LazyImage",
    "fill_box",
    "fill_options",
    "with_fill_options",
    "RegionStepper",
    "fill_regions",
    "TorchPredictor",
    "make_predictor",
    "default_move_batch_size",
]
