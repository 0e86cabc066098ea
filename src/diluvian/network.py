"""Flood-filling networks in PyTorch, and diluvian model files.

(Over 600 lines: the architectures and the model files that rebuild them share the config
checks. The seam is there, between building and files; it is not split yet because most of the
package and its tests import both from here.)

Every network built here has the same interface::

    logits = net(image, mask)
    image, mask : tensors (N, 1, *input_fov_shape)
        ``image`` in [0, 1]; ``mask`` the current object probability, with voxels
        not predicted yet set to ``v_false``.
    logits : tensor (N, 1, *output_fov_shape)
        Object logits; ``torch.sigmoid(logits)`` is the new object probability.

and the attributes ``input_fov_shape`` and ``output_fov_shape`` (ZYX tuples).
When the output FOV is smaller than the input FOV the result is centre-cropped.

Factories (``[network] factory``)
---------------------------------
``unet``
    The original diluvian U-Net (spec §3.2): per level ``num_layers_per_module``
    convolutions (the last one of the contracting side doubles the channels),
    dropout on the level's output (the skip link), a strided convolution to go
    down, a stride-2 transposed convolution to come back up (``2n - 1`` voxels,
    so odd FOVs line up with their skip links), concatenation and
    ``num_layers_per_module`` convolutions; a 1×1×1 head. Axes are downsampled
    per level by ``unet_downsample_rate`` (``fixed_rate``) or by the
    ``isotropy_approximating`` rule from ``[network] resolution``.
``convstack``
    A stack of residual modules at constant resolution, in one of two variants
    (``[network] convstack_variant``):

    ``diluvian`` (spec §3.3)
        conv → ``num_modules`` × [``num_layers_per_module`` conv+activation,
        added to the identity, activation after the add, optional batch norm and
        dropout] → 3×3×3 head. A smaller output FOV is cropped progressively
        between the modules. 8 modules of 32 filters: 445,505 parameters.
    ``ffn`` (google/ffn ``ConvStack3DFFNModel``)
        conv+ReLU → conv → (``num_modules`` - 1) × [ReLU → conv+ReLU → conv,
        added to the identity] → ReLU → 1×1×1 head. The mask enters as logits
        and the output is *additive*: the head predicts an update that is added
        to the (cropped) input mask logits, as in FFN.

        **num_modules is FFN's ``depth``**: FFN counts its first two convolutions
        as a module. FFN's FIB-25 model (``depth=12``, 32 features, FOV 33³) is
        ``num_modules = 12, convolution_filters = 32, num_layers_per_module = 2``
        here: 24 3×3×3 convolutions and 638,433 parameters (see ``conf/gpu.toml``).

Model files
-----------
:func:`save_model` writes one ``torch.save`` file holding only plain types
(dicts, lists, numbers, strings and tensors): a format marker, a version, the
complete config (:func:`~diluvian.config.config_to_dict`), the network's
``state_dict`` and optionally the optimizer state, the epoch and metrics.
:func:`load_model` reads it with ``weights_only=True``, so a model file cannot
run code.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .config import Config, ModelConfig, NetworkConfig, config_from_dict, config_to_dict
from .device import select_device
from .errors import ConfigError, ModelError
from .util import atomic_path

log = logging.getLogger(__name__)

MODEL_FORMAT = "diluvian-model"
"""Value of the ``format`` key of a model file."""
MODEL_VERSION = 1
"""Version of the model file layout written by :func:`save_model`."""

_LOGIT_EPS = 1e-4

__all__ = [
    "FloodFillNetwork",
    "build_network",
    "count_parameters",
    "unet_downsample_axes",
    "save_model",
    "load_model",
    "read_model_config",
    "check_model_config",
    "model_config_differences",
    "config_files_set_network",
    "network_keys_set",
    "config_for_model_file",
    "explicit_model_keys",
    "model_run_config",
    "select_device",
    "MODEL_FORMAT",
    "MODEL_VERSION",
]


# --------------------------------------------------------------------------- building blocks


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ConfigError(f"[network] convolution_activation: unknown activation {name!r}")


def _conv(cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] | int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, tuple(kernel), stride=stride, padding=tuple(k // 2 for k in kernel))


def _conv_act(cin: int, cout: int, cfg: NetworkConfig, stride: Sequence[int] | int = 1) -> nn.Sequential:
    """Convolution, activation, then batch norm when configured."""
    layers: list[nn.Module] = [_conv(cin, cout, cfg.convolution_dim, stride), _activation(cfg.convolution_activation)]
    if cfg.batch_normalization:
        layers.append(nn.BatchNorm3d(cout))
    return nn.Sequential(*layers)


def _center_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Centre-crop the spatial axes of ``x`` (N, C, Z, Y, X) to ``shape``."""
    have = x.shape[2:]
    if tuple(have) == tuple(shape):
        return x
    lo = [(h - s) // 2 for h, s in zip(have, shape)]
    return x[:, :, lo[0]:lo[0] + shape[0], lo[1]:lo[1] + shape[1], lo[2]:lo[2] + shape[2]]


def _initialize(module: nn.Module, scheme: str) -> None:
    """Apply ``[network] initialization`` to every convolution (biases to 0)."""
    if scheme == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            if scheme == "glorot_uniform":
                nn.init.xavier_uniform_(m.weight)
            elif scheme == "he_normal":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- U-Net


def unet_downsample_axes(cfg: NetworkConfig) -> list[tuple[bool, bool, bool]]:
    """Which axes the U-Net downsamples at each of its ``unet_depth - 1`` transitions.

    ``fixed_rate``: axis ``i`` is downsampled going down from a level with
    ``remaining`` levels below it when ``rate[i] != 0`` and ``remaining % rate[i] == 0``.
    ``isotropy_approximating``: every axis whose current resolution is below
    ``min(resolution) * sqrt(2)`` is downsampled, and its resolution doubles.

    Examples
    --------
    >>> from diluvian.config import NetworkConfig
    >>> unet_downsample_axes(NetworkConfig(unet_depth=3, unet_downsample_rate=(0, 1, 1)))
    [(False, True, True), (False, True, True)]
    >>> cfg = NetworkConfig(unet_depth=5, unet_downsample_mode="isotropy_approximating", resolution=(40, 4, 4))
    >>> unet_downsample_axes(cfg)[-1]
    (True, True, True)
    """
    out = []
    res = [float(r) for r in cfg.resolution]
    for level in range(cfg.unet_depth - 1):
        if cfg.unet_downsample_mode == "fixed_rate":
            remaining = cfg.unet_depth - 1 - level
            axes = tuple(bool(r != 0 and remaining % r == 0) for r in cfg.unet_downsample_rate)
        else:
            limit = min(res) * math.sqrt(2.0)
            axes = tuple(r < limit for r in res)
            res = [r * 2.0 if a else r for r, a in zip(res, axes)]
        out.append(axes)  # type: ignore[arg-type]
    return out


class _UNetLevel(nn.Module):
    """One U-Net level, holding the levels below it."""

    def __init__(self, cin: int, base: int, shape: Sequence[int], axes: list[tuple[bool, bool, bool]],
                 cfg: NetworkConfig) -> None:
        super().__init__()
        doubled = 2 * base
        n = cfg.num_layers_per_module
        chans = [cin] + [base] * (n - 1) + [doubled]
        self.contract = nn.Sequential(*[_conv_act(a, b, cfg) for a, b in zip(chans[:-1], chans[1:])])
        self.dropout = nn.Dropout(cfg.dropout_probability) if cfg.dropout_probability > 0 else nn.Identity()
        self.bottom = not axes
        if self.bottom:
            return
        stride = tuple(2 if a else 1 for a in axes[0])
        kernel = cfg.convolution_dim
        self.down = _conv_act(doubled, doubled, cfg, stride)
        down_shape = [(s + 1) // 2 if a else s for s, a in zip(shape, axes[0])]
        self.inner = _UNetLevel(doubled, doubled, down_shape, axes[1:], cfg)
        # 2n - 1 with output_padding 0; add 1 where the skip link is even
        out_pad = tuple(int(s - (2 * d - 1)) if a else 0 for s, d, a in zip(shape, down_shape, axes[0]))
        self.up = nn.Sequential(
            nn.ConvTranspose3d(2 * doubled, 2 * doubled, tuple(kernel), stride=stride,
                               padding=tuple(k // 2 for k in kernel), output_padding=out_pad),
            _activation(cfg.convolution_activation),
        )
        chans = [doubled + 2 * doubled] + [doubled] * n
        self.expand = nn.Sequential(*[_conv_act(a, b, cfg) for a, b in zip(chans[:-1], chans[1:])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.dropout(self.contract(x))
        if self.bottom:
            return skip
        up = self.up(self.inner(self.down(skip)))
        return self.expand(torch.cat([skip, _center_crop(up, skip.shape[2:])], dim=1))


class _UNetCore(nn.Module):
    def __init__(self, input_shape: Sequence[int], cfg: NetworkConfig) -> None:
        super().__init__()
        axes = unet_downsample_axes(cfg)
        self.levels = _UNetLevel(2, cfg.convolution_filters, input_shape, axes, cfg)
        self.head = nn.Conv3d(2 * cfg.convolution_filters, 1, 1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.levels(torch.cat([image, mask], dim=1)))


# --------------------------------------------------------------------------- conv stacks


class _ResidualModule(nn.Module):
    """diluvian residual module: convs in parallel with the identity, activation after the add."""

    def __init__(self, cfg: NetworkConfig, crop: Sequence[int]) -> None:
        super().__init__()
        f = cfg.convolution_filters
        layers: list[nn.Module] = []
        for _ in range(cfg.num_layers_per_module):
            layers += [_conv(f, f, cfg.convolution_dim), _activation(cfg.convolution_activation)]
            if cfg.batch_normalization:
                layers.append(nn.BatchNorm3d(f))
        self.branch = nn.Sequential(*layers)
        post: list[nn.Module] = [_activation(cfg.convolution_activation)]
        if cfg.batch_normalization:
            post.append(nn.BatchNorm3d(f))
        if cfg.dropout_probability > 0:
            post.append(nn.Dropout(cfg.dropout_probability))
        self.post = nn.Sequential(*post)
        self.crop = tuple(int(c) for c in crop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.post(x + self.branch(x))
        if any(self.crop):
            c = self.crop
            x = x[:, :, c[0]:x.shape[2] - c[0], c[1]:x.shape[3] - c[1], c[2]:x.shape[4] - c[2]]
        return x


def _progressive_crops(input_shape: Sequence[int], output_shape: Sequence[int], n: int) -> list[list[int]]:
    """Per-module crop (voxels per side) spreading ``(input - output) / 2`` over ``n`` modules."""
    total = [(i - o) // 2 for i, o in zip(input_shape, output_shape)]
    done = [0, 0, 0]
    crops = []
    for k in range(1, n + 1):
        want = [t * k // n for t in total]
        crops.append([w - d for w, d in zip(want, done)])
        done = want
    return crops


class _DiluvianConvStack(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: Sequence[int], cfg: NetworkConfig) -> None:
        super().__init__()
        f = cfg.convolution_filters
        self.stem = _conv_act(2, f, cfg)
        crops = _progressive_crops(input_shape, output_shape, cfg.num_modules)
        self.blocks = nn.Sequential(*[_ResidualModule(cfg, c) for c in crops])
        self.head = _conv(f, 1, cfg.convolution_dim)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(torch.cat([image, mask], dim=1))))


class _FFNModule(nn.Module):
    """google/ffn residual module: ReLU → conv+ReLU → ... → conv, added to the identity."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        f = cfg.convolution_filters
        layers: list[nn.Module] = [_activation(cfg.convolution_activation)]
        for i in range(cfg.num_layers_per_module):
            layers.append(_conv(f, f, cfg.convolution_dim))
            if i < cfg.num_layers_per_module - 1:
                layers.append(_activation(cfg.convolution_activation))
            if cfg.batch_normalization:
                layers.append(nn.BatchNorm3d(f))
        self.branch = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout_probability) if cfg.dropout_probability > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.branch(x))


class _FFNConvStack(nn.Module):
    """google/ffn ConvStack3DFFNModel; the mask enters as logits and the output is additive."""

    def __init__(self, input_shape: Sequence[int], output_shape: Sequence[int], cfg: NetworkConfig) -> None:
        super().__init__()
        f = cfg.convolution_filters
        stem: list[nn.Module] = [_conv(2, f, cfg.convolution_dim), _activation(cfg.convolution_activation),
                                 _conv(f, f, cfg.convolution_dim)]
        if cfg.batch_normalization:
            stem.append(nn.BatchNorm3d(f))
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.Sequential(*[_FFNModule(cfg) for _ in range(cfg.num_modules - 1)])
        self.final = _activation(cfg.convolution_activation)
        self.head = nn.Conv3d(f, 1, 1)
        self.output_shape = tuple(output_shape)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seed = torch.logit(mask.float().clamp(_LOGIT_EPS, 1.0 - _LOGIT_EPS)).to(image.dtype)
        x = self.final(self.blocks(self.stem(torch.cat([image, seed], dim=1))))
        x = _center_crop(x, self.output_shape)
        return self.head(x) + _center_crop(seed, self.output_shape)


# --------------------------------------------------------------------------- the public module


class FloodFillNetwork(nn.Module):
    """A flood-filling network: ``forward(image, mask) -> logits`` (see the module docstring).

    Wraps a factory's core network with what every factory shares: the image
    rescale to [-1, 1], the ZYX↔XYZ transpose of loaded models, and the centre
    crop to the output FOV.

    Attributes
    ----------
    input_fov_shape, output_fov_shape : tuple of 3 ints
        FOVs in the caller's ZYX order.
    factory : str
    """

    def __init__(self, core: nn.Module, model_cfg: ModelConfig, network_cfg: NetworkConfig) -> None:
        super().__init__()
        self.core = core
        self.input_fov_shape = tuple(int(s) for s in model_cfg.input_fov_shape)
        self.output_fov_shape = tuple(int(s) for s in model_cfg.output_fov_shape)
        self.factory = network_cfg.factory
        self.rescale_image = network_cfg.rescale_image
        self.transpose = network_cfg.transpose
        self._core_output = tuple(reversed(self.output_fov_shape)) if self.transpose else self.output_fov_shape

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.rescale_image:
            image = (image - 0.5) * 2.0
        if self.transpose:
            image = image.permute(0, 1, 4, 3, 2)
            mask = mask.permute(0, 1, 4, 3, 2)
        out = _center_crop(self.core(image, mask), self._core_output)
        if self.transpose:
            out = out.permute(0, 1, 4, 3, 2)
        return out

    def extra_repr(self) -> str:
        return f"factory={self.factory!r}, input_fov_shape={self.input_fov_shape}, output_fov_shape={self.output_fov_shape}"


def build_network(model_cfg: ModelConfig, network_cfg: NetworkConfig) -> FloodFillNetwork:
    """Build the network of ``[network] factory`` for the FOVs of ``[model]``.

    Parameters
    ----------
    model_cfg : ModelConfig
        ``input_fov_shape`` and ``output_fov_shape`` (odd, output <= input).
    network_cfg : NetworkConfig

    Returns
    -------
    FloodFillNetwork
        On the CPU, in training mode, initialised per ``network_cfg.initialization``
        (from torch's global generator).

    Raises
    ------
    ConfigError
        The U-Net cannot downsample the FOV that often, or the settings are inconsistent.

    Examples
    --------
    >>> from diluvian.config import ModelConfig, NetworkConfig
    >>> net = build_network(ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(5, 5, 5)),
    ...                     NetworkConfig(num_modules=2, convolution_filters=4))
    >>> net(torch.rand(2, 1, 9, 9, 9), torch.full((2, 1, 9, 9, 9), 0.05)).shape
    torch.Size([2, 1, 5, 5, 5])
    """
    inp = tuple(int(s) for s in model_cfg.input_fov_shape)
    out = tuple(int(s) for s in model_cfg.output_fov_shape)
    if network_cfg.transpose:
        inp, out = tuple(reversed(inp)), tuple(reversed(out))
    core: nn.Module
    if network_cfg.factory == "unet":
        shape = list(inp)
        for level, axes in enumerate(unet_downsample_axes(network_cfg)):
            if not any(axes):
                raise ConfigError(f"[network] U-Net level {level + 1} downsamples no axis; check "
                                  f"unet_downsample_rate / unet_downsample_mode")
            shape = [(s + 1) // 2 if a else s for s, a in zip(shape, axes)]
            if any(s < 2 and a for s, a in zip(shape, axes)):
                raise ConfigError(f"[network] unet_depth = {network_cfg.unet_depth}: the input FOV "
                                  f"{list(model_cfg.input_fov_shape)} cannot be downsampled that often")
        core = _UNetCore(inp, network_cfg)
    elif network_cfg.factory == "convstack":
        if network_cfg.convstack_variant == "ffn":
            core = _FFNConvStack(inp, out, network_cfg)
        else:
            core = _DiluvianConvStack(inp, out, network_cfg)
    else:  # pragma: no cover - NetworkConfig validates the name
        raise ConfigError(f"[network] factory: unknown network {network_cfg.factory!r}")
    _initialize(core, network_cfg.initialization)
    return FloodFillNetwork(core, model_cfg, network_cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- model files


def _plain_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if hasattr(v, "item"):
            v = v.item()
        out[str(k)] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DataParallel / compiled wrappers


def save_model(path: str | os.PathLike, model: nn.Module, cfg: Config, *, optimizer_state: Mapping | None = None,
               epoch: int | None = None, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write a diluvian model file (atomically).

    Parameters
    ----------
    path : path-like
        Output file, conventionally ``.pt``.
    model : FloodFillNetwork
    cfg : Config
        The complete config the model was built and trained with; stored as a
        plain dict, so :func:`load_model` can rebuild the network.
    optimizer_state : dict, optional
        ``optimizer.state_dict()``, for continued training.
    epoch : int, optional
        Epochs trained so far.
    metrics : dict, optional
        Numbers to keep with the model (``val_subv_metric`` ...).

    Returns
    -------
    Path
    """
    net = _unwrap(model)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "torch_version": str(torch.__version__),
        "config": config_to_dict(cfg),
        "state_dict": state,
        "optimizer_state": _optimizer_state_to_cpu(optimizer_state) if optimizer_state is not None else None,
        "epoch": None if epoch is None else int(epoch),
        "metrics": _plain_metrics(metrics),
    }
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as fh:  # a Python file: a full disk is an OSError, not a C++ stream error
            torch.save(payload, fh)
    return path


def _optimizer_state_to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, Mapping):
        return {k: _optimizer_state_to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_optimizer_state_to_cpu(v) for v in state]
    return state


def _read_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, expected a diluvian model file (.pt)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors all mean "not a model file of ours"
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unpickler error" in ln), lines[0] if lines else type(e).__name__)
        first = detail.replace("\x1b[1m", "").replace("\x1b[0m", "")
        raise ModelError(f"{path}: not a diluvian model file (cannot read it as one: {first[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path}: not a diluvian model file (no {MODEL_FORMAT!r} marker; a Keras .hdf5 model "
                         "of the original diluvian cannot be loaded)")
    version = ckpt.get("version")
    if not isinstance(version, int) or version > MODEL_VERSION:
        raise ModelError(f"{path}: diluvian model file version {version!r} is newer than this diluvian "
                         f"reads (<= {MODEL_VERSION}); upgrade diluvian")
    for key in ("config", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise ModelError(f"{path}: damaged diluvian model file: no {key!r} table")
    return ckpt


def read_model_config(path: str | os.PathLike) -> Config:
    """The config stored in a model file (without building the network).

    Raises
    ------
    ModelError
        Not a diluvian model file, or its config does not load.
    """
    ckpt = _read_checkpoint(path)
    return _checkpoint_config(ckpt, path)


def _checkpoint_config(ckpt: Mapping[str, Any], path: str | os.PathLike) -> Config:
    try:
        return config_from_dict(ckpt["config"], source=f"{path} (stored config)")
    except ConfigError as e:
        raise ModelError(f"{path}: the stored config does not load: {e}") from None


def load_model(path: str | os.PathLike, device: Any = "cpu") -> tuple[FloodFillNetwork, Config, dict[str, Any]]:
    """Load a model file written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    model : FloodFillNetwork
        In eval mode, on ``device``.
    cfg : Config
        The config stored in the file (its ``[model]`` and ``[network]`` describe
        the network).
    checkpoint : dict
        The whole file: ``optimizer_state``, ``epoch``, ``metrics`` ...

    Raises
    ------
    ModelError
        The file is missing, unreadable, not a diluvian model, or its weights do
        not fit the network its config describes.
    """
    ckpt = _read_checkpoint(path)
    cfg = _checkpoint_config(ckpt, path)
    try:
        model = build_network(cfg.model, cfg.network)
    except ConfigError as e:
        raise ModelError(f"{path}: cannot build the stored network: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"{path}: weights do not match the stored [network] config: {first[:200]}") from None
    model = model.to(select_device(device) if isinstance(device, str) else device).eval()
    return model, cfg, ckpt


_MODEL_FOV_KEYS = ("input_fov_shape", "output_fov_shape")


def _native(resolution: Sequence[float]) -> bool:
    """``[volume] resolution`` of all zeros: the volumes' own resolution."""
    return not any(r > 0 for r in resolution)


def model_config_differences(model_cfg: Config, user_cfg: Config) -> list[str]:
    """Keys bound to a model in which two configs differ, as ``section.key``.

    Those are the ``[network]`` keys, the ``[model]`` FOVs and the working
    resolution ``[volume] resolution`` (compared only when the user's is set).
    """
    diff = [f"network.{f.name}" for f in dataclasses.fields(NetworkConfig)
            if getattr(model_cfg.network, f.name) != getattr(user_cfg.network, f.name)]
    diff += [f"model.{k}" for k in _MODEL_FOV_KEYS if getattr(model_cfg.model, k) != getattr(user_cfg.model, k)]
    if not _native(user_cfg.volume.resolution) and \
            tuple(model_cfg.volume.resolution) != tuple(user_cfg.volume.resolution):
        diff.append("volume.resolution")
    return diff


def check_model_config(model_cfg: Config, user_cfg: Config, explicitly_set: bool | set[str],
                       model_file: str | os.PathLike = "model file") -> Config:
    """Reconcile a model file's config with the user's.

    Parameters
    ----------
    model_cfg : Config
        The config stored in the model file.
    user_cfg : Config
        The config from the command line (``-c`` files on the defaults).
    explicitly_set : bool or set of str
        Whether the user's ``[network]`` / ``[model]`` FOV came from ``-c`` files
        (then they must agree with the model), or the ``section.key`` names the
        ``-c`` files set (see :func:`network_keys_set`; only those are compared).
        When False or empty the model's sections are simply used.
    model_file : path-like
        For the message.

    Returns
    -------
    Config
        ``user_cfg`` with the model file's ``[network]``, FOVs and working
        resolution (a model trained on volumes downsampled to 20 nm fills at
        20 nm).

    Raises
    ------
    ModelError
        ``explicitly_set`` and the sections differ; the one-line message names
        the differing keys.
    """
    if explicitly_set:
        diff = model_config_differences(model_cfg, user_cfg)
        if isinstance(explicitly_set, (set, frozenset)):
            diff = [d for d in diff if d in explicitly_set]
        if diff:
            parts = []
            for d in diff:
                section, key = d.split(".")
                theirs = getattr(getattr(model_cfg, section), key)
                mine = getattr(getattr(user_cfg, section), key)
                parts.append(f"{d} = {_show(mine)} (model: {_show(theirs)})")
            raise ModelError(f"{model_file}: the config's network differs from the model's: {'; '.join(parts)}; "
                             "drop those keys from the -c files or train a new model")
    model = dataclasses.replace(user_cfg.model, **{k: getattr(model_cfg.model, k) for k in _MODEL_FOV_KEYS})
    volume = dataclasses.replace(user_cfg.volume, resolution=model_cfg.volume.resolution)
    return dataclasses.replace(user_cfg, model=model, network=model_cfg.network, volume=volume)


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def network_keys_set(paths: Sequence[str | os.PathLike]) -> set[str]:
    """The model-bound keys (``network.*``, the ``[model]`` FOVs, ``volume.resolution``) these config files set.

    ``"default"`` (``-cd``) resets: keys set before it no longer count.
    """
    from .config import DEFAULT_CONFIG_NAME, read_toml, resolve_config_path

    keys: set[str] = set()
    for p in paths:
        if str(p) == DEFAULT_CONFIG_NAME:
            keys.clear()
            continue
        table = read_toml(resolve_config_path(p))
        for section, names in (("network", None), ("model", _MODEL_FOV_KEYS), ("volume", ("resolution",))):
            entries = table.get(section, {})
            if isinstance(entries, dict):
                keys.update(f"{section}.{k}" for k in entries if names is None or k in names)
    return keys


def config_files_set_network(paths: Sequence[str | os.PathLike]) -> bool:
    """Whether any of these config files sets a ``[network]`` key, a ``[model]`` FOV or ``[volume] resolution``."""
    return bool(network_keys_set(paths))


def explicit_model_keys(config_files: Sequence[str | os.PathLike]) -> set[str]:
    """``[model]`` keys that the ``-c`` files set themselves (``-cd`` entries set none)."""
    from .config import DEFAULT_CONFIG_NAME, read_toml, resolve_config_path

    keys: set[str] = set()
    for p in config_files:
        if str(p) == DEFAULT_CONFIG_NAME:
            keys.clear()  # -cd resets everything before it
            continue
        model = read_toml(resolve_config_path(p)).get("model", {})
        if isinstance(model, dict):
            keys.update(model)
    return keys


def model_run_config(user_cfg: Config, model_cfg: Config, config_files: Sequence[str | os.PathLike] = (),
                     model_file: str | os.PathLike = "model") -> Config:
    """The config to run a model file with: the one rule for ``-m`` with ``-c`` files.

    The model file's ``[network]``, FOVs and working resolution are used; the ``-c``
    files may not change them (an error when they set them to other values). The
    model's other ``[model]`` keys (``t_move``, ``t_final``, ``move_priority``,
    ``output_fov_move_fraction`` ...) are used too, except those the ``-c`` files set
    explicitly, which replace them (with a log line). Every other section comes from
    the ``-c`` files on the defaults. ``fill``, ``sparse-fill``, ``validate``,
    ``train -m`` and ``train --viewer`` all use this.

    Raises
    ------
    ModelError
        The ``-c`` files set a network, FOV or resolution other than the model's, or a
        ``[model]`` value the model's FOVs do not allow.
    """
    cfg = check_model_config(model_cfg, user_cfg, network_keys_set(config_files), model_file)
    explicit = explicit_model_keys(config_files) - set(_MODEL_FOV_KEYS)
    overrides = {k: getattr(user_cfg.model, k) for k in sorted(explicit)}
    changed = {k: v for k, v in overrides.items() if v != getattr(model_cfg.model, k)}
    if changed:
        log.info("using these [model] values from the config files instead of the model's: %s", changed)
    try:
        model = dataclasses.replace(model_cfg.model, **overrides)
    except ConfigError as e:
        raise ModelError(f"{model_file}: {e}") from None
    return dataclasses.replace(cfg, model=model)


def config_for_model_file(user_cfg: Config, model_file: str | os.PathLike,
                          config_files: Sequence[str | os.PathLike] = ()) -> Config:
    """:func:`model_run_config` for the config stored in ``model_file``.

    Raises
    ------
    ModelError
        Not a diluvian model file, or the ``-c`` network differs from the model's.
    """
    return model_run_config(user_cfg, read_model_config(model_file), config_files, model_file)
