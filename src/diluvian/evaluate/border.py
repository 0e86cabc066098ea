"""CREMI's border mask: GT pixels near a label boundary in their Z section are not evaluated (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import DataError

__all__ = ["border_mask"]


def _boundaries(block: NDArray) -> NDArray[np.bool_]:
    """Pixels whose in-plane 4-neighbourhood holds another label, per Z section of a (Z, Y, X) block.

    Image edges are not boundaries (as if the image were edge-padded).
    """
    out = np.zeros(block.shape, dtype=bool)
    d = block[:, 1:, :] != block[:, :-1, :]
    out[:, 1:, :] |= d
    out[:, :-1, :] |= d
    d = block[:, :, 1:] != block[:, :, :-1]
    out[:, :, 1:] |= d
    out[:, :, :-1] |= d
    return out


def _disk_half_widths(threshold_px: float) -> list[tuple[int, int]]:
    """``(dy, w)`` pairs: the integer offsets ``(dy, dx)`` with ``sqrt(dy² + dx²) <= threshold_px`` are ``|dx| <= w``.

    The test is the same float computation as a Euclidean distance transform's,
    so the disk matches ``distance_transform_edt(...) <= threshold_px`` exactly.
    """
    r = int(math.floor(threshold_px))
    rows = []
    for dy in range(-r, r + 1):
        dx = np.arange(r + 1)
        inside = np.sqrt((dy * dy + dx * dx).astype(np.float64)) <= threshold_px
        rows.append((dy, int(np.count_nonzero(inside)) - 1))
    return rows


def _dilate_disk(boundary: NDArray[np.bool_], threshold_px: float) -> NDArray[np.bool_]:
    """Per-section dilation of a (Z, Y, X) boolean block by the disk of :func:`_disk_half_widths`.

    The disk is a stack of horizontal segments: for each half-width ``w`` a
    sliding-window count along X (from one cumulative sum) gives the row
    dilation ``H_w``, and the result is the OR over ``dy`` of ``H_w(dy)`` shifted
    by ``dy`` along Y. Cost: O(voxels × threshold), independent of the number of
    boundary pixels.
    """
    nz, ny, nx = boundary.shape
    rows = _disk_half_widths(threshold_px)
    pad = max(w for _, w in rows)
    # csum[k] = number of boundary pixels at x < clip(k - pad, 0, nx): padded so that every
    # window below is a plain slice
    csum = np.empty((nz, ny, nx + 1 + 2 * pad), dtype=np.int32)
    csum[:, :, : pad + 1] = 0
    np.cumsum(boundary, axis=2, dtype=np.int32, out=csum[:, :, pad + 1 : pad + 1 + nx])
    csum[:, :, pad + 1 + nx :] = csum[:, :, pad + nx : pad + 1 + nx]
    out = np.zeros(boundary.shape, dtype=bool)
    for w in sorted({w for _, w in rows}):
        # h[x] = any(boundary[max(x - w, 0) : min(x + w + 1, nx)])
        h = np.greater(csum[:, :, pad + w + 1 : pad + w + 1 + nx], csum[:, :, pad - w : pad - w + nx])
        for dy, w_dy in rows:
            if w_dy != w or abs(dy) >= ny:
                continue
            if dy >= 0:
                out[:, : ny - dy] |= h[:, dy:]
            else:
                out[:, -dy:] |= h[:, : ny + dy]
    return out


def _border_mask_block(block: NDArray, threshold_px: float) -> NDArray[np.bool_]:
    """:func:`border_mask` of every Z section of a (Z, Y, X) block, computed together."""
    boundary = _boundaries(block)
    if threshold_px < 1 or not boundary.any():  # nothing else is within < 1 px of a boundary
        return boundary
    return _dilate_disk(boundary, threshold_px)


def border_mask(gt_section: ArrayLike, threshold_px: float) -> NDArray[np.bool_]:
    """CREMI border mask of one 2D GT section: True where pixels are *excluded*.

    Parameters
    ----------
    gt_section : array of int, shape (Y, X)
        GT labels of one Z section.
    threshold_px : float
        Border threshold in pixels (``border_threshold_nm / resolution_yx``).

    Returns
    -------
    ndarray of bool, shape (Y, X)
        True for pixels within Euclidean distance ``<= threshold_px`` of a
        boundary pixel (boundary pixels themselves included, even for 0).

    Raises
    ------
    DataError
        ``threshold_px`` < 0, or the section is not 2D.

    Notes
    -----
    The rule of cremi_python's ``create_border_mask_2d``: a pixel is a
    *boundary* pixel when one of its 4-neighbours has a different label (pixels
    outside the image count as equal, so image edges are not boundaries);
    ``d(p)`` is the Euclidean distance from ``p`` to the nearest boundary pixel
    (0 on boundaries), as ``scipy.ndimage.distance_transform_edt`` of the
    non-boundary pixels gives it; excluded = ``d(p) <= threshold_px``. A section
    without any boundary excludes nothing.

    It is computed without a distance transform, as the dilation of the
    boundary pixels by the digital disk ``{(dy, dx): sqrt(dy² + dx²) <= threshold_px}``
    (the same set of pixels, several times faster for CREMI-sized thresholds).

    Examples
    --------
    >>> sec = np.array([[1, 1, 2, 2, 2]])
    >>> border_mask(sec, 1.0).astype(int).tolist()
    [[1, 1, 1, 1, 0]]
    """
    section = np.asarray(gt_section)
    if section.ndim != 2:
        raise DataError(f"border_mask: expected a 2D (Y, X) section, got shape {list(section.shape)}")
    if not threshold_px >= 0:
        raise DataError(f"border_mask: threshold must be >= 0 pixels, got {threshold_px}")
    return _border_mask_block(section[None], float(threshold_px))[0]
