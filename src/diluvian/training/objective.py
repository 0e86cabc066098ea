"""What training minimises: the optimizer, the per-sample loss and the filling-fraction weights."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config

__all__ = ["learning_rate_factor", "make_optimizer"]


def make_optimizer(cfg: Config, params: Any) -> torch.optim.Optimizer:
    """The ``[optimizer]`` of the config over ``params``."""
    oc = cfg.optimizer
    if oc.klass == "SGD":
        return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, nesterov=oc.nesterov and oc.momentum > 0,
                               weight_decay=oc.weight_decay)
    cls = torch.optim.Adam if oc.klass == "Adam" else torch.optim.AdamW
    return cls(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)


def learning_rate_factor(cfg: Config, progress: float) -> float:
    """The fraction of ``[optimizer] lr`` to use at ``progress`` (0 = first step, 1 = end of the run)."""
    oc = cfg.optimizer
    if oc.lr_schedule == "constant":
        return 1.0
    p = min(max(progress, 0.0), 1.0)
    return oc.lr_final + (1.0 - oc.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))


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
