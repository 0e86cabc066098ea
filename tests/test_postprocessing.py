"""Body helpers of diluvian.postprocessing against their scipy definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from diluvian.postprocessing import (FACE_CONNECTIVITY, bounding_box, crop_to_nonzero, dilate_faces,
                                     label_components, seed_component)


def blobs(shape=(14, 17, 19), seed=0, fraction=0.5):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return field > np.quantile(field, fraction)


@pytest.mark.parametrize("seed", range(4))
def test_label_components_equals_scipy_label(seed):
    binary = blobs(seed=seed)
    expected, n = ndimage.label(binary, structure=FACE_CONNECTIVITY)
    labels, m = label_components(binary[:, :, :])
    assert m == n > 1
    np.testing.assert_array_equal(labels, expected)
    # a strided view and an empty array
    view = binary[:, ::2]
    np.testing.assert_array_equal(label_components(view)[0], ndimage.label(view, FACE_CONNECTIVITY)[0])
    labels, m = label_components(np.zeros((0, 3, 4), dtype=bool))
    assert m == 0 and labels.shape == (0, 3, 4)


@pytest.mark.parametrize("iterations", [0, 1, 2, 3])
def test_dilate_faces_equals_scipy_binary_dilation(iterations):
    mask = blobs(fraction=0.97, seed=iterations)
    mask[0, 0, 0] = mask[-1, -1, -1] = True  # touches the array's faces
    expected = mask.copy() if iterations == 0 else \
        ndimage.binary_dilation(mask, structure=FACE_CONNECTIVITY, iterations=iterations)
    out = dilate_faces(mask, iterations)
    np.testing.assert_array_equal(out, expected)
    assert out is not mask


def test_bounding_box_and_crop():
    mask = np.zeros((6, 7, 8), dtype=bool)
    assert bounding_box(mask) is None
    start, crop = crop_to_nonzero(mask)
    assert crop.size == 0 and start.tolist() == [0, 0, 0]
    mask[1, 5, 2] = mask[3, 2, 7] = True
    start, stop = bounding_box(mask)
    assert start.tolist() == [1, 2, 2] and stop.tolist() == [4, 6, 8]
    start, crop = crop_to_nonzero(mask)
    assert crop.shape == (3, 4, 6) and crop.sum() == 2


def test_seed_component_treats_never_predicted_as_outside():
    probs = np.full((5, 5, 9), np.nan, dtype=np.float32)
    probs[:, :, :4] = 0.9
    probs[:, :, 5:] = 0.9  # apart from the seed's side by a NaN plane
    comp = seed_component(probs, (2, 2, 1), 0.6)
    assert comp.sum() == 5 * 5 * 4 and not comp[:, :, 4:].any()
    assert seed_component(probs, (2, 2, 4), 0.6) is None
    # with a threshold of 0, never predicted counts as 0 (and joins the sides), as before
    assert seed_component(probs, (2, 2, 1), 0.0).all()
