"""Filling many volumes to files: what the ``fill`` command does, as a library function.

Everything that can fail on bad input (output names and directories, model FOV
against volume shapes, resume files, masks) is checked for every volume before
the first fill starts, so a bad input leaves no partial output.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..claim import claim_result
from .agglomerate import agglomerate_result
from ..config import Config, FillConfig
from ..errors import ConfigError, DataError
from ..network import model_run_config
from ..util import check_writable_dir, fmt_list
from .box import fill_volume_with_model
from .state import FillResult, fill_options, option_differences, with_fill_options
from .output import Checkpointer, load_resume, write_segmentation

log = logging.getLogger(__name__)

merge_model_config = model_run_config
"""The config a fill runs with (:func:`diluvian.network.model_run_config`)."""


def load_fill_model(model_file: str | os.PathLike, cli_cfg: Config, config_files: Sequence[str | os.PathLike] = (),
                    device: Any = None) -> tuple[Any, Config]:
    """Load a model file for filling; returns ``(model, effective config)`` (see :func:`merge_model_config`)."""
    from ..device import select_device
    from ..network import load_model

    device = select_device(device if device is not None else cli_cfg.fill.device)
    model, model_cfg, _ = load_model(model_file, device)
    return model, merge_model_config(cli_cfg, model_cfg, config_files, model_file)


def _output_name(pattern: str, volume_name: str, n_volumes: int, what: str) -> str:
    if "{volume}" not in pattern:
        if n_volumes > 1:
            raise ConfigError(f"{what} {pattern!r}: must contain {{volume}} when filling {n_volumes} volumes")
        return pattern
    return pattern.replace("{volume}", volume_name.replace(os.sep, "_").replace(" ", "_"))


def fill_output_paths(pattern: str, names: Sequence[str]) -> list[Path]:
    """Every file a fill of volumes ``names`` to ``pattern`` may write: ``.hdf5``, ``.toml`` and the checkpoints."""
    paths = []
    for name in names:
        base = Path(_output_name(pattern, name, len(names), "output name"))
        paths += [base.with_name(base.name + ext) for ext in (".hdf5", ".toml", "_checkpoint.hdf5", "_checkpoint.toml")]
    return paths


@dataclasses.dataclass
class _Job:
    name: str
    volume: Any
    out_base: Path
    resume: tuple | None


def fill_volumes_to_files(
    volumes: dict[str, Any],
    model: Any,
    cfg: Config,
    output_pattern: str,
    *,
    model_file: str = "",
    resume_pattern: str | None = None,
    checkpoint_interval: int | None = None,
    rng: np.random.Generator | None = None,
    progress: bool = True,
    **fill_kwargs: Any,
) -> dict[str, FillResult]:
    """Densely fill each volume and write ``<output>.hdf5`` / ``<output>.toml`` per volume.

    Parameters
    ----------
    volumes : dict of name -> Volume
        Already partitioned / downsampled as wanted.
    model
        A loaded network (or predictor).
    cfg : Config
    output_pattern : str
        Output name without extension; ``{volume}`` is replaced by the volume name
        (required with more than one volume).
    model_file : str
        Recorded in the TOML comments.
    resume_pattern : str, optional
        Segmentation/checkpoint TOML to resume from (``{volume}`` substituted).
    checkpoint_interval : int, optional
        Bodies between checkpoints (``<output>_checkpoint.*``; default ``[fill]
        checkpoint_interval``); with ``[fill] checkpoint_minutes`` also 0 there are none.
        Checkpoints are deleted once the final output is written.
    **fill_kwargs
        Passed on to :func:`~diluvian.fill.fill_volume_with_model`: ``[fill]`` keys
        override the config's (None keeps it).

    Raises
    ------
    ConfigError, DataError, DatasetNotFoundError
        Checked for every volume before any fill starts.
    """
    if not volumes:
        raise ConfigError("no volumes to fill")
    move_batch_size = fill_kwargs.get("move_batch_size")
    if move_batch_size is not None and move_batch_size < 1:
        raise DataError(f"--move-batch-size: expected an int >= 1, got {move_batch_size}")
    if checkpoint_interval is not None and checkpoint_interval < 0:
        raise DataError(f"--checkpoint-interval: expected an int >= 0, got {checkpoint_interval}")
    fill_keys = {f.name for f in dataclasses.fields(FillConfig)}
    cfg = with_fill_options(cfg, checkpoint_interval=checkpoint_interval,
                            **{k: fill_kwargs.pop(k) for k in list(fill_kwargs) if k in fill_keys})
    fc = cfg.fill
    options = fill_options(cfg)
    if output_pattern.endswith((".hdf5", ".h5", ".toml")):
        log.warning("output name %r has an extension; .hdf5 and .toml are appended to it", output_pattern)
    fov = np.asarray(cfg.model.input_fov_shape)
    jobs: list[_Job] = []
    for name, volume in volumes.items():
        out_base = Path(_output_name(output_pattern, name, len(volumes), "output name"))
        check_writable_dir(out_base.with_name(out_base.name + ".hdf5"))
        shape = np.asarray(volume.shape)[-3:]
        if (shape < fov).any():
            raise DataError(f"volume {name!r}: the model's input FOV {fov.tolist()} is larger than the volume "
                            f"{shape.tolist()}")
        resume = None
        if resume_pattern:
            path = _output_name(resume_pattern, name, len(volumes), "resume file")
            state, labels, conflicts, res = load_resume(path)
            if labels.shape != tuple(shape):
                raise DataError(f"resume file {path}: segmentation of shape {list(labels.shape)} does not match "
                                f"volume {name!r} of shape {shape.tolist()}")
            if state is not None and state.volume != name:
                raise DataError(f"resume file {path}: checkpoint of volume {state.volume!r}, not {name!r}")
            differ = option_differences(state.options, options) if state is not None else []
            if differ:
                raise DataError(f"resume file {path}: the config changes the checkpoint's fill options: "
                                f"{'; '.join(differ)}; resume with the config the fill started with")
            if res is not None and not np.allclose(res, volume.resolution):
                raise DataError(f"resume file {path}: resolution {fmt_list(res)} differs from volume {name!r}'s "
                                f"{fmt_list(volume.resolution)}")
            resume = (state, labels, conflicts)
        if not fc.ignore_mask and (resume is None or resume[0] is None):
            _check_mask(volume, name)
        jobs.append(_Job(name, volume, out_base, resume))

    rng = rng if rng is not None else np.random.default_rng(cfg.random_seed)
    comments = [f"Filling model: {model_file}", f"Filling options: {json.dumps(options, sort_keys=True)}"]
    results = {}
    for job in jobs:
        ckpt = None
        if fc.checkpoint_interval or fc.checkpoint_minutes:
            ckpt = Checkpointer(job.out_base, job.volume.resolution, job.name, comments)
        state, labels, conflicts = job.resume if job.resume is not None else (None, None, None)
        log.info("filling %s -> %s.hdf5", job.name, job.out_base)
        result = fill_volume_with_model(
            job.volume, model, cfg, resume_state=state, resume_labels=labels, resume_conflicts=conflicts,
            checkpoint=ckpt, rng=rng, progress=progress, **fill_kwargs)
        result = claim_result(job.volume, result, cfg, int(fc.background_label_id))  # claim
        result = agglomerate_result(job.volume, result, model, cfg, int(fc.background_label_id))
        write_segmentation(job.out_base, result.labels, result.conflict_count, job.volume.resolution, job.name,
                           comments=comments + [f"Fill result: {result.stats.summary()}"])
        if ckpt is not None:
            ckpt.remove()
        results[job.name] = result
    return results


def _check_mask(volume: Any, name: str) -> None:
    from .box import _volume_mask

    shape = tuple(np.asarray(volume.shape)[-3:])
    mask = _volume_mask(volume, np.zeros(3, dtype=np.int64), np.asarray(shape))
    if mask is not None and tuple(mask.shape) != shape:
        raise DataError(f"volume {name!r}: mask of shape {list(mask.shape)} differs from the image shape "
                        f"{fmt_list(shape)}")


def prepare_volumes(volumes: dict[str, Any], cfg: Config, partition: bool = False) -> dict[str, Any]:
    """Optionally keep the validation partitions, then downsample to ``[volume] resolution``."""
    if partition:
        from ..volumes import partition_volumes

        volumes = partition_volumes(volumes, cfg.training.partitions, cfg.training.validation_partition)
    if any(r > 0 for r in cfg.volume.resolution):
        from ..volumes import downsample_volume

        volumes = {n: downsample_volume(v, cfg.volume.resolution) for n, v in volumes.items()}
    return volumes
