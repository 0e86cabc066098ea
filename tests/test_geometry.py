"""geometry.Box and index_box."""

import pickle

import numpy as np
import pytest

from diluvian.errors import DataError
from diluvian.geometry import Box, index_box


def test_box_construction_and_properties():
    b = Box([1, 2, 3], np.array([4.0, 6.0, 3.0]))
    assert b.shape == (3, 4, 0) and b.size == 0 and b.empty
    assert b.start.dtype == np.int64 and b.stop.tolist() == [4, 6, 3]
    full = Box.from_shape((2, 3, 4))
    assert full == Box((0, 0, 0), (2, 3, 4)) and full.size == 24 and not full.empty
    assert Box.from_shape((2, 2, 2), start=(5, 5, 5)) == Box((5, 5, 5), (7, 7, 7))
    arr = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(arr[Box((0, 1, 1), (2, 3, 3)).slices], arr[0:2, 1:3, 1:3])
    start, stop = full  # unpacks to writable copies
    start[0] = 9
    assert full.start[0] == 0
    with pytest.raises(ValueError):
        full.start[0] = 1
    with pytest.raises(AttributeError):
        full.start = np.zeros(3)  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(full)) == full and hash(full) == hash(Box((0, 0, 0), (2, 3, 4)))
    assert repr(full) == "Box([0, 0, 0], [2, 3, 4])"


@pytest.mark.parametrize("start, stop", [
    ((0, 0), (1, 1, 1)),  # 2 values
    ((0, 0, 0.5), (1, 1, 1)),  # not integral
    ((0, 0, 0), (1, 1, np.nan)),
    ((0, 2, 0), (1, 1, 1)),  # stop < start
    (("a", 0, 0), (1, 1, 1)),
])
def test_box_rejects_bad_corners_in_one_line(start, stop):
    with pytest.raises(DataError) as e:
        Box(start, stop, where="volume 'v': box")
    msg = str(e.value)
    assert msg.startswith("volume 'v': box: expected") and "\n" not in msg and "np." not in msg


def test_intersection_contains_clip_grow_shift():
    a = Box((0, 0, 0), (4, 4, 4))
    b = Box((2, 3, -1), (6, 5, 2))
    assert a.intersection(b) == Box((2, 3, 0), (4, 4, 2))
    disjoint = a.intersection(Box((10, 0, 0), (12, 4, 4)))
    assert disjoint.empty and disjoint.start.tolist() == [10, 0, 0]
    assert a.contains(Box((1, 1, 1), (4, 4, 4))) and not a.contains(b)
    assert a.contains((3, 3, 3)) and not a.contains((4, 0, 0)) and not a.contains((0, -1, 0))
    assert b.clip((4, 4, 4)) == Box((2, 3, 0), (4, 4, 2))
    assert b.clip(Box((0, 0, 0), (1, 1, 1))) == Box((1, 1, 0), (1, 1, 1))  # outside: empty, on the border
    assert a.grow(1) == Box((-1, -1, -1), (5, 5, 5)) and a.grow((-1, 0, -2)) == Box((1, 0, 2), (3, 4, 2))
    with pytest.raises(DataError, match="grown by"):
        a.grow(-3)
    assert a.shift((1, -1, 0)) == Box((1, -1, 0), (5, 3, 4))


def test_blocks_tile_the_box_on_an_aligned_grid():
    box = Box((1, 0, 3), (9, 4, 8))
    blocks = list(box.blocks((4, 4, 4)))
    # z: [1,4) [4,8) [8,9); y: [0,4); x: [3,4) [4,8)
    assert len(blocks) == 3 * 1 * 2
    assert blocks[0] == Box((1, 0, 3), (4, 4, 4)) and blocks[-1] == Box((8, 0, 4), (9, 4, 8))
    covered = np.zeros((9, 4, 8), int)
    for b in blocks:
        assert box.contains(b)
        covered[b.slices] += 1
    assert (covered[box.slices] == 1).all() and covered.sum() == box.size
    shifted = list(box.blocks((4, 4, 4), origin=(1, 0, 3)))
    assert shifted[0] == Box((1, 0, 3), (5, 4, 7)) and len(shifted) == 2 * 1 * 2
    assert list(Box((0, 0, 0), (0, 4, 4)).blocks((2, 2, 2))) == []
    with pytest.raises(DataError, match="block shape"):
        list(box.blocks((0, 4, 4)))


def test_index_box():
    box, kept = index_box((slice(None), 2), (4, 5, 6))
    assert box == Box((0, 2, 0), (4, 3, 6)) and kept == [0, 2]
    assert index_box(..., (2, 3, 4)) == (Box((0, 0, 0), (2, 3, 4)), [0, 1, 2])
    assert index_box((1, ..., slice(1, 3)), (2, 3, 4)) == (Box((1, 0, 1), (2, 3, 3)), [1, 2])
    for bad in [(slice(0, 4, 2),), (5,), (slice(0, 9),), (0, 0, 0, 0), (..., ...), (True,), (1.0,)]:
        with pytest.raises(IndexError):
            index_box(bad, (4, 4, 4))
