"""CREMI evaluation: speed against scikit-image, and bounded memory on a large HDF5 pair.

(a) **speed**: on an in-memory ``--size``³ pair (default 250³, uint64), wall time of
    ``diluvian.evaluate.evaluate_volumes`` (border mask off, to compare like with
    like) against scikit-image's ``variation_of_information`` +
    ``adapted_rand_error`` on the same arrays; best of ``--repeats``. Goal: ≥ 5×.
    The numbers are checked to agree: VOI exactly (to 1e-9), and the adapted Rand
    error through scikit-image's own convention (unordered pairs, i.e. ``N``
    subtracted from every sum of squares) computed from our table; the remaining
    difference between the two conventions is printed. Two pairs: *blobs* (smooth
    random objects and a perturbed copy with merges, splits, shifted boundaries
    and unclaimed regions) and *noise* (i.i.d. labels per voxel: every run is one
    voxel long, the worst case of our run-length encoding).
(b) **memory**: writes a ``--large-size``³ pair (default 512³, uint64, 1 GiB each,
    64³ chunks, uncompressed) to an HDF5 file in a temporary directory and runs
    ``diluvian evaluate GT PRED`` (CREMI border 25 nm at 4 nm/px) in a
    subprocess; reports its wall time and peak RSS
    (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, taken in a small launcher process:
    a child forked from this big process would inherit its RSS as a starting
    high-water mark). Goal: < 500 MB. Needs about
    2 GiB in the temp directory (``--tmpdir``); ``--skip-large`` skips it.

Run ``python benchmarks/evaluate.py -h`` for options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from diluvian.evaluate import ContingencyTable, evaluate_volumes  # noqa: E402
from diluvian.evaluate.scores import _rand_sums  # noqa: E402


def blob_labels(shape: tuple[int, int, int], z_offset: int, ids: np.ndarray, cell: int,
                phase: np.ndarray, amp: float) -> np.ndarray:
    """Labels of a smoothly warped grid of ``cell``-sized boxes, rows ``z_offset:z_offset+shape[0]``."""
    z, y, x = np.ogrid[z_offset:z_offset + shape[0], :shape[1], :shape[2]]
    k = 2 * np.pi / (3 * cell)
    g = ids.shape[0] - 1
    iz = ((z + amp * np.sin(k * y + phase[0]) * np.cos(k * x + phase[1])) // cell).astype(np.int32)
    iy = ((y + amp * np.sin(k * x + phase[2]) * np.cos(k * z + phase[3])) // cell).astype(np.int32)
    ix = ((x + amp * np.sin(k * z + phase[4]) * np.cos(k * y + phase[5])) // cell).astype(np.int32)
    return ids[np.clip(iz, 0, g), np.clip(iy, 0, g), np.clip(ix, 0, g)]


class BlobPair:
    """A GT of random blobs and a perturbed prediction, generated slab by slab (seeded)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.size = size
        self.cell = max(size // 16, 4)
        g = -(-size // self.cell) + 2
        self.gt_ids = (rng.permutation(g**3).reshape(g, g, g) + 1).astype(np.uint64)
        self.phase = rng.uniform(0, 2 * np.pi, 6)
        pred_ids = self.gt_ids.copy()
        flat = pred_ids.reshape(-1)
        merged = rng.random(flat.size) < 0.1  # 10% of the objects merge into a neighbour
        flat[merged] = np.roll(flat, 1)[merged]
        flat[rng.random(flat.size) < 0.03] = 0  # 3% unclaimed
        split = rng.random(flat.size) < 0.1  # 10% split in two along z
        self.pred_ids = pred_ids
        self.split_ids = np.unique(flat[split & (flat != 0)])
        self.pred_phase = self.phase + rng.normal(0, 0.15, 6)

    def slab(self, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (z1 - z0, self.size, self.size)
        gt = blob_labels(shape, z0, self.gt_ids, self.cell, self.phase, self.cell / 3)
        pred = blob_labels(shape, z0, self.pred_ids, self.cell, self.pred_phase, self.cell / 3)
        upper = np.arange(z0, z1) >= self.size // 2 + self.cell // 2  # not on a cell boundary
        if upper.any():
            sub = pred[upper]
            sub[np.isin(sub, self.split_ids)] += np.uint64(self.gt_ids.size)  # fresh ids, still small for skimage
            pred[upper] = sub
        return gt, pred


def skimage_scores(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    from skimage.metrics import adapted_rand_error, variation_of_information

    split, merge = variation_of_information(gt, pred, ignore_labels=[0])
    are = adapted_rand_error(gt, pred, ignore_labels=(0,))[0]
    return float(split), float(merge), float(are)


def best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def speed(name: str, gt: np.ndarray, pred: np.ndarray, repeats: int) -> dict:
    ours_t, ours = best_time(lambda: evaluate_volumes(gt, pred, border_threshold_nm=0, pred_zero="segment",
                                                      progress=False), repeats)
    sk_t, (sk_split, sk_merge, sk_are) = best_time(lambda: skimage_scores(gt, pred), repeats)
    # scikit-image's adapted Rand error from our table, in its convention (pairs without self-pairs)
    table = ContingencyTable()
    table.add(gt, pred)
    n2, a2, b2 = _rand_sums(table, "segment")
    n = table.n_voxels
    are_sk_convention = 1 - (n2 - n) / (0.5 * (a2 - n) + 0.5 * (b2 - n))
    agree = (abs(ours.voi_split - sk_split) < 1e-9 and abs(ours.voi_merge - sk_merge) < 1e-9
             and abs(are_sk_convention - sk_are) < 1e-9)
    return dict(name=name, ours_s=ours_t, skimage_s=sk_t, ratio=sk_t / ours_t, agree=agree,
                voi_split=ours.voi_split, voi_merge=ours.voi_merge, arand=ours.adapted_rand_error,
                arand_convention_diff=ours.adapted_rand_error - sk_are, pairs=table.n_pairs)


def write_pair(path: Path, size: int, seed: int) -> None:
    import h5py

    pair = BlobPair(size, seed)
    with h5py.File(path, "w") as f:
        for name in ("gt", "pred"):
            ds = f.create_dataset(name, shape=(size,) * 3, dtype=np.uint64, chunks=(64, 64, 64))
            ds.attrs["resolution"] = (40.0, 4.0, 4.0)
        for z0 in range(0, size, 64):
            z1 = min(z0 + 64, size)
            gt, pred = pair.slab(z0, z1)
            f["gt"][z0:z1] = gt
            f["pred"][z0:z1] = pred


def large(size: int, seed: int, tmpdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=tmpdir, prefix="diluvian-eval-bench-") as tmp:
        h5 = Path(tmp) / "pair.h5"
        t = time.perf_counter()
        write_pair(h5, size, seed)
        write_s = time.perf_counter() - t
        out = Path(tmp) / "scores.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "diluvian", "evaluate", f"{h5}:gt", f"{h5}:pred",
               "--border-threshold", "25", "--json", str(out), "--no-progress"]
        # A forked child's ru_maxrss starts from its parent's RSS at fork time (Linux keeps the
        # high-water mark across exec), and this process holds the arrays of (a): a small
        # launcher process runs the command and reports RUSAGE_CHILDREN of its own child.
        launcher = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
                    "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        proc = subprocess.run([sys.executable, "-c", launcher, *cmd], env=env, capture_output=True, text=True)
        rc, eval_s, maxrss_kib = proc.stdout.split()
        if proc.returncode != 0 or rc != "0":
            raise SystemExit(f"evaluate subprocess failed ({rc}):\n{proc.stderr}")
        eval_s = float(eval_s)
        rss_mb = int(maxrss_kib) / 1024  # ru_maxrss is in KiB on Linux
        scores = json.loads(out.read_text())
        file_gib = h5.stat().st_size / 2**30
    return dict(size=size, write_s=write_s, eval_s=eval_s, peak_rss_mb=rss_mb, file_gib=file_gib, scores=scores)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=250, help="edge of the in-memory pair for (a) (default 250)")
    p.add_argument("--large-size", type=int, default=512, help="edge of the HDF5 pair for (b) (default 512)")
    p.add_argument("--skip-large", action="store_true", help="skip (b)")
    p.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmpdir", help="where to write the HDF5 pair of (b) (default: the system temp dir)")
    args = p.parse_args(argv)

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    t = time.perf_counter()
    gt, pred = BlobPair(args.size, args.seed).slab(0, args.size)
    rng = np.random.default_rng(args.seed + 1)
    noise_gt = rng.integers(0, 50, size=gt.shape, dtype=np.uint64)
    noise_pred = (noise_gt + (rng.random(gt.shape) < 0.3) * rng.integers(1, 50, size=gt.shape, dtype=np.uint64)) % 60
    print(f"generated the {args.size}^3 pairs in {time.perf_counter() - t:.1f} s\n")

    rows = [speed(f"blobs {args.size}^3", gt, pred, args.repeats),
            speed(f"noise {args.size}^3", noise_gt, noise_pred, args.repeats)]
    del gt, pred, noise_gt, noise_pred
    print(f"(a) speed, best of {args.repeats} (border off, prediction 0 as a segment)")
    print(f"  {'pair':<14} {'ours s':>8} {'skimage s':>10} {'ratio':>7} {'agree':>6} {'pairs':>8}"
          f" {'VOI split':>10} {'VOI merge':>10} {'ARAND':>8} {'ARAND - skimage':>16}")
    for r in rows:
        print(f"  {r['name']:<14} {r['ours_s']:>8.3f} {r['skimage_s']:>10.3f} {r['ratio']:>6.1f}x "
              f"{str(r['agree']):>6} {r['pairs']:>8d} {r['voi_split']:>10.4f} {r['voi_merge']:>10.4f} "
              f"{r['arand']:>8.4f} {r['arand_convention_diff']:>16.2e}")
    ok = all(r["agree"] for r in rows)

    if not args.skip_large:
        r = large(args.large_size, args.seed, args.tmpdir)
        s = r["scores"]
        print(f"\n(b) {r['size']}^3 uint64 pair in HDF5 ({r['file_gib']:.2f} GiB, 64^3 chunks), "
              f"diluvian evaluate --border-threshold 25 (4 nm/px) in a subprocess")
        print(f"  {'write s':>8} {'evaluate s':>11} {'peak RSS MB':>12} {'Mvox/s':>7}   scores")
        print(f"  {r['write_s']:>8.1f} {r['eval_s']:>11.1f} {r['peak_rss_mb']:>12.0f} "
              f"{r['size'] ** 3 / r['eval_s'] / 1e6:>7.1f}   VOI split {s['voi_split']:.4f}, "
              f"merge {s['voi_merge']:.4f}, ARAND {s['adapted_rand_error']:.4f}, CREMI {s['cremi_score']:.4f}, "
              f"{s['n_voxels_evaluated']} voxels evaluated, {100 * s['fraction_pred_zero']:.1f}% unclaimed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
