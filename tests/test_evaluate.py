"""CREMI metrics: exact against scikit-image, brute-force pair counts and hand-computed answers."""

import json
import math

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

import diluvian.evaluate as ev
import diluvian.evaluate.border as ev_border
import diluvian.evaluate.scores as ev_scores
import diluvian.evaluate.table as ev_table
from diluvian.errors import ConfigError, DataError, DatasetNotFoundError
from diluvian.evaluate import (
    ContingencyTable,
    border_mask,
    compute_scores,
    evaluate_volumes,
    format_scores,
    open_label_array,
)


def score(gt, pred, **kw):
    kw.setdefault("border_threshold_nm", 0)
    kw.setdefault("progress", False)
    return evaluate_volumes(gt, pred, **kw)


def random_pair(rng, shape=(6, 20, 20), n_gt=6, n_pred=7, cell=4):
    """Blocky GT (label 0 included) and a noisy prediction (label 0 included)."""
    coarse = tuple(-(-s // cell) for s in shape)
    gt = rng.integers(0, n_gt, size=coarse)
    gt = gt.repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)[: shape[0], : shape[1], : shape[2]]
    pred = (gt * 3 + (rng.random(shape) < 0.2) * rng.integers(0, n_pred, size=shape)) % n_pred
    return gt.astype(np.uint64), pred.astype(np.uint64)


def brute_force_rand(gt, pred):
    """(precision, recall, ARAND) from ordered voxel pairs (self-pairs included), GT 0 excluded."""
    g, p = gt[gt != 0].ravel(), pred[gt != 0].ravel()
    same_g = g[:, None] == g[None, :]
    same_p = p[:, None] == p[None, :]
    both = np.count_nonzero(same_g & same_p)
    precision, recall = both / np.count_nonzero(same_p), both / np.count_nonzero(same_g)
    return precision, recall, 1 - 2 * precision * recall / (precision + recall)


def relabel_zeros(pred):
    """Every prediction-0 voxel gets a fresh id of its own."""
    out = pred.astype(np.int64).copy()
    zero = out == 0
    out[zero] = out.max() + 1 + np.arange(np.count_nonzero(zero))
    return out


# --------------------------------------------------------------------------- VOI and Rand


def test_voi_matches_skimage_split_then_merge():
    # skimage returns [H(test | true), H(true | test)] = [split, merge]: check the order by hand
    over = score(np.array([[[1, 1, 2, 2]]]), np.array([[[1, 2, 3, 4]]]))
    assert (over.voi_split, over.voi_merge) == (1.0, 0.0)
    assert variation_of_information(np.array([1, 1, 2, 2]), np.array([1, 2, 3, 4]),
                                    ignore_labels=[0]).tolist() == [1.0, 0.0]
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt, pred = random_pair(rng)
        s = score(gt, pred)
        split, merge = variation_of_information(gt, pred, ignore_labels=[0])
        assert s.voi_split == pytest.approx(split, abs=1e-12)
        assert s.voi_merge == pytest.approx(merge, abs=1e-12)


def test_rand_matches_brute_force_pairs_and_skimage_pair_convention():
    rng = np.random.default_rng(1)
    for _ in range(4):
        gt, pred = random_pair(rng, shape=(3, 8, 10))
        s = score(gt, pred, pred_zero="segment")
        precision, recall, arand = brute_force_rand(gt, pred)
        assert (s.rand_precision, s.rand_recall) == pytest.approx((precision, recall), abs=1e-12)
        assert s.adapted_rand_error == pytest.approx(arand, abs=1e-12)
        assert s.cremi_score == pytest.approx(math.sqrt(arand * (s.voi_split + s.voi_merge)), abs=1e-12)

        # skimage counts unordered pairs (subtracts the N self-pairs), and its "precision"
        # divides by the *true* sizes; from the same table sums:
        table = ContingencyTable()
        table.add(gt, pred)
        sum_n2, sum_a2, sum_b2 = ev_scores._rand_sums(table, "segment")
        n = table.n_voxels
        are, sk_prec, sk_rec = adapted_rand_error(gt, pred, ignore_labels=(0,))
        assert are == pytest.approx(1 - (sum_n2 - n) / (0.5 * (sum_a2 - n) + 0.5 * (sum_b2 - n)), abs=1e-12)
        assert sk_prec == pytest.approx((sum_n2 - n) / (sum_a2 - n), abs=1e-12)
        assert sk_rec == pytest.approx((sum_n2 - n) / (sum_b2 - n), abs=1e-12)


def test_perfect_segmentation_scores_zero():
    rng = np.random.default_rng(2)
    gt, _ = random_pair(rng)
    gt[gt == 0] = 9  # pred 0 would count as unclaimed: keep labels nonzero
    perm = np.array([0, 11, 5, 2**40 + 7, 3, 8, 6, 1, 4, 13], dtype=np.uint64)
    s = score(gt, perm[gt])
    assert (s.voi_split, s.voi_merge, s.adapted_rand_error, s.cremi_score) == (0.0, 0.0, 0.0, 0.0)
    assert (s.rand_precision, s.rand_recall) == (1.0, 1.0)
    assert s.worst_splits == [] and s.worst_merges == []
    assert s.n_gt_objects == s.n_pred_objects == len(np.unique(gt))


def test_full_merge_voi_merge_is_gt_entropy():
    rng = np.random.default_rng(3)
    gt, _ = random_pair(rng)
    s = score(gt, np.full(gt.shape, 42, dtype=np.uint32))
    _, sizes = np.unique(gt[gt != 0], return_counts=True)
    p = sizes / sizes.sum()
    assert s.voi_split == 0.0
    assert s.voi_merge == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-12)
    assert s.rand_recall == 1.0 and s.rand_precision == pytest.approx((p**2).sum())
    assert [m.pred_id for m in s.worst_merges] == [42]
    assert s.worst_merges[0].n_gt_objects == sizes.size and s.n_pred_objects == 1


def test_pred_zero_modes_match_explicit_relabelling():
    rng = np.random.default_rng(4)
    gt, pred = random_pair(rng)
    pred[rng.random(pred.shape) < 0.15] = 0
    cremi, segment = score(gt, pred, pred_zero="cremi"), score(gt, pred, pred_zero="segment")
    singletons = score(gt, relabel_zeros(pred), pred_zero="segment")
    plain = brute_force_rand(gt, pred)
    assert 0 < cremi.fraction_pred_zero < 1
    # "cremi": 0 is one segment for VOI, singletons for Rand
    assert (cremi.voi_split, cremi.voi_merge) == (segment.voi_split, segment.voi_merge)
    assert cremi.voi_split == pytest.approx(variation_of_information(gt, pred, ignore_labels=[0])[0], abs=1e-12)
    assert cremi.adapted_rand_error == pytest.approx(singletons.adapted_rand_error, abs=1e-12)
    assert cremi.rand_precision == pytest.approx(singletons.rand_precision, abs=1e-12)
    assert cremi.rand_recall == pytest.approx(singletons.rand_recall, abs=1e-12)
    assert cremi.rand_precision == pytest.approx(brute_force_rand(gt, relabel_zeros(pred))[0], abs=1e-12)
    # "segment": 0 is an ordinary label in both
    assert (segment.rand_precision, segment.rand_recall) == pytest.approx(plain[:2], abs=1e-12)
    assert cremi.adapted_rand_error != pytest.approx(segment.adapted_rand_error)


def test_worst_splits_and_merges():
    # GT 1 (8 voxels) split in halves by pred 5/6; pred 7 merges GT 2 (4 voxels) and GT 3 (2 voxels)
    # (the last column is GT 0: not evaluated)
    gt = np.array([[[1, 1, 1, 1, 2, 2, 3, 0], [1, 1, 1, 1, 2, 2, 3, 0]]]).transpose(0, 2, 1)
    pred = np.array([[[5, 5, 6, 6, 7, 7, 7, 7], [5, 5, 6, 6, 7, 7, 7, 7]]]).transpose(0, 2, 1)
    s = score(gt, pred, n_worst=3)
    n = 14
    assert s.n_voxels_evaluated == n
    assert s.worst_splits == [ev.SplitEntry(1, 8, 8 * 1.0 / n, 2)]
    merge_bits = (4 * math.log2(6 / 4) + 2 * math.log2(6 / 2)) / n
    assert s.worst_merges == [ev.MergeEntry(7, 6, pytest.approx(merge_bits), 2, ((2, 4), (3, 2)))]
    assert s.voi_split == pytest.approx(sum(e.voi_split_bits for e in s.worst_splits))
    assert s.voi_merge == pytest.approx(merge_bits)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["worst_merges"][0]["gt_overlaps"] == [{"gt_id": 2, "voxels": 4}, {"gt_id": 3, "voxels": 2}]
    assert d["worst_splits"][0]["gt_id"] == 1 and d["pred_zero"] == "cremi" and d["border_threshold_nm"] is None
    text = format_scores(s)
    for needle in ("VOI split", "VOI merge", "Adapted Rand error", "CREMI score", "GT objects",
                   "Unclaimed", "Worst splits", "Worst merges", "2:4, 3:2"):
        assert needle in text


# --------------------------------------------------------------------------- dtypes, ids, chunking


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int32, np.int64])
def test_dtypes_give_the_same_scores(dtype):
    rng = np.random.default_rng(5)
    gt, pred = random_pair(rng)
    ref = score(gt, pred)
    s = score(gt.astype(dtype), pred.astype(dtype))
    assert s.to_dict() == ref.to_dict()


def assert_same_scores(a, b):
    """Equal up to float summation order (relabelling reorders the table)."""
    a, b = a.to_dict(), b.to_dict()
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert value == (pytest.approx(b[key], rel=1e-12, abs=1e-15) if isinstance(value, float) else b[key]), key


def test_noncontiguous_huge_and_negative_ids():
    rng = np.random.default_rng(6)
    gt, pred = random_pair(rng)
    ref = score(gt, pred, n_worst=0)
    gt_map = np.array([0, 2**40 + 7, 3, 2**63 + 1, 2**64 - 2, 17], dtype=np.uint64)
    pred_map = np.array([0, 2**40 + 7, 1, 2**62, 999_999_999_999, 5, 2**64 - 1], dtype=np.uint64)
    assert_same_scores(score(gt_map[gt], pred_map[pred], n_worst=0), ref)
    signed = np.array([0, -5, 3, -(2**40), 2**40, 7, -1], dtype=np.int64)
    assert_same_scores(score(gt_map[gt], signed[pred], n_worst=0), ref)
    assert_same_scores(score(gt_map[gt].view(np.int64), signed[pred], n_worst=0), ref)
    s = score(gt_map[gt], pred_map[pred], n_worst=5)
    assert {e.gt_id for e in s.worst_splits} <= {int(v) for v in gt_map[1:]}
    assert {e.pred_id for e in s.worst_merges} <= {int(v) for v in pred_map}


@pytest.mark.parametrize("border_nm", [0, 6.0, 8.0, 10.0])
def test_chunked_equals_unchunked(border_nm):
    rng = np.random.default_rng(7)
    gt, pred = random_pair(rng, shape=(7, 40, 37), n_gt=9, n_pred=11, cell=12)
    pred[rng.random(pred.shape) < 0.05] = 0
    kw = dict(border_threshold_nm=border_nm, resolution=(40, 4, 4))
    ref = score(gt, pred, chunk_shape=(100, 100, 100), **kw).to_dict()
    assert ref["n_voxels_evaluated"] > 0.1 * gt.size
    for chunk in [(1, 512, 512), (3, 5, 7), (2, 40, 4), (7, 1, 37), (4, 9, 100)]:
        assert score(gt, pred, chunk_shape=chunk, **kw).to_dict() == ref, chunk


def brute_force_table(gt, pred):
    g, q = gt.ravel().astype(np.uint64), pred.ravel().astype(np.uint64)
    keep = g != 0
    pairs, counts = np.unique(np.stack([g[keep], q[keep]]), axis=1, return_counts=True)
    return pairs[0], pairs[1], counts


@pytest.mark.parametrize("kind", ["runs", "noise", "huge ids", "large key space"])
def test_table_matches_brute_force(kind):
    """Every counting path: run-length encoded or direct, offset keys, compacted ids, sort."""
    rng = np.random.default_rng(13)
    if kind == "runs":
        gt, pred = random_pair(rng, shape=(5, 30, 40), cell=6)
    elif kind == "noise":
        gt, pred = rng.integers(0, 30, (4, 30, 40)), rng.integers(0, 40, (4, 30, 40))
    elif kind == "huge ids":
        gt = rng.choice(np.array([0, 5, 2**40, 2**63 + 9], np.uint64), (4, 30, 40))
        pred = rng.choice(np.array([0, 1, 2**50, 2**64 - 1], np.uint64), (4, 30, 40))
    else:  # 1500 x 1500 possible pairs: more than the dense bincount table takes
        gt, pred = rng.permutation(3000) % 1500 + 1, rng.integers(0, 1500, 3000) * 7
    table = ContingencyTable()
    table.add(gt, pred)
    g, q, c = brute_force_table(gt, pred)
    np.testing.assert_array_equal(table.gt_ids, g)
    np.testing.assert_array_equal(table.pred_ids.astype(np.uint64), q)
    np.testing.assert_array_equal(table.counts, c)


def test_table_reduction_and_merge(monkeypatch):
    monkeypatch.setattr(ev_table, "_PENDING_PAIRS", 3)
    rng = np.random.default_rng(8)
    gt, pred = random_pair(rng)
    whole = ContingencyTable()
    whole.add(gt, pred)
    parts, other = ContingencyTable(), ContingencyTable()
    for z in range(gt.shape[0]):
        (parts if z % 2 else other).add(gt[z], pred[z])
    parts.merge(other)
    for attr in ("gt_ids", "pred_ids", "counts"):
        np.testing.assert_array_equal(getattr(parts, attr), getattr(whole, attr))
    assert whole.n_voxels == np.count_nonzero(gt)
    assert compute_scores(parts) == compute_scores(whole)
    masked = ContingencyTable()
    masked.add(gt, pred, valid_mask=np.zeros(gt.shape, bool))
    assert masked.n_pairs == 0


# --------------------------------------------------------------------------- border mask

CENTRE = np.ones((7, 7), dtype=np.uint64)
CENTRE[3, 3] = 2


def picture(rows):
    return np.array([[c == "#" for c in r] for r in rows])


def test_border_mask_hand_made():
    # boundary pixels: the centre and its 4 neighbours (the diagonals' 4-neighbours are all 1)
    plus = picture([".......",
                    ".......",
                    "...#...",
                    "..###..",
                    "...#...",
                    ".......",
                    "......."])
    np.testing.assert_array_equal(border_mask(CENTRE, 0), plus)
    np.testing.assert_array_equal(border_mask(CENTRE, 0.99), plus)
    # distance <= 1 (inclusive): adds the 4 diagonal and 4 outer axial pixels
    np.testing.assert_array_equal(border_mask(CENTRE, 1.0), picture([".......",
                                                                     "...#...",
                                                                     "..###..",
                                                                     ".#####.",
                                                                     "..###..",
                                                                     "...#...",
                                                                     "......."]))
    # distance <= 1.5: squared distances 0, 1, 2
    np.testing.assert_array_equal(border_mask(CENTRE, 1.5), picture([".......",
                                                                     "..###..",
                                                                     ".#####.",
                                                                     ".#####.",
                                                                     ".#####.",
                                                                     "..###..",
                                                                     "......."]))
    # image edges are not boundaries; a uniform section has no border
    assert not border_mask(np.full((4, 5), 3), 10).any()
    np.testing.assert_array_equal(border_mask(np.array([[1, 1, 2, 2, 2]]), 1.0), [[1, 1, 1, 1, 0]])


def test_border_mask_matches_brute_force_distances():
    rng = np.random.default_rng(9)
    sec = rng.integers(1, 4, size=(3, 4)).repeat(4, 0).repeat(3, 1)
    boundary = np.zeros(sec.shape, bool)
    for y in range(sec.shape[0]):
        for x in range(sec.shape[1]):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < sec.shape[0] and 0 <= xx < sec.shape[1] and sec[yy, xx] != sec[y, x]:
                    boundary[y, x] = True
    by, bx = np.nonzero(boundary)
    yy, xx = np.indices(sec.shape)
    dist = np.sqrt((yy[..., None] - by) ** 2 + (xx[..., None] - bx) ** 2).min(-1)
    for t in (0, 1, 1.5, 2, 2.3, 3):
        np.testing.assert_array_equal(border_mask(sec, t), dist <= t)


def test_evaluate_applies_border_in_nm():
    gt = np.stack([CENTRE, CENTRE])
    pred = np.ones_like(gt)
    s = score(gt, pred, border_threshold_nm=6.0, resolution=(40, 4, 4))  # 1.5 px: 21 of 49 excluded
    assert s.n_voxels_evaluated == 2 * (49 - 21)
    assert (s.border_threshold_nm, s.border_threshold_px) == (6.0, 1.5)
    assert s.n_gt_objects == 1 and s.voi_merge == 0.0  # the centre object is masked away
    # a threshold of 0 turns the mask off, as in cremi_python
    assert score(gt, pred, border_threshold_nm=0, resolution=(40, 4, 4)).n_voxels_evaluated == 98


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise():
    a = np.ones((2, 3, 4), np.uint32)
    with pytest.raises(DataError, match=r"ground truth \[2, 3, 4\], prediction \[2, 3, 5\]"):
        score(a, np.ones((2, 3, 5), np.uint32))
    with pytest.raises(DataError, match="prediction: expected an integer label dtype, got float32"):
        score(a, a.astype(np.float32))
    with pytest.raises(DataError, match="ground truth: .* got bool"):
        score(a.astype(bool), a)
    with pytest.raises(DataError, match="border threshold must be >= 0"):
        score(a, a, border_threshold_nm=-1.0, resolution=(40, 4, 4))
    with pytest.raises(DataError, match="needs the resolution"):
        score(a, a, border_threshold_nm=25.0)
    with pytest.raises(DataError, match="equal Y and X"):
        score(a, a, border_threshold_nm=25.0, resolution=(40, 4, 5))
    with pytest.raises(DataError, match="expected 3D"):
        score(a[0], a[0])
    with pytest.raises(DataError, match="nothing to evaluate"):
        score(np.zeros_like(a), a)
    with pytest.raises(ConfigError, match="pred_zero"):
        score(a, a, pred_zero="ignore")
    with pytest.raises(ConfigError, match="chunk_shape"):
        score(a, a, chunk_shape=(0, 4, 4))
    with pytest.raises(DataError, match="threshold must be >= 0"):
        border_mask(a[0], -0.5)


# --------------------------------------------------------------------------- files and command line


def test_open_label_array_hdf5_and_zarr(tmp_path):
    import h5py
    import zarr

    rng = np.random.default_rng(10)
    gt, pred = random_pair(rng)
    h5 = tmp_path / "vol.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("volumes/labels/neuron_ids", data=gt, chunks=(2, 8, 8))
        f["volumes/labels/neuron_ids"].attrs["resolution"] = (40.0, 4.0, 4.0)
    arr, res = open_label_array(f"{h5}:volumes/labels/neuron_ids")
    assert res.tolist() == [40.0, 4.0, 4.0] and arr.shape == gt.shape
    np.testing.assert_array_equal(arr[1:3], gt[1:3])

    store = tmp_path / "seg.zarr"
    group = zarr.open_group(str(store), mode="w")
    z = group.create_array("seg", shape=pred.shape, dtype=pred.dtype, chunks=(2, 8, 8))
    z[...] = pred
    single = zarr.open_array(str(tmp_path / "single.zarr"), mode="w", shape=pred.shape, dtype=pred.dtype)
    single[...] = pred
    zarr_arr, zres = open_label_array(f"{store}:seg")
    assert zres is None
    np.testing.assert_array_equal(zarr_arr[...], pred)
    np.testing.assert_array_equal(open_label_array(str(tmp_path / "single.zarr"))[0][...], pred)
    expected = score(gt, pred, border_threshold_nm=10, resolution=(40, 4, 4))
    assert score(arr, zarr_arr, border_threshold_nm=10, resolution=(40, 4, 4), chunk_shape=(2, 7, 9)) == expected

    with pytest.raises(DatasetNotFoundError, match="nope.h5"):
        open_label_array(f"{tmp_path / 'nope.h5'}:labels")
    with pytest.raises(DatasetNotFoundError, match=r"vol\.h5: no dataset 'volumes/missing'"):
        open_label_array(f"{h5}:volumes/missing")
    with pytest.raises(DataError, match="volumes/labels/neuron_ids"):  # lists the datasets
        open_label_array(str(h5))
    with pytest.raises(DatasetNotFoundError, match=r"seg\.zarr: no array 'other'"):
        open_label_array(f"{store}:other")


def test_border_mask_matches_distance_transform():
    """cremi_python's rule, d <= t with d from scipy's EDT of the non-boundary pixels, at many thresholds."""
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(12)
    sec = rng.integers(1, 5, size=(6, 7)).repeat(9, 0).repeat(7, 1)[:50, :47]
    sec[20:23, 30:31] = 9  # a thin object: boundaries on both sides
    boundary = ev_border._boundaries(sec[None])[0]
    dist = distance_transform_edt(~boundary)
    for t in (0, 0.5, 1, math.sqrt(2), math.sqrt(2) - 1e-12, 2, 2.5, 3, math.sqrt(8), 6.25, 7, 10.5, 30, 100):
        np.testing.assert_array_equal(border_mask(sec, t), dist <= t, err_msg=f"threshold {t}")
    block = np.stack([sec, sec[::-1, ::-1], np.full_like(sec, 4)])
    excluded = ev_border._border_mask_block(block, 6.25)
    for z in range(3):
        np.testing.assert_array_equal(excluded[z], border_mask(block[z], 6.25))


def test_coarser_prediction_is_upsampled_to_the_ground_truth(tmp_path):
    """A fill at 20 nm (cpu_real) is scored against 10 nm ground truth by nearest-neighbour upsampling."""
    import h5py

    from diluvian.evaluate import UpsampledLabels, evaluate_named_volumes

    rng = np.random.default_rng(5)
    coarse = rng.integers(1, 6, size=(4, 6, 7)).astype(np.uint64)
    gt = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[:, :, :13]  # odd X: 13 = 2 * 7 - 1
    h5 = tmp_path / "pair.h5"
    with h5py.File(h5, "w") as f:
        f["gt"] = gt
        f["gt"].attrs["resolution"] = (10.0, 10.0, 10.0)
        f["pred"] = coarse
        f["pred"].attrs["resolution"] = (20.0, 20.0, 20.0)
        f["pred15"] = coarse
        f["pred15"].attrs["resolution"] = (15.0, 15.0, 15.0)
    s = evaluate_named_volumes({}, f"{h5}:gt", f"{h5}:pred", border_threshold_nm=0)
    assert s.voi_split == 0 and s.voi_merge == 0 and s.n_voxels_evaluated == gt.size
    shifted = UpsampledLabels(coarse, (2, 2, 2), gt.shape)
    np.testing.assert_array_equal(shifted[1:7, 3:9, 5:13], gt[1:7, 3:9, 5:13])
    with pytest.raises(DataError, match="integer multiple"):
        evaluate_named_volumes({}, f"{h5}:gt", f"{h5}:pred15", border_threshold_nm=0)
