"""Output paths checked before any work starts: one line naming the path when one cannot be written.

Each subcommand that writes files lists all of them (with ``{volume}``
substituted) and its inputs, and calls :func:`check_outputs` before it loads
data, trains or fills. A path is refused when it is an existing directory,
its directory does not exist or is not writable, it is one of the inputs
(data, dataset TOMLs, configs, model, resume or bounds files), or two outputs
have the same name. What no check foresees (a disk that fills up) is still
caught by :func:`diluvian.util.atomic_path` when the file is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .errors import DataError, DiluvianError
from .util import check_writable_dir

__all__ = ["check_output_dir", "check_outputs", "dataset_files", "dataset_names"]

#: Keys of dataset TOML tables that name a file or directory the volume is read from.
_INPUT_KEYS = ("hdf5_file", "store", "path", "image", "labels", "mask")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_outputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Raise :class:`DataError` (naming the path) unless every one of ``outputs`` can be written as a file.

    Parameters
    ----------
    outputs : paths
        Every file the command will write.
    inputs : paths (None entries are skipped)
        Every file the command reads; no output may be one of them.

    Raises
    ------
    DataError
        An output is an existing directory, its directory is missing or not
        writable, it is an input, or two outputs are the same file.
    """
    inputs = [Path(p) for p in inputs if p is not None]
    seen: dict[str, Path] = {}
    for out in map(Path, outputs):
        check_writable_dir(out)
        for inp in inputs:
            if inp.exists() and _same(out, inp):
                raise DataError(f"{out}: output would overwrite the input {inp}")
        key = os.path.abspath(out)
        if key in seen:
            raise DataError(f"{out}: written twice (two of the command's outputs have this name)")
        seen[key] = out


def check_output_dir(path: str | os.PathLike) -> None:
    """Raise :class:`DataError` unless ``path`` is an existing directory or can be created as one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: expected a directory for the outputs, found a file")
    if not path.exists():
        check_writable_dir(path)


def _tables(volume_files: Sequence[str | os.PathLike]) -> Iterable[tuple[Path, dict]]:
    from .volumes import read_dataset_toml

    for vf in volume_files:
        for entries in read_dataset_toml(vf).values():
            for entry in entries:
                yield Path(vf), entry


def dataset_names(volume_files: Sequence[str | os.PathLike]) -> list[str]:
    """The volume names of the dataset TOMLs, without reading any data (for output names before work)."""
    return [e["name"] for _, e in _tables(volume_files) if isinstance(e.get("name"), str)]


def dataset_files(volume_files: Sequence[str | os.PathLike]) -> list[Path]:
    """The dataset TOMLs and every file or directory their tables read from (the inputs no output may be)."""
    files = [Path(p) for p in volume_files]
    try:
        for toml, entry in _tables(volume_files):
            for key in _INPUT_KEYS:
                value = entry.get(key)
                if isinstance(value, str) and value and "://" not in value:
                    p = Path(value).expanduser()
                    files.append(p if p.is_absolute() else toml.parent / p)
    except DiluvianError:  # a bad dataset TOML is reported by load_volumes, with its own message
        pass
    return files
