"""Training augmentations: pure functions on arrays (spec §4.4, plus FFN-style misalignment).

Every function takes its randomness from a :class:`numpy.random.Generator`
argument and returns new arrays (inputs are never modified). Geometric
augmentations transform the image, the object's label mask and the seed
together; intensity augmentations change only the image. The label mask may be
smaller than the image by ``label_margin`` voxels on each side (a
:class:`~diluvian.volumes.Subvolume`'s layout); the functions keep that layout.

:func:`augment_subvolume` applies the chain configured in ``[training]``, in the
original's order plus misalignment:

1. axis permutations (``augment_permute_axes``), 2. mirrors (``augment_mirrors``),
3. misalignment (``augment_misalignment``), 4. per-section noise (``augment_noise``),
5. artefacts (``augment_artifacts``), 6. missing sections (``augment_missing_data``),
7. contrast (``augment_contrast``), 8. clip to [0, 1].

``augment_use_both``: the original emitted the raw *and* the augmented copy
of each subvolume at each augmenter (up to 32 correlated variants of one
subvolume in a row), while ``augment_use_both = false`` applied each augmenter
with probability 0.5. Here each augmenter is applied with probability 0.5 in
both cases: one subvolume in, one out. Every augmenter therefore touches half of
the training stream, as in the original with either setting, but without runs
of near-identical copies of one subvolume. The key is kept for compatibility.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from .errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "permute_axes",
    "mirror",
    "add_noise",
    "missing_sections",
    "adjust_contrast",
    "misalign",
    "blend_artifacts",
    "clip_image",
    "augment_subvolume",
    "load_artifacts",
]

AUGMENT_PROBABILITY = 0.5
"""Probability that each configured augmenter is applied to a subvolume."""


def _margin(label_margin: Any) -> NDArray[np.int64]:
    if label_margin is None:
        return np.zeros(3, dtype=np.int64)
    m = np.asarray(label_margin, dtype=np.int64).reshape(-1)
    return np.broadcast_to(m, (3,)).copy() if m.size == 1 else m.copy()


# --------------------------------------------------------------------------- geometric


def permute_axes(image: NDArray, label_mask: NDArray | None, seed: Sequence[int], perm: Sequence[int],
                 label_margin: Any = 0) -> tuple[NDArray, NDArray | None, NDArray[np.int64], NDArray[np.int64]]:
    """Transpose image, label mask, seed and label margin by the axis permutation ``perm``.

    Returns
    -------
    image, label_mask, seed, label_margin
        ``image.transpose(perm)`` etc.; ``seed[i]`` becomes ``seed[perm[i]]``.
    """
    perm = tuple(int(p) for p in perm)
    if sorted(perm) != [0, 1, 2]:
        raise ValueError(f"expected a permutation of (0, 1, 2), got {perm}")
    seed = np.asarray(seed, dtype=np.int64)
    margin = _margin(label_margin)
    out_mask = None if label_mask is None else np.ascontiguousarray(label_mask.transpose(perm))
    return np.ascontiguousarray(image.transpose(perm)), out_mask, seed[list(perm)].copy(), margin[list(perm)].copy()


def mirror(image: NDArray, label_mask: NDArray | None, seed: Sequence[int], axis: int
           ) -> tuple[NDArray, NDArray | None, NDArray[np.int64]]:
    """Flip image and label mask along ``axis``; ``seed[axis] = n - 1 - seed[axis]``.

    The label mask sits centred in the image (equal margins on both sides), so
    flipping both keeps them aligned.
    """
    seed = np.asarray(seed, dtype=np.int64).copy()
    seed[axis] = image.shape[axis] - 1 - seed[axis]
    out_mask = None if label_mask is None else np.flip(label_mask, axis).copy()
    return np.flip(image, axis).copy(), out_mask, seed


def _shift_plane(plane: NDArray, dy: int, dx: int) -> NDArray:
    """Translate a 2D array by (dy, dx); vacated voxels repeat the nearest edge."""
    h, w = plane.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return plane[np.ix_(ys, xs)]


def misalign(image: NDArray, label_mask: NDArray | None, seed: Sequence[int], axis: int, prob: float,
             max_shift: int, rng: np.random.Generator, label_margin: Any = 0) -> tuple[NDArray, NDArray | None]:
    """Misalign sections (FFN-style translation): shift whole blocks of sections in-plane.

    Each section along ``axis`` other than the seed's is, with probability
    ``prob``, the start of a misalignment: it and every section farther from the
    seed are translated in-plane by a random offset of up to ``max_shift`` voxels
    per in-plane axis (offsets of several hits add up). The seed's section never
    moves, so the seed stays on its object. The label mask is shifted exactly
    like the image (vacated voxels repeat the nearest edge in both).

    Returns
    -------
    image, label_mask
    """
    n = image.shape[axis]
    s = int(np.asarray(seed)[axis])
    margin = _margin(label_margin)
    if max_shift <= 0 or prob <= 0:
        return image.copy(), None if label_mask is None else label_mask.copy()
    hits = rng.random(n) < prob
    hits[s] = False
    offsets = np.zeros((n, 2), dtype=np.int64)
    for k in np.flatnonzero(hits):
        shift = rng.integers(-max_shift, max_shift + 1, size=2)
        if k > s:
            offsets[k:] += shift
        else:
            offsets[:k + 1] += shift
    img = np.moveaxis(image.copy(), axis, 0)
    lab = None if label_mask is None else np.moveaxis(label_mask.copy(), axis, 0)
    m = int(margin[axis])
    for k in np.flatnonzero(offsets.any(axis=1)):
        dy, dx = (int(v) for v in offsets[k])
        img[k] = _shift_plane(img[k], dy, dx)
        if lab is not None and 0 <= k - m < lab.shape[0]:
            lab[k - m] = _shift_plane(lab[k - m], dy, dx)
    img = np.ascontiguousarray(np.moveaxis(img, 0, axis))
    if lab is not None:
        lab = np.ascontiguousarray(np.moveaxis(lab, 0, axis))
    return img, lab


# --------------------------------------------------------------------------- intensity


def _per_section_shape(image: NDArray, axis: int) -> tuple[int, ...]:
    return tuple(image.shape[axis] if i == axis else 1 for i in range(image.ndim))


def add_noise(image: NDArray, axis: int, mul: float, add: float, rng: np.random.Generator) -> NDArray:
    """``image * m + a`` with ``m ~ N(1, mul)``, ``a ~ N(0, add)`` drawn per section along ``axis``.

    ``axis = -1`` draws a single pair for the whole volume.
    """
    if axis == -1:
        shape: tuple[int, ...] = (1,) * image.ndim
    else:
        shape = _per_section_shape(image, axis)
    m = rng.normal(1.0, mul, size=shape).astype(np.float32)
    a = rng.normal(0.0, add, size=shape).astype(np.float32)
    return (image * m + a).astype(np.float32, copy=False)


def missing_sections(image: NDArray, axis: int, prob: float, seed: Sequence[int], rng: np.random.Generator
                     ) -> NDArray:
    """Blank (set to 0) each section along ``axis`` with probability ``prob``, never the seed's section."""
    n = image.shape[axis]
    hits = rng.random(n) < prob
    hits[int(np.asarray(seed)[axis])] = False
    out = image.copy()
    if hits.any():
        idx = [slice(None)] * image.ndim
        idx[axis] = hits
        out[tuple(idx)] = 0
    return out


def adjust_contrast(image: NDArray, axis: int, prob: float, scaling_mean: float, scaling_std: float,
                    center_mean: float, center_std: float, rng: np.random.Generator) -> NDArray:
    """Contrast change of randomly selected sections (spec §4.4).

    Sections along ``axis`` are selected with probability ``prob``. One scale
    ``s ~ N(scaling_mean, scaling_std)`` and one centre ``c ~ N(center_mean,
    center_std)`` are drawn for all of them; with ``lo``/``hi`` the min/max over
    the selected voxels, each becomes ``s * (x - lo) + 0.5 * s * c * (hi - lo) + lo``.
    """
    n = image.shape[axis]
    hits = rng.random(n) < prob
    out = image.copy()
    if not hits.any():
        return out
    s = float(rng.normal(scaling_mean, scaling_std))
    c = float(rng.normal(center_mean, center_std))
    idx = [slice(None)] * image.ndim
    idx[axis] = hits
    sel = out[tuple(idx)]
    lo, hi = float(sel.min()), float(sel.max())
    out[tuple(idx)] = s * (sel - lo) + 0.5 * s * c * (hi - lo) + lo
    return out


def blend_artifacts(image: NDArray, axis: int, prob: float, artifact_image: NDArray, artifact_alpha: NDArray,
                    rng: np.random.Generator, max_tries: int = 100) -> NDArray:
    """Blend artefact patches into sections: ``image * (1 - alpha) + artifact * alpha``.

    Each section along ``axis`` is hit with probability ``prob``; a hit takes a
    random one-section patch of the artefact volume (same in-plane shape as the
    section) whose alpha is not all zero.

    Parameters
    ----------
    artifact_image, artifact_alpha : ndarray of float32, shape (Z, Y, X)
        Artefact intensities in [0, 1] and blending weights in [0, 1], sections
        along axis 0. Each must be at least as large in-plane as the image's
        sections.
    max_tries : int
        Patches drawn per hit before giving up on that section.
    """
    n = image.shape[axis]
    hits = np.flatnonzero(rng.random(n) < prob)
    out = np.moveaxis(image.copy(), axis, 0)
    if not len(hits):
        return np.moveaxis(out, 0, axis)
    plane = np.asarray(out.shape[1:])
    art_shape = np.asarray(artifact_image.shape[1:])
    if (art_shape < plane).any():
        raise DataError(f"artifacts volume sections {art_shape.tolist()} are smaller than the subvolume's "
                        f"{plane.tolist()}")
    for k in hits:
        for _ in range(max_tries):
            z = int(rng.integers(artifact_image.shape[0]))
            y0, x0 = (int(rng.integers(a - p + 1)) for a, p in zip(art_shape, plane))
            alpha = artifact_alpha[z, y0:y0 + plane[0], x0:x0 + plane[1]]
            if np.any(alpha > 0):
                art = artifact_image[z, y0:y0 + plane[0], x0:x0 + plane[1]]
                out[k] = out[k] * (1.0 - alpha) + art * alpha
                break
    return np.moveaxis(out, 0, axis)


def clip_image(image: NDArray) -> NDArray:
    """Clip to [0, 1] (float32)."""
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- artefact volumes


@functools.lru_cache(maxsize=4)
def load_artifacts(volume_file: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Image and alpha of the dataset named ``Artifacts`` in the dataset TOML ``volume_file`` (cached).

    The alpha is the dataset's mask: bool masks give 0/1, integer masks are
    divided by their dtype's maximum (uint8 255 -> 1.0), float masks are used as
    they are (clipped to [0, 1]).

    Raises
    ------
    DataError
        No ``Artifacts`` dataset, or it has no image or no mask.
    """
    from .volumes import load_volumes

    volumes = load_volumes([volume_file], in_memory=True)
    if "Artifacts" not in volumes:
        raise DataError(f"{volume_file}: augment_artifacts needs a dataset named 'Artifacts', found "
                        f"{sorted(volumes)}")
    vol = volumes["Artifacts"]
    if vol.image is None or vol.mask is None:
        raise DataError(f"{volume_file}: the 'Artifacts' dataset needs an image and a mask (the blending alpha)")
    image = vol.get_image((0, 0, 0), vol.shape)
    raw = np.asarray(vol.mask[...])
    if raw.dtype == bool:
        alpha = raw.astype(np.float32)
    elif raw.dtype.kind in "iu":
        alpha = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
    else:
        alpha = np.clip(raw.astype(np.float32), 0.0, 1.0)
    return image, alpha


# --------------------------------------------------------------------------- the chain


def augment_subvolume(subvolume: Any, training_cfg: Any, rng: np.random.Generator) -> Any:
    """Apply the ``[training]`` augmentation chain to a subvolume (see the module docstring).

    Parameters
    ----------
    subvolume : Subvolume
        ``image`` float32 in [0, 1], ``label_mask`` (bool or None), ``seed``,
        ``label_margin``.
    training_cfg : TrainingConfig
    rng : numpy.random.Generator

    Returns
    -------
    Subvolume
        A new subvolume (the input is not modified); the image is float32 in [0, 1].

    Notes
    -----
    A permutation that would change the image's shape (swapping axes of
    different lengths) is skipped, so that the subvolume keeps the geometry the
    FOVs were sized for.
    """
    p = AUGMENT_PROBABILITY
    image = np.asarray(subvolume.image, dtype=np.float32)
    label = subvolume.label_mask
    seed = np.asarray(subvolume.seed, dtype=np.int64)
    margin = _margin(getattr(subvolume, "label_margin", 0))

    for perm in training_cfg.augment_permute_axes:
        if rng.random() < p:
            if tuple(image.shape[i] for i in perm) != image.shape:
                log.debug("permutation %s skipped: it would change the subvolume shape %s", perm, image.shape)
                continue
            image, label, seed, margin = permute_axes(image, label, seed, perm, margin)
    for axis in training_cfg.augment_mirrors:
        if rng.random() < p:
            image, label, seed = mirror(image, label, seed, axis)
    for aug in training_cfg.augment_misalignment:
        if rng.random() < p:
            image, label = misalign(image, label, seed, aug.axis, aug.prob, aug.max_shift, rng, margin)
    for aug in training_cfg.augment_noise:
        if rng.random() < p:
            image = add_noise(image, aug.axis, aug.mul, aug.add, rng)
    for aug in training_cfg.augment_artifacts:
        if rng.random() < p and aug.volume_file:
            art_image, art_alpha = load_artifacts(aug.volume_file)
            image = blend_artifacts(image, aug.axis, aug.prob, art_image, art_alpha, rng)
    for aug in training_cfg.augment_missing_data:
        if rng.random() < p:
            image = missing_sections(image, aug.axis, aug.prob, seed, rng)
    for aug in training_cfg.augment_contrast:
        if rng.random() < p:
            image = adjust_contrast(image, aug.axis, aug.prob, aug.scaling_mean, aug.scaling_std,
                                    aug.center_mean, aug.center_std, rng)
    image = clip_image(image)
    return dataclasses.replace(subvolume, image=image, label_mask=label, seed=seed, label_margin=margin)
