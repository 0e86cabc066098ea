"""Claiming the voxels a dense fill left unclaimed (diluvian.claim)."""

from __future__ import annotations

import dataclasses

import numpy as np

import conftest
import pytest

from diluvian.claim import claim_result, claim_unclaimed
from diluvian.config import Config, PostprocessingConfig
from diluvian.postprocessing import boundary_evidence, membrane_mask


def cells_volume(shape=(10, 20, 40), walls=(13, 26), seed=0):
    return conftest.cells_volume(shape, walls, seed)


def test_boundary_evidence_finds_the_membranes():
    image, gt = cells_volume()
    walls = membrane_mask(boundary_evidence(image, 1.0), 0.15)
    assert walls[gt == 0].mean() > 0.9  # the membranes are found
    assert walls[:, :, 4:9].mean() < 0.05  # cell interiors are not membranes
    assert not membrane_mask(boundary_evidence(image, 1.0), 0.0).any()



def test_closed_form_largest_eigenvalue_equals_lapack():
    """The closed-form largest Hessian eigenvalue is skimage's (LAPACK per voxel), degenerate matrices included."""
    from scipy import ndimage
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    from diluvian.postprocessing import largest_symmetric_eigenvalue

    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.random((12, 20, 24)).astype(np.float32), 1.0)
    hessian = hessian_matrix(image, sigma=1.0, order="rc", use_gaussian_derivatives=False)
    expected = hessian_matrix_eigvals(hessian)[0]
    got = largest_symmetric_eigenvalue(*hessian, chunk=1000)  # several chunks
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7 * np.abs(expected).max())
    # zero, multiple-of-identity and rank-one matrices: p = 0 and r = ±1
    z = np.zeros(3)
    cases = [(z, z, z, z, z, z), (np.full(3, 2.0), z, z, np.full(3, 2.0), z, np.full(3, 2.0)),
             (np.ones(3), np.ones(3), np.ones(3), np.ones(3), np.ones(3), np.ones(3))]
    for entries in cases:
        m = np.array([[entries[0][0], entries[1][0], entries[2][0]], [entries[1][0], entries[3][0], entries[4][0]],
                      [entries[2][0], entries[4][0], entries[5][0]]])
        np.testing.assert_allclose(largest_symmetric_eigenvalue(*entries), np.linalg.eigvalsh(m).max(), atol=1e-6)
    # and it is what the boundary evidence uses
    np.testing.assert_array_equal(boundary_evidence(image, 1.0), np.maximum(got, 0))

def test_claims_unclaimed_voxels_and_keeps_bodies():
    image, gt = cells_volume()
    labels = np.zeros_like(gt)
    labels[:, :, :6] = 5  # a body covering part of cell 1
    labels[:, :, 30:34] = 9  # a body inside cell 3
    out, stats = claim_unclaimed(labels, image, grow_distance=12, min_size=20, membrane_fraction=0.15)
    assert (out[labels > 0] == labels[labels > 0]).all()  # existing labels are kept
    assert (out > 0).all() and stats.unclaimed_after == 0  # every voxel claimed
    assert (out[gt == 1] == 5).mean() > 0.99  # body 5 grew over its whole cell
    assert (out[gt == 3] == 9).mean() > 0.99
    # cell 2, which no body reached, is a new segment of its own, not part of a neighbour
    new = np.unique(out[gt == 2])
    assert len(new) == 1 and new[0] not in (5, 9)
    assert stats.new_segments == 1 and stats.grown > 0


def test_does_not_merge_two_objects_a_membrane_separates():
    image, gt = cells_volume(walls=(20,))
    labels = np.zeros_like(gt)
    labels[:, :, 2:5] = 1
    out, _ = claim_unclaimed(labels, image, grow_distance=50, min_size=20, membrane_fraction=0.15)
    assert (out[gt == 1] == 1).mean() > 0.99
    assert (out[gt == 2] == 1).mean() < 0.01  # the body did not leak through the membrane


def test_growth_is_bounded_and_small_pieces_go_to_neighbours():
    image, gt = cells_volume(walls=(20,))
    labels = np.zeros_like(gt)
    labels[:, :, :3] = 1
    out, stats = claim_unclaimed(labels, image, grow_distance=2, min_size=10**6, membrane_fraction=0.15)
    # growth stops after 2 voxels; with no piece large enough for a label, the rest goes to neighbours
    assert 0.9 * 400 <= stats.grown <= 400  # 2 voxels x 10 x 20 (minus a few noisy 'membrane' voxels)
    assert stats.new_segments == 0 and (out == 1).all()
    out, stats = claim_unclaimed(labels, image, grow_distance=2, min_size=10**6, membrane_fraction=0.15,
                                 assign_rest=False)
    assert stats.unclaimed_after > 0 and (out[:, :, 10] == 0).all()


def test_background_label_other_than_zero():
    image, gt = cells_volume(walls=(20,))
    labels = np.full(gt.shape, 7, np.uint64)  # 7 = unclaimed
    labels[:, :, 2:5] = 0  # label 0 is an ordinary body here
    out, _ = claim_unclaimed(labels, image, grow_distance=50, min_size=20, membrane_fraction=0.15, background=7)
    assert (out != 7).all()
    assert (out[gt == 1] == 0).mean() > 0.99
    other = np.unique(out[gt == 2])
    assert len(other) == 1 and other[0] not in (0, 7)


def test_claim_result_follows_the_config():
    from diluvian.fill.state import FillResult, FillState, FillStats

    image, gt = cells_volume(walls=(20,))
    labels = np.zeros_like(gt)
    labels[:, :, 2:5] = 1
    result = FillResult(labels=labels, conflict_count=np.zeros(gt.shape, np.uint32), stats=FillStats(),
                        state=FillState(seeds=np.zeros((0, 3), np.int64), next_seed=0, next_label=2, entropy=0,
                                        options={}, volume="array", bounds=None))
    cfg = Config(postprocessing=PostprocessingConfig(membrane_fraction=0.15, claim_grow_distance=50))
    claimed = claim_result(image, result, cfg)
    assert (claimed.labels > 0).all() and (claimed.labels[gt == 1] == 1).mean() > 0.99
    off = dataclasses.replace(cfg, postprocessing=dataclasses.replace(cfg.postprocessing, claim=False))
    assert claim_result(image, result, off) is result


def test_shape_mismatch_is_an_error():
    image, gt = cells_volume()
    with pytest.raises(ValueError, match="differ"):
        claim_unclaimed(gt[:, :, :5], image)


@pytest.mark.parametrize("claim", [True, False])
def test_fill_to_files_claims_by_default(tmp_path, claim):
    """``diluvian fill`` (fill_volumes_to_files) claims the voxels its bodies left, unless ``claim = false``."""
    import h5py

    from diluvian.config import ModelConfig
    from diluvian.fill.run import fill_volumes_to_files
    from diluvian.volumes.base import NdarrayVolume

    image, gt = cells_volume(walls=(20,))
    image[:, :, :10] += 0.1  # each cell has a brighter half, all that the model below recognises
    image[:, :, 22:31] += 0.1
    model = ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9), output_fov_move_fraction=2)
    cfg = Config(model=model, postprocessing=PostprocessingConfig(min_body_size=10, membrane_fraction=0.15,
                                                                   claim=claim, claim_grow_distance=50))

    def half_cells(images, masks):
        return np.where(images > 0.75, 0.95, 0.05).astype(np.float32)

    volume = NdarrayVolume("toy", image, gt, resolution=(10.0, 10.0, 10.0))
    fill_volumes_to_files({"toy": volume}, half_cells, cfg, str(tmp_path / "seg"), checkpoint_interval=0,
                          progress=False, seeds=np.array([[5, 10, 5], [5, 10, 26]]), ordered_seeds=True)
    with h5py.File(tmp_path / "seg.hdf5", "r") as f:
        labels = f["volumes/labels/neuron_ids"][:]
    assert ((labels == 0).mean() == 0) == claim
    assert ((labels[gt == 1] == 0).mean() > 0.3) != claim  # the dimmer halves are claimed only with claim on
    assert len(np.setdiff1d(np.unique(labels[gt == 1]), [0])) == 1  # no cell split, none merged
    assert not set(np.unique(labels[gt == 1])) - {0} & set(np.unique(labels[gt == 2])) - {0}


def test_split_distance_splits_unclaimed_pieces_at_their_necks():
    # two unclaimed balls joined by a thin neck (a gap in their membrane), no body near them
    z, y, x = np.indices((12, 12, 36))
    balls = ((z - 6) ** 2 + (y - 6) ** 2 + (x - 8) ** 2 < 25) | ((z - 6) ** 2 + (y - 6) ** 2 + (x - 27) ** 2 < 25)
    neck = (abs(z - 6) <= 1) & (abs(y - 6) <= 1) & (x > 8) & (x < 27)
    image = np.where(balls | neck, 0.7, 0.1).astype(np.float32)
    labels = np.where(balls | neck, 0, 9).astype(np.uint64)  # everything around them is one body
    whole, _ = claim_unclaimed(labels, image, grow_distance=0, min_size=20, membrane_fraction=0)
    split, stats = claim_unclaimed(labels, image, grow_distance=0, min_size=20, membrane_fraction=0,
                                   split_distance=5)
    left, right = (6, 6, 8), (6, 6, 27)
    assert whole[left] == whole[right] not in (0, 9)
    assert split[left] != split[right] and not {split[left], split[right]} & {0, 9} and stats.new_segments == 2
