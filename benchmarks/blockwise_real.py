"""A real-data box, filled blockwise on Dask and in one process with the same model: the VOI difference.

The quality goal of the blockwise fill (issue 14) is that a block-by-block fill
of a volume scores within 0.05 bits of VOI split and merge of the same model's
single-process fill. ``benchmarks/blockwise.py`` measures it on synthetic data
with a rule in place of the network; this script measures it on FIB-25 with a
trained model, through the CLI a user runs:

1. cut a box out of ``fib25_train.h5`` (default z 80-159, y and x 29-220 at
   10 nm: 40 x 96 x 96 at the 20 nm of ``cpu_real``) into a scratch HDF5 file
   (outside the repo);
2. ``diluvian fill`` it in one process and ``diluvian fill --blockwise`` it on a
   local cluster, each under ``/usr/bin/time -v`` (wall time, peak RSS);
3. ``diluvian evaluate`` both against the ground truth (CREMI protocol) and
   print VOI split/merge, ARAND, CREMI, segments and unclaimed voxels of each
   and the blockwise-minus-single differences.

    python benchmarks/blockwise_real.py -m bench_output/real/fib25/model.pt
        [--config cpu_small cpu_real] [--max-moves 300] [--moves-per-step 8]
        [--workers 2] [--block-shape 40 48 48] [--out bench_output/blockwise_real]

Data come from ``$DILUVIAN_DATA_DIR`` (default ``../shared/data``); the results
also go to ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from blockwise import crossing_objects, cut_at_faces, face_cut_fractions, pieces  # noqa: E402  (the synthetic benchmark's face-cut count)
from real_data import data_dir, run  # noqa: E402


def timed(cmd: list[str], log_file: Path) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v`` (when present); return its wall seconds and peak RSS (MiB)."""
    time_v = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    wall = run(time_v + cmd, log_file)
    rss = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", log_file.read_text())
    return {"wall_s": wall, "peak_rss_mib": int(rss[-1]) / 1024 if rss else None}


def cut_box(src: Path, dst: Path, start, stop) -> None:
    """Write the box ``[start, stop)`` of ``src`` (image and labels) to ``dst``, atomically."""
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    tmp = dst.with_suffix(".tmp.h5")
    with h5py.File(src, "r") as f, h5py.File(tmp, "w") as g:
        for key in ("volumes/raw", "volumes/labels/neuron_ids"):
            g.create_dataset(key, data=f[key][box], compression="gzip")
            g[key].attrs["resolution"] = f[key].attrs.get("resolution", [10, 10, 10])
    tmp.replace(dst)


def labels_of(seg_toml: Path) -> np.ndarray:
    """The whole label array of the one volume in a fill's output TOML."""
    from diluvian.volumes import load_volumes

    (volume,) = load_volumes([seg_toml]).values()
    shape = tuple(int(s) for s in volume.shape[-3:])
    return np.asarray(volume.get_labels((0, 0, 0), shape))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", type=Path, required=True)
    p.add_argument("--config", nargs="+", default=["cpu_small", "cpu_real"])
    p.add_argument("--box-start", type=int, nargs=3, default=(80, 29, 29), help="box start, 10 nm voxels (z y x)")
    p.add_argument("--box-stop", type=int, nargs=3, default=(160, 221, 221), help="box stop, exclusive")
    p.add_argument("--max-moves", type=int, default=300)
    p.add_argument("--moves-per-step", type=int, default=None, help="fill --moves-per-step (default: the config's)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--block-shape", type=int, nargs=3, default=(40, 48, 48), help="blockwise write box, fill voxels")
    p.add_argument("--out", type=Path, default=REPO / "bench_output" / "blockwise_real")
    args = p.parse_args(argv)

    src = data_dir() / "fib25_train.h5"
    if not src.exists():
        print(f"skipping: {src} not found")
        return 0
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    box_h5 = out / "box.h5"
    cut_box(src, box_h5, args.box_start, args.box_stop)
    toml = out / "box.toml"
    toml.write_text(f'[[dataset]]\nname = "box"\nhdf5_file = "{box_h5}"\nimage_dataset = "volumes/raw"\n'
                    'label_dataset = "volumes/labels/neuron_ids"\nresolution = [10, 10, 10]\n')

    diluvian = [sys.executable, "-m", "diluvian"]
    configs = [a for c in args.config for a in ("-c", c)]
    common = ["fill", "-m", str(args.model), *configs, "-v", str(toml), "--max-moves", str(args.max_moves),
              "-rs", str(args.seed)]
    if args.moves_per_step:
        common += ["--moves-per-step", str(args.moves_per_step)]
    runs = {
        "single": common + [str(out / "single")],
        "blockwise": common + ["--blockwise", "--workers", str(args.workers), "--block-shape",
                               *map(str, args.block_shape), "--overwrite", str(out / "blockwise")],
    }
    results: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
                     "args": {k: str(v) for k, v in vars(args).items()}, "fills": {}}
    seg = {}  # each fill's labels, for the face-cut count
    for name, cmd in runs.items():
        log = out / f"{name}.log"
        log.unlink(missing_ok=True)
        entry = timed(diluvian + cmd, log)
        seg_toml = out / f"{name}.toml"
        scores_json = out / f"{name}_scores.json"
        run(diluvian + ["evaluate", *configs, "-v", str(toml), "-v", str(seg_toml), "box", "box segmentation",
             "--json", str(scores_json)], log)
        scores = json.loads(scores_json.read_text())
        scores = scores.get("scores", scores)
        labels = seg[name] = labels_of(seg_toml)
        entry.update({k: scores.get(k) for k in ("voi_split", "voi_merge", "adapted_rand_error", "cremi_score")})
        entry["segments"] = int(len(np.unique(labels[labels != 0])))
        entry["unclaimed"] = float(np.mean(labels == 0))
        results["fills"][name] = entry
        (out / "results.json").write_text(json.dumps(results, indent=2))

    print("\n| fill | wall | peak RSS | VOI split | VOI merge | ARAND | CREMI | segments | unclaimed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, e in results["fills"].items():
        rss = f"{e['peak_rss_mib']:.0f} MiB" if e["peak_rss_mib"] else ""
        print(f"| {name} | {e['wall_s']:.0f} s | {rss} | {e['voi_split']:.3f} | {e['voi_merge']:.3f} | "
              f"{e['adapted_rand_error']:.3f} | {e['cremi_score']:.3f} | {e['segments']} | {e['unclaimed']:.1%} |")
    single, block = results["fills"]["single"], results["fills"]["blockwise"]
    # ground-truth objects that cross a block face and are in more pieces blockwise than in one process,
    # counted at the fills' resolution (the ground truth subsampled to it)
    with h5py.File(box_h5, "r") as f:
        gt = f["volumes/labels/neuron_ids"][:]
    step = [g // s for g, s in zip(gt.shape, seg["single"].shape)]
    gt = gt[tuple(slice(0, n * k, k) for n, k in zip(seg["single"].shape, step))]
    crossing = crossing_objects(gt, args.block_shape)
    cut = sorted(o for o in crossing if pieces(seg["blockwise"], gt, o) > pieces(seg["single"], gt, o))
    at_faces = cut_at_faces(seg["blockwise"], seg["single"], gt, args.block_shape)
    fractions = {name: face_cut_fractions(s, gt, args.block_shape) for name, s in seg.items()}
    results["face_cut_objects"] = {
        "crossing": len(crossing), "cut_more_blockwise": [int(o) for o in cut],
        "cut_at_faces_blockwise_not_single": [int(o) for o in at_faces],
        "face_pairs_cut": {name: {str(o): round(f, 4) for o, f in fr.items()} for name, fr in fractions.items()}}
    diff = {k: block[k] - single[k] for k in ("voi_split", "voi_merge")}
    results["blockwise_minus_single"] = diff
    (out / "results.json").write_text(json.dumps(results, indent=2))
    verdict = "met" if max(abs(v) for v in diff.values()) <= 0.05 else "missed"
    print(f"\nblockwise - single: VOI split {diff['voi_split']:+.3f}, merge {diff['voi_merge']:+.3f} bits "
          f"(goal: within 0.05 each: {verdict}); ground-truth objects crossing a block face: {len(crossing)}, "
          f"in more pieces blockwise than single: {len(cut)} {cut}; cut at a block face blockwise and not single "
          f"(>= 5 % of the object's voxel pairs across the faces labelled apart): {len(at_faces)} {at_faces}")
    for o in sorted(set(cut) | set(at_faces)):
        print(f"  GT {o}: pieces single {pieces(seg['single'], gt, o)}, blockwise {pieces(seg['blockwise'], gt, o)}; "
              f"pairs across faces cut: single {fractions['single'].get(o, 0):.1%}, "
              f"blockwise {fractions['blockwise'].get(o, 0):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
