"""Mask builders: one global magnitude threshold, random pruning, majority vote."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsparsify.errors import ConfigError, MaskError, PlatformError
from fedsparsify.platform.masks import Mask, ParameterLayout, sparsity
from fedsparsify.platform.pruning import (
    derive_seed,
    global_magnitude_mask,
    keep_count,
    majority_mask,
    majority_threshold,
    random_mask,
    vote_counts,
)

torch.set_num_threads(1)


def make_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three tensors on very different scales, plus a bias that is never masked."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "small.weight": torch.randn(6, 5, generator=gen) * 0.01,
        "big.weight": torch.randn(4, 3, 3, generator=gen) * 1.0,
        "big.bias": torch.randn(4, generator=gen),
        "mid.weight": torch.randn(7, 11, generator=gen) * 0.1,
    }


def make_mask(state: dict[str, torch.Tensor], keep: float, seed: int) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(t.shape, generator=gen) < keep for n, t in state.items() if "weight" in n}


def test_one_global_threshold_matches_numpy() -> None:
    state = make_state()
    prev = make_mask(state, keep=0.8, seed=1)
    target = 0.7
    new = global_magnitude_mask(state, prev, target)

    # Independent computation: k-th largest |w| among the kept coordinates of all tensors.
    n_prunable = sum(m.numel() for m in prev.values())
    k = round(n_prunable * (1 - target))
    kept_mags = np.concatenate([state[n].abs().numpy()[prev[n].numpy()] for n in prev])
    threshold = np.sort(kept_mags)[::-1][k - 1]
    for name, m in prev.items():
        expected = m.numpy() & (state[name].abs().numpy() >= threshold)
        np.testing.assert_array_equal(new[name].numpy(), expected)
    assert sum(int(m.sum()) for m in new.values()) == k
    assert sparsity(new) == pytest.approx(1 - k / n_prunable)
    # the threshold is shared: the big-scale tensor keeps far more than the small-scale one
    survived = new["big.weight"].sum() / prev["big.weight"].sum()
    assert survived > 0.8
    assert new["small.weight"].sum() == 0
    assert "big.bias" not in new


def test_masks_only_shrink_even_for_large_pruned_weights() -> None:
    state = make_state()
    prev = make_mask(state, keep=0.6, seed=2)
    with torch.no_grad():
        state["big.weight"][~prev["big.weight"]] = 100.0  # huge but already pruned
    new = global_magnitude_mask(state, prev, 0.5)
    for name in prev:
        assert not (new[name] & ~prev[name]).any()


def test_already_sparse_enough_is_unchanged_and_a_copy() -> None:
    state = make_state()
    prev = make_mask(state, keep=0.2, seed=3)
    new = global_magnitude_mask(state, prev, 0.5)
    assert all(torch.equal(new[n], prev[n]) for n in prev)
    new["mid.weight"][:] = False
    assert prev["mid.weight"].any()


def test_ties_are_broken_by_sorted_name_then_flat_index() -> None:
    state = {"b": torch.ones(4), "a": torch.ones(2, 2)}
    mask = {"b": torch.ones(4, dtype=torch.bool), "a": torch.ones(2, 2, dtype=torch.bool)}
    new = global_magnitude_mask(state, mask, 0.625)  # keep round(8 * 0.375) = 3
    # canonical order a[0,0], a[0,1], a[1,0], a[1,1], b[0..3]: the first five go
    assert new["a"].sum() == 0
    assert new["b"].tolist() == [False, True, True, True]
    reordered = global_magnitude_mask(dict(reversed(state.items())), mask, 0.625)
    assert all(torch.equal(reordered[n], new[n]) for n in new)
    assert list(new) == list(mask)


def test_non_finite_weights_raise() -> None:
    state = make_state()
    state["mid.weight"][0, 0] = float("nan")
    with pytest.raises(PlatformError, match="non-finite"):
        global_magnitude_mask(state, make_mask(state, 1.0, 0), 0.5)


def test_mask_that_does_not_fit_raises() -> None:
    state = make_state()
    mask = make_mask(state, 1.0, 0)
    with pytest.raises(MaskError):
        global_magnitude_mask(state, {**mask, "nope.weight": torch.ones(2, dtype=torch.bool)}, 0.5)
    with pytest.raises(MaskError):
        global_magnitude_mask(state, {**mask, "mid.weight": torch.ones(3, dtype=torch.bool)}, 0.5)


@pytest.mark.parametrize(("n", "target", "keep"), [(10, 0.25, 8), (1000, 0.9, 100), (7, 0.0, 7)])
def test_keep_count(n: int, target: float, keep: int) -> None:
    assert keep_count(n, target) == keep


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5])
def test_keep_count_rejects_bad_targets(target: float) -> None:
    with pytest.raises(ConfigError):
        keep_count(10, target)


def test_random_mask_is_deterministic_exact_and_shrinking() -> None:
    state = make_state()
    prev = make_mask(state, keep=0.9, seed=4)
    a = random_mask(prev, 0.6, seed=11)
    b = random_mask(prev, 0.6, seed=11)
    c = random_mask(prev, 0.6, seed=12)
    assert all(torch.equal(a[n], b[n]) for n in prev)
    assert any(not torch.equal(a[n], c[n]) for n in prev)
    n_prunable = sum(m.numel() for m in prev.values())
    assert sum(int(m.sum()) for m in a.values()) == round(n_prunable * 0.4)
    assert all(not (a[n] & ~prev[n]).any() for n in prev)
    # unlike magnitude pruning, random pruning ignores scale: small.weight keeps some coordinates
    assert a["small.weight"].any()


def test_derive_seed_is_stable() -> None:
    assert derive_seed(0, "random-mask", 3) == derive_seed(0, "random-mask", 3)
    assert derive_seed(0, "random-mask", 3) != derive_seed(0, "random-mask", 4)
    assert 0 <= derive_seed("x") < 2**63


def test_majority_vote_hand_example_under_both_rules() -> None:
    state = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    prev = {"w": torch.tensor([[True, True, True], [True, True, False]])}
    layout = ParameterLayout(state, prev)
    # layout: w's 5 kept coordinates (row-major) then b's 2; four clients' local masks
    votes = np.array(
        [
            [1, 1, 0, 0, 1, 1, 1],
            [1, 0, 1, 0, 0, 1, 1],
            [0, 0, 1, 1, 0, 1, 1],
            [0, 0, 0, 0, 0, 1, 1],
        ],
        dtype=np.float32,
    )
    # counts on w: 2, 1, 2, 1, 1 of 4 -> keep (0,0), (0,2); (1,2) stays pruned
    for rule in ("floor-half", "half"):  # equal for an even number of contributors
        new = majority_mask(votes.mean(axis=0), layout, prev, contributors=4, rule=rule)
        assert new["w"].tolist() == [[True, False, True], [False, False, False]], rule
    # three of them (one dropped out): counts 2, 1, 2, 1, 1 of 3
    three = votes[:3].mean(axis=0)
    half = majority_mask(three, layout, prev, contributors=3, rule="half")
    assert half["w"].tolist() == [[True, False, True], [False, False, False]]
    floor = majority_mask(three, layout, prev, contributors=3, rule="floor-half")
    assert floor["w"].tolist() == [[True, True, True], [True, True, False]]  # 1 vote survives


def test_majority_threshold_for_odd_and_even_contributors() -> None:
    assert [majority_threshold(k) for k in range(1, 8)] == [0, 1, 1, 2, 2, 3, 3]
    assert [majority_threshold(k, "half") for k in range(1, 8)] == [1, 1, 2, 2, 3, 3, 4]
    with pytest.raises(ConfigError, match="majority rule"):
        majority_threshold(3, "most")
    with pytest.raises(PlatformError):
        majority_threshold(0)


def test_majority_recovers_counts_from_approximate_fractions() -> None:
    state = {"w": torch.zeros(4)}
    prev = {"w": torch.ones(4, dtype=torch.bool)}
    layout = ParameterLayout(state, prev)
    fractions = np.array([0.5, 0.4999999, 0.25, 0.75])  # 2 of 4, 2 of 4 after CKKS noise, ...
    got = majority_mask(fractions, layout, prev, contributors=4, rule="half")
    assert got["w"].tolist() == [True, True, False, True]
    assert vote_counts(fractions, 4).tolist() == [2, 2, 1, 3]
    with pytest.raises(MaskError):
        majority_mask(fractions[:3], layout, prev, contributors=4)
    with pytest.raises(PlatformError, match="not counts out of 4"):
        majority_mask(np.array([0.5, 0.4, 0.25, 0.75]), layout, prev, contributors=4)
    with pytest.raises(PlatformError, match="not counts"):
        majority_mask(np.array([0.5, 0.5, 1.5, 0.75]), layout, prev, contributors=4)
