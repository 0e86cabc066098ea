"""The moving-FOV training loop: slots of self-fed regions, epochs, early stopping and restarts.

``batch_size`` slots each hold a :class:`~diluvian.region.Region` on one
subvolume (:class:`_SlotGroup`). At every step each slot contributes the next
FOV of its region, the batch goes through one forward/backward/optimizer step
(:class:`_Stepper`), and the network's detached predictions are written back
into the regions, which queues the next moves. On CUDA two slot groups
alternate so that the host works on one while the device runs the other.
:func:`train_network` runs :func:`_train_once` (setup, then :func:`_train_epoch`
and :func:`_finish_epoch` per epoch) and restarts it on an early abort.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..config import Config, seed_everything
from ..device import DeviceSetup, HostCopy
from ..errors import EarlyAbortError, TrainingError
from ..network import build_network, check_model_config, load_model, model_config_differences, save_model
from ..stepper import RegionStepper, Slot
from ..region import Block, Region
from .data import PreparedSubvolume, Prefetcher, prepare_training_volumes, subvolume_stream, validation_subvolumes
from .objective import _FillFactorWeights, _sample_losses, learning_rate_factor, make_optimizer
from .outputs import CandidateKeeper, TrainingOutputs, checkpoint_name, progress_bar
from .validation import run_validation

log = logging.getLogger(__name__)

__all__ = ["TrainingResult", "train_network", "MAX_EARLY_RESTARTS"]

MAX_EARLY_RESTARTS = 10


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
    candidates : list of Path
        With ``[training] select_by = "dense_fill"``: the model files of the best
        epochs by the validation metric, best first (``BASE.candidates/``), for
        :func:`diluvian.selection.select_model`.
    """

    model_file: Path
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float
    stop_reason: str
    random_seed: int
    restarts: int = 0
    candidates: list[Path] = field(default_factory=list)

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


# --------------------------------------------------------------------------- training slots


class _SlotGroup:
    """``n`` training slots, each a Region on one subvolume."""

    def __init__(self, n: int, cfg: Config, source: Callable[[], PreparedSubvolume], rng: np.random.Generator
                 ) -> None:
        self.cfg = cfg
        self.source = source
        self.rng = rng
        self.stepper = RegionStepper()
        self.slots: list[Slot | None] = [None] * n
        self.subvolumes: list[PreparedSubvolume | None] = [None] * n
        self.blocks: list[Block] = []
        self.pending: HostCopy | None = None
        self.started = 0  # subvolumes begun
        self.finished_moves = 0  # moves of finished subvolumes
        self.finished = 0

    def next_blocks(self) -> list[Block]:
        """The next FOV of every slot; a slot whose region is done starts on a new subvolume.

        Each slot steps through the fill's stepper (:class:`~diluvian.stepper.RegionStepper`,
        one move per step), like every fill.
        """
        blocks = []
        for i, slot in enumerate(self.slots):
            step = self.stepper.begin(slot) if slot is not None else []
            while not step:
                if slot is not None:
                    self.finished += 1
                    self.finished_moves += slot.region.moves
                sub = self.source()
                region = Region(sub.image, self.cfg.model, sub.seed, target=sub.target,
                                rng=np.random.default_rng(self.rng.integers(2**63)))
                slot = self.stepper.slot(self.started, region)
                self.slots[i] = slot
                self.subvolumes[i] = sub
                self.started += 1
                step = self.stepper.begin(slot)
            blocks.extend(step)
        self.blocks = blocks
        return blocks

    @property
    def regions(self) -> list[Region | None]:
        return [None if s is None else s.region for s in self.slots]

    def apply(self) -> None:
        """Write the pending predictions into the regions (queues their next moves)."""
        if self.pending is None:
            return
        probs = self.pending.numpy()
        for slot, out in zip(self.slots, probs):
            self.stepper.finish(slot, [out[0]])  # type: ignore[arg-type]
        self.pending = None

    def reset(self) -> None:
        self.slots = [None] * len(self.slots)
        self.subvolumes = [None] * len(self.slots)
        self.pending = None


class _TrainingStream:
    """The prefetched stream of training subvolumes; :meth:`restart` re-seeds it as at the start."""

    def __init__(self, volumes: Mapping[str, Any], cfg: Config, seed: int) -> None:
        self.volumes, self.cfg, self.seed = volumes, cfg, seed
        self.prefetcher = self._new()

    def _new(self) -> Prefetcher:
        stream = subvolume_stream(self.volumes, self.cfg.model.training_subv_shape, self.cfg,
                                  np.random.default_rng(self.seed), augment=True)
        return Prefetcher(stream, maxsize=2 * self.cfg.training.batch_size)

    def get(self) -> PreparedSubvolume:
        return self.prefetcher.get()

    def restart(self) -> None:
        self.prefetcher.close()
        self.prefetcher = self._new()

    def close(self) -> None:
        self.prefetcher.close()


class _Stepper:
    """One optimizer step on one slot group's batch; the predictions go back to the group (pending)."""

    def __init__(self, cfg: Config, setup: DeviceSetup, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 weights: _FillFactorWeights | None) -> None:
        self.cfg, self.setup, self.model, self.optimizer, self.weights = cfg, setup, model, optimizer, weights

    def __call__(self, group: _SlotGroup, progress: float) -> torch.Tensor:
        """Forward, loss, backward and step on the group's next FOVs; returns the (detached) batch loss.

        ``progress`` (0 to 1, the fraction of the run's training done) sets the learning rate.
        """
        setup = self.setup
        lr = self.cfg.optimizer.lr * learning_rate_factor(self.cfg, progress)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        blocks = group.next_blocks()
        images = setup.tensor(np.stack([b.image for b in blocks]))
        masks = setup.tensor(np.stack([b.mask for b in blocks]))
        targets = setup.tensor(np.stack([b.target for b in blocks]))
        with setup.autocast_context():
            logits = self.model(images, masks)
        per_sample = _sample_losses(logits, targets)
        if self.weights is not None:
            w = torch.tensor([self.weights(s.fill_fraction) for s in group.subvolumes], dtype=torch.float32,
                             device=setup.device)
            loss = (per_sample * w).mean()
        else:
            loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optimizer.clip_gradient > 0:
            torch.nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.optimizer.clip_gradient)
        self.optimizer.step()
        group.pending = HostCopy(torch.sigmoid(logits.detach().float()))
        return loss.detach()


# --------------------------------------------------------------------------- API


def train_network(cfg: Config, volumes: Mapping[str, Any], model_output_filebase: str | os.PathLike, *,
                  model_file: str | os.PathLike | None = None, checkpoint_pattern: str | None = None,
                  tensorboard: bool = False, early_restart: bool = False, rng: np.random.Generator | None = None,
                  device: Any = None, progress: bool | None = None, max_minutes: float | None = None
                  ) -> TrainingResult:
    """Train a flood-filling network with moving FOVs (see :mod:`diluvian.training`).

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


# --------------------------------------------------------------------------- one run


def _load_or_build_model(cfg: Config, model_file: str | os.PathLike | None, rng: np.random.Generator
                         ) -> tuple[torch.nn.Module, Config, int, Any]:
    """The network to train: ``model_file`` continued, or a new one seeded from ``rng``.

    Returns ``(model on the CPU, config, start epoch, optimizer state or None)``;
    a model file's network and FOVs replace the config's.
    """
    if model_file is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            return build_network(cfg.model, cfg.network), cfg, 0, None
    model, file_cfg, ckpt = load_model(model_file, "cpu")
    diff = model_config_differences(file_cfg, cfg)
    if diff:
        log.info("%s: using the model's network and FOVs (the config differs in %s)", model_file, ", ".join(diff))
    cfg = check_model_config(file_cfg, cfg, explicitly_set=False, model_file=model_file)
    start_epoch = int(ckpt.get("epoch") or 0)
    model.train()
    log.info("continuing training of %s from epoch %d", model_file, start_epoch)
    return model, cfg, start_epoch, ckpt.get("optimizer_state")


def _restored_optimizer(cfg: Config, model: torch.nn.Module, state: Any, model_file: Any) -> torch.optim.Optimizer:
    """``make_optimizer`` with the model file's state when it fits (a warning when it does not)."""
    optimizer = make_optimizer(cfg, model.parameters())
    if state is not None:
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError) as e:
            log.warning("%s: optimizer state not restored (%s); starting a fresh optimizer", model_file, e)
    return optimizer


def _log_setup(cfg: Config, setup: DeviceSetup, model: torch.nn.Module, train_vols: Mapping[str, Any],
               val_vols: Mapping[str, Any]) -> None:
    tc = cfg.training
    if tc.num_gpus > 1:
        log.warning("[training] num_gpus = %d: data-parallel training is not implemented; the whole batch of %d "
                    "runs on %s", tc.num_gpus, tc.batch_size, setup.device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("network %s (%s), %d parameters, on %s%s", cfg.network.factory,
             cfg.network.convstack_variant if cfg.network.factory == "convstack" else f"depth {cfg.network.unet_depth}",
             n_params, setup.device, " (bf16 autocast, channels-last)" if setup.autocast else "")
    log.info("training volumes: %s; validation volumes: %s", {k: list(v.shape) for k, v in train_vols.items()},
             {k: list(v.shape) for k, v in val_vols.items()})


@dataclass
class _EpochSteps:
    """What :func:`_train_epoch` did: the losses of its steps, their count and time, and whether time ran out."""

    losses: list[torch.Tensor]
    steps_done: int
    train_time: float
    timed_out: bool
    global_step: int


def _run_progress(steps_before: int, seconds_before: float, total_steps: int, budget: float, step: int,
                  seconds: float) -> float:
    """The fraction of a run done: of its steps, or of its time budget where that runs out first."""
    return max((steps_before + step) / total_steps, (seconds_before + seconds) / budget)


def _train_epoch(epoch: int, step_fn: _Stepper, groups: list[_SlotGroup], steps: int, budget_left: float,
                 outputs: TrainingOutputs, global_step: int, progress: bool,
                 run_progress: Callable[[int, float], float]) -> _EpochSteps:
    """Up to ``steps`` optimizer steps, alternating over ``groups``, within ``budget_left`` seconds.

    ``run_progress(step, seconds)`` is the fraction of the run done after ``step``
    steps and ``seconds`` of steps of this epoch (for the learning-rate schedule).

    With one group the predictions are applied right after each step; with two,
    the other group's pending predictions are applied while this step runs on
    the device. The mean loss of every 10 steps is checked (NaN raises
    :class:`~diluvian.errors.TrainingError`), shown and logged to TensorBoard.
    """
    batch_size = step_fn.cfg.training.batch_size
    n_groups = len(groups)
    losses: list[torch.Tensor] = []
    bar = progress_bar(total=steps, desc=f"epoch {epoch}", enabled=progress)
    t_train = time.perf_counter()
    steps_done = 0
    timed_out = False
    for step in range(steps):
        if time.perf_counter() - t_train >= budget_left:
            timed_out = True
            break
        g = groups[step % n_groups]
        g.apply()  # only pending when this group ran two steps ago (single group: never)
        losses.append(step_fn(g, run_progress(step, time.perf_counter() - t_train)))
        if n_groups == 1:
            g.apply()
        else:
            groups[(step + 1) % n_groups].apply()  # overlaps with this step running on the device
        global_step += 1
        steps_done += 1
        if (step + 1) % 10 == 0 or step + 1 == steps:
            recent = float(torch.stack(losses[-10:]).mean().item())
            if not math.isfinite(recent):
                raise TrainingError(f"epoch {epoch}: the training loss became {recent} at step {step + 1}; "
                                    "lower [optimizer] lr or set clip_gradient")
            elapsed = time.perf_counter() - t_train
            bar.set_postfix(loss=f"{recent:.4f}", fov_s=f"{(step + 1) * batch_size / elapsed:.1f}")
            outputs.step_loss(recent, global_step)
        bar.update(1)
    for g in groups:
        g.apply()
    bar.close()
    return _EpochSteps(losses, steps_done, time.perf_counter() - t_train, timed_out, global_step)


def _epoch_loss(epoch: int, done: _EpochSteps) -> float:
    """Mean training loss of the epoch's steps (raises TrainingError when it is not finite)."""
    epoch_loss = float(torch.stack(done.losses).mean().item())
    if not math.isfinite(epoch_loss):
        raise TrainingError(f"epoch {epoch}: the training loss is {epoch_loss}; lower [optimizer] lr")
    return epoch_loss


def _epoch_row(epoch: int, epoch_loss: float, done: _EpochSteps, groups: list[_SlotGroup], val: Any,
               batch_size: int, t0: float) -> dict[str, Any]:
    """The history row of an epoch; ``val`` None for an epoch between validations (NaN columns).

    Raises TrainingError on a non-finite validation loss.
    """
    if val is not None and not math.isfinite(val.loss):
        raise TrainingError(f"epoch {epoch}: the validation loss is {val.loss}")
    finished = sum(g.finished for g in groups)
    moves_per_subv = sum(g.finished_moves for g in groups) / finished if finished else float("nan")
    nan = float("nan")
    val_loss, val_metric, val_moves = (nan, nan, nan) if val is None else (
        val.loss, val.metric, float(np.mean(val.moves)) if val.moves else 0)
    return {"epoch": epoch, "loss": epoch_loss, "val_loss": val_loss, "val_subv_metric": val_metric,
            "time": time.perf_counter() - t0, "fov_per_s": done.steps_done * batch_size / done.train_time,
            "moves_per_subvolume": moves_per_subv, "val_moves": val_moves}


def _validates(epoch: int, start_epoch: int, tc: Any, since_best: int, last: bool) -> bool:
    """Whether ``epoch`` is validated: every ``validation_interval`` epochs, the last epoch,
    the early-abort epoch, and an epoch after which ``patience`` would stop training."""
    n = epoch - start_epoch
    return (last or n % tc.validation_interval == 0 or since_best + 1 >= tc.patience
            or (tc.early_abort_epoch > 0 and n == tc.early_abort_epoch))


def _train_once(cfg: Config, volumes: Mapping[str, Any], base: str | os.PathLike, *,
                model_file: str | os.PathLike | None, checkpoint_pattern: str | None, tensorboard: bool,
                rng: np.random.Generator, device: Any, progress: bool | None,
                max_minutes: float | None = None) -> TrainingResult:
    """One training run (no restarts); see :func:`train_network` for the parameters.

    Setup (model first, since a model file may replace the network and FOVs;
    then volumes, config file, optimizer, validation set, training stream and
    slots), then per epoch: :func:`_train_epoch`, validation, the history row,
    the best model, checkpoints and outputs, and the stop rules (early abort,
    time limit, patience).
    """
    progress = sys.stderr.isatty() if progress is None else progress
    outputs = TrainingOutputs(base, tensorboard)
    setup = DeviceSetup.from_config(cfg, device)
    tc = cfg.training

    model, cfg, start_epoch, optimizer_state = _load_or_build_model(cfg, model_file, rng)
    train_vols, val_vols = prepare_training_volumes(cfg, volumes)
    outputs.write_config(cfg)
    model = setup.prepare_model(model)
    optimizer = _restored_optimizer(cfg, model, optimizer_state, model_file)
    _log_setup(cfg, setup, model, train_vols, val_vols)

    val_set = validation_subvolumes(cfg, val_vols)
    log.info("validation: %d subvolumes of %s", len(val_set), list(cfg.model.validation_subv_shape))
    stream = _TrainingStream(train_vols, cfg, int(rng.integers(2**63)))
    slot_rng = np.random.default_rng(rng.integers(2**63))
    weights = _FillFactorWeights(tc.fill_factor_bins) if tc.fill_factor_bins else None
    n_groups = 2 if setup.device.type == "cuda" else 1
    groups = [_SlotGroup(tc.batch_size, cfg, stream.get, slot_rng) for _ in range(n_groups)]
    step_fn = _Stepper(cfg, setup, model, optimizer, weights)
    steps = max(1, tc.training_size // tc.batch_size)
    outputs.open_writer()
    vm = tc.validation_metric
    history: list[dict[str, Any]] = []
    best: float | None = None
    best_epoch: int | None = None
    since_best = 0
    stop_reason = "completed"
    keeper = (CandidateKeeper(outputs.candidates, tc.select_candidates, vm.mode) if tc.select_by == "dense_fill"
              else None)
    global_step = 0
    train_budget = math.inf if max_minutes is None else 60.0 * max_minutes
    train_spent = 0.0  # seconds of training steps so far (validation excluded)
    try:
        for epoch in range(start_epoch + 1, start_epoch + tc.total_epochs + 1):
            t0 = time.perf_counter()
            if tc.reset_generators and epoch > start_epoch + 1:
                stream.restart()
                for g in groups:
                    g.reset()
            model.train()
            for g in groups:
                g.started = g.finished = g.finished_moves = 0
            run_progress = functools.partial(_run_progress, (epoch - start_epoch - 1) * steps, train_spent,
                                             steps * tc.total_epochs, train_budget)
            done = _train_epoch(epoch, step_fn, groups, steps, train_budget - train_spent, outputs, global_step,
                                progress, run_progress)
            global_step = done.global_step
            train_spent += done.train_time
            if done.timed_out:
                stop_reason = "time_limit"
            if not done.losses:  # the budget ran out before this epoch's first step
                break
            epoch_loss = _epoch_loss(epoch, done)
            if weights is not None:
                weights.freeze()
            last = done.timed_out or epoch == start_epoch + tc.total_epochs
            val, kept = None, []
            if _validates(epoch, start_epoch, tc, since_best, last):
                val, kept = run_validation(model, val_set, cfg, device=setup.device,
                                           keep_regions=3 if outputs.writer else 0, progress=progress)
            row = _epoch_row(epoch, epoch_loss, done, groups, val, tc.batch_size, t0)
            history.append(row)
            log.info("epoch %d: loss %.4f, val_loss %.4f, val_subv_metric %.4f (%s, beta %g); %.1f FOV/s, "
                     "%.1f moves per training subvolume, %.1f per validation subvolume; %.0f s", epoch, row["loss"],
                     row["val_loss"], row["val_subv_metric"], vm.metric, vm.beta, row["fov_per_s"],
                     row["moves_per_subvolume"], row["val_moves"], row["time"])
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            if val is not None and _better(val.metric, best, vm.mode):
                best, best_epoch, since_best = val.metric, epoch, 0
                save_model(outputs.pt, model, cfg, optimizer_state=optimizer.state_dict(), epoch=epoch,
                           metrics=metrics)
                log.info("epoch %d: best %s so far, saved %s", epoch, "val_subv_metric", outputs.pt)
            else:
                since_best += 1
            if keeper is not None and val is not None:
                keeper.offer(epoch, val.metric, lambda path: save_model(
                    path, model, cfg, optimizer_state=optimizer.state_dict(), epoch=epoch, metrics=metrics))
            if checkpoint_pattern:
                save_model(checkpoint_name(checkpoint_pattern, epoch, metrics), model, cfg,
                           optimizer_state=optimizer.state_dict(), epoch=epoch, metrics=metrics)
            outputs.end_epoch(history, f"{vm.metric}, beta {vm.beta:g}", kept)
            if tc.early_abort_epoch > 0 and epoch - start_epoch == tc.early_abort_epoch \
                    and row["val_loss"] >= tc.early_abort_loss:
                raise EarlyAbortError(f"epoch {epoch}: val_loss {row['val_loss']:.4f} >= [training] early_abort_loss "
                                      f"{tc.early_abort_loss}")
            if stop_reason == "time_limit":
                log.info("training time limit of %g minutes reached in epoch %d (%d of %d steps)", max_minutes,
                         epoch, done.steps_done, steps)
                break
            if since_best >= tc.patience:
                stop_reason = "early_stopping"
                log.info("no improvement of val_subv_metric for %d epochs; stopping", tc.patience)
                break
    except KeyboardInterrupt:
        log.warning("interrupted; %s holds the best model so far (epoch %s), %s the history", outputs.pt, best_epoch,
                    outputs.csv)
        raise
    finally:
        stream.close()
        outputs.close()
    if best_epoch is None:  # every validation was NaN: keep the last weights anyway
        save_model(outputs.pt, model, cfg, optimizer_state=optimizer.state_dict(), epoch=history[-1]["epoch"],
                   metrics={k: v for k, v in history[-1].items() if k != "epoch"})
    return TrainingResult(model_file=outputs.pt, history=history, best_epoch=best_epoch,
                          best_metric=best if best is not None else math.nan, stop_reason=stop_reason,
                          random_seed=cfg.random_seed, candidates=keeper.files if keeper is not None else [])
