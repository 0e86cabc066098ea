"""Volumes: in-memory/HDF5/zarr/image-stack backends, views, dataset TOMLs, subvolume sampling."""

import logging
import pickle

import h5py
import numpy as np
import pytest

from diluvian.errors import ConfigError, DataError, DatasetNotFoundError
from diluvian.volumes import (
    DownsampledVolume,
    HDF5Volume,
    ImageStackVolume,
    NdarrayVolume,
    PartitionedVolume,
    SubvolumeBounds,
    Volume,
    ZarrVolume,
    block_mode,
    downsample_volume,
    get_subvolume,
    image_to_float,
    load_volumes,
    partition_volume,
    partition_volumes,
    read_subvolume_bounds_csv,
    sample_subvolume_bounds,
    write_subvolume_bounds_csv,
)

# --------------------------------------------------------------------------- helpers


def arrays(shape=(8, 12, 16), seed=0):
    """uint8 image (never 0), uint64 labels of slabs along x (ids 1..4), bool mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 256, size=shape).astype(np.uint8)
    labels = np.broadcast_to((np.arange(shape[2]) * 4 // shape[2] + 1).astype(np.uint64), shape).copy()
    mask = np.zeros(shape, dtype=bool)
    mask[1:-1, 2:-2, 3:-3] = True
    return image, labels, mask


def write_h5(path, datasets, attrs=None):
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f[name] = data
            for k, v in (attrs or {}).get(name, {}).items():
                f[name].attrs[k] = v
    return path


def cremi_h5(path, shape=(8, 12, 16), resolution=(40, 4, 4)):
    image, labels, _ = arrays(shape)
    res = {"resolution": np.asarray(resolution, dtype=float)}
    return write_h5(path, {"volumes/raw": image, "volumes/labels/neuron_ids": labels},
                    {"volumes/raw": res, "volumes/labels/neuron_ids": res})


def write_toml(path, text):
    path.write_text(text)
    return path


def pool_mean(a, f):
    z, y, x = (s // k for s, k in zip(a.shape, f))
    a = a[:z * f[0], :y * f[1], :x * f[2]]
    return a.reshape(z, f[0], y, f[1], x, f[2]).mean(axis=(1, 3, 5))


# --------------------------------------------------------------------------- NdarrayVolume


def test_ndarray_volume_reads():
    image, labels, mask = arrays()
    vol = NdarrayVolume("v", image, labels, mask, resolution=(40, 4, 4))
    assert vol.shape == (8, 12, 16) and vol.name == "v"
    assert vol.resolution.dtype == np.float64 and vol.resolution.tolist() == [40, 4, 4]
    img = vol.get_image((1, 2, 3), (3, 5, 9))
    assert img.dtype == np.float32 and img.shape == (2, 3, 6)
    np.testing.assert_allclose(img, image[1:3, 2:5, 3:9] / 256.0)
    np.testing.assert_array_equal(vol.get_labels((0, 0, 0), (8, 12, 16)), labels)
    got_mask = vol.get_mask((0, 0, 0), (2, 3, 4))
    assert got_mask.dtype == bool
    np.testing.assert_array_equal(got_mask, mask[:2, :3, :4])
    np.testing.assert_array_equal(vol.get_label_mask((0, 0, 0), (8, 12, 16), 2), labels == 2)
    # read-only views; the caller's arrays stay writable
    with pytest.raises(ValueError):
        vol.image[0, 0, 0] = 1
    image[0, 0, 0] = 7
    assert NdarrayVolume("w", image).get_mask((0, 0, 0), (1, 1, 1)) is None
    assert vol.to_memory() is vol


def test_image_to_float_scales_by_dtype():
    assert image_to_float(np.array([255], np.uint8))[0] == pytest.approx(255 / 256)
    assert image_to_float(np.array([32768], np.uint16))[0] == pytest.approx(0.5)
    floats = np.array([0.25, 2.0], np.float64)
    out = image_to_float(floats)
    assert out.dtype == np.float32 and out.tolist() == [0.25, 2.0]


@pytest.mark.parametrize("kwargs, match", [
    ({"image": np.zeros((4, 4))}, r"image: expected a 3D \(Z, Y, X\) array, got shape \[4, 4\]"),
    ({"image": np.zeros((4, 4, 4)), "labels": np.zeros((4, 4, 5), np.uint64)},
     r"arrays differ in shape: image \[4, 4, 4\], labels \[4, 4, 5\]"),
    ({"image": np.zeros((4, 4, 4)), "labels": np.zeros((4, 4, 4), np.float32)}, "labels: expected integer"),
    ({"image": np.zeros((4, 4, 4)), "mask": np.zeros((4, 4, 4), np.float32)}, "mask: expected bool or integers"),
    ({"image": np.zeros((4, 4, 4)), "resolution": (4, 4)}, r"resolution: expected 3 positive numbers"),
    ({"image": np.zeros((4, 4, 4)), "resolution": (4, 0, 4)}, r"resolution: expected 3 positive numbers"),
    ({}, "needs an image or labels"),
    ({"image": np.zeros((4, 4, 4)), "mask_bounds": [[0, 0, 0], [5, 4, 4]]}, "mask_bounds"),
])
def test_ndarray_volume_validation(kwargs, match):
    with pytest.raises(DataError, match=match) as info:
        NdarrayVolume("bad", **kwargs)
    assert "'bad'" in str(info.value)


def test_out_of_range_reads_and_missing_arrays():
    image, labels, _ = arrays()
    vol = NdarrayVolume("v", image, labels)
    for start, stop in [((0, 0, 0), (9, 1, 1)), ((-1, 0, 0), (1, 1, 1)), ((2, 0, 0), (1, 1, 1)), ((0, 0), (1, 1))]:
        with pytest.raises(DataError, match=r"volume 'v': box .* is not inside the volume of shape \[8, 12, 16\]"):
            vol.get_image(start, stop)
    label_only = NdarrayVolume("seg", labels=labels)
    assert label_only.shape == (8, 12, 16) and label_only.image is None
    with pytest.raises(DataError, match="volume 'seg' has no image"):
        label_only.get_image((0, 0, 0), (1, 1, 1))
    with pytest.raises(DataError, match="volume 'img' has no labels"):
        NdarrayVolume("img", image).get_labels((0, 0, 0), (1, 1, 1))
    with pytest.raises(ConfigError, match="label_downsampling"):
        vol.get_label_mask((0, 0, 0), (1, 1, 1), 1, mode="any")


def test_mask_bounds():
    image, labels, mask = arrays()
    vol = NdarrayVolume("v", image, labels, mask)
    start, stop = vol.mask_bounds
    assert start.tolist() == [1, 2, 3] and stop.tolist() == [7, 10, 13]
    assert [b.tolist() for b in NdarrayVolume("v", image).mask_bounds] == [[0, 0, 0], [8, 12, 16]]
    given = NdarrayVolume("v", image, mask=mask, mask_bounds=[[0, 1, 2], [3, 4, 5]])
    assert [b.tolist() for b in given.mask_bounds] == [[0, 1, 2], [3, 4, 5]]
    empty = NdarrayVolume("v", image, mask=np.zeros_like(mask))
    assert [b.tolist() for b in empty.mask_bounds] == [[0, 0, 0], [0, 0, 0]]


# --------------------------------------------------------------------------- views


def test_partition():
    image, labels, mask = arrays(shape=(9, 12, 16))
    vol = NdarrayVolume("v", image, labels, mask, resolution=(40, 4, 4))
    assert partition_volume(vol, [1, 1, 1], [0, 0, 0]) is vol
    part = partition_volume(vol, [2, 1, 1], [1, 0, 0])
    assert isinstance(part, PartitionedVolume)
    assert part.shape == (4, 12, 16) and part.offset.tolist() == [4, 0, 0]  # the odd last section is dropped
    assert part.resolution.tolist() == [40, 4, 4] and part.name == "v"
    np.testing.assert_array_equal(part.get_labels((0, 0, 0), part.shape), labels[4:8])
    np.testing.assert_allclose(part.get_image((1, 2, 3), (2, 4, 6)), image[5:6, 2:4, 3:6] / 256)
    # raw arrays keep their dtype and are cropped
    assert part.image.dtype == np.uint8 and part.image.shape == (4, 12, 16)
    np.testing.assert_array_equal(part.image[...], image[4:8])
    np.testing.assert_array_equal(part.mask[0, 2:4], mask[4, 2:4])
    assert part.local_to_world([0, 1, 2]).tolist() == [4, 1, 2]
    assert part.world_to_local([[4, 1, 2], [7, 0, 0]]).tolist() == [[0, 1, 2], [3, 0, 0]]
    assert [b.tolist() for b in part.mask_bounds] == [[0, 2, 3], [4, 10, 13]]  # mask z 1..8 within 4..8
    with pytest.raises(DataError, match="not inside"):
        part.get_image((0, 0, 0), (5, 1, 1))
    with pytest.raises(ConfigError, match=r"volume 'v': partition index \[2, 0, 0\] is outside"):
        partition_volume(vol, [2, 1, 1], [2, 0, 0])
    with pytest.raises(ConfigError, match="partitioning"):
        partition_volume(vol, [0, 1, 1], [0, 0, 0])
    with pytest.raises(DataError, match="empty parts"):
        partition_volume(vol, [10, 1, 1], [0, 0, 0])
    mem = part.to_memory()
    assert isinstance(mem, NdarrayVolume) and mem.image.dtype == np.uint8
    np.testing.assert_array_equal(mem.labels, labels[4:8])


def test_downsample_validation():
    image, labels, _ = arrays()
    vol = NdarrayVolume("cremi", image, labels, resolution=(40, 4, 4))
    assert downsample_volume(vol, (40, 4, 4)) is vol
    assert downsample_volume(vol, (0, 0, 0)) is vol
    assert downsample_volume(vol, (0, 8, 8)).resolution.tolist() == [40, 8, 8]
    with pytest.raises(DataError, match=r"volume 'cremi'.*\[40.0, 4.0, 4.0\].*\[40.0, 12.0, 12.0\].*power-of-2"):
        downsample_volume(vol, (40, 12, 12))
    with pytest.raises(DataError, match=r"\[20.0, 4.0, 4.0\]"):
        downsample_volume(vol, (20, 4, 4))  # no upsampling
    with pytest.raises(DataError, match="leaves nothing"):
        downsample_volume(vol, (40 * 16, 4, 4))


def test_downsampled_reads_pool_native_data():
    rng = np.random.default_rng(3)
    shape = (8, 13, 16)  # 13: the odd remainder is dropped
    image = rng.integers(0, 256, shape).astype(np.uint8)
    labels = rng.integers(0, 3, shape).astype(np.uint32)
    mask = rng.random(shape) < 0.9
    vol = NdarrayVolume("v", image, labels, mask, resolution=(4, 4, 4))
    down = downsample_volume(vol, (8, 8, 16))
    assert isinstance(down, DownsampledVolume)
    assert down.shape == (4, 6, 4) and down.resolution.tolist() == [8, 8, 16]
    f = (2, 2, 4)
    np.testing.assert_allclose(down.get_image((0, 0, 0), down.shape), pool_mean(image / 256.0, f), rtol=1e-6)
    obj = pool_mean((labels == 1).astype(float), f)
    np.testing.assert_array_equal(down.get_label_mask((0, 0, 0), down.shape, 1), obj > 0.5)
    np.testing.assert_array_equal(down.get_label_mask((0, 0, 0), down.shape, 1, "conjunction"), obj == 1)
    np.testing.assert_array_equal(down.get_mask((0, 0, 0), down.shape), pool_mean(mask.astype(float), f) == 1)
    # labels: the most frequent id per block, ties to the smallest
    counts = np.stack([pool_mean((labels == k).astype(float), f) for k in range(3)])
    best = counts.max(axis=0)
    expected = np.argmax(counts == best, axis=0)
    np.testing.assert_array_equal(down.get_labels((0, 0, 0), down.shape), expected)
    # lazy arrays in local coordinates
    assert down.image.dtype == np.float32 and down.image.shape == down.shape
    np.testing.assert_array_equal(down.labels[1:3, 2, :], expected[1:3, 2, :])
    assert down.labels.dtype == np.uint32 and down.mask.dtype == bool
    assert down.local_to_world([1, 2, 3]).tolist() == [2, 4, 12]
    assert down.world_to_local([3, 5, 15]).tolist() == [1, 2, 3]
    mem = down.to_memory()
    assert mem.shape == down.shape and mem.image.dtype == np.float32


def test_block_mode_ties_and_uniform_blocks():
    a = np.array([5, 5, 2, 2, 9, 9, 9, 1], dtype=np.uint64).reshape(1, 2, 4)
    assert block_mode(a, (1, 2, 2)).tolist() == [[[5, 2]]]  # blocks [5 5 9 9] (tie: smallest), [2 2 9 1]
    assert block_mode(np.full((2, 2, 2), 7), (2, 2, 2)).tolist() == [[[7]]]


def test_views_compose_and_pool_over_native_blocks():
    rng = np.random.default_rng(4)
    shape = (16, 16, 16)
    labels = rng.integers(0, 2, shape).astype(np.uint64)
    image = rng.integers(1, 256, shape).astype(np.uint8)
    vol = NdarrayVolume("v", image, labels, resolution=(1, 1, 1))
    # downsampling twice folds into one 4x view: majority over 64 native voxels, not majority of majorities
    twice = downsample_volume(downsample_volume(vol, (2, 2, 2)), (4, 4, 4))
    assert isinstance(twice, DownsampledVolume) and twice.parent is vol and twice.factor.tolist() == [2, 2, 2]
    np.testing.assert_array_equal(twice.get_label_mask((0, 0, 0), (4, 4, 4), 1),
                                  pool_mean((labels == 1).astype(float), (4, 4, 4)) > 0.5)
    # partition of a downsampled volume, then downsampled again
    part = partition_volume(downsample_volume(vol, (2, 2, 2)), (2, 1, 1), (1, 0, 0))
    assert part.shape == (4, 8, 8) and part.offset.tolist() == [4, 0, 0]
    assert part.world_scale.tolist() == [2, 2, 2] and part.world_offset.tolist() == [8, 0, 0]
    assert part.local_to_world([1, 1, 1]).tolist() == [10, 2, 2]
    assert part.world_to_local([11, 3, 2]).tolist() == [1, 1, 1]
    chain = DownsampledVolume(part, (1, 1, 1))
    assert chain.shape == (2, 4, 4) and chain.world_scale.tolist() == [4, 4, 4]
    assert chain.local_to_world([1, 0, 0]).tolist() == [12, 0, 0]
    native = (labels[8:16, :16, :16] == 1).astype(float)
    np.testing.assert_array_equal(chain.get_label_mask((0, 0, 0), chain.shape, 1), pool_mean(native, (4, 4, 4)) > 0.5)
    np.testing.assert_allclose(chain.get_image((0, 0, 0), chain.shape),
                               pool_mean(image[8:16] / 256.0, (4, 4, 4)), rtol=1e-6)
    assert chain.root is vol


def test_mask_lookups_use_native_coordinates():
    """Spec §7.6: a downsampled voxel is valid only if all its native voxels are."""
    image, labels, _ = arrays(shape=(8, 16, 16))
    mask = np.ones((8, 16, 16), dtype=bool)
    mask[:, :, 9] = False  # one invalid native column inside the downsampled column 4
    vol = NdarrayVolume("v", image, labels, mask)
    down = partition_volume(downsample_volume(vol, (2, 2, 2)), (1, 1, 2), (0, 0, 1))  # x 8..16 native -> local 0..4
    m = down.get_mask((0, 0, 0), down.shape)
    assert (~m[:, :, 0]).all() and m[:, :, 1:].all()
    assert [b.tolist() for b in down.mask_bounds] == [[0, 0, 0], [4, 8, 4]]
    rng = np.random.default_rng(0)
    gen = sample_subvolume_bounds(down, (3, 3, 1), rng)
    for _ in range(50):
        b = next(gen)
        wa, wb = down.local_box_to_world(b.start, b.stop)
        assert mask[wa[0]:wb[0], wa[1]:wb[1], wa[2]:wb[2]].all()


# --------------------------------------------------------------------------- HDF5 and dataset TOMLs


def test_hdf5_volume_from_toml(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    cremi_h5(sub / "a.h5")
    toml = write_toml(tmp_path / "sets.toml", '[[dataset]]\nname = "a"\nhdf5_file = "data/a.h5"\n'
                      'image_dataset = "volumes/raw"\nlabel_dataset = "volumes/labels/neuron_ids"\n')
    lazy = load_volumes([toml], in_memory=False)["a"]
    assert isinstance(lazy, HDF5Volume) and lazy.resolution.tolist() == [40, 4, 4]  # from the attribute
    assert isinstance(lazy.image, h5py.Dataset)
    image, labels, _ = arrays()
    np.testing.assert_allclose(lazy.get_image((0, 0, 0), (2, 2, 2)), image[:2, :2, :2] / 256)
    # pickles by path (for worker processes)
    clone = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(clone.get_labels((0, 0, 0), clone.shape), labels)
    mem = load_volumes([str(toml)])["a"]
    assert isinstance(mem, NdarrayVolume) and mem.resolution.tolist() == [40, 4, 4]
    np.testing.assert_array_equal(mem.labels, labels)


def test_hdf5_resolution_sources(tmp_path, caplog):
    image, labels, _ = arrays()
    write_h5(tmp_path / "l.h5", {"raw": image, "ids": labels}, {"ids": {"resolution": [8.0, 8.0, 8.0]}})
    assert HDF5Volume("l", tmp_path / "l.h5", "raw", "ids").resolution.tolist() == [8, 8, 8]
    assert HDF5Volume("l", tmp_path / "l.h5", "raw", "ids", resolution=(2, 2, 2)).resolution.tolist() == [2, 2, 2]
    write_h5(tmp_path / "n.h5", {"raw": image})
    with caplog.at_level(logging.WARNING):
        assert HDF5Volume("n", tmp_path / "n.h5", "raw").resolution.tolist() == [1, 1, 1]
    assert "assuming [1, 1, 1]" in caplog.text
    write_h5(tmp_path / "b.h5", {"raw": image}, {"raw": {"resolution": [4.0, 4.0]}})
    with pytest.raises(DataError, match=r"b.h5: image attribute: resolution: expected 3 positive numbers"):
        HDF5Volume("b", tmp_path / "b.h5", "raw")


def test_label_only_hdf5_volume(tmp_path):
    _, labels, _ = arrays()
    write_h5(tmp_path / "seg.h5", {"volumes/labels/neuron_ids": labels})
    toml = write_toml(tmp_path / "seg.toml", '[[dataset]]\nname = "seg"\nhdf5_file = "seg.h5"\n'
                      'label_dataset = "volumes/labels/neuron_ids"\nresolution = [4, 4, 4]\n')
    vol = load_volumes([toml])["seg"]
    assert vol.image is None and vol.shape == labels.shape
    with pytest.raises(DataError, match="no image"):
        vol.get_image((0, 0, 0), (1, 1, 1))


@pytest.fixture
def good_h5(tmp_path):
    image, labels, mask = arrays()
    return write_h5(tmp_path / "good.h5", {"raw": image, "ids": labels, "mask": mask.astype(np.uint8),
                                           "flat": image[0], "short": labels[:4], "group/x": image})


@pytest.mark.parametrize("body, error, parts", [
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "raw"\nlable_dataset = "ids"\n', ConfigError,
     ["d.toml", "[[dataset]] 'a'", "unknown key 'lable_dataset'", "did you mean 'label_dataset'"]),
    ('hdf5_file = "good.h5"\nimage_dataset = "raw"\n', ConfigError, ["d.toml", "[[dataset]] #1", "'name'"]),
    ('name = "a"\nimage_dataset = "raw"\n', ConfigError, ["d.toml", "'a'", "missing required key 'hdf5_file'"]),
    ('name = "a"\nhdf5_file = "good.h5"\nmask_dataset = "mask"\n', ConfigError,
     ["d.toml", "'a'", "image_dataset or label_dataset"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "raw"\nresolution = [4, 4]\n', ConfigError,
     ["d.toml", "'a'", "resolution: expected 3 positive numbers", "[4, 4]"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = 3\n', ConfigError, ["'a'", "image_dataset: expected"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "raw"\nmask_bounds = [1, 2]\n', ConfigError,
     ["'a'", "mask_bounds: expected"]),
    ('name = "a"\nhdf5_file = "nope.h5"\nimage_dataset = "raw"\n', DatasetNotFoundError,
     ["d.toml", "'a'", "nope.h5: no such HDF5 file"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "volumes/raw"\n', DatasetNotFoundError,
     ["d.toml", "good.h5: no dataset 'volumes/raw'"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "group"\n', DataError, ["good.h5", "'group' is a group"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "flat"\n', DataError,
     ["good.h5: dataset 'flat': expected a 3D (Z, Y, X) array, got shape [12, 16]"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "raw"\nlabel_dataset = "short"\n', DataError,
     ["good.h5", "image [8, 12, 16], labels [4, 12, 16]"]),
    ('name = "a"\nhdf5_file = "good.h5"\nimage_dataset = "raw"\nmask_dataset = "ids"\nlabel_dataset = "flat"\n',
     DataError, ["good.h5: dataset 'flat'"]),
])
def test_bad_dataset_entries(good_h5, tmp_path, body, error, parts):
    toml = write_toml(tmp_path / "d.toml", "[[dataset]]\n" + body)
    with pytest.raises(error) as info:
        load_volumes([toml], in_memory=False)
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


def test_load_volumes_errors(tmp_path, good_h5):
    entry = '[[dataset]]\nname = "{}"\nhdf5_file = "good.h5"\nimage_dataset = "raw"\n'
    one = write_toml(tmp_path / "one.toml", entry.format("a"))
    two = write_toml(tmp_path / "two.toml", entry.format("b") + entry.format("c"))
    vols = load_volumes([one, two])
    assert list(vols) == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"two.toml: \[\[dataset\]\] 'a': duplicate volume name .*one.toml"):
        load_volumes([one, write_toml(tmp_path / "two.toml", entry.format("a"))])
    with pytest.raises(DatasetNotFoundError, match="missing.toml: no such dataset file"):
        load_volumes([tmp_path / "missing.toml"])
    bad = write_toml(tmp_path / "bad.toml", '[[dataset]]\nname = "a"\nhdf5_file = \n')
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML: .*line 3") as info:
        load_volumes([bad])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown table 'datasets' \(did you mean \[\[dataset\]\]\?\)"):
        load_volumes([write_toml(tmp_path / "t.toml", entry.replace("[[dataset]]", "[[datasets]]").format("a"))])
    with pytest.raises(ConfigError, match=r"dataset: expected an array of tables"):
        load_volumes([write_toml(tmp_path / "t.toml", entry.replace("[[dataset]]", "[dataset]").format("a"))])
    with pytest.raises(ConfigError, match="e.toml: no volumes"):
        load_volumes([write_toml(tmp_path / "e.toml", "")])


def test_partition_volumes_by_regex():
    image, labels, _ = arrays()
    vols = {n: NdarrayVolume(n, image, labels) for n in ("cremi_a", "cremi_b", "fib25")}
    parts = partition_volumes(vols, {"cremi": [2, 1, 1], "fib": [1, 1, 2]}, {"cremi_a": [1, 0, 0], "fib": [0, 0, 1]})
    assert list(parts) == ["cremi_a", "fib25"]  # cremi_b: no index regex matches
    assert parts["cremi_a"].shape == (4, 12, 16) and parts["cremi_a"].offset.tolist() == [4, 0, 0]
    assert parts["fib25"].shape == (8, 12, 8) and parts["fib25"].offset.tolist() == [0, 0, 8]
    with pytest.raises(ConfigError, match=r"partitions: volume 'cremi_a' matches more than one regex: 'cremi', '.\*'"):
        partition_volumes(vols, {"cremi": [2, 1, 1], ".*": [2, 1, 1]}, {".*": [0, 0, 0]})
    with pytest.raises(ConfigError, match="invalid regex"):
        partition_volumes(vols, {"(": [2, 1, 1]}, {".*": [0, 0, 0]})
    assert partition_volumes(vols, {"nothing": [2, 1, 1]}, {".*": [0, 0, 0]}) == {}


# --------------------------------------------------------------------------- image stacks and zarr


def write_stack(directory, image, prefix="s", suffix=".png"):
    from PIL import Image

    directory.mkdir(exist_ok=True)
    for z, section in enumerate(image):
        Image.fromarray(section).save(directory / f"{prefix}{z}{suffix}")


def test_image_stack_volume(tmp_path, monkeypatch):
    import diluvian.volumes.imagestack as imagestack

    image = arrays(shape=(12, 10, 14))[0]
    write_stack(tmp_path / "stack", image)  # s0 .. s11: natural order puts s10 after s9
    (tmp_path / "stack" / "notes.txt").write_text("not a section")
    reads = []
    original = imagestack._read_section
    monkeypatch.setattr(imagestack, "_read_section", lambda p: reads.append(p.name) or original(p))
    vol = ImageStackVolume(tmp_path / "stack", (40, 4, 4), "stack", cache_sections=4)
    assert vol.shape == (12, 10, 14) and vol.labels is None and reads == ["s0.png"]
    np.testing.assert_allclose(vol.get_image((9, 2, 3), (11, 5, 7)), image[9:11, 2:5, 3:7] / 256)
    assert reads == ["s0.png", "s9.png", "s10.png"]  # only the sections touched
    vol.get_image((10, 0, 0), (11, 1, 1))
    assert len(reads) == 3  # cached
    np.testing.assert_array_equal(vol.to_memory().image, image)
    # TOML: a glob pattern relative to the TOML
    toml = write_toml(tmp_path / "s.toml", '[[image_stack]]\nname = "st"\npath = "stack/s1*.png"\n'
                      'resolution = [40, 4, 4]\n')
    vol = load_volumes([toml], in_memory=False)["st"]
    assert vol.shape == (3, 10, 14)  # s1, s10, s11
    np.testing.assert_array_equal(vol.image[...], image[[1, 10, 11]])


def test_image_stack_errors(tmp_path):
    from PIL import Image

    image = arrays(shape=(3, 10, 14))[0]
    write_stack(tmp_path / "stack", image)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "stack" / "s3.png")
    vol = ImageStackVolume(tmp_path / "stack", (4, 4, 4), "bad")
    with pytest.raises(DataError, match=r"s3.png: section 3 has shape \[5, 5\]"):
        vol.get_image((0, 0, 0), (4, 1, 1))
    with pytest.raises(DatasetNotFoundError, match="no section images"):
        ImageStackVolume(tmp_path, (4, 4, 4), "empty")
    with pytest.raises(DatasetNotFoundError, match="no files match"):
        ImageStackVolume(tmp_path / "nothing*.png", (4, 4, 4), "none")
    toml = write_toml(tmp_path / "s.toml", '[[image_stack]]\nname = "st"\npath = "stack"\nresolutoin = [4, 4, 4]\n')
    with pytest.raises(ConfigError, match=r"s.toml: \[\[image_stack\]\] 'st': unknown key 'resolutoin' "
                                          r"\(did you mean 'resolution'\?\)"):
        load_volumes([toml])


def test_image_stack_16_bit(tmp_path):
    from PIL import Image

    (tmp_path / "st").mkdir()
    data = np.full((4, 6), 32768, dtype=np.uint16)
    for z in range(2):
        Image.fromarray(data).save(tmp_path / "st" / f"{z}.png")
    vol = ImageStackVolume(tmp_path / "st", (1, 1, 1), "u16")
    assert vol.image.dtype == np.uint16
    assert vol.get_image((0, 0, 0), (1, 1, 1)).item() == pytest.approx(0.5)


def test_zarr_volume(tmp_path):
    zarr = pytest.importorskip("zarr")
    image, labels, mask = arrays()
    group = zarr.open_group(str(tmp_path / "v.zarr"), mode="w")
    for name, data in (("volumes/raw", image), ("volumes/labels/neuron_ids", labels), ("volumes/mask", mask)):
        arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(4, 6, 8))
        arr[...] = data
    group["volumes/raw"].attrs["resolution"] = [40, 4, 4]
    toml = write_toml(tmp_path / "z.toml", '[[zarr]]\nname = "z"\nstore = "v.zarr"\nimage_array = "volumes/raw"\n'
                      'label_array = "volumes/labels/neuron_ids"\nmask_array = "volumes/mask"\n')
    vol = load_volumes([toml], in_memory=False)["z"]
    assert isinstance(vol, ZarrVolume) and vol.resolution.tolist() == [40, 4, 4]
    np.testing.assert_array_equal(vol.get_labels((1, 2, 3), (4, 5, 6)), labels[1:4, 2:5, 3:6])
    np.testing.assert_allclose(vol.get_image((0, 0, 0), (8, 12, 16)), image / 256)
    assert [b.tolist() for b in vol.mask_bounds] == [[1, 2, 3], [7, 10, 13]]
    mem = load_volumes([toml])["z"]
    np.testing.assert_array_equal(mem.mask, mask)
    bad = write_toml(tmp_path / "b.toml", '[[zarr]]\nname = "z"\nstore = "v.zarr"\nimage_array = "raw"\n')
    with pytest.raises(DatasetNotFoundError, match=r"b.toml: \[\[zarr\]\] 'z': .*v.zarr: no array 'raw'"):
        load_volumes([bad])
    bad = write_toml(tmp_path / "b.toml", '[[zarr]]\nname = "z"\nstore = "none.zarr"\nimage_array = "raw"\n')
    with pytest.raises(DatasetNotFoundError, match="none.zarr: no such zarr store"):
        load_volumes([bad])
    bad = write_toml(tmp_path / "b.toml", '[[zarr]]\nname = "z"\nstore = "v.zarr"\nimage = "volumes/raw"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'image' \(did you mean 'image_array'\?\)"):
        load_volumes([bad])


# --------------------------------------------------------------------------- subvolume sampling


def test_sampled_bounds_follow_the_rules(tiny_volume):
    vol = tiny_volume
    rng = np.random.default_rng(0)
    shape = np.array([9, 17, 16])
    gen = sample_subvolume_bounds(vol, shape, rng, label_margin=(0, 2, 2))
    labels = vol.labels
    for _ in range(100):
        b = next(gen)
        assert (b.start >= 0).all() and (b.stop <= vol.shape).all() and (b.stop - b.start == shape).all()
        assert (b.seed == b.start + shape // 2).all()
        assert b.label_id == labels[tuple(b.seed)] and b.label_id != 0
        assert b.label_margin.tolist() == [0, 2, 2]
        sub = get_subvolume(vol, b)
        assert sub.image.shape == tuple(shape) and sub.label_mask.shape == (9, 13, 12)
        assert sub.seed.tolist() == (shape // 2).tolist() and sub.has_seed_in_mask()
    # deterministic for a seed
    a = [next(sample_subvolume_bounds(vol, shape, np.random.default_rng(5))) for _ in range(3)]
    b = [next(sample_subvolume_bounds(vol, shape, np.random.default_rng(5))) for _ in range(3)]
    assert a == b


def test_sampling_label_zero_and_giving_up():
    image = np.full((6, 6, 6), 100, np.uint8)
    labels = np.zeros((6, 6, 6), np.uint64)
    labels[:, :, :2] = 3
    vol = NdarrayVolume("medulla", image, labels)
    rng = np.random.default_rng(0)
    ids = {next(sample_subvolume_bounds(vol, (1, 1, 1), rng)).label_id for _ in range(20)}
    assert ids == {3}
    gen = sample_subvolume_bounds(vol, (1, 1, 1), rng, exclude_label_zero=False)
    assert {next(gen).label_id for _ in range(50)} == {0, 3}
    blank = NdarrayVolume("blank", np.zeros((6, 6, 6), np.uint8), labels)
    with pytest.raises(DataError, match=r"volume 'blank': no valid subvolume .* in 50 consecutive draws "
                                         r"\(rejected for blank image: 50\)"):
        next(sample_subvolume_bounds(blank, (3, 3, 3), rng, max_rejections=50))
    with pytest.raises(DataError, match=r"volume 'medulla': no subvolume of shape \[7, 1, 1\] fits"):
        next(sample_subvolume_bounds(vol, (7, 1, 1), rng))


def test_sampling_downsampled_volume_checks_native_block():
    """The full-resolution block under the centre must be one object (spec §4.2)."""
    image = np.full((4, 8, 8), 50, np.uint8)
    labels = np.ones((4, 8, 8), np.uint64)
    labels[:, :, 4] = 2  # mixed native blocks in downsampled x column 2
    down = downsample_volume(NdarrayVolume("v", image, labels), (2, 2, 2))
    rng = np.random.default_rng(1)
    gen = sample_subvolume_bounds(down, (1, 1, 1), rng)
    for _ in range(30):
        b = next(gen)
        assert b.seed[2] != 2 and b.label_id == 1
        sub = get_subvolume(down, b)
        assert sub.image.item() == pytest.approx(50 / 256) and sub.label_mask.item()


def test_subvolume_pooling_modes():
    labels = np.zeros((2, 2, 2), np.uint64)
    labels.flat[:5] = 1  # 5 of 8 native voxels are object 1
    vol = downsample_volume(NdarrayVolume("v", np.ones((2, 2, 2), np.uint8), labels), (2, 2, 2))
    bounds = SubvolumeBounds((0, 0, 0), (1, 1, 1), label_id=1)
    assert get_subvolume(vol, bounds).label_mask.item()
    assert not get_subvolume(vol, bounds, label_downsampling="conjunction").label_mask.item()


def test_subvolume_bounds_csv_round_trip(tmp_path):
    bounds = [SubvolumeBounds((12, 100, 100), (45, 133, 133), seed=(28, 116, 116), label_id=7, label_margin=0),
              SubvolumeBounds((0, 0, 0), (3, 3, 3), label_id=None, label_margin=(0, 1, 1))]
    path = tmp_path / "b.csv"
    write_subvolume_bounds_csv(path, bounds)
    lines = path.read_text().splitlines()
    assert lines[0] == "start,stop,seed,label_id,label_margin"
    assert lines[1] == "[ 12 100 100],[ 45 133 133],[ 28 116 116],7,[0 0 0]"
    assert lines[2] == "[0 0 0],[3 3 3],,,[0 1 1]"
    assert read_subvolume_bounds_csv(path) == bounds
    path.write_text("start,stop,seed,label_id,label_margin\n[1 2 3],[4 5,,3,0\n")
    with pytest.raises(DataError, match=r"b.csv: line 2: stop: expected an int or an array"):
        read_subvolume_bounds_csv(path)
    path.write_text("begin,end\n")
    with pytest.raises(DataError, match="b.csv: line 1: expected the header"):
        read_subvolume_bounds_csv(path)
    with pytest.raises(DatasetNotFoundError, match="no such subvolume bounds file"):
        read_subvolume_bounds_csv(tmp_path / "none.csv")


def test_generic_volume_accepts_array_likes():
    from diluvian.octree import OctreeVolume

    image = OctreeVolume((4, 4, 4), ((0, 0, 0), (8, 8, 8)), np.uint8, fill_value=128)
    vol = Volume("oct", image=image, resolution=(8, 8, 8))
    assert vol.get_image((0, 0, 0), (1, 1, 2)).tolist() == [[[0.5, 0.5]]]


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_fib25_via_dataset_toml(data_dir, tmp_path):
    toml = write_toml(tmp_path / "fib25.toml", f'[[dataset]]\nname = "fib25"\nhdf5_file = "{data_dir / "fib25_train.h5"}"\n'
                      'image_dataset = "volumes/raw"\nlabel_dataset = "volumes/labels/neuron_ids"\n')
    vol = load_volumes([toml], in_memory=False)["fib25"]
    assert vol.shape == (160, 250, 250) and vol.resolution.tolist() == [10, 10, 10]
    train = partition_volumes({"fib25": vol}, {".*": [2, 1, 1]}, {".*": [0, 0, 0]})["fib25"]
    val = partition_volumes({"fib25": vol}, {".*": [2, 1, 1]}, {".*": [1, 0, 0]})["fib25"]
    assert train.shape == val.shape == (80, 250, 250) and val.offset.tolist() == [80, 0, 0]
    b = next(sample_subvolume_bounds(downsample_volume(val, (20, 20, 20)), (17, 33, 33), np.random.default_rng(0)))
    sub = get_subvolume(downsample_volume(val, (20, 20, 20)), b)
    assert sub.image.shape == (17, 33, 33) and sub.has_seed_in_mask() and 0 < sub.image.mean() < 1


def test_volume_base_is_the_array_api_without_an_import_circle():
    """volumes.base imports neither views nor sampling (not even inside functions); they build on it."""
    import ast
    import inspect

    import diluvian.volumes.base as base

    tree = ast.parse(inspect.getsource(base))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"views", "sampling", ".views", ".sampling"}
    assert not any(hasattr(Volume, m) for m in ("partition", "downsample", "get_subvolume"))
