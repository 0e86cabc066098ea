"""Dataset TOML files (``load_volumes``) and partition selection by name regexes."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, DatasetNotFoundError
from ._entries import closest
from .base import Volume
from .finite import apply_nonfinite_policy
from .hdf5 import HDF5Volume
from .imagestack import ImageStackVolume
from .tensorstore import TensorStoreVolume
from .views import partition_volume
from .zarr import ZarrVolume

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["TABLES", "load_volumes", "partition_volumes", "read_dataset_toml"]

logger = logging.getLogger(__name__)

#: Top-level tables of a dataset TOML and the backend each one describes.
TABLES: dict[str, Callable[..., Volume]] = {
    "dataset": HDF5Volume.from_entry,
    "image_stack": ImageStackVolume.from_entry,
    "zarr": ZarrVolume.from_entry,
    "tensorstore": TensorStoreVolume.from_entry,
}


def read_dataset_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a dataset TOML and check its top-level tables.

    Raises
    ------
    DatasetNotFoundError
        No such file.
    ConfigError
        A TOML syntax error (with line and column), an unknown top-level table
        (with the closest valid name), or a table that is not an array of
        tables (``[[dataset]]``).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a dataset TOML file")
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such dataset file")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text ({e.reason})") from None
    for key, value in doc.items():
        if key not in TABLES:
            hint = closest(key, TABLES)
            hint_text = f" (did you mean [[{hint}]]?)" if hint else ""
            raise ConfigError(f"{path}: unknown table {key!r}{hint_text}; valid tables: "
                              f"{', '.join(f'[[{t}]]' for t in TABLES)}")
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{path}: {key}: expected an array of tables ([[{key}]]), got {type(value).__name__}")
    return doc


def load_volumes(paths: Sequence[str | os.PathLike], in_memory: bool = True,
                 nonfinite: str = "error") -> dict[str, Volume]:
    """All volumes described by one or more dataset TOML files.

    Parameters
    ----------
    paths : sequence of path-like
        Dataset TOMLs with ``[[dataset]]`` (HDF5, see
        :meth:`HDF5Volume.from_entry`), ``[[image_stack]]``, ``[[zarr]]`` and
        ``[[tensorstore]]`` (N5, neuroglancer precomputed, zarr via TensorStore) tables.
    in_memory : bool
        Load each volume into memory (:meth:`Volume.to_memory`); otherwise
        arrays are read lazily from the files.
    nonfinite : {"error", "mask"}
        NaN/Inf image voxels: an error as they are read, or missing data
        (``[volume] nonfinite``, see :mod:`diluvian.volumes.finite`).

    Returns
    -------
    dict of str -> Volume
        By name, in file and table order.

    Raises
    ------
    DatasetNotFoundError
        A missing TOML or data file, or a missing array in a data file.
    ConfigError
        Invalid TOML, unknown tables or keys, a TOML without volumes, or two
        volumes with the same name.
    DataError
        Unusable data (shapes, dtypes, resolutions; a non-finite image voxel when loading into memory).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    volumes: dict[str, Volume] = {}
    origin: dict[str, Path] = {}
    for p in paths:
        path = Path(p)
        doc = read_dataset_toml(path)
        if not any(doc.values()):
            raise ConfigError(f"{path}: no volumes; expected {', '.join(f'[[{t}]]' for t in TABLES)} tables")
        for table, entries in doc.items():
            for number, entry in enumerate(entries, start=1):
                name = entry.get("name")
                if isinstance(name, str) and name in volumes:
                    raise ConfigError(f"{path}: [[{table}]] {name!r}: duplicate volume name "
                                      f"(already defined in {origin[name]})")
                volume = apply_nonfinite_policy(TABLES[table](entry, path, number=number), nonfinite)
                if in_memory:
                    volume = volume.to_memory()
                volumes[volume.name] = volume
                origin[volume.name] = path
                logger.debug("loaded %r from %s", volume, path)
    return volumes


def _match_one(name: str, patterns: Mapping[str, Any], what: str) -> Any:
    """The value of the single regex in ``patterns`` that ``re.match``-es ``name`` (None when none does)."""
    matches = []
    for pattern, value in patterns.items():
        try:
            hit = re.match(pattern, name)
        except re.error as e:
            raise ConfigError(f"{what}: invalid regex {pattern!r}: {e}") from None
        if hit:
            matches.append((pattern, value))
    if len(matches) > 1:
        raise ConfigError(f"{what}: volume {name!r} matches more than one regex: "
                          f"{', '.join(repr(m[0]) for m in matches)}")
    return matches[0][1] if matches else None


def partition_volumes(volumes: Mapping[str, Volume], partitions: Mapping[str, Sequence[int]],
                      index_map: Mapping[str, Sequence[int]], *, partitions_key: str = "partitions",
                      index_key: str = "partition index") -> dict[str, Volume]:
    """Partition each volume by the regexes of a config (spec §4.1).

    Parameters
    ----------
    volumes : dict of str -> Volume
    partitions : dict of regex -> 3 ints
        Partitioning per volume name (e.g. ``{".*": [2, 1, 1]}``).
    index_map : dict of regex -> 3 ints
        Which part to keep (e.g. ``{".*": [1, 0, 0]}`` for validation).
    partitions_key, index_key : str
        Names of the two settings in error messages.

    Returns
    -------
    dict of str -> Volume
        The selected parts, by name. A volume that no regex of one of the two
        dicts matches is left out.

    Raises
    ------
    ConfigError
        A volume name matched by more than one regex of a dict, an invalid
        regex, or a bad partitioning/index.
    DataError
        A partition would be empty.
    """
    out = {}
    for name, volume in volumes.items():
        partitioning = _match_one(name, partitions, partitions_key)
        index = _match_one(name, index_map, index_key)
        if partitioning is None or index is None:
            logger.debug("volume %r: no %s match; left out", name,
                         partitions_key if partitioning is None else index_key)
            continue
        out[name] = partition_volume(volume, partitioning, index)
    return out
