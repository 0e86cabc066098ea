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
   and block sizes, and the throughput per worker against the single-process
   fill of a volume of one block's size in the same run (goal >= 0.8).
3. One teravoxel on paper from the measured FOVs per voxel and storage per voxel.

    python benchmarks/blockwise.py                       # defaults: about 5-10 minutes on 2 cores
    python benchmarks/blockwise.py --scale-shape 512 512 512 --block 128   # the 512^3 run
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

from diluvian.evaluate import evaluate_volumes  # noqa: E402
from diluvian.fill import fill_volume_with_model  # noqa: E402
from diluvian.fill.blockwise import VolumeSource, blockwise_fill, dask_client  # noqa: E402
from diluvian.volumes import load_volumes  # noqa: E402
from test_blockwise import make_oracle, oracle_cfg, read_output, write_dataset  # noqa: E402

GPU_FOV_PER_S = 2800.0  # the FFN-sized network (-c gpu) in bf16 on one H100 (issue "fill engine")


def dataset(directory: Path, shape, seed: int) -> tuple[Path, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    return write_dataset(directory, shape=tuple(shape), seed=seed)


def pieces(seg: np.ndarray, lab: np.ndarray, obj: int) -> int:
    """Labels of ``seg`` on ground-truth object ``obj`` that hold at least 5 % of it (unclaimed voxels left out)."""
    ids, counts = np.unique(seg[(lab == obj) & (seg > 0)], return_counts=True)
    return int((counts >= 0.05 * (lab == obj).sum()).sum())


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quality-shape", type=int, nargs=3, default=(64, 128, 128))
    p.add_argument("--scale-shape", type=int, nargs=3, default=(128, 256, 256))
    p.add_argument("--block", type=int, nargs=3, default=(64, 64, 64), help="write box of a block")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default=None, help="a model file instead of the rule")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    cfg = oracle_cfg()
    model = predictor = make_oracle(cfg.model)
    if args.model:
        from diluvian.config import load_config
        from diluvian.fill.run import load_fill_model

        predictor, cfg = load_fill_model(args.model, load_config([]))
        model = args.model  # blockwise tasks load the file
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_blockwise_"))
    block = tuple(args.block)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}")
    print(f"fill: FOV {list(cfg.model.input_fov_shape)}, move step {list(cfg.model.move_step)}, "
          f"predictor {'rule' if not args.model else args.model}; blocks {list(block)}")

    # 1. quality
    qdir = work / "quality"
    toml, lab = dataset(qdir, args.quality_shape, seed=1)
    vol = load_volumes([toml])["v"]
    t0 = time.perf_counter()
    single = np.asarray(fill_volume_with_model(vol, predictor, cfg, progress=False).labels)
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = blockwise_fill(VolumeSource((str(toml),), "v"), model, cfg, qdir / "seg", block_shape=block,
                       overwrite=True, progress=False)
    t_block = time.perf_counter() - t0
    seg = read_output(qdir / "seg")
    res = tuple(vol.resolution)
    s1 = evaluate_volumes(lab, single, resolution=res, border_threshold_nm=0)
    s2 = evaluate_volumes(lab, seg, resolution=res, border_threshold_nm=0)
    crossing = crossing_objects(lab, block)
    cut = [o for o in crossing if pieces(seg, lab, o) > pieces(single, lab, o)]
    print(f"\n## quality: {list(args.quality_shape)} voxels, {r.blocks} blocks (serial)")
    print(f"single fill: {t_single:.1f} s, VOI split {s1.voi_split:.3f}, merge {s1.voi_merge:.3f}, "
          f"{len(np.unique(single)) - 1} objects")
    print(f"blockwise:   {t_block:.1f} s, VOI split {s2.voi_split:.3f}, merge {s2.voi_merge:.3f}, {r.objects} objects, "
          f"{r.joined} block-range ids joined")
    print(f"difference: VOI split {s2.voi_split - s1.voi_split:+.3f}, merge {s2.voi_merge - s1.voi_merge:+.3f} bits")
    print(f"ground-truth objects crossing a block face: {len(crossing)}; in more pieces than in the single fill: "
          f"{len(cut)}")
    print(f"voxels claimed by one fill and not the other: {((seg > 0) != (single > 0)).mean():.2%}")
    if args.skip_scale:
        return 0

    # 2. scale
    sdir = work / "scale"
    toml, _ = dataset(sdir, args.scale_shape, seed=2)
    one = sdir / "one"
    toml_one, _ = dataset(one, block, seed=3)
    vol_one = load_volumes([toml_one])["v"]
    t0 = time.perf_counter()
    r1 = fill_volume_with_model(vol_one, predictor, cfg, progress=False)
    t_one = time.perf_counter() - t0
    rate_one = np.prod(block) / t_one
    t0 = time.perf_counter()
    with dask_client(workers=args.workers) as client:
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = blockwise_fill(VolumeSource((str(toml),), "v"), model, cfg, sdir / "seg", block_shape=block,
                           overwrite=True, progress=sys.stderr.isatty(), keep_blocks=True,
                           torch_threads=max(1, (os.cpu_count() or 1) // args.workers), client=client)
        t_run = time.perf_counter() - t0
    voxels = int(np.prod(args.scale_shape))
    rss: dict[int, int] = {}
    for s in r.block_stats:
        rss[s["pid"]] = max(rss.get(s["pid"], 0), s["peak_rss"])
    fovs = sum(s["fovs"] for s in r.block_stats)
    read_voxels = sum(s["voxels"] for s in r.block_stats)
    rate_cluster = voxels / r.seconds["total"]
    out_bytes = store_bytes(sdir / "seg.zarr")
    block_bytes = store_bytes(sdir / "seg.blockwise")
    image_mb = voxels * 4 / 2**20  # float32 image
    print(f"\n## scale: {list(args.scale_shape)} = {voxels / 1e6:.1f} Mvoxels ({image_mb:.0f} MiB float32 image, "
          f"{voxels * 8 / 2**20:.0f} MiB uint64 labels), {r.blocks} blocks on a {args.workers}-worker LocalCluster")
    print(f"cluster start {t_up:.1f} s; fill {r.seconds['fill']:.1f} s, reconcile {r.seconds['reconcile']:.1f} s, "
          f"relabel {r.seconds['relabel']:.1f} s, total {r.seconds['total']:.1f} s; {r.objects} objects")
    print(f"peak RSS per worker: {', '.join(f'{v / 2**20:.0f} MiB' for v in rss.values())} "
          f"(a block's read box: {max(s['voxels'] for s in r.block_stats) / 1e6:.2f} Mvoxels)")
    print(f"read voxels / volume voxels (margin overhead): {read_voxels / voxels:.2f}")
    print(f"single process, one block's size {list(block)}: {t_one:.1f} s = {rate_one / 1e3:.1f} kvoxel/s "
          f"({r1.stats.moves} FOVs)")
    print(f"cluster: {rate_cluster / 1e3:.1f} kvoxel/s total, {rate_cluster / args.workers / 1e3:.1f} kvoxel/s per "
          f"worker = {rate_cluster / args.workers / rate_one:.2f} of the single-process rate")
    print(f"FOVs per output voxel: {fovs / voxels:.4f}; storage: output {out_bytes / voxels:.3f} B/voxel, "
          f"block files while running {block_bytes / voxels:.3f} B/voxel")

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
