"""diluvian: flood-filling networks for dense neuron segmentation of 3D EM volumes.

The public API is imported lazily, so ``import diluvian`` is cheap and the
CLI's ``-h`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "Config": "config",
    "load_config": "config",
    "config_to_toml": "config",
    "DiluvianError": "errors",
    "OctreeVolume": "octree",
    "Volume": "volumes",
    "NdarrayVolume": "volumes",
    "HDF5Volume": "volumes",
    "ImageStackVolume": "volumes",
    "ZarrVolume": "volumes",
    "load_volumes": "volumes",
    "synthesize_volume": "synthetic",
    "write_synthetic_hdf5": "synthetic",
    "evaluate_volumes": "evaluate",
    "SegmentationScores": "evaluate",
    "fill_volume_with_model": "fill",
    "fill_region_with_model": "fill",
    "sparse_fill": "fill",
    "train_network": "training",
    "validate_model": "training",
    "select_model": "selection",
    "build_network": "network",
    "load_model": "network",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'diluvian' has no attribute {name!r}")
