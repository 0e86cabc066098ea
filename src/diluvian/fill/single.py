"""Fill a single object from a seed (``fill_region_with_model``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from ..config import Config, ModelConfig
from ..errors import DataError
from ..region import Region
from .dense import SEED_CHECK_INTERVAL, seed_too_weak
from ..predict import make_predictor
from ..stepper import fill_regions


@dataclass
class FilledRegion:
    """Result of :func:`fill_region_with_model`.

    Attributes
    ----------
    region : Region
        The filled region (mask, moves, target ...).
    reason : str
        Why the fill stopped: ``done``, ``max_moves``, ``seed_lost`` or ``callback``
        (the seed's probability dropped below ``t_move``).
    body : (start, mask) or None
        Seed-connected component of ``mask >= t_final`` (after the configured
        closing): voxel offset and bool mask cropped to its bounding box; None
        when the seed is not in it.
    """

    region: Region
    reason: str
    body: tuple[NDArray[np.int64], NDArray[np.bool_]] | None

    @property
    def moves(self) -> int:
        return self.region.moves

    def body_mask(self) -> NDArray[np.bool_]:
        """The body as a bool array of the region's full shape."""
        out = np.zeros(tuple(self.region.shape), dtype=bool)
        if self.body is not None:
            start, mask = self.body
            out[tuple(slice(int(a), int(a) + n) for a, n in zip(start, mask.shape))] = mask
        return out


def fill_region_with_model(
    image: Any,
    model: Any,
    cfg: Config | ModelConfig,
    seed_vox: Sequence[int],
    *,
    bias: bool = True,
    move_batch_size: int = 1,
    max_moves: int | None = None,
    remask_interval: int | None = None,
    target: Any = None,
    block_padding: str | None = "reflect",
    mask: Any = None,
    device: Any = None,
    rng: np.random.Generator | None = None,
) -> FilledRegion:
    """Fill one object from ``seed_vox`` with a flood-filling network.

    Parameters
    ----------
    image : array-like of float32, shape (Z, Y, X)
        Image in [0, 1] (an ndarray or anything with ``shape`` and 3D slicing).
    model : torch.nn.Module or callable
        A diluvian network, a predictor, or ``predict(images, masks) -> probabilities``.
    cfg : Config or ModelConfig
        FOV, moves and thresholds; a full Config also gives the closing of the body.
    seed_vox : 3 ints
        Seed voxel, ZYX.
    bias : bool
        Anti-merge mask update; the fill also stops when the seed voxel's
        probability drops below ``t_move`` (checked after every move).
    move_batch_size : int
        FOVs of this object evaluated per forward pass (1: strictly sequential).
    max_moves, remask_interval : int, optional
        See :class:`~diluvian.stepper.RegionStepper`.
    target : array-like of bool, optional
        Ground-truth object mask (for metrics and training-style blocks).
    block_padding : {"reflect", None}
        "reflect" lets FOVs cross the image border.
    mask : array-like, optional
        NaN-initialised mask storage (default: dense).
    device : optional
        Device for a torch model.
    rng : numpy.random.Generator, optional
        For ``move_priority = "random"``.

    Returns
    -------
    FilledRegion
    """
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    closing = tuple(cfg.postprocessing.closing_shape) if isinstance(cfg, Config) else ()
    if move_batch_size < 1:
        raise DataError(f"move_batch_size: expected an int >= 1, got {move_batch_size}")
    shape = np.asarray(np.shape(image))[-3:]
    seed = np.asarray(seed_vox, dtype=np.int64)
    if seed.shape != (3,) or (seed < 0).any() or (seed >= shape).any():
        raise DataError(f"seed {np.ravel(seed).tolist()}: expected a voxel inside the image of shape {shape.tolist()}")
    predictor = make_predictor(model, device=device)
    try:
        region = Region(image, model_cfg, seed, target=target, mask=mask, block_padding=block_padding,
                        bias_against_merge=bias, rng=rng)
    except ValueError as e:
        raise DataError(str(e)) from None
    callback = seed_too_weak if bias else None
    # one region, ``move_batch_size`` of its moves per forward pass (the original's batching)
    reason, = fill_regions([region], predictor, move_batch_size=move_batch_size, moves_per_step=move_batch_size,
                           max_moves=max_moves, remask_interval=remask_interval, stop_callback=callback,
                           callback_interval=SEED_CHECK_INTERVAL)
    body = region.to_body(model_cfg.t_final, closing)
    return FilledRegion(region=region, reason=reason, body=body)
