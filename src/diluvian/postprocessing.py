"""Turning an object-probability mask into a body: threshold, closing, seed component."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

FACE_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)
"""6-connectivity, as the original diluvian and CREMI use."""


def seed_component(
    probabilities: np.ndarray,
    seed: Sequence[int],
    threshold: float,
    closing_shape: Sequence[int] = (),
) -> np.ndarray | None:
    """Connected component of ``probabilities >= threshold`` that contains ``seed``.

    Parameters
    ----------
    probabilities : ndarray of float, shape (Z, Y, X)
        Object probabilities; NaN (never predicted) counts as outside.
    seed : sequence of 3 ints
        Seed voxel in ``probabilities`` coordinates.
    threshold : float
    closing_shape : sequence of 3 ints, optional
        If given, grey closing with a box of this shape before thresholding
        (grey rather than binary closing, so the border is not eroded).

    Returns
    -------
    ndarray of bool or None
        The component (same shape as ``probabilities``), or None when the seed
        voxel is below the threshold.
    """
    if len(closing_shape) or threshold <= 0:
        probs = np.nan_to_num(probabilities, nan=0.0)
        if len(closing_shape):
            probs = ndimage.grey_closing(probs, size=tuple(closing_shape), mode="nearest")
        binary = probs >= threshold
    else:
        binary = probabilities >= threshold  # NaN compares False: never predicted is outside
    seed = tuple(int(s) for s in seed)
    if not binary[seed]:
        return None
    labels, _ = label_components(binary)
    return labels == labels[seed]


def label_components(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of a boolean array, numbered 1..n in raster order (0 outside).

    The same labels as ``scipy.ndimage.label(binary, FACE_CONNECTIVITY)``, computed by
    connected-components-3d (``cc3d``), a few times faster on the fill's bodies.

    Returns
    -------
    labels : ndarray of uint32
    n : int
        Number of components.
    """
    import cc3d

    binary = np.ascontiguousarray(binary, dtype=bool)
    if not binary.size:
        return np.zeros(binary.shape, dtype=np.uint32), 0
    labels, n = cc3d.connected_components(binary, connectivity=6, return_N=True, out_dtype=np.uint32)
    return labels, int(n)


def dilate_faces(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary dilation by the 6-connected cross, ``iterations`` times (voxels beyond the array are outside).

    Equals ``scipy.ndimage.binary_dilation(mask, FACE_CONNECTIVITY, iterations)``, by
    shifted ORs (an order of magnitude faster than scipy's for a few iterations).
    """
    out = np.array(mask, dtype=bool)  # a copy, also for 0 iterations (scipy's 0 means "until nothing changes")
    for _ in range(int(iterations)):
        src, out = out, out.copy()
        for axis in range(out.ndim):
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(1, None), slice(None, -1)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(start, stop)`` of the nonzero voxels of a 3D mask; None when there are none."""
    mask = np.asarray(mask)
    start, stop = np.zeros(mask.ndim, dtype=np.int64), np.zeros(mask.ndim, dtype=np.int64)
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hit):
            return None
        start[axis], stop[axis] = hit[0], hit[-1] + 1
    return start, stop


def crop_to_nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop a mask to the bounding box of its nonzero voxels.

    Returns
    -------
    start : ndarray of int, shape (3,)
        Offset of the crop in ``mask``.
    cropped : ndarray
        ``mask`` restricted to the box (empty box for an all-zero mask).
    """
    bounds = bounding_box(mask)
    if bounds is None:
        return np.zeros(mask.ndim, dtype=np.int64), mask[tuple(slice(0, 0) for _ in range(mask.ndim))]
    start, stop = bounds
    return start, mask[tuple(slice(a, b) for a, b in zip(start, stop))]



def boundary_evidence(image: np.ndarray, sigma: float) -> np.ndarray:
    """How strongly each voxel looks like a membrane: the largest Hessian eigenvalue, clipped at 0.

    Membranes are thin dark sheets in EM: across one, the intensity has a valley, so the
    Hessian of the image smoothed by ``sigma`` voxels has a large positive eigenvalue
    there, while a uniformly dark (or bright) cell interior has none. On the FIB-25
    training half at 20 nm this separates ground-truth boundary voxels from the rest far
    better than the smoothed intensity (ROC AUC 0.87 vs 0.72 at ``sigma`` 1).

    Returns
    -------
    ndarray of float32, same shape as ``image``
    """
    from skimage.feature import hessian_matrix

    image = np.asarray(image, dtype=np.float32)
    hessian = hessian_matrix(image, sigma=max(float(sigma), 0.5), order="rc", use_gaussian_derivatives=False)
    if image.ndim != 3:
        from skimage.feature import hessian_matrix_eigvals

        return np.maximum(hessian_matrix_eigvals(hessian)[0], 0).astype(np.float32)
    return np.maximum(largest_symmetric_eigenvalue(*hessian), 0)


def largest_symmetric_eigenvalue(hzz: np.ndarray, hzy: np.ndarray, hzx: np.ndarray, hyy: np.ndarray,
                                 hyx: np.ndarray, hxx: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """The largest eigenvalue of a field of symmetric 3 × 3 matrices, in closed form.

    The trigonometric solution of the characteristic cubic (O. K. Smith, 1961), in float64
    over ``chunk`` voxels at a time: about 10× faster than a LAPACK call per voxel
    (``skimage.feature.hessian_matrix_eigvals``), and equal to it at float32 precision.
    The six arguments are the matrix entries in ``skimage.feature.hessian_matrix`` order.

    Returns
    -------
    ndarray of float32, the shape of the entries
    """
    entries = [np.asarray(h).ravel() for h in (hzz, hyy, hxx, hzy, hzx, hyx)]
    out = np.empty(entries[0].size, dtype=np.float32)
    for start in range(0, out.size, chunk):
        part = slice(start, start + chunk)
        a, b, c, d, e, f = (h[part].astype(np.float64) for h in entries)
        q = (a + b + c) / 3.0  # the mean eigenvalue; shift it out
        a -= q
        b -= q
        c -= q
        p = np.sqrt((a * a + b * b + c * c + 2.0 * (d * d + e * e + f * f)) / 6.0)
        det = a * (b * c - f * f) - d * (d * c - f * e) + e * (d * f - b * e)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(p > 0, det / (2.0 * p ** 3), 1.0)
        out[part] = q + 2.0 * p * np.cos(np.arccos(np.clip(r, -1.0, 1.0)) / 3.0)
    return out.reshape(np.shape(hzz))


def membrane_mask(evidence: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of voxels with the strongest boundary evidence: the membranes.

    A share of the voxels rather than an evidence level, so that one setting carries
    over to volumes of other contrast. 0 gives no membrane voxels.
    """
    if fraction <= 0:
        return np.zeros(np.shape(evidence), dtype=bool)
    return np.asarray(evidence) > np.quantile(evidence, 1.0 - fraction)
