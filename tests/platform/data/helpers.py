"""Helpers for the data tests: a tiny synthetic head volume and the writer types."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

NiftiWriter = Callable[..., Path]
ParticipantsWriter = Callable[[Path, str], Path]


def head(seed: int, shape: Sequence[int] = (20, 24, 20)) -> np.ndarray:
    """A bright ellipsoid with a dark core and a little noise: enough of a 'brain'."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    radius = np.sum(
        ((grid - centre[:, None, None, None]) / (0.35 * np.asarray(shape)[:, None, None, None]))
        ** 2,
        axis=0,
    )
    data = np.where(radius < 1.0, 100.0, 0.0) - np.where(radius < 0.2, 60.0, 0.0)
    return (data + rng.normal(0, 2, shape)).astype(np.float32)
