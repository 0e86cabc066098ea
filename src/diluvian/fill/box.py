"""Fill a volume, or one box of it: the dense fill's public functions.

:func:`fill_volume_with_model` prepares the image, seeds, state and outputs of a box
and runs :class:`~diluvian.fill.dense.DenseFiller` on it; :func:`fill_box` is the same
for one box with labels from an offset (what a blockwise worker calls).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from ..config import Config
from ..errors import ConfigError, DataError
from ..geometry import Box
from ..masks import MaskPool, sparse_mask, window_shape_for
from ..predict import default_move_batch_size, make_predictor
from ..util import fmt_list
from .dense import DenseFiller, LazyImage, join_bridged
from .state import FillResult, FillState, FillStats, fill_options, option_differences, with_fill_options

__all__ = ["fill_box", "fill_volume_with_model"]

log = logging.getLogger(__name__)

DEFAULT_ARRAY_RESOLUTION = (10.0, 10.0, 10.0)
"""Resolution (nm) assumed for a bare image array when neither ``resolution`` nor ``[volume] resolution`` is set."""


def _box(volume: Any, bounds: Any) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The fill box ``(start, stop)``: ``bounds``, checked to be a non-empty box inside the volume."""
    shape = np.asarray(np.shape(volume) if isinstance(volume, np.ndarray) else volume.shape, dtype=np.int64)[-3:]
    whole = Box(np.zeros(3, dtype=np.int64), shape)
    if bounds is None:
        return whole.start.copy(), whole.stop.copy()
    try:
        box = Box(*bounds, where="fill bounds")
    except (TypeError, ValueError):
        box = None
    if box is None or box.empty or not whole.contains(box):
        raise DataError(f"fill bounds {fmt_list(np.ravel(bounds[0]))}-{fmt_list(np.ravel(bounds[1]))}: expected a "
                        f"non-empty box inside the volume of shape {fmt_list(shape)}")
    return box.start.copy(), box.stop.copy()


def _volume_mask(volume: Any, start: NDArray, stop: NDArray) -> NDArray | None:
    """The volume's valid-data mask over the box, or None when it has none."""
    if isinstance(volume, np.ndarray) or not hasattr(volume, "get_mask"):
        return None
    if getattr(volume, "mask", True) is None:
        return None
    mask = volume.get_mask(tuple(int(v) for v in start), tuple(int(v) for v in stop))
    return None if mask is None else np.asarray(mask)


def fill_volume_with_model(
    volume: Any,
    model: Any,
    cfg: Config,
    *,
    bounds: tuple[Sequence[int], Sequence[int]] | None = None,
    output: Any = None,
    conflict_output: Any = None,
    resolution: Sequence[float] | None = None,
    in_memory: bool = True,
    move_batch_size: int | None = None,
    moves_per_step: int | None = None,
    seed_generator: str | None = None,
    seeds: NDArray | None = None,
    ordered_seeds: bool | None = None,
    ignore_mask: bool | None = None,
    background_label_id: int | None = None,
    max_bodies: int | None = None,
    max_moves: int | None = None,
    remask_interval: int | None = None,
    bias: bool | None = None,
    reject_early_termination: bool | None = None,
    resume_state: FillState | None = None,
    resume_labels: Any = None,
    resume_conflicts: Any = None,
    checkpoint: Callable[[FillState, Any, Any], None] | None = None,
    checkpoint_interval: int | None = None,
    checkpoint_minutes: float | None = None,
    lanes: int | None = None,
    mask_factory: Callable[[NDArray[np.int64]], Any] | None = None,
    mask_storage: str | None = None,
    mask_memory_mb: float | None = None,
    mask_device: str | None = None,
    fill_batch: bool | None = None,
    device: Any = None,
    rng: np.random.Generator | None = None,
    progress: bool = True,
    label_offset: int = 0,
) -> FillResult:
    """Densely segment a volume (or a box of it) with a flood-filling network.

    Parameters
    ----------
    volume : Volume or ndarray
        A :class:`~diluvian.volumes.Volume` (image read with ``get_image``; its
        mask, if any, filters the seeds) or a float32 ZYX image array.
    model : torch.nn.Module or callable
        A diluvian network, a predictor, or ``predict(images, masks) -> probabilities``.
    cfg : Config
        ``cfg.model`` (FOV, moves, thresholds) must be the model's;
        ``cfg.postprocessing`` gives ``closing_shape`` and ``min_body_size``.
    bounds : (start, stop), optional
        Box to segment, in volume voxels (default: everything). The box is filled
        as a volume of its own: FOVs are reflect-padded at its borders.
    output : array-like, optional
        Where labels go: anything with the box's shape and 3D slicing (ndarray,
        h5py dataset, zarr array), holding ``background_label_id`` where unfilled.
        Default: a new uint64 ndarray.
    conflict_output : array-like, optional
        Same for the conflict counts (default: a new uint32 ndarray).
    resolution : 3 floats, optional
        nm ZYX when ``volume`` is an array (sizes of ``sobel`` seeds); default
        ``[volume] resolution`` when set, else 10 nm isotropic.
    in_memory : bool
        Read the whole box into memory first (fast path); otherwise read FOVs
        from the volume on demand through a chunk cache.
    move_batch_size : int, optional
        FOVs per forward pass. Default 32 on the CPU, 256 on CUDA.
    moves_per_step : int
        Blocks one region adds to each batch (1 reproduces the one-move-at-a-time
        fill; more trades exactness for fewer active regions).
    seed_generator : {"sobel", "membrane", "grid"}
    seeds : ndarray of int, shape (N, 3), optional
        Explicit seeds (box coordinates); replaces the generator.
    ordered_seeds : bool
        Keep the generator's order instead of shuffling.
    ignore_mask : bool
        Do not drop seeds outside the volume's mask.
    background_label_id : int
        Label of unfilled voxels (never handed out to a body).
    max_bodies : int, optional
        Stop after this many bodies.
    max_moves, remask_interval : int, optional
        Per-region limits (:class:`~diluvian.stepper.RegionStepper`).
    bias : bool
        Anti-merge mask update, and stop a fill when its seed drops below ``t_move``.
    reject_early_termination : bool
        Drop bodies of fills that did not end by running out of moves.
    resume_state, resume_labels, resume_conflicts
        Continue a checkpointed fill (see :func:`~diluvian.fill.output.load_resume`).
        The state's options override the ones given here. With only
        ``resume_labels`` (a finished segmentation), seeds inside labels are
        skipped and label ids continue from its maximum.
    checkpoint : callable, optional
        ``checkpoint(state, labels, conflicts)`` every ``checkpoint_interval``
        bodies and on KeyboardInterrupt (see :class:`~diluvian.fill.output.Checkpointer`).
    lanes : int, optional
        Batches in flight; default 2 on CUDA (CPU work overlaps GPU work), else 1.
    mask_factory : callable, optional
        ``mask_factory(seed)`` -> NaN mask storage of the box's shape per region
        (default: as ``mask_storage`` says).
    mask_storage : {"pool", "octree"}
        ``pool``: dense mask windows around the seeds, reused from region to region
        (:class:`~diluvian.masks.MaskPool`; a window moves with its region, and a region that outgrows it spills
        into block-sparse storage); ``octree``: a block-sparse mask per region. Both
        give the same segmentation.
    mask_memory_mb : float
        Memory for the pool's windows; the whole box per region when it fits.
    mask_device : {"auto", "host", "model"}
        Where the pool and the per-step gather and update live (``[fill] mask_device``):
        on a torch model's device, or in host memory; ``auto``: the model's device on CUDA.
    device : optional
        Device for a torch model (default: where its parameters are).
    rng : numpy.random.Generator, optional
        Shuffles the seeds and seeds the regions' generators (default seed 0).
    progress : bool
        tqdm progress bar.
    label_offset : int
        Body labels start at ``label_offset + 1`` (disjoint ranges for the blocks of a
        blockwise fill); ignored on resume, where the state or segmentation decides.

    Returns
    -------
    FillResult

    Raises
    ------
    DataError
        The model's input FOV does not fit the box; ``output`` or the volume mask
        has the wrong shape; ``move_batch_size < 1``; resume data of another
        volume or shape.
    """
    from ..seeds import generate_seeds

    t_start = time.perf_counter()
    rng = rng if rng is not None else np.random.default_rng(0)
    if move_batch_size is not None and move_batch_size < 1:  # [fill] 0 means "auto"; a keyword must be a count
        raise DataError(f"move_batch_size: expected an int >= 1, got {move_batch_size}")
    try:
        cfg = with_fill_options(
            cfg, move_batch_size=move_batch_size, moves_per_step=moves_per_step, seed_generator=seed_generator,
            ordered_seeds=ordered_seeds, ignore_mask=ignore_mask, background_label_id=background_label_id,
            max_bodies=max_bodies, max_moves=max_moves, remask_interval=remask_interval, bias=bias,
            reject_early_termination=reject_early_termination, checkpoint_interval=checkpoint_interval,
            checkpoint_minutes=checkpoint_minutes, mask_storage=mask_storage, mask_memory_mb=mask_memory_mb,
            mask_device=mask_device, fill_batch=fill_batch)
    except ConfigError as e:
        raise DataError(str(e)) from None
    fc = cfg.fill
    predictor = make_predictor(model, device=device, autocast=None if fc.autocast else False)
    move_batch_size = fc.move_batch_size or default_move_batch_size(predictor)
    moves_per_step = fc.moves_per_step
    if moves_per_step > move_batch_size:
        raise DataError(f"moves_per_step: expected 1..move_batch_size ({move_batch_size}), got {moves_per_step}")
    rows = (move_batch_size // moves_per_step) * moves_per_step
    if fc.moves_per_step_growth and fc.moves_per_step_max > rows:
        raise DataError(f"[fill] moves_per_step_max: expected at most the batch ({rows} FOVs: move_batch_size "
                        f"{move_batch_size}) with moves_per_step_growth, got {fc.moves_per_step_max}")
    start, stop = _box(volume, bounds)
    shape = tuple(int(v) for v in stop - start)
    name = getattr(volume, "name", "array")
    fov = np.asarray(cfg.model.input_fov_shape)
    if (np.asarray(shape) < fov).any():
        raise DataError(f"volume {name!r}: the model's input FOV {fov.tolist()} is larger than the "
                        f"{'box' if bounds is not None else 'volume'} {list(shape)}")
    if resume_state is not None and (list(resume_state.shape) != list(shape)):
        raise DataError(f"resume state of volume {resume_state.volume!r} has shape {list(resume_state.shape)}, "
                        f"expected {list(shape)} (volume {name!r})")
    if resume_state is not None and resume_state.volume != name:
        raise DataError(f"resume state is for volume {resume_state.volume!r}, not {name!r}")
    if resume_labels is not None and tuple(np.shape(resume_labels)) != shape:
        raise DataError(f"resume segmentation has shape {list(np.shape(resume_labels))}, expected {list(shape)} "
                        f"(volume {name!r})")
    if output is not None and tuple(np.shape(output)) != shape:
        raise DataError(f"fill output has shape {list(np.shape(output))}, expected {list(shape)}")
    if conflict_output is not None and tuple(np.shape(conflict_output)) != shape:
        raise DataError(f"conflict output has shape {list(np.shape(conflict_output))}, expected {list(shape)}")

    # image
    if isinstance(volume, np.ndarray):
        if resolution is not None:
            res = tuple(float(r) for r in resolution)
        elif all(r > 0 for r in cfg.volume.resolution):
            res = tuple(cfg.volume.resolution)
        else:
            res = DEFAULT_ARRAY_RESOLUTION
        image: Any = np.ascontiguousarray(volume[tuple(slice(a, b) for a, b in zip(start, stop))], dtype=np.float32)
    else:
        res = tuple(volume.resolution)
        if in_memory:
            image = np.ascontiguousarray(volume.get_image(tuple(start), tuple(stop)), dtype=np.float32)
        else:
            image = LazyImage(volume, start, stop)

    # state
    opts = fill_options(cfg)
    if resume_state is not None:
        state = resume_state
        differ = option_differences(state.options, opts)
        if differ:
            raise DataError(f"resume of volume {name!r}: the config changes the checkpoint's fill options: "
                            f"{'; '.join(differ)}; resume with the config the fill started with")
        state.options.update({k: v for k, v in opts.items() if k not in state.options})
        stats = FillStats(**{k: v for k, v in state.stats.items() if k in FillStats.__dataclass_fields__})
    else:
        seed_generator, ordered_seeds, ignore_mask = fc.seed_generator, fc.ordered_seeds, fc.ignore_mask
        background_label_id = fc.background_label_id
        if seeds is None:
            mask = None if ignore_mask else _volume_mask(volume, start, stop)
            t0 = time.perf_counter()
            seed_image = image if isinstance(image, np.ndarray) else np.asarray(image)
            seed_arr = generate_seeds(seed_generator, seed_image, res, cfg.model, mask=mask)
            del seed_image
            log.info("%s: %d %s seeds in %.1f s", name, len(seed_arr), seed_generator, time.perf_counter() - t0)
        else:
            seed_arr = np.asarray(seeds, dtype=np.int64).reshape(-1, 3)
            if len(seed_arr) and ((seed_arr < 0).any() or (seed_arr >= np.asarray(shape)).any()):
                raise DataError(f"seeds: expected voxels inside the box of shape {list(shape)}")
        if not ordered_seeds and len(seed_arr):
            seed_arr = seed_arr[rng.permutation(len(seed_arr))]
        next_label = 1 + int(label_offset)
        if resume_labels is not None:
            top = int(np.max(resume_labels)) if np.size(resume_labels) else 0
            next_label = max(1, top + 1)
        if next_label == background_label_id:
            next_label += 1
        state = FillState(seeds=seed_arr, next_seed=0, next_label=next_label,
                          entropy=int(rng.integers(0, 2**63 - 1)), options=opts, volume=name,
                          bounds=(start.tolist(), stop.tolist()))
        stats = FillStats()
    bg = int(state.options["background_label_id"])

    # outputs
    if output is None:
        labels: Any = np.full(shape, bg, dtype=np.uint64)
    else:
        labels = output
    if resume_labels is not None:
        labels[...] = np.asarray(resume_labels, dtype=np.uint64)
    elif output is not None and resume_state is None:
        pass  # the caller's output holds the starting labels
    conflicts = np.zeros(shape, dtype=np.uint32) if conflict_output is None else conflict_output
    if resume_conflicts is not None:
        conflicts[...] = np.asarray(resume_conflicts, dtype=np.uint32)

    if lanes is None:
        lanes = 2 if getattr(predictor, "asynchronous", False) else 1
    pool = None
    if mask_factory is None:
        # leaves at least as large as an update box, so one touches at most 8 leaves
        leaf = tuple(int(max(4 * s, i + 1)) for s, i in zip(cfg.model.move_step, cfg.model.input_fov_shape))
        if fc.mask_storage == "octree":
            def mask_factory(seed: Sequence[int]) -> Any:
                return sparse_mask(shape, leaf)
        else:
            in_flight = (move_batch_size // moves_per_step) * lanes + 8  # + parked regions, roughly
            window = window_shape_for(shape, cfg.model.input_fov_shape, in_flight, int(fc.mask_memory_mb * 2**20))
            pool = MaskPool(shape, window, in_flight, leaf, device=_pool_device(fc.mask_device, predictor))
            mask_factory = pool.acquire
            log.debug("%s: mask windows of %s voxels for up to %d regions in flight", name, list(window), in_flight)

    filler = DenseFiller(image, cfg, predictor, labels, conflicts, state, move_batch_size=move_batch_size,
                         lanes=lanes, mask_factory=mask_factory, checkpoint=checkpoint,
                         checkpoint_interval=fc.checkpoint_interval, checkpoint_minutes=fc.checkpoint_minutes,
                         max_bodies=fc.max_bodies or None, progress=progress, stats=stats, fill_batch=fc.fill_batch)
    seconds_before = stats.seconds
    filler.run()
    if filler.bridge_fraction > 0 and filler.commit_ptr >= len(filler.seeds):
        # every seed resolved: join the labels that enough bodies bridged (checkpoints keep them apart)
        stats.bridged = join_bridged(labels, filler.bridges, int(state.options["bridge_support"]))
    stats.seconds = seconds_before + (time.perf_counter() - t_start)
    log.info("%s: %s", name, stats.summary())
    if pool is not None:
        log.info("%s: mask windows of %s voxels: %d moved over the box, %d regions outgrew theirs, %d found none "
                 "free (block-sparse masks are slower; [fill] mask_memory_mb gives larger windows)", name,
                 fmt_list(pool.window), pool.shifts, pool.spills, pool.overflow)
    return FillResult(labels=labels, conflict_count=conflicts, stats=stats, state=filler.current_state())


def _pool_device(mask_device: str, predictor: Any) -> Any:
    """The torch device for the mask pool (``[fill] mask_device``), or None for host memory."""
    device = getattr(predictor, "device", None)
    if mask_device == "host" or device is None or not hasattr(predictor, "submit_device"):
        return None  # a plain callable predictor works on host arrays
    if mask_device == "auto" and device.type != "cuda":
        return None
    return device


def fill_box(volume: Any, model: Any, cfg: Config, box: tuple[Sequence[int], Sequence[int]], *,
             seeds: NDArray | None = None, label_offset: int = 0, output: Any = None,
             rng: np.random.Generator | None = None, progress: bool = False, **options: Any) -> FillResult:
    """Fill one box of a volume as a volume of its own: what a blockwise worker calls.

    Parameters
    ----------
    volume : Volume or ndarray
        Opened by the caller (a worker opens it from its dataset entry).
    model
        A network, predictor or ``predict(images, masks)`` callable.
    cfg : Config
        Picklable; its ``[fill]`` section gives the options (``options`` override them).
    box : (start, stop)
        In volume voxels; FOVs are reflect-padded at the box border.
    seeds : ndarray of int, shape (N, 3), optional
        Box coordinates; default the ``[fill] seed_generator``'s seeds in the box.
    label_offset : int
        Labels start at ``label_offset + 1``; 0 stays background.
    output : array-like, optional
        Where the labels go (default a new uint64 array of the box's shape).

    Returns
    -------
    FillResult
    """
    return fill_volume_with_model(volume, model, cfg, bounds=box, seeds=seeds, output=output, rng=rng,
                                  progress=progress, label_offset=label_offset, **options)
