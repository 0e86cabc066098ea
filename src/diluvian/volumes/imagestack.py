"""Volumes made of 2D section images (PNG, TIFF, ...), one file per Z, and ``[[image_stack]]`` TOML tables."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import DataError, DatasetNotFoundError, DiluvianError
from ._entries import Entry
from .base import LazyArray, Volume

__all__ = ["ImageStackVolume", "find_sections"]

logger = logging.getLogger(__name__)

IMAGE_STACK_KEYS = ("name", "path", "resolution")
SECTION_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def find_sections(pattern_or_dir: str | os.PathLike) -> list[Path]:
    """The section files of a stack, in natural order (``s2.png`` before ``s10.png``).

    Parameters
    ----------
    pattern_or_dir : path-like
        A directory (every file with an image suffix: png, tif, tiff, jpg,
        jpeg, bmp) or a glob pattern such as ``stack/section_*.tif``.

    Raises
    ------
    DatasetNotFoundError
        Nothing matches.
    """
    text = os.fspath(pattern_or_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SECTION_SUFFIXES]
        if not files:
            raise DatasetNotFoundError(f"{path}: no section images ({', '.join(SECTION_SUFFIXES)}) in the directory")
    else:
        files = [Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file()]
        if not files:
            raise DatasetNotFoundError(f"{text}: no such directory, and no files match it as a pattern")
    return sorted(files, key=_natural_key)


def _read_section(path: Path) -> NDArray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in ("P", "1", "LA", "PA"):
                img = img.convert("L")
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read as an image: {e}") from None
    if arr.ndim == 3:  # colour: the first channel
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2D image, got shape {list(arr.shape)}")
    return arr


class _StackArray(LazyArray):
    """The sections as a lazy (Z, Y, X) array with an LRU cache of decoded sections."""

    def __init__(self, files: list[Path], cache_sections: int) -> None:
        self.files = files
        first = _read_section(files[0])
        self.shape = (len(files), int(first.shape[0]), int(first.shape[1]))
        self.dtype = first.dtype
        self.cache_sections = max(1, int(cache_sections))
        self._cache: OrderedDict[int, NDArray] = OrderedDict({0: first})

    def section(self, z: int) -> NDArray:
        """Section ``z`` (decoded, cached)."""
        arr = self._cache.get(z)
        if arr is not None:
            self._cache.move_to_end(z)
            return arr
        arr = _read_section(self.files[z])
        if arr.shape != self.shape[1:] or arr.dtype != self.dtype:
            raise DataError(f"{self.files[z]}: section {z} has shape {list(arr.shape)} and dtype {arr.dtype}; "
                            f"the stack's first section ({self.files[0].name}) has {list(self.shape[1:])} "
                            f"and {self.dtype}")
        self._cache[z] = arr
        while len(self._cache) > self.cache_sections:
            self._cache.popitem(last=False)
        return arr

    def _read(self, start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray:
        out = np.empty(tuple(int(v) for v in stop - start), dtype=self.dtype)
        for i, z in enumerate(range(int(start[0]), int(stop[0]))):
            out[i] = self.section(z)[start[1]:stop[1], start[2]:stop[2]]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


class ImageStackVolume(Volume):
    """An image-only volume read from 2D section files, one per Z (natural file-name order).

    Sections are decoded with Pillow only when a read touches them, and the
    last ``cache_sections`` decoded sections are kept. Colour images give their
    first channel.

    Parameters
    ----------
    pattern_or_dir : path-like
        A directory of section images or a glob pattern (see :func:`find_sections`).
    resolution : 3 floats
        nm, ZYX.
    name : str
    cache_sections : int
        Number of decoded sections kept in memory.

    Raises
    ------
    DatasetNotFoundError
        No section files.
    DataError
        A file that is not an image, sections of different shapes or dtypes
        (found when read), or a bad resolution.
    """

    def __init__(self, pattern_or_dir: str | os.PathLike, resolution: ArrayLike, name: str,
                 cache_sections: int = 64) -> None:
        self.source = pattern_or_dir
        self.files = find_sections(pattern_or_dir)
        stack = _StackArray(self.files, cache_sections)
        super().__init__(name, stack, resolution=resolution, where=f"{os.fspath(pattern_or_dir)} (volume {name!r})")

    @classmethod
    def from_entry(cls, entry: dict[str, Any], toml_path: str | os.PathLike, number: int = 1) -> "ImageStackVolume":
        """The volume described by one ``[[image_stack]]`` table of a dataset TOML.

        Keys: ``name``, ``path`` (required; a directory or glob pattern,
        relative to the TOML's directory) and ``resolution`` (default [1, 1, 1]
        with a warning).

        Raises
        ------
        ConfigError
            An unknown or missing key, or a value of the wrong type.
        DatasetNotFoundError, DataError
            As for the constructor, with the TOML file and entry in front.
        """
        e = Entry(entry, toml_path, "image_stack", IMAGE_STACK_KEYS, required=("path",), number=number)
        path, resolution = e.path("path"), e.resolution()
        if resolution is None:
            logger.warning("%s: no resolution given; assuming [1, 1, 1] nm", e.where)
            resolution = np.ones(3)
        try:
            return cls(path, resolution, e.name)  # type: ignore[arg-type]
        except DiluvianError as err:
            raise e.reraise(err) from None
