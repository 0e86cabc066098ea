"""Real-data results: train, fill and evaluate on FIB-25 and medulla, with baselines.

For each data set: train on the training partition with the repo's own CLI
(``diluvian train``), densely fill the validation partition (``diluvian fill
--partition-volumes``), score it with the CREMI protocol (``diluvian evaluate
--partition-volumes``, 25 nm border) and, in the same run on the same
partitions, score the classical baselines: a seeded watershed tuned on the
training partition only, connected components (tuned likewise) and the trivial
one-segment answer.

Usage::

    python benchmarks/real_data.py [--out bench_output/real] [--datasets fib25 medulla]
                                   [--config cpu_small cpu_real] [--train-minutes 30]

Data come from ``$DILUVIAN_DATA_DIR`` (default ``../shared/data``); the script
prints a Markdown table for BENCHMARKS.md and writes ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]

DATASETS = {
    # file, the axis split into training (first) and validation (second) halves, and
    # config lines added for that data set
    "fib25": ("fib25_train.h5", 0, ""),
    # 50 x 100 x 200 voxels: halves along X (Z halves of 25 slices are thinner than a
    # validation subvolume), filled at the data's own 10 nm (12 slices at 20 nm are too few)
    "medulla": ("medulla_small.h5", 2, """[volume]
resolution = [10, 10, 10]

[training]
partitions = { ".*" = [1, 1, 2] }
training_partition = { ".*" = [0, 0, 0] }
validation_partition = { ".*" = [0, 0, 1] }
"""),
}


def data_dir() -> Path:
    return Path(os.environ.get("DILUVIAN_DATA_DIR", REPO.parent / "shared" / "data"))


def run(cmd: list[str], log_file: Path) -> float:
    """Run a CLI command, tee its output to a log; return the wall time."""
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    with open(log_file, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}), see {log_file}: {' '.join(cmd)}")
    return elapsed


def write_dataset_toml(path: Path, name: str, h5: Path) -> None:
    path.write_text(
        "[[dataset]]\n"
        f'name = "{name}"\n'
        f'hdf5_file = "{h5}"\n'
        'image_dataset = "volumes/raw"\n'
        'label_dataset = "volumes/labels/neuron_ids"\n'
        "resolution = [10, 10, 10]\n"
    )


def baseline_scores(h5: Path, resolution: float, axis: int = 0) -> dict:
    """Tune baselines on the training half (first half along ``axis``), score them on the validation half."""
    from diluvian.baselines import tune_baseline
    from diluvian.evaluate import evaluate_volumes

    with h5py.File(h5, "r") as f:
        raw = f["volumes/raw"][:]
        gt = f["volumes/labels/neuron_ids"][:]
    half = raw.shape[axis] // 2
    train_raw, val_raw = (np.take(raw, np.arange(a, b), axis=axis) for a, b in ((0, half), (half, 2 * half)))
    train_gt, val_gt = (np.take(gt, np.arange(a, b), axis=axis) for a, b in ((0, half), (half, 2 * half)))
    res = (resolution,) * 3

    def cremi(gt_part, seg):
        return evaluate_volumes(gt_part, seg, border_threshold_nm=25.0, resolution=res, progress=False).cremi_score

    results = {}
    for name in ("watershed", "connected_components", "one_segment"):
        start = time.perf_counter()
        tuned = tune_baseline(name, train_raw, lambda seg: cremi(train_gt, seg))
        scores = evaluate_volumes(val_gt, tuned.apply(val_raw), border_threshold_nm=25.0, resolution=res,
                                  progress=False)
        results[name] = {"params": tuned.params, "train_cremi": tuned.score, "time_s": time.perf_counter() - start,
                         **_score_dict(scores)}
    return results


CLAIM_GRID = {"membrane_fraction": [0.1, 0.2, 0.3], "grow_distance": [1.0, 2.0, 4.0], "min_size": [20, 100, 500]}
"""Claiming settings tried on the training half (:func:`tune_claim`)."""


def _image_at(toml: Path, cfg, partition: bool) -> np.ndarray:
    """The image a fill of ``toml`` sees: (validation partition,) downsampled to ``cfg``'s resolution."""
    from diluvian.fill.run import prepare_volumes
    from diluvian.volumes import load_volumes

    (volume,) = prepare_volumes(load_volumes([toml]), cfg, partition=partition).values()
    return np.asarray(volume.get_image((0, 0, 0), tuple(int(s) for s in volume.shape[-3:])), dtype=np.float32)


def _upsampled_cremi(gt: np.ndarray, seg: np.ndarray) -> dict:
    """CREMI scores of a (possibly integer-coarser) segmentation against 10 nm ground truth."""
    from diluvian.evaluate import evaluate_volumes

    factor = [g // s for g, s in zip(gt.shape, seg.shape)]
    for axis, f in enumerate(factor):
        seg = np.repeat(seg, f, axis=axis)
    seg = seg[tuple(slice(0, n) for n in gt.shape)]
    return _score_dict(evaluate_volumes(gt, seg, border_threshold_nm=25.0, resolution=(10.0,) * 3, progress=False))


def tune_claim(train_seg: np.ndarray, train_image: np.ndarray, train_gt: np.ndarray, sigma: float = 1.0) -> dict:
    """Grid-search the claiming settings on a fill of the training half (lowest CREMI score wins)."""
    import itertools

    from diluvian.claim import claim_unclaimed

    trials = []
    keys = list(CLAIM_GRID)
    for values in itertools.product(*(CLAIM_GRID[k] for k in keys)):
        params = dict(zip(keys, values))
        claimed, _ = claim_unclaimed(train_seg, train_image, sigma=sigma, **params)
        score = _upsampled_cremi(train_gt, claimed)["cremi_score"]
        print(f"  claim on the training half {params}: CREMI {score:.4f}", flush=True)
        trials.append((params, score))
    best = min(trials, key=lambda t: t[1])
    return {"params": best[0], "train_cremi": best[1], "trials": trials}


def claim_study(run_dir: Path, val_toml: Path, train_toml: Path, config: list[str], h5: Path) -> dict:
    """Score saved raw fills (``claim = false``) with and without guards and claiming.

    ``run_dir`` holds ``val_guard_*.hdf5`` / ``val_noguard_*.hdf5`` (fills of the
    validation partition with and without the flood guards) and ``train_guard_*.hdf5``
    (a fill of the training half or a part of it, ``train_toml``, where the claiming
    settings are tuned; nothing is chosen on the validation half).
    """
    from diluvian.claim import claim_unclaimed
    from diluvian.config import load_config

    cfg = load_config(config)

    def seg(pattern: str) -> np.ndarray | None:
        files = sorted(run_dir.glob(pattern))
        if not files:
            return None
        with h5py.File(files[0], "r") as f:
            return f["volumes/labels/neuron_ids"][:]

    import tomllib

    with h5py.File(h5, "r") as f:
        gt = f["volumes/labels/neuron_ids"][:]
    half = gt.shape[0] // 2
    val_gt = gt[half:2 * half]
    train_h5 = tomllib.loads(train_toml.read_text())["dataset"][0]["hdf5_file"]
    with h5py.File(train_h5, "r") as f:  # the training half, or a part of it
        train_gt = f["volumes/labels/neuron_ids"][:]
    out: dict = {"run": str(run_dir)}
    train_seg = seg("train_guard_*.hdf5")
    if train_seg is not None:
        out["train_raw"] = _upsampled_cremi(train_gt, train_seg)
        tuned = tune_claim(train_seg, _image_at(train_toml, cfg, False), train_gt, cfg.postprocessing.boundary_sigma)
        out["claim"] = {k: tuned[k] for k in ("params", "train_cremi")}
    train_noguard = seg("train_noguard_*.hdf5")
    if train_noguard is not None:  # the guards' effect, measured on the training part
        out["train_noguard_raw"] = _upsampled_cremi(train_gt, train_noguard)
    val_image = _image_at(val_toml, cfg, True)
    for name in ("val_guard", "val_noguard"):
        raw = seg(f"{name}_*.hdf5")
        if raw is None:
            continue
        out[name] = {"raw": _upsampled_cremi(val_gt, raw)}
        settings = {"default": {"membrane_fraction": cfg.postprocessing.membrane_fraction,
                                "grow_distance": cfg.postprocessing.claim_grow_distance,
                                "min_size": cfg.postprocessing.claim_min_size,
                                "split_distance": cfg.postprocessing.claim_split_distance}}
        if "claim" in out:
            settings["tuned"] = out["claim"]["params"]
        for label, params in settings.items():
            claimed, stats = claim_unclaimed(raw, val_image, sigma=cfg.postprocessing.boundary_sigma, **params)
            out[name][f"claim_{label}"] = _upsampled_cremi(val_gt, claimed)
    return out


def bare_ceilings(model_file: Path, fill_batch: int, seconds: float = 20.0) -> dict:
    """FOV/s of the trained network alone: forward at the fill's batch, forward/backward/step at the training batch."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fill_throughput import bare_forward_rate

    from diluvian.network import load_model
    from diluvian.training import make_optimizer
    from diluvian.training.objective import _sample_losses

    net, cfg, _ = load_model(model_file, "cpu")
    forward = bare_forward_rate(net, cfg.model, fill_batch, torch.device("cpu"), seconds)
    net.train()
    bs = cfg.training.batch_size
    optimizer = make_optimizer(cfg, net.parameters())
    img = torch.rand((bs, 1, *cfg.model.input_fov_shape))
    mask = torch.full_like(img, cfg.model.v_false)
    target = (torch.rand((bs, 1, *cfg.model.output_fov_shape)) > 0.5).float() * 0.9 + 0.05
    n, t0 = -2, 0.0  # two untimed warm-up steps
    while n < 3 or time.perf_counter() - t0 < seconds:
        loss = _sample_losses(net(img, mask), target).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += 1
        if n == 0:
            t0 = time.perf_counter()
    return {"bare_forward_fov_s": forward, "fill_batch": fill_batch,
            "bare_train_step_fov_s": n * bs / (time.perf_counter() - t0), "train_batch": bs}


def logged_speeds(log_file: Path) -> dict:
    """Training FOV/s (median over epochs) and the fill's summary, parsed from the command log."""
    import re

    text = log_file.read_text()
    epochs = [float(m) for m in re.findall(r"epoch \d+: loss .*?; ([\d.]+) FOV/s", text)]
    out: dict = {"train_fov_s_median": float(np.median(epochs)) if epochs else None}
    fill = re.findall(r": (\d+) bodies, .*?(\d+) FOVs \((\d+) wasted\) in \d+ batches(?: \(mean [\d.]+ FOVs\))?, "
                      r"([\d.]+) s, ([\d.]+) FOV/s", text)
    if fill:
        bodies, fovs, wasted, secs, rate = fill[-1]
        out.update(fill_bodies=int(bodies), fill_fovs=int(fovs), fill_wasted_fovs=int(wasted),
                   fill_seconds=float(secs), fill_fov_s=float(rate))
    return out


def _score_dict(scores) -> dict:
    d = scores.to_dict()
    return {k: d[k] for k in ("voi_split", "voi_merge", "adapted_rand_error", "cremi_score",
                              "n_pred_objects", "fraction_pred_zero") if k in d}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "real")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--config", nargs="+", default=["cpu_small", "cpu_real"],
                        help="training config files or packaged names, applied in order")
    parser.add_argument("--train-minutes", type=float, default=30.0, help="training time budget per data set")
    parser.add_argument("--model", type=Path, default=None, help="skip training: use this model for every data set")
    parser.add_argument("--max-moves", type=int, default=None,
                        help="passed to fill: cap the moves of one region (bounds runaway merged regions)")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--fill-batch", type=int, default=32, help="fill --move-batch-size (default 32, CPU)")
    parser.add_argument("--moves-per-step", type=int, default=8,
                        help="fill --moves-per-step (default 8: a region takes 8 moves per batch)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--claim-study", nargs="+", type=Path, default=None, metavar="RUN_DIR",
                        help="only score saved raw FIB-25 fills in each RUN_DIR with and without guards and "
                             "claiming (see claim_study), with --val-toml and --train-toml")
    parser.add_argument("--val-toml", type=Path, help="--claim-study: the whole data set's TOML")
    parser.add_argument("--train-toml", type=Path, help="--claim-study: TOML of the training half as a volume")
    args = parser.parse_args(argv)
    if args.claim_study:
        h5 = data_dir() / DATASETS["fib25"][0]
        for run_dir in args.claim_study:
            study = claim_study(run_dir, args.val_toml, args.train_toml, args.config, h5)
            (run_dir / "claim_study.json").write_text(json.dumps(study, indent=2, default=str))
            print_study(study)
        return 0

    diluvian = [sys.executable, "-m", "diluvian"]
    results: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
                     "config": args.config, "datasets": {}}
    for ds in args.datasets:
        file_name, axis, extra = DATASETS[ds]
        h5 = data_dir() / file_name
        if not h5.exists():
            print(f"skipping {ds}: {h5} not found")
            continue
        out = args.out / ds
        out.mkdir(parents=True, exist_ok=True)
        log = out / "log.txt"
        toml = out / f"{ds}.toml"
        write_dataset_toml(toml, ds, h5)
        own = []  # the data set's partitions (and resolution), for train, fill and evaluate alike
        if extra:
            (out / f"{ds}_config.toml").write_text(extra)
            own = ["-c", str(out / f"{ds}_config.toml")]
        entry: dict = {}
        model = args.model
        if model is None:
            model = out / "model.pt"
            configs = [a for c in args.config for a in ("-c", c)]
            entry["train_s"] = run(diluvian + ["train", *configs, *own, "-v", str(toml), "-mo", str(out / "model"),
                                               "-rs", str(args.seed), "--max-minutes", str(args.train_minutes)], log)
        cap = ["--max-moves", str(args.max_moves)] if args.max_moves else []
        entry["fill_s"] = run(diluvian + ["fill", "-m", str(model), *own, "-v", str(toml), "--partition-volumes",
                                          *cap, "--move-batch-size", str(args.fill_batch),
                                          "--moves-per-step", str(args.moves_per_step), "-rs", str(args.seed),
                                          str(out / "segmentation_{volume}")], log)
        entry["evaluate_s"] = run(diluvian + ["evaluate", *own, "-v", str(toml), "-v",
                                              str(out / f"segmentation_{ds}.toml"), "--partition-volumes", ds,
                                              f"{ds} segmentation", "--json", str(out / "scores.json")], log)
        entry["diluvian"] = _score_dict(_Scores(json.loads((out / "scores.json").read_text())))
        entry["snapshot_s"] = run(diluvian + ["view", *own, "-v", str(toml), "-v",
                                              str(out / f"segmentation_{ds}.toml"), "--partition-volumes", ds,
                                              "--segmentation", f"{ds} segmentation",
                                              "--snapshot", str(out / "validation.png")], log)
        entry["speed"] = logged_speeds(log)
        with h5py.File(out / f"segmentation_{ds}.hdf5", "r") as f:
            n_voxels = int(np.prod(f["volumes/labels/neuron_ids"].shape))
        if entry["speed"].get("fill_seconds"):
            entry["speed"]["fill_voxels_s"] = n_voxels / entry["speed"]["fill_seconds"]
        entry["speed"].update(bare_ceilings(model, args.fill_batch))
        if not args.skip_baselines:
            entry["baselines"] = baseline_scores(h5, 10.0, axis)
        results["datasets"][ds] = entry
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    print_table(results)
    return 0


def print_study(study: dict) -> None:
    """One Markdown row per fill variant of :func:`claim_study`."""
    print(f"\n{study['run']}: claiming tuned on the training half: {study.get('claim')}")
    for name in ("train_raw", "train_noguard_raw"):
        if name in study:
            print(f"{name} (training part, no claiming): {study[name]}")
    print("| fill | claiming | VOI split | VOI merge | ARAND | CREMI score | objects | unclaimed |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("val_guard", "val_noguard"):
        for variant, s in study.get(name, {}).items():
            print(f"| {name} | {variant} | {s['voi_split']:.3f} | {s['voi_merge']:.3f} | "
                  f"{s['adapted_rand_error']:.3f} | {s['cremi_score']:.3f} | {s.get('n_pred_objects', '')} | "
                  f"{s.get('fraction_pred_zero', np.nan):.3f} |")


class _Scores:
    """Adapter so JSON score dicts go through :func:`_score_dict` like score objects."""

    def __init__(self, d: dict) -> None:
        self._d = d.get("scores", d)

    def to_dict(self) -> dict:
        return self._d


def print_table(results: dict) -> None:
    print(f"\nmachine: {results['machine']}; date {results['date']}; config {results['config']}\n")
    print("| data | method | VOI split | VOI merge | ARAND | CREMI score | objects | unclaimed |")
    print("|---|---|---|---|---|---|---|---|")
    for ds, entry in results["datasets"].items():
        rows = [("diluvian", entry["diluvian"])] + [(f"{k} (tuned on train)" if k != "one_segment" else k, v)
                                                   for k, v in entry.get("baselines", {}).items()]
        for name, s in rows:
            print(f"| {ds} | {name} | {s.get('voi_split', np.nan):.3f} | {s.get('voi_merge', np.nan):.3f} | "
                  f"{s.get('adapted_rand_error', np.nan):.3f} | {s.get('cremi_score', np.nan):.3f} | "
                  f"{s.get('n_pred_objects', '')} | {s.get('fraction_pred_zero', np.nan):.3f} |")
    print()
    for ds, entry in results["datasets"].items():
        times = ", ".join(f"{k} {v:.0f} s" for k, v in entry.items() if k.endswith("_s"))
        print(f"{ds}: {times}")
    print("\n| data | training FOV/s (bare fwd+bwd+step) | fill FOV/s (bare forward) | fill voxels/s | "
          "fill FOVs (revoked regions) | evaluate |")
    print("|---|---|---|---|---|---|")
    for ds, entry in results["datasets"].items():
        sp = entry.get("speed", {})
        if not sp:
            continue
        train = (f"{sp['train_fov_s_median']:.1f} ({sp['bare_train_step_fov_s']:.1f}, batch {sp['train_batch']})"
                 if sp.get("train_fov_s_median") else "-")
        print(f"| {ds} | {train} | {sp.get('fill_fov_s', float('nan')):.1f} ({sp['bare_forward_fov_s']:.1f}, batch "
              f"{sp['fill_batch']}) | {sp.get('fill_voxels_s', float('nan')):.0f} | {sp.get('fill_fovs', '')} "
              f"({sp.get('fill_wasted_fovs', '')}) | {entry.get('evaluate_s', float('nan')):.1f} s |")


if __name__ == "__main__":
    sys.exit(main())
