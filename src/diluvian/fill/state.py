"""What a dense fill reports and saves: its counters, its resumable state, its result options.

:func:`fill_options` lists the options that change a fill's segmentation; a checkpoint
stores them (in :class:`FillState`) and a resume with other values is refused.
:func:`with_fill_options` is how flags and keywords override the ``[fill]`` section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..config import Config

__all__ = ["DEFAULT_CHECKPOINT_INTERVAL", "FillResult", "FillState", "FillStats", "fill_options",
           "option_differences", "with_fill_options"]

DEFAULT_CHECKPOINT_INTERVAL = 50
"""Committed bodies between checkpoints."""


@dataclass
class FillStats:
    """Counters of a dense fill (cumulative over resumed runs, except the timings).

    Attributes
    ----------
    seeds : int
        Seeds in the run.
    seeds_done : int
        Seeds resolved (committed, skipped or rejected).
    bodies : int
        Bodies written.
    voxels_labelled : int
        Voxels given a label.
    conflicts : int
        Body voxels that were already labelled by an earlier body (not written).
    skipped_labelled : int
        Seeds already labelled when their turn came.
    revoked : int
        Regions started in a batch and dropped because an earlier body covered their seed.
    no_body : int
        Fills whose seed ended outside the thresholded mask.
    dropped_small : int
        Bodies under ``min_body_size``.
    merged : int
        Bodies that took an earlier body's label (``merge_overlap_fraction``).
    rejected_early : int
        Fills that stopped early, with ``reject_early_termination``.
    guard_trimmed : int
        Bodies that the flood guards cut back to their seed piece (they leaked across membranes).
    bridged : int
        Label pairs joined at the end because enough bodies bridged them (``bridge_fraction``).
    moves : int
        FOVs evaluated.
    wasted_moves : int
        FOVs of revoked regions.
    batches : int
        Forward passes.
    seconds : float
        Wall time of this run.
    forward_wait_seconds : float
        Time spent waiting for forward passes.
    """

    seeds: int = 0
    seeds_done: int = 0
    bodies: int = 0
    voxels_labelled: int = 0
    conflicts: int = 0
    skipped_labelled: int = 0
    revoked: int = 0
    no_body: int = 0
    dropped_small: int = 0
    merged: int = 0
    rejected_early: int = 0
    guard_trimmed: int = 0
    bridged: int = 0
    moves: int = 0
    wasted_moves: int = 0
    batches: int = 0
    seconds: float = 0.0
    forward_wait_seconds: float = 0.0

    @property
    def mean_batch(self) -> float:
        """Average FOVs per forward pass (batch occupancy times the batch size)."""
        return self.moves / self.batches if self.batches else 0.0

    @property
    def fov_per_second(self) -> float:
        return self.moves / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.bodies} bodies, {self.voxels_labelled} voxels labelled, {self.conflicts} conflict voxels; "
                f"seeds {self.seeds_done}/{self.seeds} ({self.skipped_labelled} already labelled, "
                f"{self.revoked} revoked, {self.no_body} without body, {self.dropped_small} too small, "
                f"{self.merged} merged into an earlier body, {self.rejected_early} stopped early, "
                f"{self.guard_trimmed} trimmed by the flood guards, {self.bridged} label pairs joined by bridges); "
                f"{self.moves} FOVs ({self.wasted_moves} wasted) in "
                f"{self.batches} batches (mean {self.mean_batch:.1f} FOVs), {self.seconds:.1f} s, "
                f"{self.fov_per_second:.1f} FOV/s")


@dataclass
class FillState:
    """Everything needed to continue a dense fill exactly (saved in checkpoints).

    Attributes
    ----------
    seeds : ndarray of int64, shape (N, 3)
        Seeds in processing order (box coordinates).
    next_seed : int
        Index of the first seed not yet resolved; all earlier ones are committed.
    next_label : int
        Next label id to hand out.
    entropy : int
        Source of the per-region random generators.
    options : dict
        Fill options (the ones that change the result).
    volume : str
        Name of the filled volume.
    bounds : (list of 3 ints, list of 3 ints)
        Filled box ``(start, stop)`` in volume voxels.
    stats : dict
        :class:`FillStats` fields.
    bridges : list of [int, int, int]
        ``[label a, label b, bodies]`` for label pairs that committed bodies bridged
        (``bridge_fraction``), ``a < b``.
    """

    seeds: NDArray[np.int64]
    next_seed: int
    next_label: int
    entropy: int
    options: dict
    volume: str
    bounds: tuple[list[int], list[int]]
    stats: dict = field(default_factory=dict)
    bridges: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(b - a) for a, b in zip(*self.bounds))  # type: ignore[return-value]


@dataclass
class FillResult:
    """Result of :func:`fill_volume_with_model`.

    Attributes
    ----------
    labels : array-like of uint64, shape of the box
        The segmentation (the ``output`` argument when one was given).
    conflict_count : ndarray of uint32
        Per voxel, how many later bodies also claimed it.
    stats : FillStats
    state : FillState
        Final state (``next_seed`` < number of seeds when stopped by ``max_bodies``).
    """

    labels: Any
    conflict_count: Any
    stats: FillStats
    state: FillState


def with_fill_options(cfg: Config, **overrides: Any) -> Config:
    """``cfg`` with ``[fill]`` keys replaced by the ``overrides`` that are not None.

    This is how the CLI's flags and :func:`fill_volume_with_model`'s keywords
    override the config: a flag not given (None) keeps the config's value.

    Raises
    ------
    ConfigError
        An unknown key or a value the ``[fill]`` section refuses.
    """
    from ..config import FillConfig

    known = {f.name for f in dataclasses.fields(FillConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown fill options: {unknown}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return cfg
    return dataclasses.replace(cfg, fill=dataclasses.replace(cfg.fill, **given))


def fill_options(cfg: Config) -> dict:
    """The options of a dense fill that change its result (stored in checkpoints).

    A resume must run with the same values: :func:`fill_volume_with_model` refuses one
    whose config differs in any of them.
    """
    f, m, pp = cfg.fill, cfg.model, cfg.postprocessing
    opts = {
        "seed_generator": f.seed_generator,
        "ordered_seeds": bool(f.ordered_seeds),
        "ignore_mask": bool(f.ignore_mask),
        "background_label_id": int(f.background_label_id),
        "max_moves": int(f.max_moves) or None,
        "remask_interval": int(f.remask_interval) or None,
        "bias": bool(f.bias),
        "reject_early_termination": bool(f.reject_early_termination),
        "moves_per_step": int(f.moves_per_step),
        "moves_per_step_growth": int(f.moves_per_step_growth),
        "moves_per_step_max": int(f.moves_per_step_max) if f.moves_per_step_growth else None,
    }
    for key in ("t_move", "t_final", "v_true", "v_false", "move_priority", "move_recheck", "move_check_thickness",
                "output_fov_move_fraction"):
        opts[key] = getattr(m, key)
    for fld in dataclasses.fields(pp):  # closing, body sizes, merging, guards, claiming
        value = getattr(pp, fld.name)
        opts[fld.name] = list(value) if isinstance(value, tuple) else value
    return opts


def option_differences(stored: dict, current: dict) -> list[str]:
    """``key: checkpoint value vs config value`` for every result option that differs."""
    out = []
    for key, value in current.items():
        if key not in stored:  # a checkpoint of an older diluvian: not recorded
            continue
        theirs = stored[key]
        if isinstance(theirs, list) or isinstance(value, list):
            same = list(theirs or []) == list(value or [])
        else:
            same = theirs == value
        if not same:
            out.append(f"{key} = {value!r} (checkpoint: {theirs!r})")
    return out
