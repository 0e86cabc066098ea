"""Blockwise dense fill of volumes larger than one machine, on Dask distributed.

(Over 600 lines: tiling, the Dask tasks, reconciliation, claiming and the zarr output are one
pipeline whose resume rules (manifest, done files) tie them together.)

The volume is cut into blocks: a *write box* (the block's share of the output)
plus a context margin of half an FOV and some moves on every side (the *read
box*). Each block is filled as a volume of its own by one task
(:func:`_fill_one_block`), on a ``distributed.LocalCluster`` (default), on an
existing cluster (``scheduler=ADDRESS``), or in this process (``workers=0``).
Tasks get the model file's path, the (picklable) config and where the volume is
(its dataset TOMLs), never a pickled volume: each task reopens the volume lazily
and reads only its read box.

Phases, each resumable:

1. **fill**: block ``i`` is filled from the seeds of its write box (grown by
   ``[blockwise] seed_margin`` voxels, default 0; each seed belongs to one block)
   with labels from 1, shifted to the disjoint range ``(i + 1) * ID_STRIDE + label``,
   and its whole read box is saved to ``<output>.blockwise/blocks/<i>.npz``
   (written to a temporary name and renamed: the file is the block's *done* marker).
2. **reconcile**: neighbouring read boxes overlap by two margins. In each
   overlap the two blocks' objects are matched by agreement: ``a`` and ``b``
   are one object when the voxels they share are at least ``agreement_fraction``
   of the smaller one's voxels in the overlap, so that a thin touch or a small
   leak does not join two neurons, while an object that one block sees in two
   pieces (joined outside its read box) joins both. Matches go into a union-find.
   Voxels of a write box that its block left unclaimed and a face neighbour
   claimed (an object that grew in from the neighbour's seeds) take the
   neighbour's ID (``<output>.blockwise/patches/<i>.npz``, rewritten by every run).
3. **relabel**: every object that reaches a write box gets a final ID,
   consecutive from 1 in the order of its smallest block-range ID, and each
   block's write box, with its patches, is written through that map into the
   output, block by block (``<output>.blockwise/relabelled/<i>`` marks the blocks done).
4. **claim** (with ``[postprocessing] claim``, as the single-process fill): each
   block claims the unclaimed voxels of its read box of the relabelled output
   (:func:`~diluvian.claim.claim_labels`: its bodies and its neighbours' grow, the rest
   becomes new segments of the block's ID range), saved to ``claims/<i>.npz``; new
   segments are matched in the overlaps as in phase 2, only to each other (never to a
   fill object, so that claiming never joins two), numbered after the fill's objects
   and written into the write boxes (``claimed/<i>`` marks them).
   The membrane threshold (``membrane_fraction``) is a quantile of each read box's
   boundary evidence, as the flood guards' is in each block, not of the whole volume.

The output is one zarr v3 group ``<output>.zarr`` holding the uint64 array
``0`` (chunks tile the write boxes, so no two tasks write one chunk) with OME-Zarr
(NGFF 0.5) multiscale metadata and a ``resolution`` attribute, plus
``<output>.toml``, a ``[[zarr]]`` dataset entry ``"<volume> segmentation"`` for
``-v`` (``evaluate`` and ``view`` read it chunk by chunk). The group's
``diluvian_blockwise`` attribute is the run's manifest (volume, shape, model,
config, blocks); a rerun with the same manifest skips finished work and ends with
exactly the same output, a rerun with another one is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from ..config import Config, config_to_dict
from ..errors import ConfigError, DataError, DatasetNotFoundError
from ..util import UnionFind, atomic_path, check_writable_dir, fmt_list

log = logging.getLogger(__name__)

__all__ = ["Block", "BlockwiseResult", "VolumeSource", "ID_STRIDE", "blockwise_fill", "dask_client",
           "match_overlap", "plan_blocks"]

#: Block ``i``'s labels are ``(i + 1) * ID_STRIDE + label`` before the final relabel.
ID_STRIDE = 2 ** 32
MANIFEST_FORMAT = 3  # 2: seeds from the write box and a band (seed_margin), holes patched from face neighbours;
# 3: claiming ([postprocessing] claim) after the relabel
MANIFEST_ATTR = "diluvian_blockwise"
LABEL_ARRAY = "0"
#: ``seed_margin`` of :func:`blockwise_fill` for seeds from the whole read box (the rule of manifest format 1).
READ_BOX = "read box"


# --------------------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class Block:
    """One block: its index, grid position, write box and read box (volume voxels, stop exclusive)."""

    index: int
    grid: tuple[int, int, int]
    write_start: tuple[int, int, int]
    write_stop: tuple[int, int, int]
    read_start: tuple[int, int, int]
    read_stop: tuple[int, int, int]

    @property
    def read_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.read_start, self.read_stop))


def block_margin(cfg: Config, margin_moves: int) -> NDArray[np.int64]:
    """Context margin per axis: half the input FOV plus ``margin_moves`` move steps."""
    return np.asarray(cfg.model.input_fov_shape, dtype=np.int64) // 2 + \
        int(margin_moves) * np.asarray(cfg.model.move_step, dtype=np.int64)


def min_block_shape(cfg: Config, margin: Sequence[int]) -> NDArray[np.int64]:
    """Smallest write box per axis: the FOV plus the margin, and two margins (overlaps only between neighbours)."""
    m = np.asarray(margin, dtype=np.int64)
    return np.maximum(np.asarray(cfg.model.input_fov_shape, dtype=np.int64) + m, 2 * m)


def _axis_cuts(size: int, block: int, smallest: int) -> list[int]:
    """Block boundaries along one axis; a last piece smaller than ``smallest`` joins the one before."""
    cuts = list(range(0, size, block)) + [size]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < smallest:
        del cuts[-2]
    return cuts


def plan_blocks(shape: Sequence[int], block_shape: Sequence[int], margin: Sequence[int],
                smallest: Sequence[int] | None = None) -> list[Block]:
    """Cut a volume of ``shape`` into blocks of ``block_shape`` with ``margin`` of context on each side.

    Blocks start at multiples of ``block_shape``; the last one along an axis
    ends at the volume's edge (a remainder smaller than ``smallest`` joins the
    block before it). Read boxes are clipped to the volume. Blocks are numbered
    in C order of their grid positions.
    """
    shape = [int(s) for s in shape]
    smallest = list(smallest) if smallest is not None else [0, 0, 0]
    cuts = [_axis_cuts(n, int(b), int(s)) for n, b, s in zip(shape, block_shape, smallest)]
    blocks = []
    for gz in range(len(cuts[0]) - 1):
        for gy in range(len(cuts[1]) - 1):
            for gx in range(len(cuts[2]) - 1):
                g = (gz, gy, gx)
                ws = tuple(cuts[a][g[a]] for a in range(3))
                we = tuple(cuts[a][g[a] + 1] for a in range(3))
                rs = tuple(max(0, ws[a] - int(margin[a])) for a in range(3))
                re_ = tuple(min(shape[a], we[a] + int(margin[a])) for a in range(3))
                blocks.append(Block(len(blocks), g, ws, we, rs, re_))  # type: ignore[arg-type]
    return blocks


def chunk_shape_for(block_shape: Sequence[int], largest: int = 64) -> tuple[int, int, int]:
    """Output chunks that tile every write box: per axis the largest divisor of the block in [16, ``largest``]
    (the block itself when it has none)."""
    out = []
    for b in block_shape:
        b = int(b)
        c = next((d for d in range(min(largest, b), 15, -1) if b % d == 0), b)
        out.append(c)
    return tuple(out)  # type: ignore[return-value]


def _neighbour_pairs(blocks: Sequence[Block]) -> dict[int, list[int]]:
    """For each block, the later blocks whose read boxes overlap its own (the 13 forward neighbours)."""
    by_grid = {b.grid: b.index for b in blocks}
    forward = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if (dz, dy, dx) > (0, 0, 0)]
    out: dict[int, list[int]] = {}
    for b in blocks:
        out[b.index] = [by_grid[g] for g in (tuple(p + d for p, d in zip(b.grid, o)) for o in forward)
                        if g in by_grid]
    return out


def _face_neighbours(blocks: Sequence[Block]) -> dict[int, list[int]]:
    """For each block, the blocks that share a face with it (at most 6), in index order."""
    by_grid = {b.grid: b.index for b in blocks}
    faces = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
    return {b.index: [by_grid[g] for g in (tuple(p + d for p, d in zip(b.grid, o)) for o in faces) if g in by_grid]
            for b in blocks}


# --------------------------------------------------------------------------- reconciliation


def match_overlap(a: NDArray, b: NDArray, fraction: float, of: str = "smaller") -> NDArray[np.uint64]:
    """Pairs of objects that agree in an overlap: ``(label in a, label in b)``, shape (K, 2).

    ``a`` and ``b`` are two fills of the same box (0 = unclaimed). Objects
    ``x`` of ``a`` and ``y`` of ``b`` match when the voxels they share are at
    least ``fraction`` of the smaller one's voxels in the box: a thin touch or a
    small leak of one into the other does not join them, while two pieces of one
    side that are one object of the other (an object that leaves a block's read
    box and comes back) both match it, as a single fill would have found.
    ``of="larger"``: of the larger one's voxels instead; ``of="mutual"``: of the
    smaller one's, and only where each is the other's largest share, so that each
    object matches at most one of the other side's.
    """
    a = np.asarray(a, dtype=np.uint64).ravel()
    b = np.asarray(b, dtype=np.uint64).ravel()
    ua, ia, na = np.unique(a, return_inverse=True, return_counts=True)
    ub, ib, nb = np.unique(b, return_inverse=True, return_counts=True)
    both = (a != 0) & (b != 0)
    pair = ia[both].astype(np.int64) * len(ub) + ib[both]
    up, count = np.unique(pair, return_counts=True)
    pa, pb = up // len(ub), up % len(ub)
    ok = count >= fraction * (np.maximum if of == "larger" else np.minimum)(na[pa], nb[pb])
    if of == "mutual":  # each is the other's largest share (ties: the first), so no chains through one
        order = np.lexsort((-count, pa))
        best_a = np.zeros(len(up), bool)
        best_a[order[np.r_[True, pa[order][1:] != pa[order][:-1]]]] = True
        order = np.lexsort((-count, pb))
        best_b = np.zeros(len(up), bool)
        best_b[order[np.r_[True, pb[order][1:] != pb[order][:-1]]]] = True
        ok &= best_a & best_b
    return np.stack([ua[pa[ok]], ub[pb[ok]]], axis=1).astype(np.uint64).reshape(-1, 2)


def final_ids(core_ids: Sequence[NDArray], matches: Sequence[NDArray], first: int = 1) -> tuple[NDArray, NDArray]:
    """``(raw IDs, final IDs)``, both sorted by raw ID: one final ID per matched group, consecutive from ``first``.

    Groups are numbered in the order of their smallest raw ID; only raw IDs that
    occur in some write box (``core_ids``: a block's own IDs there and those of its patches) are listed.
    """
    uf = UnionFind()
    for m in matches:
        for x, y in np.asarray(m, dtype=np.uint64).reshape(-1, 2).tolist():
            uf.union(x, y)
    raw = np.unique(np.concatenate([np.asarray(c, dtype=np.uint64) for c in core_ids] or [np.zeros(0, np.uint64)]))
    raw = raw[raw != 0]
    roots = uf.roots(raw) if uf.parent else raw.copy()
    order = np.unique(roots)
    return raw, (np.searchsorted(order, roots) + int(first)).astype(np.uint64)


def _apply_map(labels: NDArray, keys: NDArray, values: NDArray) -> NDArray[np.uint64]:
    """``labels`` with every key replaced by its value (0 stays 0; keys sorted; every nonzero label is a key)."""
    out = np.zeros(labels.shape, dtype=np.uint64)
    nz = labels != 0
    if nz.any():
        idx = np.searchsorted(keys, labels[nz])
        out[nz] = values[idx]
    return out


# --------------------------------------------------------------------------- what the tasks get


@dataclasses.dataclass(frozen=True)
class VolumeSource:
    """Where a volume is, so that a worker can reopen it: dataset TOMLs and a volume name.

    ``partition`` keeps the validation partition (``fill --partition-volumes``);
    the volume is downsampled to ``[volume] resolution`` like any fill's.
    """

    dataset_files: tuple[str, ...]
    name: str
    partition: bool = False

    def open(self, cfg: Config) -> Any:
        """The volume, read lazily (``in_memory=False``)."""
        from ..volumes import load_volumes
        from .run import prepare_volumes

        volumes = load_volumes([Path(p) for p in self.dataset_files], in_memory=False)
        if self.name not in volumes:
            raise DatasetNotFoundError(f"no volume {self.name!r} in {', '.join(self.dataset_files)}; "
                                       f"found: {', '.join(map(repr, volumes)) or 'none'}")
        prepared = prepare_volumes({self.name: volumes[self.name]}, cfg, self.partition)
        if self.name not in prepared:
            raise ConfigError(f"volume {self.name!r}: no validation partition matches it")
        return prepared[self.name]


@dataclasses.dataclass(frozen=True)
class _Job:
    """Everything a block task needs (picklable; no volume, no network)."""

    source: VolumeSource
    model: Any  # a model file path (str), or a picklable predict(images, masks) callable
    cfg: Config
    options: dict
    work_dir: str
    output: str
    torch_threads: int | None
    seed_margin: tuple[int, int, int] | None = None


def _load_predictor(job: _Job) -> Any:
    if not isinstance(job.model, str):
        return job.model
    from .run import load_fill_model

    return load_fill_model(job.model, job.cfg)[0]  # the network on the config's device; job.cfg fills


def seed_box(block: Block, seed_margin: Sequence[int] | None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Where block ``block`` takes its seeds, ``(start, stop)`` in its read box's coordinates.

    The write box grown by ``seed_margin`` voxels per axis, clipped to the read box;
    None: the whole read box.
    """
    read_start, read_stop = np.asarray(block.read_start), np.asarray(block.read_stop)
    if seed_margin is None:
        return np.zeros(3, dtype=np.int64), read_stop - read_start
    m = np.asarray(seed_margin, dtype=np.int64)
    lo = np.maximum(np.asarray(block.write_start) - m, read_start)
    hi = np.minimum(np.asarray(block.write_stop) + m, read_stop)
    return lo - read_start, hi - read_start


def _fill_one_block(volume: Any, model: Any, cfg: Config, block: Block, options: dict,
                    seed_margin: Sequence[int] | None = None,
                    times: dict | None = None) -> tuple[NDArray[np.uint64], int]:
    """Fill block ``block`` of ``volume``: ``(labels over its read box, FOVs evaluated)``.

    Labels come from the block's own range, ``(index + 1) * ID_STRIDE + 1`` on (0 = unclaimed),
    so no two blocks share an ID before the relabel.

    The read box is filled as a volume of its own (FOVs reflect-padded at its
    border). Its seeds are the ``[fill] seed_generator``'s seeds of the read box that
    lie in :func:`seed_box` (the write box grown by ``seed_margin``; None: all of
    them): each object grows from its seeds in this block's write box (and that
    band) into the margin, where the neighbour that owns the margin fills it too,
    and the reconciliation joins the two. Seeds farther out are the neighbours'
    business (each voxel is in one write box); seeding them here too only fills
    the margin's objects twice. ``times`` gets the seconds of reading, seeding and
    filling.
    """
    from ..seeds import generate_seeds
    from .box import _volume_mask, fill_box
    from .state import with_fill_options

    times = {} if times is None else times
    t0 = time.perf_counter()
    start, stop = np.asarray(block.read_start), np.asarray(block.read_stop)
    image = np.ascontiguousarray(volume.get_image(tuple(start), tuple(stop)), dtype=np.float32)
    resolution = tuple(float(r) for r in volume.resolution)
    times["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fc = with_fill_options(cfg, **{k: options.get(k) for k in ("seed_generator", "ignore_mask")}).fill
    mask = None if fc.ignore_mask else _volume_mask(volume, start, stop)
    seeds = generate_seeds(fc.seed_generator, image, resolution, cfg.model, mask=mask)
    lo, hi = seed_box(block, seed_margin)
    seeds = seeds[((seeds >= lo) & (seeds < hi)).all(axis=1)] if len(seeds) else seeds
    times["seeds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rng = np.random.default_rng([int(cfg.random_seed), int(block.index)])
    result = fill_box(image, model, cfg, (np.zeros(3, dtype=np.int64), stop - start), seeds=seeds, rng=rng,
                      label_offset=(int(block.index) + 1) * ID_STRIDE, resolution=resolution, **options)
    times["fill"] = time.perf_counter() - t0
    return np.asarray(result.labels, dtype=np.uint64), int(getattr(result.stats, "moves", 0))


def _block_file(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "blocks" / f"{index:07d}.npz"


def _relabel_marker(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "relabelled" / f"{index:07d}"


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _fill_task(job: _Job, block: Block) -> dict:
    """Dask task: fill one block and save its read box (block-range IDs) as the block's done file.

    Returns its stats (``cpu``: CPU seconds of this process, all its threads), with
    ``times``: seconds of each step (``setup``: torch threads and imports, ``open``: the
    volume, ``model``: loading it, ``read``, ``seeds``, ``fill``, ``save``: the compressed
    block file).

    A block whose done file exists is not filled again (``{"index", "skipped": True, "pid"}``): Dask reruns
    the tasks whose results a lost worker held (a worker killed or restarted), finished blocks included.
    """
    path = _block_file(job.work_dir, block.index)
    if path.exists():
        return {"index": block.index, "skipped": True, "pid": os.getpid()}
    t_start, cpu_start = time.perf_counter(), time.process_time()
    times: dict[str, float] = {}
    if job.torch_threads:
        import torch

        torch.set_num_threads(job.torch_threads)
    t0 = time.perf_counter()
    times["setup"] = t0 - t_start
    volume = job.source.open(job.cfg)
    t1 = time.perf_counter()
    times["open"] = t1 - t0
    model = _load_predictor(job)
    times["model"] = time.perf_counter() - t1
    labels, fovs = _fill_one_block(volume, model, job.cfg, block, job.options, job.seed_margin, times)
    t0 = time.perf_counter()
    core = np.unique(labels[_write_slices(block)])
    core = core[core != 0]
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=labels, core_ids=core)
    times["save"] = time.perf_counter() - t0
    return {"index": block.index, "objects": int(len(core)), "seconds": time.perf_counter() - t_start,
            "cpu": time.process_time() - cpu_start, "fovs": fovs, "voxels": int(np.prod(block.read_shape)), "peak_rss": _peak_rss(), "pid": os.getpid(),
            "times": times}


def _load_npz(path: Path, what: str, kind: str) -> NDArray:
    try:
        with np.load(path) as f:
            return f[what]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: unreadable {kind} file ({e}); rerun with --overwrite") from None


def _load_block(work_dir: str | Path, index: int, what: str = "labels") -> NDArray:
    return _load_npz(_block_file(work_dir, index), what, "block")


def _patch_file(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "patches" / f"{index:07d}.npz"


def _write_slices(block: Block) -> tuple[slice, ...]:
    """Block ``block``'s write box in its read box's coordinates."""
    return tuple(slice(w - r, e - r) for w, e, r in zip(block.write_start, block.write_stop, block.read_start))


def _in_box(block: Block, start: NDArray, stop: NDArray, labels: NDArray) -> NDArray:
    """``labels`` (over ``block``'s read box) cut to the box ``[start, stop)`` (volume voxels)."""
    return labels[tuple(slice(int(p - s), int(q - s)) for p, q, s in zip(start, stop, block.read_start))]


def _reconcile_task(job: _Job, mine: Block, forward: list[Block], faces: list[Block],
                    fraction: float) -> tuple[NDArray, NDArray]:
    """Dask task: ``(matches between block mine and its later neighbours, the IDs its output holds)``.

    Matches come from the overlaps with ``forward`` (see :func:`match_overlap`).
    Voxels of mine's write box that it left unclaimed and that a face neighbour
    (``faces``, whose read boxes cover the write box to a margin's depth) claimed
    take that neighbour's ID: the first of them in index order that has one. Such a
    piece is usually an object that grew in from the neighbour's seeds, whose seeds
    mine did not take, or a piece that mine's read box cut from its seed. These
    voxels and IDs are saved to mine's patch file for the relabel; the IDs are part
    of the returned ones.
    """
    labels = _load_block(job.work_dir, mine.index)
    core = labels[_write_slices(mine)]
    patched = core.copy()
    out = [np.zeros((0, 2), dtype=np.uint64)]
    by_index = {b.index: b for b in forward + faces}
    for j in sorted(by_index):
        other = by_index[j]
        theirs = None
        if other in forward:
            a_lo = np.maximum(mine.read_start, other.read_start)
            a_hi = np.minimum(mine.read_stop, other.read_stop)
            if (a_hi > a_lo).all():
                theirs = _load_block(job.work_dir, j)
                out.append(match_overlap(_in_box(mine, a_lo, a_hi, labels), _in_box(other, a_lo, a_hi, theirs),
                                         fraction))
        if other in faces:
            w_lo = np.maximum(mine.write_start, other.read_start)
            w_hi = np.minimum(mine.write_stop, other.read_stop)
            if (w_hi > w_lo).all():
                theirs = _load_block(job.work_dir, j) if theirs is None else theirs
                here = patched[tuple(slice(int(p - s), int(q - s)) for p, q, s in zip(w_lo, w_hi, mine.write_start))]
                there = _in_box(other, w_lo, w_hi, theirs)
                hole = (here == 0) & (there != 0)
                here[hole] = there[hole]
    filled = np.flatnonzero((core == 0) & (patched != 0))
    fill_labels = patched.ravel()[filled]
    with atomic_path(_patch_file(job.work_dir, mine.index), suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, positions=filled.astype(np.int64), labels=fill_labels.astype(np.uint64))
    ids = np.union1d(_load_block(job.work_dir, mine.index, "core_ids"), np.unique(fill_labels)).astype(np.uint64)
    return np.concatenate(out), ids


def _relabel_task(job: _Job, block: Block, keys: NDArray, values: NDArray, chunks: Sequence[int]) -> int:
    """Dask task: write block ``block``'s write box, relabelled to final IDs and with its patches, into the output."""
    labels = _load_block(job.work_dir, block.index)
    core = np.ascontiguousarray(labels[_write_slices(block)])
    try:
        with np.load(_patch_file(job.work_dir, block.index)) as f:
            core.ravel()[f["positions"]] = f["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{_patch_file(job.work_dir, block.index)}: unreadable patch file ({e}); "
                        "rerun with --overwrite") from None
    _write_box(job, block, _apply_map(core, keys, values), chunks, _relabel_marker(job.work_dir, block.index))
    return block.index


def _write_box(job: _Job, block: Block, core: NDArray, chunks: Sequence[int], marker: Path) -> None:
    """Write ``core`` as block ``block``'s write box of the output, then its ``marker`` (the step's done file)."""
    import zarr

    arr = zarr.open_array(store=str(Path(job.output) / LABEL_ARRAY), mode="r+")
    # a chunk a killed run left half-written must not be read back: remove this block's chunks first
    first = np.asarray(block.write_start) // np.asarray(chunks)
    last = -(-np.asarray(block.write_stop) // np.asarray(chunks))
    for c in np.ndindex(*(last - first)):
        key = arr.metadata.encode_chunk_key(tuple(int(v) for v in first + np.asarray(c)))
        with contextlib.suppress(FileNotFoundError):
            (Path(job.output) / LABEL_ARRAY / key).unlink()
    arr[tuple(slice(a, b) for a, b in zip(block.write_start, block.write_stop))] = core
    with atomic_path(marker) as tmp:
        tmp.write_text("done\n")


# --------------------------------------------------------------------------- claiming


def _claim_file(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "claims" / f"{index:07d}.npz"


def _claim_marker(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "claimed" / f"{index:07d}"


def _claim_task(job: _Job, block: Block) -> dict:
    """Dask task: claim the unclaimed voxels of block ``block``'s read box of the relabelled output.

    Runs :func:`~diluvian.claim.claim_labels` on the output (final IDs, from every block
    whose write box the read box covers) and the image of the read box, as the
    single-process fill claims the whole volume; the segments it makes get IDs of the
    block's range, ``(index + 1) * ID_STRIDE + 1`` on. The read box's result is saved to
    the block's claim file (its done file). Returns the write box's unclaimed voxels
    before and after.
    """
    path = _claim_file(job.work_dir, block.index)
    if path.exists():
        return {"index": block.index, "skipped": True}
    import zarr

    from ..claim import claim_labels

    arr = zarr.open_array(store=str(Path(job.output) / LABEL_ARRAY), mode="r")
    labels = np.asarray(arr[tuple(slice(a, b) for a, b in zip(block.read_start, block.read_stop))], dtype=np.uint64)
    image = np.asarray(job.source.open(job.cfg).get_image(block.read_start, block.read_stop), dtype=np.float32)
    claimed, _ = claim_labels(labels, image, job.cfg.postprocessing, 0)
    top = np.uint64(labels.max()) if labels.size else np.uint64(0)
    new = claimed > top  # claim_unclaimed numbers its segments above the largest label
    claimed[new] += np.uint64((int(block.index) + 1) * ID_STRIDE) - top
    core = claimed[_write_slices(block)]
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=claimed)
    return {"index": block.index, "before": int(np.count_nonzero(labels[_write_slices(block)] == 0)),
            "after": int(np.count_nonzero(core == 0))}


def _load_claim(work_dir: str | Path, index: int) -> NDArray:
    return _load_npz(_claim_file(work_dir, index), "labels", "claim")


def _claim_match_task(job: _Job, mine: Block, forward: list[Block], fraction: float) -> tuple[NDArray, NDArray]:
    """Dask task: ``(pairs, new IDs in mine's write box)`` of the claim phase.

    Pairs are matches (:func:`match_overlap`, ``of="mutual"``: each segment is the
    other's largest share, and they share at least ``fraction`` of the smaller one's
    voxels; a segment that one side split and the other did not joins its largest piece
    only, so no chain of matches joins the neighbours of a piece through it. Matching of
    the larger one's voxels, as before, left 10 of 28 face-crossing neurons of a FIB-25
    box cut at a face, 8 this way) between segments made by claiming, in
    mine's claimed read box and those of its later neighbours ``forward``, in their
    overlaps. A claimed segment is never joined to a fill object: where one block gave a
    piece to a body and the other made it a segment, it is a piece that one block's read
    box cut short (too small to be a segment there, so it went to its neighbour), and
    joining would merge two objects through it.
    """
    labels = _load_claim(job.work_dir, mine.index)
    pairs = [np.zeros((0, 2), dtype=np.uint64)]
    for other in forward:
        lo = np.maximum(mine.read_start, other.read_start)
        hi = np.minimum(mine.read_stop, other.read_stop)
        if (hi > lo).all():
            p = match_overlap(_in_box(mine, lo, hi, labels), _in_box(other, lo, hi, _load_claim(job.work_dir,
                                                                                             other.index)),
                              fraction, of="mutual")
            pairs.append(p[(p >= ID_STRIDE).all(axis=1)])
    core = labels[_write_slices(mine)]
    return np.concatenate(pairs), np.unique(core[core >= ID_STRIDE])


def claim_ids(objects: int, new_ids: Sequence[NDArray], pairs: Sequence[NDArray]) -> tuple[NDArray, NDArray]:
    """``(new IDs, their final IDs)`` of the claim phase, sorted by new ID.

    New IDs (those at or above ``ID_STRIDE``; ``new_ids``: the ones in some write box)
    that match each other (``pairs``) form one segment; segments get IDs consecutive
    from ``objects + 1``, in the order of their smallest new ID.
    """
    return final_ids(new_ids, pairs, first=int(objects) + 1)


def _claim_write_task(job: _Job, block: Block, keys: NDArray, values: NDArray, chunks: Sequence[int]) -> int:
    """Dask task: write block ``block``'s claimed write box, its new segments through ``keys -> values``."""
    core = np.ascontiguousarray(_load_claim(job.work_dir, block.index)[_write_slices(block)])
    new = core >= ID_STRIDE
    if new.any():
        core[new] = values[np.searchsorted(keys, core[new])]
    _write_box(job, block, core, chunks, _claim_marker(job.work_dir, block.index))
    return block.index


# --------------------------------------------------------------------------- running tasks


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, *, gpus: int | None = None,
                threads_per_worker: int = 1, connect_timeout: float = 5.0) -> Iterator[Any]:
    """A ``distributed.Client``: on an existing scheduler, on a new local cluster, or None (serial).

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    workers : int, optional
        Worker processes of the local cluster (default: the CPU cores); 0 runs
        everything in this process (yields None). Ignored with ``scheduler``.
    gpus : int, optional
        Without ``workers``: one worker per GPU, worker ``i`` with
        ``CUDA_VISIBLE_DEVICES=i`` (default: the CUDA devices torch sees; with
        none, one worker per core).
    connect_timeout : float
        Seconds to wait for ``scheduler``.

    Raises
    ------
    ConfigError
        ``scheduler`` cannot be reached within ``connect_timeout``.
    """
    if scheduler is None and workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(f"--scheduler {scheduler}: cannot reach a Dask scheduler within "
                              f"{connect_timeout:g} s ({' '.join(str(e).split())[:160]})") from None
        try:
            log.info("connected to the Dask scheduler %s (%d workers); dashboard: %s", scheduler,
                     len(client.scheduler_info().get("workers", {})), client.dashboard_link)
            yield client
        finally:
            client.close()
        return
    import dask

    # The clusters started here run without two Dask defaults that slow a fill task down:
    # the workers' statistical profiler (a stack sample every 10 ms: 5-10 % of a task's CPU time on
    # 2026-12-02), and the nannies' MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand freed memory
    # back to the OS at once (and fixes its mmap threshold), so that each step's temporaries fault
    # their pages in again: 1.2-1.35x the CPU time of the same block in a plain process (2026-12-08).
    # None unsets it (a value the user exported is still passed on).
    def quiet() -> Any:
        return dask.config.set({"distributed.worker.profile.enabled": False,
                                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})

    if workers is None:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        if gpus > 0:
            from distributed import Nanny, Scheduler, SpecCluster

            specs = {f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": threads_per_worker,
                                                             "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
                     for i in range(gpus)}
            with quiet(), SpecCluster(scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}, workers=specs,
                             silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
                log.info("local Dask cluster with %d workers, one per GPU; dashboard: %s", gpus, client.dashboard_link)
                yield client
            return
    n = int(workers) if workers is not None else (os.cpu_count() or 1)
    with quiet(), LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                             dashboard_address=":0", silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        log.info("local Dask cluster with %d workers; dashboard: %s", n, client.dashboard_link)
        yield client


def _run(client: Any, fn: Callable, calls: Sequence[tuple], desc: str, progress: bool,
         ordered: bool = False) -> list:
    """Run ``fn(*args)`` for each ``args`` in ``calls`` (on the cluster, or here when ``client`` is None).

    Results come in the order they finish, or in the order of ``calls`` with ``ordered``.
    """
    from tqdm import tqdm

    results = []
    with tqdm(total=len(calls), desc=desc, unit="block", disable=not progress, dynamic_ncols=True) as bar:
        if client is None:
            for args in calls:
                results.append(fn(*args))
                bar.update()
            return results
        from distributed import as_completed

        futures = [client.submit(fn, *args, pure=False) for args in calls]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
            if ordered:
                results = [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()
    return results


# --------------------------------------------------------------------------- manifest and output


def _model_fingerprint(model: Any) -> str:
    if isinstance(model, str):
        h = hashlib.sha256()
        try:
            with open(model, "rb") as f:
                for piece in iter(lambda: f.read(1 << 20), b""):
                    h.update(piece)
        except OSError as e:
            raise DatasetNotFoundError(f"{model}: cannot read the model file: {e.strerror or e}") from None
        return f"sha256:{h.hexdigest()}"
    return f"callable:{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', type(model).__name__)}"


def _manifest(source: VolumeSource, shape: Sequence[int], resolution: Sequence[float], model: Any, cfg: Config,
              options: dict, block_shape: Sequence[int], margin: Sequence[int], fraction: float,
              n_blocks: int, seed_margin: Sequence[int] | None = None) -> dict:
    """What determines the output: a rerun against a store with another manifest is refused."""
    from .state import fill_options, with_fill_options

    # only what changes the segmentation: the fill's result options (not its batch size,
    # device or checkpoint timing), the working resolution and the network
    whole = config_to_dict(cfg)
    config = {"fill": fill_options(with_fill_options(cfg, **options)), "volume": whole["volume"],
              "network": whole["network"]}
    return json.loads(json.dumps({
        "format": MANIFEST_FORMAT,
        "volume": source.name,
        "dataset_files": [str(Path(p).resolve()) for p in source.dataset_files],
        "partition": bool(source.partition),
        "shape": [int(s) for s in shape],
        "resolution": [float(r) for r in resolution],
        "model": _model_fingerprint(model),
        "config": config,
        "block_shape": [int(b) for b in block_shape],
        "margin": [int(m) for m in margin],
        # where a block takes its seeds: "read box" (all of it) or the write box grown by these voxels
        "seed_margin": READ_BOX if seed_margin is None else [int(v) for v in seed_margin],
        "agreement_fraction": float(fraction),
        "id_stride": ID_STRIDE,
        "blocks": int(n_blocks),
    }, sort_keys=True, default=str))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} here, {b!r} wanted)"]


def _ome_attrs(name: str, resolution: Sequence[float]) -> dict:
    """OME-Zarr (NGFF 0.5) multiscale metadata of a one-level ZYX label image in nm."""
    return {"ome": {"version": "0.5", "multiscales": [{
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": LABEL_ARRAY, "coordinateTransformations": [
            {"type": "scale", "scale": [float(r) for r in resolution]}]}],
    }]}}


def _remove_output(store: Path, work_dir: Path, toml: Path) -> None:
    """Delete a previous output (``--overwrite``): only a zarr store, its work directory and its TOML."""
    if store.exists():
        if store.is_dir() and not (store / "zarr.json").exists() and not (store / ".zgroup").exists():
            raise DataError(f"{store}: exists and is not a zarr store; not removing it")
        shutil.rmtree(store) if store.is_dir() else store.unlink()
    if work_dir.is_dir():
        shutil.rmtree(work_dir)
    with contextlib.suppress(FileNotFoundError):
        toml.unlink()


def _open_output(store: Path, shape: Sequence[int], chunks: Sequence[int], resolution: Sequence[float],
                 name: str, manifest: dict, overwrite: bool, work_dir: Path, toml: Path) -> Any:
    """Create the output group and array, or reopen one of the same run (checked against ``manifest``)."""
    import zarr

    if overwrite:
        _remove_output(store, work_dir, toml)
    if store.exists():
        try:
            group = zarr.open_group(store=str(store), mode="r+")
            arr = group[LABEL_ARRAY]
        except Exception as e:  # zarr raises several unrelated types for "not this layout"
            raise DataError(f"{store}: exists and is not a blockwise fill output ({' '.join(str(e).split())}); "
                            "use --overwrite to replace it") from None
        if tuple(arr.shape) != tuple(shape) or np.dtype(arr.dtype) != np.uint64:
            raise DataError(f"{store}: exists with shape {list(arr.shape)} and dtype {arr.dtype}, expected "
                            f"{list(shape)} uint64; use --overwrite to replace it")
        old = group.attrs.get(MANIFEST_ATTR)
        if not isinstance(old, dict) or "manifest" not in old:
            raise DataError(f"{store}: exists and was not written by a blockwise fill; use --overwrite to replace it")
        diff = _differences(old["manifest"], manifest)
        if diff:
            raise DataError(f"{store}: holds a blockwise fill of another volume or config (differs: "
                            f"{'; '.join(diff[:3])}{' ...' if len(diff) > 3 else ''}); use --overwrite to start over")
        log.info("%s: resuming (%s)", store, "complete" if old.get("complete") else "incomplete")
        return group
    check_writable_dir(toml)
    group = zarr.create_group(store=str(store), zarr_format=3, attributes={
        **_ome_attrs(name, resolution), MANIFEST_ATTR: {"manifest": manifest, "complete": False}})
    arr = group.create_array(LABEL_ARRAY, shape=tuple(int(s) for s in shape), chunks=tuple(int(c) for c in chunks),
                             dtype=np.uint64, fill_value=0, dimension_names=("z", "y", "x"))
    arr.attrs["resolution"] = [float(r) for r in resolution]
    return group


def _write_toml(toml: Path, store: Path, dataset_name: str, resolution: Sequence[float],
                comments: Sequence[str]) -> None:
    lines = [f"# {c}" for c in comments] + [
        "", "[[zarr]]", f"name = {json.dumps(dataset_name)}", f"store = {json.dumps(store.name)}",
        f"label_array = {json.dumps(LABEL_ARRAY)}",
        f"resolution = [{', '.join(repr(float(r)) for r in resolution)}]"]
    with atomic_path(toml, suffix=".toml") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- the fill


@dataclasses.dataclass
class BlockwiseResult:
    """What :func:`blockwise_fill` did.

    Attributes
    ----------
    store, toml : Path
        The output zarr group and its ``[[zarr]]`` dataset TOML.
    shape : tuple of 3 ints
    blocks : int
        Blocks in the volume.
    filled : int
        Blocks filled by this call (the others were done before).
    objects : int
        Objects in the output (IDs 1..objects).
    joined : int
        Block-range IDs merged into another block's object by reconciliation.
    seconds : dict of str -> float
        Wall time of each phase.
    block_stats : list of dict
        Per block filled here: ``seconds``, ``fovs``, ``voxels`` (read box), ``peak_rss``
        (bytes, of the process that filled it), ``pid``. A block whose worker died after filling it,
        before its result reached this process, has none (Dask's rerun of its task finds it done).
    claim : dict of str -> int
        With ``[postprocessing] claim``: ``unclaimed_before`` and ``unclaimed_after`` (voxels of the
        blocks claimed by this call) and ``segments`` (new segments in the output); else empty.
    """

    store: Path
    toml: Path
    shape: tuple[int, int, int]
    blocks: int
    filled: int
    objects: int
    joined: int
    seconds: dict
    block_stats: list
    claim: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        claimed = ""
        if self.claim:
            n = int(np.prod(self.shape))
            claimed = (f"claiming left {self.claim['unclaimed_after'] / n:.1%} unclaimed (was "
                       f"{self.claim['unclaimed_before'] / n:.1%}; {self.claim['segments']} new segments), ")
        return (f"{self.blocks} blocks ({self.filled} filled now), {self.objects} objects, {self.joined} joined "
                f"across block faces, {claimed}" + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))


def blockwise_fill(
    source: VolumeSource,
    model: Any,
    cfg: Config,
    output: str | os.PathLike,
    *,
    block_shape: Sequence[int] | None = None,
    margin_moves: int | None = None,
    agreement_fraction: float | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    keep_blocks: bool = False,
    torch_threads: int | None = None,
    seed_margin: int | Sequence[int] | str | None = None,
    comments: Sequence[str] = (),
    **fill_options: Any,
) -> BlockwiseResult:
    """Densely segment a volume block by block, as Dask tasks, into one zarr v3 array.

    Parameters
    ----------
    source : VolumeSource
        The volume's dataset TOMLs and name (tasks reopen it; it is never pickled).
    model : str or callable
        A model file path (each task loads it), or a picklable ``predict(images,
        masks) -> probabilities`` (tests, benchmarks).
    cfg : Config
        The effective fill config (the model's ``[model]``/``[network]``).
    output : path-like
        Output name without extension: ``<output>.zarr``, ``<output>.toml`` and,
        while running, ``<output>.blockwise/``.
    block_shape : 3 ints, optional
        Write box of a block (default ``[blockwise] block_shape``); clipped to the
        volume. At least the input FOV plus the margin, and two margins, on every
        axis the volume is larger than it.
    margin_moves : int, optional
        Context margin beyond half the FOV, in move steps (default ``[blockwise] margin_moves``).
    agreement_fraction : float in (0, 1], optional
        Reconciliation rule (see :func:`match_overlap`; default ``[blockwise] agreement_fraction``).
    client : distributed.Client, optional
        Where the tasks run (see :func:`dask_client`); None runs them here.
    overwrite : bool
        Replace an existing output; otherwise an output of this same run is
        resumed and any other is refused.
    progress : bool
        tqdm bars (blocks done / total, ETA).
    keep_blocks : bool
        Keep ``<output>.blockwise/`` (the per-block fills) after success.
    torch_threads : int, optional
        ``torch.set_num_threads`` in each task.
    seed_margin : int, 3 ints or "read box", optional
        A block's seeds: those of its write box grown by this many voxels (at most the
        margin), or of its whole read box (``"read box"``, the rule before manifest
        format 2, which fills the objects that lie wholly in a margin in both blocks).
        Default ``[blockwise] seed_margin`` (0: the write box).
    comments : sequence of str
        Comment lines at the top of the TOML.
    **fill_options
        Options of :func:`~diluvian.fill.fill_volume_with_model` (``move_batch_size``,
        ``max_moves``, ``remask_interval``, ``bias``, ``seed_generator``,
        ``ordered_seeds``, ``ignore_mask``, ``reject_early_termination``).

    Returns
    -------
    BlockwiseResult

    Raises
    ------
    DatasetNotFoundError
        A dataset TOML, the volume or the model file does not exist.
    DataError
        A block smaller than the FOV plus the margin; an existing output of
        another shape or dtype, or of another volume, model or config (without
        ``overwrite``).
    ConfigError
        Bad options.
    """
    t_start = time.perf_counter()
    block_shape = cfg.blockwise.block_shape if block_shape is None else block_shape
    margin_moves = cfg.blockwise.margin_moves if margin_moves is None else margin_moves
    agreement_fraction = cfg.blockwise.agreement_fraction if agreement_fraction is None else agreement_fraction
    if not 0.0 < float(agreement_fraction) <= 1.0:
        raise ConfigError(f"agreement_fraction: expected a fraction in (0, 1], got {agreement_fraction}")
    if int(margin_moves) < 0:
        raise ConfigError(f"margin_moves: expected an int >= 0, got {margin_moves}")
    for bad in ("background_label_id", "resume_state", "resume_labels", "checkpoint", "max_bodies", "bounds",
                "output", "seeds"):
        if fill_options.get(bad) not in (None, 0):
            raise ConfigError(f"blockwise fill: option {bad!r} is not supported (blocks resume by themselves)")
        fill_options.pop(bad, None)
    volume = source.open(cfg)
    shape = tuple(int(s) for s in volume.shape)
    resolution = [float(r) for r in volume.resolution]
    bs = np.asarray(block_shape, dtype=np.int64).reshape(-1)
    if bs.shape != (3,) or (bs < 1).any():
        raise ConfigError(f"block shape: expected 3 positive ints (Z, Y, X), got {fmt_list(block_shape)}")
    margin = block_margin(cfg, margin_moves)
    smallest = min_block_shape(cfg, margin)
    seed_margin = cfg.blockwise.seed_margin if seed_margin is None else seed_margin
    if isinstance(seed_margin, str) and seed_margin == READ_BOX:
        seed_margin = None
    else:
        sm = np.asarray(seed_margin)
        if sm.ndim > 1 or sm.size not in (1, 3) or not np.issubdtype(sm.dtype, np.integer) or (sm < 0).any():
            raise ConfigError(f"seed_margin: expected an int >= 0 or 3 of them (voxels), or {READ_BOX!r}, "
                              f"got {seed_margin!r}")
        seed_margin = tuple(int(v) for v in np.minimum(np.broadcast_to(sm.reshape(-1), (3,)), margin))
    fov = np.asarray(cfg.model.input_fov_shape)
    if (np.asarray(shape) < fov).any():
        raise DataError(f"volume {source.name!r}: the model's input FOV {fov.tolist()} is larger than the volume "
                        f"{list(shape)}")
    bs = np.minimum(bs, shape)
    too_small = (bs < smallest) & (bs < np.asarray(shape))
    if too_small.any():
        raise DataError(f"block shape {bs.tolist()} is smaller than the FOV {fov.tolist()} plus the margin "
                        f"{margin.tolist()} (half the FOV + {margin_moves} moves): expected at least "
                        f"{np.where(too_small, smallest, bs).tolist()}")
    blocks = plan_blocks(shape, bs, margin, smallest)
    chunks = chunk_shape_for(bs)
    options = {k: v for k, v in fill_options.items() if v is not None}
    manifest = _manifest(source, shape, resolution, model, cfg, options, bs, margin, agreement_fraction,
                         len(blocks), seed_margin)
    out = Path(output)
    store = out.with_name(out.name + ".zarr")
    toml = out.with_name(out.name + ".toml")
    work_dir = out.with_name(out.name + ".blockwise")
    group = _open_output(store, shape, chunks, resolution, f"{source.name} segmentation", manifest, overwrite,
                         work_dir, toml)
    state = group.attrs[MANIFEST_ATTR]
    seconds: dict[str, float] = {}
    if state.get("complete"):
        log.info("%s: already complete", store)
        if not toml.exists():
            _write_toml(toml, store, f"{source.name} segmentation", resolution, comments)
        return BlockwiseResult(store, toml, shape, len(blocks), 0, int(state.get("objects", 0)),
                               int(state.get("joined", 0)), seconds, [])
    for sub in ("blocks", "patches", "relabelled", "claims", "claimed"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
    job = _Job(source, str(model) if isinstance(model, os.PathLike) else model, cfg, options, str(work_dir),
               str(store), torch_threads, seed_margin)
    if client is not None and isinstance(job.model, str):
        log.info("workers load the model %s", job.model)

    # 1. fill
    t0 = time.perf_counter()
    todo = [b for b in blocks if not _block_file(work_dir, b.index).exists()]
    log.info("%s: %d blocks of %s (+ margin %s), %d to fill, output chunks %s", source.name, len(blocks),
             bs.tolist(), margin.tolist(), len(todo), list(chunks))
    stats = [s for s in _run(client, _fill_task, [(job, b) for b in todo], "blocks filled", progress)
             if not s.get("skipped")]
    seconds["fill"] = time.perf_counter() - t0

    # 2. reconcile
    t0 = time.perf_counter()
    neighbours, faces = _neighbour_pairs(blocks), _face_neighbours(blocks)
    found = _run(client, _reconcile_task, [(job, b, [blocks[j] for j in neighbours[b.index]],
                                            [blocks[j] for j in faces[b.index]], float(agreement_fraction))
                                           for b in blocks], "blocks reconciled", progress, ordered=True)
    matches, core_ids = [f[0] for f in found], [f[1] for f in found]
    raw, final = final_ids(core_ids, matches)
    joined = int(len(raw) - (int(final.max()) if len(final) else 0))
    seconds["reconcile"] = time.perf_counter() - t0

    # 3. relabel
    t0 = time.perf_counter()
    calls = []
    for b, ids in zip(blocks, core_ids):
        if _relabel_marker(work_dir, b.index).exists():
            continue
        ids = np.asarray(ids, dtype=np.uint64)
        calls.append((job, b, ids, final[np.searchsorted(raw, ids)], chunks))
    _run(client, _relabel_task, calls, "blocks relabelled", progress)
    seconds["relabel"] = time.perf_counter() - t0
    objects = int(final.max()) if len(final) else 0

    # 4. claim (as the single-process fill does after its fill)
    claim: dict[str, int] = {}
    if cfg.postprocessing.claim:
        t0 = time.perf_counter()
        objects, claim = _claim_phase(client, job, blocks, neighbours, float(agreement_fraction), objects, chunks,
                                      progress)
        seconds["claim"] = time.perf_counter() - t0

    group.attrs[MANIFEST_ATTR] = {"manifest": manifest, "complete": True, "objects": objects, "joined": joined}
    _write_toml(toml, store, f"{source.name} segmentation", resolution,
                list(comments) + [f"Blockwise fill: {len(blocks)} blocks of {bs.tolist()}, margin {margin.tolist()}, "
                                  f"{objects} objects"])
    if not keep_blocks:
        shutil.rmtree(work_dir, ignore_errors=True)
    seconds["total"] = time.perf_counter() - t_start
    result = BlockwiseResult(store, toml, shape, len(blocks), len(todo), objects, joined, seconds, stats, claim)
    log.info("%s: %s", source.name, result.summary())
    return result


def _claim_phase(client: Any, job: _Job, blocks: Sequence[Block], neighbours: dict[int, list[int]],
                 fraction: float, objects: int, chunks: Sequence[int], progress: bool) -> tuple[int, dict]:
    """Claim the relabelled output block by block: ``(objects in the output, claim stats)``.

    Each block claims its read box (:func:`_claim_task`); the new segments are matched in
    the overlaps (:func:`_claim_match_task`, :func:`claim_ids`) and written into the write
    boxes (:func:`_claim_write_task`). Resumable: claim files and ``claimed`` markers.
    """
    counts = [s for s in _run(client, _claim_task, [(job, b) for b in blocks], "blocks claimed", progress)
              if not s.get("skipped")]
    found = _run(client, _claim_match_task, [(job, b, [blocks[j] for j in neighbours[b.index]], fraction)
                                             for b in blocks], "claims matched", progress, ordered=True)
    keys, values = claim_ids(objects, [f[1] for f in found], [f[0] for f in found])
    _run(client, _claim_write_task, [(job, b, keys, values, chunks) for b in blocks
                                     if not _claim_marker(job.work_dir, b.index).exists()], "claims written", progress)
    total = int(max(objects, int(values.max()) if len(values) else 0))
    return total, {"unclaimed_before": sum(c["before"] for c in counts),
                   "unclaimed_after": sum(c["after"] for c in counts), "segments": total - objects}


def fill_volumes_blockwise(
    dataset_files: Sequence[str | os.PathLike],
    model_file: str | os.PathLike,
    cfg: Config,
    output_pattern: str,
    *,
    partition: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    block_shape: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **fill_options: Any,
) -> dict[str, BlockwiseResult]:
    """Blockwise fill of every volume of the dataset TOMLs (what ``fill --blockwise`` does).

    Parameters
    ----------
    dataset_files : sequence of path-like
        Dataset TOMLs; workers reopen the volumes from them.
    model_file : path-like
        Model file; each task loads it.
    cfg : Config
        Effective fill config (see :func:`~diluvian.fill.run.load_fill_model`).
    output_pattern : str
        Output name without extension, ``{volume}`` replaced by the volume name
        (required with more than one volume): ``<name>.zarr`` and ``<name>.toml``.
    partition : bool
        Only the validation partitions.
    scheduler : str, optional
        Address of a running Dask scheduler; default a ``LocalCluster``.
    workers : int, optional
        Local cluster workers (default: the CPU cores; 0: serial, in this process).
    block_shape : 3 ints, optional
        Default ``[blockwise] block_shape``.
    overwrite : bool
        Replace existing outputs instead of resuming them.
    **fill_options
        See :func:`blockwise_fill`.

    Raises
    ------
    ConfigError, DataError, DatasetNotFoundError
        See :func:`blockwise_fill` and :func:`dask_client`.
    """
    from ..volumes import load_volumes
    from .run import _output_name, prepare_volumes

    if not dataset_files:
        raise ConfigError("no volumes: give one or more dataset TOML files with -v/--volume-file")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers: expected an int >= 0, got {workers}")
    if not Path(model_file).is_file():
        raise DatasetNotFoundError(f"{model_file}: no such model file")
    files = tuple(str(p) for p in dataset_files)
    names = list(prepare_volumes(load_volumes([Path(p) for p in files], in_memory=False), cfg, partition))
    if not names:
        raise ConfigError("no volumes to fill")
    outputs = {n: _output_name(output_pattern, n, len(names), "output name") for n in names}
    for out in outputs.values():
        check_writable_dir(out + ".toml")
    threads = None
    if scheduler is None and workers != 0:
        n = workers or os.cpu_count() or 1
        threads = max(1, (os.cpu_count() or 1) // n)
    results = {}
    with dask_client(scheduler, workers) as client:
        for name in names:
            results[name] = blockwise_fill(
                VolumeSource(files, name, partition), str(model_file), cfg, outputs[name], block_shape=block_shape,
                client=client, overwrite=overwrite, progress=progress, torch_threads=threads,
                comments=[f"Filling model: {model_file}"], **fill_options)
    return results
