"""Region: move lattice, queue, mask update, moves, remask, bodies."""


import numpy as np
import pytest

from diluvian.config import ModelConfig
from diluvian.stepper import fill_regions
from diluvian.region import Region


def small_cfg(**kw) -> ModelConfig:
    base = dict(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9), output_fov_move_fraction=4)
    base.update(kw)
    return ModelConfig(**base)


def ball(shape, center, radius):
    zz, yy, xx = np.indices(shape)
    return (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2 <= radius**2


def oracle(target, cfg):
    """A predictor that knows the ground truth: v_true inside the object, v_false outside."""

    def predict_blocks(region, blocks):
        outs = []
        for b in blocks:
            outs.append(b.target.copy())
        return outs

    return predict_blocks


def run_oracle(region):
    while True:
        block = region.get_next_block()
        if block is None:
            return
        region.add_mask(block, block.target)


def test_move_step_and_lattice_aligned_to_seed():
    cfg = small_cfg()
    assert cfg.move_step == (2, 2, 2)
    image = np.zeros((20, 20, 20), np.float32)
    region = Region(image, cfg, (10, 9, 11))
    np.testing.assert_array_equal(region.offset, [0, 1, 1])
    np.testing.assert_array_equal(region.position_center(region.seed_pos), [10, 9, 11])
    # no padding: every input FOV inside the image
    lo = region.position_center(region.pos_min) - 4
    hi = region.position_center(region.pos_max) + 4
    assert (lo >= 0).all() and (hi <= 19).all()
    assert ((region.position_center(region.pos_min) - 2) < 4).any()


def test_first_block_is_seed_fov():
    cfg = small_cfg()
    image = np.random.default_rng(0).random((20, 20, 20), dtype=np.float32)
    region = Region(image, cfg, (10, 10, 10))
    block = region.get_next_block()
    assert block.position == region.seed_pos
    np.testing.assert_array_equal(block.image, image[6:15, 6:15, 6:15])
    assert block.mask[4, 4, 4] == pytest.approx(cfg.v_true)
    assert np.count_nonzero(block.mask == np.float32(cfg.v_false)) == 9**3 - 1
    assert region.get_next_block() is None


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("direction", [-1, 1])
def test_moves_follow_face_maxima(axis, direction):
    cfg = small_cfg()
    image = np.zeros((30, 30, 30), np.float32)
    region = Region(image, cfg, (15, 15, 15))
    block = region.get_next_block()
    out = np.full((9, 9, 9), 0.05, np.float32)
    idx = [4, 4, 4]
    idx[axis] += direction * 2  # on the check plane
    other = (axis + 1) % 3
    idx[other] += 1  # off-centre, inside the plane's ±step window
    out[tuple(idx)] = 0.95
    region.add_mask(block, out)
    assert len(region.queue) == 1
    expected = list(region.seed_pos)
    expected[axis] += direction
    assert region.queue[0][2] == tuple(expected)


def test_move_check_thickness_2_sees_beyond_plane():
    cfg = small_cfg(move_check_thickness=2)
    region = Region(np.zeros((30, 30, 30), np.float32), cfg, (15, 15, 15))
    block = region.get_next_block()
    out = np.full((9, 9, 9), 0.05, np.float32)
    out[4, 4, 7] = 0.95  # step 2 + 1
    region.add_mask(block, out)
    assert [q[2] for q in region.queue] == [(7, 7, 8)]


def test_oracle_fill_covers_object():
    cfg = small_cfg()
    shape = (40, 40, 40)
    target = ball(shape, (20, 20, 20), 12)
    region = Region(np.zeros(shape, np.float32), cfg, (20, 20, 20), target=target)
    run_oracle(region)
    start, body = region.to_body()
    full = np.zeros(shape, bool)
    full[tuple(slice(a, a + n) for a, n in zip(start, body.shape))] = body
    assert (full <= target).all()  # no voxel outside the object
    assert full.sum() / target.sum() > 0.95
    f = region.prediction_metric(lambda t, p: float((t & p).sum() * 2 / (t.sum() + p.sum())))
    assert f > 0.95


def test_reflect_padding_allows_border_seeds_and_octree_like_storage():
    cfg = small_cfg()
    shape = (20, 20, 20)
    target = ball(shape, (0, 0, 0), 8)
    region = Region(np.zeros(shape, np.float32), cfg, (0, 1, 0), target=target, block_padding="reflect")
    run_oracle(region)
    body = region.to_body()
    assert body is not None
    assert body[1].sum() > 0.9 * target.sum()


def test_anti_merge_bias_only_lowers_low_values():
    cfg = small_cfg()
    region = Region(np.zeros((20, 20, 20), np.float32), cfg, (10, 10, 10), bias_against_merge=True)
    block = region.get_next_block()
    low = np.full((9, 9, 9), 0.3, np.float32)
    region.add_mask(block, low)
    high = np.full((9, 9, 9), 0.9, np.float32)
    region.add_mask(block, high)
    assert np.nanmax(region.get_mask()) == pytest.approx(0.3)
    lower = np.full((9, 9, 9), 0.1, np.float32)
    region.add_mask(block, lower)
    assert np.nanmax(region.get_mask()) == pytest.approx(0.1)


def test_no_bias_overwrites():
    cfg = small_cfg()
    region = Region(np.zeros((20, 20, 20), np.float32), cfg, (10, 10, 10))
    block = region.get_next_block()
    region.add_mask(block, np.full((9, 9, 9), 0.3, np.float32))
    region.add_mask(block, np.full((9, 9, 9), 0.9, np.float32))
    assert np.nanmin(region.get_mask()) == pytest.approx(0.9)


def test_recheck_drops_stale_moves():
    cfg = small_cfg()
    region = Region(np.zeros((30, 30, 30), np.float32), cfg, (15, 15, 15))
    block = region.get_next_block()
    out = np.full((9, 9, 9), 0.95, np.float32)
    region.add_mask(block, out)
    assert len(region.queue) == 6
    # the region around the queued moves is overwritten with low values
    region.mask[:] = 0.05
    assert region.get_next_block() is None
    assert region.visited == {region.seed_pos}


def test_remask_keeps_seed_component_and_caps_the_rest():
    cfg = small_cfg()
    region = Region(np.zeros((20, 20, 20), np.float32), cfg, (5, 5, 5))
    region.mask[3:8, 3:8, 3:8] = 0.99
    region.mask[12:15, 12:15, 12:15] = 0.99  # disconnected
    region.touched_min[:] = 0
    region.touched_max[:] = 20
    assert region.remask()
    assert np.nanmax(region.mask[12:15, 12:15, 12:15]) < cfg.t_move
    assert region.mask[5, 5, 5] == pytest.approx(0.99)
    region.mask[5, 5, 5] = 0.1
    assert not region.remask()


def test_fill_with_batched_predict_and_max_moves():
    cfg = small_cfg()
    shape = (40, 40, 40)
    target = ball(shape, (20, 20, 20), 14)
    calls = []

    def make_predict(region):
        def predict(images, masks):
            calls.append(len(images))
            # reproduce the oracle from the image, which holds the target
            return images.copy()[:, :, :, :]

        return predict

    image = np.where(target, 0.95, 0.05).astype(np.float32)
    region = Region(image, cfg, (20, 20, 20), target=target)
    assert fill_regions([region], make_predict(region), move_batch_size=4, moves_per_step=4) == ["done"]
    assert max(calls) <= 4 and max(calls) > 1
    region2 = Region(image, cfg, (20, 20, 20), target=target)
    assert fill_regions([region2], make_predict(region2), move_batch_size=1, max_moves=5) == ["max_moves"]
    assert region2.moves == 6


def test_stop_callback():
    cfg = small_cfg()
    shape = (40, 40, 40)
    image = np.full(shape, 0.95, np.float32)
    region = Region(image, cfg, (20, 20, 20))
    reason, = fill_regions([region], lambda im, m: im, move_batch_size=2, moves_per_step=2,
                           stop_callback=lambda r: True, callback_interval=3)
    assert reason == "callback"
    assert 3 <= region.moves < 8


def test_fov_must_fit_without_padding():
    with pytest.raises(ValueError, match="does not fit"):
        Region(np.zeros((5, 20, 20), np.float32), small_cfg(), (2, 10, 10))
