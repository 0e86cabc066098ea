"""Blockwise fill on Dask against the single-process fill: quality, scale, and a teravoxel on paper.

A rule stands in for the network (the predictor of ``tests/test_blockwise.py``:
probability 0.95 on the voxels of the seed's intensity, 0.05 elsewhere) on
:func:`diluvian.synthetic.labelled_intensity_volume` volumes (neurite-like
objects, each with its own intensity), so fills move and stop as a good model's
would; ``--model FILE`` uses a trained model instead (on a
:func:`~diluvian.synthetic.write_synthetic_hdf5` volume).

1. Quality (``--quality-shape``): the same volume filled once whole and once
   blockwise (serial); VOI split/merge of both against the ground truth, their
   difference (goal <= 0.05 bits), and the ground-truth objects that cross a block
   face and are in more pieces in the blockwise fill than in the single one.
2. Scale (``--scale-shape``): a larger volume on a ``LocalCluster`` of
   ``--workers`` workers, its wall time, peak RSS per worker beside the volume
   and block sizes, where a block task's time goes, and the throughput per worker
   against the single-process fill of a smaller volume in the same run (goal >= 0.8).
3. One teravoxel on paper from the measured FOVs per voxel and storage per voxel.

The single-process reference (``--reference-shape``, default one block's shape) is
a box cut from the middle of the scale volume itself, filled in this process with
as many torch threads as one worker gets, before the cluster starts. Until
2026-12-02 it was a separate volume of one block's shape filled with this
process's default threads, at whatever load the machine had then, while the
cluster ran later: a comparison of two runs at different loads and thread counts
on different data. It is still a smaller volume than the scale run's, so it runs
faster per FOV than a single fill of the whole would (the fill's per-FOV cost grows
with the regions), which makes the ratio conservative; the FOVs per voxel of the
two are printed beside it. Rates are given per wall second and per CPU second
(of the worker processes, and of this process for the reference), which other
jobs on the machine do not change.

``--concurrent-reference`` also fills the reference box in ``--workers`` processes
at once, so that the cost of sharing the machine's cores, memory and caches (which
the workers pay too) is measured apart from the blockwise fill's own; ``--reuse-data``
keeps a scale volume already written in ``--workdir``; ``--skip-cluster`` stops after
the reference fills.

    python benchmarks/blockwise.py                       # defaults: about 5 minutes on 2 idle cores
    python benchmarks/blockwise.py --skip-quality --scale-shape 512 512 512 --block 128 128 128   # the 512^3 run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from diluvian.claim import claim_result  # noqa: E402
from diluvian.evaluate import evaluate_volumes  # noqa: E402
from diluvian.fill import fill_volume_with_model  # noqa: E402
from diluvian.fill.blockwise import READ_BOX, VolumeSource, blockwise_fill, dask_client  # noqa: E402
from diluvian.volumes import load_volumes  # noqa: E402
from test_blockwise import make_oracle, oracle_cfg, read_output, write_dataset  # noqa: E402

GPU_FOV_PER_S = 2800.0  # the FFN-sized network (-c gpu) in bf16 on one H100 (issue "fill engine")
STEPS = ("setup", "open", "model", "read", "seeds", "fill", "save")


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def dataset(directory: Path, shape, seed: int, reuse: bool = False) -> tuple[Path, np.ndarray | None]:
    """The benchmark's volume in ``directory``; with ``reuse``, one written there before with this shape is kept."""
    directory.mkdir(parents=True, exist_ok=True)
    if reuse and (directory / "v.toml").exists():
        import h5py

        with h5py.File(directory / "v.h5", "r") as f:
            if f["raw"].shape == tuple(shape):
                return directory / "v.toml", None
    return write_dataset(directory, shape=tuple(shape), seed=seed)


def reference_fill(toml: str, cfg, model, start, shape, threads: int) -> tuple[float, float, int]:
    """The single-process fill of a box of the scale volume: (wall s, CPU s, FOVs). Runs in a child process too."""
    import torch

    from diluvian.fill.run import load_fill_model

    torch.set_num_threads(threads)
    predictor = make_oracle(cfg.model) if model is None else load_fill_model(model, cfg)[0]
    vol = load_volumes([toml], in_memory=False)["v"]
    start = np.asarray(start)
    t0, c0 = time.perf_counter(), time.process_time()
    r = fill_volume_with_model(vol, predictor, cfg, bounds=(start, start + np.asarray(shape)), progress=False)
    return time.perf_counter() - t0, time.process_time() - c0, int(r.stats.moves)


def pieces(seg: np.ndarray, lab: np.ndarray, obj: int) -> int:
    """Labels of ``seg`` on ground-truth object ``obj`` that hold at least 5 % of it (unclaimed voxels left out)."""
    ids, counts = np.unique(seg[(lab == obj) & (seg > 0)], return_counts=True)
    return int((counts >= 0.05 * (lab == obj).sum()).sum())


def face_cut_fractions(seg: np.ndarray, lab: np.ndarray, block) -> dict:
    """Per ground-truth object: the fraction of its voxel pairs across a block face that ``seg`` labels apart.

    A pair is two face-adjacent voxels, one on each side of a face (at the
    multiples of ``block``), both in the object and both claimed by ``seg``; it is
    cut when their two labels differ. Objects with no such pair are left out.
    """
    total: dict = {}
    cut: dict = {}
    for axis in range(3):
        for face in range(block[axis], lab.shape[axis], block[axis]):
            la, lb = np.take(lab, face - 1, axis=axis), np.take(lab, face, axis=axis)
            sa, sb = np.take(seg, face - 1, axis=axis), np.take(seg, face, axis=axis)
            keep = (la == lb) & (la != 0) & (sa != 0) & (sb != 0)
            ids, inverse = np.unique(la[keep], return_inverse=True)
            n = np.bincount(inverse, minlength=len(ids))
            c = np.bincount(inverse, weights=(sa != sb)[keep], minlength=len(ids))
            for o, nn, cc in zip(ids.tolist(), n.tolist(), c.tolist()):
                total[o] = total.get(o, 0) + nn
                cut[o] = cut.get(o, 0) + cc
    return {o: cut[o] / total[o] for o in total}


def cut_at_faces(seg: np.ndarray, single: np.ndarray, lab: np.ndarray, block, fraction: float = 0.05) -> list:
    """Ground-truth objects that ``seg`` cuts at a block face and ``single`` does not.

    Cut: at least ``fraction`` of the object's across-face voxel pairs get two
    labels (:func:`face_cut_fractions`).
    """
    mine, theirs = face_cut_fractions(seg, lab, block), face_cut_fractions(single, lab, block)
    return sorted(o for o, f in mine.items() if f >= fraction and theirs.get(o, 0.0) < fraction)


def crossing_objects(lab: np.ndarray, block) -> set:
    out = set()
    for axis in range(3):
        for face in range(block[axis], lab.shape[axis], block[axis]):
            sl = [slice(None)] * 3
            sl[axis] = slice(face - 1, face + 1)
            out |= set(np.unique(lab[tuple(sl)]).tolist())
    out.discard(0)
    return out


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _package_file() -> str:
    import diluvian

    return str(Path(diluvian.__file__).parent)


def seed_margin_arg(text: str):
    return READ_BOX if text in ("read-box", READ_BOX) else int(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quality-shape", type=int, nargs=3, default=(64, 128, 128))
    p.add_argument("--quality-seed", type=int, default=1, help="random seed of the quality volume")
    p.add_argument("--scale-shape", type=int, nargs=3, default=(64, 192, 192))
    p.add_argument("--block", type=int, nargs=3, default=(64, 64, 64), help="write box of a block")
    p.add_argument("--reference-shape", type=int, nargs=3, default=None,
                   help="box of the scale volume that the single process fills (default: one block's shape)")
    p.add_argument("--seed-margin", type=seed_margin_arg, default=None,
                   help="voxels around the write box that a block takes seeds from, or read-box "
                        "(default: [blockwise] seed_margin)")
    p.add_argument("--margin-moves", type=int, default=None,
                   help="margin beyond half the FOV, in moves (default: [blockwise] margin_moves)")
    p.add_argument("--fov", type=int, default=9,
                   help="the rule's FOV (input = output, cubic; move step (FOV - 1) / 2): 9, or 17 for step 8")
    p.add_argument("--guard-interval", type=int, default=None,
                   help="[postprocessing] guard_interval (0: no flood guards; default: the config's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default=None, help="a model file instead of the rule")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument("--reuse-data", action="store_true", help="keep a scale volume of this shape already in --workdir")
    p.add_argument("--concurrent-reference", action="store_true",
                   help="also fill the reference box in --workers processes at once (the cores shared as the "
                        "workers share them), to separate the machine's sharing from the blockwise fill's own cost")
    p.add_argument("--skip-cluster", action="store_true", help="scale part: the reference fills only")
    args = p.parse_args(argv)
    cfg = oracle_cfg()
    if args.fov != 9:
        import dataclasses

        fov = (int(args.fov),) * 3
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input_fov_shape=fov, output_fov_shape=fov))
    if args.guard_interval is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, postprocessing=dataclasses.replace(cfg.postprocessing,
                                                                          guard_interval=args.guard_interval))
    model = predictor = make_oracle(cfg.model)
    if args.model:
        from diluvian.config import load_config
        from diluvian.fill.run import load_fill_model

        predictor, cfg = load_fill_model(args.model, load_config([]))
        model = args.model  # blockwise tasks load the file
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_blockwise_"))
    block = tuple(args.block)
    seed_margin = cfg.blockwise.seed_margin if args.seed_margin is None else args.seed_margin
    print(f"code: {_package_file()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load()}")
    print(f"fill: FOV {list(cfg.model.input_fov_shape)}, move step {list(cfg.model.move_step)}, "
          f"predictor {'rule' if not args.model else args.model}; blocks {list(block)}, seed margin {seed_margin}, margin moves "
          f"{cfg.blockwise.margin_moves if args.margin_moves is None else args.margin_moves}, flood guards every "
          f"{cfg.postprocessing.guard_interval} moves (0: off), claiming {'on' if cfg.postprocessing.claim else 'off'}")

    # 1. quality
    if not args.skip_quality:
        qdir = work / "quality"
        toml, lab = dataset(qdir, args.quality_shape, seed=args.quality_seed)
        vol = load_volumes([toml])["v"]
        t0 = time.perf_counter()
        # claimed as `diluvian fill` does (and the blockwise fill, when [postprocessing] claim is on)
        single = np.asarray(claim_result(vol, fill_volume_with_model(vol, predictor, cfg, progress=False), cfg).labels)
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = blockwise_fill(VolumeSource((str(toml),), "v"), model, cfg, qdir / "seg", block_shape=block,
                           overwrite=True, progress=False, seed_margin=seed_margin, margin_moves=args.margin_moves)
        t_block = time.perf_counter() - t0
        seg = read_output(qdir / "seg")
        res = tuple(vol.resolution)
        s1 = evaluate_volumes(lab, single, resolution=res, border_threshold_nm=0)
        s2 = evaluate_volumes(lab, seg, resolution=res, border_threshold_nm=0)
        crossing = crossing_objects(lab, block)
        cut = [o for o in crossing if pieces(seg, lab, o) > pieces(single, lab, o)]
        face_cut = cut_at_faces(seg, single, lab, block)
        print(f"\n## quality: {list(args.quality_shape)} voxels, {r.blocks} blocks (serial); {load()}")
        print(f"single fill: {t_single:.1f} s, VOI split {s1.voi_split:.3f}, merge {s1.voi_merge:.3f}, "
              f"{len(np.unique(single)) - 1} objects, {(single == 0).mean():.2%} unclaimed")
        print(f"blockwise:   {t_block:.1f} s, VOI split {s2.voi_split:.3f}, merge {s2.voi_merge:.3f}, {r.objects} objects, "
              f"{(seg == 0).mean():.2%} unclaimed, {r.joined} block-range ids joined")
        print(f"difference: VOI split {s2.voi_split - s1.voi_split:+.3f}, merge {s2.voi_merge - s1.voi_merge:+.3f} bits")
        print(f"ground-truth objects crossing a block face: {len(crossing)}; in more pieces than in the single fill: "
              f"{len(cut)}; cut at a block face where the single fill is not (>= 5 % of the pairs across the "
              f"faces labelled apart): {len(face_cut)}")
        print(f"voxels claimed by one fill and not the other: {((seg > 0) != (single > 0)).mean():.2%}")
        del vol, lab, single, seg
    if args.skip_scale:
        return 0

    # 2. scale
    sdir = work / "scale"
    t0 = time.perf_counter()
    toml, _ = dataset(sdir, args.scale_shape, seed=2, reuse=args.reuse_data)
    del _
    t_data = time.perf_counter() - t0
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    ref_shape = np.minimum(args.reference_shape or block, args.scale_shape)
    ref_start = (np.asarray(args.scale_shape) - ref_shape) // 2
    print(f"\n## scale: data written in {t_data:.0f} s; {load()}", flush=True)
    import torch

    before = torch.get_num_threads()
    t_one, cpu_one, ref_fovs = reference_fill(str(toml), cfg, args.model, ref_start, ref_shape, threads)
    torch.set_num_threads(before)
    ref_voxels = int(np.prod(ref_shape))
    rate_one = ref_voxels / t_one
    print(f"single process, box {ref_start.tolist()}+{ref_shape.tolist()} of the scale volume, {threads} torch "
          f"thread(s): {t_one:.1f} s ({cpu_one:.1f} CPU s) = {rate_one / 1e3:.1f} kvoxel/s, "
          f"{ref_voxels / cpu_one / 1e3:.1f} kvoxel per CPU s; {ref_fovs} FOVs = "
          f"{ref_fovs / ref_voxels:.4f} per voxel, {ref_fovs / t_one:.0f} FOV/s; {load()}", flush=True)
    rate_shared = None
    if args.concurrent_reference:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(reference_fill, str(toml), cfg, args.model, ref_start, ref_shape, threads)
                       for _ in range(args.workers)]
            runs = [f.result() for f in futures]
        rate_shared = float(np.mean([ref_voxels / t for t, _, _ in runs]))
        print(f"the same box in {args.workers} processes at once: " + "; ".join(
            f"{t:.1f} s ({c:.1f} CPU s, {f / t:.0f} FOV/s)" for t, c, f in runs)
            + f"; {rate_shared / 1e3:.1f} kvoxel/s per process = {rate_shared / rate_one:.2f} of the fill alone; "
            f"{load()}", flush=True)
    if args.skip_cluster:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    t0 = time.perf_counter()
    with dask_client(workers=args.workers) as client:
        t_up = time.perf_counter() - t0
        where = set(client.run(_package_file).values())
        print(f"cluster up in {t_up:.1f} s, workers import {', '.join(sorted(where))}; {load()}", flush=True)
        t0 = time.perf_counter()
        r = blockwise_fill(VolumeSource((str(toml),), "v"), model, cfg, sdir / "seg", block_shape=block,
                           overwrite=True, progress=sys.stderr.isatty(), keep_blocks=True,
                           torch_threads=threads, client=client, seed_margin=seed_margin,
                           margin_moves=args.margin_moves)
        t_run = time.perf_counter() - t0
    voxels = int(np.prod(args.scale_shape))
    rss: dict[int, int] = {}
    for s in r.block_stats:
        rss[s["pid"]] = max(rss.get(s["pid"], 0), s["peak_rss"])
    fovs = sum(s["fovs"] for s in r.block_stats)
    read_voxels = sum(s["voxels"] for s in r.block_stats)
    busy = sum(s["seconds"] for s in r.block_stats)
    cpu = sum(s["cpu"] for s in r.block_stats)
    rate_cluster = voxels / r.seconds["total"]
    out_bytes = store_bytes(sdir / "seg.zarr")
    block_bytes = store_bytes(sdir / "seg.blockwise")
    image_mb = voxels * 4 / 2**20  # float32 image
    print(f"scale: {list(args.scale_shape)} = {voxels / 1e6:.1f} Mvoxels ({image_mb:.0f} MiB float32 image, "
          f"{voxels * 8 / 2**20:.0f} MiB uint64 labels), {r.blocks} blocks on a {args.workers}-worker LocalCluster; "
          f"{load()}")
    print(f"cluster start {t_up:.1f} s; fill {r.seconds['fill']:.1f} s, reconcile {r.seconds['reconcile']:.1f} s, "
          f"relabel {r.seconds['relabel']:.1f} s, total {r.seconds['total']:.1f} s; {r.objects} objects")
    print(f"peak RSS per worker: {', '.join(f'{v / 2**20:.0f} MiB' for v in rss.values())} "
          f"(a block's read box: {max(s['voxels'] for s in r.block_stats) / 1e6:.2f} Mvoxels)")
    steps = {k: sum(s["times"].get(k, 0.0) for s in r.block_stats) for k in STEPS}
    print(f"block tasks: {busy:.1f} s busy in all ({busy / (args.workers * r.seconds['fill']):.0%} of the workers' "
          f"fill phase), {cpu:.1f} CPU s; " + ", ".join(f"{k} {v / busy:.1%}" for k, v in steps.items()))
    print(f"read voxels / volume voxels (margin overhead): {read_voxels / voxels:.2f}")
    print(f"cluster: {rate_cluster / 1e3:.1f} kvoxel/s total, {rate_cluster / args.workers / 1e3:.1f} kvoxel/s per "
          f"worker = {rate_cluster / args.workers / rate_one:.2f} of the single-process rate; per CPU s of the block "
          f"tasks {voxels / cpu / 1e3:.1f} kvoxel = {voxels / cpu / (ref_voxels / cpu_one):.2f} of the single "
          f"process's; {fovs / busy:.0f} FOV/s per busy worker")
    if rate_shared:
        print(f"per worker against the reference filled in {args.workers} processes at once: "
              f"{rate_cluster / args.workers / rate_shared:.2f}")
    print(f"FOVs per output voxel: {fovs / voxels:.4f} (single process {ref_fovs / ref_voxels:.4f}); storage: output "
          f"{out_bytes / voxels:.3f} B/voxel, block files while running {block_bytes / voxels:.3f} B/voxel")

    # 3. a teravoxel on paper
    tv = 1e12
    n_blocks = tv / np.prod(block)
    gpu_hours = tv * fovs / voxels / GPU_FOV_PER_S / 3600
    cpu_hours = tv / (rate_cluster / args.workers) / 3600
    print(f"\n## one teravoxel on paper (from these rates)")
    print(f"blocks of {list(block)}: {n_blocks:,.0f}; FOVs: {tv * fovs / voxels:.3g}")
    print(f"GPU-hours at {GPU_FOV_PER_S:.0f} FOV/s (FFN network, bf16, H100): {gpu_hours:,.0f}")
    print(f"CPU worker-hours at this run's per-worker rate (rule predictor, no network): {cpu_hours:,.0f}")
    print(f"storage: output {tv * out_bytes / voxels / 1e12:.2f} TB, block files {tv * block_bytes / voxels / 1e12:.2f} TB "
          "(removed at the end)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
