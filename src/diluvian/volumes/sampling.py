"""Random training subvolumes (spec §4.2) and their CSV files (spec §1.8)."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import DataError, DatasetNotFoundError
from ..geometry import Box
from ..util import atomic_path, fmt_list
from .base import Volume

__all__ = [
    "CSV_FIELDS",
    "Subvolume",
    "SubvolumeBounds",
    "get_subvolume",
    "read_subvolume_bounds_csv",
    "sample_subvolume_bounds",
    "write_subvolume_bounds_csv",
]

logger = logging.getLogger(__name__)

CSV_FIELDS = ("start", "stop", "seed", "label_id", "label_margin")


def _vec3(value: ArrayLike | None) -> NDArray[np.int64] | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.int64)
    return np.broadcast_to(arr, (3,)).copy() if arr.ndim == 0 else arr.reshape(3).copy()


@dataclass
class SubvolumeBounds:
    """A box of a volume to train on, and the object to fill in it.

    Attributes
    ----------
    start, stop : ndarray of int64, shape (3,), or None
        The image crop ``[start, stop)`` (local voxels of the volume).
    seed : ndarray of int64, shape (3,), or None
        Seed voxel in the same coordinates (the crop centre when sampled).
    label_id : int or None
        Object id under the seed; None for unlabelled volumes.
    label_margin : ndarray of int64, shape (3,)
        The label crop is ``[start + label_margin, stop - label_margin)``.
        An int is broadcast to all axes.
    """

    start: NDArray[np.int64] | None
    stop: NDArray[np.int64] | None
    seed: NDArray[np.int64] | None = None
    label_id: int | None = None
    label_margin: NDArray[np.int64] = field(default_factory=lambda: np.zeros(3, dtype=np.int64))

    def __post_init__(self) -> None:
        self.start = _vec3(self.start)
        self.stop = _vec3(self.stop)
        self.seed = _vec3(self.seed)
        self.label_margin = _vec3(self.label_margin)  # type: ignore[assignment]
        if self.label_id is not None:
            self.label_id = int(self.label_id)
        if (self.start is None) != (self.stop is None):
            raise DataError(f"subvolume bounds: start and stop go together, got start={fmt_list(self.start)}, "
                            f"stop={fmt_list(self.stop)}")
        if self.start is None and self.seed is None:
            raise DataError("subvolume bounds: need start and stop, or a seed")
        if self.start is not None and ((self.stop - self.start - 2 * self.label_margin) <= 0).any():
            raise DataError(f"subvolume bounds: empty box {self.start.tolist()}-{self.stop.tolist()} "
                            f"with label margin {self.label_margin.tolist()}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubvolumeBounds):
            return NotImplemented

        def same(a: NDArray | None, b: NDArray | None) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

        return (same(self.start, other.start) and same(self.stop, other.stop) and same(self.seed, other.seed)
                and self.label_id == other.label_id and same(self.label_margin, other.label_margin))

    @property
    def shape(self) -> NDArray[np.int64] | None:
        """``stop - start``, or None for seed-only bounds."""
        return None if self.start is None else self.stop - self.start


@dataclass
class Subvolume:
    """An image crop and the binary mask of one object in it.

    Attributes
    ----------
    image : ndarray of float32, shape (Z, Y, X), or None
        Image in [0, 1] (None for label-only volumes).
    label_mask : ndarray of bool, shape ``image.shape - 2 * label_margin``, or None
        Voxels of object ``label_id``.
    seed : ndarray of int64, shape (3,)
        Seed voxel, relative to the image crop.
    label_id : int or None
    label_margin : ndarray of int64, shape (3,)
        Offset of the label mask in the image crop.
    """

    image: NDArray[np.float32] | None
    label_mask: NDArray[np.bool_] | None
    seed: NDArray[np.int64]
    label_id: int | None
    label_margin: NDArray[np.int64] = field(default_factory=lambda: np.zeros(3, dtype=np.int64))

    def has_seed_in_mask(self) -> bool:
        """Whether the seed is inside the object's label mask."""
        if self.label_mask is None:
            return False
        s = np.asarray(self.seed) - np.asarray(self.label_margin)
        if (s < 0).any() or (s >= np.asarray(self.label_mask.shape)).any():
            return False
        return bool(self.label_mask[tuple(s)])


def get_subvolume(volume: Volume, bounds: SubvolumeBounds, label_downsampling: str = "majority") -> Subvolume:
    """The image and the object's label mask of ``volume`` in ``bounds``.

    Parameters
    ----------
    volume : Volume
    bounds : SubvolumeBounds
        ``start``/``stop`` of the image crop; the label mask covers
        ``[start + label_margin, stop - label_margin)``. With ``label_id``
        None (or no labels) the label mask is None.
    label_downsampling : {"majority", "conjunction"}
        Pooling of the object mask on downsampled volumes.

    Returns
    -------
    Subvolume
        Its ``seed`` is ``bounds.seed - start`` when the bounds have a seed,
        else the crop centre ``(stop - start) // 2``.

    Raises
    ------
    DataError
        Bounds without start and stop, or a box outside the volume.
    """
    if bounds.start is None or bounds.stop is None:
        raise DataError(f"volume {volume.name!r}: subvolume bounds need start and stop, got "
                        f"start={fmt_list(bounds.start)}, stop={fmt_list(bounds.stop)}")
    box = Box(bounds.start, bounds.stop)
    margin = np.asarray(bounds.label_margin, dtype=np.int64)
    image = volume.get_image(box.start, box.stop) if volume.image is not None else None
    label_mask = None
    if bounds.label_id is not None and volume.labels is not None:
        label_box = box.grow(-margin)
        label_mask = volume.get_label_mask(label_box.start, label_box.stop, bounds.label_id, label_downsampling)
    seed = (np.asarray(bounds.seed, dtype=np.int64) - box.start) if bounds.seed is not None else \
        (box.stop - box.start) // 2
    return Subvolume(image=image, label_mask=label_mask, seed=seed, label_id=bounds.label_id,
                     label_margin=margin.copy())


# ---------------------------------------------------------------------------- sampling


def sample_subvolume_bounds(volume: Volume, shape: Sequence[int], rng: np.random.Generator,
                            label_margin: int | Sequence[int] = 0, *, exclude_label_zero: bool = True,
                            max_rejections: int = 10_000) -> Iterator[SubvolumeBounds]:
    """Endless random subvolume bounds of ``shape`` in ``volume`` (spec §4.2).

    A centre is drawn uniformly among those whose box fits in the volume (and,
    with a mask, whose label box fits in the mask's bounding box). It is
    rejected when:

    1. the volume has a mask and the label box ``[start + label_margin, stop -
       label_margin)`` is not entirely valid, checked on the native mask;
    2. the image is 0 at the centre (blank or missing sections);
    3. the volume has labels and the native block under the centre voxel is not
       a single object, or (with ``exclude_label_zero``) that object is 0.

    Parameters
    ----------
    volume : Volume
        Usually a partitioned and downsampled view.
    shape : 3 ints
        Subvolume shape (voxels of ``volume``).
    rng : numpy.random.Generator
    label_margin : int or 3 ints
        Margin between the image crop and the label crop.
    exclude_label_zero : bool
        Reject centres on label 0 (unlabelled voxels / membranes in most
        ground truths). The original did not; this is a deliberate change.
    max_rejections : int
        Give up after this many consecutive rejections.

    Yields
    ------
    SubvolumeBounds
        ``seed`` is the centre voxel, ``stop - start == shape``.

    Raises
    ------
    DataError
        ``shape`` does not fit in the volume (or its mask bounds), or
        ``max_rejections`` draws in a row were rejected.
    """
    size = np.asarray(shape, dtype=np.int64).reshape(-1)
    margin_l = _vec3(label_margin)
    if size.shape != (3,) or (size < 1).any():
        raise DataError(f"volume {volume.name!r}: subvolume shape: expected 3 positive ints, got {fmt_list(shape)}")
    if (margin_l < 0).any() or (size - 2 * margin_l < 1).any():  # type: ignore[operator]
        raise DataError(f"volume {volume.name!r}: label margin {margin_l.tolist()} leaves no labels in a "  # type: ignore[union-attr]
                        f"subvolume of shape {size.tolist()}")
    half = size // 2
    vol_shape = np.asarray(volume.shape, dtype=np.int64)
    # start = ctr - half and stop = start + size must lie in [0, shape].
    lo, hi = half.copy(), vol_shape - size + half
    has_mask = volume.mask is not None
    if has_mask:
        ma, mb = volume.mask_bounds
        lo = np.maximum(lo, ma + half - margin_l)
        hi = np.minimum(hi, mb - size + half + margin_l)
    if (hi < lo).any():
        where = f" and its mask bounds {ma.tolist()}-{mb.tolist()}" if has_mask else ""
        raise DataError(f"volume {volume.name!r}: no subvolume of shape {size.tolist()} fits in the volume of "
                        f"shape {vol_shape.tolist()}{where}")
    has_image = volume.image is not None
    has_labels = volume.labels is not None
    rejected = {"mask": 0, "blank image": 0, "mixed labels": 0, "label 0": 0}
    streak = 0
    while True:
        ctr = rng.integers(lo, hi + 1)
        start = ctr - half
        stop = start + size
        reason = None
        label_id = None
        if has_mask and not volume.get_mask(start + margin_l, stop - margin_l).all():
            reason = "mask"
        elif has_image and volume.get_image(ctr, ctr + 1).item() == 0:
            reason = "blank image"
        elif has_labels:
            label_id = volume.world_block_label(ctr)
            if label_id is None:
                reason = "mixed labels"
            elif exclude_label_zero and label_id == 0:
                reason = "label 0"
        if reason is None:
            streak = 0
            yield SubvolumeBounds(start, stop, seed=ctr, label_id=label_id, label_margin=margin_l)
            continue
        rejected[reason] += 1
        streak += 1
        if streak >= max_rejections:
            counts = ", ".join(f"{k}: {v}" for k, v in rejected.items() if v)
            raise DataError(f"volume {volume.name!r}: no valid subvolume of shape {size.tolist()} in "
                            f"{max_rejections} consecutive draws (rejected for {counts})")


# ---------------------------------------------------------------------------- CSV


def _format_field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, np.ndarray):
        return np.array2string(value.astype(np.int64), separator=" ")
    return str(int(value))  # type: ignore[call-overload]


def write_subvolume_bounds_csv(path: str | os.PathLike, bounds: Iterable[SubvolumeBounds]) -> None:
    """Write bounds to a CSV file (header ``start,stop,seed,label_id,label_margin``; spec §1.8).

    Arrays are written like ``[ 12 100 100]``, None as an empty field. The file
    is written to a temporary name and renamed.
    """
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for b in bounds:
            writer.writerow([_format_field(getattr(b, k)) for k in CSV_FIELDS])


def _parse_field(text: str, where: str) -> NDArray[np.int64] | int | None:
    text = text.strip()
    if not text:
        return None
    try:
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError
            return np.array([int(t) for t in text[1:-1].split()], dtype=np.int64)
        return int(text)
    except ValueError:
        raise DataError(f"{where}: expected an int or an array like [ 12 100 100], got {text!r}") from None


def read_subvolume_bounds_csv(path: str | os.PathLike) -> list[SubvolumeBounds]:
    """Read bounds written by :func:`write_subvolume_bounds_csv` (or the original's ``gen-subv-bounds``).

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    DataError
        A wrong header or an unreadable field (the message gives the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such subvolume bounds file")
    out = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_FIELDS:
            raise DataError(f"{path}: line 1: expected the header {','.join(CSV_FIELDS)}, got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(CSV_FIELDS):
                raise DataError(f"{path}: line {line}: expected {len(CSV_FIELDS)} fields, got {len(row)}")
            values = {k: _parse_field(v, f"{path}: line {line}: {k}") for k, v in zip(CSV_FIELDS, row)}
            if values["label_margin"] is None:
                values["label_margin"] = 0
            try:
                out.append(SubvolumeBounds(**values))  # type: ignore[arg-type]
            except (DataError, ValueError) as e:
                raise DataError(f"{path}: line {line}: {e}") from None
    return out
