"""Client sampling: sizes, seeding, and the sampled participants' capped weights."""

from __future__ import annotations

import math

import pytest

from fedsparsify.errors import ConfigError
from fedsparsify.sim.sampling import ClientSampler, parse_sample, sampled_weights
from fedsparsify.sim.specs import default_spec


def test_fraction_and_count() -> None:
    assert ClientSampler(1000, 0.1).per_round == 100
    assert ClientSampler(1000, 37).per_round == 37
    assert ClientSampler(10, 0.01).per_round == 1  # at least one
    assert ClientSampler(10).participants(3) == list(range(10))


def test_seeded_per_round_and_without_replacement() -> None:
    sampler = ClientSampler(500, 0.2, seed=7)
    first = sampler.participants(0)
    assert first == ClientSampler(500, 0.2, seed=7).participants(0)
    assert first != sampler.participants(1)
    assert first != ClientSampler(500, 0.2, seed=8).participants(0)
    assert len(set(first)) == len(first) == 100 and first == sorted(first)
    assert all(0 <= k < 500 for k in first)
    # over many rounds every site gets its turn about equally often
    counts = [0] * 500
    for r in range(200):
        for k in sampler.participants(r):
            counts[k] += 1
    assert min(counts) > 15 and max(counts) < 70


def test_parse_sample() -> None:
    assert parse_sample(None) is None and parse_sample("all") is None
    assert parse_sample("0.25") == 0.25 and isinstance(parse_sample("50"), int)
    assert parse_sample("1.0") == 1.0 and parse_sample("1") == 1
    with pytest.raises(ConfigError, match="fraction"):
        parse_sample("ten")


@pytest.mark.parametrize("sample", [0.0, 1.5, 0, 11, float("nan")])
def test_bad_samples_are_refused(sample: float) -> None:
    with pytest.raises(ConfigError):
        ClientSampler(10, sample)


def test_sample_below_quorum_is_refused() -> None:
    spec = default_spec()  # quorum 2
    with pytest.raises(ConfigError, match="quorum"):
        ClientSampler(100, 1).check(spec)
    with pytest.raises(ConfigError, match="min_clients"):
        ClientSampler(1).check(spec)


def test_weights_are_over_the_sampled_sites_and_capped() -> None:
    spec = default_spec()  # weights by samples, capped at 0.5
    weights = sampled_weights(spec, {"a": 900, "b": 50, "c": 50})
    assert math.isclose(sum(weights.values()), 1.0)
    assert weights["a"] == pytest.approx(0.5) and weights["b"] == pytest.approx(0.25)
    even = sampled_weights(spec, {"a": 30, "b": 10, "c": 20, "d": 40})
    assert even == pytest.approx({"a": 0.3, "b": 0.1, "c": 0.2, "d": 0.4})
