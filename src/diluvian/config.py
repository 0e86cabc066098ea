"""Configuration: one frozen dataclass per TOML section.

(Over 600 lines: it is the schema, one dataclass per section with its checks, and the loader
that checks TOML against it; kept in one file so that the schema reads as one document.)

The defaults written here are the single source of truth; the shipped
``conf/default.toml`` is a dump of them (a test proves the two agree).

Config files are applied in order **on top of the defaults**: a file only needs
the keys it changes (the original diluvian silently fell back to other, code
level defaults for any key a ``-c`` file left out). Unknown sections or keys and
values of the wrong type are errors that name the file, the key and, for a typo,
the closest valid name.

Examples
--------
>>> cfg = load_config([])
>>> cfg.model.move_step
(8, 8, 8)
>>> cfg.training.batch_size
32
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import ConfigError, DatasetNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_NAME = "default"
"""Sentinel in a list of config paths meaning "the packaged defaults" (``-cd``)."""

Vec3i = tuple[int, int, int]
Vec3f = tuple[float, float, float]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class VolumeConfig:
    """``[volume]``: the working resolution.

    Attributes
    ----------
    resolution : tuple of 3 floats, nm ZYX
        Resolution every volume is downsampled to before training and filling.
        Must be a power-of-2 multiple of each volume's native resolution. The
        default ``[0, 0, 0]`` means "each volume's native resolution".
    label_downsampling : {"majority", "conjunction"}
        How a binary object mask is downsampled: block mean > 0.5, or all
        sub-voxels set.
    nonfinite : {"error", "mask"}
        NaN/Inf image voxels: ``"error"`` stops at the first one read (naming the
        dataset and the voxel); ``"mask"`` treats them as missing data: they read
        as 0, are left out of the valid-data mask (seeds, training samples) and
        their ground truth reads as label 0 (not evaluated).
    """

    resolution: Vec3f = (0.0, 0.0, 0.0)
    label_downsampling: str = "majority"
    nonfinite: str = "error"

    def __post_init__(self) -> None:
        _check_choice("volume.label_downsampling", self.label_downsampling, ("majority", "conjunction"))
        _check_choice("volume.nonfinite", self.nonfinite, ("error", "mask"))
        if any(r < 0 for r in self.resolution):
            raise ConfigError(f"[volume] resolution: expected 3 non-negative numbers, got {list(self.resolution)}")


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: field of view, moves and thresholds (shared by training and fill).

    Attributes
    ----------
    input_fov_shape, output_fov_shape : tuple of 3 odd ints, voxels ZYX
        Network input and output FOV. Output must not exceed input. The default
        33³ with a move step of 8 is google/ffn's FIB-25 geometry (isotropic data).
    output_fov_move_fraction : int
        ``move_step = (output_fov_shape - 1) // output_fov_move_fraction``.
    v_true, v_false : float
        Soft targets inside/outside the object; ``v_true`` seeds the mask and
        ``v_false`` stands for voxels not yet predicted.
    t_move : float
        A move is queued when the max probability on a face slab is >= this.
    t_final : float
        Threshold of the final object mask (and of the thresholded validation metric).
        0.6 as google/ffn's ``segment_threshold``; the original diluvian used ``t_move``
        (0.9), which left a third or more of the voxels unclaimed on real and synthetic data.
    move_check_thickness : int
        Half-thickness of the face slab checked for moves (slab is ``2t - 1`` voxels).
    move_priority : {"descending", "proximity", "random"}
        Order of the move queue.
    move_recheck : bool
        When a move is dequeued, require a voxel >= ``t_move`` within one move step
        of its centre.
    """

    input_fov_shape: Vec3i = (33, 33, 33)
    output_fov_shape: Vec3i = (33, 33, 33)
    output_fov_move_fraction: int = 4
    v_true: float = 0.95
    v_false: float = 0.05
    t_move: float = 0.9
    t_final: float = 0.6
    move_check_thickness: int = 1
    move_priority: str = "descending"
    move_recheck: bool = True

    def __post_init__(self) -> None:
        for key in ("input_fov_shape", "output_fov_shape"):
            v = getattr(self, key)
            if any(s < 1 or s % 2 == 0 for s in v):
                raise ConfigError(f"[model] {key}: expected 3 odd positive ints, got {list(v)}")
        if any(o > i for o, i in zip(self.output_fov_shape, self.input_fov_shape)):
            raise ConfigError(
                f"[model] output_fov_shape: expected <= input_fov_shape {list(self.input_fov_shape)}, "
                f"got {list(self.output_fov_shape)}"
            )
        if self.output_fov_move_fraction < 1:
            raise ConfigError("[model] output_fov_move_fraction: expected an int >= 1")
        if any(s < 1 for s in self.move_step):
            raise ConfigError(
                f"[model] output_fov_move_fraction: a fraction of {self.output_fov_move_fraction} gives a "
                f"move step of {list(self.move_step)}; every axis must move at least 1 voxel"
            )
        for key in ("v_true", "v_false", "t_move", "t_final"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ConfigError(f"[model] {key}: expected a probability in (0, 1), got {getattr(self, key)}")
        if self.move_check_thickness < 1:
            raise ConfigError("[model] move_check_thickness: expected an int >= 1")
        _check_choice("model.move_priority", self.move_priority, ("descending", "proximity", "random"))

    @property
    def move_step(self) -> Vec3i:
        """Voxels per move along each axis (derived)."""
        return tuple((s - 1) // self.output_fov_move_fraction for s in self.output_fov_shape)  # type: ignore[return-value]

    @property
    def training_subv_shape(self) -> Vec3i:
        """Training subvolume: one move each way from the centre, 3×3×3 FOVs (derived)."""
        return tuple(i + 2 * m for i, m in zip(self.input_fov_shape, self.move_step))  # type: ignore[return-value]

    @property
    def validation_subv_shape(self) -> Vec3i:
        """Validation subvolume: two moves each way, 5×5×5 FOVs (derived)."""
        return tuple(i + 4 * m for i, m in zip(self.input_fov_shape, self.move_step))  # type: ignore[return-value]


NETWORK_FACTORIES = ("unet", "convstack")
_FACTORY_ALIASES = {
    "diluvian.network.make_flood_fill_unet": "unet",
    "diluvian.network.make_flood_fill_network": "convstack",
}


@dataclass(frozen=True)
class NetworkConfig:
    """``[network]``: architecture.

    Attributes
    ----------
    factory : {"unet", "convstack"}
        ``unet`` is the original diluvian U-Net; ``convstack`` the FFN-paper stack of
        residual conv modules. The original's dotted names are accepted as aliases.
    transpose : bool
        Reverse the spatial axes of a loaded model (for XYZ-trained models).
    rescale_image : bool
        Map the image from [0, 1] to [-1, 1] before the first layer.
    num_modules : int
        Residual modules (``convstack`` only). With ``convstack_variant = "ffn"``
        this is google/ffn's ``depth`` (its first two convolutions count as one
        module): FFN's FIB-25 model is ``num_modules = 12``.
    convstack_variant : {"diluvian", "ffn"}
        ``diluvian``: the original's stack (conv, ``num_modules`` residual modules,
        3×3×3 head). ``ffn``: google/ffn's ConvStack3DFFNModel (two convs,
        ``num_modules - 1`` pre-activation residual modules, 1×1×1 head, mask as
        logits and an additive output). See ``diluvian.network``.
    num_layers_per_module : int
        Convolutions per residual module or per U-Net level side.
    convolution_dim : tuple of 3 odd ints
        Kernel size.
    convolution_filters : int
        Base number of filters.
    convolution_activation : {"relu", "elu", "leaky_relu"}
    convolution_padding : {"same"}
        Only ``same`` is supported: output FOV == input FOV geometry.
    initialization : {"glorot_uniform", "he_normal", "default"}
    output_activation : {"sigmoid"}
    dropout_probability : float
        Dropout on U-Net skip links, or after each residual module.
    batch_normalization : bool
        Batch norm after each convolution's activation.
    unet_depth : int
        U-Net levels (depth - 1 downsamplings).
    unet_downsample_rate : tuple of 3 ints
        ``fixed_rate`` mode: axis i is downsampled at a level when ``rate[i] != 0``
        and ``remaining_levels % rate[i] == 0``.
    unet_downsample_mode : {"fixed_rate", "isotropy_approximating"}
    resolution : tuple of 3 floats
        Starting resolution for ``isotropy_approximating`` mode.
    """

    factory: str = "convstack"
    transpose: bool = False
    rescale_image: bool = False
    num_modules: int = 8
    convstack_variant: str = "diluvian"
    num_layers_per_module: int = 2
    convolution_dim: Vec3i = (3, 3, 3)
    convolution_filters: int = 32
    convolution_activation: str = "relu"
    convolution_padding: str = "same"
    initialization: str = "glorot_uniform"
    output_activation: str = "sigmoid"
    dropout_probability: float = 0.0
    batch_normalization: bool = False
    unet_depth: int = 4
    unet_downsample_rate: Vec3i = (1, 1, 1)
    unet_downsample_mode: str = "fixed_rate"
    resolution: Vec3f = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factory", _FACTORY_ALIASES.get(self.factory, self.factory))
        _check_choice("network.factory", self.factory, NETWORK_FACTORIES)
        _check_choice("network.convstack_variant", self.convstack_variant, ("diluvian", "ffn"))
        _check_choice("network.convolution_activation", self.convolution_activation, ("relu", "elu", "leaky_relu"))
        _check_choice("network.convolution_padding", self.convolution_padding, ("same",))
        _check_choice("network.initialization", self.initialization, ("glorot_uniform", "he_normal", "default"))
        _check_choice("network.output_activation", self.output_activation, ("sigmoid",))
        _check_choice("network.unet_downsample_mode", self.unet_downsample_mode, ("fixed_rate", "isotropy_approximating"))
        if any(k < 1 or k % 2 == 0 for k in self.convolution_dim):
            raise ConfigError(f"[network] convolution_dim: expected 3 odd positive ints, got {list(self.convolution_dim)}")
        for key in ("num_modules", "num_layers_per_module", "convolution_filters", "unet_depth"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[network] {key}: expected an int >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.dropout_probability < 1.0:
            raise ConfigError(f"[network] dropout_probability: expected a value in [0, 1), got {self.dropout_probability}")


@dataclass(frozen=True)
class OptimizerConfig:
    """``[optimizer]``.

    Attributes
    ----------
    klass : {"SGD", "Adam", "AdamW"}
        Optimizer (``torch.optim``).
    loss : {"binary_crossentropy"}
    lr : float
        Learning rate.
    momentum : float
        SGD momentum.
    nesterov : bool
        SGD Nesterov momentum.
    weight_decay : float
    betas : tuple of 2 floats
        Adam betas.
    clip_gradient : float
        Clip each gradient entry to ±this (0 = off); google/ffn uses 0.7.
    lr_schedule : {"constant", "cosine"}
        ``"cosine"``: the learning rate falls from ``lr`` to ``lr * lr_final`` along
        half a cosine over the run's training steps (``total_epochs`` ×
        steps per epoch, or the ``--max-minutes`` budget where that ends first).
    lr_final : float
        The cosine schedule's last learning rate, as a fraction of ``lr``.
    """

    klass: str = "Adam"
    loss: str = "binary_crossentropy"
    lr: float = 0.001
    momentum: float = 0.5
    nesterov: bool = True
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    clip_gradient: float = 0.0
    lr_schedule: str = "constant"
    lr_final: float = 0.05

    def __post_init__(self) -> None:
        _check_choice("optimizer.klass", self.klass, ("SGD", "Adam", "AdamW"))
        _check_choice("optimizer.loss", self.loss, ("binary_crossentropy",))
        _check_choice("optimizer.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        if self.lr <= 0:
            raise ConfigError(f"[optimizer] lr: expected a positive number, got {self.lr}")
        if not 0 <= self.lr_final <= 1:
            raise ConfigError(f"[optimizer] lr_final: expected a fraction of lr in [0, 1], got {self.lr_final}")


@dataclass(frozen=True)
class NoiseAugment:
    """Per-section Gaussian noise: ``image * N(1, mul) + N(0, add)`` along ``axis`` (-1: whole volume)."""

    axis: int = 0
    mul: float = 0.05
    add: float = 0.05


@dataclass(frozen=True)
class MissingDataAugment:
    """Blank whole sections along ``axis`` with probability ``prob`` each (never the seed's)."""

    axis: int = 0
    prob: float = 0.01


@dataclass(frozen=True)
class ContrastAugment:
    """Per-section contrast change (spec §4.4 formula)."""

    axis: int = 0
    prob: float = 0.05
    scaling_mean: float = 0.5
    scaling_std: float = 0.1
    center_mean: float = 1.2
    center_std: float = 0.2


@dataclass(frozen=True)
class MisalignmentAugment:
    """Shift the sections after a random one along ``axis`` by up to ``max_shift`` voxels in-plane (FFN)."""

    axis: int = 0
    prob: float = 0.02
    max_shift: int = 3


@dataclass(frozen=True)
class ArtifactAugment:
    """Blend artefacts from the dataset named ``Artifacts`` in ``volume_file`` into sections."""

    axis: int = 0
    prob: float = 0.01
    volume_file: str = ""


@dataclass(frozen=True)
class ValidationMetricConfig:
    """Per-subvolume validation metric.

    ``metric`` is ``binary_f_score`` (textbook F-beta, see README) or
    ``diluvian_f_score`` (the original's ``(1+β)`` variant, for comparison).
    """

    metric: str = "binary_f_score"
    threshold: bool = True
    mode: str = "max"
    beta: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("training.validation_metric.metric", self.metric, ("binary_f_score", "diluvian_f_score"))
        _check_choice("training.validation_metric.mode", self.mode, ("max", "min"))


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``.

    Attributes
    ----------
    num_gpus : int
        Data-parallel devices; ``batch_size = num_gpus * gpu_batch_size``.
    num_workers : int
        Interleaved subvolume streams feeding the batch slots.
    gpu_batch_size : int
        Batch per device (on CPU: the batch).
    training_size : int
        Training FOVs per epoch (``steps = training_size // batch_size``).
    validation_size : int
        Validation subvolumes per epoch.
    validation_interval : int
        Validate every this many epochs (and always after the last one, and at
        ``early_abort_epoch``); the epochs between keep no model and have NaN validation
        columns. Only validated epochs can become ``BASE.pt``; ``patience`` still counts epochs.
    total_epochs : int
    reset_generators : bool
        Re-seed training subvolume sampling every epoch.
    fill_factor_bins : tuple of floats
        Inverse-frequency loss weighting by object filling fraction; empty = off.
    partitions, training_partition, validation_partition : dict of regex -> 3 ints
        Volume partitioning into training and validation parts (spec §4.1).
    validation_metric : ValidationMetricConfig
    patience : int
        Early stopping after this many epochs without improvement.
    early_abort_epoch : int
        If > 0: abort when ``val_loss >= early_abort_loss`` at the end of this (1-based) epoch.
    early_abort_loss : float
    select_by : {"metric", "dense_fill"}
        Which epoch's weights ``BASE.pt`` holds at the end: the best ``val_subv_metric``
        (``"metric"``), or, of the ``select_candidates`` best by it, the one whose dense
        fill of a ``select_fill_shape`` box of every validation part has the lowest CREMI
        score (``"dense_fill"``, :mod:`diluvian.selection`). A subvolume F-score cannot see
        a region that runs on across neurons; a dense fill does.
    select_candidates : int
        Epochs kept (``BASE.candidates/``) for ``select_by = "dense_fill"``.
    select_fill_shape : tuple of 3 ints
        Voxels (at the training resolution) of the box filled per validation part, at its
        centre (clipped to the part). Make it cover the whole part: a smaller box cuts large
        neurons short at its faces and mis-ranked the candidates on FIB-25 (BENCHMARKS.md).
    label_erosion : tuple of 3 ints
        Binary erosion radius of the object mask before training.
    relabel_seed_component : bool
        Keep only the seed's connected component of the object mask.
    exclude_label_zero : bool
        Never train on label 0 (unlabelled / membrane in most data sets).
    augment_* :
        Augmentations (spec §4.4, plus misalignment).
    device : {"auto", "cpu", "cuda"}
    autocast : bool
        bf16 autocast and channels-last on CUDA.
    """

    num_gpus: int = 1
    num_workers: int = 4
    gpu_batch_size: int = 32
    training_size: int = 4096
    validation_size: int = 64
    validation_interval: int = 1
    total_epochs: int = 20
    reset_generators: bool = False
    fill_factor_bins: tuple[float, ...] = ()
    partitions: dict[str, Vec3i] = field(default_factory=lambda: {".*": (2, 1, 1)})
    training_partition: dict[str, Vec3i] = field(default_factory=lambda: {".*": (0, 0, 0)})
    validation_partition: dict[str, Vec3i] = field(default_factory=lambda: {".*": (1, 0, 0)})
    validation_metric: ValidationMetricConfig = field(default_factory=ValidationMetricConfig)
    patience: int = 10
    early_abort_epoch: int = 0
    early_abort_loss: float = 10.0
    select_by: str = "metric"
    select_candidates: int = 3
    select_fill_shape: Vec3i = (32, 64, 64)
    label_erosion: Vec3i = (1, 1, 1)
    relabel_seed_component: bool = False
    exclude_label_zero: bool = True
    augment_validation: bool = False
    augment_use_both: bool = False
    augment_mirrors: tuple[int, ...] = (0, 1, 2)
    augment_permute_axes: tuple[tuple[int, int, int], ...] = ((0, 2, 1),)
    augment_missing_data: tuple[MissingDataAugment, ...] = (MissingDataAugment(),)
    augment_noise: tuple[NoiseAugment, ...] = (NoiseAugment(),)
    augment_contrast: tuple[ContrastAugment, ...] = (ContrastAugment(),)
    augment_misalignment: tuple[MisalignmentAugment, ...] = (MisalignmentAugment(),)
    augment_artifacts: tuple[ArtifactAugment, ...] = ()
    device: str = "auto"
    autocast: bool = True

    def __post_init__(self) -> None:
        for key in ("num_gpus", "num_workers", "gpu_batch_size", "training_size", "validation_size",
                    "validation_interval", "total_epochs", "select_candidates"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[training] {key}: expected an int >= 1, got {getattr(self, key)}")
        _check_choice("training.device", self.device, ("auto", "cpu", "cuda"))
        _check_choice("training.select_by", self.select_by, ("metric", "dense_fill"))
        if len(self.select_fill_shape) != 3 or min(self.select_fill_shape) < 1:
            raise ConfigError(f"[training] select_fill_shape: expected 3 ints >= 1, got {list(self.select_fill_shape)}")
        for perm in self.augment_permute_axes:
            if sorted(perm) != [0, 1, 2]:
                raise ConfigError(f"[training] augment_permute_axes: expected permutations of [0, 1, 2], got {list(perm)}")
        if list(self.fill_factor_bins) != sorted(self.fill_factor_bins):
            raise ConfigError("[training] fill_factor_bins: expected increasing values")

    @property
    def batch_size(self) -> int:
        """Total batch size (derived: ``num_gpus * gpu_batch_size``)."""
        return self.num_gpus * self.gpu_batch_size


@dataclass(frozen=True)
class PostprocessingConfig:
    """``[postprocessing]``.

    Attributes
    ----------
    closing_shape : tuple of ints
        Grey closing with ``ones(closing_shape)`` before connected components; empty = off.
    min_body_size : int
        Bodies with fewer voxels are dropped by dense fill.
    merge_overlap_fraction : float
        Dense fill: a body that overlaps one earlier body by at least this fraction of its
        own voxels is the same object filled again from another seed, and takes that body's
        label instead of a new one. 0 turns it off (every body gets a new label, as in the
        original diluvian).
    bridge_fraction : float
        Dense fill: a body that overlaps two labels (an earlier body's and its own) each by at
        least this fraction of its own voxels *bridges* them: a fill from a third seed ran
        through both. 0 (the default) turns bridging off.
    bridge_support : int
        Labels bridged by at least this many bodies are joined into one when the fill ends
        (the smaller label is kept); one bridge alone may be a leak.
    boundary_sigma : float
        Scale (voxels) of the image's boundary evidence, the Hessian's largest eigenvalue
        (:func:`~diluvian.postprocessing.boundary_evidence`), for flood guards and claiming.
    membrane_fraction : float
        The share of the voxels with the strongest boundary evidence that are membranes
        (:func:`~diluvian.postprocessing.membrane_mask`).
    guard_interval : int
        Dense fill: moves between flood checks of a region (:mod:`diluvian.fill.guards`);
        0 turns the guards off.
    guard_max_leak : float
        A region with more than this fraction of its body beyond membranes (seen from its
        seed) stops, and its body is trimmed to the seed's side.
    claim : bool
        After a dense fill, claim the unclaimed voxels (:mod:`diluvian.claim`): bodies grow
        into them without crossing membranes, the rest get labels of their own.
    claim_grow_distance : float
        How far (voxels) a body may grow into unclaimed voxels.
    claim_min_size : int
        Unclaimed pieces that no body reaches get their own label from this many voxels;
        smaller ones (and membranes) go to the neighbour they touch.
    claim_split_distance : float
        When > 0, those pieces are first split by a watershed from distance-transform peaks
        at least this many voxels apart.
    agglomerate : bool
        After claiming, join touching segments whose refills from both sides of their
        contact agree (:mod:`diluvian.fill.agglomerate`).
    agglomerate_min_contact : int
        Voxel faces two segments must share to be tested.
    agglomerate_agreement : float
        Fraction of the other segment's voxels near the contact (within half an input FOV)
        that each refill must cover for the two to join.
    """

    closing_shape: tuple[int, ...] = ()
    min_body_size: int = 100
    merge_overlap_fraction: float = 0.1
    bridge_fraction: float = 0.0
    bridge_support: int = 2
    boundary_sigma: float = 1.0
    membrane_fraction: float = 0.2
    guard_interval: int = 20
    guard_max_leak: float = 0.5
    claim: bool = True
    claim_grow_distance: float = 2.0
    claim_min_size: int = 20
    claim_split_distance: float = 5.0
    agglomerate: bool = False
    agglomerate_min_contact: int = 20
    agglomerate_agreement: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.merge_overlap_fraction <= 1.0:
            raise ConfigError(f"[postprocessing] merge_overlap_fraction: expected a fraction in [0, 1], "
                              f"got {self.merge_overlap_fraction}")
        if not 0.0 <= self.bridge_fraction <= 0.5:
            raise ConfigError(f"[postprocessing] bridge_fraction: expected a fraction in [0, 0.5] (a body overlaps "
                              f"two labels by it each), got {self.bridge_fraction}")
        if self.bridge_support < 1:
            raise ConfigError(f"[postprocessing] bridge_support: expected an int >= 1, got {self.bridge_support}")
        if self.closing_shape and len(self.closing_shape) != 3:
            raise ConfigError(f"[postprocessing] closing_shape: expected [] or 3 ints, got {list(self.closing_shape)}")
        if not 0.0 <= self.membrane_fraction < 1.0:
            raise ConfigError(f"[postprocessing] membrane_fraction: expected a fraction in [0, 1), "
                              f"got {self.membrane_fraction}")
        if not 0.0 <= self.guard_max_leak <= 1.0:
            raise ConfigError(f"[postprocessing] guard_max_leak: expected a fraction in [0, 1], got {self.guard_max_leak}")
        if not 0.0 <= self.agglomerate_agreement <= 1.0:
            raise ConfigError(f"[postprocessing] agglomerate_agreement: expected a fraction in [0, 1], "
                              f"got {self.agglomerate_agreement}")
        for key in ("boundary_sigma", "guard_interval", "claim_grow_distance", "claim_min_size",
                    "claim_split_distance", "agglomerate_min_contact"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[postprocessing] {key}: expected a number >= 0, got {getattr(self, key)}")


#: Names of the seed generators (:data:`diluvian.seeds.SEED_GENERATORS`), for ``[fill] seed_generator``.
SEED_GENERATOR_NAMES = ("sobel", "membrane", "grid")


@dataclass(frozen=True)
class FillConfig:
    """``[fill]``: how ``fill`` (dense), ``sparse-fill`` and validation fills run; CLI flags override.

    Attributes
    ----------
    move_batch_size : int
        FOVs per forward pass, across objects (dense fill: one move per object per
        step, which gives the one-object-at-a-time result); 0: 32 on the CPU, 256 on CUDA.
    moves_per_step : int
        Moves one region contributes to a step (1: the exact one-move-at-a-time fill; more
        changes the result, as the original's ``move_batch_size`` did for one object).
    moves_per_step_growth : int
        A region takes one more move per step for every this many moves it has made (up
        to the batch), so that a large object filling alone keeps the batch full; 0: always
        ``moves_per_step``. A function of the region's own moves only: the result does not
        depend on the other regions, the machine's speed or a resume.
    moves_per_step_max : int
        The most moves a region takes per step with ``moves_per_step_growth`` (at most
        the batch size, so that the batch size does not change the result).
    max_moves : int
        Stop a region after this many moves; 0: no limit.
    remask_interval : int
        Every this many moves, keep only the seed-connected part of a region's mask; 0: never.
    seed_generator : {"sobel", "membrane", "grid"}
        Where seeds go (:mod:`diluvian.seeds`): cell interiors by the image gradient
        (``sobel``, the original's) or by the boundary evidence (``membrane``, google/ffn's
        policy), or a lattice (``grid``).
    ordered_seeds : bool
        Keep the generator's order instead of shuffling (with ``random_seed``).
    ignore_mask : bool
        Place seeds outside the volume's valid-data mask too.
    bias : bool
        Anti-merge mask update, and stop a region when its seed falls below ``t_move``.
    reject_early_termination : bool
        Drop the bodies of regions that did not end by running out of moves.
    background_label_id : int
        Label of voxels no body claims (never given to a body).
    max_bodies : int
        Stop after this many bodies (diagnostics); 0: no limit.
    checkpoint_interval : int
        Committed bodies between checkpoints; 0: only by time and on Ctrl-C.
    checkpoint_minutes : float
        Also checkpoint when this many minutes passed since the last one; 0: never by time.
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    autocast : bool
        bf16 autocast of the forward pass on CUDA.
    fill_batch : bool
        Keep the batch full: when fewer regions than the batch can start, start the
        seeds that wait for an earlier region anyway (their fills are wasted if that
        region covers them). The segmentation is the same either way; worth it where
        a forward pass costs the same full or not (a GPU), not on a CPU.
    mask_storage : {"pool", "octree"}
        ``pool``: dense mask windows around the seeds in one array, reused from region to
        region (a region that outgrows its window moves to block-sparse storage);
        ``octree``: block-sparse masks only. The same segmentation either way.
    mask_memory_mb : float
        Memory for the pool's windows (the whole box per region when it fits).
    mask_device : {"auto", "host", "model"}
        Where the pool, the box image and the per-step FOV gather and mask update live:
        ``model``: on the network's device (torch), so a step moves no FOV through host
        memory; ``host``: in host memory (compiled numpy kernels); ``auto``: ``model`` on
        CUDA, ``host`` otherwise. The same segmentation either way.
    """

    move_batch_size: int = 0
    moves_per_step: int = 1
    moves_per_step_growth: int = 0
    moves_per_step_max: int = 32
    max_moves: int = 0
    remask_interval: int = 0
    seed_generator: str = "sobel"
    ordered_seeds: bool = False
    ignore_mask: bool = False
    bias: bool = True
    reject_early_termination: bool = False
    background_label_id: int = 0
    max_bodies: int = 0
    checkpoint_interval: int = 50
    checkpoint_minutes: float = 10.0
    device: str = "auto"
    autocast: bool = True
    fill_batch: bool = False
    mask_storage: str = "pool"
    mask_memory_mb: float = 1024.0
    mask_device: str = "auto"

    def __post_init__(self) -> None:
        for key in ("move_batch_size", "max_moves", "remask_interval", "max_bodies", "checkpoint_interval",
                    "background_label_id", "checkpoint_minutes", "moves_per_step_growth"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[fill] {key}: expected a number >= 0, got {getattr(self, key)}")
        if self.moves_per_step < 1:
            raise ConfigError(f"[fill] moves_per_step: expected an int >= 1, got {self.moves_per_step}")
        if self.moves_per_step_max < self.moves_per_step:
            raise ConfigError(f"[fill] moves_per_step_max: expected an int >= moves_per_step ({self.moves_per_step}), "
                              f"got {self.moves_per_step_max}")
        if self.move_batch_size and self.moves_per_step > self.move_batch_size:
            raise ConfigError(f"[fill] moves_per_step: expected at most move_batch_size ({self.move_batch_size}), "
                              f"got {self.moves_per_step}")
        if self.mask_memory_mb <= 0:
            raise ConfigError(f"[fill] mask_memory_mb: expected a number > 0, got {self.mask_memory_mb}")
        _check_choice("fill.seed_generator", self.seed_generator, SEED_GENERATOR_NAMES)
        _check_choice("fill.mask_storage", self.mask_storage, ("pool", "octree"))
        _check_choice("fill.mask_device", self.mask_device, ("auto", "host", "model"))
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"[fill] device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass(frozen=True)
class BlockwiseConfig:
    """``[blockwise]``: blockwise fill on Dask (``fill --blockwise``, :mod:`diluvian.fill.blockwise`).

    Attributes
    ----------
    block_shape : tuple of 3 ints
        Write box of one block (ZYX voxels, at the working resolution); each task fills it
        plus a margin on every side. ``--block-shape`` overrides it.
    margin_moves : int
        Context margin beyond half the input FOV, in move steps.
    agreement_fraction : float
        Objects of two neighbouring blocks are one object when the voxels they share in the
        blocks' overlap are at least this fraction of the smaller one's voxels there.
    seed_margin : int
        A block takes the seeds of its write box grown by this many voxels (at most the
        margin); 0: its write box only, so each seed belongs to one block and no object
        that lies wholly in a margin is filled (by both blocks).
    """

    block_shape: Vec3i = (128, 128, 128)
    margin_moves: int = 2
    agreement_fraction: float = 0.5
    seed_margin: int = 0

    def __post_init__(self) -> None:
        if len(self.block_shape) != 3 or min(self.block_shape) < 1:
            raise ConfigError(f"[blockwise] block_shape: expected 3 positive ints, got {list(self.block_shape)}")
        if self.margin_moves < 0:
            raise ConfigError(f"[blockwise] margin_moves: expected an int >= 0, got {self.margin_moves}")
        if not 0.0 < self.agreement_fraction <= 1.0:
            raise ConfigError(f"[blockwise] agreement_fraction: expected a fraction in (0, 1], "
                              f"got {self.agreement_fraction}")
        if self.seed_margin < 0:
            raise ConfigError(f"[blockwise] seed_margin: expected an int >= 0, got {self.seed_margin}")


@dataclass(frozen=True)
class Config:
    """The whole configuration. Build it with :func:`load_config`."""

    random_seed: int = 1
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)
    fill: FillConfig = field(default_factory=FillConfig)
    blockwise: BlockwiseConfig = field(default_factory=BlockwiseConfig)

    def __post_init__(self) -> None:
        if self.random_seed < 0:  # numpy and torch take seeds >= 0 only
            raise ConfigError(f"random_seed: expected an int >= 0, got {self.random_seed}")


# --------------------------------------------------------------------------- loading


def _check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        section, _, name = key.rpartition(".")
        raise ConfigError(f"[{section}] {name}: expected one of {list(choices)}, got {value!r}")


def _closest(name: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an int"
    if tp is bool:
        return "true/false"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    if origin is dict:
        return f"a table of {_type_name(typing.get_args(tp)[1])}"
    return str(tp)


def _plural(tp: Any) -> str:
    names = {int: "ints", float: "numbers", bool: "booleans", str: "strings"}
    return names.get(tp, "tables" if dataclasses.is_dataclass(tp) else "lists")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` (parsed TOML) against the annotation ``tp``; return it normalised."""

    def bad() -> ConfigError:
        return ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad()
        return _build_dataclass(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad()
        vtype = typing.get_args(tp)[1]
        return {str(k): _coerce(v, vtype, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported config annotation {tp!r}")  # a bug in this module


def _build_dataclass(cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}{_closest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        source = where.split(": ")[0]
        raise ConfigError(f"{source}: {e}") from None


def _merge(base: Config, table: Mapping[str, Any], source: str) -> Config:
    """Apply one parsed TOML table on top of ``base``; keys replace whole values."""
    hints = typing.get_type_hints(Config)
    section_names = [f.name for f in dataclasses.fields(Config)]
    updates: dict[str, Any] = {}
    for key, value in table.items():
        if key not in section_names:
            raise ConfigError(f"{source}: unknown section or key {key!r}{_closest(key, section_names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {key}: expected a [{key}] table, got {value!r}")
            section = getattr(base, key)
            sec_hints = typing.get_type_hints(tp)
            field_names = [f.name for f in dataclasses.fields(tp)]
            sec_updates = {}
            for k, v in value.items():
                if k not in field_names:
                    raise ConfigError(f"{source}: [{key}] unknown key {k!r}{_closest(k, field_names)}")
                sec_updates[k] = _coerce(v, sec_hints[k], f"{source}: [{key}] {k}")
            try:
                updates[key] = dataclasses.replace(section, **sec_updates)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        else:
            updates[key] = _coerce(value, tp, f"{source}: {key}")
    return dataclasses.replace(base, **updates)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; missing files and syntax errors become one-line diluvian errors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetNotFoundError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) TOML file") from None


def default_config_path() -> Path:
    """Path of the packaged ``conf/default.toml``."""
    return Path(__file__).parent / "conf" / "default.toml"


def packaged_config_path(name: str) -> Path:
    """Path of a packaged config (``default``, ``cpu_small``, ``gpu`` ...)."""
    return Path(__file__).parent / "conf" / f"{name}.toml"


def resolve_config_path(path: str | Path) -> Path:
    """A config path, or the name of a packaged config (``cpu_small``, ``gpu``, ``default``).

    An existing file always wins over a packaged name.
    """
    p = Path(path)
    if not p.exists() and p.suffix == "" and p.parent == Path("."):
        packaged = packaged_config_path(str(path))
        if packaged.exists():
            return packaged
    return p


def load_config(paths: Iterable[str | Path] = (), *, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a :class:`Config` from the defaults and config files applied in order.

    Parameters
    ----------
    paths : iterable of path-like
        TOML files, applied in order on top of the defaults. A bare name such
        as ``"cpu_small"`` that is not a file names a packaged config; ``"default"``
        (:data:`DEFAULT_CONFIG_NAME`) resets to the packaged ``default.toml`` at
        that point of the chain (CLI ``-cd``).
    overrides : mapping, optional
        A last table applied after the files (e.g. ``{"random_seed": 3}``).

    Returns
    -------
    Config

    Raises
    ------
    DatasetNotFoundError
        A file does not exist.
    ConfigError
        TOML syntax error, unknown section or key, wrong type or invalid value.
    """
    cfg = Config()
    for p in paths:
        p = resolve_config_path(p)
        cfg = _merge(cfg, read_toml(p), str(p))
    if overrides:
        cfg = _merge(cfg, overrides, "overrides")
    return cfg


def config_from_dict(table: Mapping[str, Any], source: str = "config") -> Config:
    """Build a config from a nested dict (as written by :func:`config_to_dict`) on top of the defaults."""
    return _merge(Config(), table, source)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as a nested dict of TOML-compatible values (lists, tables)."""
    return _plain(cfg)


def toml_dumps(table: Mapping[str, Any]) -> str:
    """``tomli_w.dumps(table)`` with each array on one line (one line per key, for readable dumps)."""
    import tomli_w

    # tomli-w writes arrays one item per line; its strings never hold a raw newline
    # (they are escaped), so every newline inside a value is an array break.
    text = re.sub(r",\n *\]", "]", tomli_w.dumps(table))
    return re.sub(r",\n *", ", ", re.sub(r"\[\n *", "[", text))


def _toml_value(value: Any, name: str = "value") -> str:
    """One plain value as TOML text, written by tomli-w: on one line, or as a TOML
    document for a table (its keys) and for an array of long tables (``[[name]]``)."""
    if isinstance(value, Mapping):
        return toml_dumps(value).rstrip("\n")
    text = toml_dumps({name: value})
    return text.removeprefix(f"{name} = ").rstrip("\n")


def config_to_toml(cfg: Config) -> str:
    """The whole config as TOML text that :func:`load_config` reads back to an equal config.

    Written by tomli-w, one line per key; derived values (``training.batch_size``,
    ...) are not stored, but are shown as comments under their section's header.
    """
    text = toml_dumps(config_to_dict(cfg))
    derived = {
        "model": {"move_step": cfg.model.move_step, "training_subv_shape": cfg.model.training_subv_shape,
                  "validation_subv_shape": cfg.model.validation_subv_shape},
        "training": {"batch_size": cfg.training.batch_size},
    }
    for key, values in derived.items():
        comments = "".join(f"# {k} = {_toml_value(_plain(v))}  (derived)\n" for k, v in values.items())
        text = re.sub(rf"^\[{key}\]\n", lambda m: m.group() + comments, text, count=1, flags=re.M)
    return text


def get_config_value(cfg: Config, dotted: str) -> Any:
    """Value at a dotted path such as ``training.batch_size`` (derived values included).

    Raises
    ------
    ConfigError
        No such attribute; the message suggests the closest name.
    """
    value: Any = cfg
    walked = []
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif not isinstance(value, Mapping) and not part.startswith("_") and hasattr(value, part):
            value = getattr(value, part)
        else:
            names: list[str] = []
            if dataclasses.is_dataclass(value):
                names = [f.name for f in dataclasses.fields(value)]
                names += [n for n, v in vars(type(value)).items() if isinstance(v, property)]
            elif isinstance(value, Mapping):
                names = list(value)
            prefix = ".".join(walked) or "config"
            raise ConfigError(f"no config property {dotted!r}: {prefix} has no {part!r}{_closest(part, names)}")
        walked.append(part)
    return value


def format_config_value(value: Any, name: str = "value") -> str:
    """Render one config value as TOML text (tables as a TOML document; ``name``
    heads an array of tables too long for one line)."""
    return _toml_value(_plain(value), name)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a fresh NumPy ``Generator``.

    Library code takes the returned generator as an argument; the global seeds
    only make third-party randomness (torch init, dropout) reproducible.
    """
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


__all__ = [
    "Config",
    "VolumeConfig",
    "ModelConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "TrainingConfig",
    "PostprocessingConfig",
    "ValidationMetricConfig",
    "NoiseAugment",
    "MissingDataAugment",
    "ContrastAugment",
    "MisalignmentAugment",
    "ArtifactAugment",
    "DEFAULT_CONFIG_NAME",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "toml_dumps",
    "get_config_value",
    "format_config_value",
    "read_toml",
    "seed_everything",
]
