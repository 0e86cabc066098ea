"""OctreeVolume: exact against a dense NumPy reference, sparse, lazy, uniform leaves."""

import numpy as np
import pytest

from diluvian.octree import OctreeVolume, parse_index


def random_box(rng, shape):
    """A random index (slices, sometimes ints or open ends) of an array of ``shape``."""
    key = []
    for n in shape:
        r = rng.random()
        if r < 0.15:
            key.append(int(rng.integers(0, n)))
        elif r < 0.25:
            key.append(slice(None, int(rng.integers(0, n + 1))))
        else:
            a = int(rng.integers(0, n))
            key.append(slice(a, int(rng.integers(a, n + 1))))
    return tuple(key)


@pytest.mark.parametrize("origin", [(0, 0, 0), (-3, 7, 100)])
def test_matches_dense_reference_on_random_boxes(origin):
    """The original's test shape: 11x6x5 with 4x4x4 leaves (edge leaves are cut)."""
    rng = np.random.default_rng(0)
    shape = (11, 6, 5)
    stop = tuple(o + s for o, s in zip(origin, shape))
    vol = OctreeVolume((4, 4, 4), (origin, stop), np.float32, fill_value=-1)
    ref = np.full(shape, -1, dtype=np.float32)
    assert vol.shape == shape and vol.ndim == 3 and vol.dtype == np.float32
    for step in range(400):
        key = random_box(rng, shape)
        what = rng.random()
        if what < 0.4:
            target_shape = ref[key].shape
            value = rng.random(target_shape).astype(np.float32)
            vol[key] = value
            ref[key] = value
        elif what < 0.6:
            value = float(rng.integers(0, 3))  # few values, so uniform writes often repeat
            vol[key] = value
            ref[key] = value
        got = vol[key]
        assert got.shape == ref[key].shape, (step, key)
        np.testing.assert_array_equal(got, ref[key], err_msg=f"step {step}, key {key}")
    np.testing.assert_array_equal(vol[:, :, :], ref)
    np.testing.assert_array_equal(np.asarray(vol), ref)
    np.testing.assert_array_equal(vol[...], ref)
    np.testing.assert_array_equal(vol[2], ref[2])
    np.testing.assert_array_equal(vol[2, ..., 3], ref[2, :, 3])


def test_reads_return_copies():
    vol = OctreeVolume((4, 4, 4), ((0, 0, 0), (8, 8, 8)), np.int32)
    vol[0:4, 0:4, 0:4] = np.arange(64, dtype=np.int32).reshape(4, 4, 4)
    block = vol[0:4, 0:4, 0:4]
    block[:] = 99
    assert vol[1, 1, 1] == 21


def test_broadcast_assignment_with_int_axes():
    vol = OctreeVolume((2, 2, 2), ((0, 0, 0), (5, 5, 5)), np.int64)
    ref = np.zeros((5, 5, 5), dtype=np.int64)
    row = np.arange(4)
    vol[1, 0:4, 3] = row
    ref[1, 0:4, 3] = row
    vol[0:5, 2, :] = np.arange(5)  # broadcast along z
    ref[0:5, 2, :] = np.arange(5)
    np.testing.assert_array_equal(vol[...], ref)
    with pytest.raises(ValueError, match="cannot assign"):
        vol[0:2, 0:2, 0:2] = np.zeros((3, 3))


def test_huge_sparse_volume_allocates_only_touched_leaves():
    """10^5 voxels per side as float32 would be 4 PB dense."""
    n = 100_000
    vol = OctreeVolume((32, 32, 32), ((0, 0, 0), (n, n, n)), np.float32, fill_value=np.nan)
    rng = np.random.default_rng(1)
    boxes = []
    for _ in range(5):
        start = rng.integers(0, n - 33, size=3)
        data = rng.random((33, 33, 33)).astype(np.float32)
        key = tuple(slice(int(a), int(a) + 33) for a in start)
        vol[key] = data
        boxes.append((key, data))
    for key, data in boxes:
        np.testing.assert_array_equal(vol[key], data)
    assert vol.nbytes_allocated <= 5 * 8 * 32 ** 3 * 4  # at most 8 leaves per box
    assert vol.nbytes_allocated < 6 * 2 ** 20
    assert np.isnan(vol[n - 1, 0, 5])
    assert vol.fullness() == vol.nbytes_allocated // (32 ** 3 * 4) / vol.n_leaves


def test_populator_is_called_lazily_with_absolute_boxes():
    calls = []
    origin = np.array([10, 20, 30])
    full = np.arange(8 * 6 * 6, dtype=np.uint16).reshape(8, 6, 6)

    def populate(start, stop):
        calls.append((tuple(start), tuple(stop)))
        a, b = start - origin, stop - origin
        return full[a[0]:b[0], a[1]:b[1], a[2]:b[2]]

    vol = OctreeVolume((4, 4, 4), (origin, origin + full.shape), np.uint16, populator=populate)
    assert calls == []
    assert vol[5, 5, 5] == full[5, 5, 5]
    assert calls == [((14, 24, 34), (18, 26, 36))]  # one cut edge leaf, absolute coordinates
    np.testing.assert_array_equal(vol[4:8, 4:6, 4:6], full[4:8, 4:6, 4:6])
    assert len(calls) == 1  # cached
    # a whole-leaf write does not populate; a partial one does
    vol[0:4, 0:4, 0:4] = 7
    assert len(calls) == 1 and vol.nbytes_allocated == 4 * 2 * 2 * 2  # the populated edge leaf only
    vol[0:2, 4:5, 0:1] = 0
    assert calls[-1] == ((10, 24, 30), (14, 26, 34))
    expected = full.copy()
    expected[0:4, 0:4, 0:4] = 7
    expected[0:2, 4:5, 0:1] = 0
    np.testing.assert_array_equal(vol[...], expected)
    # after [:] = v the populator is no longer used
    n = len(calls)
    vol[:] = 3
    assert (vol[...] == 3).all() and len(calls) == n


def test_populator_uniform_leaves_cost_nothing_and_bad_shapes_fail():
    vol = OctreeVolume((4, 4, 4), ((0, 0, 0), (8, 8, 8)), np.float32,
                       populator=lambda a, b: np.zeros(tuple(b - a), dtype=np.float32))
    assert (vol[...] == 0).all()
    assert vol.nbytes_allocated == 0 and len(list(vol.iter_leaves())) == 8
    bad = OctreeVolume((4, 4, 4), ((0, 0, 0), (8, 8, 8)), np.float32, populator=lambda a, b: np.zeros((4, 4)))
    with pytest.raises(ValueError, match="populator returned shape"):
        bad[0, 0, 0]


def test_uniform_assignment_frees_memory():
    vol = OctreeVolume((4, 4, 4), ((0, 0, 0), (12, 8, 8)), np.float32, fill_value=np.nan)
    assert vol.nbytes_allocated == 0 and vol.fullness() == 0
    vol[1:3, 1:3, 1:3] = 0.5
    assert vol.nbytes_allocated == 4 ** 3 * 4 and vol.fullness() == 1 / 12
    # writing the value a uniform leaf already has allocates nothing
    vol[5:6, 5:6, 5:6] = np.nan
    assert vol.nbytes_allocated == 4 ** 3 * 4
    # a scalar over a whole leaf makes it uniform again
    vol[0:4, 0:4, 0:4] = 2.0
    assert vol.nbytes_allocated == 0
    assert (vol[0:4, 0:4, 0:4] == 2).all() and np.isnan(vol[4, 4, 4])
    # an array over a whole leaf is stored dense (a copy)
    data = np.ones((4, 4, 4), np.float32)
    vol[4:8, 0:4, 0:4] = data
    data[:] = 5
    assert (vol[4:8, 0:4, 0:4] == 1).all() and vol.nbytes_allocated == 4 ** 3 * 4
    vol[:] = 0.25
    assert vol.nbytes_allocated == 0 and list(vol.iter_leaves()) == [] and (vol[...] == 0.25).all()
    assert vol.nonuniform_bounds() is None


def test_iter_leaves_nonuniform_bounds_and_map_copy():
    vol = OctreeVolume((4, 4, 4), ((100, 0, 0), (111, 6, 5)), np.float32, fill_value=0)
    vol[5, 1, 1] = 1.0  # leaf (1, 0, 0): dense
    vol[8:11, 4:6, 4:5] = 2.0  # leaf (2, 1, 1), cut to 3x2x1 and fully covered: uniform
    leaves = list(vol.iter_leaves())
    assert [(s.tolist(), e.tolist()) for s, e, _ in leaves] == [([4, 0, 0], [8, 4, 4]), ([8, 4, 4], [11, 6, 5])]
    assert isinstance(leaves[0][2], np.ndarray) and leaves[0][2][1, 1, 1] == 1
    assert not isinstance(leaves[1][2], np.ndarray) and leaves[1][2] == 2
    start, stop = vol.nonuniform_bounds()
    assert start.tolist() == [4, 0, 0] and stop.tolist() == [8, 4, 4]
    assert vol.fullness() == pytest.approx(1 / 12)

    doubled = vol.map_copy(np.int16, lambda a: a * 2, lambda v: v + 10)
    assert doubled.dtype == np.int16 and doubled.shape == vol.shape
    expected = np.asarray(vol) * 2
    expected[np.asarray(vol) == 0] = 10  # untouched leaves: uniform 0 -> 10
    expected[8:11, 4:6, 4:5] = 12
    expected[4:8, 0:4, 0:4] = (np.asarray(vol)[4:8, 0:4, 0:4] * 2)
    np.testing.assert_array_equal(doubled[...], expected)


def test_map_copy_of_a_lazy_volume_stays_lazy():
    calls = []

    def populate(a, b):
        calls.append(tuple(a))
        return np.ones(tuple(b - a), np.uint8) * (a[0] + 1)

    vol = OctreeVolume((2, 2, 2), ((0, 0, 0), (4, 2, 2)), np.uint8, populator=populate)
    copy = vol.map_copy(np.float32, lambda a: a / 2, lambda v: v / 2)
    assert calls == []
    assert copy[3, 0, 0] == 1.5 and calls == [(2, 0, 0)]


def test_bad_indices_raise_index_error():
    vol = OctreeVolume((4, 4, 4), ((0, 0, 0), (11, 6, 5)), np.uint8)
    for key in [(slice(0, 12), 0, 0), (11, 0, 0), (-1, 0, 0), (slice(-2, None), 0, 0), (slice(0, 4, 2), 0, 0),
                (0, 0, 0, 0), (0.5, 0, 0), (Ellipsis, Ellipsis)]:
        with pytest.raises(IndexError):
            vol[key]
        with pytest.raises(IndexError):
            vol[key] = 1
    assert parse_index((slice(None), 2), (4, 5, 6)) == ([0, 2, 0], [4, 3, 6], [0, 2])


def test_bad_construction():
    with pytest.raises(ValueError, match="leaf_shape"):
        OctreeVolume((4, 4), ((0, 0, 0), (4, 4, 4)), np.uint8)
    with pytest.raises(ValueError, match="bounds"):
        OctreeVolume((4, 4, 4), ((0, 0, 0), (4, 0, 4)), np.uint8)
    with pytest.raises(ValueError, match="fill_value"):
        OctreeVolume((4, 4, 4), ((0, 0, 0), (4, 4, 4)), np.uint8, fill_value=np.nan)
