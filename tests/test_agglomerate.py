"""Agglomeration: touching pieces of one object join, touching different objects stay apart."""

import numpy as np

from diluvian.config import Config, ModelConfig, PostprocessingConfig
from diluvian.fill.agglomerate import agglomerate, contacts

from test_fill import make_oracle


def _two_objects():
    """Object A (intensity 0.3, x < 20) split on purpose at y = 15 into labels 1 and 2; object B (0.7) label 3."""
    shape = (16, 30, 32)
    image = np.full(shape, 0.7, np.float32)
    image[:, :, :20] = 0.3
    labels = np.full(shape, 3, np.uint64)
    labels[:, :15, :20] = 1
    labels[:, 15:, :20] = 2
    return image, labels


def test_contacts_finds_touching_pairs_and_a_central_contact():
    _, labels = _two_objects()
    pairs, points = contacts(labels, min_contact=1)
    assert pairs.tolist() == [[1, 2], [1, 3], [2, 3]]
    a, b = points[0]  , points[1]
    assert labels[tuple(a)] in (1, 2) and abs(int(a[1]) - 14.5) <= 1  # on the 1|2 face
    assert abs(int(b[2]) - 19.5) <= 1  # on the 1|3 face
    assert len(contacts(labels, min_contact=10 ** 6)[0]) == 0


def test_agglomerate_joins_the_halves_of_an_object_and_not_two_objects():
    image, labels = _two_objects()
    model = ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(5, 5, 5), output_fov_move_fraction=2)
    cfg = Config(model=model, postprocessing=PostprocessingConfig())
    joined, stats = agglomerate(labels, image, make_oracle(model), cfg, min_contact=20, box_radius=(6, 6, 6))
    assert stats.pairs == 3 and stats.tested == 3 and stats.joined == 1
    assert set(np.unique(joined).tolist()) == {1, 3}
    assert (joined[labels == 2] == 1).all() and (joined[labels == 3] == 3).all()
