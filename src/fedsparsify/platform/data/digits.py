"""scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes) as a federation.

The data ship inside scikit-learn, so this works offline. Images are ``(N, 1, 8, 8)`` float32
scaled to [0, 1] (pixel counts 0-16 divided by 16), labels int64. A stratified test set is held
out first; the rest is partitioned among sites (:mod:`.partition`), and each site keeps a
seeded ``val_fraction`` of its samples for validation.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data.partition import PartitionKind, partition_indices
from fedsparsify.platform.data.sitedata import FederatedData, SiteData

__all__ = ["MIN_SITE_SAMPLES", "load_digits_arrays", "make_digits_federation"]

MIN_SITE_SAMPLES = 8  # every site gets at least this many samples (train + validation)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: images ``(N, 1, 8, 8)`` float32 in [0, 1] and labels int64 (read-only)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices, holding out ``round(fraction * n_c)`` of each class ``c``."""
    held = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        held.append(members[: round(fraction * len(members))])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def make_digits_federation(
    n_sites: int = 4,
    *,
    partition: PartitionKind = "iid",
    alpha: float = 0.5,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedData:
    """A classification federation of ``n_sites`` sites over the digits.

    ``partition``: ``"iid"``, ``"dirichlet"`` (label skew with concentration ``alpha``) or
    ``"size"`` (Zipf-like site sizes). Deterministic in the arguments.
    """
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{label} must be in [0, 1), got {value}")
    x, y = load_digits_arrays()
    rng = np.random.default_rng([seed, 0xD1])
    pool, test = _stratified_holdout(y, test_fraction, rng)
    parts = partition_indices(
        partition, y[pool], n_sites, alpha=alpha, seed=seed, min_size=MIN_SITE_SAMPLES
    )
    sites = []
    for k, part in enumerate(parts):
        members = pool[rng.permutation(part)]
        n_val = max(1, round(len(members) * val_fraction)) if val_fraction > 0 else 0
        train, val = np.sort(members[n_val:]), np.sort(members[:n_val])
        sites.append(
            SiteData(
                f"site-{k}",
                "classification",
                torch.from_numpy(x[train].copy()),
                torch.from_numpy(y[train].copy()),
                torch.from_numpy(x[val].copy()),
                torch.from_numpy(y[val].copy()),
            )
        )
    return FederatedData(
        "classification",
        tuple(sites),
        torch.from_numpy(x[test].copy()),
        torch.from_numpy(y[test].copy()),
    )
