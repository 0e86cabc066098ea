"""Dense-fill throughput: fill overhead, and batching across objects vs one object at a time.

Measured in one process, on one device, at one batch size:

(a) **fill efficiency** = FOV/s of a whole dense fill ÷ FOV/s of bare batched
    forward passes of the same network at the same batch size (goal: >= 0.8 on
    CPU, >= 0.7 on GPU). The gap is the fill's own work: FOV extraction, mask
    updates, move queueing, bodies and commits.
(b) **speedup of batching across objects**: wall time of the dense fill one
    object at a time (as the original: one region, its moves batched up to
    ``--move-batch-size``, default 1 move per forward pass) ÷ wall time batched
    across objects. Both give the same segmentation (checked).
(c) ``--fib25``: wall time of a dense fill of ``fib25_raw_sample1.h5`` (250³, in
    ``$DILUVIAN_DATA_DIR``, default ``../shared/data``) with the FFN-sized conv
    stack (12 modules, 32 features, FOV 33³, move step 8), random weights or ``-m``.

For (a) and (b) the network's output is *steered* by an oracle: the network runs
in full (same cost), but its logits are replaced by the ground truth of a
synthetic volume whose objects each have their own intensity, so fills move and
stop as they would with a good model (a random network either stops at once or
floods the volume). Run ``python benchmarks/fill_throughput.py -h`` for options.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from diluvian.config import Config, ModelConfig, NetworkConfig, PostprocessingConfig  # noqa: E402
from diluvian.fill import fill_volume_with_model  # noqa: E402
from diluvian.synthetic import labelled_intensity_volume  # noqa: E402


# --------------------------------------------------------------------------- networks


class _ConvStack(torch.nn.Module):
    """FFN-style conv stack (used only when diluvian.network is unavailable)."""

    def __init__(self, modules: int, features: int) -> None:
        super().__init__()
        c = torch.nn.Conv3d
        self.first = torch.nn.Sequential(c(2, features, 3, padding=1), torch.nn.ReLU(), c(features, features, 3, padding=1))
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.ReLU(), c(features, features, 3, padding=1), torch.nn.ReLU(),
                                c(features, features, 3, padding=1)) for _ in range(modules - 1))
        self.last = c(features, 1, 1)

    def forward(self, image, mask):
        x = self.first(torch.cat([image, mask], 1))
        for b in self.blocks:
            x = x + b(x)
        return self.last(torch.relu(x))


def build(model_cfg: ModelConfig, modules: int, features: int) -> torch.nn.Module:
    try:
        from diluvian.network import build_network

        net_cfg = NetworkConfig(factory="convstack", num_modules=modules, convolution_filters=features)
        return build_network(model_cfg, net_cfg)
    except ImportError:
        return _ConvStack(modules, features)


class OracleSteered(torch.nn.Module):
    """Runs ``net`` in full, but returns oracle logits: same-intensity voxels as the mask's object."""

    def __init__(self, net: torch.nn.Module, model_cfg: ModelConfig) -> None:
        super().__init__()
        self.net = net
        inp, out = np.asarray(model_cfg.input_fov_shape), np.asarray(model_cfg.output_fov_shape)
        self.lo, self.out = (inp - out) // 2, out
        self.reset()

    def reset(self) -> None:
        self.net_seconds = 0.0  # CPU only: time inside the network's forward
        self.batch_sizes: list[int] = []

    def forward(self, image, mask):
        t0 = time.perf_counter()
        logits = self.net(image, mask)
        if image.device.type == "cpu":
            self.net_seconds += time.perf_counter() - t0
        self.batch_sizes.append(int(image.shape[0]))
        n = image.shape[0]
        ref = image.reshape(n, -1).gather(1, mask.reshape(n, -1).argmax(1, keepdim=True)).reshape(n, 1, 1, 1, 1)
        lo, o = self.lo, self.out
        crop = image[:, :, lo[0]:lo[0] + o[0], lo[1]:lo[1] + o[1], lo[2]:lo[2] + o[2]]
        same = (crop - ref).abs() < 1e-4
        oracle = torch.where(same, 3.0, -3.0).to(logits.dtype)  # sigmoid: 0.95 / 0.05
        return oracle + 0 * logits


# --------------------------------------------------------------------------- measurements


def bare_forward_rate(net: torch.nn.Module, model_cfg: ModelConfig, batch: int, device, seconds: float) -> float:
    """FOV/s of net(image, mask) on random batches (after warm-up), incl. host<->device copies."""
    from diluvian.predict import TorchPredictor

    pred = TorchPredictor(net, device=device)
    shape = (batch, *model_cfg.input_fov_shape)
    rng = np.random.default_rng(0)
    images = rng.random(shape, dtype=np.float32)
    masks = np.full(shape, 0.05, np.float32)
    for _ in range(2):
        pred(images, masks)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        pred(images, masks)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def dense_fill(image, model, cfg, batch, *, sequential=False, seeds=None, device=None, **kw):
    t0 = time.perf_counter()
    if sequential:  # one object at a time, its moves batched (the original's --move-batch-size)
        r = fill_volume_with_model(image, model, cfg, move_batch_size=batch, moves_per_step=batch, seeds=seeds,
                                   ordered_seeds=True, progress=False, device=device, lanes=1, **kw)
    else:
        r = fill_volume_with_model(image, model, cfg, move_batch_size=batch, seeds=seeds, ordered_seeds=True,
                                   progress=False, device=device, **kw)
    return r, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="FOVs per forward pass (default 32 CPU, 256 CUDA)")
    p.add_argument("--fov", type=int, default=17, help="input = output FOV edge for (a)/(b) (default 17)")
    p.add_argument("--modules", type=int, default=4, help="conv-stack modules for (a)/(b) (default 4)")
    p.add_argument("--features", type=int, default=16, help="conv-stack features for (a)/(b) (default 16)")
    p.add_argument("--shape", type=int, nargs=3, default=[48, 96, 96], help="synthetic volume shape")
    p.add_argument("--resolution", type=float, default=20.0,
                   help="nm per voxel of the synthetic volume (smaller objects at coarser resolution)")
    p.add_argument("--seeds", type=int, default=0, help="use only the first N seeds (0: all)")
    p.add_argument("--sequential-move-batch", type=int, default=1,
                   help="moves per forward pass of the one-object-at-a-time run (the original's default: 1)")
    p.add_argument("--skip-sequential", action="store_true", help="skip (b)")
    p.add_argument("--fib25", action="store_true", help="also run (c)")
    p.add_argument("--fib25-max-bodies", type=int, default=None)
    p.add_argument("--fib25-seeds", type=int, default=0, help="(c): use only the first N (shuffled) seeds (0: all)")
    p.add_argument("-m", "--model-file", default=None, help="model for (c) (default: random FFN-sized conv stack)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (256 if device.type == "cuda" else 32)
    torch.manual_seed(0)
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    fov = (args.fov,) * 3
    model_cfg = ModelConfig(input_fov_shape=fov, output_fov_shape=fov)
    cfg = Config(model=model_cfg, postprocessing=PostprocessingConfig(min_body_size=100))
    net = build(model_cfg, args.modules, args.features).to(device).eval()
    steered = OracleSteered(net, model_cfg).to(device).eval()
    image, labels = labelled_intensity_volume(args.shape, seed=0, resolution_nm=args.resolution)
    from diluvian.seeds import sobel

    res = (args.resolution,) * 3
    seeds = sobel(image, res, min_separation_nm=args.resolution * model_cfg.move_step[0])
    seeds = seeds[np.random.default_rng(0).permutation(len(seeds))]
    if args.seeds:
        seeds = seeds[: args.seeds]
    print(f"# volume {list(image.shape)}, {len(np.unique(labels)) - 1} objects, {len(seeds)} seeds; conv stack "
          f"{args.modules} modules x {args.features} features, FOV {list(fov)}, step {list(model_cfg.move_step)}, "
          f"batch {batch}")

    # warm up (allocator, kernels)
    dense_fill(image, steered, cfg, batch, seeds=seeds[:4], device=device)
    steered.reset()
    result, t_batched = dense_fill(image, steered, cfg, batch, seeds=seeds, device=device)
    sizes = np.asarray(steered.batch_sizes)
    fill_rate = result.stats.moves / t_batched
    bare = bare_forward_rate(net, model_cfg, batch, device, seconds=max(5.0, min(30.0, t_batched / 3)))
    print(f"(a) dense fill: {result.stats.moves} FOVs in {t_batched:.1f} s = {fill_rate:.1f} FOV/s "
          f"({result.stats.wasted_moves} wasted on revoked regions, {result.stats.bodies} bodies); "
          f"bare forward at batch {batch}: {bare:.1f} FOV/s; efficiency {fill_rate / bare:.2f}")
    print(f"    batches: {len(sizes)}, mean size {sizes.mean():.1f}, {100 * sizes[sizes == batch].sum() / sizes.sum():.0f}% "
          f"of FOVs in full batches")
    if device.type == "cpu":
        print(f"    time in the network's forward: {steered.net_seconds:.1f} s = "
              f"{steered.net_seconds / t_batched:.2f} of the fill (the rest is the fill's own work)")

    if not args.skip_sequential:
        steered.reset()
        seq, t_seq = dense_fill(image, steered, cfg, args.sequential_move_batch, sequential=True, seeds=seeds,
                                device=device)
        if device.type == "cpu":
            print(f"    one at a time: network forward {steered.net_seconds:.1f} s = "
                  f"{steered.net_seconds / t_seq:.2f} of the fill")
        same = np.array_equal(seq.labels, result.labels) if args.sequential_move_batch == 1 else None
        print(f"(b) one object at a time ({args.sequential_move_batch} move(s) per pass): {seq.stats.moves} FOVs in "
              f"{t_seq:.1f} s = {seq.stats.moves / t_seq:.1f} FOV/s; batched across objects: {t_batched:.1f} s; "
              f"speedup {t_seq / t_batched:.2f}x" + ("" if same is None else f"; identical segmentation: {same}"))

    if args.fib25:
        run_fib25(args, device, batch)
    return 0


def run_fib25(args, device, batch) -> None:
    import h5py

    data = Path(os.environ.get("DILUVIAN_DATA_DIR", REPO.parent / "shared" / "data"))
    path = data / "fib25_raw_sample1.h5"
    if not path.exists():
        print(f"(c) skipped: {path} not found")
        return
    with h5py.File(path, "r") as f:
        image = f["volumes/raw"][...].astype(np.float32) / 256.0
    if args.model_file:
        from diluvian.config import load_config
        from diluvian.fill.run import load_fill_model

        model, cfg = load_fill_model(args.model_file, load_config([]), (), device)
        what = args.model_file
    else:
        model_cfg = ModelConfig(input_fov_shape=(33, 33, 33), output_fov_shape=(33, 33, 33))
        cfg = Config(model=model_cfg)
        try:
            from diluvian.config import load_config
            from diluvian.network import build_network

            cfg = load_config(["gpu"])  # packaged conf/gpu.toml: google/ffn's FIB-25 network
            model = build_network(cfg.model, cfg.network).to(device).eval()
            what = "random conv stack of conf/gpu.toml (FFN FIB-25: 12 modules, 32 features, FOV 33^3, step 8)"
        except (ImportError, Exception) as e:  # noqa: BLE001 - fall back to a local copy of the network
            print(f"# conf/gpu.toml unavailable ({e}); using a local FFN-sized conv stack")
            cfg = Config(model=model_cfg)
            model = _ConvStack(12, 32).to(device).eval()
            what = "random FFN-sized conv stack (12 modules, 32 features)"
    t0 = time.perf_counter()
    seeds = None
    if args.fib25_seeds:
        from diluvian.seeds import sobel

        seeds = sobel(image, (10, 10, 10))
        seeds = seeds[np.random.default_rng(0).permutation(len(seeds))[: args.fib25_seeds]]
    r = fill_volume_with_model(image, model, cfg, move_batch_size=batch, device=device, resolution=(10, 10, 10),
                               seeds=seeds, max_bodies=args.fib25_max_bodies, progress=False,
                               rng=np.random.default_rng(0))
    dt = time.perf_counter() - t0
    print(f"(c) fib25 250^3 with {what}: {dt:.1f} s wall, {r.stats.moves} FOVs ({r.stats.moves / dt:.1f} FOV/s), "
          f"{r.stats.bodies} bodies, {r.stats.voxels_labelled / image.size:.1%} labelled, "
          f"{image.size / dt:.0f} voxels/s")


if __name__ == "__main__":
    sys.exit(main())
