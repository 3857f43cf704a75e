"""Partitions cover every sample once, respect minimum sizes, and skew as advertised."""

from __future__ import annotations

import numpy as np
import pytest

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data.partition import (
    dirichlet_partition,
    iid_partition,
    partition_indices,
    size_skew_partition,
    skewed_sizes,
)

LABELS = np.repeat(np.arange(10), 60)  # 600 samples, 10 balanced classes


def label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between each site's label mix and the global mix."""
    classes = np.unique(labels)
    overall = np.array([np.mean(labels == c) for c in classes])
    tvs = []
    for part in parts:
        site = np.array([np.mean(labels[part] == c) for c in classes])
        tvs.append(0.5 * np.abs(site - overall).sum())
    return float(np.mean(tvs))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "size"])
def test_every_sample_exactly_once(kind: str) -> None:
    parts = partition_indices(kind, LABELS, 7, alpha=0.3, seed=1, min_size=5)  # type: ignore[arg-type]
    together = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(together), np.arange(len(LABELS)))
    assert len(parts) == 7 and min(len(p) for p in parts) >= 5


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "size"])
def test_deterministic_in_the_seed(kind: str) -> None:
    a = partition_indices(kind, LABELS, 5, seed=3)  # type: ignore[arg-type]
    b = partition_indices(kind, LABELS, 5, seed=3)  # type: ignore[arg-type]
    c = partition_indices(kind, LABELS, 5, seed=4)  # type: ignore[arg-type]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_is_label_skewed_and_iid_is_not() -> None:
    iid = iid_partition(len(LABELS), 6, seed=0)
    skewed = dirichlet_partition(LABELS, 6, alpha=0.1, seed=0)
    mild = dirichlet_partition(LABELS, 6, alpha=100.0, seed=0)
    assert label_skew(iid, LABELS) < 0.1
    assert label_skew(skewed, LABELS) > 0.4
    assert label_skew(mild, LABELS) < 0.1


def test_dirichlet_tops_up_sites_when_draws_keep_failing() -> None:
    labels = np.repeat(np.arange(2), 20)
    parts = dirichlet_partition(labels, 8, alpha=0.01, seed=0, min_size=5)
    assert [len(p) for p in parts] == [5] * 8


def test_size_skew_sizes() -> None:
    assert skewed_sizes(400, 4) == [191, 96, 64, 49]
    sizes = skewed_sizes(100, 5, min_size=10)
    assert sum(sizes) == 100 and min(sizes) >= 10 and sizes == sorted(sizes, reverse=True)
    parts = size_skew_partition(600, 4, seed=0)
    assert [len(p) for p in parts] == skewed_sizes(600, 4)
    iid_sizes = [len(p) for p in iid_partition(600, 4)]
    assert max(iid_sizes) - min(iid_sizes) <= 1


def test_impossible_requests_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 10"):
        iid_partition(30, 4, min_size=10)
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet_partition(LABELS, 3, alpha=0.0)
    with pytest.raises(ConfigError, match="unknown partition"):
        partition_indices("zipf", LABELS, 3)  # type: ignore[arg-type]
