"""Non-finite image voxels: an error naming the dataset and the voxel, or missing data ([volume] nonfinite)."""

import h5py
import numpy as np
import pytest

from diluvian.config import load_config
from diluvian.errors import ConfigError, DataError
from diluvian.volumes import load_volumes, sample_subvolume_bounds
from diluvian.volumes.finite import FiniteImage, apply_nonfinite_policy

NAN_AT = (3, 10, 20)
INF_BOX = (slice(5, 8), slice(30, 40), slice(5, 9))


@pytest.fixture
def nan_toml(tmp_path, tiny_arrays):
    """A float32 HDF5 volume 'nan' with one NaN voxel and a small box of +Inf."""
    image, labels = tiny_arrays
    img = image.astype(np.float32) / 256
    img[NAN_AT] = np.nan
    img[INF_BOX] = np.inf
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f["volumes/raw"] = img
        f["volumes/labels/neuron_ids"] = labels
        f["volumes/raw"].attrs["resolution"] = [20.0, 20.0, 20.0]
    toml = tmp_path / "nan.toml"
    toml.write_text('[[dataset]]\nname = "nan"\nhdf5_file = "nan.h5"\nimage_dataset = "volumes/raw"\n'
                    'label_dataset = "volumes/labels/neuron_ids"\n')
    return toml


def test_config_key_defaults_to_error_and_checks_its_value(tmp_path):
    assert load_config([]).volume.nonfinite == "error"
    bad = tmp_path / "bad.toml"
    bad.write_text('[volume]\nnonfinite = "ignore"\n')
    with pytest.raises(ConfigError, match="nonfinite"):
        load_config([bad])


def test_in_memory_load_names_dataset_and_voxel(nan_toml):
    with pytest.raises(DataError, match=r"nan.h5: dataset 'volumes/raw' \(volume 'nan'\): image voxel "
                                        r"\[z, y, x\] = \[3, 10, 20\] is nan .*nonfinite = \"mask\""):
        load_volumes([nan_toml])


def test_lazy_volume_checks_each_box_as_it_is_read(nan_toml):
    vol = load_volumes([nan_toml], in_memory=False)["nan"]
    assert np.isfinite(vol.get_image((0, 0, 0), (3, 48, 48))).all()  # the Z slabs before the NaN read fine
    with pytest.raises(DataError, match=r"voxel \[z, y, x\] = \[6, 30, 5\] is inf"):
        vol.get_image((6, 20, 0), (7, 48, 48))


def test_mask_policy_masks_seeds_samples_and_ground_truth(nan_toml):
    for in_memory in (True, False):
        vol = load_volumes([nan_toml], in_memory=in_memory, nonfinite="mask")["nan"]
        image = vol.get_image((0, 0, 0), vol.shape)
        assert np.isfinite(image).all() and image[NAN_AT] == 0 and (image[INF_BOX] == 0).all()
        mask = vol.get_mask((0, 0, 0), vol.shape)
        assert not mask[NAN_AT] and not mask[INF_BOX].any() and mask.sum() == mask.size - 1 - 3 * 10 * 4
        labels = vol.get_labels((0, 0, 0), vol.shape)
        assert labels[NAN_AT] == 0 and (labels[INF_BOX] == 0).all() and labels.any()
    # training samples never cover a non-finite voxel
    rng = np.random.default_rng(0)
    stream = sample_subvolume_bounds(vol, (5, 9, 9), rng)
    for _ in range(200):
        b = next(stream)
        box = tuple(slice(a, z) for a, z in zip(b.start, b.stop))
        assert mask[box].all()


def test_mask_policy_leaves_non_finite_voxels_out_of_evaluation(nan_toml, tmp_path, tiny_arrays):
    from diluvian.evaluate import evaluate_named_volumes

    _, labels = tiny_arrays
    pred = labels.copy()
    pred[INF_BOX] = 999  # a wrong "object" only where the image is not finite
    with h5py.File(tmp_path / "pred.h5", "w") as f:
        f["seg"] = pred
        f["seg"].attrs["resolution"] = [20.0, 20.0, 20.0]
    vols = load_volumes([nan_toml], in_memory=False, nonfinite="mask")
    scores = evaluate_named_volumes(vols, "nan", f"{tmp_path / 'pred.h5'}:seg", border_threshold_nm=0)
    assert scores.voi_split == 0 and scores.voi_merge == 0 and scores.adapted_rand_error == 0
    plain = evaluate_named_volumes(load_volumes([nan_toml.parent / "nan.toml"], in_memory=False),
                                   "nan", f"{tmp_path / 'pred.h5'}:seg", border_threshold_nm=0)
    assert plain.voi_split > 0 or plain.voi_merge > 0  # the error is visible when the voxels are evaluated


def test_policy_survives_pickling_of_lazy_hdf5_volumes(nan_toml):
    import pickle

    for policy in ("error", "mask"):
        vol = pickle.loads(pickle.dumps(load_volumes([nan_toml], in_memory=False, nonfinite=policy)["nan"]))
        if policy == "error":
            with pytest.raises(DataError, match="is nan"):
                vol.get_image((0, 0, 0), vol.shape)
        else:
            assert vol.get_image((0, 0, 0), vol.shape)[NAN_AT] == 0 and not vol.get_mask((0, 0, 0), vol.shape)[NAN_AT]


def test_integer_images_are_not_wrapped(tiny_volume):
    before = tiny_volume.image
    apply_nonfinite_policy(tiny_volume, "mask")
    assert tiny_volume.image is before and tiny_volume.mask is None


def test_unknown_policy(tiny_volume):
    with pytest.raises(ConfigError, match=r"\[volume\] nonfinite: expected one of 'error', 'mask', got 'drop'"):
        apply_nonfinite_policy(tiny_volume, "drop")


def test_finite_image_reads_unchanged_when_finite():
    arr = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    wrapped = FiniteImage(arr, "x")
    assert np.array_equal(wrapped[...], arr) and np.array_equal(wrapped[1, 1:3, :], arr[1, 1:3, :])
