"""A trained model filling one validation subvolume, as arrays for a viewer (``train --viewer``).

Training and the network live below the viewer: this module loads the model and
runs the validation fill; :func:`diluvian.view.show_training_sample` only shows
the arrays it returns.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.typing import NDArray

from .errors import DataError

log = logging.getLogger(__name__)

__all__ = ["TrainedSample", "fill_validation_sample"]


@dataclasses.dataclass(frozen=True)
class TrainedSample:
    """One validation subvolume filled by a trained model (arrays ZYX, of the subvolume's shape).

    Attributes
    ----------
    image : ndarray of float32
        The subvolume image in [0, 1].
    mask_input : ndarray of float32
        The mask input the first move saw: the seed voxel at ``v_true``, ``v_false`` elsewhere.
    target : ndarray of float32
        The target object, 0/1.
    prediction : ndarray of float32
        The filled mask (voxels never reached are 0).
    resolution : tuple of 3 floats
        nm, ZYX.
    info : dict
        ``volume`` (name), ``label_id``, ``seed`` (ZYX voxel in the subvolume),
        ``moves`` and ``metric`` (``validation_metric`` of the filled mask
        against the target).
    """

    image: NDArray[np.float32]
    mask_input: NDArray[np.float32]
    target: NDArray[np.float32]
    prediction: NDArray[np.float32]
    resolution: tuple[float, float, float]
    info: dict[str, Any]


def fill_validation_sample(model_file: str | Path, volumes: Mapping[str, Any], *, config=None, index: int = 0,
                           device: Any = None) -> TrainedSample:
    """Fill validation subvolume ``index`` with a saved model, as training validates.

    Loads the model, draws the fixed validation set exactly as training does
    (:func:`diluvian.training.validation_subvolumes`, same seed, so the
    subvolume is one that training validated on) and fills subvolume ``index``
    to completion from its seed (:func:`diluvian.training.run_validation`).

    Parameters
    ----------
    model_file : path-like
        A model written by training (``BASE.pt``).
    volumes : mapping of name -> Volume
        The labelled volumes training used (not partitioned; the config's
        validation partitions are applied).
    config : diluvian.config.Config or None
        Partitions, validation subvolume shape, seed ...; by default the
        config stored in the model file, which is the one it was trained with
        (including the random seed of an ``--early-restart``). The model's
        own ``[network]`` and FOVs are used either way.
    index : int
        Which subvolume of the validation set (0 is the first).
    device : str or torch.device or None
        Where to run the model; ``[training] device`` by default.

    Returns
    -------
    TrainedSample

    Raises
    ------
    ModelError
        ``model_file`` is not a diluvian model.
    DataError, ConfigError
        A negative index, unusable volumes or partitions.
    """
    from .device import select_device
    from .network import load_model, model_run_config
    from .training import prepare_training_volumes, run_validation, validation_subvolumes

    if int(index) < 0:
        raise DataError(f"index: expected an int >= 0, got {index}")
    model, file_cfg, _ = load_model(model_file, "cpu")
    cfg = file_cfg if config is None else model_run_config(config, file_cfg, (), model_file)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, validation_size=int(index) + 1))
    model = model.to(select_device(device if device is not None else cfg.training.device))
    _, val_vols = prepare_training_volumes(cfg, volumes, need_training=False)
    subvolume = validation_subvolumes(cfg, val_vols)[int(index):][:1]
    result, regions = run_validation(model, subvolume, cfg, keep_regions=1)
    region = regions[0]
    mc = cfg.model
    image = np.asarray(region.image, dtype=np.float32)
    mask_input = np.full(image.shape, mc.v_false, dtype=np.float32)
    mask_input[tuple(int(s) for s in region.seed)] = mc.v_true
    prediction = np.nan_to_num(np.asarray(region.mask, dtype=np.float32), nan=0.0)
    target = np.asarray(region.target, dtype=np.float32)
    resolution = tuple(float(r) for r in np.ravel(val_vols[subvolume[0].volume].resolution))
    info = {"volume": subvolume[0].volume, "label_id": subvolume[0].label_id,
            "seed": [int(s) for s in region.seed], "moves": int(region.moves), "metric": result.metric}
    log.info("training sample: volume %r, object %s, seed %s: %d moves, %s %.4f", info["volume"],
             info["label_id"], info["seed"], info["moves"], cfg.training.validation_metric.metric, info["metric"])
    return TrainedSample(image, mask_input, target, prediction, resolution, info)  # type: ignore[arg-type]
