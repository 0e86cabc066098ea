"""Fill engine internals: reflect reads, pooled mask windows, the batched (compiled) path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diluvian.config import Config, ModelConfig, PostprocessingConfig
from diluvian.fill import fill_volume_with_model
from diluvian.masks import MaskPool, window_shape_for
from diluvian.region import _read_box
from diluvian.synthetic import labelled_intensity_volume

from test_fill import make_oracle, small_cfg, voronoi_volume


def test_read_box_pads_like_numpy():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(800):
        shape = rng.integers(2, 10, 3)
        arr = rng.random(tuple(shape)).astype(np.float32)
        start = rng.integers(-12, 12, 3)
        stop = start + rng.integers(1, 20, 3)
        lo, hi = np.maximum(start, 0), np.minimum(stop, shape)
        if (hi <= lo).any():
            continue
        inner = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        widths = [(int(a), int(b)) for a, b in zip(lo - start, stop - hi)]
        mode = "reflect" if min(inner.shape) > 1 else "edge"  # reflect needs 2 voxels
        assert np.array_equal(_read_box(arr, start, stop, shape, "reflect"), np.pad(inner, widths, mode=mode))
        out = np.empty(tuple(stop - start), np.float32)
        got = _read_box(arr, start, stop, shape, 0.25, out=out)
        assert got is out and np.array_equal(out, np.pad(inner, widths, constant_values=0.25))
        checked += 1
    assert checked > 100


def test_window_mask_reads_nan_outside_and_spills_on_outside_writes():
    pool = MaskPool((20, 20, 20), (8, 8, 8), capacity=1, leaf_shape=(4, 4, 4))
    m = pool.acquire((10, 10, 10))
    assert m.origin.tolist() == [6, 6, 6]
    m[9:11, 9:11, 9:11] = 0.7
    assert np.isnan(m[0:2, 0:2, 0:2]).all() and (m[9:11, 9:11, 9:11] == 0.7).all()
    part = m[4:8, 9:10, 9:10].ravel()  # half outside the window
    assert np.isnan(part[:2]).all() and np.isnan(part[2]) and np.isnan(part[3])
    assert pool.acquire((0, 0, 0)).__class__.__name__ == "OctreeVolume"  # pool full: block-sparse
    m[0:1, 0:1, 0:1] = 0.2  # outside: spills, values kept
    assert m.spilled and pool.spills == 1
    assert m[0, 0, 0] == np.float32(0.2) and (m[9:11, 9:11, 9:11] == 0.7).all()
    again = pool.acquire((3, 3, 3))  # the window was given back, NaN again
    assert np.isnan(again[0:8, 0:8, 0:8]).all()


def test_a_window_moves_with_its_region_before_it_spills():
    pool = MaskPool((20, 20, 20), (8, 8, 8), capacity=1, leaf_shape=(4, 4, 4))
    m = pool.acquire((10, 10, 10))
    m[9:11, 9:11, 9:11] = 0.7
    m[4:6, 9:10, 12:13] = 0.3  # outside the window [6, 14); what was written and this fit in one window
    assert not m.spilled and pool.shifts == 1 and (m.origin <= [4, 9, 9]).all() and (m.end >= [11, 11, 13]).all()
    assert (m[9:11, 9:11, 9:11] == 0.7).all() and (m[4:6, 9:10, 12:13] == np.float32(0.3)).all()
    assert np.isnan(m[0:20, 0:20, 0:20]).sum() == 20 ** 3 - 8 - 2
    m[17:18, 17:18, 17:18] = 0.5  # too far: spills, values kept
    assert m.spilled and (m[9:11, 9:11, 9:11] == 0.7).all() and m[17, 17, 17] == np.float32(0.5)


def test_windows_are_nan_initialised_lazily_and_reset_where_written():
    pool = MaskPool((40, 40, 40), (20, 20, 20), capacity=1, leaf_shape=(4, 4, 4))
    pool.data[:] = 123.0  # stale memory: nothing of it may show through
    m = pool.acquire((20, 20, 20))
    m[19:21, 19:21, 19:21] = 0.7
    assert pool._ready[0] == [9, 0, 0, 11, 20, 20]  # only the planes used are initialised
    assert np.isnan(pool.data[0, :9]).sum() == 0
    assert np.isnan(m[10:30, 10:30, 10:30]).sum() == 20 ** 3 - 8  # grows plane by plane
    assert pool._ready[0] == [0, 0, 0, 20, 20, 20]
    m.prepare((25, 25, 25), (35, 35, 35))  # partly outside the window: the inside part
    m.release()
    again = pool.acquire((5, 30, 12))  # another origin, same window
    assert np.isnan(again[0:40, 0:40, 0:40]).sum() == 40 ** 3  # NaN everywhere, window or not
    again.prepare((0, 0, 0), (40, 40, 40))
    assert np.isnan(pool.data[0]).all()


def test_window_shape_fits_the_memory_budget():
    assert window_shape_for((10, 20, 30), (5, 5, 5), 4, 10**6) == (10, 20, 30)
    win = window_shape_for((200, 400, 400), (17, 17, 17), 32, 256 * 2**20)
    assert np.prod(win) * 4 * 32 <= 256 * 2**20 and all(w >= 51 for w in win)


@pytest.mark.parametrize("fov, out, bias", [(9, 9, True), (9, 5, True), (7, 7, False)])
def test_pool_and_octree_storage_give_the_same_segmentation(fov, out, bias):
    """The batched path (pool windows, compiled gather/apply) equals Region's own path."""
    model = ModelConfig(input_fov_shape=(fov,) * 3, output_fov_shape=(out,) * 3, output_fov_move_fraction=2)
    cfg = Config(model=model, postprocessing=PostprocessingConfig(min_body_size=5, merge_overlap_fraction=0.0))
    image, _ = voronoi_volume(shape=(20, 36, 36), n=9, seed=3)
    predict = make_oracle(model, noise=0.02)
    runs = {}
    for storage, memory in (("octree", 1024), ("pool", 1024), ("pool", 0.05)):  # 0.05 MB: small windows spill
        for batch, per_step in ((1, 1), (8, 1), (8, 4)):
            r = fill_volume_with_model(image, predict, cfg, move_batch_size=batch, moves_per_step=per_step,
                                       bias=bias, mask_storage=storage, mask_memory_mb=memory, progress=False,
                                       rng=np.random.default_rng(1))
            runs[storage, memory, batch, per_step] = r.labels
    for key, labels in runs.items():
        ref = runs["octree", 1024, key[2], key[3]]
        assert np.array_equal(labels, ref), key
    assert len(np.unique(runs["pool", 1024, 8, 1])) > 3


def test_lazy_image_takes_the_per_region_path_with_the_same_result(tmp_path):
    from diluvian.volumes import NdarrayVolume

    image, labels = labelled_intensity_volume((24, 40, 40), seed=2, resolution_nm=20.0)
    vol = NdarrayVolume("v", image, labels, resolution=(20, 20, 20))
    cfg = small_cfg()
    # the flood guards need the image in memory (they are off for a lazy one): compare without them
    cfg = dataclasses.replace(cfg, postprocessing=dataclasses.replace(cfg.postprocessing, guard_interval=0))
    predict = make_oracle(cfg.model)
    a = fill_volume_with_model(vol, predict, cfg, in_memory=True, progress=False)
    b = fill_volume_with_model(vol, predict, cfg, in_memory=False, progress=False)
    assert np.array_equal(a.labels, b.labels) and a.stats.bodies > 3


# --------------------------------------------------------------------------- [fill], checkpoints, batch


def test_fill_config_keys_and_keywords_override_in_that_order():
    from diluvian.fill.state import with_fill_options

    cfg = small_cfg()
    cfg = dataclasses.replace(cfg, fill=dataclasses.replace(cfg.fill, seed_generator="grid", max_moves=7))
    assert with_fill_options(cfg, max_moves=None).fill.max_moves == 7  # None: the config's value
    assert with_fill_options(cfg, max_moves=3).fill == dataclasses.replace(cfg.fill, max_moves=3)
    image, _ = voronoi_volume()
    a = fill_volume_with_model(image, make_oracle(cfg.model), cfg, progress=False)
    b = fill_volume_with_model(image, make_oracle(cfg.model), small_cfg(), seed_generator="grid", max_moves=7,
                               progress=False)
    assert np.array_equal(a.labels, b.labels) and a.state.options["seed_generator"] == "grid"


def test_checkpoint_holds_every_result_option_and_a_changed_one_is_refused(tmp_path):
    from diluvian.errors import DataError
    from diluvian.fill.output import Checkpointer, load_resume

    cfg = small_cfg()
    image, _ = voronoi_volume(seed=4)
    oracle = make_oracle(cfg.model)
    ckpt = Checkpointer(tmp_path / "seg", (10, 10, 10), "array")

    class Stop(Exception):
        pass

    def stop_after_first(state, labels, conflicts):
        ckpt(state, labels, conflicts)
        raise Stop

    with pytest.raises(Stop):
        fill_volume_with_model(image, oracle, cfg, move_batch_size=4, checkpoint=stop_after_first,
                               checkpoint_interval=1, progress=False)
    state, labels, conflicts, _ = load_resume(ckpt.toml_path)
    for key in ("t_move", "t_final", "move_priority", "move_recheck", "output_fov_move_fraction", "min_body_size"):
        assert key in state.options, key
    changed = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, t_move=0.8))
    with pytest.raises(DataError, match=r"t_move = 0\.8 \(checkpoint: 0\.9\)"):
        fill_volume_with_model(image, oracle, changed, resume_state=state, resume_labels=labels, progress=False)
    with pytest.raises(DataError, match="max_moves"):
        fill_volume_with_model(image, oracle, cfg, resume_state=state, resume_labels=labels, max_moves=5,
                               progress=False)
    # the same options (another batch size, which does not change the result) resume
    fill_volume_with_model(image, oracle, cfg, resume_state=state, resume_labels=labels, resume_conflicts=conflicts,
                           move_batch_size=2, progress=False)


def test_checkpoints_come_by_time_too(monkeypatch):
    import diluvian.fill.dense as dense

    clock = {"t": 0.0}
    monkeypatch.setattr(dense.time, "perf_counter", lambda: clock.__setitem__("t", clock["t"] + 1.0) or clock["t"])
    cfg = small_cfg()
    image, _ = voronoi_volume(seed=4)
    saved = []
    r = fill_volume_with_model(image, make_oracle(cfg.model), cfg, move_batch_size=4, progress=False,
                               checkpoint=lambda state, labels, conflicts: saved.append(state.next_seed),
                               checkpoint_interval=0, checkpoint_minutes=1.0)
    assert r.stats.bodies > 1 and len(saved) >= 2  # 1 "second" per clock read: a minute passes many times
    assert saved == sorted(saved)


def test_fill_batch_keeps_batches_fuller_with_the_same_segmentation():
    cfg = small_cfg()
    image, _ = voronoi_volume(shape=(20, 36, 36), n=9, seed=3)
    predict = make_oracle(cfg.model, noise=0.02)
    plain = fill_volume_with_model(image, predict, cfg, move_batch_size=16, progress=False)
    full = fill_volume_with_model(image, predict, cfg, move_batch_size=16, fill_batch=True, progress=False)
    one = fill_volume_with_model(image, predict, cfg, move_batch_size=1, progress=False)
    assert np.array_equal(full.labels, plain.labels) and np.array_equal(full.labels, one.labels)
    assert full.stats.mean_batch > plain.stats.mean_batch


def test_fill_box_labels_start_at_the_offset():
    from diluvian.fill import fill_box

    cfg = small_cfg()
    image, _ = voronoi_volume(shape=(20, 36, 36), n=9, seed=3)
    predict = make_oracle(cfg.model)
    box = ((2, 4, 4), (18, 30, 34))
    plain = fill_box(image, predict, cfg, box)
    shifted = fill_box(image, predict, cfg, box, label_offset=1000)
    assert plain.labels.shape == (16, 26, 30)
    ids = np.unique(shifted.labels)
    assert ids[0] == 0 and ids[1] == 1001 and len(ids) == len(np.unique(plain.labels))
    assert np.array_equal(np.where(plain.labels > 0, plain.labels + 1000, 0), shifted.labels)


class _OracleNet:
    """The oracle of ``make_oracle`` as a torch module (logits), so the fill can keep its pool on its device."""

    def __new__(cls, model_cfg, noise=0.02):
        import torch

        out = list(model_cfg.output_fov_shape)
        lo = [(i - o) // 2 for i, o in zip(model_cfg.input_fov_shape, out)]

        class Net(torch.nn.Module):
            def forward(self, image, mask):
                n = image.shape[0]
                ref = image.reshape(n, -1).gather(1, mask.reshape(n, -1).argmax(1, keepdim=True))
                crop = image[:, :, lo[0]:lo[0] + out[0], lo[1]:lo[1] + out[1], lo[2]:lo[2] + out[2]]
                p = torch.where((crop - ref.reshape(n, 1, 1, 1, 1)).abs() < 1e-4, 0.95, 0.05)
                wobble = torch.sin(crop * 9173.1 + torch.arange(crop[0].numel()).reshape(crop.shape[1:]) * 0.61)
                p = (p + noise * wobble).clamp(0.01, 0.99)
                return torch.log(p / (1 - p))

        return Net()


def test_device_pool_gives_the_host_pools_segmentation():
    """[fill] mask_device = "model" (the pool and gather/apply in torch, here on the CPU) equals the host path."""
    from diluvian.predict import TorchPredictor

    model = ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(5, 5, 5), output_fov_move_fraction=2)
    cfg = Config(model=model, postprocessing=PostprocessingConfig(min_body_size=5, merge_overlap_fraction=0.0))
    image, _ = voronoi_volume(shape=(14, 26, 26), n=6, seed=3)
    predictor = TorchPredictor(_OracleNet(model), device="cpu", autocast=False)
    runs = {}
    for where, memory, per_step in (("host", 1024, 2), ("model", 1024, 2), ("model", 0.05, 2)):  # 0.05: spills
        r = fill_volume_with_model(image, predictor, cfg, move_batch_size=16, moves_per_step=per_step,
                                   mask_device=where, mask_memory_mb=memory, progress=False,
                                   rng=np.random.default_rng(1))
        runs[where, memory] = r.labels
    assert len(np.unique(runs["host", 1024])) > 3
    for key, labels in runs.items():
        assert np.array_equal(labels, runs["host", 1024]), key


def test_moves_per_step_grow_with_a_regions_own_moves():
    from diluvian.stepper import RegionStepper

    class R:
        moves = 0

    stepper = RegionStepper(moves_per_step=2, moves_per_step_growth=10, max_moves_per_step=6)
    got = []
    for m in (0, 9, 10, 25, 39, 40, 1000):
        R.moves = m
        got.append(stepper.moves_for(R))
    assert got == [2, 2, 3, 4, 5, 6, 6]
    assert RegionStepper(moves_per_step=3).moves_for(R) == 3  # no growth: always moves_per_step


def test_growing_moves_per_step_fill_the_batch_with_a_result_free_of_scheduling(tmp_path):
    """moves_per_step_growth: fuller batches; the result does not depend on the batch's other regions,
    on the storage or on a resume (a region's moves per step are a function of its own moves)."""
    from diluvian.fill.output import Checkpointer, load_resume

    cfg = small_cfg()
    cfg = dataclasses.replace(cfg, fill=dataclasses.replace(cfg.fill, moves_per_step_growth=3, moves_per_step_max=8))
    image, _ = voronoi_volume(shape=(20, 36, 36), n=9, seed=3)
    predict = make_oracle(cfg.model, noise=0.02)
    runs = {}
    for storage, fill_batch in (("pool", False), ("octree", False), ("pool", True)):
        runs[storage, fill_batch] = fill_volume_with_model(image, predict, cfg, move_batch_size=16, fill_batch=fill_batch,
                                                           mask_storage=storage, progress=False)
    ref = runs["pool", False]
    assert len(np.unique(ref.labels)) > 3
    for key, r in runs.items():
        assert np.array_equal(r.labels, ref.labels), key
    plain = fill_volume_with_model(image, predict, small_cfg(), move_batch_size=16, progress=False)
    assert ref.stats.mean_batch > plain.stats.mean_batch and ref.stats.batches < plain.stats.batches

    ckpt = Checkpointer(tmp_path / "seg", image.shape, "array")

    class Stop(Exception):
        pass

    def stop_after_two(state, labels, conflicts):
        ckpt(state, labels, conflicts)
        if state.next_label > 2:
            raise Stop

    with pytest.raises(Stop):
        fill_volume_with_model(image, predict, cfg, move_batch_size=16, checkpoint=stop_after_two,
                               checkpoint_interval=1, progress=False)
    state, labels, conflicts, _ = load_resume(ckpt.toml_path)
    assert state.options["moves_per_step_growth"] == 3 and 0 < state.next_seed < len(state.seeds)
    resumed = fill_volume_with_model(image, predict, cfg, resume_state=state, resume_labels=labels,
                                     resume_conflicts=conflicts, move_batch_size=8, progress=False)
    assert np.array_equal(resumed.labels, ref.labels)  # another batch: the same (moves_per_step_max fits both)
    from diluvian.errors import DataError

    with pytest.raises(DataError, match="moves_per_step_max: expected at most the batch"):
        fill_volume_with_model(image, predict, cfg, move_batch_size=4, progress=False)
