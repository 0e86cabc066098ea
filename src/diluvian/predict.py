"""Predictors: batched network inference on FOV stacks.

A predictor turns a stack of FOVs into object probabilities::

    predict(images, masks) -> probabilities
    images, masks : ndarray of float32, shape (N, *input_fov_shape)
    probabilities : ndarray of float32, shape (N, *output_fov_shape)

which is what :func:`diluvian.stepper.fill_regions` calls. :class:`TorchPredictor`
wraps a diluvian network (``forward(image, mask) -> logits`` on ``(N, 1, Z, Y, X)``
tensors) and adds :meth:`TorchPredictor.submit` / :meth:`TorchPredictor.result`, an
asynchronous form that lets the fill engine prepare the next batch on the CPU
while the GPU runs the current one.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

CPU_MOVE_BATCH_SIZE = 32
"""Default FOVs per forward pass on the CPU."""
CUDA_MOVE_BATCH_SIZE = 256
"""Default FOVs per forward pass on a CUDA device."""


class _Done:
    """Handle of a prediction at hand: a host array, or a device tensor whose kernels are queued."""

    __slots__ = ("value",)

    def __init__(self, value: np.ndarray) -> None:
        self.value = value


class CallablePredictor:
    """Adapt a plain ``predict(images, masks)`` callable to the submit/result protocol."""

    asynchronous = False

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], Any]) -> None:
        self.fn = fn
        self.device_type = "cpu"

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(images, masks), dtype=np.float32)

    def submit(self, images: Any, masks: Any) -> _Done:
        if isinstance(images, list):
            images, masks = np.stack(images), np.stack(masks)
        return _Done(self(images, masks))

    def result(self, handle: _Done) -> np.ndarray:
        return handle.value


class TorchPredictor:
    """Batched inference with a torch network.

    Parameters
    ----------
    model : torch.nn.Module
        ``forward(image, mask) -> logits`` with ``(N, 1, Z, Y, X)`` tensors; the
        logits have shape ``(N, 1, *output_fov_shape)``.
    device : torch.device or str, optional
        Default: the device of the model's parameters.
    autocast : bool, optional
        bf16 autocast; default on for CUDA, off otherwise.

    Notes
    -----
    Runs under ``torch.inference_mode`` with the model in eval mode. On CUDA the
    inputs go through pinned host buffers and the results come back with a
    non-blocking copy synchronised by an event, so :meth:`submit` returns as soon
    as the work is queued (``asynchronous`` is True).
    """

    def __init__(self, model: Any, device: Any = None, autocast: bool | None = None) -> None:
        import torch

        from .device import DeviceSetup

        self.torch = torch
        self.setup = DeviceSetup.for_model(model, device, autocast)
        self.model = self.setup.prepare_model(model.eval())
        self.device = self.setup.device
        self.device_type = self.device.type
        self.autocast = self.setup.autocast
        self.asynchronous = self.device.type == "cuda"
        # pinned host buffers, used round-robin: a buffer is reused only after the
        # batch that last used it was collected (at most 2 batches are in flight)
        self._pinned: list[Any] = []
        self._next_pinned = 0

    def _host_buffers(self, n: int, fov: tuple[int, ...]) -> tuple[Any, Any]:
        torch = self.torch
        if not self._pinned or self._pinned[0][0].shape[0] < n or tuple(self._pinned[0][0].shape[2:]) != fov:
            self._pinned = [tuple(torch.empty((n, 1, *fov), dtype=torch.float32, pin_memory=True) for _ in range(2))
                            for _ in range(3)]
        x, m = self._pinned[self._next_pinned]
        self._next_pinned = (self._next_pinned + 1) % len(self._pinned)
        return x[:n], m[:n]

    def _inputs(self, images: Any, masks: Any) -> tuple[Any, Any]:
        """Tensors (N, 1, Z, Y, X) on the device from arrays or lists of FOV arrays."""
        torch = self.torch
        if self.device.type == "cuda":
            n = len(images)
            x, m = self._host_buffers(n, tuple(np.shape(images[0])))
            np.stack(images, out=x.numpy()[:, 0])
            np.stack(masks, out=m.numpy()[:, 0])
            return self.setup.to_device(x), self.setup.to_device(m)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images,
                                                  dtype=np.float32))[:, None]
        m = torch.from_numpy(np.ascontiguousarray(np.stack(masks) if isinstance(masks, list) else masks,
                                                  dtype=np.float32))[:, None]
        return self.setup.to_device(x), self.setup.to_device(m)

    def _forward(self, images: Any, masks: Any):
        x, m = self._inputs(images, masks)
        with self.setup.autocast_context():
            logits = self.model(x, m)
        return self.torch.sigmoid(logits.float())[:, 0]

    def submit(self, images: Any, masks: Any) -> Any:
        """Start a batch: ``images``, ``masks`` are (N, Z, Y, X) arrays or lists of N FOV arrays."""
        from .device import HostCopy

        with self.torch.inference_mode():
            return HostCopy(self._forward(images, masks))

    def submit_device(self, images: Any, masks: Any) -> Any:
        """Start a batch whose inputs are (N, Z, Y, X) tensors on the device; its result stays there.

        :meth:`result` then returns the (N, *output_fov) probability tensor on the device
        (what the fill's device-resident mask pool applies without a host copy).
        """
        with self.torch.inference_mode():
            x, m = self.setup.to_device(images[:, None]), self.setup.to_device(masks[:, None])
            with self.setup.autocast_context():
                logits = self.model(x, m)
            return _Done(self.torch.sigmoid(logits.float())[:, 0])

    def result(self, handle: Any) -> Any:
        if isinstance(handle, _Done):
            return handle.value
        return handle.numpy()

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return self.result(self.submit(images, masks))


def make_predictor(model: Any, device: Any = None, autocast: bool | None = None) -> Any:
    """A predictor for ``model``: a torch module, a predictor, or a plain callable.

    A plain callable ``predict(images, masks) -> probabilities`` (for example an
    oracle in tests) is used as is.
    """
    if hasattr(model, "submit") and hasattr(model, "result"):
        return model
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            return TorchPredictor(model, device=device, autocast=autocast)
    except ImportError:  # pragma: no cover
        pass
    if callable(model):
        return CallablePredictor(model)
    raise TypeError(f"expected a torch module or a predict(images, masks) callable, got {type(model).__name__}")


def default_move_batch_size(predictor: Any) -> int:
    """:data:`CUDA_MOVE_BATCH_SIZE` on CUDA, else :data:`CPU_MOVE_BATCH_SIZE`."""
    return CUDA_MOVE_BATCH_SIZE if getattr(predictor, "device_type", "cpu") == "cuda" else CPU_MOVE_BATCH_SIZE
