"""Seed generators: sobel and membrane (cell interiors) and grid."""

import numpy as np
import pytest

from diluvian.config import ModelConfig
from diluvian.errors import ConfigError, DataError
from diluvian.seeds import SEED_GENERATORS, generate_seeds, gradient_magnitude, grid, membrane, sobel, suppress_close


def two_cells(shape=(24, 40, 40), wall=(19, 21)):
    """Bright space split by a dark membrane across X at x in [wall)."""
    img = np.full(shape, 0.8, np.float32)
    img[:, :, wall[0]:wall[1]] = 0.1
    return img


def test_grid_lattice_of_move_step():
    cfg = ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9))  # step 2
    seeds = grid(np.zeros((5, 6, 3), np.float32), (1, 1, 1), cfg)
    assert cfg.move_step == (2, 2, 2)
    expected = [[z, y, x] for z in (2, 4) for y in (2, 4) for x in (2,)]
    assert seeds.tolist() == expected
    assert seeds.dtype == np.int64


def test_grid_spacing_and_empty():
    cfg = ModelConfig()
    assert grid(np.zeros((8, 8, 8)), (1, 1, 1), cfg).shape == (0, 3)
    assert grid(np.zeros((20, 40, 40)), (1, 1, 1), cfg, spacing=2).tolist() == [[16, 16, 16], [16, 16, 32], [16, 32, 16], [16, 32, 32]]
    with pytest.raises(ConfigError, match="spacing"):
        grid(np.zeros((40, 40, 40)), (1, 1, 1), cfg, spacing=0)


def test_gradient_magnitude_is_per_nm_and_symmetric():
    ramp = np.tile(np.arange(20, dtype=np.float32)[None, None, :], (6, 6, 1)) * 0.01
    g = gradient_magnitude(ramp, (10, 10, 10), size_nm=20)
    # 0.01 per voxel = 0.001 per nm, away from the borders
    np.testing.assert_allclose(g[3, 3, 5:15], 0.001, rtol=1e-5)
    # a mirrored image gives a mirrored gradient (odd, centred windows)
    sym = np.zeros((4, 4, 21), np.float32)
    sym[..., 8:13] = 1
    gs = gradient_magnitude(sym, (16, 16, 16), size_nm=24)
    np.testing.assert_allclose(gs, gs[..., ::-1], atol=1e-7)


def test_sobel_seeds_in_cell_interiors_3d():
    img = two_cells()
    seeds = sobel(img, (10, 10, 10))
    assert len(seeds) > 0
    # never on or next to the membrane; both cells get seeds
    assert not ((seeds[:, 2] >= 17) & (seeds[:, 2] <= 22)).any()
    assert (seeds[:, 2] < 19).any() and (seeds[:, 2] >= 21).any()
    # raster order
    assert seeds.tolist() == sorted(seeds.tolist())


def test_membrane_seeds_lie_in_the_middle_of_cells_away_from_membranes():
    from diluvian.synthetic import synthesize_volume

    # a noisy image, as EM is (on a noise-free one the flat interiors' zero evidence has no order)
    img = two_cells() + np.random.default_rng(0).normal(0, 0.02, (24, 40, 40)).astype(np.float32)
    seeds = membrane(img, (10, 10, 10))
    assert (seeds[:, 2] < 18).any() and (seeds[:, 2] > 21).any()  # both cells
    assert not ((seeds[:, 2] >= 18) & (seeds[:, 2] <= 21)).any()  # not on the membrane or next to it
    assert seeds.tolist() == sorted(seeds.tolist())
    # on the synthetic EM-like volume: seeds fall inside objects, far more often than on their boundaries
    image, labels = synthesize_volume((32, 64, 64), seed=0, resolution=(20.0, 20.0, 20.0))
    seeds = membrane(image, (20, 20, 20))
    on = labels[tuple(seeds.T)]
    assert len(seeds) >= 10 and (on != 0).mean() > 0.9
    assert membrane(np.zeros((8, 8, 8), np.float32), (10, 10, 10)).shape == (0, 3)


def test_seed_generator_names_are_the_configs_and_the_clis():
    from diluvian.cli import make_parser
    from diluvian.config import SEED_GENERATOR_NAMES

    assert set(SEED_GENERATORS) == set(SEED_GENERATOR_NAMES)
    fill = make_parser()._subparsers._group_actions[0].choices["fill"]
    action = next(a for a in fill._actions if a.dest == "seed_generator")
    assert set(action.choices) == set(SEED_GENERATOR_NAMES)


def test_sobel_minimum_separation_is_euclidean_nm():
    img = two_cells()
    for res, sep in [((10, 10, 10), 50.0), ((40, 10, 10), 50.0)]:
        seeds = sobel(img, res, min_separation_nm=sep)
        pts = seeds * np.asarray(res, float)
        d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        assert d.min() >= sep


def test_sobel_anisotropic_works_per_section_and_skips_empty_sections():
    img = two_cells()
    img[5] = 0
    seeds = sobel(img, (40, 10, 10))
    assert len(seeds) and 5 not in set(seeds[:, 0].tolist())
    # every non-empty section has its own seeds
    assert set(seeds[:, 0].tolist()) == set(range(24)) - {5}


def test_sobel_empty_image():
    assert sobel(np.zeros((8, 16, 16), np.float32), (10, 10, 10)).shape == (0, 3)
    assert sobel(np.zeros((8, 16, 16), np.float32), (40, 10, 10)).shape == (0, 3)


def test_suppress_close_keeps_highest_first():
    coords = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 5]])
    kept = suppress_close(coords, np.array([1.0, 2.0, 0.5]), (1, 1, 1), 2.0)
    assert kept.tolist() == [[0, 0, 1], [0, 0, 5]]
    assert suppress_close(coords, np.ones(3), (1, 1, 1), 0).tolist() == coords.tolist()


def test_generate_seeds_mask_and_errors():
    img = two_cells()
    mask = np.zeros(img.shape, bool)
    mask[:, :, :19] = True
    seeds = generate_seeds("sobel", img, (10, 10, 10), ModelConfig(), mask=mask)
    assert len(seeds) and (seeds[:, 2] < 19).all()
    with pytest.raises(ConfigError, match="grid"):
        generate_seeds("watershed", img, (10, 10, 10), ModelConfig())
    with pytest.raises(DataError, match="shape"):
        generate_seeds("grid", img, (10, 10, 10), ModelConfig(), mask=mask[:, :, :5])
    with pytest.raises(DataError, match="3D"):
        sobel(np.zeros((4, 4)), (1, 1, 1))
