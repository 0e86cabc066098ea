"""FOV reads through diluvian.arrays.ChunkCachedImage (what a fill reads its image through).

Reads random FOV-sized boxes of a synthetic in-memory volume (128 x 256 x 256 uint8)
through a ChunkCachedImage with 64^3 chunks, and for comparison straight from
``Volume.get_image``. (The fill's ``LazyImage`` is now this class.)
Prints microseconds per read (best of ``--rounds``: the machine is shared).

    python benchmarks/array_reads.py [--reads 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from diluvian.arrays import ChunkCachedImage
from diluvian.volumes import NdarrayVolume


class _Direct:
    """Reads straight from the volume (no cache), indexed like an array."""

    def __init__(self, volume):
        self.volume = volume

    def __getitem__(self, key):
        return self.volume.get_image([k.start for k in key], [k.stop for k in key])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reads", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    vol = NdarrayVolume("v", rng.integers(0, 256, (128, 256, 256)).astype(np.uint8))
    views = {"ChunkCachedImage": lambda: ChunkCachedImage(vol, (0, 0, 0), vol.shape), "get_image": lambda: _Direct(vol)}
    print(f"{'reader':22s} " + " ".join(f"{f'{n}^3 (us)':>12s}" for n in (9, 17, 33)))
    for name, make in views.items():
        row = []
        for fov in (9, 17, 33):
            starts = rng.integers(0, 128 - fov, (args.reads, 3))
            keys = [tuple(slice(int(a), int(a) + fov) for a in s) for s in starts]
            times = []
            for _ in range(args.rounds):
                view = make()
                for k in keys[:200]:  # warm the cache
                    view[k]
                t = time.perf_counter()
                for k in keys:
                    view[k]
                times.append((time.perf_counter() - t) / len(keys) * 1e6)
            row.append(float(np.min(times)))
        print(f"{name:22s} " + " ".join(f"{v:12.1f}" for v in row))


if __name__ == "__main__":
    main()
