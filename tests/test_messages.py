"""User-facing messages show plain numbers (``[20.0, 20.0, 20.0]``), never numpy reprs (``np.float64(20.0)``)."""

from __future__ import annotations

import numpy as np
import pytest

from diluvian.errors import DataError
from diluvian.util import fmt_list


def assert_plain(text: str) -> None:
    assert "np." not in text and "float64" not in text and "int64" not in text, text


@pytest.mark.parametrize("values, text", [
    (np.array([20.0, 20.0, 20.0]), "[20.0, 20.0, 20.0]"),
    (list(np.array([20.0, 20.0, 4.5])), "[20.0, 20.0, 4.5]"),  # a list of numpy scalars
    ((np.int64(3), np.int32(-1), 7), "[3, -1, 7]"),
    (np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint16), "[[0, 1, 2], [3, 4, 5]]"),
    (np.float32([0.1, 2.0]), "[0.1, 2.0]"),  # float32 keeps its short form
    ([np.bool_(True), None, "x"], "[True, None, 'x']"),
    (np.array(5), "5"),
    ((), "[]"),
])
def test_fmt_list(values, text):
    assert fmt_list(values) == text


def test_training_subvolume_message_shows_plain_resolution(write_tiny_train_config, tiny_volume):
    # the message a new user met: `... after partitioning and downsampling to [np.float64(20.0), ...] nm`
    from diluvian.config import load_config
    from diluvian.training import prepare_training_volumes

    path = write_tiny_train_config()
    path.write_text(path.read_text().replace("[model]", "[volume]\nresolution = [40, 40, 40]\n[model]", 1))
    cfg = load_config([path])
    with pytest.raises(DataError) as e:
        prepare_training_volumes(cfg, {"tiny": tiny_volume})
    message = str(e.value)
    assert "larger than its training part" in message
    assert "downsampling to [40.0, 40.0, 40.0] nm" in message
    assert_plain(message)


def test_synthetic_and_seed_messages_show_plain_numbers():
    from diluvian.seeds import gradient_magnitude
    from diluvian.synthetic import synthesize_volume

    with pytest.raises(DataError) as e:
        synthesize_volume((16, 16, 16), seed=0, resolution=np.array([20.0, -1.0, 20.0]))
    assert "got [20.0, -1.0, 20.0]" in str(e.value)
    assert_plain(str(e.value))
    with pytest.raises(DataError) as e:
        gradient_magnitude(np.zeros((8, 8, 8), np.float32), np.array([4.0, 0.0, 4.0]))
    assert "got [4.0, 0.0, 4.0]" in str(e.value)
    assert_plain(str(e.value))


def test_subvolume_bounds_message_shows_plain_numbers():
    from diluvian.volumes.sampling import SubvolumeBounds

    with pytest.raises(DataError) as e:
        SubvolumeBounds(start=np.array([1, 2, 3]), stop=None)
    assert "start=[1, 2, 3], stop=None" in str(e.value)


def test_view_messages_show_plain_numbers(tmp_path):
    from diluvian.view import Layer, snapshot

    image = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(DataError) as e:
        Layer("a", image, "image", resolution=np.array([4.0, -1.0, 4.0]))
    assert "got [4.0, -1.0, 4.0]" in str(e.value)
    with pytest.raises(DataError) as e:
        Layer("a", image, "image", resolution=(4, 4, 4), offset=np.array([0.5, 0.0, 0.0]))
    assert "got [0.5, 0.0, 0.0]" in str(e.value)
    with pytest.raises(DataError) as e:
        snapshot((image, None), tmp_path / "s.png", resolution=np.array([0.0, 4.0, 4.0]))
    assert "got [0.0, 4.0, 4.0]" in str(e.value)
    assert_plain(str(e.value))
