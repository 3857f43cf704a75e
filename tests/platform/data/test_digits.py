"""sklearn digits as a federation: shapes, scaling, coverage, and skew."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data.digits import (
    MIN_SITE_SAMPLES,
    load_digits_arrays,
    make_digits_federation,
)
from fedsparsify.platform.data.sitedata import FederatedData


def all_labels(fed: FederatedData) -> torch.Tensor:
    parts = [torch.cat([s.y_train, s.y_val]) for s in fed.sites]
    return torch.cat([*parts, fed.y_test])


def test_arrays_are_scaled_images() -> None:
    x, y = load_digits_arrays()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "size"])
def test_federation_uses_every_sample_once(partition: str) -> None:
    fed = make_digits_federation(5, partition=partition, alpha=0.3, seed=2)  # type: ignore[arg-type]
    assert fed.task == "classification" and len(fed.sites) == 5
    _, y = load_digits_arrays()
    # Same multiset of labels as the whole data set, so no sample is lost or repeated.
    np.testing.assert_array_equal(np.bincount(all_labels(fed).numpy()), np.bincount(y))
    assert len(fed.y_test) == pytest.approx(0.2 * 1797, abs=10)
    for site in fed.sites:
        assert site.x_train.shape[1:] == (1, 8, 8) and site.y_train.dtype == torch.int64
        assert len(site.y_train) + len(site.y_val) >= MIN_SITE_SAMPLES and len(site.y_val) >= 1


def test_deterministic_and_seed_sensitive() -> None:
    a = make_digits_federation(3, partition="dirichlet", seed=1)
    b = make_digits_federation(3, partition="dirichlet", seed=1)
    c = make_digits_federation(3, partition="dirichlet", seed=2)
    assert all(torch.equal(s.x_train, t.x_train) for s, t in zip(a.sites, b.sites, strict=True))
    assert not torch.equal(a.sites[0].y_train, c.sites[0].y_train)


def test_dirichlet_sites_see_skewed_labels() -> None:
    def max_class_share(fed: FederatedData) -> float:
        shares = [
            np.bincount(s.y_train.numpy(), minlength=10).max() / len(s.y_train) for s in fed.sites
        ]
        return float(np.mean(shares))

    assert max_class_share(make_digits_federation(4, partition="iid")) < 0.2
    assert max_class_share(make_digits_federation(4, partition="dirichlet", alpha=0.1)) > 0.3


def test_bad_fraction_raises() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        make_digits_federation(2, test_fraction=1.5)
