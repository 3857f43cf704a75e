"""The one weight rule: shares by samples or equal, none above the cap, summing to 1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsparsify.errors import ConfigError
from fedsparsify.platform.round_rules import (
    RESULT_GRID,
    channels_for,
    round_to_grid,
    round_weights,
    vote_weight,
)


def capped_by_bisection(samples: list[int], cap: float) -> list[float]:
    """Independent answer: the weights are min(cap, t * n_i) for the t that makes them sum to
    1 (water-filling), found by bisection."""
    lo, hi = 0.0, 1.0 / min(samples)
    for _ in range(200):
        t = (lo + hi) / 2
        if sum(min(cap, t * n) for n in samples) < 1.0:
            lo = t
        else:
            hi = t
    return [min(cap, hi * n) for n in samples]


def test_samples_weighting_without_a_binding_cap() -> None:
    assert round_weights({"a": 10, "b": 30}, weighting="samples", max_weight_share=1.0) == {
        "a": 0.25,
        "b": 0.75,
    }


def test_equal_weighting() -> None:
    got = round_weights({"a": 1, "b": 10**9, "c": 3}, weighting="equal", max_weight_share=0.5)
    assert got == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}


def test_a_huge_site_is_capped_and_the_rest_keeps_its_proportions() -> None:
    got = round_weights(
        {"a": 10, "b": 20, "huge": 2**40}, weighting="samples", max_weight_share=0.5
    )
    assert got["huge"] == 0.5
    assert got["a"] == pytest.approx(0.5 / 3) and got["b"] == pytest.approx(1 / 3)


def test_when_even_equal_shares_exceed_the_cap_everyone_is_equal() -> None:
    assert round_weights({"a": 1, "b": 99}, weighting="samples", max_weight_share=0.4) == {
        "a": 0.5,
        "b": 0.5,
    }


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=12),
    cap=st.floats(min_value=0.05, max_value=1.0),
)
def test_matches_the_bisection_answer(samples: list[int], cap: float) -> None:
    ids = [f"s{i:02d}" for i in range(len(samples))]
    got = round_weights(
        dict(zip(ids, samples, strict=True)), weighting="samples", max_weight_share=cap
    )
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    if len(samples) * cap <= 1.0:
        assert all(w == pytest.approx(1 / len(samples)) for w in got.values())
        return
    assert max(got.values()) <= cap * (1 + 1e-12)
    want = capped_by_bisection(samples, cap)
    np.testing.assert_allclose([got[i] for i in ids], want, rtol=1e-9, atol=1e-12)


def test_order_of_the_participants_does_not_matter() -> None:
    samples = {"a": 5, "b": 50, "c": 500, "d": 5000}
    base = round_weights(samples, weighting="samples", max_weight_share=0.4)
    for order in itertools.permutations(samples):
        again = round_weights(
            {k: samples[k] for k in order}, weighting="samples", max_weight_share=0.4
        )
        assert again == base


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples": {}, "weighting": "samples", "max_weight_share": 0.5},
        {"samples": {"a": 0}, "weighting": "samples", "max_weight_share": 0.5},
        {"samples": {"a": 1}, "weighting": "median", "max_weight_share": 0.5},
        {"samples": {"a": 1}, "weighting": "samples", "max_weight_share": 0.0},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    samples = kwargs.pop("samples")
    with pytest.raises(ConfigError):
        round_weights(samples, **kwargs)  # type: ignore[arg-type]


def test_grid_channels_and_votes() -> None:
    x = np.array([0.1, -0.25, 1e-7, 3 * RESULT_GRID + RESULT_GRID * 0.49], dtype=np.float32)
    got = round_to_grid(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got / RESULT_GRID, np.round(got / RESULT_GRID))
    assert got[2] == 0.0 and got[3] == pytest.approx(3 * RESULT_GRID)
    assert np.abs(got - x).max() <= RESULT_GRID / 2
    assert channels_for("fedsparsify-local") == ["values", "votes"]
    assert channels_for("fedavg") == ["values"]
    assert vote_weight(4) == 0.25
    with pytest.raises(ConfigError):
        vote_weight(0)
