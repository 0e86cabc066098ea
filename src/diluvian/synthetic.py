"""Synthetic EM-like volumes with dense neuron ground truth, for tests and demos.

The generator imitates FIB-SEM neuropil at ~10 nm: space-filling neurite-like
objects (tubes along smooth random 3D curves with varying radius, plus blobs)
separated by thin dark membranes, with grey cytoplasm, dark organelle-like
specks, blur and noise.

Construction:

1. Random tube centrelines (persistent random walks in nm, each with its own
   radius that varies along the tube) and blob centres are rasterised.
2. A first Euclidean distance transform gives, for every voxel, its nearest
   centreline voxel; voxels within ``CORE_FRACTION`` of that object's radius
   form its core. A second one assigns every voxel to the nearest core, so
   thick tubes claim more space than thin ones and every voxel is labelled.
   Mitochondria are short stretches of thick tubes' centrelines, blurred and
   thresholded.
3. Labels and mitochondria are warped by a smooth random displacement (curved
   instead of polygonal boundaries).
4. Connected components are relabelled (a tube cut by another becomes two
   objects), fragments below ``MIN_OBJECT_VOXELS`` are absorbed by their
   neighbours, and ids are made consecutive (1..N).
5. The image: per-object grey level, smooth texture, dark mitochondria and
   small dark specks, dark membranes of about ``MEMBRANE_NM`` at label
   boundaries, Gaussian blur and noise.

Everything is deterministic for a given seed. Physical sizes are in nm, so
anisotropic resolutions give correspondingly flattened voxel sizes.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from .errors import DataError
from .util import atomic_hdf5, fmt_list

__all__ = ["synthesize_volume", "write_synthetic_hdf5"]

logger = logging.getLogger(__name__)

TUBE_RADIUS_NM = (30.0, 300.0)  # log-uniform per tube
BLOB_RADIUS_NM = (120.0, 500.0)
TUBE_CELL_AREA_NM2 = np.pi * 115.0 ** 2  # target cross-section per tube, sets the tube count
BLOB_VOLUME_FRACTION = 0.15
PERSISTENCE_NM = 1200.0  # how straight tubes run
CORE_FRACTION = 0.7
MIN_OBJECT_VOXELS = 40
MEMBRANE_NM = 20.0
BLUR_NM = 10.0
NOISE_SIGMA = 9.0
WARP_NM = 40.0  # displacement amplitude (standard deviation) of the boundary warp
WARP_SMOOTH_NM = 250.0
MITO_MIN_RADIUS_NM = 120.0
MITO_PER_VOXEL = 1.5e-5
MITO_LENGTH_NM = 300.0
MITO_SIGMA_NM = 45.0
MITO_THRESHOLD = 0.3  # of the peak of a blurred centreline: radius about 1.5 sigma


def _random_directions(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _tube_paths(rng: np.random.Generator, n: int, extent: NDArray[np.float64], step: float,
                max_steps: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centreline points (n, 2 * max_steps + 1, 3) in nm and radii (n, 2 * max_steps + 1)."""
    start = rng.uniform(0, 1, size=(n, 3)) * extent
    direction = _random_directions(rng, n)
    base = np.exp(rng.uniform(*np.log(TUBE_RADIUS_NM), size=n))
    kappa = np.sqrt(step / PERSISTENCE_NM)
    halves = []
    for sign in (1.0, -1.0):
        p, d = start.copy(), sign * direction
        u = np.zeros(n)  # Ornstein-Uhlenbeck log-radius modulation
        pts, rad = [], []
        for _ in range(max_steps):
            d = d + kappa * rng.normal(size=(n, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            p = p + step * d
            u += -0.02 * u + 0.05 * rng.normal(size=n)
            pts.append(p)
            rad.append(base * np.exp(u))
        halves.append((np.stack(pts, axis=1), np.stack(rad, axis=1)))
    (pf, rf), (pb, rb) = halves
    points = np.concatenate([pb[:, ::-1], start[:, None], pf], axis=1)
    radii = np.concatenate([rb[:, ::-1], base[:, None], rf], axis=1)
    return points, radii


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: NDArray[np.float64]) -> NDArray[np.float32]:
    """Gaussian-smoothed noise of unit standard deviation, made on a coarse grid and zoomed up."""
    factor = np.maximum(np.floor(sigma / 2.0), 1).astype(int)
    coarse_shape = tuple(int(-(-n // f)) + 1 for n, f in zip(shape, factor))
    coarse = ndi.gaussian_filter(rng.normal(size=coarse_shape).astype(np.float32), sigma=sigma / factor, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    # linear interpolation of the coarse grid at the fine voxels, separably per axis
    out = coarse
    for axis, f in enumerate(factor):
        pos = np.arange(shape[axis], dtype=np.float32) / f
        i0 = np.floor(pos).astype(int)
        w = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out.astype(np.float32)


def _fill_small_objects(labels: NDArray[np.int64], min_size: int) -> NDArray[np.int64]:
    """Give the voxels of objects smaller than ``min_size`` to their neighbours.

    Holes are filled by repeated dilation through faces only, so each filled
    voxel joins a 6-connected neighbour and every object stays 6-connected.
    """
    counts = np.bincount(labels.ravel())
    small = counts < min_size
    small[0] = True
    if small.all():  # keep the largest object at least
        small[int(np.argmax(counts[1:])) + 1] = False
    labels = np.where(small[labels], 0, labels)
    cross = ndi.generate_binary_structure(3, 1)
    holes = labels == 0
    while holes.any():
        grown = ndi.grey_dilation(labels, footprint=cross)
        labels = np.where(holes, grown, labels)
        holes = labels == 0
    return labels


def synthesize_volume(shape: Sequence[int] = (64, 128, 128), seed: int = 0,
                      resolution: Sequence[float] = (10.0, 10.0, 10.0)) -> tuple[NDArray[np.uint8], NDArray[np.uint64]]:
    """A synthetic EM-like image and its dense neuron labels.

    Parameters
    ----------
    shape : 3 ints
        Volume shape, ZYX (each at least 8).
    seed : int
        Random seed; the output is a deterministic function of all arguments.
    resolution : 3 floats
        Voxel size in nm, ZYX. Object sizes are physical (cross-sections
        mostly 100-400 nm across, i.e. 10-40 voxels at 10 nm, like FIB-25), so
        they shrink in voxels at coarser resolutions.

    Returns
    -------
    image : ndarray of uint8, shape ``shape``
        Intensities in [1, 255] (never 0, so no voxel looks like missing data).
    labels : ndarray of uint64, shape ``shape``
        Object ids 1..N, every voxel labelled, each id one 6-connected object.

    Raises
    ------
    DataError
        A bad shape or resolution.
    """
    shp = np.asarray(shape, dtype=np.int64).reshape(-1)
    res = np.asarray(resolution, dtype=np.float64).reshape(-1)
    if shp.shape != (3,) or (shp < 8).any():
        raise DataError(f"synthetic volume shape: expected 3 ints >= 8, got {fmt_list(shape)}")
    if res.shape != (3,) or not (np.isfinite(res).all() and (res > 0).all()):
        raise DataError(f"synthetic volume resolution: expected 3 positive numbers (nm), got {fmt_list(resolution)}")
    rng = np.random.default_rng(seed)
    shape_t = tuple(int(s) for s in shp)
    extent = shp * res
    volume_nm3 = float(np.prod(extent))

    # 1. centrelines and blob centres -> marker image with per-voxel radius
    marker = np.zeros(shape_t, dtype=np.int32)
    radius = np.zeros(shape_t, dtype=np.float32)
    step = float(res.min())
    max_steps = int(np.ceil(np.linalg.norm(extent) / step))
    target_length = volume_nm3 / TUBE_CELL_AREA_NM2
    length, next_id = 0.0, 1
    while length < target_length:
        points, radii = _tube_paths(rng, 8, extent, step, max_steps)
        vox = np.floor(points / res).astype(np.int64)
        inside = ((vox >= 0) & (vox < shp)).all(axis=2)
        for i in range(len(points)):
            v = vox[i][inside[i]]
            if len(v) < 2:
                continue
            marker[v[:, 0], v[:, 1], v[:, 2]] = next_id
            radius[v[:, 0], v[:, 1], v[:, 2]] = radii[i][inside[i]]
            next_id += 1
            length += step * len(v)
            if length >= target_length:
                break
    blob_volume = 0.0
    while blob_volume < BLOB_VOLUME_FRACTION * volume_nm3:
        r = float(np.exp(rng.uniform(*np.log(BLOB_RADIUS_NM))))
        c = np.floor(rng.uniform(0, 1, 3) * shp).astype(np.int64)
        marker[tuple(c)] = next_id
        radius[tuple(c)] = r
        next_id += 1
        blob_volume += 4.0 / 3.0 * np.pi * r ** 3

    # 2. cores, then nearest-core assignment; mitochondria
    dist, idx = ndi.distance_transform_edt(marker == 0, sampling=res, return_indices=True)
    nearest = tuple(idx)
    core = np.where(dist <= CORE_FRACTION * radius[nearest], marker[nearest], 0)
    del dist, idx, nearest
    idx = ndi.distance_transform_edt(core == 0, sampling=res, return_distances=False, return_indices=True)
    labels = core[tuple(idx)]
    del idx, core

    # mitochondria: elongated blobs along stretches of thick tubes' centrelines
    mito_seed = np.zeros(shape_t, dtype=np.float32)
    thick = (marker > 0) & (radius >= MITO_MIN_RADIUS_NM)
    candidates = np.flatnonzero(thick)
    if candidates.size:
        picks = rng.choice(candidates, size=max(1, int(MITO_PER_VOXEL * marker.size)), replace=True)
        mito_seed.ravel()[picks] = 1.0
        # grow each pick along the centreline it sits on into a short stretch
        stretch = ndi.binary_dilation(mito_seed > 0, structure=np.ones((3, 3, 3), dtype=bool),
                                      iterations=int(np.ceil(MITO_LENGTH_NM / 2 / step)), mask=thick)
        mito_seed = stretch.astype(np.float32)
    sigma = MITO_SIGMA_NM / res
    line_peak = 1.0 / (2.0 * np.pi * float(np.prod(sigma)) ** (2.0 / 3.0))  # of a blurred 1-voxel line
    mito = ndi.gaussian_filter(mito_seed, sigma=sigma) > MITO_THRESHOLD * line_peak
    del marker, radius, mito_seed

    # 3. curvy boundaries: warp labels and mitochondria with a smooth random displacement
    warp = [np.clip(np.rint(np.arange(n, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(3)])
                            + _smooth_field(rng, shape_t, WARP_SMOOTH_NM / res) * (WARP_NM / r)),
                    0, n - 1).astype(np.int32)
            for a, (n, r) in enumerate(zip(shape_t, res))]
    labels = labels[tuple(warp)]
    mito = mito[tuple(warp)]
    del warp

    # 4. one id per connected piece, no tiny fragments, ids 1..N
    from skimage.measure import label as connected_components

    labels = connected_components(labels, background=0, connectivity=1).astype(np.int64)
    labels = _fill_small_objects(labels, MIN_OBJECT_VOXELS)
    lut = np.cumsum(np.bincount(labels.ravel()) > 0)  # labels has no 0: ids 1..N in order
    labels = lut[labels]
    n_objects = int(labels.max())

    # 5. image
    boundary = np.zeros(shape_t, dtype=bool)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        diff = labels[tuple(a)] != labels[tuple(b)]
        boundary[tuple(a)] |= diff
        boundary[tuple(b)] |= diff
    extra = np.maximum(np.round(MEMBRANE_NM / 2.0 / res).astype(int) - 1, 0)
    if extra.any():
        grid = np.ogrid[tuple(slice(-int(e), int(e) + 1) for e in extra)]
        ball = sum((g / max(int(e), 1)) ** 2 for g, e in zip(grid, extra)) <= 1.0
        boundary = ndi.binary_dilation(boundary, structure=ball)

    def smooth_noise(sigma_nm: float) -> NDArray[np.float32]:
        field = rng.normal(size=shape_t).astype(np.float32)
        out = ndi.gaussian_filter(field, sigma=sigma_nm / res)
        return out / max(float(out.std()), 1e-6)

    grey = rng.normal(160.0, 16.0, size=n_objects + 1).astype(np.float32)
    image = grey[labels]
    image += 8.0 * smooth_noise(25.0)
    image[mito] = 95.0 + 10.0 * smooth_noise(15.0)[mito]
    # organelle-like dark specks: many small ones, fewer larger ones
    for density, sigma_nm, depth in ((2e-3, 10.0, 70.0), (1.5e-4, 35.0, 55.0)):
        specks = (rng.random(shape_t) < density).astype(np.float32)
        specks = ndi.gaussian_filter(specks, sigma=sigma_nm / res)
        peak = float(np.prod(1.0 / (np.sqrt(2 * np.pi) * np.maximum(sigma_nm / res, 0.5))))
        image -= depth * np.minimum(specks / peak, 1.5)
    image[boundary] = rng.normal(70.0, 8.0, size=int(boundary.sum())).astype(np.float32)
    image = ndi.gaussian_filter(image, sigma=BLUR_NM / res)
    image += rng.normal(0.0, NOISE_SIGMA, size=shape_t).astype(np.float32)
    image_u8 = np.clip(np.round(image), 1, 255).astype(np.uint8)
    logger.debug("synthetic volume %s: %d objects", shape_t, n_objects)
    return image_u8, labels.astype(np.uint64)


def labelled_intensity_volume(shape: Sequence[int], seed: int = 0, resolution_nm: float = 20.0
                              ) -> tuple[NDArray[np.float32], NDArray[np.uint64]]:
    """A synthetic volume in which every object has its own intensity (for rule predictors).

    Benchmarks and tests stand a rule in for the network ("the voxels of the seed's
    intensity are the object") so that fills move and stop as a good model's would.

    Parameters
    ----------
    shape : 3 ints
        ZYX shape.
    seed : int
        Random seed (labels from :func:`synthesize_volume`).
    resolution_nm : float
        Isotropic voxel size; objects are physical, so coarser means more objects per voxel.

    Returns
    -------
    image : ndarray of float32
        One intensity per object, spread over [0.2, 0.95].
    labels : ndarray of uint64
    """
    _, labels = synthesize_volume(tuple(shape), seed=seed, resolution=(resolution_nm,) * 3)
    ids, inverse = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed + 1)
    values = rng.permutation(np.linspace(0.2, 0.95, len(ids))).astype(np.float32)
    values[ids == 0] = 0.05
    return values[inverse.reshape(labels.shape)], labels


def write_synthetic_hdf5(path: str | os.PathLike, shape: Sequence[int] = (64, 128, 128), seed: int = 0,
                         resolution: Sequence[float] = (10.0, 10.0, 10.0)) -> None:
    """Write :func:`synthesize_volume` to an HDF5 file in the CREMI layout.

    Datasets ``volumes/raw`` (uint8) and ``volumes/labels/neuron_ids``
    (uint64), both gzip-compressed with the attribute ``resolution`` (nm, ZYX).
    The file is written to a temporary name and renamed.

    Raises
    ------
    DataError
        Bad arguments, or the output directory does not exist.
    """

    image, labels = synthesize_volume(shape, seed, resolution)
    res = np.asarray(resolution, dtype=np.float64)
    chunks = tuple(min(64, s) for s in image.shape)
    with atomic_hdf5(path, suffix=".h5") as f:
        for name, data in (("volumes/raw", image), ("volumes/labels/neuron_ids", labels)):
            ds = f.create_dataset(name, data=data, chunks=chunks, compression="gzip", compression_opts=4)
            ds.attrs["resolution"] = res
