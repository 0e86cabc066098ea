"""Step many independent regions with one batched forward pass per step.

Each region advances exactly as :meth:`Region.fill` would advance it alone with
``move_batch_size = moves_per_step``: take up to ``moves_per_step`` blocks (none
left: "done"), run the stop callback every ``callback_interval`` moves, predict,
``add_mask``, then check ``max_moves`` and remask. Only the batching of the
predictions differs, so a region's result does not depend on which other regions
share its batches (up to the network's own batch-size dependence of floating
point results).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..region import Block, Region


class BatchBuffer:
    """Preallocated input rows of one batch: regions write their FOVs straight into them.

    Parameters
    ----------
    rows : int
        FOVs per batch.
    fov_shape : 3 ints
        Input FOV shape.
    """

    def __init__(self, rows: int, fov_shape: Sequence[int]) -> None:
        shape = (int(rows), *(int(s) for s in fov_shape))
        self.images = np.empty(shape, dtype=np.float32)
        self.masks = np.empty(shape, dtype=np.float32)
        self.n = 0

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Slot:
    """A region being filled, with its loop counters.

    Attributes
    ----------
    key : Any
        Caller's identifier (e.g. the seed index).
    region : Region
    next_check, next_remask : int
        Move counts at which the stop callback / remask run next.
    blocks : list of Block
        The blocks of the current step (waiting for their predictions).
    reason : str or None
        Why the fill stopped; None while it runs.
    revoked : bool
        Dropped by the caller while blocks were in flight.
    last_center : ndarray or None
        Centre voxel of the last block whose prediction was applied.
    """

    key: Any
    region: Region
    next_check: int
    next_remask: int
    blocks: list[Block] = field(default_factory=list)
    reason: str | None = None
    revoked: bool = False
    last_center: np.ndarray | None = None


class RegionStepper:
    """Per-region fill loop, split into "begin a step" and "finish a step".

    Parameters
    ----------
    moves_per_step : int
        Blocks one region contributes per step (``Region.fill``'s ``move_batch_size``).
    max_moves, remask_interval, stop_callback, callback_interval
        As in :meth:`Region.fill`.
    """

    def __init__(self, *, moves_per_step: int = 1, max_moves: int | None = None,
                 remask_interval: int | None = None,
                 stop_callback: Callable[[Region], bool] | None = None, callback_interval: int = 100) -> None:
        if moves_per_step < 1:
            raise ValueError("moves_per_step must be >= 1")
        self.moves_per_step = moves_per_step
        self.max_moves = max_moves
        self.remask_interval = remask_interval
        self.stop_callback = stop_callback
        self.callback_interval = callback_interval

    def slot(self, key: Any, region: Region) -> Slot:
        return Slot(key, region, next_check=self.callback_interval, next_remask=self.remask_interval or 0)

    def begin(self, slot: Slot, buffer: BatchBuffer | None = None) -> list[Block]:
        """Collect the slot's next blocks; on an empty list ``slot.reason`` says why it stopped.

        With ``buffer``, the blocks' FOVs are written into its next free rows.
        """
        region = slot.region
        blocks = []
        first = buffer.n if buffer is not None else 0
        while len(blocks) < self.moves_per_step:
            if buffer is not None:
                if buffer.n >= len(buffer):
                    break
                block = region.get_next_block(buffer.images[buffer.n], buffer.masks[buffer.n])
                if block is not None:
                    buffer.n += 1
            else:
                block = region.get_next_block()
            if block is None:
                break
            blocks.append(block)
        if not blocks:
            slot.reason = "done"
            return blocks
        if self.stop_callback is not None and region.moves >= slot.next_check:
            slot.next_check += self.callback_interval
            if self.stop_callback(region):
                slot.reason = "callback"
                if buffer is not None:
                    buffer.n = first  # give the rows back
                return []
        slot.blocks = blocks
        return blocks

    def finish(self, slot: Slot, outputs: Sequence[np.ndarray]) -> str | None:
        """Apply the predictions of the slot's blocks; return the stop reason, if any."""
        region = slot.region
        for block, out in zip(slot.blocks, outputs):
            region.add_mask(block, out)
        if slot.blocks:
            slot.last_center = slot.blocks[-1].center
        slot.blocks = []
        if self.max_moves is not None and region.moves > self.max_moves:
            slot.reason = "max_moves"
        elif self.remask_interval and region.moves >= slot.next_remask:
            slot.next_remask = region.moves + self.remask_interval
            if not region.remask():
                slot.reason = "seed_lost"
        return slot.reason


@dataclass
class BatchTimer:
    """Accumulated forward-pass statistics."""

    batches: int = 0
    fovs: int = 0
    wait_seconds: float = 0.0


def run_batch(predictor: Any, slots: list[Slot], timer: BatchTimer | None = None,
              buffer: BatchBuffer | None = None) -> Any:
    """Submit the blocks of ``slots`` as one batch; returns a handle for :func:`collect_batch`.

    With ``buffer`` (the blocks were read into its rows, in order), its first rows are
    submitted as they are; otherwise the blocks' arrays are passed as lists.
    """
    if buffer is not None:
        n = buffer.n
        buffer.n = 0
        if timer is not None:
            timer.batches += 1
            timer.fovs += n
        return predictor.submit(buffer.images[:n], buffer.masks[:n])
    blocks = [b for s in slots for b in s.blocks]
    if timer is not None:
        timer.batches += 1
        timer.fovs += len(blocks)
    # lists: the predictor stacks them straight into its (pinned) input buffers
    return predictor.submit([b.image for b in blocks], [b.mask for b in blocks])


def collect_batch(predictor: Any, handle: Any, slots: list[Slot], timer: BatchTimer | None = None
                  ) -> list[tuple[Slot, np.ndarray]]:
    """Wait for a batch and split its outputs back per slot."""
    t0 = time.perf_counter()
    outputs = predictor.result(handle)
    if timer is not None:
        timer.wait_seconds += time.perf_counter() - t0
    routed = []
    i = 0
    for s in slots:
        n = len(s.blocks)
        routed.append((s, outputs[i : i + n]))
        i += n
    return routed


def fill_regions(regions: Iterable[Region], predictor: Any, *, move_batch_size: int = 32, moves_per_step: int = 1,
                 max_moves: int | None = None, remask_interval: int | None = None,
                 stop_callback: Callable[[Region], bool] | None = None, callback_interval: int = 100,
                 on_done: Callable[[int, Region, str], None] | None = None) -> list[str]:
    """Fill independent regions, batching FOVs across regions.

    Up to ``move_batch_size // moves_per_step`` regions are active at a time; a
    finished region is replaced by the next one from ``regions``.

    Parameters
    ----------
    regions : iterable of Region
        Consumed lazily.
    predictor
        From :func:`~diluvian.fill.predict.make_predictor`.
    on_done : callable, optional
        ``on_done(index, region, reason)`` when a region stops.

    Returns
    -------
    list of str
        Stop reason per region, in input order.
    """
    from .predict import make_predictor

    predictor = make_predictor(predictor)
    stepper = RegionStepper(moves_per_step=moves_per_step, max_moves=max_moves, remask_interval=remask_interval,
                            stop_callback=stop_callback, callback_interval=callback_interval)
    capacity = max(1, move_batch_size // moves_per_step)
    source = enumerate(regions)
    reasons: dict[int, str] = {}
    active: list[Slot] = []
    exhausted = False

    def done(slot: Slot) -> None:
        reasons[slot.key] = slot.reason  # type: ignore[assignment]
        if on_done is not None:
            on_done(slot.key, slot.region, slot.reason)  # type: ignore[arg-type]

    while True:
        batch: list[Slot] = []
        i = 0
        while True:
            if i >= len(active):
                if exhausted or len(active) >= capacity:
                    break
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                active.append(stepper.slot(*nxt))
            slot = active[i]
            if stepper.begin(slot):
                batch.append(slot)
                i += 1
            else:
                done(slot)
                active.pop(i)
        if not batch:
            break
        for slot, outs in collect_batch(predictor, run_batch(predictor, batch), batch):
            if stepper.finish(slot, outs) is not None:
                done(slot)
                active.remove(slot)
    return [reasons[k] for k in sorted(reasons)]
