"""Exact AUC / log loss / accuracy vs scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dlrmx.train.metrics import accuracy, evaluate, log_loss, log_loss_from_logits, roc_auc


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
