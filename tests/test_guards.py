"""Flood guards of the dense fill (diluvian.fill.guards)."""

from __future__ import annotations

import numpy as np

import conftest
import pytest

from diluvian.config import Config, ModelConfig, PostprocessingConfig
from diluvian.fill import fill_volume_with_model
from diluvian.fill.guards import leak_fraction, seed_piece

SHAPE = (10, 12, 40)


def cells_volume(shape=SHAPE, walls=(10, 20, 30), seed=0):
    return conftest.cells_volume(shape, walls, seed)


def cfg(guard_interval=4, **pp) -> Config:
    model = ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9), output_fov_move_fraction=2)
    pp.setdefault("membrane_fraction", 0.15)
    return Config(model=model, postprocessing=PostprocessingConfig(min_body_size=10, merge_overlap_fraction=0.0,
                                                                   guard_interval=guard_interval, claim=False, **pp))


def leaky(images, masks):
    """A model that has not learnt membranes: everything it sees is the object."""
    return np.full((len(images), 9, 9, 9), 0.95, np.float32)


def oracle(images, masks):
    """A model that knows the objects: bright voxels (the cells) are the object, membranes are not."""
    return np.where(images > 0.4, 0.95, 0.05).astype(np.float32)


SEEDS = np.array([[5, 6, 4], [5, 6, 15], [5, 6, 25], [5, 6, 35]])


def fill(config, predict, move_batch_size=4, seeds=SEEDS):
    return fill_volume_with_model(np.asarray(cells_volume()[0]), predict, config, seeds=seeds, ordered_seeds=True,
                                  move_batch_size=move_batch_size, rng=np.random.default_rng(0), progress=False)


def test_seed_piece_and_leak_fraction():
    image, gt = cells_volume()
    walls = gt == 0
    body = np.ones(SHAPE, bool)  # a body over all four cells
    piece = seed_piece(np.zeros(3, np.int64), body, np.array([5, 6, 4]), walls)
    assert piece[gt == 1].all() and not piece[gt == 2].any()
    assert leak_fraction(body, piece) == pytest.approx(1 - piece.sum() / body.sum())
    assert leak_fraction(body, piece) > 0.6
    inside = gt == 1
    assert leak_fraction(inside, seed_piece(np.zeros(3, np.int64), inside, np.array([5, 6, 4]), walls)) == 0
    assert seed_piece(np.zeros(3, np.int64), body, np.array([5, 6, 10]), walls) is None  # seed on a membrane


def test_guard_stops_a_flood():
    flood = fill(cfg(guard_interval=0), leaky)
    assert len(np.unique(flood.labels[flood.labels > 0])) == 1 and (flood.labels > 0).all()  # one body over all

    guarded = fill(cfg(), leaky)
    labels, gt = guarded.labels, cells_volume()[1]
    for cell in (1, 2, 3, 4):  # one body per cell, none across a membrane
        body = np.unique(labels[gt == cell])
        assert len(body) == 1 and body[0] > 0
    assert len(np.unique(labels[gt > 0])) == 4
    assert guarded.stats.bodies == 4 and flood.stats.bodies == 1
    assert guarded.stats.guard_trimmed >= 1 and flood.stats.guard_trimmed == 0
    assert "trimmed by the flood guards" in guarded.stats.summary()


def test_guard_leaves_a_normal_fill_alone():
    off, on = fill(cfg(guard_interval=0), oracle), fill(cfg(guard_interval=1), oracle)
    assert np.array_equal(off.labels, on.labels) and off.stats.moves == on.stats.moves
    assert on.stats.guard_trimmed == 0
    assert len(np.unique(on.labels[on.labels > 0])) == 4


@pytest.mark.parametrize("predict", [leaky, oracle])
def test_guarded_fill_batched_equals_one_at_a_time(predict):
    one, many = fill(cfg(), predict, move_batch_size=1), fill(cfg(), predict, move_batch_size=8)
    assert np.array_equal(one.labels, many.labels)


def test_guard_keys_are_checked():
    from diluvian.errors import ConfigError

    with pytest.raises(ConfigError, match="guard_max_leak"):
        PostprocessingConfig(guard_max_leak=1.5)
    with pytest.raises(ConfigError, match="guard_interval"):
        PostprocessingConfig(guard_interval=-1)
