"""Training throughput: the real moving-FOV loop against bare network steps.

In one process, on the same device, network and batch size, measure

* **loop**: FOVs per second of diluvian's training loop (subvolume sampling,
  erosion, augmentation in the prefetch thread, region moves, batch assembly,
  forward/backward/optimizer step, prediction write-back), i.e. what
  ``diluvian train`` does between validations;
* **bare**: FOVs per second of forward/backward/optimizer steps of the same
  network on random tensors already on the device;

and print both and their ratio (the loop's efficiency; the goal is >= 0.8).

Usage::

    python benchmarks/train_throughput.py                      # cpu_small on a synthetic volume
    python benchmarks/train_throughput.py -c gpu --device cuda --steps 200
    python benchmarks/train_throughput.py -c cpu_small -v my_data.toml --steps 60

The two measurements are interleaved (bare, loop, bare, loop, ...) over
``--rounds`` rounds so that load from other processes affects both alike; the
median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diluvian.config import load_config
from diluvian.network import build_network
from diluvian.device import DeviceSetup
from diluvian.training import Prefetcher, make_optimizer, prepare_training_volumes, subvolume_stream
from diluvian.training.loop import _SlotGroup, _Stepper
from diluvian.training.objective import _sample_losses


def _volumes(args: argparse.Namespace, tmp: Path) -> dict:
    from diluvian.volumes import NdarrayVolume, load_volumes

    if args.volume_file:
        return load_volumes(args.volume_file, in_memory=True)
    from diluvian.synthetic import synthesize_volume

    image, labels = synthesize_volume(tuple(args.synthetic_shape), seed=0)
    return {"synthetic": NdarrayVolume("synthetic", image, labels, resolution=(10.0, 10.0, 10.0))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", action="append", default=None,
                   help="config file(s) or packaged names (default: cpu_small)")
    p.add_argument("-v", "--volume-file", action="append", default=[],
                   help="dataset TOML(s) (default: a synthetic volume)")
    p.add_argument("--synthetic-shape", type=int, nargs=3, default=[64, 128, 128])
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: [training] device)")
    p.add_argument("--batch-size", type=int, default=None, help="override training.gpu_batch_size")
    p.add_argument("--steps", type=int, default=30, help="timed steps per round and mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the first round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    overrides: dict = {}
    if args.batch_size:
        overrides.setdefault("training", {})["gpu_batch_size"] = args.batch_size
    if args.device:
        overrides.setdefault("training", {})["device"] = args.device
    cfg = load_config(args.config or ["cpu_small"], overrides=overrides or None)
    setup = DeviceSetup.from_config(cfg)
    bs = cfg.training.batch_size
    torch.manual_seed(0)
    model = setup.prepare_model(build_network(cfg.model, cfg.network)).train()
    optimizer = make_optimizer(cfg, model.parameters())

    with tempfile.TemporaryDirectory() as tmp:
        volumes = _volumes(args, Path(tmp))
        train_vols, _ = prepare_training_volumes(cfg, volumes, need_validation=False)
        stream = subvolume_stream(train_vols, cfg.model.training_subv_shape, cfg, np.random.default_rng(0), True)
        prefetcher = Prefetcher(stream, maxsize=2 * bs)
        n_groups = 2 if setup.device.type == "cuda" else 1
        groups = [_SlotGroup(bs, cfg, prefetcher.get, np.random.default_rng(1)) for _ in range(n_groups)]

        def step(images, masks, targets):
            with setup.autocast_context():
                logits = model(images, masks)
            loss = _sample_losses(logits, targets).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return logits

        fov = (bs, 1, *cfg.model.input_fov_shape)
        out = (bs, 1, *cfg.model.output_fov_shape)
        r_img = torch.rand(fov, device=setup.device)
        r_mask = torch.full(fov, cfg.model.v_false, device=setup.device)
        r_tgt = (torch.rand(out, device=setup.device) > 0.5).float() * 0.9 + 0.05
        if setup.channels_last:
            r_img, r_mask, r_tgt = (t.contiguous(memory_format=torch.channels_last_3d) for t in (r_img, r_mask, r_tgt))

        counter = {"step": 0}

        stepper = _Stepper(cfg, setup, model, optimizer, None)  # the training loop's own step

        def loop_step():
            s = counter["step"]
            g = groups[s % n_groups]
            g.apply()
            stepper(g, 0.0)
            if n_groups == 1:
                g.apply()
            else:
                groups[(s + 1) % n_groups].apply()
            counter["step"] = s + 1

        def bare_step():
            step(r_img, r_mask, r_tgt)

        def timed(fn, n):
            _sync(setup.device)
            t = time.perf_counter()
            for _ in range(n):
                fn()
            for g in groups:
                g.apply()
            _sync(setup.device)
            return n * bs / (time.perf_counter() - t)

        for _ in range(args.warmup):
            bare_step()
            loop_step()
        bare, loop = [], []
        for r in range(args.rounds):
            bare.append(timed(bare_step, args.steps))
            loop.append(timed(loop_step, args.steps))
            print(f"round {r + 1}: bare {bare[-1]:.1f} FOV/s, loop {loop[-1]:.1f} FOV/s", file=sys.stderr)
        prefetcher.close()
        started = sum(g.started for g in groups)

    b, lp = float(np.median(bare)), float(np.median(loop))
    result = {
        "device": str(setup.device) + (f" ({torch.cuda.get_device_name(setup.device)})"
                                       if setup.device.type == "cuda" else f" ({torch.get_num_threads()} threads)"),
        "network": (f"unet, depth {cfg.network.unet_depth}" if cfg.network.factory == "unet" else
                    f"convstack/{cfg.network.convstack_variant}, {cfg.network.num_modules} modules")
                   + f", {cfg.network.convolution_filters} filters",
        "fov": list(cfg.model.input_fov_shape),
        "batch_size": bs,
        "autocast_bf16": setup.autocast,
        "bare_fov_per_s": round(b, 2),
        "loop_fov_per_s": round(lp, 2),
        "ratio": round(lp / b, 3),
        "subvolumes_started": started,
    }
    print(f"device: {result['device']}; network: {result['network']}; FOV {result['fov']}; batch {bs}")
    print(f"bare forward/backward/step: {b:.1f} FOV/s")
    print(f"training loop:              {lp:.1f} FOV/s")
    print(f"ratio loop/bare:            {lp / b:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
