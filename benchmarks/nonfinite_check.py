"""Cost of the NaN/Inf check on float images (``[volume] nonfinite``, diluvian.volumes.finite).

Writes a float32 HDF5 volume (``--shape``, default 128 x 256 x 256) and reads it
(1) whole into memory, as ``load_volumes`` does, and (2) as random FOV-sized
boxes (``--fov``) of a lazy volume, as a fill or training reads it: from the
plain h5py dataset, an unchecked volume, the checking wrapper (``error``) and
the masking one (``mask``). Prints the best of
``--rounds`` (the machine is shared).

    python benchmarks/nonfinite_check.py [--shape 128 256 256] [--fov 33] [--reads 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from diluvian.volumes import HDF5Volume, load_volumes


def _best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256])
    ap.add_argument("--fov", type=int, default=33)
    ap.add_argument("--reads", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        h5 = Path(d) / "f.h5"
        with h5py.File(h5, "w") as f:
            f["raw"] = rng.random(args.shape, dtype=np.float32)
            f["labels"] = rng.integers(1, 9, args.shape, dtype=np.uint64)
            f["raw"].attrs["resolution"] = [10.0, 10.0, 10.0]
        toml = Path(d) / "f.toml"
        toml.write_text('[[dataset]]\nname = "f"\nhdf5_file = "f.h5"\nimage_dataset = "raw"\nlabel_dataset = "labels"\n')
        starts = rng.integers(0, np.asarray(args.shape) - args.fov, size=(args.reads, 3))
        print(f"volume {args.shape} float32, {args.reads} reads of {args.fov}^3, best of {args.rounds}")
        raw_file = h5py.File(h5, "r")
        plain = raw_file["raw"]
        t = _best(lambda: plain[...], args.rounds)
        print(f"whole volume, h5py:            {t * 1e3:8.1f} ms")
        t = _best(lambda: HDF5Volume("f", h5, "raw", "labels").to_memory(), args.rounds)
        print(f"whole volume, load (no check): {t * 1e3:8.1f} ms  (image, labels)")
        for policy in ("error", "mask"):
            t = _best(lambda: load_volumes([toml], in_memory=True, nonfinite=policy), args.rounds)
            print(f"whole volume, load ({policy:5s}):   {t * 1e3:8.1f} ms  (image, labels{' and mask' if policy == 'mask' else ''})")

        def boxes(read):
            for s in starts:
                read(s, s + args.fov)

        t = _best(lambda: boxes(lambda a, b: plain[a[0]:b[0], a[1]:b[1], a[2]:b[2]]), args.rounds)
        print(f"FOV boxes, h5py:               {t / args.reads * 1e6:8.1f} us/read")
        unchecked = HDF5Volume("f", h5, "raw", "labels")
        t = _best(lambda: boxes(unchecked.get_image), args.rounds)
        print(f"FOV boxes, get_image (no check): {t / args.reads * 1e6:6.1f} us/read")
        for policy in ("error", "mask"):
            vol = load_volumes([toml], in_memory=False, nonfinite=policy)["f"]
            t = _best(lambda: boxes(vol.get_image), args.rounds)
            print(f"FOV boxes, get_image ({policy:5s}): {t / args.reads * 1e6:8.1f} us/read")
        raw_file.close()


if __name__ == "__main__":
    main()
