"""Segmentation files (``NAME.hdf5`` + ``NAME.toml``), fill checkpoints and resuming.

A segmentation is written as

* ``NAME.hdf5``: ``volumes/labels/neuron_ids`` (uint64, ZYX, attribute
  ``resolution`` = the working resolution in nm) and ``volumes/labels/conflict_count``
  (uint32: how many later bodies also claimed each voxel);
* ``NAME.toml``: comment lines (model, options), then one ``[[dataset]]`` entry
  (``name = "<volume> segmentation"``, ``hdf5_file`` = the HDF5 basename, resolved
  next to the TOML, ``label_dataset``, ``resolution``) so that the result loads as a
  volume with ``-v NAME.toml``.

A checkpoint (``NAME_checkpoint.hdf5`` / ``.toml``) has the same layout plus the
group ``fill_state`` in the HDF5 file (seeds, next seed, next label, random
entropy, options, volume name and box), which :func:`load_resume` reads back so
that the fill continues exactly. Every file goes to a temporary name first and
is renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import toml_dumps
from ..errors import DataError, DatasetNotFoundError
from ..util import atomic_hdf5, atomic_path, check_writable_dir
from .state import FillState

log = logging.getLogger(__name__)

LABEL_DATASET = "volumes/labels/neuron_ids"
CONFLICT_DATASET = "volumes/labels/conflict_count"
STATE_GROUP = "fill_state"
STATE_FORMAT = 1


def _dataset_toml(name: str, hdf5_name: str, resolution: Sequence[float], comments: Sequence[str]) -> str:
    entry = {"name": name, "hdf5_file": hdf5_name, "label_dataset": LABEL_DATASET,
             "resolution": [float(r) for r in resolution]}
    lines = [f"# {c}" for c in comments] + ["", "[[dataset]]"]
    return "\n".join(lines) + "\n" + toml_dumps(entry)


def _write_labels_hdf5(f: Any, labels: Any, conflicts: Any, resolution: Sequence[float]) -> None:
    shape = tuple(np.shape(labels))
    chunks = tuple(min(64, s) for s in shape)
    ds = f.create_dataset(LABEL_DATASET, shape=shape, dtype=np.uint64, chunks=chunks, compression="gzip",
                          compression_opts=1)
    # copy slab by slab: labels may be an out-of-core array
    step = chunks[0]
    for z in range(0, shape[0], step):
        ds[z:z + step] = np.asarray(labels[z:z + step], dtype=np.uint64)
    ds.attrs["resolution"] = np.asarray(resolution, dtype=np.float64)
    if conflicts is not None:
        cs = f.create_dataset(CONFLICT_DATASET, shape=shape, dtype=np.uint32, chunks=chunks, compression="gzip",
                              compression_opts=1)
        for z in range(0, shape[0], step):
            cs[z:z + step] = np.asarray(conflicts[z:z + step], dtype=np.uint32)
        cs.attrs["resolution"] = np.asarray(resolution, dtype=np.float64)


def write_segmentation(path_base: str | os.PathLike, labels: Any, conflicts: Any, resolution: Sequence[float],
                       volume_name: str, *, comments: Sequence[str] = (), state: FillState | None = None,
                       dataset_name: str | None = None) -> tuple[Path, Path]:
    """Write ``path_base.hdf5`` and ``path_base.toml`` (atomically, HDF5 first).

    Parameters
    ----------
    path_base : path-like
        Output name without extension.
    labels : array-like of uint64, shape (Z, Y, X)
    conflicts : array-like of uint32 or None
    resolution : 3 floats, nm ZYX
    volume_name : str
        The TOML dataset is called ``"<volume_name> segmentation"`` (or ``dataset_name``).
    comments : sequence of str
        Comment lines at the top of the TOML.
    state : FillState, optional
        Also store the fill state (checkpoints).

    Returns
    -------
    (hdf5_path, toml_path)
    """
    base = Path(path_base)
    h5_path = base.with_name(base.name + ".hdf5")
    toml_path = base.with_name(base.name + ".toml")
    check_writable_dir(h5_path)
    with atomic_hdf5(h5_path, suffix=".hdf5") as f:
        _write_labels_hdf5(f, labels, conflicts, resolution)
        if state is not None:
            g = f.create_group(STATE_GROUP)
            g.create_dataset("seeds", data=np.asarray(state.seeds, dtype=np.int64).reshape(-1, 3))
            g.attrs["format"] = STATE_FORMAT
            g.attrs["next_seed"] = int(state.next_seed)
            g.attrs["next_label"] = int(state.next_label)
            g.attrs["entropy"] = str(int(state.entropy))
            g.attrs["volume"] = state.volume
            g.attrs["bounds"] = json.dumps([list(map(int, b)) for b in state.bounds])
            g.attrs["options"] = json.dumps(state.options)
            g.attrs["stats"] = json.dumps(state.stats)
            g.attrs["bridges"] = json.dumps([list(map(int, b)) for b in state.bridges])
    name = dataset_name or f"{volume_name} segmentation"
    with atomic_path(toml_path, suffix=".toml") as tmp:
        Path(tmp).write_text(_dataset_toml(name, h5_path.name, resolution, comments))
    return h5_path, toml_path


class Checkpointer:
    """Writes ``<base>_checkpoint.hdf5`` / ``.toml``; pass it as ``checkpoint=`` to the dense fill.

    Parameters
    ----------
    path_base : path-like
        The segmentation output name without extension.
    resolution : 3 floats
    volume_name : str
    comments : sequence of str
    """

    def __init__(self, path_base: str | os.PathLike, resolution: Sequence[float], volume_name: str,
                 comments: Sequence[str] = ()) -> None:
        base = Path(path_base)
        self.base = base.with_name(base.name + "_checkpoint")
        self.resolution = tuple(resolution)
        self.volume_name = volume_name
        self.comments = list(comments)
        self.saved = 0

    @property
    def toml_path(self) -> Path:
        return self.base.with_name(self.base.name + ".toml")

    @property
    def hdf5_path(self) -> Path:
        return self.base.with_name(self.base.name + ".hdf5")

    def __call__(self, state: FillState, labels: Any, conflicts: Any) -> None:
        comments = self.comments + [f"Checkpoint: {state.next_seed} of {len(state.seeds)} seeds done, "
                                    f"next label {state.next_label}"]
        write_segmentation(self.base, labels, conflicts, self.resolution, self.volume_name, comments=comments,
                           state=state, dataset_name=f"{self.volume_name} segmentation checkpoint")
        self.saved += 1
        log.info("checkpoint %s: %d of %d seeds, next label %d", self.toml_path, state.next_seed, len(state.seeds),
                 state.next_label)

    def remove(self) -> None:
        """Delete the checkpoint files (after the final output was written)."""
        for p in (self.hdf5_path, self.toml_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def load_resume(path: str | os.PathLike) -> tuple[FillState | None, np.ndarray, np.ndarray | None, list[float] | None]:
    """Read a segmentation or checkpoint to resume from.

    Parameters
    ----------
    path : path-like
        The TOML written next to a segmentation or checkpoint (its first
        ``[[dataset]]`` is used), or the HDF5 file itself.

    Returns
    -------
    state : FillState or None
        The fill state of a checkpoint; None for a plain segmentation.
    labels : ndarray of uint64
    conflicts : ndarray of uint32 or None
    resolution : list of 3 floats or None

    Raises
    ------
    DatasetNotFoundError
        Missing file or dataset.
    DataError
        Not a segmentation TOML / HDF5.
    """
    import h5py

    from ..config import read_toml

    path = Path(path)
    label_ds = LABEL_DATASET
    if path.suffix.lower() == ".toml":
        table = read_toml(path)
        entries = table.get("dataset")
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
            raise DataError(f"{path}: resume file: expected a [[dataset]] entry")
        entry = entries[0]
        if "hdf5_file" not in entry:
            raise DataError(f"{path}: resume file: [[dataset]] has no hdf5_file")
        h5 = Path(entry["hdf5_file"])
        if not h5.is_absolute():
            h5 = path.parent / h5
        label_ds = entry.get("label_dataset", LABEL_DATASET)
    else:
        h5 = path
    if h5.is_dir():
        raise DataError(f"{h5}: resume segmentation is a directory, expected an HDF5 file or its TOML")
    if not h5.is_file():
        raise DatasetNotFoundError(f"{h5}: resume segmentation file does not exist")
    try:
        f = h5py.File(h5, "r")
    except OSError as e:
        raise DataError(f"{h5}: not an HDF5 file ({e})") from None
    with f:
        if label_ds not in f:
            raise DatasetNotFoundError(f"{h5}: no dataset {label_ds!r}")
        labels = np.asarray(f[label_ds][...], dtype=np.uint64)
        if labels.ndim != 3:
            raise DataError(f"{h5}: {label_ds}: expected a 3D label volume, got shape {list(labels.shape)}")
        res = f[label_ds].attrs.get("resolution")
        resolution = None if res is None else [float(r) for r in res]
        conflicts = np.asarray(f[CONFLICT_DATASET][...], dtype=np.uint32) if CONFLICT_DATASET in f else None
        state = None
        if STATE_GROUP in f:
            g = f[STATE_GROUP]
            try:
                bounds = json.loads(g.attrs["bounds"])
                state = FillState(
                    seeds=np.asarray(g["seeds"][...], dtype=np.int64).reshape(-1, 3),
                    next_seed=int(g.attrs["next_seed"]), next_label=int(g.attrs["next_label"]),
                    entropy=int(g.attrs["entropy"]), options=json.loads(g.attrs["options"]),
                    volume=str(g.attrs["volume"]), bounds=(bounds[0], bounds[1]),
                    stats=json.loads(g.attrs["stats"]), bridges=json.loads(g.attrs.get("bridges", "[]")))
            except (KeyError, ValueError, IndexError) as e:
                raise DataError(f"{h5}: damaged fill state ({e})") from None
            if tuple(state.shape) != labels.shape:
                raise DataError(f"{h5}: fill state box {list(state.shape)} does not match the labels "
                                f"{list(labels.shape)}")
    return state, labels, conflicts, resolution
