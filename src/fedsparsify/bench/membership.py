"""Membership-inference attacks on a regression model: scores, ROC AUC, TPR at low FPR.

- Loss threshold (Yeom et al. 2018): a subject whose squared error is small is guessed a
  member; the score is ``-loss``.
- Reference-calibrated loss (Watson et al. 2022, "difficulty calibration"; the offline form of
  LiRA): the attacker trains reference models the way the target was trained, on subjects of
  its own from the same population, and scores ``-(loss_target - mean reference loss)``, so a
  subject that is simply easy (or hard) for any model of this kind no longer looks like a
  member (or non-member).

Non-finite predictions (a model of noise) count as the largest loss, so they rank last and tie.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

__all__ = [
    "attack_metrics",
    "calibrated_scores",
    "loss_scores",
    "squared_errors",
]

#: The false-positive rate at which the true-positive rate is reported.
LOW_FPR = 0.01


def squared_errors(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch: int = 32
) -> np.ndarray:
    """Per-subject squared error ``(f(x) - y)^2`` (float64; non-finite -> float64 max)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.cat([model(x[i : i + batch]).reshape(-1) for i in range(0, len(x), batch)])
    finally:
        model.train(was_training)
    err = (out.double() - y.reshape(-1).double()).numpy() ** 2
    return np.nan_to_num(err, nan=np.finfo(np.float64).max, posinf=np.finfo(np.float64).max)


def loss_scores(losses: np.ndarray) -> np.ndarray:
    """The loss-threshold attack's membership scores (higher: more likely a member)."""
    return -np.asarray(losses, dtype=np.float64)


def calibrated_scores(losses: np.ndarray, reference_losses: Sequence[np.ndarray]) -> np.ndarray:
    """The reference-calibrated attack's scores: ``-(loss - mean reference loss)`` per subject."""
    if not reference_losses:
        raise ValueError("the calibrated attack needs at least one reference model")
    refs = np.stack([np.asarray(r, dtype=np.float64) for r in reference_losses])
    if refs.shape[1:] != np.shape(losses):
        raise ValueError(f"reference losses {refs.shape[1:]} do not match {np.shape(losses)}")
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.asarray(losses, dtype=np.float64) - refs.mean(axis=0)
    return -np.nan_to_num(diff, nan=0.0, posinf=np.finfo(np.float64).max)


def attack_metrics(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    """``auc`` (ROC AUC, 0.5 is chance) and ``tpr_at_1pct_fpr`` (the largest TPR with FPR at
    most 1 %; chance is 0.01) of membership ``scores`` against the truth ``is_member``."""
    truth = np.asarray(is_member, dtype=bool)
    if truth.all() or not truth.any():
        raise ValueError("an attack needs members and non-members")
    s = np.asarray(scores, dtype=np.float64)
    fpr, tpr, _ = roc_curve(truth, s)
    return {
        "auc": float(roc_auc_score(truth, s)),
        "tpr_at_1pct_fpr": float(tpr[fpr <= LOW_FPR].max()),
    }
