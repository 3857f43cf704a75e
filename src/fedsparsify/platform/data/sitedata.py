"""The in-memory shape of one site's data and of a whole simulated federation's data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["FederatedData", "SiteData", "Task"]

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class SiteData:
    """One site's training and validation tensors.

    ``x_*`` are float32 with a channel axis (``N, C, ...``); ``y_*`` are int64 class labels for
    classification and float32 targets (e.g. age in years) for regression.
    """

    name: str
    task: Task
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def num_samples(self) -> int:
        """Training-set size: the site's weight in federated averaging."""
        return int(self.x_train.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input without the batch axis, channel first."""
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class FederatedData:
    """Every site's data plus a held-out test set drawn from the same population."""

    task: Task
    sites: tuple[SiteData, ...]
    x_test: torch.Tensor
    y_test: torch.Tensor
