"""One object's flood-fill state: move lattice, move queue, mask update, moves.

A :class:`Region` holds the object-probability mask of a single object grown
from a seed voxel. The caller pulls fields of view (:meth:`Region.get_next_block`),
runs them through a network (alone or batched with other regions' blocks) and
pushes the predictions back (:meth:`Region.add_mask`), which updates the mask
and queues the neighbouring moves. :func:`diluvian.stepper.fill_regions` runs that
loop for one region or many. Training (self-fed moving FOVs) and inference use the same class.

Geometry
--------
Moves live on a lattice aligned to the seed: lattice position ``pos`` is centred
at voxel ``pos * move_step + offset`` with ``offset = seed % move_step``. A move is
always one step along one axis (6-connected). Without padding, every input FOV
stays inside the image; with ``block_padding="reflect"`` (fill), a position is
valid when its centre lies inside the image and FOV parts outside it are filled
by reflection.

The mask stores probabilities (NaN = not predicted yet). Networks see unknown
voxels as ``v_false``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .config import ModelConfig
from .errors import DataError
from .util import fmt_list

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``predict(images, masks) -> probabilities``: arrays (N, Z, Y, X) in, (N, *output_fov) out."""

@dataclass
class Block:
    """One field of view to run through the network.

    Attributes
    ----------
    position : tuple of 3 ints
        Move-lattice position.
    center : ndarray of int, shape (3,)
        Voxel coordinates of the FOV centre in the region's image.
    image : ndarray of float32, shape ``input_fov_shape``
    mask : ndarray of float32, shape ``input_fov_shape``
        Object probabilities, unknown voxels set to ``v_false``.
    target : ndarray of float32, shape ``output_fov_shape``, or None
        Soft target (``v_true`` inside the object, ``v_false`` outside).
    """

    position: tuple[int, int, int]
    center: np.ndarray
    image: np.ndarray
    mask: np.ndarray
    target: np.ndarray | None = None
    row: int = -1
    """Row of the batch buffer holding the FOV (-1: none)."""


def _reflect_fill(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Fill ``out`` outside ``out[a:b]`` by reflecting ``out[a:b]`` (``np.pad``'s "reflect").

    Axis by axis, as ``np.pad`` does, so corners match it. Returns False (and leaves
    ``out`` half-filled) when a pad is wider than the data can reflect once.
    """
    full = slice(None)
    for axis in range(3):
        lo, hi = int(a[axis]), int(b[axis])
        n, m = hi - lo, out.shape[axis]
        left, right = lo, m - hi
        if max(left, right) > n - 1:
            return False
        # axes before this one are complete; later ones only inside [a, b)
        head = (full,) * axis
        tail = tuple(slice(int(a[k]), int(b[k])) for k in range(axis + 1, 3))
        if left:
            out[head + (slice(0, left),) + tail] = out[head + (slice(2 * left, left, -1),) + tail]
        if right:
            stop = hi - 2 - right
            out[head + (slice(hi, m),) + tail] = out[head + (slice(hi - 2, None if stop < 0 else stop, -1),) + tail]
    return True


def _read_box(array: Any, start: np.ndarray, stop: np.ndarray, shape: np.ndarray, pad: str | float,
              out: np.ndarray | None = None) -> np.ndarray:
    """Read ``array[start:stop]``; the parts outside ``[0, shape)`` are padded.

    ``pad`` is ``"reflect"`` (as ``np.pad``) or a constant value. With ``out``, the
    box is written there (and returned); otherwise the result may be a view of
    ``array`` when the box lies inside it.
    """
    lo = np.maximum(start, 0)
    hi = np.minimum(stop, shape)
    inner = array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if (lo == start).all() and (hi == stop).all():
        if out is None:
            return np.asarray(inner)
        out[...] = inner
        return out
    a = lo - start
    b = a + (hi - lo)
    if out is None:
        out = np.empty(tuple(int(v) for v in stop - start), dtype=np.asarray(inner[:0, :0, :0]).dtype)
    out[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = inner
    if isinstance(pad, str):
        if min(inner.shape) > 1 and _reflect_fill(out, a, b):
            return out
        # reflect needs at least 2 voxels along an axis (else edge), and repeats for wide pads
        widths = [(int(p), int(q)) for p, q in zip(a, stop - hi)]
        mode = "reflect" if min(inner.shape) > 1 else "edge"
        out[...] = np.pad(np.asarray(inner), widths, mode=mode)
        return out
    full = np.full(out.shape, pad, dtype=out.dtype)
    full[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = out[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
    out[...] = full
    return out


class Region:
    """Flood-fill state of one object.

    Parameters
    ----------
    image : array-like of float32, shape (Z, Y, X)
        Image in [0, 1]; anything with ``shape`` and 3D slicing (ndarray, a lazy reader).
    model_cfg : ModelConfig
        FOVs, move step, thresholds, move priority.
    seed_vox : sequence of 3 ints
        Seed voxel (ZYX) in ``image`` coordinates.
    target : array-like of bool, shape like ``image``, optional
        Ground-truth mask of the object (training, validation, sparse fill).
    mask : array-like of float32, optional
        Storage for the object-probability mask, initialised to NaN; default a
        dense array. Dense fill passes an :class:`~diluvian.octree.OctreeVolume`
        so memory follows the object.
    block_padding : {None, "reflect"}
        None keeps every FOV inside the image; "reflect" lets FOVs cross its border.
    bias_against_merge : bool
        Anti-merge mask update: once a voxel holds p <= 0.5 it can only decrease.
    rng : numpy.random.Generator, optional
        Only used by the ``random`` move priority.
    """

    def __init__(
        self,
        image: Any,
        model_cfg: ModelConfig,
        seed_vox: Sequence[int],
        *,
        target: Any = None,
        mask: Any = None,
        block_padding: str | None = None,
        bias_against_merge: bool = False,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.image = image
        self.cfg = model_cfg
        self.shape = np.asarray(image.shape[-3:], dtype=np.int64)
        self.seed = np.asarray(seed_vox, dtype=np.int64)
        if self.seed.shape != (3,) or (self.seed < 0).any() or (self.seed >= self.shape).any():
            raise DataError(f"seed {fmt_list(self.seed)} outside the region of shape {fmt_list(self.shape)}")
        self.target = target
        self.block_padding = block_padding
        self.bias_against_merge = bias_against_merge
        self.rng = rng if rng is not None else np.random.default_rng(0)

        self.input_fov = np.asarray(model_cfg.input_fov_shape, dtype=np.int64)
        self.output_fov = np.asarray(model_cfg.output_fov_shape, dtype=np.int64)
        self.input_radius = self.input_fov // 2
        self.output_radius = self.output_fov // 2
        self.move_step = np.asarray(model_cfg.move_step, dtype=np.int64)
        self.offset = self.seed % self.move_step
        self.check_t = model_cfg.move_check_thickness - 1
        # union of the output FOV and the move-check cube, read once per update
        self.update_radius = np.maximum(self.output_radius, self.move_step + self.check_t)
        # what one step reads or writes around its centre (input FOV, output, move checks)
        self.reach = tuple(int(v) for v in np.maximum(self.input_radius, self.update_radius))

        if block_padding is None:
            lo = -((self.offset - self.input_radius) // self.move_step)  # ceil((r - offset) / step)
            hi = (self.shape - 1 - self.input_radius - self.offset) // self.move_step
            if (hi < lo).any():
                raise DataError(
                    f"input FOV {fmt_list(self.input_fov)} does not fit a region of shape {fmt_list(self.shape)}"
                )
        elif block_padding == "reflect":
            lo = np.zeros(3, dtype=np.int64)
            hi = (self.shape - 1 - self.offset) // self.move_step
        else:
            raise DataError(f"block_padding: expected None or 'reflect', got {block_padding!r}")
        self.pos_min, self.pos_max = lo, hi
        self._pos_lo, self._pos_hi = lo.tolist(), hi.tolist()  # plain ints for the move loop
        seed_pos = self.seed // self.move_step
        if block_padding is None and ((seed_pos < lo).any() or (seed_pos > hi).any()):
            raise DataError(
                f"seed {fmt_list(self.seed)} is too close to the border of a region of shape {fmt_list(self.shape)} "
                f"for an input FOV of {fmt_list(self.input_fov)}"
            )
        self.seed_pos = tuple(int(p) for p in seed_pos)

        if mask is None:
            mask = np.full(tuple(self.shape), np.nan, dtype=np.float32)
        self.mask = mask
        s = self.seed
        self.mask[s[0]:s[0] + 1, s[1]:s[1] + 1, s[2]:s[2] + 1] = model_cfg.v_true

        self._counter = itertools.count()
        self.queue: list[tuple[float, int, tuple[int, int, int]]] = []
        self.visited: set[tuple[int, int, int]] = {self.seed_pos}
        self.proximity: dict[tuple[int, int, int], int] = {self.seed_pos: 1}
        heapq.heappush(self.queue, (-np.inf, next(self._counter), self.seed_pos))
        self.moves = 0
        # AABB (voxels) of everything written to the mask
        self.touched_min = self.seed.copy()
        self.touched_max = self.seed + 1

    # ------------------------------------------------------------------ geometry

    def position_center(self, pos: Sequence[int]) -> np.ndarray:
        """Voxel centre of a lattice position."""
        return np.asarray(pos, dtype=np.int64) * self.move_step + self.offset

    @property
    def queue_empty(self) -> bool:
        return not self.queue

    # ------------------------------------------------------------------ blocks

    def get_next_block(self, image_out: np.ndarray | None = None, mask_out: np.ndarray | None = None
                       ) -> Block | None:
        """Pop the next move and return its FOV; None when no move is left.

        With ``move_recheck``, a move whose neighbourhood (one move step around
        its centre) no longer holds a voxel >= ``t_move`` is dropped and
        forgotten, so a later move may queue it again.

        Parameters
        ----------
        image_out, mask_out : ndarray of float32, shape ``input_fov_shape``, optional
            Where to write the FOV (e.g. rows of a batch buffer); default new arrays.
        """
        cfg = self.cfg
        move = self.next_move()
        if move is not None:
            pos, center = move
            start = center - self.input_radius
            stop = start + self.input_fov
            if mask_out is None:
                mask_out = np.empty(tuple(self.input_fov), dtype=np.float32)
            mask = _read_box(self.mask, start, stop, self.shape, "reflect", out=mask_out)
            np.copyto(mask, np.float32(cfg.v_false), where=np.isnan(mask))
            if image_out is None:
                image = _read_box(self.image, start, stop, self.shape, "reflect").astype(np.float32, copy=False)
            else:
                image = _read_box(self.image, start, stop, self.shape, "reflect", out=image_out)
            target = None
            if self.target is not None:
                t_start = center - self.output_radius
                t = _read_box(self.target, t_start, t_start + self.output_fov, self.shape, "reflect")
                target = np.where(t, np.float32(cfg.v_true), np.float32(cfg.v_false))
            return Block(position=pos, center=center, image=image, mask=mask, target=target)
        return None

    def next_move(self) -> tuple[tuple[int, int, int], np.ndarray] | None:
        """Pop the next move: ``(lattice position, centre voxel)``, or None when no move is left.

        With ``move_recheck``, a move whose neighbourhood (one move step around
        its centre) no longer holds a voxel >= ``t_move`` is dropped and
        forgotten, so a later move may queue it again.
        """
        cfg = self.cfg
        while self.queue:
            _, _, pos = heapq.heappop(self.queue)
            center = self.position_center(pos)
            if cfg.move_recheck and pos != self.seed_pos:
                lo = np.maximum(center - self.move_step, 0)
                hi = np.minimum(center + self.move_step + 1, self.shape)
                around = self.mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
                if not np.fmax.reduce(around, axis=None) >= cfg.t_move:  # NaN only if all NaN: compares False
                    self.visited.discard(pos)
                    continue
            return pos, center
        return None

    def add_mask(self, block: Block, output: np.ndarray) -> None:
        """Write a prediction (probabilities, ``output_fov_shape``) into the mask and queue moves."""
        center = block.center
        r = self.update_radius
        start = np.maximum(center - r, 0)
        stop = np.minimum(center + r + 1, self.shape)
        current = np.array(self.mask[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]], dtype=np.float32)

        # place the output FOV (clipped to the image) inside the local array
        o_start = center - self.output_radius
        o_stop = o_start + self.output_fov
        lo = np.maximum(o_start, 0)
        hi = np.minimum(o_stop, self.shape)
        src = output[lo[0] - o_start[0]:hi[0] - o_start[0], lo[1] - o_start[1]:hi[1] - o_start[1],
                     lo[2] - o_start[2]:hi[2] - o_start[2]]
        a, b = lo - start, hi - start
        cur = current[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        if self.bias_against_merge:
            # unknown (NaN) or > 0.5: take the prediction; otherwise it may only decrease
            cur[...] = np.where(cur > 0.5, src, np.fmin(src, cur))
        else:
            cur[...] = src
        self.mask[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = current
        self.record_move(block.position, lo, hi, self._face_values(center, current, start))

    def record_move(self, pos: tuple[int, int, int], lo: np.ndarray, hi: np.ndarray, faces: Sequence[float]) -> None:
        """Account for a prediction written into ``[lo, hi)`` and queue moves from its face maxima.

        ``faces[2 * axis + (direction > 0)]`` is the maximum of the mask over that face's
        check slab after the update (NaN or -inf: no voxel there).
        """
        np.minimum(self.touched_min, lo, out=self.touched_min)
        np.maximum(self.touched_max, hi, out=self.touched_max)
        self.moves += 1
        self._queue_moves(pos, faces)

    def _face_values(self, center: np.ndarray, local: np.ndarray, local_start: np.ndarray) -> list[float]:
        """Maxima of the six face slabs of a move at ``center`` (``local``: the mask around it)."""
        step, t = self.move_step, self.check_t
        c = center - local_start  # centre in local coordinates (may be outside for clipped boxes)
        n = np.asarray(local.shape)
        values = []
        for axis in range(3):
            for direction in (-1, 1):
                lo = c - step
                hi = c + step + 1
                lo[axis] = c[axis] + direction * step[axis] - t
                hi[axis] = c[axis] + direction * step[axis] + t + 1
                lo = np.maximum(lo, 0)
                hi = np.minimum(hi, n)
                if (hi <= lo).any():
                    values.append(-np.inf)  # the slab lies outside the image: padding never moves
                    continue
                values.append(np.fmax.reduce(local[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], axis=None))
        return values

    def _queue_moves(self, pos: tuple[int, int, int], faces: Sequence[float]) -> None:
        """Queue the face neighbours whose check slab holds a voxel >= ``t_move``."""
        cfg = self.cfg
        t_move = cfg.t_move
        for i, value in enumerate(faces):
            if not value >= t_move:  # NaN compares False
                continue
            axis, direction = i >> 1, (1 if i & 1 else -1)
            new_pos = list(pos)
            new_pos[axis] += direction
            new_pos_t = (new_pos[0], new_pos[1], new_pos[2])
            if new_pos_t in self.visited:
                continue
            if not self._pos_lo[axis] <= new_pos[axis] <= self._pos_hi[axis]:
                continue
            self.visited.add(new_pos_t)
            self.proximity[new_pos_t] = min(self.proximity.get(new_pos_t, 1 << 30), self.proximity[pos] + 1)
            if cfg.move_priority == "descending":
                priority = -float(value)
            elif cfg.move_priority == "proximity":
                priority = -float(value) / self.proximity[new_pos_t]
            else:
                priority = float(self.rng.random())
            heapq.heappush(self.queue, (priority, next(self._counter), new_pos_t))

    # ------------------------------------------------------------------ whole fill

    def seed_probability(self) -> float:
        """Current mask value at the seed voxel."""
        return self.mask_value(self.seed)

    def mask_value(self, voxel: Sequence[int]) -> float:
        """Current mask value at one voxel (NaN: not predicted)."""
        z, y, x = (int(v) for v in voxel)
        value = getattr(self.mask, "value", None)  # a pool window reads one voxel directly
        if value is not None:
            return value(z, y, x)
        return float(np.asarray(self.mask[z:z + 1, y:y + 1, x:x + 1]).reshape(()))

    # ------------------------------------------------------------------ results

    def touched_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """AABB ``(start, stop)`` of every voxel written to the mask."""
        return self.touched_min.copy(), self.touched_max.copy()

    def get_mask(self, start: Sequence[int] | None = None, stop: Sequence[int] | None = None) -> np.ndarray:
        """Mask probabilities in a box (default the touched bounds); NaN where never predicted."""
        if start is None or stop is None:
            start, stop = self.touched_bounds()
        a, b = np.asarray(start), np.asarray(stop)
        return np.array(self.mask[a[0]:b[0], a[1]:b[1], a[2]:b[2]], dtype=np.float32)

    def _seed_component(self, start: np.ndarray, stop: np.ndarray, threshold: float,
                        closing_shape: Sequence[int] = ()) -> np.ndarray | None:
        from .postprocessing import seed_component

        probs = self.get_mask(start, stop)
        return seed_component(probs, self.seed - start, threshold, closing_shape)

    def remask(self) -> bool:
        """Keep only the seed-connected component of the thresholded mask.

        Values outside that component are capped below ``t_move`` so they can no
        longer trigger moves. Returns False when the seed itself fell below
        ``t_final`` (the caller stops the fill).
        """
        start, stop = self.touched_bounds()
        comp = self._seed_component(start, stop, self.cfg.t_final)
        if comp is None:
            return False
        probs = self.get_mask(start, stop)
        outside = ~comp & ~np.isnan(probs)
        probs[outside] = np.minimum(probs[outside], 0.9 * self.cfg.t_move)
        self.mask[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = probs
        return True

    def to_body(self, t_final: float | None = None, closing_shape: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray] | None:
        """The object: seed-connected component of ``mask >= t_final``.

        Returns
        -------
        (start, mask) or None
            ``start`` (3,) voxel offset and a bool mask cropped to the body's
            bounding box; None when the seed is not inside the thresholded mask.
        """
        threshold = self.cfg.t_final if t_final is None else t_final
        start, stop = self.touched_bounds()
        comp = self._seed_component(start, stop, threshold, closing_shape)
        if comp is None:
            return None
        from .postprocessing import crop_to_nonzero

        sub_start, cropped = crop_to_nonzero(comp)
        return start + sub_start, cropped

    def prediction_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Box reachable by output FOVs over every valid lattice position (clipped to the image)."""
        lo = self.position_center(self.pos_min) - self.output_radius
        hi = self.position_center(self.pos_max) + self.output_radius + 1
        return np.maximum(lo, 0), np.minimum(hi, self.shape)

    def prediction_metric(self, metric: Callable[[np.ndarray, np.ndarray], float], threshold: bool = True) -> float:
        """Score the mask against ``target`` over :meth:`prediction_bounds`.

        Unknown voxels count as ``v_false``. With ``threshold``, both the soft
        target and the prediction are thresholded at ``t_final`` first.

        Parameters
        ----------
        metric : callable
            ``metric(target, prediction) -> float`` on arrays of equal shape.
        """
        if self.target is None:
            raise DataError("prediction_metric needs a region with a target")
        start, stop = self.prediction_bounds()
        pred = self.get_mask(start, stop)
        np.nan_to_num(pred, copy=False, nan=self.cfg.v_false)
        target = np.asarray(self.target[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]).astype(bool)
        if threshold:
            return metric(target, pred >= self.cfg.t_final)
        soft = np.where(target, self.cfg.v_true, self.cfg.v_false).astype(np.float32)
        return metric(soft, pred)
