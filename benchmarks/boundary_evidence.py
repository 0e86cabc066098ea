"""Cost of the boundary evidence (the largest Hessian eigenvalue) that flood guards and claiming use.

Times, side by side on the same smoothed random image (``--shape``, default one 128³
block's read box with its margin, 152 × 176 × 176), the Hessian alone, the largest
eigenvalue by LAPACK per voxel (``skimage.feature.hessian_matrix_eigvals``, what
``boundary_evidence`` used before) and by the closed form it uses now
(``diluvian.postprocessing.largest_symmetric_eigenvalue``); prints the best of
``--rounds``, the ratio and the largest difference.

    python benchmarks/boundary_evidence.py [--shape 152 176 176] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from scipy import ndimage
from skimage.feature import hessian_matrix, hessian_matrix_eigvals

from diluvian.postprocessing import largest_symmetric_eigenvalue


def _best(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[152, 176, 176])
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    image = ndimage.gaussian_filter(np.random.default_rng(0).random(args.shape).astype(np.float32), 1.0)
    voxels = image.size
    t_h, hessian = _best(lambda: hessian_matrix(image, sigma=args.sigma, order="rc",
                                                use_gaussian_derivatives=False), args.rounds)
    t_lapack, ref = _best(lambda: hessian_matrix_eigvals(hessian)[0], args.rounds)
    t_closed, got = _best(lambda: largest_symmetric_eigenvalue(*hessian), args.rounds)
    print(f"image {args.shape} ({voxels / 1e6:.2f} Mvoxels), best of {args.rounds}")
    print(f"  Hessian (6 Gaussian derivatives):   {t_h:7.3f} s")
    print(f"  largest eigenvalue, LAPACK/voxel:   {t_lapack:7.3f} s")
    print(f"  largest eigenvalue, closed form:    {t_closed:7.3f} s")
    print(f"  eigenvalue ratio LAPACK / closed form: {t_lapack / t_closed:.1f}x; whole boundary evidence "
          f"{(t_h + t_lapack) / (t_h + t_closed):.1f}x faster")
    print(f"  largest |difference|: {float(np.abs(got - ref).max()):.3g} (|values| up to {float(np.abs(ref).max()):.3g})")


if __name__ == "__main__":
    main()
