"""Training data: volume parts, prepared subvolumes, the background stream and the validation set.

The volumes are split into training and validation parts (``[training]
partitions`` / ``training_partition`` / ``validation_partition``) and brought to
``[volume] resolution`` (:func:`prepare_training_volumes`). Subvolumes are
sampled (:func:`~diluvian.volumes.sample_subvolume_bounds`), their label mask
eroded, optionally reduced to the seed's component, and augmented
(:func:`prepare_subvolume`); :func:`subvolume_stream` yields them endlessly,
round-robin over the volumes, and :class:`Prefetcher` runs such a stream in a
background thread. :func:`validation_subvolumes` draws the fixed validation set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..augment import augment_subvolume
from ..config import Config
from ..errors import ConfigError, DataError
from ..util import fmt_list
from ..volumes import downsample_volume, get_subvolume, partition_volumes, sample_subvolume_bounds

__all__ = [
    "PreparedSubvolume",
    "prepare_training_volumes",
    "prepare_subvolume",
    "subvolume_stream",
    "validation_subvolumes",
    "Prefetcher",
]

_VALIDATION_SEED_TAG = 0x7A11DA7E  # mixes into random_seed for the fixed validation set


def _regexes(mapping: Mapping[str, Any]) -> str:
    return ", ".join(repr(k) for k in mapping) or "none"


def prepare_training_volumes(cfg: Config, volumes: Mapping[str, Any], *, need_training: bool = True,
                             need_validation: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Training and validation parts of the volumes, downsampled to ``[volume] resolution``.

    Returns
    -------
    (training, validation) : dicts of name -> Volume

    Raises
    ------
    DataError
        A volume has no labels or no image, or a FOV-sized subvolume does not fit a part.
    ConfigError
        No volume matches the partition regexes (the message lists the volume
        names and the regexes).
    """
    if not volumes:
        raise ConfigError("no volumes: give one or more dataset TOML files with -v/--volume-file")
    unlabelled = [name for name, v in volumes.items() if v.labels is None]
    if unlabelled:
        raise DataError(f"training needs labelled volumes (ground truth); without labels: "
                        f"{', '.join(repr(n) for n in unlabelled)}")
    imageless = [name for name, v in volumes.items() if v.image is None]
    if imageless:
        raise DataError(f"training needs volumes with an image; labels only: {', '.join(repr(n) for n in imageless)}")
    tc = cfg.training
    names = ", ".join(repr(n) for n in volumes)
    out = []
    for needed, index_map, key, shape in (
            (need_training, tc.training_partition, "training_partition", cfg.model.training_subv_shape),
            (need_validation, tc.validation_partition, "validation_partition", cfg.model.validation_subv_shape)):
        if not needed:
            out.append({})
            continue
        parts = partition_volumes(volumes, tc.partitions, index_map, partitions_key="[training] partitions",
                                  index_key=f"[training] {key}")
        if not parts:
            raise ConfigError(f"no volume matches [training] partitions ({_regexes(tc.partitions)}) and {key} "
                              f"({_regexes(index_map)}); volumes: {names}")
        ready = {}
        for name, vol in parts.items():
            vol = downsample_volume(vol, cfg.volume.resolution)
            if any(s > v for s, v in zip(shape, vol.shape)):
                what = "training" if key == "training_partition" else "validation"
                raise DataError(f"volume {name!r}: the {what} subvolume {fmt_list(shape)} (input FOV "
                                f"{list(cfg.model.input_fov_shape)} plus moves) is larger than its {what} part "
                                f"{list(vol.shape)} (after partitioning and downsampling to "
                                f"{fmt_list(vol.resolution)} nm)")
            ready[name] = vol
        out.append(ready)
    return out[0], out[1]


@dataclass
class PreparedSubvolume:
    """A subvolume ready for a :class:`~diluvian.region.Region`.

    Attributes
    ----------
    image : ndarray of float32, (Z, Y, X)
    target : ndarray of bool, like ``image``
        The (eroded) object mask; False in the label margin.
    seed : ndarray of int64, (3,)
    volume : str
    label_id : int or None
    fill_fraction : float
        Fraction of the labelled area inside the object.
    """

    image: np.ndarray
    target: np.ndarray
    seed: np.ndarray
    volume: str
    label_id: int | None
    fill_fraction: float


def _erosion_structure(radius: Sequence[int]) -> np.ndarray | None:
    r = [max(int(x), 0) for x in radius]
    if not any(r):
        return None
    return np.ones([2 * x + 1 for x in r], dtype=bool)


def prepare_subvolume(sub: Any, cfg: Config, rng: np.random.Generator, augment: bool, volume_name: str = ""
                      ) -> PreparedSubvolume | None:
    """Erode, relabel and augment a :class:`~diluvian.volumes.Subvolume`; None when its seed is lost.

    The label mask is eroded by ``label_erosion`` (the crop border does not
    erode); a seed outside the eroded object rejects the subvolume. With
    ``relabel_seed_component`` only the seed's 6-connected component is kept.
    """
    tc = cfg.training
    if sub.label_mask is None:
        raise DataError(f"volume {volume_name!r}: training needs labels")
    margin = np.asarray(sub.label_margin, dtype=np.int64)
    mask = np.asarray(sub.label_mask, dtype=bool)
    structure = _erosion_structure(tc.label_erosion)
    if structure is not None:
        mask = ndi.binary_erosion(mask, structure=structure, border_value=1)
    local_seed = tuple(int(s) for s in np.asarray(sub.seed) - margin)
    if any(s < 0 or s >= n for s, n in zip(local_seed, mask.shape)) or not mask[local_seed]:
        return None
    if tc.relabel_seed_component:
        comps, _ = ndi.label(mask)
        mask = comps == comps[local_seed]
    sub = dataclasses.replace(sub, label_mask=mask)
    if augment:
        sub = augment_subvolume(sub, tc, rng)
    image = np.ascontiguousarray(sub.image, dtype=np.float32)
    margin = np.asarray(sub.label_margin, dtype=np.int64)
    target = np.zeros(image.shape, dtype=bool)
    target[tuple(slice(int(m), int(m) + n) for m, n in zip(margin, sub.label_mask.shape))] = sub.label_mask
    return PreparedSubvolume(image=image, target=target, seed=np.asarray(sub.seed, dtype=np.int64),
                             volume=volume_name, label_id=sub.label_id,
                             fill_fraction=float(sub.label_mask.mean()))


def _label_margin(cfg: Config) -> np.ndarray:
    return (np.asarray(cfg.model.input_fov_shape) - np.asarray(cfg.model.output_fov_shape)) // 2


def subvolume_stream(volumes: Mapping[str, Any], shape: Sequence[int], cfg: Config, rng: np.random.Generator,
                     augment: bool, max_rejections: int = 1000) -> Iterator[PreparedSubvolume]:
    """Endless prepared subvolumes of ``shape``, round-robin over ``volumes`` (in name order).

    Each volume samples from its own generator spawned from ``rng``; the
    augmentations draw from another one.

    Raises
    ------
    DataError
        No valid subvolume in a volume, or ``max_rejections`` subvolumes in a
        row lost their seed to the label erosion.
    """
    names = sorted(volumes)
    rngs = rng.spawn(len(names) + 1)
    aug_rng = rngs[-1]
    margin = _label_margin(cfg)
    samplers = [sample_subvolume_bounds(volumes[n], shape, r, margin,
                                        exclude_label_zero=cfg.training.exclude_label_zero)
                for n, r in zip(names, rngs)]
    while True:
        for name, sampler in zip(names, samplers):
            for _ in range(max_rejections):
                bounds = next(sampler)
                sub = get_subvolume(volumes[name], bounds, label_downsampling=cfg.volume.label_downsampling)
                prepared = prepare_subvolume(sub, cfg, aug_rng, augment, name)
                if prepared is not None:
                    yield prepared
                    break
            else:
                raise DataError(f"volume {name!r}: {max_rejections} subvolumes in a row lost their seed to "
                                f"[training] label_erosion = {list(cfg.training.label_erosion)}; reduce it")


class Prefetcher:
    """Runs an iterator in a daemon thread, ``maxsize`` items ahead; re-raises its errors in :meth:`get`."""

    def __init__(self, iterator: Iterator[Any], maxsize: int, name: str = "diluvian-prefetch") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._iterator = iterator
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._iterator:
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the consumer
            self._put(_Failure(e))

    def get(self) -> Any:
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=5)


@dataclass
class _Failure:
    error: BaseException


def validation_subvolumes(cfg: Config, volumes: Mapping[str, Any]) -> list[PreparedSubvolume]:
    """The fixed validation set: ``validation_size`` subvolumes of ``validation_subv_shape``.

    Deterministic for a config: drawn round-robin over the validation volumes
    with a generator seeded from ``random_seed``.
    """
    rng = np.random.default_rng([cfg.random_seed % (2**63), _VALIDATION_SEED_TAG])
    stream = subvolume_stream(volumes, cfg.model.validation_subv_shape, cfg, rng, cfg.training.augment_validation)
    return [next(stream) for _ in range(cfg.training.validation_size)]
