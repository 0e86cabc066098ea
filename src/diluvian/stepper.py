"""The one stepper: regions advance in steps, one batched forward pass per step.

Every fill steps regions through :class:`RegionStepper`: the dense fill
(:class:`~diluvian.fill.dense.DenseFiller`), single-object and sparse fills and
validation during training (:func:`fill_regions`). At each step a region takes up
to ``moves_per_step`` blocks (none left: "done"), runs the stop callback every
``callback_interval`` moves, and after the forward pass its outputs are applied
(``add_mask``, or for a whole batch :func:`apply_batch`), then ``max_moves`` and
remask are checked. Only the batching of the predictions differs between callers,
so a region's result does not depend on which other regions share its batches (up
to the network's own batch-size dependence of floating point results).

A region alone with ``moves_per_step = k`` is the original diluvian's fill of one
object with ``move_batch_size = k``. With ``moves_per_step_growth = g`` a region takes
one more move per step for every ``g`` moves it has made (up to the batch): a large
object that fills alone still fills the batch. The number of moves a region takes in a
step depends only on its own move count, so its result still does not depend on the
other regions, on the machine's speed or on a resume; a region whose moves do not fit
in the rest of a batch waits for the next one (it is never given fewer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .arrays import large_empty
from .errors import DataError
from .masks import MaskPool, WindowMask
from .region import Block, Region


class BatchBuffer:
    """Preallocated input rows of one batch: regions write their FOVs straight into them.

    FOVs of regions whose mask is a window of ``pool`` and whose image is ``image``
    are not read one by one: their rows are noted and read for the whole batch by
    :func:`diluvian.batchops.gather` in :meth:`flush`.

    Parameters
    ----------
    rows : int
        FOVs per batch.
    fov_shape : 3 ints
        Input FOV shape.
    image : ndarray of float32, optional
        The box being filled, when it is in memory (enables the batched path).
    pool : MaskPool, optional
        The mask windows of the regions (enables the batched path).
    v_false : float
        Value of mask voxels not predicted yet.

    Notes
    -----
    With a pool on a torch device (:attr:`on_device`), the box image is copied there
    once and the batch's rows are device tensors: batched FOVs are gathered there,
    the rows of other regions are read on the host and copied in (:meth:`inputs`).
    """

    def __init__(self, rows: int, fov_shape: Sequence[int], image: np.ndarray | None = None,
                 pool: MaskPool | None = None, v_false: float = 0.05) -> None:
        shape = (int(rows), *(int(s) for s in fov_shape))
        self.images = large_empty(shape, np.float32)
        self.masks = large_empty(shape, np.float32)
        self.n = 0
        self.image = image if isinstance(image, np.ndarray) and image.dtype == np.float32 else None
        self.pool = pool if self.image is not None else None
        self.v_false = np.float32(v_false)
        self.on_device = self.pool is not None and self.pool.device is not None
        if self.on_device:
            import torch

            dev = self.pool.device
            self.image_t = torch.from_numpy(self.image).to(dev)
            self.dev_images = torch.empty(shape, dtype=torch.float32, device=dev)
            self.dev_masks = torch.empty(shape, dtype=torch.float32, device=dev)
        self._n_flushed = 0
        self._rows: list[int] = []
        self._slots: list[int] = []
        self._origins: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.images)

    def batched(self, region: Region) -> bool:
        """Whether ``region``'s FOVs and updates can take the batched path."""
        mask = region.mask
        return (self.pool is not None and isinstance(mask, WindowMask) and mask.pool is self.pool
                and not mask.spilled and region.image is self.image)

    def read(self, region: Region) -> Block | None:
        """The region's next block, its FOV in the next free row (or noted for :meth:`flush`)."""
        row = self.n
        if self.batched(region):
            move = region.next_move()
            if move is None:
                return None
            pos, center = move
            c, reach = center.tolist(), region.reach
            region.mask.prepare((c[0] - reach[0], c[1] - reach[1], c[2] - reach[2]),
                                (c[0] + reach[0] + 1, c[1] + reach[1] + 1, c[2] + reach[2] + 1))
            self._rows.append(row)
            self._slots.append(region.mask.slot)
            self._origins.append(region.mask.origin)
            self._starts.append(center - region.input_radius)
            block = Block(position=pos, center=center, image=self.images[row], mask=self.masks[row], row=row)
        else:
            block = region.get_next_block(self.images[row], self.masks[row])
            if block is None:
                return None
            block.row = row
        self.n += 1
        return block

    def rewind(self, n: int) -> None:
        """Give back the rows from ``n`` on (blocks that will not be submitted)."""
        self.n = n
        while self._rows and self._rows[-1] >= n:
            for lst in (self._rows, self._slots, self._origins, self._starts):
                lst.pop()

    def flush(self) -> int:
        """Read the noted FOVs; returns the number of rows of the batch (and empties the buffer)."""
        if self.on_device:
            return self._flush_device()
        if self._rows:
            from .batchops import gather

            rows = np.asarray(self._rows, dtype=np.int64)
            n0, n1 = int(rows[0]), int(rows[-1]) + 1
            if n1 - n0 == len(rows):  # contiguous rows: write in place
                gather(self.image, self.pool.data, np.asarray(self._slots, dtype=np.int64),
                       np.asarray(self._origins, dtype=np.int64), np.asarray(self._starts, dtype=np.int64),
                       self.v_false, self.images[n0:n1], self.masks[n0:n1])
            else:
                img = np.empty((len(rows), *self.images.shape[1:]), dtype=np.float32)
                msk = np.empty_like(img)
                gather(self.image, self.pool.data, np.asarray(self._slots, dtype=np.int64),
                       np.asarray(self._origins, dtype=np.int64), np.asarray(self._starts, dtype=np.int64),
                       self.v_false, img, msk)
                self.images[rows] = img
                self.masks[rows] = msk
            for lst in (self._rows, self._slots, self._origins, self._starts):
                lst.clear()
        n, self.n = self.n, 0
        self._n_flushed = n
        return n

    def _flush_device(self) -> int:
        import torch

        from .batchops import gather_torch

        n, self.n = self.n, 0
        self._n_flushed = n
        batched = set(self._rows)
        host_rows = [r for r in range(n) if r not in batched]
        if host_rows:  # regions off the batched path read their FOVs on the host
            idx = self.pool.upload(np.asarray(host_rows, dtype=np.int64))
            self.dev_images[idx] = torch.from_numpy(self.images[host_rows]).to(self.pool.device)
            self.dev_masks[idx] = torch.from_numpy(self.masks[host_rows]).to(self.pool.device)
        if self._rows:
            rows = np.asarray(self._rows, dtype=np.int64)
            args = (self.image_t, self.pool.data, np.asarray(self._slots, dtype=np.int64),
                    np.asarray(self._origins, dtype=np.int64), np.asarray(self._starts, dtype=np.int64),
                    float(self.v_false))
            up = self.pool.upload
            n0, n1 = int(rows[0]), int(rows[-1]) + 1
            if n1 - n0 == len(rows):
                gather_torch(*args, self.dev_images[n0:n1], self.dev_masks[n0:n1], upload=up)
            else:
                img = torch.empty((len(rows), *self.dev_images.shape[1:]), device=self.pool.device)
                msk = torch.empty_like(img)
                gather_torch(*args, img, msk, upload=up)
                idx = up(rows)
                self.dev_images[idx] = img
                self.dev_masks[idx] = msk
            for lst in (self._rows, self._slots, self._origins, self._starts):
                lst.clear()
        return n

    def inputs(self, n: int) -> tuple[Any, Any]:
        """The batch's first ``n`` rows, images and masks, where the predictor takes them."""
        if self.on_device:
            return self.dev_images[:n], self.dev_masks[:n]
        return self.images[:n], self.masks[:n]


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
        Blocks one region contributes per step (1: one move at a time, exactly).
    moves_per_step_growth : int
        A region takes one more block per step for every this many moves it has made;
        0: always ``moves_per_step``.
    max_moves_per_step : int, optional
        Upper bound of the blocks per step (the batch size).
    max_moves : int, optional
        Stop once more than this many moves were made ("max_moves").
    remask_interval : int, optional
        Every this many moves, keep only the seed-connected component (:meth:`Region.remask`;
        "seed_lost" when the seed fell out of it).
    stop_callback : callable, optional
        ``stop_callback(region) -> bool`` every ``callback_interval`` moves; True stops ("callback").
    """

    def __init__(self, *, moves_per_step: int = 1, max_moves: int | None = None,
                 remask_interval: int | None = None,
                 stop_callback: Callable[[Region], bool] | None = None, callback_interval: int = 100,
                 moves_per_step_growth: int = 0, max_moves_per_step: int | None = None) -> None:
        if moves_per_step < 1:
            raise DataError(f"moves_per_step: expected an int >= 1, got {moves_per_step}")
        if moves_per_step_growth < 0:
            raise DataError(f"moves_per_step_growth: expected an int >= 0, got {moves_per_step_growth}")
        self.moves_per_step = moves_per_step
        self.growth = int(moves_per_step_growth)
        self.max_per_step = max(moves_per_step, int(max_moves_per_step or moves_per_step))
        self.max_moves = max_moves
        self.remask_interval = remask_interval
        self.stop_callback = stop_callback
        self.callback_interval = callback_interval

    def moves_for(self, region: Region) -> int:
        """Blocks ``region`` takes in its next step (a function of its own move count only)."""
        if not self.growth:
            return self.moves_per_step
        return min(self.max_per_step, self.moves_per_step + region.moves // self.growth)

    def slot(self, key: Any, region: Region) -> Slot:
        return Slot(key, region, next_check=self.callback_interval, next_remask=self.remask_interval or 0)

    def begin(self, slot: Slot, buffer: BatchBuffer | None = None) -> list[Block]:
        """Collect the slot's next blocks; on an empty list ``slot.reason`` says why it stopped.

        With ``buffer``, the blocks' FOVs are written into its next free rows.
        """
        region = slot.region
        blocks = []
        first = buffer.n if buffer is not None else 0
        want = self.moves_for(region)
        while len(blocks) < want:
            if buffer is not None:
                if buffer.n >= len(buffer):
                    break
                block = buffer.read(region)
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
                    buffer.rewind(first)  # give the rows back
                return []
        slot.blocks = blocks
        return blocks

    def finish(self, slot: Slot, outputs: Sequence[np.ndarray] | None) -> str | None:
        """Apply the predictions of the slot's blocks; return the stop reason, if any.

        ``outputs`` None: they were applied already (:func:`apply_batch`).
        """
        region = slot.region
        if outputs is not None:
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


def apply_batch(slots: Sequence[Slot], outputs: Any, buffer: BatchBuffer) -> None:
    """Apply a batch's outputs (rows as in ``buffer``) to the regions of ``slots``.

    Regions on the batched path (see :meth:`BatchBuffer.batched`) whose writes stay
    inside their windows are updated together by :func:`diluvian.batchops.apply`
    (or :func:`~diluvian.batchops.apply_torch` when the pool and ``outputs`` are on a
    torch device), in batch order; the others one block at a time by
    :meth:`Region.add_mask` (a write outside a window spills it). Revoked slots
    (region None) are skipped.
    """
    fast_regions: list[Region] = []
    fast_blocks: list[Block] = []
    slow: list[tuple[Region, Block]] = []
    for slot in slots:
        region = slot.region
        if region is None or not slot.blocks:
            continue
        if buffer.batched(region):
            mask = region.mask
            r, shape = region.output_radius, region.shape
            centers = np.array([b.center for b in slot.blocks])
            lo = np.maximum(centers - r, 0)
            hi = np.minimum(centers + r + 1, shape)
            if (lo >= mask.origin).all() and (hi <= mask.end).all():
                fast_regions.extend([region] * len(slot.blocks))
                fast_blocks.extend(slot.blocks)
                continue
        slow.extend((region, block) for block in slot.blocks)
    if slow:
        part, where = outputs, None
        if not isinstance(outputs, np.ndarray):  # a device tensor: one copy of the rows needed
            rows = sorted({b.row for _, b in slow})
            where = {r: i for i, r in enumerate(rows)}
            part = outputs[rows].cpu().numpy()
        for region, block in slow:
            region.add_mask(block, part[block.row if where is None else where[block.row]])
    if not fast_blocks:
        return
    first = fast_regions[0]
    n = len(fast_blocks)
    args = (np.array([r.mask.slot for r in fast_regions], dtype=np.int64),
            np.array([r.mask.origin for r in fast_regions], dtype=np.int64),
            np.array([b.center for b in fast_blocks], dtype=np.int64), outputs,
            np.array([b.row for b in fast_blocks], dtype=np.int64), np.asarray(first.shape, dtype=np.int64),
            first.output_radius, first.move_step, int(first.check_t), bool(first.bias_against_merge))
    if isinstance(outputs, np.ndarray):
        from .batchops import apply

        faces = np.empty((n, 6), dtype=np.float32)
        written = np.empty((n, 6), dtype=np.int64)
        apply(buffer.pool.data, *args, faces, written)
    else:
        from .batchops import apply_torch

        faces, written = apply_torch(buffer.pool.data, buffer.pool.trash, *args, upload=buffer.pool.upload)
    face_rows = faces.tolist()
    for i, (region, block) in enumerate(zip(fast_regions, fast_blocks)):
        lo, hi = written[i, :3], written[i, 3:]
        region.mask.note_written(lo, hi)
        region.record_move(block.position, lo, hi, face_rows[i])


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
        n = buffer.flush()
        if timer is not None:
            timer.batches += 1
            timer.fovs += n
        if buffer.on_device:
            return predictor.submit_device(*buffer.inputs(n))
        return predictor.submit(*buffer.inputs(n))
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
                 moves_per_step_growth: int = 0, moves_per_step_max: int | None = None,
                 max_moves: int | None = None, remask_interval: int | None = None,
                 stop_callback: Callable[[Region], bool] | None = None, callback_interval: int = 100,
                 on_done: Callable[[int, Region, str], None] | None = None,
                 on_batch: Callable[[list[Block]], None] | None = None) -> list[str]:
    """Fill independent regions, batching FOVs across regions.

    Up to ``move_batch_size // moves_per_step`` regions are active at a time; a
    finished region is replaced by the next one from ``regions``.

    Parameters
    ----------
    regions : iterable of Region
        Consumed lazily.
    predictor
        From :func:`~diluvian.predict.make_predictor`.
    on_done : callable, optional
        ``on_done(index, region, reason)`` when a region stops.
    on_batch : callable, optional
        ``on_batch(blocks)`` after each forward pass, with the batch's blocks in order
        (validation scores the network's outputs against their targets here).

    Returns
    -------
    list of str
        Stop reason per region, in input order.
    """
    from .predict import make_predictor

    predictor = make_predictor(predictor)
    capacity = max(1, move_batch_size // moves_per_step)
    rows = capacity * moves_per_step  # a batch's FOVs; a region never takes more per step
    stepper = RegionStepper(moves_per_step=moves_per_step, max_moves=max_moves, remask_interval=remask_interval,
                            stop_callback=stop_callback, callback_interval=callback_interval,
                            moves_per_step_growth=moves_per_step_growth,
                            max_moves_per_step=min(rows, moves_per_step_max or rows))
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
        i = used = 0
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
            if batch and used + stepper.moves_for(slot.region) > rows:
                active[:] = active[i:] + active[:i]  # the regions left out go first next time
                break
            if stepper.begin(slot):
                batch.append(slot)
                used += len(slot.blocks)
                i += 1
            else:
                done(slot)
                active.pop(i)
        if not batch:
            break
        routed = collect_batch(predictor, run_batch(predictor, batch), batch)
        if on_batch is not None:
            on_batch([b for s in batch for b in s.blocks])
        for slot, outs in routed:
            if stepper.finish(slot, outs) is not None:
                done(slot)
                active.remove(slot)
    return [reasons[k] for k in sorted(reasons)]
