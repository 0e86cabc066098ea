"""Dense fill: segment a whole volume (or one box of it) seed by seed: the scheduler.

(This module is one class, :class:`DenseFiller`, a little over 600 lines: its seed
order, deferral, parking, revocation and commit rules hold one invariant together,
batched = one object at a time, and read best in one place. Its inputs and outputs
are in :mod:`~diluvian.fill.state`, its public functions in :mod:`~diluvian.fill.box`.)

Semantics (the original diluvian's, spec §1.2 steps 5-6 and §5.7)
------------------------------------------------------------------
Seeds are taken in order (shuffled unless ``ordered_seeds``). Each seed grows a
:class:`~diluvian.region.Region` over the whole box (reflect padding at the box
borders, a block-sparse mask so that memory follows the object). A fill stops
when no move is left, when the seed's own probability drops below ``t_move`` (checked
after every move, with the anti-merge bias on), after ``max_moves`` moves, or when
a remask loses the seed. The body is the seed-connected component of
``mask >= t_final`` (after the optional closing). Bodies are committed in seed
order: a seed that is already labelled is skipped; a body writes its label only
into unlabelled voxels (first body wins) and counts the overlap in
``conflict_count``; bodies smaller than ``postprocessing.min_body_size`` voxels are
dropped. Labels are consecutive from 1, skipping ``background_label_id``.

One departure from the original: a body that overlaps one earlier body by at least
``postprocessing.merge_overlap_fraction`` of its voxels is that object filled again
from another seed (the network, started elsewhere, grew into it), so it takes the
earlier body's label. The original gave every body a new label, which split each
large neuron into as many pieces as it had seeds that the earlier fills missed.

Batching across objects
-----------------------
A single object's fill is sequential (each move depends on the previous
predictions), so one object cannot keep a GPU busy. Here up to
``move_batch_size`` regions (the next unlabelled seeds in order) fill at once and
every step runs **one** forward pass over one block from each of them. Because a
region's fill never looks at other regions (only the final write is
first-wins), it ends exactly as it would alone. Finished regions are committed
strictly in seed order, and committing a body revokes the active regions whose
seed it covers (they would have been skipped when filled one at a time). The
segmentation therefore equals the one-object-at-a-time segmentation; the only
cost is the moves of revoked regions ("wasted moves"). To keep that waste low, a
seed that lies inside the current mask (``>= t_final``) of an earlier active
region is not started until that region is committed.

Each region's random generator (used only by ``move_priority = "random"``) is
derived from the run's entropy and the seed index, so results do not depend on
the batching, and a run resumed from a checkpoint ends exactly like an
uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from ..arrays import ChunkCachedImage
from ..config import Config
from ..masks import MaskPool
from ..region import Region
from ..stepper import BatchBuffer, BatchTimer, RegionStepper, Slot, apply_batch, run_batch
from ..util import UnionFind
from .guards import guard_of  # guard:
from .state import DEFAULT_CHECKPOINT_INTERVAL, FillState, FillStats

log = logging.getLogger(__name__)

SEED_CHECK_INTERVAL = 1
"""Moves between checks of the seed probability (and of revocation). The original checked every
100 moves; a region whose seed is already too weak then still costs up to 100 FOVs. The check
reads one voxel, so it runs after every move."""


PROGRESS_LOG_SECONDS = 60.0
"""Seconds between progress lines in the log (the progress bar shows only on a terminal)."""


def seed_too_weak(region: Region) -> bool:
    """Whether a fill should stop: its seed voxel's probability fell below ``t_move``.

    This is google/ffn's "seed got too weak" rule. The original diluvian stopped below 0.5
    only, so a region whose seed sat between 0.5 and ``t_final`` kept moving to the end and
    then produced no body anyway (its seed is outside the thresholded mask); on FIB-25 such
    regions were most of a dense fill's work. Used with the anti-merge bias.
    """
    return region.seed_probability() < region.cfg.t_move



_SKIPPED = "skipped"
_REVOKED = "revoked"


# --------------------------------------------------------------------------- storage helpers


LazyImage = ChunkCachedImage
"""The box of a volume's image read by chunk (``--no-in-memory``): :class:`diluvian.arrays.ChunkCachedImage`."""


def _mask_value(region: Region, voxel: NDArray[np.int64]) -> float:
    return region.mask_value(voxel)


def _write_body(labels: Any, conflicts: Any, start: NDArray[np.int64], body: NDArray[np.bool_], label: int,
                background: int, merge_fraction: float = 0.0,
                size: int | None = None) -> tuple[int, int, int, dict[int, int]]:
    """Write a body into the unlabelled voxels of its box and count the overlap.

    The body gets ``label``, or, when ``merge_fraction`` > 0 and it overlaps one earlier
    body by at least that fraction of its own voxels (``size``, counted when None), that
    body's label.

    Returns
    -------
    (label written, voxels written, voxels overlapped, {earlier label: voxels overlapped})
    """
    sl = tuple(slice(int(a), int(a) + n) for a, n in zip(start, body.shape))
    current = np.array(labels[sl])
    free = current == background
    overlap = body & ~free
    n_overlap = int(np.count_nonzero(overlap))
    overlaps: dict[int, int] = {}
    if n_overlap:
        conflicts[sl] = np.asarray(conflicts[sl]) + overlap.astype(np.uint32)
        ids, counts = np.unique(current[overlap], return_counts=True)
        overlaps = {int(i): int(c) for i, c in zip(ids, counts)}
        if merge_fraction > 0:
            best = int(np.argmax(counts))
            if counts[best] >= merge_fraction * (np.count_nonzero(body) if size is None else size):
                label = int(ids[best])
    new = body & free
    current[new] = label
    labels[sl] = current
    return label, int(np.count_nonzero(new)), n_overlap, overlaps


def join_bridged(labels: Any, bridges: Mapping[tuple[int, int], int], support: int) -> int:
    """Join, in place, the label pairs that at least ``support`` bodies bridged; returns the pairs joined.

    Each group of joined labels takes its smallest label. ``labels`` is any array that
    supports ``[...]`` reads and writes.
    """
    pairs = sorted(p for p, n in bridges.items() if n >= support)
    if not pairs:
        return 0
    uf = UnionFind()
    for a, b in pairs:
        uf.union(int(a), int(b))
    current = np.asarray(labels[...])
    ids = np.array(sorted(uf.parent), dtype=current.dtype)  # the labels that change (roots stay)
    hit = np.isin(current, ids)
    current[hit] = uf.roots(ids).astype(current.dtype)[np.searchsorted(ids, current[hit])]
    labels[...] = current
    return len(pairs)


def _drop_region(slot: Slot) -> None:
    """Forget a slot's region, giving its mask storage back."""
    release = getattr(slot.region.mask, "release", None)
    if release is not None:
        release()
    slot.region = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- the engine


@dataclass
class _Lane:
    buffer: BatchBuffer
    active: list[Slot] = field(default_factory=list)
    handle: Any = None
    batch: list[Slot] = field(default_factory=list)


class DenseFiller:
    """The batched-across-objects dense fill engine (used by :func:`fill_volume_with_model`).

    Parameters
    ----------
    image : array-like of float32, shape (Z, Y, X)
        The box to segment (an ndarray, or a :class:`LazyImage`).
    cfg : Config
    predictor
        From :func:`~diluvian.predict.make_predictor`.
    labels : array-like of uint64
        Output, same shape as ``image``, holding the labels so far.
    conflicts : array-like of uint32
        Conflict counts, same shape.
    state : FillState
        Seeds, position, label counter, options.
    move_batch_size : int
        FOVs per forward pass.
    lanes : int
        Batches in flight (2 overlaps CPU bookkeeping with GPU work).
    mask_factory : callable
        ``mask_factory(seed) -> NaN mask storage`` of the box's shape for a region
        grown from ``seed``; storage with a ``release()`` method is released when the
        region is done.
    checkpoint : callable, optional
        ``checkpoint(state, labels, conflicts)``, called every ``checkpoint_interval``
        committed bodies and on KeyboardInterrupt.
    progress : bool
        Show a tqdm bar.
    """

    def __init__(self, image: Any, cfg: Config, predictor: Any, labels: Any, conflicts: Any, state: FillState, *,
                 move_batch_size: int, lanes: int = 1, mask_factory: Callable[[NDArray[np.int64]], Any],
                 checkpoint: Callable[[FillState, Any, Any], None] | None = None,
                 checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL, checkpoint_minutes: float = 0.0,
                 max_bodies: int | None = None, progress: bool = True, stats: FillStats | None = None,
                 fill_batch: bool = False) -> None:
        self.image = image
        self.checkpoint_seconds = 60.0 * checkpoint_minutes
        self.fill_batch = fill_batch
        self.cfg = cfg
        self.predictor = predictor
        self.labels = labels
        self.conflicts = conflicts
        self.state = state
        self.seeds = np.asarray(state.seeds, dtype=np.int64).reshape(-1, 3)
        opts = state.options
        self.background = int(opts["background_label_id"])
        self.bias = bool(opts["bias"])
        self.reject_early = bool(opts["reject_early_termination"])
        self.min_body_size = int(opts["min_body_size"])
        self.closing_shape = tuple(opts["closing_shape"])
        self.t_final = float(opts["t_final"])
        self.merge_fraction = float(opts.get("merge_overlap_fraction", 0.0))
        self.bridge_fraction = float(opts.get("bridge_fraction", 0.0))
        self.bridges: dict[tuple[int, int], int] = {(int(a), int(b)): int(n) for a, b, n in state.bridges}
        moves_per_step = int(opts.get("moves_per_step", 1))
        self.capacity = max(1, move_batch_size // moves_per_step)
        self.batch_rows = self.capacity * moves_per_step
        self.stepper = RegionStepper(
            moves_per_step=moves_per_step, max_moves=opts["max_moves"], remask_interval=opts["remask_interval"],
            stop_callback=self._stop_callback, callback_interval=SEED_CHECK_INTERVAL,
            moves_per_step_growth=int(opts.get("moves_per_step_growth", 0)),
            max_moves_per_step=min(self.batch_rows, int(opts.get("moves_per_step_max") or self.batch_rows)))
        pool = getattr(mask_factory, "__self__", None)  # MaskPool.acquire: FOVs and updates batched
        self.lanes = [_Lane(BatchBuffer(self.capacity * moves_per_step, cfg.model.input_fov_shape, image,
                                        pool if isinstance(pool, MaskPool) else None, cfg.model.v_false))
                      for _ in range(max(1, lanes))]
        self.window = max(64, 8 * self.capacity * len(self.lanes))
        self.mask_factory = mask_factory
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.max_bodies = max_bodies
        self.progress = progress
        self.stats = stats or FillStats()
        self.stats.seeds = len(self.seeds)
        self.timer = BatchTimer()

        self.commit_ptr = int(state.next_seed)
        self.next_new = self.commit_ptr
        self.next_label = int(state.next_label)
        self.outcomes: dict[int, Any] = {}
        # seed index -> key of the earlier region it waits for (never started, or parked)
        self.deferred: dict[int, int] = {}
        self.parked: dict[int, Slot] = {}  # started regions waiting, with their state
        self.deferred_dirty = False
        self.park_check_interval = 2
        # do not start a seed inside the (FOV-dilated) box an earlier active region has touched: it is
        # likely the same object, and its fill would be wasted (a scheduling choice only)
        self.defer_in_boxes = True
        self.box_margin = np.asarray(cfg.model.input_fov_shape, dtype=np.int64) // 2
        self._gathers = 0
        self.stopped = False
        self.bodies_since_checkpoint = 0
        self._bar = None

    # ---------------------------------------------------------------- helpers

    def _stop_callback(self, region: Region) -> bool:
        guard = guard_of(self)  # guard: flood guard (fill/guards.py)
        return self.bias and seed_too_weak(region) or (guard is not None and guard.stop(region))  # guard:

    def _labelled(self, voxel: NDArray[np.int64]) -> bool:
        z, y, x = (int(v) for v in voxel)
        return int(np.asarray(self.labels[z:z + 1, y:y + 1, x:x + 1]).reshape(())) != self.background

    def _active_slots(self):
        for lane in self.lanes:
            for slot in lane.active:
                if not slot.revoked and slot.reason is None:
                    yield slot

    def _blocker(self, idx: int, voxel: NDArray[np.int64], parked: Slot | None = None) -> int | None:
        """Key of an earlier active region that holds ``voxel`` (>= ``t_final``) or whose seed ``parked`` holds."""
        for slot in self._active_slots():
            if slot.key >= idx:
                continue
            if _mask_value(slot.region, voxel) >= self.t_final:
                return slot.key
            if parked is not None and _mask_value(parked.region, slot.region.seed) >= self.t_final:
                return slot.key
        return None

    def _box_blocker(self, idx: int, voxel: NDArray[np.int64]) -> int | None:
        """Key of an earlier active region whose touched box (dilated by the FOV radius) holds ``voxel``."""
        pad = self.box_margin
        for slot in self._active_slots():
            if slot.key < idx and (slot.region.touched_min - pad <= voxel).all() \
                    and (voxel < slot.region.touched_max + pad).all():
                return slot.key
        return None

    def _new_slot(self, idx: int) -> Slot:
        region = Region(self.image, self.cfg.model, self.seeds[idx], mask=self.mask_factory(self.seeds[idx]),
                        block_padding="reflect", bias_against_merge=self.bias,
                        rng=np.random.default_rng([int(self.state.entropy), idx]))
        return self.stepper.slot(idx, region)

    def _activate_next(self) -> Slot | None:
        if self.stopped:
            return None
        if self.deferred and self.deferred_dirty:
            self.deferred_dirty = False
            waiting = {s.key for s in self._active_slots()} | set(self.parked)
            for idx in sorted(self.deferred):
                if idx not in self.deferred:  # revoked by a commit during this scan
                    continue
                voxel = self.seeds[idx]
                parked = self.parked.get(idx)
                if self._labelled(voxel):
                    del self.deferred[idx]
                    if parked is not None:
                        del self.parked[idx]
                        self.stats.wasted_moves += parked.region.moves
                        _drop_region(parked)
                        self.outcomes[idx] = _REVOKED
                    else:
                        self.outcomes[idx] = _SKIPPED
                    self._commit()
                    continue
                if self.deferred[idx] in waiting:
                    continue
                blocker = self._blocker(idx, voxel, parked)
                if blocker is not None:
                    self.deferred[idx] = blocker
                    continue
                del self.deferred[idx]
                self.deferred_dirty = True  # the rest of the list was not looked at
                return self.parked.pop(idx) if parked is not None else self._new_slot(idx)
        while self.next_new < len(self.seeds):
            idx = self.next_new
            if idx - self.commit_ptr >= self.window and idx != self.commit_ptr:
                return None
            self.next_new += 1
            voxel = self.seeds[idx]
            if self._labelled(voxel):
                self.outcomes[idx] = _SKIPPED
                self._commit()
                continue
            blocker = None if idx == self.commit_ptr else self._blocker(idx, voxel)
            if blocker is None and idx != self.commit_ptr and self.defer_in_boxes:
                blocker = self._box_blocker(idx, voxel)
            if blocker is not None:
                self.deferred[idx] = blocker
                continue
            return self._new_slot(idx)
        return None

    def _speculate(self) -> Slot | None:
        """With ``fill_batch``: start (or resume) the first waiting seed anyway, to keep the batch full.

        Its fill may be wasted (revoked once an earlier body covers its seed), but the
        segmentation does not change: regions never look at each other.
        """
        for idx in sorted(self.deferred):
            if self._labelled(self.seeds[idx]):
                continue  # resolved by the next scan of the waiting seeds
            del self.deferred[idx]
            parked = self.parked.pop(idx, None)
            return parked if parked is not None else self._new_slot(idx)
        return None

    # ---------------------------------------------------------------- per-region outcome

    def _finished(self, slot: Slot) -> None:
        region = slot.region
        if slot.reason != "done" and self.reject_early:
            outcome: Any = ("rejected", None, region.moves)
        else:
            outcome = (slot.reason, region.to_body(self.t_final, self.closing_shape), region.moves)
        _drop_region(slot)  # free the mask now
        self.outcomes[slot.key] = outcome
        self.deferred_dirty = True
        self._commit()

    def _commit(self) -> None:
        stats = self.stats
        while not self.stopped and self.commit_ptr in self.outcomes:
            idx = self.commit_ptr
            outcome = self.outcomes.pop(idx)
            self.commit_ptr += 1
            stats.seeds_done += 1
            if self._bar is not None:
                self._bar.update(1)
            if outcome is _SKIPPED:
                stats.skipped_labelled += 1
                continue
            if outcome is _REVOKED:
                stats.revoked += 1
                continue
            reason, body, moves = outcome
            if reason == "rejected":
                stats.rejected_early += 1
                continue
            if self._labelled(self.seeds[idx]):
                stats.revoked += 1  # finished before the covering body was committed
                stats.wasted_moves += moves
                continue
            if body is None:
                stats.no_body += 1
                continue
            guard = guard_of(self)  # guard: trim a body that leaked across membranes
            start, mask = body if guard is None else guard.accept(self.seeds[idx], body)  # guard:
            stats.guard_trimmed += int(mask is not body[1])
            size = int(np.count_nonzero(mask))
            if size < max(1, self.min_body_size):
                stats.dropped_small += 1
                continue
            label, written, overlap, overlaps = _write_body(self.labels, self.conflicts, start, mask,
                                                            self.next_label, self.background, self.merge_fraction,
                                                            size)
            if self.bridge_fraction > 0:
                for other, n in overlaps.items():
                    if other != label and n >= self.bridge_fraction * size:
                        pair = (min(other, label), max(other, label))
                        self.bridges[pair] = self.bridges.get(pair, 0) + 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("seed %d at %s: body of %d voxels (%s), label %d, %d written, overlaps %s", idx,
                          self.seeds[idx].tolist(), size, reason, label, written, overlaps)
            if label == self.next_label:
                nxt = label + 1
                self.next_label = nxt + 1 if nxt == self.background else nxt
                stats.bodies += 1
            else:
                stats.merged += 1
            stats.voxels_labelled += written
            stats.conflicts += overlap
            self.bodies_since_checkpoint += 1
            self._revoke(idx)
            if self._bar is not None:
                self._bar.set_postfix(bodies=stats.bodies, voxels=stats.voxels_labelled,
                                      fov_s=f"{self._fov_rate():.1f}", refresh=False)
            if self.max_bodies is not None and stats.bodies >= self.max_bodies:
                self.stopped = True
                break
            if self.checkpoint is not None and self.checkpoint_interval \
                    and self.bodies_since_checkpoint >= self.checkpoint_interval:
                self._save_checkpoint()

    def _revoke(self, committed_idx: int) -> None:
        for idx in [k for k in self.parked if k > committed_idx]:
            if self._labelled(self.seeds[idx]):
                slot = self.parked.pop(idx)
                del self.deferred[idx]
                self.stats.wasted_moves += slot.region.moves
                _drop_region(slot)
                self.outcomes[idx] = _REVOKED
                self.deferred_dirty = True
        for slot in self._active_slots():
            if slot.key > committed_idx and self._labelled(slot.region.seed):
                slot.revoked = True
                self.stats.wasted_moves += slot.region.moves + len(slot.blocks)  # incl. blocks in flight
                _drop_region(slot)
                self.outcomes[slot.key] = _REVOKED
                self.deferred_dirty = True

    def _fov_rate(self) -> float:
        dt = time.perf_counter() - self._t0
        return self._moves_this_run / dt if dt > 0 else 0.0

    def current_state(self) -> FillState:
        st = self.state
        return FillState(seeds=self.seeds, next_seed=self.commit_ptr, next_label=self.next_label,
                         entropy=st.entropy, options=dict(st.options), volume=st.volume, bounds=st.bounds,
                         stats=asdict(self.stats), bridges=[[a, b, n] for (a, b), n in sorted(self.bridges.items())])

    def _save_checkpoint(self) -> None:
        self.bodies_since_checkpoint = 0
        self._last_checkpoint = time.perf_counter()
        self._sync_time()
        if self.checkpoint is not None:
            self.checkpoint(self.current_state(), self.labels, self.conflicts)

    def _sync_time(self) -> None:
        now = time.perf_counter()
        self.stats.seconds += now - self._t_last
        self._t_last = now
        self.stats.forward_wait_seconds = self._wait0 + self.timer.wait_seconds

    # ---------------------------------------------------------------- main loop

    def _park_covered(self, lane: _Lane) -> None:
        """Set aside the lane's regions that are filling the same object as an earlier active region.

        A region is parked when an earlier active region's mask (``>= t_final``)
        holds its seed or the centre of its last FOV, or when its own mask holds
        the seed of an earlier active region. Its fill would be wasted if the
        earlier region's body ends up covering its seed. A parked region keeps its
        state, waits until that earlier region is resolved and then goes on (with
        the same result) unless its seed got labelled.
        """
        slots = [s for s in self._active_slots()]
        mine = [s for s in lane.active if not s.revoked and s.reason is None and not s.blocks
                and s.last_center is not None]
        if len(slots) < 2 or not mine:
            return
        order = np.argsort([s.key for s in slots])
        slots = [slots[i] for i in order]
        keys = np.array([s.key for s in slots])
        seeds = np.array([s.region.seed for s in slots])
        lo = np.array([s.region.touched_min for s in slots])
        hi = np.array([s.region.touched_max for s in slots])
        m_keys = np.array([s.key for s in mine])
        m_seeds = np.array([s.region.seed for s in mine])
        m_front = np.array([s.last_center for s in mine])
        m_lo = np.array([s.region.touched_min for s in mine])
        m_hi = np.array([s.region.touched_max for s in mine])
        earlier = keys[None] < m_keys[:, None]

        def inside(points, box_lo, box_hi):
            return ((box_lo <= points) & (points < box_hi)).all(-1)

        a = earlier & inside(m_seeds[:, None], lo[None], hi[None])  # i's box holds j's seed
        c = earlier & inside(m_front[:, None], lo[None], hi[None])  # i's box holds j's frontier
        b = earlier & inside(seeds[None], m_lo[:, None], m_hi[:, None])  # j's box holds i's seed
        t = self.t_final
        for j in np.flatnonzero((a | b | c).any(1)):
            slot = mine[j]
            for i in np.flatnonzero(a[j] | b[j] | c[j]):  # earliest first
                other = slots[i].region
                if ((a[j, i] and _mask_value(other, slot.region.seed) >= t)
                        or (c[j, i] and _mask_value(other, slot.last_center) >= t)
                        or (b[j, i] and _mask_value(slot.region, other.seed) >= t)):
                    lane.active.remove(slot)
                    self.parked[slot.key] = slot
                    self.deferred[slot.key] = int(keys[i])
                    break

    def _gather(self, lane: _Lane) -> list[Slot]:
        batch: list[Slot] = []
        i = 0
        self._gathers += 1
        if self._gathers % self.park_check_interval == 0 and not self.fill_batch:
            self._park_covered(lane)
        while not self.stopped:
            if i >= len(lane.active):
                if len(lane.active) >= self.capacity:
                    break
                slot = self._activate_next()
                if slot is None and self.fill_batch:
                    slot = self._speculate()
                if slot is None:
                    break
                lane.active.append(slot)
            slot = lane.active[i]
            if slot.revoked:
                lane.active.pop(i)
                continue
            if batch and lane.buffer.n + self.stepper.moves_for(slot.region) > self.batch_rows:
                lane.active[:] = lane.active[i:] + lane.active[:i]  # the regions left out go first next time
                break
            if self.stepper.begin(slot, lane.buffer):
                batch.append(slot)
                i += 1
            else:
                lane.active.pop(i)
                self._finished(slot)
        # regions revoked while this batch was gathered still run (their outputs are ignored)
        return batch

    def _route(self, lane: _Lane) -> None:
        t0 = time.perf_counter()
        outputs = self.predictor.result(lane.handle)
        self.timer.wait_seconds += time.perf_counter() - t0
        batch = lane.batch
        lane.handle, lane.batch = None, []
        if self.stopped:
            return
        apply_batch([s for s in batch if not s.revoked], outputs, lane.buffer)
        for slot in batch:
            if slot.revoked:
                continue
            if self.stepper.finish(slot, None) is not None:
                lane.active.remove(slot)
                self._finished(slot)

    def _log_progress(self, now: float) -> None:
        st = self.stats
        moves = [slot.region.moves for slot in self._active_slots()]
        log.info("fill: seed %d of %d, %d bodies, %d voxels labelled, %d regions active (most moves %d), %d FOVs "
                 "(%.1f FOV/s), batches %.0f%% full", self.commit_ptr, len(self.seeds), st.bodies, st.voxels_labelled,
                 len(moves), max(moves, default=0), st.moves, self._moves_this_run / max(now - self._t0, 1e-9),
                 100 * st.mean_batch / max(1, self.batch_rows))

    def run(self) -> FillStats:
        """Fill until every seed is resolved or ``max_bodies`` is reached (logs progress every minute)."""
        from tqdm.auto import tqdm

        self._t0 = self._t_last = self._last_checkpoint = time.perf_counter()
        self._wait0 = self.stats.forward_wait_seconds
        self._moves_this_run = 0
        self._bar = tqdm(total=len(self.seeds), initial=self.commit_ptr, unit="seed", disable=not self.progress,
                         desc="fill", dynamic_ncols=True)
        next_log = self._t0 + PROGRESS_LOG_SECONDS
        try:
            self._commit()
            retried = False
            while True:
                busy = False
                for lane in self.lanes:
                    if lane.handle is not None:
                        self._route(lane)
                    batch = self._gather(lane)
                    if batch:
                        n = sum(len(s.blocks) for s in batch)
                        self.stats.moves += n
                        self.stats.batches += 1
                        self._moves_this_run += n
                        lane.handle = run_batch(self.predictor, batch, self.timer, lane.buffer)
                        lane.batch = batch
                        busy = True
                    elif lane.handle is not None:
                        busy = True
                if self.stopped:
                    break
                now = time.perf_counter()
                if now >= next_log:
                    next_log = now + PROGRESS_LOG_SECONDS
                    self._log_progress(now)
                if self.checkpoint is not None and self.checkpoint_seconds \
                        and now - self._last_checkpoint >= self.checkpoint_seconds:
                    self._save_checkpoint()  # the committed bodies; regions in flight start again on resume
                if not busy:
                    if self.commit_ptr < len(self.seeds) and self.deferred and not retried:
                        retried = True
                        self.deferred_dirty = True  # look at the waiting seeds once more
                        continue
                    break
                retried = False
            for lane in self.lanes:  # drain (stopped early)
                if lane.handle is not None:
                    self.predictor.result(lane.handle)
                    lane.handle = None
        except KeyboardInterrupt:
            log.warning("interrupted after %d bodies (seed %d of %d)", self.stats.bodies, self.commit_ptr,
                        len(self.seeds))
            if self.checkpoint is not None:
                self._save_checkpoint()
            raise
        finally:
            self._bar.close()
            self._bar = None
        self._sync_time()
        if not self.stopped and self.commit_ptr != len(self.seeds):  # pragma: no cover - invariant
            raise RuntimeError(f"dense fill ended with seed {self.commit_ptr} of {len(self.seeds)} unresolved")
        return self.stats
