"""The one F-beta (``diluvian.metrics``) and its users agree, including on empty masks."""

import numpy as np
import pytest

from diluvian.fill.sparse import SparseRegion
from diluvian.metrics import binary_f_score, binary_scores, confusion_counts, f_beta


def test_binary_scores_match_f_beta_precision_and_recall_on_random_masks():
    rng = np.random.default_rng(0)
    for beta in (0.5, 1.0, 2.0):
        t, p = rng.random((2, 5, 6, 7)) < 0.4
        tp, fp, fn, _ = confusion_counts(t, p)
        f, precision, recall = binary_scores(t, p, beta)
        assert precision == pytest.approx(tp / (tp + fp)) and recall == pytest.approx(tp / (tp + fn))
        assert f == pytest.approx((1 + beta**2) * precision * recall / (beta**2 * precision + recall))
        assert f == f_beta(tp, fp, fn, beta) == binary_f_score(t, p, beta)


@pytest.mark.parametrize("target, prediction", [
    (np.zeros(8, bool), np.zeros(8, bool)),  # nothing to find, nothing found
    (np.zeros(8, bool), np.ones(8, bool)),
    (np.ones(8, bool), np.zeros(8, bool)),
])
def test_no_true_positives_scores_zero_everywhere(target, prediction):
    assert binary_f_score(target, prediction) == 0.0
    assert binary_scores(target, prediction)[0] == 0.0


class _FixedMask:
    """Stands in for a filled Region: a fixed mask."""

    def __init__(self, mask):
        self.mask, self.shape = mask, mask.shape

    def get_mask(self, start, stop):
        return self.mask


def test_sparse_fill_scores_use_the_same_f_beta():
    """Sparse fill once scored an empty target and empty prediction 1.0 where metrics said 0.0."""
    empty = np.zeros((3, 4, 5), bool)
    r = SparseRegion("v", 0, None, empty.astype(np.float32), empty, _FixedMask(np.zeros(empty.shape)))
    assert r.scores(0.5, 0.5) == (0.0, 0.0, 0.0)
    rng = np.random.default_rng(1)
    target, mask = rng.random((3, 4, 5)) < 0.5, rng.random((3, 4, 5))
    r = SparseRegion("v", 0, None, mask.astype(np.float32), target, _FixedMask(mask))
    assert r.scores(0.6, 0.5) == binary_scores(target, mask >= 0.6, 0.5)
