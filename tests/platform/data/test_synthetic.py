"""The generated classification task: deterministic per site, skewed by Dirichlet(alpha)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data import SyntheticClassification
from fedsparsify.platform.data.synthetic import MIN_SITE_SAMPLES


def test_a_site_is_the_same_alone_or_in_the_federation() -> None:
    gen = SyntheticClassification(n_sites=6, seed=3)
    fed = gen.federation()
    for k, site in enumerate(fed.sites):
        alone = gen.site(k)
        assert site.name == alone.name == f"site-{k}"
        assert torch.equal(site.x_train, alone.x_train)
        assert torch.equal(site.y_val, alone.y_val)
        assert site.num_samples == gen.num_train(k)
        assert site.x_train.shape[1:] == (1, 32)
        assert len(site.y_train) + len(site.y_val) == gen.site_size(k) >= MIN_SITE_SAMPLES
    other = SyntheticClassification(n_sites=6, seed=4).site(0)
    assert not torch.equal(other.x_train[:5], fed.sites[0].x_train[:5])


def test_site_k_does_not_depend_on_the_number_of_sites() -> None:
    small, large = SyntheticClassification(n_sites=3), SyntheticClassification(n_sites=1000)
    assert torch.equal(small.site(2).x_train, large.site(2).x_train)
    assert sum(large.num_train(k) for k in range(1000)) > 50_000


@pytest.mark.parametrize(("alpha", "low", "high"), [(0.1, 0.6, 1.0), (100.0, 0.0, 0.25)])
def test_label_skew_follows_alpha(alpha: float, low: float, high: float) -> None:
    """The share of a site's most frequent class: near 1 for alpha 0.1, near 1/10 for 100."""
    gen = SyntheticClassification(n_sites=40, alpha=alpha, samples_per_site=200, size_sigma=0)
    top = [
        np.bincount(gen.site(k).y_train.numpy(), minlength=10).max() / gen.num_train(k)
        for k in range(40)
    ]
    assert low <= float(np.mean(top)) <= high


def test_sizes_vary_with_sigma_and_are_equal_without() -> None:
    equal = SyntheticClassification(n_sites=20, size_sigma=0.0)
    assert {equal.site_size(k) for k in range(20)} == {100}
    skewed = SyntheticClassification(n_sites=20, size_sigma=1.0)
    assert len({skewed.site_size(k) for k in range(20)}) > 10


def test_learnable_but_not_linear() -> None:
    """A nearest-centroid rule on the pooled data beats chance by far (the task is learnable);
    the blobs make classes multi-modal."""
    gen = SyntheticClassification(n_sites=20, seed=0)
    fed = gen.federation()
    x = torch.cat([s.x_train for s in fed.sites]).reshape(-1, 32).numpy()
    y = torch.cat([s.y_train for s in fed.sites]).numpy()
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    xt = fed.x_test.reshape(-1, 32).numpy()
    guess = np.argmin(((xt[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((guess == fed.y_test.numpy()).mean())
    assert 0.3 < accuracy < 0.95
    assert len(fed.y_test) == 2000 and set(np.unique(fed.y_test.numpy())) == set(range(10))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_sites": 0},
        {"n_sites": 2, "alpha": 0.0},
        {"n_sites": 2, "samples_per_site": 3},
        {"n_sites": 2, "val_fraction": 1.0},
        {"n_sites": 2, "n_classes": 1},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="synthetic data"):
        SyntheticClassification(**kwargs)  # type: ignore[arg-type]


def test_unknown_site_index_is_refused() -> None:
    with pytest.raises(ConfigError, match="outside"):
        SyntheticClassification(n_sites=2).site(2)
