"""Augmentations: each function on hand-made arrays; image, label mask and seed stay consistent."""

import dataclasses

import numpy as np
import pytest

from diluvian.augment import (
    add_noise,
    adjust_contrast,
    augment_subvolume,
    blend_artifacts,
    clip_image,
    load_artifacts,
    mirror,
    misalign,
    missing_sections,
    permute_axes,
)
from diluvian.config import ContrastAugment, MisalignmentAugment, TrainingConfig
from diluvian.volumes import Subvolume


def ramp(shape=(5, 6, 7)):
    """Every voxel a distinct value in [0, 1)."""
    return (np.arange(np.prod(shape), dtype=np.float32) / np.prod(shape)).reshape(shape)


def label_around(shape, seed, margin=0):
    m = np.zeros(tuple(s - 2 * margin for s in shape), dtype=bool)
    s = tuple(int(v) - margin for v in seed)
    m[s] = True
    m[max(s[0] - 1, 0), s[1], s[2]] = True
    return m


# --------------------------------------------------------------------------- geometric


def test_permute_axes_keeps_seed_on_its_voxel():
    image = ramp((4, 5, 6))
    seed = np.array([1, 3, 2])
    label = label_around(image.shape, seed)
    out, out_label, out_seed, margin = permute_axes(image, label, seed, (2, 0, 1), label_margin=(0, 1, 2))
    assert out.shape == (6, 4, 5) and out_label.shape == (6, 4, 5)
    assert out[tuple(out_seed)] == image[tuple(seed)]
    assert out_label[tuple(out_seed)]
    assert margin.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(out, image.transpose(2, 0, 1))
    assert image.shape == (4, 5, 6)  # input untouched


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mirror_moves_seed_with_the_data(axis):
    image = ramp()
    seed = np.array([1, 2, 3])
    label = label_around(image.shape, seed)
    out, out_label, out_seed = mirror(image, label, seed, axis)
    assert out_seed[axis] == image.shape[axis] - 1 - seed[axis]
    assert out[tuple(out_seed)] == image[tuple(seed)]
    assert out_label[tuple(out_seed)]
    np.testing.assert_array_equal(out_label, np.flip(label, axis))


def test_mirror_with_label_margin_stays_aligned():
    image = ramp((7, 7, 7))
    seed = np.array([2, 3, 4])
    margin = 1
    label = label_around(image.shape, seed, margin)
    out, out_label, out_seed = mirror(image, label, seed, 2)
    assert out_label[tuple(out_seed - margin)]


def test_misalignment_shifts_image_and_label_identically_and_never_the_seed_section():
    rng = np.random.default_rng(3)
    labels = np.zeros((9, 12, 12), dtype=bool)
    labels[:, 3:8, 4:9] = True
    image = labels.astype(np.float32)
    seed = np.array([4, 5, 6])
    out, out_label = misalign(image, labels, seed, axis=0, prob=1.0, max_shift=2, rng=rng)
    np.testing.assert_array_equal(out, out_label.astype(np.float32))  # shifted identically
    np.testing.assert_array_equal(out[4], image[4])  # the seed's section never moves
    assert not np.array_equal(out, image)  # something moved
    assert out_label[tuple(seed)]


def test_misalignment_with_label_margin():
    rng = np.random.default_rng(0)
    full = np.zeros((9, 12, 12), dtype=bool)
    full[:, 3:8, 4:9] = True
    margin = np.array([1, 2, 2])
    label = full[1:-1, 2:-2, 2:-2].copy()
    seed = np.array([4, 5, 6])
    out, out_label = misalign(full.astype(np.float32), label, seed, 0, 1.0, 2, rng, label_margin=margin)
    # the label crop is the image's crop after the shift (away from the in-plane borders)
    inner = out[1:-1, 2:-2, 2:-2]
    np.testing.assert_array_equal(inner[:, 2:-2, 2:-2], out_label[:, 2:-2, 2:-2].astype(np.float32))


def test_misalignment_off_is_identity():
    image = ramp()
    out, lab = misalign(image, None, (2, 2, 2), 0, 0.0, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    assert lab is None


# --------------------------------------------------------------------------- intensity


def test_noise_is_constant_per_section():
    image = np.ones((4, 5, 6), dtype=np.float32)
    out = add_noise(image, 0, 0.1, 0.1, np.random.default_rng(0))
    for z in range(4):
        assert np.ptp(out[z]) == 0
    assert np.ptp(out[:, 0, 0]) > 0
    whole = add_noise(image, -1, 0.1, 0.1, np.random.default_rng(0))
    assert np.ptp(whole) == 0 and whole.flat[0] != 1.0


def test_missing_sections_never_blank_the_seed_section():
    image = np.ones((6, 3, 3), dtype=np.float32)
    seed = (2, 1, 1)
    out = missing_sections(image, 0, 1.0, seed, np.random.default_rng(0))
    assert (out[2] == 1).all()
    assert (np.delete(out, 2, axis=0) == 0).all()
    out = missing_sections(image, 1, 1.0, seed, np.random.default_rng(0))
    assert (out[:, 1] == 1).all() and (out[:, 0] == 0).all()
    assert (image == 1).all()


def test_contrast_follows_the_formula():
    image = ramp((3, 4, 4))
    aug = ContrastAugment(prob=1.0)
    out = adjust_contrast(image, 0, 1.0, aug.scaling_mean, aug.scaling_std, aug.center_mean, aug.center_std,
                          np.random.default_rng(7))
    rng = np.random.default_rng(7)
    rng.random(3)
    s = rng.normal(aug.scaling_mean, aug.scaling_std)
    c = rng.normal(aug.center_mean, aug.center_std)
    lo, hi = image.min(), image.max()
    np.testing.assert_allclose(out, s * (image - lo) + 0.5 * s * c * (hi - lo) + lo, rtol=1e-5)


def test_contrast_only_touches_selected_sections():
    image = ramp((50, 2, 2))
    out = adjust_contrast(image, 0, 0.2, 0.5, 0.1, 1.2, 0.2, np.random.default_rng(1))
    changed = ~np.isclose(out, image).all(axis=(1, 2))
    assert 0 < changed.sum() < 50


def test_blend_artifacts_uses_alpha():
    image = np.full((3, 4, 4), 0.5, dtype=np.float32)
    art = np.full((2, 6, 6), 0.9, dtype=np.float32)
    alpha = np.zeros((2, 6, 6), dtype=np.float32)
    alpha[:, :, :] = 1.0
    alpha[0] = 0.0  # section 0 is all-transparent: never chosen
    out = blend_artifacts(image, 0, 1.0, art, alpha, np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.9)
    half = alpha * 0.5
    out = blend_artifacts(image, 0, 1.0, art, half, np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.7)
    out = blend_artifacts(image, 0, 0.0, art, alpha, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)


def test_clip():
    out = clip_image(np.array([-1.0, 0.5, 2.0]))
    assert out.tolist() == [0.0, 0.5, 1.0] and out.dtype == np.float32


def test_load_artifacts_from_a_dataset_toml(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "art.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.full((2, 8, 8), 128, dtype=np.uint8)
        f["alpha"] = np.full((2, 8, 8), 255, dtype=np.uint8)
    toml = tmp_path / "art.toml"
    toml.write_text(f'[[dataset]]\nname = "Artifacts"\nhdf5_file = "{path}"\nimage_dataset = "raw"\n'
                    f'mask_dataset = "alpha"\nresolution = [1, 1, 1]\n')
    image, alpha = load_artifacts(str(toml))
    assert image.shape == (2, 8, 8) and np.allclose(image, 0.5) and np.allclose(alpha, 1.0)


# --------------------------------------------------------------------------- the chain


def subvolume(shape=(9, 11, 11), margin=1):
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    seed = np.array([s // 2 for s in shape])
    label = np.zeros(tuple(s - 2 * margin for s in shape), dtype=bool)
    label[tuple(slice(int(c) - margin - 2, int(c) - margin + 3) for c in seed)] = True
    return Subvolume(image=image, label_mask=label, seed=seed, label_id=7, label_margin=np.full(3, margin))


def every_augmentation():
    return TrainingConfig(augment_permute_axes=((0, 2, 1), (1, 0, 2)),
                          augment_misalignment=(MisalignmentAugment(prob=0.5, max_shift=2),))


@pytest.mark.parametrize("seed", range(8))
def test_augment_subvolume_keeps_seed_in_object(seed):
    sub = subvolume()
    before = sub.image.copy()
    out = augment_subvolume(sub, every_augmentation(), np.random.default_rng(seed))
    assert out.image.dtype == np.float32 and out.image.min() >= 0 and out.image.max() <= 1
    assert out.image.shape == sub.image.shape  # (1, 0, 2) would change the shape: skipped
    assert out.label_mask.shape == sub.label_mask.shape
    assert out.has_seed_in_mask()
    assert out.label_id == 7
    np.testing.assert_array_equal(sub.image, before)


def test_augment_subvolume_is_deterministic_for_a_generator_seed():
    a = augment_subvolume(subvolume(), every_augmentation(), np.random.default_rng(5))
    b = augment_subvolume(subvolume(), every_augmentation(), np.random.default_rng(5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label_mask, b.label_mask)


def test_augment_subvolume_with_nothing_configured_only_clips():
    cfg = TrainingConfig(augment_mirrors=(), augment_permute_axes=(), augment_missing_data=(), augment_noise=(),
                         augment_contrast=(), augment_misalignment=())
    sub = dataclasses.replace(subvolume(), image=subvolume().image * 2)
    out = augment_subvolume(sub, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, np.clip(sub.image, 0, 1))
