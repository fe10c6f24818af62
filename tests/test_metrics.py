"""Exact AUC / log loss / accuracy vs scikit-learn; the LR schedule vs the reference's formula."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dlrmx.train.metrics import accuracy, evaluate, log_loss, log_loss_from_logits, roc_auc
from dlrmx.train.schedule import lr_at


@pytest.mark.parametrize("n,ties", [(10, False), (1000, True), (20000, False), (5000, True)])
def test_auc_equals_sklearn(n, ties):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    s = rng.standard_normal(n) + y * 0.7
    if ties:
        s = np.round(s, 1)  # many tied scores
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_edge_cases():
    assert roc_auc([0, 1], [0.2, 0.9]) == 1.0
    assert roc_auc([1, 0], [0.2, 0.9]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_logloss_and_accuracy_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    z = rng.standard_normal(3000) * 3
    p = 1 / (1 + np.exp(-z))
    assert log_loss_from_logits(y, z) == pytest.approx(sk_log_loss(y, p), rel=1e-9)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-6)
    assert accuracy(y, p) == pytest.approx(np.mean((p > 0.5) == y))
    # stable where probabilities saturate: z = 800 would overflow exp
    assert np.isfinite(log_loss_from_logits([0, 1], [800.0, -800.0]))
    assert evaluate(y, z)["auc"] == pytest.approx(roc_auc_score(y, z))


def test_lr_schedule_reference_policy():
    # warm-up 4, decay from step 10 over 5 steps (reference counts scheduler steps from 1)
    lrs = [lr_at(s, 1.0, 4, 10, 5) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:9] == pytest.approx([1.0] * 5)
    assert lrs[9:14] == pytest.approx([(5 / 5) ** 2, (4 / 5) ** 2, (3 / 5) ** 2, (2 / 5) ** 2, (1 / 5) ** 2])
    assert lrs[14:] == pytest.approx([(1 / 5) ** 2] * 6)  # frozen at the last value
    assert [lr_at(s, 0.3, 0, 0, 0) for s in range(3)] == [0.3] * 3
