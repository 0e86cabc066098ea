"""Small helpers shared across modules: atomic output files, logging setup."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Nothing is left under the final name when the body raises: the temporary
    file is removed and the exception propagates.

    Parameters
    ----------
    path : path-like
        Final output path. Its directory must exist and be writable.
    suffix : str
        Suffix for the temporary name (some writers infer the format from it).
    """
    path = Path(path)
    check_writable_dir(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def check_writable_dir(path: str | os.PathLike) -> None:
    """Raise :class:`DataError` unless the directory that will hold ``path`` exists and is writable."""
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{path}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: output directory {parent} is not writable")
