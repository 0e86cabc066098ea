"""Atomic output files (diluvian.util): permissions under the umask, failed writes and renames."""

import errno
import os
import stat

import numpy as np
import pytest

from diluvian.errors import DataError
from diluvian.util import atomic_hdf5, atomic_path, current_umask


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_path_gives_umask_mode(tmp_path, umask):
    out = tmp_path / "out.txt"
    with atomic_path(out, suffix=".txt") as tmp:
        tmp.write_text("x")
    assert out.read_text() == "x"
    assert mode(out) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_hdf5_gives_umask_mode_and_readable_file(tmp_path, umask):
    import h5py

    out = tmp_path / "out.h5"
    with atomic_hdf5(out) as f:
        f.create_dataset("a", data=np.arange(6).reshape(2, 3), compression="gzip")
    assert mode(out) == 0o666 & ~umask
    with h5py.File(out, "r") as f:
        assert f["a"][...].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert os.listdir(tmp_path) == ["out.h5"]


def test_output_path_that_is_a_directory(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(DataError, match="out.csv: output path is a directory"):
        with atomic_path(tmp_path / "out.csv", suffix=".csv") as tmp:
            tmp.write_text("x")
    assert os.listdir(tmp_path) == ["out.csv"]


def test_failed_final_rename_is_one_error_and_removes_the_temporary(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(DataError, match=r"out.json: cannot write: Is a directory"):
        with atomic_path(tmp_path / "out.json", suffix=".json") as tmp:
            tmp.write_text("{}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_full_disk_during_the_write_is_one_error(tmp_path, code):
    with pytest.raises(DataError, match=f"out.bin: cannot write: {os.strerror(code)}"):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(code, os.strerror(code))
    assert os.listdir(tmp_path) == []


def test_other_errors_in_the_body_propagate_unchanged(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise KeyError("bug")
    assert os.listdir(tmp_path) == []


def test_missing_output_directory(tmp_path):
    with pytest.raises(DataError, match="output directory .*nowhere does not exist"):
        with atomic_path(tmp_path / "nowhere" / "out.txt"):
            pass
