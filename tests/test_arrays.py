"""arrays: LazyArray indexing, CroppedArray, UpsampledLabels and ChunkCachedImage."""

import numpy as np
import pytest

from diluvian.arrays import ChunkCachedImage, CroppedArray, LazyArray, UpsampledLabels
from diluvian.volumes import NdarrayVolume


class _Counting:
    """A volume stand-in that records every get_image box."""

    def __init__(self, image):
        self.image = image
        self.reads = []

    def get_image(self, start, stop):
        self.reads.append((tuple(start), tuple(stop)))
        return self.image[tuple(slice(a, b) for a, b in zip(start, stop))].astype(np.float32)


def test_lazy_array_is_abstract_and_indexes_like_numpy():
    with pytest.raises(TypeError):
        LazyArray()  # type: ignore[abstract]
    base = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    crop = CroppedArray(base, (1, 2, 3), (3, 4, 4))
    ref = base[1:4, 2:6, 3:7]
    assert crop.shape == (3, 4, 4) and crop.dtype == base.dtype and len(crop) == 3 and crop.size == 48
    np.testing.assert_array_equal(np.asarray(crop), ref)
    np.testing.assert_array_equal(crop[1], ref[1])
    np.testing.assert_array_equal(crop[..., 2], ref[..., 2])
    np.testing.assert_array_equal(crop[0:2, 1, 1:3], ref[0:2, 1, 1:3])
    assert crop[2, 3, 3] == ref[2, 3, 3]
    assert np.asarray(crop, dtype=np.float32).dtype == np.float32
    with pytest.raises(IndexError):
        crop[0:4]  # outside the crop, even though the parent has it
    with pytest.raises(IndexError):
        crop[::2]


def test_upsampled_labels_match_repeat():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 5, (3, 4, 5)).astype(np.uint32)
    f = (2, 1, 3)
    full = coarse.repeat(2, 0).repeat(1, 1).repeat(3, 2)
    up = UpsampledLabels(coarse, f, (7, 4, 16))  # one voxel past the data on Z and X: zeros
    expected = np.zeros((7, 4, 16), np.uint32)
    expected[:6, :, :15] = full
    np.testing.assert_array_equal(np.asarray(up), expected)
    np.testing.assert_array_equal(up[1:6, 1:3, 2:14], expected[1:6, 1:3, 2:14])
    np.testing.assert_array_equal(up[6:7, :, 15:16], 0)


@pytest.mark.parametrize("chunk", [(64, 64, 64), (4, 5, 3), (1, 1, 1)])
def test_chunk_cached_image_reads_like_the_volume(chunk):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (12, 14, 10)).astype(np.uint8)
    vol = NdarrayVolume("v", image)
    start, stop = (2, 1, 3), (11, 13, 9)
    view = ChunkCachedImage(vol, start, stop, chunk_shape=chunk)
    ref = vol.get_image(start, stop)
    assert view.shape == (9, 12, 6) and view.dtype == np.float32 and view.ndim == 3
    np.testing.assert_array_equal(np.asarray(view), ref)
    for key in [(slice(0, 9), slice(3, 7), slice(1, 6)), (slice(4, 5), slice(0, 12), slice(5, 6)), (3, ..., 2)]:
        np.testing.assert_array_equal(view[key], ref[key])
    with pytest.raises(IndexError):
        view[0:10]


def test_chunk_cached_image_caches_chunks_lru():
    image = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8) / 512
    src = _Counting(image)
    view = ChunkCachedImage(src, (0, 0, 0), (8, 8, 8), chunk_shape=(4, 8, 8), max_chunks=1)
    np.testing.assert_array_equal(view[0:2, :, :], image[0:2])
    np.testing.assert_array_equal(view[1:3, :, :], image[1:3])  # same chunk: no new read
    assert src.reads == [((0, 0, 0), (4, 8, 8))]
    np.testing.assert_array_equal(view[3:6, :, :], image[3:6])  # two chunks; the cache keeps only the last
    assert [tuple(map(int, r[0])) for r in src.reads] == [(0, 0, 0), (4, 0, 0)]
    view[5, 0, 0]
    assert len(src.reads) == 2
    view[0, 0, 0]  # evicted: read again
    assert len(src.reads) == 3


def test_chunk_cached_image_rejects_a_bad_box():
    from diluvian.errors import DataError

    with pytest.raises(DataError, match="chunk-cached image"):
        ChunkCachedImage(_Counting(np.zeros((2, 2, 2))), (0, 0, 0), (2, -1, 2))
