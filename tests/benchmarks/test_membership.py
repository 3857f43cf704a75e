"""Membership-inference scoring against independent computations (rank counts, by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsparsify.bench.membership import (
    attack_metrics,
    calibrated_scores,
    loss_scores,
    squared_errors,
)


def _auc_by_counting(scores: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a member > score of a non-member) + half the ties, over all pairs."""
    pos, neg = scores[truth], scores[~truth]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def test_auc_and_tpr_at_low_fpr_match_a_count_by_hand() -> None:
    rng = np.random.default_rng(3)
    truth = np.arange(600) < 200
    scores = rng.normal(0, 1, 600) + 0.8 * truth
    got = attack_metrics(scores, truth)
    assert got["auc"] == pytest.approx(_auc_by_counting(scores, truth), abs=1e-12)
    # TPR at 1 % FPR: guess "member" above the 5th-highest non-member score (4 of 400 = 1 %
    # false positives)
    neg = np.sort(scores[~truth])[::-1]
    tpr = float((scores[truth] > neg[4]).mean())
    assert got["tpr_at_1pct_fpr"] == pytest.approx(tpr, abs=1e-12)
    assert 0.6 < got["auc"] < 0.8


def test_chance_and_perfect_separation() -> None:
    truth = np.arange(200) < 100
    assert attack_metrics(np.zeros(200), truth) == {"auc": 0.5, "tpr_at_1pct_fpr": 0.0}
    perfect = attack_metrics(truth.astype(float), truth)
    assert perfect == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0}
    with pytest.raises(ValueError, match="members and non-members"):
        attack_metrics(np.zeros(3), np.ones(3, dtype=bool))


def test_scores_and_calibration() -> None:
    losses = np.array([1.0, 4.0, 9.0])
    np.testing.assert_array_equal(loss_scores(losses), [-1.0, -4.0, -9.0])
    refs = [np.array([2.0, 2.0, 9.0]), np.array([4.0, 6.0, 9.0])]  # mean 3, 4, 9
    np.testing.assert_array_equal(calibrated_scores(losses, refs), [2.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        calibrated_scores(losses, [])
    with pytest.raises(ValueError, match="do not match"):
        calibrated_scores(losses, [np.zeros(2)])


def test_squared_errors_of_a_model_and_of_a_model_of_noise() -> None:
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        model.bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    y = torch.tensor([1.0, 1.0])
    np.testing.assert_allclose(squared_errors(model, x, y), [0.25, 20.25])
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    assert (squared_errors(model, x, y) == np.finfo(np.float64).max).all()
