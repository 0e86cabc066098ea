"""Training outputs: the history CSV, the metric plot, checkpoint names, TensorBoard, progress bars.

For ``-mo BASE``: ``BASE.toml`` (the effective config, at the start),
``BASE.pt`` (the best model by ``val_subv_metric``, with optimizer state),
``BASE.csv`` (``epoch,loss,val_loss,val_subv_metric,time``, rewritten every
epoch), ``BASE.png`` (the metric plot), per-epoch checkpoints with ``-mc`` and
TensorBoard logs in ``BASE_logs/`` with ``--tensorboard``
(:class:`TrainingOutputs` holds the names and the writer), and with ``[training]
select_by = "dense_fill"`` the best epochs in ``BASE.candidates/`` (:class:`CandidateKeeper`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import Config, config_to_toml
from ..errors import ConfigError
from ..region import Region
from ..util import atomic_path, check_writable_dir

__all__ = ["CSV_FIELDS", "write_history_csv", "write_metric_plot", "progress_bar", "checkpoint_name", "TrainingOutputs",
           "CandidateKeeper"]

CSV_FIELDS = ("epoch", "loss", "val_loss", "val_subv_metric", "time")
_TENSORBOARD_SCALARS = ("loss", "val_loss", "val_subv_metric", "fov_per_s", "moves_per_subvolume", "val_moves")


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar that leaves no line behind (disabled unless ``enabled``)."""
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
    # epochs between validations (validation_interval > 1) have NaN validation columns: plot the others
    val = [r for r in history if np.isfinite(r["val_loss"])]
    ax.plot(epochs, [r["loss"] for r in history], "o-", label="loss")
    ax.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], "s-", label="val_loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy")
    ax2 = ax.twinx()
    ax2.plot([r["epoch"] for r in val], [r["val_subv_metric"] for r in val], "^-", color="tab:green",
             label="val_subv_metric")
    ax2.set_ylabel(f"val_subv_metric ({metric_name})" if metric_name else "val_subv_metric")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def checkpoint_name(pattern: str, epoch: int, metrics: Mapping[str, Any]) -> str:
    """``-mc`` pattern formatted with the epoch and its metrics."""
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


class TrainingOutputs:
    """The files of one training run under ``BASE`` and its optional TensorBoard writer.

    Parameters
    ----------
    base : path-like
        ``BASE``; its directory must be writable (checked here).
    tensorboard : bool
        Open a ``SummaryWriter`` on ``BASE_logs/``.
    """

    def __init__(self, base: str | os.PathLike, tensorboard: bool = False) -> None:
        base = Path(base)
        self.pt = base.with_name(base.name + ".pt")
        check_writable_dir(self.pt)
        self.toml = base.with_name(base.name + ".toml")
        self.csv = base.with_name(base.name + ".csv")
        self.png = base.with_name(base.name + ".png")
        self.logs = base.with_name(base.name + "_logs")
        self.candidates = base.with_name(base.name + ".candidates")
        self.tensorboard = tensorboard
        self.writer: Any = None

    def open_writer(self) -> None:
        """Start the TensorBoard writer (when asked for)."""
        if self.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.logs))

    def write_config(self, cfg: Config) -> None:
        """``BASE.toml``: the effective config."""
        with atomic_path(self.toml, suffix=".toml") as tmp:
            tmp.write_text(f"# diluvian training config for {self.pt.name}\n" + config_to_toml(cfg))

    def step_loss(self, loss: float, step: int) -> None:
        """TensorBoard ``train/loss`` at a global step."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)

    def end_epoch(self, history: Sequence[Mapping[str, Any]], metric_name: str, kept: Sequence[Region] = ()) -> None:
        """Rewrite the CSV and the plot; TensorBoard scalars and validation snapshots of the last epoch."""
        write_history_csv(self.csv, history)
        write_metric_plot(self.png, history, metric_name)
        if self.writer is not None:
            row = history[-1]
            for k in _TENSORBOARD_SCALARS:
                if not np.isfinite(row[k]):  # an epoch between validations
                    continue
                self.writer.add_scalar(f"epoch/{k}", row[k], row["epoch"])
            for j, region in enumerate(kept):
                self.writer.add_image(f"validation/{j}", _region_snapshot(region), row["epoch"], dataformats="HW")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class CandidateKeeper:
    """The ``keep`` best epochs by the validation metric, as model files in ``directory``.

    ``directory/epoch_NNNN.pt`` for each kept epoch; an epoch that drops out of the best
    ``keep`` loses its file. Ties keep the earlier epoch. Files of another run in the
    directory are removed when the first epoch is offered.
    """

    def __init__(self, directory: str | os.PathLike, keep: int, mode: str) -> None:
        self.directory = Path(directory)
        self.keep = int(keep)
        self.mode = mode
        self.kept: list[tuple[float, int, Path]] = []  # (metric, epoch, file), best first
        self._started = False

    def _order(self, item: tuple[float, int, Path]) -> tuple[float, int]:
        metric = item[0] if np.isfinite(item[0]) else (-np.inf if self.mode == "max" else np.inf)
        return (-metric if self.mode == "max" else metric, item[1])

    def offer(self, epoch: int, metric: float, save: Any) -> bool:
        """Keep ``epoch`` if it is among the best; ``save(path)`` writes its model file. True when kept."""
        if not self._started:
            self.directory.mkdir(parents=True, exist_ok=True)
            for old in self.directory.glob("epoch_*.pt"):
                old.unlink()
            self._started = True
        item = (float(metric), int(epoch), self.directory / f"epoch_{int(epoch):04d}.pt")
        ranked = sorted(self.kept + [item], key=self._order)
        if item not in ranked[:self.keep]:
            return False
        save(item[2])
        for dropped in ranked[self.keep:]:
            dropped[2].unlink(missing_ok=True)
        self.kept = ranked[:self.keep]
        return True

    @property
    def files(self) -> list[Path]:
        """The kept model files, best validation metric first."""
        return [path for _, _, path in self.kept]
