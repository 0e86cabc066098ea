"""Small helpers shared across modules: atomic output files, logging setup, plain numbers for messages, a union-find."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError, DiluvianError

log = logging.getLogger(__name__)

#: errno values of a write that failed for a reason of the target (full disk, quota, file size limit, ...),
#: reported as one-line :class:`DataError`s rather than tracebacks.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EISDIR, errno.ENOTDIR, errno.EIO, errno.EXDEV, errno.ENAMETOOLONG})


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _write_error(path: Path, err: BaseException) -> DataError | None:
    """A one-line :class:`DataError` for a failed write of ``path``, or None when ``err`` is not one."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            return DataError(f"{path}: cannot write: {e.strerror or os.strerror(e.errno)}")
    text = " ".join(" ".join(str(e).split()) for e in chain).lower()
    # torch.save and HDF5 wrap the OS error in their own (RuntimeError, OSError without errno)
    for words, reason in ((("file too large",), os.strerror(errno.EFBIG)),
                          (("no space left",), os.strerror(errno.ENOSPC)),
                          (("quota exceeded",), os.strerror(errno.EDQUOT)),
                          (("failed writing", "unable to write", "write failed", "can't write", "file write failed"),
                           "write failed")):
        if any(w in text for w in words):
            return DataError(f"{path}: cannot write: {reason}")
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Nothing is left under the final name when the body raises: the temporary
    file is removed and the exception propagates. A write that fails for a
    reason of the target (full disk, file size limit, quota, read-only
    filesystem, a directory in the way of the final rename, ...) becomes one
    :class:`DataError` naming ``path``. The file gets the mode any program
    would give it, ``0o666 & ~umask`` (the temporary file starts owner-only).

    Parameters
    ----------
    path : path-like
        Final output path. Its directory must exist and be writable.
    suffix : str
        Suffix for the temporary name (some writers infer the format from it).

    Raises
    ------
    DataError
        The directory is missing or not writable, or the write or the rename failed.
    """
    path = Path(path)
    check_writable_dir(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    except OSError as e:
        raise DataError(f"{path}: cannot write: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # writers may replace the file they were given; set the mode on what is there
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        wrapped = _write_error(path, err) if isinstance(err, Exception) and not isinstance(err, DiluvianError) else None
        if wrapped is None:
            raise
        _release_quietly(err)
        del err
        raise wrapped from None


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike, suffix: str = ".h5") -> Iterator[Any]:
    """Yield a new, writable ``h5py.File`` that becomes ``path`` on success (see :func:`atomic_path`).

    The file is built in memory (HDF5 ``core`` driver) and its bytes written
    out by Python when the body is done, so a full disk or a file size limit
    is a clean one-line :class:`DataError` instead of HDF5 failing inside its
    own flush (which leaves handles that print tracebacks, or crash, at exit).
    It costs memory for the (compressed) file while it is written.

    Parameters
    ----------
    path : path-like
        Final output path.
    suffix : str
        Suffix of the temporary name.
    """
    import h5py

    path = Path(path)
    check_writable_dir(path)
    with h5py.File(f"{path.name}.in-memory", "w", driver="core", backing_store=False) as f:
        yield f
        f.flush()
        image = f.id.get_file_image()
    with atomic_path(path, suffix=suffix) as tmp, open(tmp, "wb") as out:
        out.write(image)


def _release_quietly(err: BaseException) -> None:
    """Free the frames of a failed write now, logging (not printing) what their objects' finalizers raise.

    A writer whose file could not be written (h5py on a full disk) holds
    half-closed handles; released later (at exit) they print tracebacks or
    crash, so they are released here, with their complaints sent to the log.
    """
    seen = 0
    e: BaseException | None = err
    while e is not None and seen < 8:
        if e.__traceback__ is not None:
            traceback.clear_frames(e.__traceback__)
        e, seen = e.__cause__ or e.__context__, seen + 1
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: log.debug("while releasing a failed write: %s: %s", u.exc_type.__name__,
                                             u.exc_value)
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def check_writable_dir(path: str | os.PathLike) -> None:
    """Raise :class:`DataError` unless the directory that will hold ``path`` exists and is writable
    and ``path`` itself is not a directory."""
    if Path(path).is_dir():
        raise DataError(f"{path}: output path is a directory, expected a file name")
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise DataError(f"{path}: output directory {parent} is not a directory")
    if not parent.is_dir():
        raise DataError(f"{path}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: output directory {parent} is not writable")


def fmt_list(values: Any) -> str:
    """``values`` (a sequence or array of numbers, nested or not) as plain numbers for a message.

    ``[20.0, 20.0, 20.0]``, never ``[np.float64(20.0), ...]`` (what ``list(array)`` shows under
    numpy 2) nor ``[20. 20. 20.]`` (numpy's own ``str``). Tuples are shown as lists; a numpy
    float32 keeps its short form (``0.1``, not ``0.10000000149011612``).

    Examples
    --------
    >>> import numpy as np
    >>> fmt_list(np.array([20.0, 20.0, 20.0]))
    '[20.0, 20.0, 20.0]'
    >>> fmt_list((np.int64(3), [np.float32(0.1), 2]))
    '[3, [0.1, 2]]'
    """
    return str(_plain(values))


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return _plain(value[()]) if value.ndim == 0 else [_plain(v) for v in value]
    if isinstance(value, np.floating):
        return float(str(value))  # numpy's shortest form for the scalar's own precision
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class UnionFind:
    """Union-find over integer IDs; the root of a set is its smallest ID."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            lo, hi = (rx, ry) if rx < ry else (ry, rx)
            self.parent[hi] = lo

    def roots(self, ids: Any) -> Any:
        """The roots of ``ids`` as a uint64 array."""
        import numpy as np

        return np.asarray([self.find(int(i)) for i in ids], dtype=np.uint64)
