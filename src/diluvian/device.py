"""Where networks run: one device selector and one device wrapper.

:func:`select_device` turns ``"auto"``/``"cpu"``/``"cuda"`` (``[training]
device``) into a :class:`torch.device`. :class:`DeviceSetup` is what training,
validation and the fill's :class:`~diluvian.predict.TorchPredictor` share:
moving ``(N, Z, Y, X)`` float32 arrays to ``(N, 1, Z, Y, X)`` device tensors
(pinned and non-blocking on CUDA), bf16 autocast and channels-last 3D memory
format on CUDA. :class:`HostCopy` brings a device tensor back, asynchronously on
CUDA (a pinned buffer and an event), so the host can work while it arrives;
:class:`Uploader` sends small index arrays the other way without a stream sync.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["select_device", "DeviceSetup", "HostCopy", "Uploader"]


def select_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` as a :class:`torch.device`.

    Raises
    ------
    ConfigError
        ``"cuda"`` requested but no CUDA device is available.
    """
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError('[training] device = "cuda", but no CUDA device is available')
    return torch.device(name)


@dataclass
class DeviceSetup:
    """A device and how tensors go there.

    Attributes
    ----------
    device : torch.device
    autocast : bool
        bf16 autocast around forward passes.
    channels_last : bool
        Channels-last 3D memory format for the model and its inputs.
    """

    device: torch.device
    autocast: bool
    channels_last: bool

    @classmethod
    def from_config(cls, cfg: Any, device: Any = None) -> "DeviceSetup":
        """``device`` (or ``[training] device``); autocast and channels-last on CUDA with ``[training] autocast``."""
        dev = select_device(device if device is not None else cfg.training.device)
        cuda = dev.type == "cuda"
        return cls(dev, cuda and cfg.training.autocast, cuda and cfg.training.autocast)

    @classmethod
    def for_model(cls, model: Any, device: Any = None, autocast: bool | None = None) -> "DeviceSetup":
        """Inference setup: ``device`` or the model's; autocast (default) and channels-last on CUDA."""
        if device is None:
            try:
                device = next(model.parameters()).device
            except StopIteration:
                device = torch.device("cpu")
        dev = torch.device(device)
        cuda = dev.type == "cuda"
        return cls(dev, cuda if autocast is None else bool(autocast), cuda)

    def tensor(self, arr: np.ndarray) -> torch.Tensor:
        """(N, Z, Y, X) float32 array -> (N, 1, Z, Y, X) tensor on the device."""
        t = torch.from_numpy(arr).unsqueeze(1)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last_3d)
        elif self.device.type != "cpu":
            t = t.to(self.device)
        return t

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor (pinned on CUDA) on the device, non-blocking, in the setup's memory format."""
        if self.device.type == "cpu":
            return t
        t = t.to(self.device, non_blocking=True)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def autocast_context(self) -> Any:
        """bf16 autocast when enabled, else a null context."""
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, in the setup's memory format."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        return model


class HostCopy:
    """A device tensor copied to the host, asynchronously on CUDA; :meth:`numpy` waits for it."""

    def __init__(self, t: torch.Tensor) -> None:
        if t.device.type == "cuda":
            self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self.host.copy_(t, non_blocking=True)
            self.event: Any = torch.cuda.Event()
            self.event.record()
        else:
            self.host = t.cpu()
            self.event = None

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


class Uploader:
    """Small host arrays to a device without a stream synchronisation.

    A copy from pageable host memory to a CUDA device synchronises the stream
    first (it would wait for the batch in flight). This copies through a ring of
    pinned buffers with non-blocking copies instead; a buffer is reused only after
    the copy that last used it completed (an event). On the CPU the array is
    wrapped, not copied.
    """

    def __init__(self, device: torch.device, slots: int = 16, nbytes: int = 1 << 20) -> None:
        self.device = device
        self._ring: list[list[Any]] = []
        self._next = 0
        if device.type == "cuda":
            self._ring = [[torch.empty(nbytes, dtype=torch.uint8, pin_memory=True), None] for _ in range(slots)]

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(array)
        if not self._ring or array.nbytes > self._ring[0][0].numel():
            return torch.from_numpy(array).to(self.device)
        slot = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        if slot[1] is not None:
            slot[1].synchronize()
        host = slot[0][:array.nbytes].view(torch.from_numpy(array[:0]).dtype).reshape(array.shape)
        host.numpy()[...] = array
        out = host.to(self.device, non_blocking=True)
        slot[1] = torch.cuda.Event()
        slot[1].record()
        return out
