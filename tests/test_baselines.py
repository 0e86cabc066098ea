"""Classical baselines on a hand-made two-cell image."""

import numpy as np

from diluvian.baselines import connected_components, one_segment, seeded_watershed, tune_baseline


def two_cells():
    """Two bright round cells, brightest at their centres, with a dark membrane plane at x = 10."""
    zz, yy, xx = np.indices((9, 15, 21))
    d1 = (zz - 4) ** 2 + (yy - 7) ** 2 + (xx - 5) ** 2
    d2 = (zz - 4) ** 2 + (yy - 7) ** 2 + (xx - 15) ** 2
    image = (60 + 180 * np.exp(-np.minimum(d1, d2) / 60.0)).astype(np.uint8)
    image[:, :, 10] = 20
    gt = np.ones(image.shape, np.uint64)
    gt[:, :, 11:] = 2
    gt[:, :, 10] = 0
    return image, gt


def test_watershed_separates_cells_at_membrane():
    image, gt = two_cells()
    seg = seeded_watershed(image, sigma=0.5, threshold_percentile=10, min_distance=3)
    left, right = seg[:, :, :9], seg[:, :, 12:]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1
    assert left.flat[0] != right.flat[0]
    assert (seg > 0).all()


def test_connected_components_and_one_segment():
    image, gt = two_cells()
    cc = connected_components(image, sigma=0, threshold_percentile=10)
    assert set(np.unique(cc)) == {0, 1, 2}
    assert (cc[:, :, 10] == 0).all()
    assert (one_segment(image) == 1).all()


def test_tune_picks_lowest_score():
    image, gt = two_cells()
    # score = number of segments away from 2
    tuned = tune_baseline("watershed", image, lambda seg: abs(len(np.unique(seg)) - 2),
                          grid={"sigma": [0.5], "threshold_percentile": [10], "min_distance": [1, 3]})
    assert tuned.score == 0
    assert len(tuned.trials) == 2
    assert (tuned.apply(image) == seeded_watershed(image, **tuned.params)).all()
