"""Moving-FOV training of flood-filling networks, and validation (spec §4).

Training
--------
The volumes are split into training and validation parts (``[training]
partitions`` / ``training_partition`` / ``validation_partition``) and brought
to ``[volume] resolution``. A background thread streams training subvolumes of
``model.training_subv_shape``, round-robin over the training volumes: sampled
(:func:`~diluvian.volumes.sample_subvolume_bounds`), label mask eroded by
``label_erosion`` (subvolumes whose seed falls outside the eroded object are
redrawn), optionally reduced to the seed's connected component, and augmented
(:func:`~diluvian.augment.augment_subvolume`).

``batch_size`` slots each hold a :class:`~diluvian.region.Region` on one
subvolume (target = its object, no padding, no anti-merge bias). At every step
each slot contributes the next FOV of its region (a slot whose move queue is
empty starts on a new subvolume, with the seed FOV), the batch goes through one
forward/backward/optimizer step, and the network's own (detached) predictions
are written back into the regions, which queues the next moves: training is
self-fed, as in FFN. The loss is binary cross-entropy on logits against soft
targets (``v_true``/``v_false``), per-sample weighted by the inverse frequency of
the subvolume's filling fraction when ``fill_factor_bins`` is set.

On CUDA the slots form two groups that alternate: while the device runs one
group's step, the host writes the previous step's predictions into the other
group's regions and assembles its next batch, so the device rarely waits for
NumPy. Each region still sees the prediction of its own previous FOV; a
prediction just comes from weights one step older.

Validation
----------
A fixed set of ``validation_size`` subvolumes of ``model.validation_subv_shape``
is drawn once from the validation parts with a seed derived from
``random_seed`` (the same set every epoch; augmented only with
``augment_validation``, and then identically every epoch). Every epoch each
validation region is filled to completion with the network in eval mode, many
regions batched per forward pass, and scored with ``validation_metric`` over
the area its output FOVs can cover. ``val_subv_metric`` is the mean score and
``val_loss`` the mean loss over all validation FOVs (there are no padding
batches).

Outputs for ``-mo BASE``: ``BASE.toml`` (the effective config, at the start),
``BASE.pt`` (the best model by ``val_subv_metric``, with optimizer state),
``BASE.csv`` (``epoch,loss,val_loss,val_subv_metric,time``, rewritten every
epoch), ``BASE.png`` (the metric plot), per-epoch checkpoints with ``-mc`` and
TensorBoard logs in ``BASE_logs/`` with ``--tensorboard``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .augment import augment_subvolume
from .config import Config, config_to_toml, seed_everything
from .errors import ConfigError, DataError, EarlyAbortError, TrainingError
from .metrics import get_metric
from .network import (build_network, check_model_config, load_model, model_config_differences, save_model,
                      select_device)
from .region import Block, Region
from .util import atomic_path, check_writable_dir

log = logging.getLogger(__name__)

__all__ = [
    "PreparedSubvolume",
    "TrainingResult",
    "ValidationResult",
    "prepare_training_volumes",
    "prepare_subvolume",
    "subvolume_stream",
    "validation_subvolumes",
    "run_validation",
    "make_optimizer",
    "train_network",
    "validate_model",
    "CSV_FIELDS",
]

CSV_FIELDS = ("epoch", "loss", "val_loss", "val_subv_metric", "time")
MAX_EARLY_RESTARTS = 10
_VALIDATION_SEED_TAG = 0x7A11DA7E  # mixes into random_seed for the fixed validation set


# --------------------------------------------------------------------------- volumes


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
        A volume has no labels, or a FOV-sized subvolume does not fit a part.
    ConfigError
        No volume matches the partition regexes (the message lists the volume
        names and the regexes).
    """
    from .volumes import partition_volumes

    if not volumes:
        raise ConfigError("no volumes: give one or more dataset TOML files with -v/--volume-file")
    unlabelled = [name for name, v in volumes.items() if v.labels is None]
    if unlabelled:
        raise DataError(f"training needs labelled volumes (ground truth); without labels: "
                        f"{', '.join(repr(n) for n in unlabelled)}")
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
            vol = vol.downsample(cfg.volume.resolution)
            if any(s > v for s, v in zip(shape, vol.shape)):
                what = "training" if key == "training_partition" else "validation"
                raise DataError(f"volume {name!r}: the {what} subvolume {list(shape)} (input FOV "
                                f"{list(cfg.model.input_fov_shape)} plus moves) is larger than its {what} part "
                                f"{list(vol.shape)} (after partitioning and downsampling to "
                                f"{list(vol.resolution)} nm)")
            ready[name] = vol
        out.append(ready)
    return out[0], out[1]


# --------------------------------------------------------------------------- subvolumes


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
    from .volumes import sample_subvolume_bounds

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
                sub = volumes[name].get_subvolume(bounds, label_downsampling=cfg.volume.label_downsampling)
                prepared = prepare_subvolume(sub, cfg, aug_rng, augment, name)
                if prepared is not None:
                    yield prepared
                    break
            else:
                raise DataError(f"volume {name!r}: {max_rejections} subvolumes in a row lost their seed to "
                                f"[training] label_erosion = {list(cfg.training.label_erosion)}; reduce it")


class _Prefetcher:
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


# --------------------------------------------------------------------------- device helpers


@dataclass
class _DeviceSetup:
    device: torch.device
    autocast: bool
    channels_last: bool

    @classmethod
    def from_config(cls, cfg: Config, device: Any = None) -> "_DeviceSetup":
        dev = select_device(device if device is not None else cfg.training.device)
        cuda = dev.type == "cuda"
        return cls(dev, cuda and cfg.training.autocast, cuda and cfg.training.autocast)

    def tensor(self, arr: np.ndarray) -> torch.Tensor:
        """(N, Z, Y, X) float32 array -> (N, 1, Z, Y, X) tensor on the device."""
        t = torch.from_numpy(arr).unsqueeze(1)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def autocast_context(self) -> Any:
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        return model


class _HostCopy:
    """A device tensor copied to the host, asynchronously on CUDA."""

    def __init__(self, t: torch.Tensor) -> None:
        if t.device.type == "cuda":
            self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self.host.copy_(t, non_blocking=True)
            self.event: Any = torch.cuda.Event()
            self.event.record()
        else:
            self.host = t
            self.event = None

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


# --------------------------------------------------------------------------- optimizer and loss


def make_optimizer(cfg: Config, params: Any) -> torch.optim.Optimizer:
    """The ``[optimizer]`` of the config over ``params``."""
    oc = cfg.optimizer
    if oc.klass == "SGD":
        return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, nesterov=oc.nesterov and oc.momentum > 0,
                               weight_decay=oc.weight_decay)
    cls = torch.optim.Adam if oc.klass == "Adam" else torch.optim.AdamW
    return cls(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)


def _sample_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE (with logits, float32) per sample."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(dim=(1, 2, 3, 4))


class _FillFactorWeights:
    """Inverse-frequency sample weights by filling fraction (spec §4.5).

    Counts are gathered (all weights 1) until :meth:`freeze`; afterwards a
    sample in bin ``b`` weighs ``N / (B * count[b])``, with ``N`` the samples
    counted and ``B`` the non-empty bins, so the weights average 1 over the
    counted distribution (the original used ``batch_size / count[b]``).
    """

    def __init__(self, bins: Sequence[float]) -> None:
        self.bins = np.asarray(bins, dtype=np.float64)
        self.counts = np.zeros(len(self.bins) + 1, dtype=np.float64)
        self.frozen = False

    def __call__(self, fill_fraction: float) -> float:
        b = int(np.digitize(fill_fraction, self.bins))
        if not self.frozen:
            self.counts[b] += 1
            return 1.0
        nonzero = int(np.count_nonzero(self.counts))
        if self.counts[b] == 0 or nonzero == 0:
            return 1.0
        return float(self.counts.sum() / (nonzero * self.counts[b]))

    def freeze(self) -> None:
        if self.counts.sum() > 0:
            self.frozen = True


# --------------------------------------------------------------------------- training slots


class _SlotGroup:
    """``n`` training slots, each a Region on one subvolume."""

    def __init__(self, n: int, cfg: Config, source: Callable[[], PreparedSubvolume], rng: np.random.Generator
                 ) -> None:
        self.cfg = cfg
        self.source = source
        self.rng = rng
        self.regions: list[Region | None] = [None] * n
        self.subvolumes: list[PreparedSubvolume | None] = [None] * n
        self.blocks: list[Block] = []
        self.pending: _HostCopy | None = None
        self.started = 0  # subvolumes begun
        self.finished_moves = 0  # moves of finished subvolumes
        self.finished = 0

    def next_blocks(self) -> list[Block]:
        blocks = []
        for i, region in enumerate(self.regions):
            block = region.get_next_block() if region is not None else None
            while block is None:
                if region is not None:
                    self.finished += 1
                    self.finished_moves += region.moves
                sub = self.source()
                region = Region(sub.image, self.cfg.model, sub.seed, target=sub.target,
                                rng=np.random.default_rng(self.rng.integers(2**63)))
                self.regions[i] = region
                self.subvolumes[i] = sub
                self.started += 1
                block = region.get_next_block()
            blocks.append(block)
        self.blocks = blocks
        return blocks

    def apply(self) -> None:
        """Write the pending predictions into the regions (queues their next moves)."""
        if self.pending is None:
            return
        probs = self.pending.numpy()
        for region, block, out in zip(self.regions, self.blocks, probs):
            region.add_mask(block, out[0])  # type: ignore[union-attr]
        self.pending = None

    def reset(self) -> None:
        self.regions = [None] * len(self.regions)
        self.subvolumes = [None] * len(self.regions)
        self.pending = None


# --------------------------------------------------------------------------- validation


@dataclass
class ValidationResult:
    """Result of validating a model on the fixed validation set.

    Attributes
    ----------
    metric : float
        Mean per-subvolume ``validation_metric`` (``val_subv_metric``).
    per_subvolume : list of float
    loss : float
        Mean BCE over all validation FOVs (``val_loss``).
    moves : list of int
        Moves per validation subvolume.
    """

    metric: float
    per_subvolume: list[float]
    loss: float
    moves: list[int] = field(default_factory=list)


def run_validation(model: torch.nn.Module, subvolumes: Sequence[PreparedSubvolume], cfg: Config, *,
                   device: Any = None, batch_size: int | None = None, keep_regions: int = 0,
                   progress: bool = False) -> tuple[ValidationResult, list[Region]]:
    """Fill every validation subvolume to completion (batched across regions) and score it.

    Parameters
    ----------
    model : FloodFillNetwork
        Put in eval mode (left so).
    subvolumes : list of PreparedSubvolume
    batch_size : int, optional
        FOVs per forward pass (default ``training.batch_size``).
    keep_regions : int
        Return the first this many finished regions (for snapshots).

    Returns
    -------
    (ValidationResult, regions)
    """
    setup = _DeviceSetup.from_config(cfg, device if device is not None else next(model.parameters()).device)
    batch_size = batch_size or cfg.training.batch_size
    vm = cfg.training.validation_metric
    metric = get_metric(vm.metric, vm.beta)
    n = len(subvolumes)
    scores: list[float] = [math.nan] * n
    moves: list[int] = [0] * n
    kept: list[Region] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
    loss_count = 0
    active: list[tuple[int, Region]] = []
    next_index = 0
    model.eval()
    bar = _progress(total=n, desc="validation", enabled=progress)
    with torch.inference_mode():
        while True:
            candidates = active
            active = []
            blocks: list[Block] = []
            while len(blocks) < batch_size and (candidates or next_index < n):
                if candidates:
                    i, region = candidates.pop(0)
                else:
                    sub = subvolumes[next_index]
                    i, region = next_index, Region(sub.image, cfg.model, sub.seed, target=sub.target,
                                                   rng=np.random.default_rng(next_index))
                    next_index += 1
                block = region.get_next_block()
                if block is None:
                    scores[i] = float(region.prediction_metric(metric, vm.threshold))
                    moves[i] = region.moves
                    if i < keep_regions:
                        kept.append(region)
                    bar.update(1)
                    continue
                blocks.append(block)
                active.append((i, region))
            if not blocks:
                break
            images = setup.tensor(np.stack([b.image for b in blocks]))
            masks = setup.tensor(np.stack([b.mask for b in blocks]))
            targets = torch.from_numpy(np.stack([b.target for b in blocks])).unsqueeze(1).to(setup.device)
            with setup.autocast_context():
                logits = model(images, masks)
            loss_sum += _sample_losses(logits, targets).double().sum()
            loss_count += len(blocks)
            probs = torch.sigmoid(logits.float()).cpu().numpy()
            for (i, region), block, out in zip(active, blocks, probs):
                region.add_mask(block, out[0])
    bar.close()
    val_loss = float(loss_sum.item() / max(loss_count, 1))
    mean = float(np.mean(scores)) if n else math.nan
    return ValidationResult(metric=mean, per_subvolume=scores, loss=val_loss, moves=moves), kept


# --------------------------------------------------------------------------- outputs


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)


def write_history_csv(path: str | os.PathLike, history: Sequence[Mapping[str, Any]]) -> None:
    """Write the per-epoch history (``epoch,loss,val_loss,val_subv_metric,time``)."""
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for row in history:
            w.writerow([row["epoch"]] + [f"{row[k]:.6g}" for k in CSV_FIELDS[1:]])


def write_metric_plot(path: str | os.PathLike, history: Sequence[Mapping[str, Any]], metric_name: str = "") -> None:
    """Plot ``loss``, ``val_loss`` and ``val_subv_metric`` per epoch to a PNG (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not history:
        return
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, [r["loss"] for r in history], "o-", label="loss")
    ax.plot(epochs, [r["val_loss"] for r in history], "s-", label="val_loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_subv_metric"] for r in history], "^-", color="tab:green", label="val_subv_metric")
    ax2.set_ylabel(f"val_subv_metric ({metric_name})" if metric_name else "val_subv_metric")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def _checkpoint_name(pattern: str, epoch: int, metrics: Mapping[str, Any]) -> str:
    try:
        return pattern.format(epoch=epoch, **metrics)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"-mc/--model-checkpoint-file {pattern!r}: bad pattern ({e}); use e.g. "
                          "'ckpt_{epoch:03d}.pt'") from None


def _region_snapshot(region: Region) -> np.ndarray:
    """Middle-Z slices of image | target | prediction side by side, [0, 1]."""
    z = int(region.seed[0])
    image = np.asarray(region.image[z], dtype=np.float32)
    target = np.asarray(region.target[z], dtype=np.float32)
    pred = np.nan_to_num(np.asarray(region.mask[z], dtype=np.float32), nan=0.0)
    sep = np.ones((image.shape[0], 2), dtype=np.float32)
    return np.concatenate([image, sep, target, sep, pred], axis=1)


# --------------------------------------------------------------------------- training


@dataclass
class TrainingResult:
    """What :func:`train_network` did.

    Attributes
    ----------
    model_file : Path
        ``BASE.pt``, the best model.
    history : list of dict
        Per epoch: ``epoch, loss, val_loss, val_subv_metric, time`` (plus
        ``fov_per_s`` and ``moves_per_subvolume``).
    best_epoch : int or None
    best_metric : float
    stop_reason : str
        ``"completed"``, ``"early_stopping"`` or ``"time_limit"``.
    random_seed : int
        The seed of the run that finished (changes with ``--early-restart``).
    restarts : int
    """

    model_file: Path
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float
    stop_reason: str
    random_seed: int
    restarts: int = 0

    def summary(self) -> str:
        best = "none" if self.best_epoch is None else f"{self.best_metric:.4f} at epoch {self.best_epoch}"
        return (f"trained {len(self.history)} epochs ({self.stop_reason}); best val_subv_metric {best}; "
                f"model: {self.model_file}")


def _better(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def train_network(cfg: Config, volumes: Mapping[str, Any], model_output_filebase: str | os.PathLike, *,
                  model_file: str | os.PathLike | None = None, checkpoint_pattern: str | None = None,
                  tensorboard: bool = False, early_restart: bool = False, rng: np.random.Generator | None = None,
                  device: Any = None, progress: bool | None = None, max_minutes: float | None = None
                  ) -> TrainingResult:
    """Train a flood-filling network with moving FOVs (see the module docstring).

    Parameters
    ----------
    cfg : Config
    volumes : dict of name -> Volume
        Labelled volumes (not partitioned; the config's partitions are applied).
    model_output_filebase : path-like
        ``BASE`` of the outputs ``BASE.pt``, ``BASE.toml``, ``BASE.csv``, ``BASE.png``.
    model_file : path-like, optional
        Continue training this model: weights, optimizer state and epoch
        count. Its ``[network]`` and FOVs are used (see
        :func:`~diluvian.network.check_model_config`). ``total_epochs`` more
        epochs are trained, numbered on from the model's epoch.
    checkpoint_pattern : str, optional
        Save the model after every epoch to this name, formatted with
        ``epoch`` and the epoch's metrics (``ckpt_{epoch:03d}.pt``).
    tensorboard : bool
        Write TensorBoard scalars and validation snapshots to ``BASE_logs/``.
    early_restart : bool
        On :class:`~diluvian.errors.EarlyAbortError`, restart from scratch with a
        new random seed drawn from ``rng`` (at most 10 times).
    rng : numpy.random.Generator, optional
        Default: seeded with ``cfg.random_seed``.
    device : str or torch.device, optional
        Overrides ``[training] device``.
    progress : bool, optional
        tqdm progress bars (default: when stderr is a terminal).
    max_minutes : float, optional
        Wall-clock budget for the training steps. When it runs out, the
        current (partial) epoch is validated and kept like a full one, and
        training stops with ``stop_reason == "time_limit"``. Validation time
        is not counted.

    Returns
    -------
    TrainingResult

    Raises
    ------
    DataError, ConfigError
        Unusable volumes or partitions.
    ModelError
        ``model_file`` is not a diluvian model.
    TrainingError
        The loss became NaN.
    EarlyAbortError
        The early-abort criterion was met (and no restart was asked for).
    KeyboardInterrupt
        Re-raised after the CSV and plot of the finished epochs are written;
        ``BASE.pt`` holds the best model so far.
    """
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes must be positive, got {max_minutes}")
    rng = rng if rng is not None else np.random.default_rng(cfg.random_seed)
    restarts = 0
    while True:
        try:
            result = _train_once(cfg, volumes, model_output_filebase, model_file=model_file,
                                 checkpoint_pattern=checkpoint_pattern, tensorboard=tensorboard, rng=rng,
                                 device=device, progress=progress, max_minutes=max_minutes)
            result.restarts = restarts
            return result
        except EarlyAbortError as e:
            if not early_restart or restarts >= MAX_EARLY_RESTARTS:
                raise
            old = cfg.random_seed
            new = old
            while new == old:
                new = int(rng.integers(100_000_000))
            restarts += 1
            log.warning("%s; restarting (%d/%d) with random seed %d", e, restarts, MAX_EARLY_RESTARTS, new)
            cfg = dataclasses.replace(cfg, random_seed=new)
            rng = seed_everything(new)


def _train_once(cfg: Config, volumes: Mapping[str, Any], base: str | os.PathLike, *,
                model_file: str | os.PathLike | None, checkpoint_pattern: str | None, tensorboard: bool,
                rng: np.random.Generator, device: Any, progress: bool | None,
                max_minutes: float | None = None) -> TrainingResult:
    import sys

    progress = sys.stderr.isatty() if progress is None else progress
    base = Path(base)
    check_writable_dir(base.with_name(base.name + ".pt"))
    setup = _DeviceSetup.from_config(cfg, device)
    tc = cfg.training

    # model first (its config may replace the network / FOV), then volumes
    start_epoch = 0
    optimizer_state = None
    if model_file is not None:
        model, file_cfg, ckpt = load_model(model_file, "cpu")
        diff = model_config_differences(file_cfg, cfg)
        if diff:
            log.info("%s: using the model's network and FOVs (the config differs in %s)", model_file, ", ".join(diff))
        cfg = check_model_config(file_cfg, cfg, explicitly_set=False, model_file=model_file)
        start_epoch = int(ckpt.get("epoch") or 0)
        optimizer_state = ckpt.get("optimizer_state")
        model.train()
        log.info("continuing training of %s from epoch %d", model_file, start_epoch)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            model = build_network(cfg.model, cfg.network)
    train_vols, val_vols = prepare_training_volumes(cfg, volumes)

    with atomic_path(base.with_name(base.name + ".toml"), suffix=".toml") as tmp:
        tmp.write_text(f"# diluvian training config for {base.name}.pt\n" + config_to_toml(cfg))
    if tc.num_gpus > 1:
        log.warning("[training] num_gpus = %d: data-parallel training is not implemented; the whole batch of %d "
                    "runs on %s", tc.num_gpus, tc.batch_size, setup.device)
    model = setup.prepare_model(model)
    optimizer = make_optimizer(cfg, model.parameters())
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as e:
            log.warning("%s: optimizer state not restored (%s); starting a fresh optimizer", model_file, e)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("network %s (%s), %d parameters, on %s%s", cfg.network.factory,
             cfg.network.convstack_variant if cfg.network.factory == "convstack" else f"depth {cfg.network.unet_depth}",
             n_params, setup.device, " (bf16 autocast, channels-last)" if setup.autocast else "")
    log.info("training volumes: %s; validation volumes: %s", {k: list(v.shape) for k, v in train_vols.items()},
             {k: list(v.shape) for k, v in val_vols.items()})

    val_set = validation_subvolumes(cfg, val_vols)
    log.info("validation: %d subvolumes of %s", len(val_set), list(cfg.model.validation_subv_shape))

    stream_seed = int(rng.integers(2**63))
    slot_rng = np.random.default_rng(rng.integers(2**63))

    def new_prefetcher() -> _Prefetcher:
        stream = subvolume_stream(train_vols, cfg.model.training_subv_shape, cfg,
                                  np.random.default_rng(stream_seed), augment=True)
        return _Prefetcher(stream, maxsize=2 * tc.batch_size)

    prefetcher = new_prefetcher()
    weights = _FillFactorWeights(tc.fill_factor_bins) if tc.fill_factor_bins else None
    n_groups = 2 if setup.device.type == "cuda" else 1
    groups = [_SlotGroup(tc.batch_size, cfg, lambda: prefetcher.get(), slot_rng) for _ in range(n_groups)]
    steps = max(1, tc.training_size // tc.batch_size)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(base.with_name(base.name + "_logs")))
    vm = tc.validation_metric
    history: list[dict[str, Any]] = []
    best: float | None = None
    best_epoch: int | None = None
    since_best = 0
    stop_reason = "completed"
    csv_path = base.with_name(base.name + ".csv")
    png_path = base.with_name(base.name + ".png")
    pt_path = base.with_name(base.name + ".pt")
    global_step = 0
    train_budget = math.inf if max_minutes is None else 60.0 * max_minutes
    train_spent = 0.0  # seconds of training steps so far (validation excluded)
    try:
        for epoch in range(start_epoch + 1, start_epoch + tc.total_epochs + 1):
            t0 = time.perf_counter()
            if tc.reset_generators and epoch > start_epoch + 1:
                prefetcher.close()
                prefetcher = new_prefetcher()
                for g in groups:
                    g.reset()
            model.train()
            losses: list[torch.Tensor] = []
            for g in groups:
                g.started = g.finished = g.finished_moves = 0
            bar = _progress(total=steps, desc=f"epoch {epoch}", enabled=progress)
            t_train = time.perf_counter()
            steps_done = 0
            for step in range(steps):
                if train_spent + (time.perf_counter() - t_train) >= train_budget:
                    stop_reason = "time_limit"
                    break
                g = groups[step % n_groups]
                g.apply()  # only pending when this group ran two steps ago (single group: never)
                blocks = g.next_blocks()
                images = setup.tensor(np.stack([b.image for b in blocks]))
                masks = setup.tensor(np.stack([b.mask for b in blocks]))
                targets = setup.tensor(np.stack([b.target for b in blocks]))
                with setup.autocast_context():
                    logits = model(images, masks)
                per_sample = _sample_losses(logits, targets)
                if weights is not None:
                    w = torch.tensor([weights(s.fill_fraction) for s in g.subvolumes], dtype=torch.float32,
                                     device=setup.device)
                    loss = (per_sample * w).mean()
                else:
                    loss = per_sample.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optimizer.clip_gradient > 0:
                    torch.nn.utils.clip_grad_value_(model.parameters(), cfg.optimizer.clip_gradient)
                optimizer.step()
                g.pending = _HostCopy(torch.sigmoid(logits.detach().float()))
                losses.append(loss.detach())
                if n_groups == 1:
                    g.apply()
                else:
                    other = groups[(step + 1) % n_groups]
                    other.apply()  # overlaps with this step running on the device
                global_step += 1
                steps_done += 1
                if (step + 1) % 10 == 0 or step + 1 == steps:
                    recent = float(torch.stack(losses[-10:]).mean().item())
                    if not math.isfinite(recent):
                        raise TrainingError(f"epoch {epoch}: the training loss became {recent} at step {step + 1}; "
                                            "lower [optimizer] lr or set clip_gradient")
                    elapsed = time.perf_counter() - t_train
                    bar.set_postfix(loss=f"{recent:.4f}", fov_s=f"{(step + 1) * tc.batch_size / elapsed:.1f}")
                    if writer is not None:
                        writer.add_scalar("train/loss", recent, global_step)
                bar.update(1)
            for g in groups:
                g.apply()
            bar.close()
            train_time = time.perf_counter() - t_train
            train_spent += train_time
            if not losses:  # the budget ran out before this epoch's first step
                break
            epoch_loss = float(torch.stack(losses).mean().item())
            if not math.isfinite(epoch_loss):
                raise TrainingError(f"epoch {epoch}: the training loss is {epoch_loss}; lower [optimizer] lr")
            if weights is not None:
                weights.freeze()
            finished = sum(g.finished for g in groups)
            moves_per_subv = sum(g.finished_moves for g in groups) / finished if finished else float("nan")

            val, kept = run_validation(model, val_set, cfg, device=setup.device, keep_regions=3 if writer else 0,
                                       progress=progress)
            if not math.isfinite(val.loss):
                raise TrainingError(f"epoch {epoch}: the validation loss is {val.loss}")
            row = {"epoch": epoch, "loss": epoch_loss, "val_loss": val.loss, "val_subv_metric": val.metric,
                   "time": time.perf_counter() - t0, "fov_per_s": steps_done * tc.batch_size / train_time,
                   "moves_per_subvolume": moves_per_subv, "val_moves": float(np.mean(val.moves)) if val.moves else 0}
            history.append(row)
            log.info("epoch %d: loss %.4f, val_loss %.4f, val_subv_metric %.4f (%s, beta %g); %.1f FOV/s, "
                     "%.1f moves per training subvolume, %.1f per validation subvolume; %.0f s", epoch, epoch_loss,
                     val.loss, val.metric, vm.metric, vm.beta, row["fov_per_s"], moves_per_subv, row["val_moves"],
                     row["time"])
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            if _better(val.metric, best, vm.mode):
                best, best_epoch, since_best = val.metric, epoch, 0
                save_model(pt_path, model, cfg, optimizer_state=optimizer.state_dict(), epoch=epoch, metrics=metrics)
                log.info("epoch %d: best %s so far, saved %s", epoch, "val_subv_metric", pt_path)
            else:
                since_best += 1
            if checkpoint_pattern:
                ckpt_path = _checkpoint_name(checkpoint_pattern, epoch, metrics)
                save_model(ckpt_path, model, cfg, optimizer_state=optimizer.state_dict(), epoch=epoch,
                           metrics=metrics)
            write_history_csv(csv_path, history)
            write_metric_plot(png_path, history, f"{vm.metric}, beta {vm.beta:g}")
            if writer is not None:
                for k in ("loss", "val_loss", "val_subv_metric", "fov_per_s", "moves_per_subvolume", "val_moves"):
                    writer.add_scalar(f"epoch/{k}", row[k], epoch)
                for j, region in enumerate(kept):
                    writer.add_image(f"validation/{j}", _region_snapshot(region), epoch, dataformats="HW")
                writer.flush()
            if tc.early_abort_epoch > 0 and epoch - start_epoch == tc.early_abort_epoch \
                    and val.loss >= tc.early_abort_loss:
                raise EarlyAbortError(f"epoch {epoch}: val_loss {val.loss:.4f} >= [training] early_abort_loss "
                                      f"{tc.early_abort_loss}")
            if stop_reason == "time_limit":
                log.info("training time limit of %g minutes reached in epoch %d (%d of %d steps)", max_minutes,
                         epoch, steps_done, steps)
                break
            if since_best >= tc.patience:
                stop_reason = "early_stopping"
                log.info("no improvement of val_subv_metric for %d epochs; stopping", tc.patience)
                break
    except KeyboardInterrupt:
        log.warning("interrupted; %s holds the best model so far (epoch %s), %s the history", pt_path, best_epoch,
                    csv_path)
        raise
    finally:
        prefetcher.close()
        if writer is not None:
            writer.close()
    if best_epoch is None:  # every validation was NaN: keep the last weights anyway
        save_model(pt_path, model, cfg, optimizer_state=optimizer.state_dict(), epoch=history[-1]["epoch"],
                   metrics={k: v for k, v in history[-1].items() if k != "epoch"})
    return TrainingResult(model_file=pt_path, history=history, best_epoch=best_epoch,
                          best_metric=best if best is not None else math.nan, stop_reason=stop_reason,
                          random_seed=cfg.random_seed)


# --------------------------------------------------------------------------- validate


def validate_model(cfg: Config, volumes: Mapping[str, Any], model_file: str | os.PathLike, *, device: Any = None,
                   progress: bool | None = None) -> ValidationResult:
    """Score a model on the fixed validation set of ``cfg`` (as training does every epoch).

    The model file's ``[network]`` and FOVs are used; the rest (partitions,
    ``validation_size``, metric, resolution ...) comes from ``cfg``.

    Raises
    ------
    ModelError
        ``model_file`` is not a diluvian model.
    DataError, ConfigError
        Unusable volumes or partitions.
    """
    import sys

    progress = sys.stderr.isatty() if progress is None else progress
    setup = _DeviceSetup.from_config(cfg, device)
    model, file_cfg, _ = load_model(model_file, "cpu")
    cfg = check_model_config(file_cfg, cfg, explicitly_set=False, model_file=model_file)
    _, val_vols = prepare_training_volumes(cfg, volumes, need_training=False)
    model = setup.prepare_model(model)
    val_set = validation_subvolumes(cfg, val_vols)
    result, _ = run_validation(model, val_set, cfg, device=setup.device, progress=progress)
    return result
