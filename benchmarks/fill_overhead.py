"""The dense fill's own cost per FOV, with no network.

A rule stands in for the network: probability 0.95 on the voxels of an FOV's
output that have the intensity of the voxel the mask is most sure of, 0.05
elsewhere, on a synthetic volume whose objects each have their own intensity. So
fills move and stop as a good model's would, and what is timed is the fill's own
work: FOV extraction, mask update, move queue, bodies and commits.

Printed, measured side by side in one run on one CPU core (``torch.set_num_threads(1)``):

- milliseconds per FOV of the fill's own work (wall time minus the rule's time),
  for each mask storage (``pool``: dense mask windows in one pooled array, the
  default; ``octree``: a block-sparse mask per region, the fill's storage before the
  pool), and their ratio;
- the FOV/s that this bookkeeping could feed, against a GPU's network rate;
- with ``--storage device``: the device-resident path (``[fill] mask_device =
  "model"``: the pool, the box image and the gather/update as torch ops on the
  model's device; here the CPU), against the host pool with the same torch rule
  (a ``TorchPredictor``): its own work per FOV, the part spent inside the torch
  gather/update (on a GPU these are kernels, asynchronous but for one (N, 6) copy
  per step), what is left on the host per FOV (the bookkeeping a GPU fill still
  pays on the CPU), and the torch operations (about one kernel launch each on a
  GPU) per step.

The goal (issue "fill engine") is <= 0.25 ms per FOV at the ``gpu`` geometry
(FOV 33^3, move step 8) with batches of 256 FOVs.

    python benchmarks/fill_overhead.py                  # gpu geometry, batch 256
    python benchmarks/fill_overhead.py --fov 17 --output-fov 9 --batch 32   # cpu_small geometry
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from diluvian.config import Config, FillConfig, ModelConfig, PostprocessingConfig  # noqa: E402
from diluvian.fill import fill_volume_with_model  # noqa: E402
from diluvian.synthetic import labelled_intensity_volume  # noqa: E402


class IntensityRule:
    """``predict(images, masks)``: 0.95 where the image has the intensity at the mask's argmax."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        inp, out = np.asarray(model_cfg.input_fov_shape), np.asarray(model_cfg.output_fov_shape)
        lo = (inp - out) // 2
        self.crop = (slice(None),) + tuple(slice(int(a), int(a + o)) for a, o in zip(lo, out))
        self.seconds = 0.0
        self.fovs = 0

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        n = images.shape[0]
        flat = masks.reshape(n, -1)
        ref = np.take_along_axis(images.reshape(n, -1), flat.argmax(1)[:, None], 1).reshape(n, 1, 1, 1)
        crop = images[self.crop]
        out = np.where(np.abs(crop - ref) < 1e-4, np.float32(0.95), np.float32(0.05))
        self.seconds += time.perf_counter() - t0
        self.fovs += n
        return out


class TorchRule(torch.nn.Module):
    """:class:`IntensityRule` as a torch module (logits), for a :class:`~diluvian.predict.TorchPredictor`."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        super().__init__()
        inp, out = np.asarray(model_cfg.input_fov_shape), np.asarray(model_cfg.output_fov_shape)
        lo = (inp - out) // 2
        self.crop = (slice(None), slice(None)) + tuple(slice(int(a), int(a + o)) for a, o in zip(lo, out))
        self.seconds = 0.0

    def forward(self, image, mask):
        t0 = time.perf_counter()
        n = image.shape[0]
        ref = image.reshape(n, -1).gather(1, mask.reshape(n, -1).argmax(1, keepdim=True)).reshape(n, 1, 1, 1, 1)
        logit = torch.where((image[self.crop] - ref).abs() < 1e-4, 2.944, -2.944)
        self.seconds += time.perf_counter() - t0
        return logit


class TorchOpTimer:
    """Time spent in, and aten operations run by, the torch gather/apply of a fill."""

    def __init__(self) -> None:
        import diluvian.batchops as bo

        self.bo, self.seconds, self.ops, self.calls = bo, 0.0, 0, 0
        self.orig = (bo.gather_torch, bo.apply_torch)

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        timer = self

        class Count(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                timer.ops += 1
                return func(*args, **(kwargs or {}))

        def wrap(fn):
            def inner(*a, **k):
                t0 = time.perf_counter()
                with Count():
                    out = fn(*a, **k)
                self.seconds += time.perf_counter() - t0
                self.calls += 1
                return out
            return inner

        self.bo.gather_torch, self.bo.apply_torch = (wrap(f) for f in self.orig)
        return self

    def __exit__(self, *exc):
        self.bo.gather_torch, self.bo.apply_torch = self.orig


def run(image, cfg, batch, seeds, storage, fill_batch=False, mask_memory_mb=None, mask_device=None, device="cpu"):
    if mask_device is None:
        rule = IntensityRule(cfg.model)
        predictor = rule
    else:
        from diluvian.predict import TorchPredictor

        rule = TorchRule(cfg.model)
        predictor = TorchPredictor(rule.to(device), device=device, autocast=False)
    t0 = time.perf_counter()
    r = fill_volume_with_model(image, predictor, cfg, move_batch_size=batch, seeds=seeds, ordered_seeds=True,
                               progress=False, mask_storage=storage, fill_batch=fill_batch,
                               mask_memory_mb=mask_memory_mb, mask_device=mask_device)
    wall = time.perf_counter() - t0
    return r, wall, rule.seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fov", type=int, default=33, help="input FOV edge (default 33, the gpu geometry)")
    p.add_argument("--output-fov", type=int, default=None, help="output FOV edge (default = input)")
    p.add_argument("--move-fraction", type=int, default=4, help="move step = (output - 1) / this (default 4)")
    p.add_argument("--batch", type=int, default=256, help="FOVs per step (default 256)")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 160, 160], help="synthetic volume shape")
    p.add_argument("--resolution", type=float, default=10.0, help="nm per voxel of the synthetic volume")
    p.add_argument("--seeds", type=int, default=0, help="use only the first N seeds (0: all)")
    p.add_argument("--storage", nargs="+", default=["pool", "octree"], choices=["pool", "octree", "device"],
                   help="device: the host pool and the device-resident pool (torch, on the CPU here) with a torch rule")
    p.add_argument("--device", default="cpu", help="torch device of --storage device's runs (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--fill-batch", action="store_true", help="[fill] fill_batch: keep the batch full")
    p.add_argument("--moves-per-step", type=int, default=1, help="[fill] moves_per_step (default 1)")
    p.add_argument("--growth", type=int, default=0, help="[fill] moves_per_step_growth (default 0: off)")
    p.add_argument("--moves-per-step-max", type=int, default=32, help="[fill] moves_per_step_max (default 32)")
    p.add_argument("--mask-memory-mb", type=float, default=None, help="[fill] mask_memory_mb (default 1024)")
    p.add_argument("--guards", action="store_true",
                   help="keep the flood guards on (they cost per region, not per FOV; off by default here)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    fov = (args.fov,) * 3
    out = (args.output_fov or args.fov,) * 3
    model_cfg = ModelConfig(input_fov_shape=fov, output_fov_shape=out, output_fov_move_fraction=args.move_fraction)
    pp = PostprocessingConfig(min_body_size=100)
    if not args.guards:
        pp = dataclasses.replace(pp, guard_interval=0)
    fill = FillConfig(moves_per_step=args.moves_per_step, moves_per_step_growth=args.growth,
                      moves_per_step_max=args.moves_per_step_max)
    cfg = Config(model=model_cfg, postprocessing=pp, fill=fill)
    image, labels = labelled_intensity_volume(args.shape, seed=0, resolution_nm=args.resolution)
    from diluvian.seeds import sobel

    seeds = sobel(image, (args.resolution,) * 3, min_separation_nm=args.resolution * model_cfg.move_step[0])
    seeds = seeds[np.random.default_rng(0).permutation(len(seeds))]
    if args.seeds:
        seeds = seeds[: args.seeds]
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"numpy {np.__version__}, torch threads {torch.get_num_threads()}")
    print(f"# flood guards {'on' if args.guards else 'off'}, fill_batch {args.fill_batch}, moves_per_step "
          f"{args.moves_per_step}, moves_per_step_growth {args.growth} (max {args.moves_per_step_max})")
    print(f"# volume {list(image.shape)}, {len(np.unique(labels)) - 1} objects, {len(seeds)} seeds; FOV {list(fov)} "
          f"-> {list(out)}, move step {list(model_cfg.move_step)}, batch {args.batch}")
    run(image, cfg, args.batch, seeds[:4], "pool")  # warm-up (compiles the kernels)
    results = {}
    if "device" in args.storage:
        run(image, cfg, args.batch, seeds[:4], "pool", mask_device="model", device=args.device)
        runs = {}
        for where in ("host", "model"):
            with TorchOpTimer() as ops:
                r, wall, rule_s = run(image, cfg, args.batch, seeds, "pool", args.fill_batch, args.mask_memory_mb,
                                      mask_device=where, device=args.device)
            own = (wall - rule_s) / max(r.stats.moves, 1) * 1e3
            runs[where] = r
            line = (f"torch rule, {where} pool: {r.stats.moves} FOVs in {wall:.1f} s (rule {rule_s:.1f} s); fill's own "
                    f"work {own:.3f} ms/FOV, mean batch {r.stats.mean_batch:.1f}")
            if where == "model" and args.device == "cpu":  # on a GPU the ops are asynchronous: wall time only
                steps = max(ops.calls // 2, 1)
                rest = (wall - rule_s - ops.seconds) / max(r.stats.moves, 1) * 1e3
                line += (f"; in torch gather/apply {ops.seconds:.1f} s ({ops.ops / steps:.0f} ops per step, "
                         f"{ops.ops / max(r.stats.moves, 1):.1f} per FOV); left on the host {rest:.3f} ms/FOV "
                         f"-> feeds {1e3 / rest:,.0f} FOV/s")
            print(line)
        print(f"device pool = host pool segmentation: {np.array_equal(runs['host'].labels, runs['model'].labels)}")
    for storage in [s for s in args.storage if s != "device"]:
        r, wall, rule_s = run(image, cfg, args.batch, seeds, storage, args.fill_batch, args.mask_memory_mb)
        own = (wall - rule_s) / max(r.stats.moves, 1) * 1e3
        results[storage] = (r, own)
        print(f"{storage:>6}: {r.stats.moves} FOVs in {wall:.1f} s (rule {rule_s:.1f} s); fill's own work "
              f"{own:.3f} ms/FOV -> feeds {1e3 / own:,.0f} FOV/s; {r.stats.bodies} bodies, mean batch "
              f"{r.stats.mean_batch:.1f} of {args.batch}")
    if len(results) == 2:  # pool and octree
        (ra, a), (rb, b) = results.values()
        same = np.array_equal(ra.labels, rb.labels)
        print(f"ratio {args.storage[1]} / {args.storage[0]} ms per FOV: {b / a:.2f}x; identical segmentation: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
