"""Sparse fill (single objects in subvolumes, scored against ground truth) and subvolume bounds.

``sparse-fill`` fills one object from the centre of each subvolume (random, or
read from a ``gen-subv-bounds`` CSV), the way training validation does, and keeps
image, target and prediction of each region for inspection. Regions are filled
batched across regions (:func:`~diluvian.stepper.fill_regions`); each region's
fill is the same as alone.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from ..config import Config
from ..errors import ConfigError, DataError
from ..metrics import binary_scores
from ..region import Region
from ..util import atomic_hdf5, atomic_path, check_writable_dir
from .dense import SEED_CHECK_INTERVAL, seed_too_weak
from ..stepper import fill_regions
from ..predict import default_move_batch_size, make_predictor

log = logging.getLogger(__name__)

SEED_MARGIN_NM = 20.0
"""Sparse fill keeps subvolumes whose seed's object extends at least this far (nm) each way (as the original)."""

CSV_COLUMNS = ("volume", "index", "seed", "label_id", "f_score", "precision", "recall", "moves", "reason",
               "body_voxels")


def subvolume_shape(cfg: Config, bounds_num_moves: Sequence[int] = (5, 5, 5)) -> tuple[int, int, int]:
    """``input_fov + 2 * move_step * moves`` per axis."""
    moves = np.asarray(bounds_num_moves, dtype=np.int64).reshape(-1)
    if moves.shape != (3,) or (moves < 0).any():
        raise ConfigError(f"--bounds-num-moves: expected 3 ints >= 0, got {list(bounds_num_moves)}")
    shape = np.asarray(cfg.model.input_fov_shape) + 2 * np.asarray(cfg.model.move_step) * moves
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _label_margin(cfg: Config) -> NDArray[np.int64]:
    return (np.asarray(cfg.model.input_fov_shape) - np.asarray(cfg.model.output_fov_shape)) // 2


def _format_pattern(pattern: str, name: str, what: str) -> Path:
    if "{volume}" not in pattern:
        raise ConfigError(f"{what} {pattern!r}: must contain {{volume}} (replaced by each volume's name)")
    return Path(pattern.replace("{volume}", name.replace(os.sep, "_").replace(" ", "_")))


# --------------------------------------------------------------------------- gen-subv-bounds


def generate_subvolume_bounds(volumes: dict[str, Any], cfg: Config, num_bounds: int, *,
                              bounds_num_moves: Sequence[int] = (5, 5, 5),
                              rng: np.random.Generator | None = None) -> dict[str, list]:
    """Random subvolume bounds for each volume, drawn as training draws them.

    Parameters
    ----------
    volumes : dict of name -> Volume
    cfg : Config
        ``[model]`` gives the subvolume shape (:func:`subvolume_shape`) and the label
        margin; ``[training] exclude_label_zero`` applies.
    num_bounds : int
    bounds_num_moves : 3 ints
    rng : numpy.random.Generator, optional

    Returns
    -------
    dict of name -> list of SubvolumeBounds
    """
    from itertools import islice

    from ..volumes import sample_subvolume_bounds

    if num_bounds < 1:
        raise DataError(f"num_bounds: expected an int >= 1, got {num_bounds}")
    rng = rng if rng is not None else np.random.default_rng(cfg.random_seed)
    shape = subvolume_shape(cfg, bounds_num_moves)
    out = {}
    for name, volume in volumes.items():
        gen = sample_subvolume_bounds(volume, shape, rng, _label_margin(cfg),
                                      exclude_label_zero=cfg.training.exclude_label_zero)
        out[name] = list(islice(gen, num_bounds))
    return out


def write_subvolume_bounds(volumes: dict[str, Any], cfg: Config, pattern: str, num_bounds: int, *,
                           bounds_num_moves: Sequence[int] = (5, 5, 5),
                           rng: np.random.Generator | None = None) -> list[Path]:
    """Generate bounds (:func:`generate_subvolume_bounds`) for downsampled volumes and write one CSV each.

    ``pattern`` must contain ``{volume}``. Volumes are downsampled to
    ``[volume] resolution`` (not partitioned), as the original did.

    Returns
    -------
    list of Path
        The CSV files written.
    """
    from ..volumes import write_subvolume_bounds_csv
    from .run import prepare_volumes

    paths = {name: _format_pattern(pattern, name, "bounds output file") for name in volumes}
    for path in paths.values():
        check_writable_dir(path)
    volumes = prepare_volumes(volumes, cfg, partition=False)
    bounds = generate_subvolume_bounds(volumes, cfg, num_bounds, bounds_num_moves=bounds_num_moves, rng=rng)
    for name, path in paths.items():
        write_subvolume_bounds_csv(path, bounds[name])
    return list(paths.values())


# --------------------------------------------------------------------------- sparse fill


@dataclass
class SparseRegion:
    """One region of a sparse fill.

    Attributes
    ----------
    volume : str
    index : int
        Index of the bounds within its volume.
    bounds : SubvolumeBounds
    image : ndarray of float32
        The (possibly augmented) subvolume image.
    target : ndarray of bool
        Ground-truth object mask, same shape as ``image`` (False in the label margin).
    region : Region
        After the fill: mask, moves ...
    reason : str or None
        Stop reason.
    """

    volume: str
    index: int
    bounds: Any
    image: NDArray[np.float32]
    target: NDArray[np.bool_]
    region: Region
    reason: str | None = None

    def scores(self, t_final: float, beta: float) -> tuple[float, float, float]:
        """(F-beta, precision, recall) of ``mask >= t_final`` against the target, over the whole subvolume."""
        pred = np.nan_to_num(self.region.get_mask((0, 0, 0), self.region.shape), nan=0.0) >= t_final
        return binary_scores(self.target, pred, beta)

    def body(self, t_final: float, closing_shape: Sequence[int] = ()) -> NDArray[np.bool_]:
        out = np.zeros(self.image.shape, dtype=bool)
        body = self.region.to_body(t_final, closing_shape)
        if body is not None:
            start, mask = body
            out[tuple(slice(int(a), int(a) + n) for a, n in zip(start, mask.shape))] = mask
        return out


def _seed_margin_ok(target: NDArray[np.bool_], seed: NDArray[np.int64], resolution: Sequence[float]) -> bool:
    r = np.ceil(SEED_MARGIN_NM / np.asarray(resolution, dtype=np.float64)).astype(np.int64)
    lo = np.maximum(seed - r, 0)
    hi = np.minimum(seed + r + 1, target.shape)
    return bool(target[tuple(slice(a, b) for a, b in zip(lo, hi))].all())


def _make_region(volume: Any, name: str, index: int, bounds: Any, cfg: Config, bias: bool, augment: bool,
                 rng: np.random.Generator) -> SparseRegion | None:
    from ..volumes import get_subvolume

    sub = get_subvolume(volume, bounds, label_downsampling=cfg.volume.label_downsampling)
    if sub.label_mask is None:
        raise DataError(f"volume {name!r}: sparse fill needs labels (ground truth) and a label_id per subvolume")
    if augment:
        from ..augment import augment_subvolume

        sub = augment_subvolume(sub, cfg.training, rng)
    margin = np.asarray(sub.label_margin, dtype=np.int64)
    target = np.zeros(sub.image.shape, dtype=bool)
    target[tuple(slice(int(m), int(m) + n) for m, n in zip(margin, sub.label_mask.shape))] = sub.label_mask
    seed = np.asarray(sub.seed, dtype=np.int64)
    if not _seed_margin_ok(target, seed, volume.resolution):
        log.debug("%s #%d: seed %s is closer than %g nm to another object; skipped", name, index, seed.tolist(),
                  SEED_MARGIN_NM)
        return None
    image = np.ascontiguousarray(sub.image, dtype=np.float32)
    region = Region(image, cfg.model, seed, target=target, block_padding="reflect", bias_against_merge=bias,
                    rng=np.random.default_rng([int(rng.integers(2**62)), index]))
    return SparseRegion(name, index, bounds, image, target, region)


def _interleave(lists: Iterable[Iterable[Any]]) -> Iterable[Any]:
    sentinel = object()
    for group in itertools.zip_longest(*lists, fillvalue=sentinel):
        for item in group:
            if item is not sentinel:
                yield item


def sparse_fill(volumes: dict[str, Any], model: Any, cfg: Config, *, bounds: dict[str, list] | None = None,
                num_regions: int = 10, bounds_num_moves: Sequence[int] = (5, 5, 5), augment: bool = False,
                move_batch_size: int | None = None, max_moves: int | None = None,
                remask_interval: int | None = None, bias: bool = True, rng: np.random.Generator | None = None,
                device: Any = None, interactive: Callable[[SparseRegion], bool] | None = None
                ) -> list[SparseRegion]:
    """Fill one object per subvolume, batched across subvolumes.

    Parameters
    ----------
    volumes : dict of name -> Volume
        With labels.
    model
        Network, predictor or ``predict(images, masks)`` callable.
    cfg : Config
    bounds : dict of name -> list of SubvolumeBounds, optional
        Subvolumes to fill (e.g. read from ``gen-subv-bounds`` CSVs); default:
        ``num_regions`` random ones per volume of shape
        :func:`subvolume_shape` ``(cfg, bounds_num_moves)``.
    augment : bool
        Apply the training augmentations to each subvolume first.
    move_batch_size : int, optional
        FOVs per forward pass (across regions); default 32 CPU / 256 CUDA.
    max_moves, remask_interval, bias
        As for a dense fill.
    interactive : callable, optional
        Regions are then filled one at a time and ``interactive(region)`` is
        called after each; returning False stops.

    Returns
    -------
    list of SparseRegion
        Volumes interleaved round-robin. Subvolumes whose seed lies within 20 nm
        of another object are skipped (as in the original).
    """
    rng = rng if rng is not None else np.random.default_rng(cfg.random_seed)
    predictor = make_predictor(model, device=device)
    if move_batch_size is None:
        move_batch_size = default_move_batch_size(predictor)
    if move_batch_size < 1:
        raise DataError(f"move_batch_size: expected an int >= 1, got {move_batch_size}")
    if bounds is None:
        from ..volumes import sample_subvolume_bounds

        shape = subvolume_shape(cfg, bounds_num_moves)
        lists = []
        for name, volume in volumes.items():
            gen = sample_subvolume_bounds(volume, shape, rng, _label_margin(cfg),
                                          exclude_label_zero=cfg.training.exclude_label_zero)
            made: list[SparseRegion] = []
            for index in itertools.count():
                if len(made) >= num_regions or index >= 100 * max(1, num_regions):
                    break
                r = _make_region(volume, name, index, next(gen), cfg, bias, augment, rng)
                if r is not None:
                    made.append(r)
            lists.append(made)
    else:
        lists = []
        for name, volume in volumes.items():
            made = []
            for index, b in enumerate(bounds.get(name, [])):
                shape = np.asarray(volume.shape)
                if b.start is None or (b.start < 0).any() or (b.stop > shape).any():
                    raise DataError(f"volume {name!r}: subvolume bounds #{index} "
                                    f"{None if b.start is None else b.start.tolist()}-"
                                    f"{None if b.stop is None else b.stop.tolist()} are not inside the volume of "
                                    f"shape {shape.tolist()}")
                r = _make_region(volume, name, index, b, cfg, bias, augment, rng)
                if r is not None:
                    made.append(r)
            lists.append(made)
    regions = list(_interleave(lists))
    callback = seed_too_weak if bias else None
    fc = cfg.fill  # a region's moves per pass, as in a dense fill
    kw = dict(max_moves=max_moves, remask_interval=remask_interval, stop_callback=callback,
              callback_interval=SEED_CHECK_INTERVAL, moves_per_step=fc.moves_per_step,
              moves_per_step_growth=fc.moves_per_step_growth, moves_per_step_max=fc.moves_per_step_max)
    if interactive is None:
        reasons = fill_regions([r.region for r in regions], predictor, move_batch_size=move_batch_size, **kw)
        for r, reason in zip(regions, reasons):
            r.reason = reason
        return regions
    done = []
    for r in regions:
        r.reason, = fill_regions([r.region], predictor, move_batch_size=fc.moves_per_step, **kw)
        done.append(r)
        if not interactive(r):
            break
    return done


def _row(r: SparseRegion, cfg: Config) -> dict:
    f, p, rc = r.scores(cfg.model.t_final, cfg.training.validation_metric.beta)
    seed = r.bounds.seed if r.bounds.seed is not None else r.bounds.start + r.region.seed
    return {"volume": r.volume, "index": r.index, "seed": " ".join(str(int(v)) for v in seed),
            "label_id": "" if r.bounds.label_id is None else int(r.bounds.label_id), "f_score": round(f, 6),
            "precision": round(p, 6), "recall": round(rc, 6), "moves": r.region.moves, "reason": r.reason,
            "body_voxels": int(r.body(cfg.model.t_final, cfg.postprocessing.closing_shape).sum())}


def write_sparse_fill(regions: list[SparseRegion], cfg: Config, output: str | os.PathLike) -> tuple[Path, Path, list[dict]]:
    """Write every region to one HDF5 file and a CSV table next to it (``.csv``).

    HDF5 layout: ``regions/<volume>/<index>/{image, target, prediction, body}``
    (prediction = object probabilities, NaN where never predicted) with
    attributes ``start``, ``stop``, ``seed``, ``label_id``, ``f_score``, ``moves``,
    ``reason``.
    """
    output = Path(output)
    csv_path = output.with_suffix(".csv")
    check_writable_dir(output)
    rows = [_row(r, cfg) for r in regions]
    with atomic_hdf5(output, suffix=".h5") as f:
        f.attrs["t_final"] = cfg.model.t_final
        f.attrs["f_beta"] = cfg.training.validation_metric.beta
        for r, row in zip(regions, rows):
            g = f.create_group(f"regions/{r.volume}/{r.index}")
            kw = dict(compression="gzip", compression_opts=1)
            g.create_dataset("image", data=r.image, **kw)
            g.create_dataset("target", data=r.target.astype(np.uint8), **kw)
            g.create_dataset("prediction", data=r.region.get_mask((0, 0, 0), r.region.shape), **kw)
            g.create_dataset("body", data=r.body(cfg.model.t_final, cfg.postprocessing.closing_shape)
                             .astype(np.uint8), **kw)
            for key in ("start", "stop", "seed"):
                value = getattr(r.bounds, key)
                if value is not None:
                    g.attrs[key] = np.asarray(value, dtype=np.int64)
            g.attrs["label_id"] = -1 if r.bounds.label_id is None else int(r.bounds.label_id)
            for key in ("f_score", "precision", "recall", "moves", "reason", "body_voxels"):
                g.attrs[key] = row[key]
    with atomic_path(csv_path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return output, csv_path, rows


def summarize(rows: list[dict], beta: float) -> str:
    """One line: regions, mean F-score, mean moves, stop reasons."""
    if not rows:
        return "sparse fill: no regions"
    f = np.mean([r["f_score"] for r in rows])
    moves = np.mean([r["moves"] for r in rows])
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    listed = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    return (f"sparse fill: {len(rows)} regions, mean F{beta:g} {f:.3f}, mean moves {moves:.1f} "
            f"(stopped: {listed})")


def _prompt(cfg: Config) -> Callable[[SparseRegion], bool]:
    def ask(r: SparseRegion) -> bool:
        row = _row(r, cfg)
        print(f"{r.volume} #{r.index}: seed {row['seed']}, label {row['label_id']}, F {row['f_score']:.3f}, "
              f"{row['moves']} moves ({row['reason']})", flush=True)
        try:
            answer = input("Enter: next region, q: quit > ")
        except EOFError:
            return False
        return answer.strip().lower() not in ("q", "quit")

    return ask


def sparse_fill_to_files(volumes: dict[str, Any], model: Any, cfg: Config, output: str | os.PathLike, *,
                         bounds_pattern: str | None = None, interactive: bool = False, **kwargs: Any) -> str:
    """What ``sparse-fill`` does: read bounds (``{volume}`` CSVs) if given, fill, write, summarize.

    Returns
    -------
    str
        The summary line.
    """
    check_writable_dir(output)
    bounds = None
    if bounds_pattern:
        from ..volumes import read_subvolume_bounds_csv

        bounds = {name: read_subvolume_bounds_csv(_format_pattern(bounds_pattern, name, "bounds input file"))
                  for name in volumes}
    regions = sparse_fill(volumes, model, cfg, bounds=bounds, interactive=_prompt(cfg) if interactive else None,
                          **kwargs)
    h5, csv_path, rows = write_sparse_fill(regions, cfg, output)
    summary = summarize(rows, cfg.training.validation_metric.beta)
    log.info("wrote %s and %s", h5, csv_path)
    return f"{summary}; wrote {h5} and {csv_path}"


__all__ = ["sparse_fill", "sparse_fill_to_files", "write_sparse_fill", "generate_subvolume_bounds",
           "write_subvolume_bounds", "subvolume_shape", "SparseRegion"]

