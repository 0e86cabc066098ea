"""Synthetic EM volumes: dense consecutive labels, EM-like contrast, determinism, HDF5 layout."""

import h5py
import numpy as np
import pytest
from scipy import ndimage as ndi

from diluvian.errors import DataError
from diluvian.synthetic import synthesize_volume, write_synthetic_hdf5


def test_labels_are_dense_consecutive_and_connected(tiny_arrays):
    image, labels = tiny_arrays
    assert image.shape == labels.shape == (24, 48, 48)
    assert image.dtype == np.uint8 and labels.dtype == np.uint64
    ids = np.unique(labels)
    assert ids[0] == 1 and ids.tolist() == list(range(1, len(ids) + 1))  # every voxel labelled, ids 1..N
    assert len(ids) >= 10
    for i in ids:
        _, n = ndi.label(labels == i)  # 6-connected
        assert n == 1, f"object {i} has {n} pieces"
    assert image.min() >= 1  # no voxel looks like missing data


def test_object_sizes_look_like_fib25_at_10nm():
    _, labels = synthesize_volume((48, 96, 96), seed=1)
    section = labels[24]
    _, areas = np.unique(section, return_counts=True)
    diameters = 2 * np.sqrt(areas / np.pi)
    assert 10 <= np.median(diameters) <= 40
    assert diameters.max() > 3 * diameters.min()  # varied sizes


def test_membranes_are_dark_and_cytoplasm_light(tiny_arrays):
    image, labels = tiny_arrays
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        diff = np.diff(labels.astype(np.int64), axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        boundary[tuple(lo)] |= diff
        boundary[tuple(hi)] |= diff
    interior = ~ndi.binary_dilation(boundary, iterations=2)
    assert image[boundary].mean() + 40 < image[interior].mean()
    assert 20 < image.std() < 60


def test_deterministic_for_a_seed():
    a = synthesize_volume((16, 32, 32), seed=3)
    b = synthesize_volume((16, 32, 32), seed=3)
    c = synthesize_volume((16, 32, 32), seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_anisotropic_resolution_flattens_objects_in_z():
    _, labels = synthesize_volume((16, 64, 64), seed=0, resolution=(40.0, 10.0, 10.0))
    # objects span fewer sections (40 nm) than pixels in-plane (10 nm)
    zs, ys = [], []
    for sl in ndi.find_objects(labels.astype(np.int64)):
        zs.append(sl[0].stop - sl[0].start)
        ys.append(sl[1].stop - sl[1].start)
    assert np.median(zs) < np.median(ys)


def test_bad_arguments():
    with pytest.raises(DataError, match="shape"):
        synthesize_volume((4, 32, 32))
    with pytest.raises(DataError, match="resolution"):
        synthesize_volume((16, 32, 32), resolution=(10, 0, 10))


def test_write_synthetic_hdf5(tmp_path):
    path = tmp_path / "synth.h5"
    write_synthetic_hdf5(path, shape=(16, 32, 32), seed=2, resolution=(10, 10, 10))
    image, labels = synthesize_volume((16, 32, 32), seed=2)
    with h5py.File(path, "r") as f:
        assert f["volumes/raw"].dtype == np.uint8 and f["volumes/labels/neuron_ids"].dtype == np.uint64
        np.testing.assert_array_equal(f["volumes/raw"][...], image)
        np.testing.assert_array_equal(f["volumes/labels/neuron_ids"][...], labels)
        for name in ("volumes/raw", "volumes/labels/neuron_ids"):
            np.testing.assert_array_equal(f[name].attrs["resolution"], [10, 10, 10])
    assert [p.name for p in tmp_path.iterdir()] == ["synth.h5"]  # no temporary file left
    with pytest.raises(DataError, match="does not exist"):
        write_synthetic_hdf5(tmp_path / "no" / "x.h5", shape=(16, 32, 32))


def test_synthetic_file_loads_as_a_volume(tmp_path):
    from diluvian.volumes import load_volumes

    write_synthetic_hdf5(tmp_path / "s.h5", shape=(16, 32, 32), seed=0, resolution=(8, 8, 8))
    (tmp_path / "s.toml").write_text('[[dataset]]\nname = "synth"\nhdf5_file = "s.h5"\n'
                                     'image_dataset = "volumes/raw"\nlabel_dataset = "volumes/labels/neuron_ids"\n')
    vol = load_volumes([tmp_path / "s.toml"])["synth"]
    assert vol.shape == (16, 32, 32) and vol.resolution.tolist() == [8, 8, 8]
