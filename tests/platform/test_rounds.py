"""The round: aggregation, one mask on every site, shrinking masks, local votes, resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fedsparsify.errors import ConfigError, MaskError, PlatformError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import ParameterLayout, full_mask, mask_digest, sparsity
from fedsparsify.platform.models import build_model, state_digest
from fedsparsify.platform.pruning import global_magnitude_mask
from fedsparsify.platform.rounds import (
    GlobalUpdate,
    LocalUpdate,
    Site,
    aggregate,
)
from fedsparsify.platform.schedules import target_sparsity
from fedsparsify.platform.spec import (
    FederationSpec,
    Method,
    ModelSpec,
    ScheduleSpec,
    TrainingSpec,
)

torch.set_num_threads(1)


def digits_sites(n_sites: int, per_site: int = 120) -> list[SiteData]:
    """Disjoint digits shards of different sizes (so sample weights differ)."""
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    yt = torch.tensor(y, dtype=torch.int64)
    sites, start = [], 0
    for i in range(n_sites):
        n = per_site + 20 * i
        xs, ys = xt[start : start + n], yt[start : start + n]
        cut = int(n * 0.8)
        sites.append(SiteData(f"site{i}", "classification", xs[:cut], ys[:cut], xs[cut:], ys[cut:]))
        start += n
    return sites


def make_spec(method: Method = "fedsparsify-global", **schedule: object) -> FederationSpec:
    kind = "none" if method == "fedavg" else "progressive"
    options: dict[str, object] = {"kind": kind, "fraction": 0.3, "target": 0.8, **schedule}
    sched = ScheduleSpec.model_validate(options)
    return FederationSpec(
        name="t",
        rounds=4,
        method=method,
        schedule=sched,
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=32),
        training=TrainingSpec(lr=0.05, batch_size=16),
        seed=3,
    )


def play(sites: list[Site], rounds: int) -> list[list[str]]:
    """Run rounds by hand; return each round's mask digests, one per site."""
    previous: GlobalUpdate | None = None
    digests = []
    for r in range(rounds):
        plans = [s.begin_round(r, previous) for s in sites]
        digests.append([p.mask_digest for p in plans])
        previous = aggregate([s.train() for s in sites])
    return digests


def test_aggregate_is_the_sample_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    values = [rng.normal(size=50).astype(np.float32) for _ in range(4)]
    weights = [10, 3, 250, 7]
    votes = [(rng.random(50) < 0.5).astype(np.float32) for _ in range(4)]
    updates = [
        LocalUpdate(values=v, num_samples=w, votes=b)
        for v, w, b in zip(values, weights, votes, strict=True)
    ]
    out = aggregate(updates)
    np.testing.assert_allclose(out.mean, np.average(values, axis=0, weights=weights), rtol=1e-6)
    assert out.mean.dtype == np.float32
    assert out.vote_fraction is not None
    np.testing.assert_allclose(out.vote_fraction, np.mean(votes, axis=0), rtol=1e-7)
    assert aggregate(updates[:1]).mean.tolist() == values[0].tolist()


@pytest.mark.parametrize(
    ("updates", "error", "needle"),
    [
        ([], PlatformError, "no updates"),
        (
            [LocalUpdate(np.zeros(3, np.float32), 1), LocalUpdate(np.zeros(4, np.float32), 1)],
            PlatformError,
            "values",
        ),
        ([LocalUpdate(np.zeros(3, np.float32), 0)], PlatformError, "num_samples"),
        ([LocalUpdate(np.array([1.0, np.nan], np.float32), 1)], PlatformError, "non-finite"),
        (
            [
                LocalUpdate(np.zeros(2, np.float32), 1, votes=np.ones(2, np.float32)),
                LocalUpdate(np.zeros(2, np.float32), 1),
            ],
            PlatformError,
            "votes",
        ),
        (
            [
                LocalUpdate(np.zeros(2, np.float32), 1, mask_digest="a"),
                LocalUpdate(np.zeros(2, np.float32), 1, mask_digest="b"),
            ],
            MaskError,
            "masks",
        ),
    ],
)
def test_aggregate_rejects_bad_updates(
    updates: list[LocalUpdate], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        aggregate(updates)


def test_sites_with_different_data_reach_one_mask_fedsparsify_global() -> None:
    spec = make_spec()
    sites = [Site(spec, d) for d in digits_sites(3)]
    assert len({state_digest(s.model.state_dict()) for s in sites}) == 1  # same initial model
    previous: GlobalUpdate | None = None
    prev_mask = full_mask(sites[0].model)
    for r in range(4):
        # expected mask, computed independently from the aggregate written into a fresh model
        if previous is not None:
            reference = build_model(spec.model, seed=0)
            ParameterLayout(reference, prev_mask).scatter(previous.mean, reference.state_dict())
            target = target_sparsity(spec.schedule, r, spec.rounds)
            expected = global_magnitude_mask(reference.state_dict(), prev_mask, target)
        else:
            expected = full_mask(sites[0].model)
        plans = [s.begin_round(r, previous) for s in sites]
        assert {p.mask_digest for p in plans} == {mask_digest(expected)}
        assert plans[0].sparsity == pytest.approx(target_sparsity(spec.schedule, r, 4), abs=1e-3)
        for name, m in plans[0].mask.items():
            assert not (m & ~prev_mask[name]).any()  # only shrinks
        prev_mask = plans[0].mask
        updates = [s.train() for s in sites]
        assert len({u.values.shape for u in updates}) == 1
        assert updates[0].values.shape == (plans[0].n_values,)
        previous = aggregate(updates)
    assert sparsity(prev_mask) > 0.6


def test_pruned_coordinates_are_zero_in_the_global_model() -> None:
    spec = make_spec()
    site = Site(spec, digits_sites(1)[0])
    site.begin_round(0, None)
    update = aggregate([site.train()])
    plan = site.begin_round(1, update)
    assert plan.sparsity > 0.2
    for name, param in site.model.named_parameters():
        if name in plan.mask:
            assert torch.count_nonzero(param.detach()[~plan.mask[name]]) == 0


def test_fedavg_keeps_every_coordinate() -> None:
    sites = [Site(make_spec("fedavg"), d) for d in digits_sites(2)]
    previous = None
    for r in range(2):
        plans = [s.begin_round(r, previous) for s in sites]
        assert plans[0].sparsity == 0.0
        assert plans[0].n_values == plans[0].layout.n_total
        previous = aggregate([s.train() for s in sites])


def test_random_pruning_is_the_same_on_every_site() -> None:
    spec = make_spec("random")
    digests = play([Site(spec, d) for d in digits_sites(3)], rounds=3)
    assert all(len(set(row)) == 1 for row in digests)
    assert len({row[0] for row in digests}) == 3  # the mask changed every round


@pytest.mark.parametrize(("rule", "needed"), [("floor-half", 1), ("half", 2)])
def test_fedsparsify_local_votes_and_majority(rule: str, needed: int) -> None:
    spec = make_spec("fedsparsify-local", start_round=0).model_copy(update={"majority_rule": rule})
    sites = [Site(spec, d) for d in digits_sites(3)]
    plans = [s.begin_round(0, None) for s in sites]
    assert plans[0].sparsity == 0.0
    updates = [s.train() for s in sites]
    target = target_sparsity(spec.schedule, 0, spec.rounds)
    for u in updates:
        assert u.votes is not None
        assert set(np.unique(u.votes)) <= {0.0, 1.0}
        assert np.all(u.values[u.votes == 0] == 0)
        assert u.metrics["local_sparsity"] == pytest.approx(target, abs=1e-3)
    # independent majority: a coordinate survives when `needed` of the 3 sites kept it
    kept_by = np.sum([u.votes for u in updates if u.votes is not None], axis=0)
    assert np.any(kept_by == 1)  # the rules differ here
    expected = plans[0].layout.to_mask(kept_by >= needed)
    update = aggregate(updates)
    new_plans = [s.begin_round(1, update) for s in sites]
    assert {p.mask_digest for p in new_plans} == {mask_digest(expected)}
    # the merged model is the weighted mean, pruned by the majority mask
    weights = [u.num_samples for u in updates]
    mean = np.average([u.values for u in updates], axis=0, weights=weights) * (kept_by >= needed)
    state = sites[0].model.state_dict()
    ours = plans[0].layout.flatten(state)
    np.testing.assert_allclose(ours, mean.astype(np.float32), rtol=1e-5, atol=1e-7)


def test_state_dict_resumes_a_restarted_site() -> None:
    spec = make_spec()
    data = digits_sites(2)
    a, b = Site(spec, data[0]), Site(spec, data[1])
    play([a, b], rounds=2)  # a and b are now in round 1
    saved = a.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    restored = Site(spec, data[0])
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.plan is not None and a.plan is not None
    assert restored.plan.mask_digest == a.plan.mask_digest
    # a restarted client retrains the round it was in and gets the same upload
    np.testing.assert_array_equal(restored.train().values, a.train().values)
    update = aggregate([a.train(), b.train()])
    assert restored.begin_round(2, update).mask_digest == a.begin_round(2, update).mask_digest
    assert state_digest(restored.model.state_dict()) == state_digest(a.model.state_dict())
    other = Site(make_spec("random"), data[0])
    with pytest.raises(ConfigError, match="spec"):
        other.load_state_dict(saved)


def test_round_order_is_enforced() -> None:
    spec = make_spec()
    site = Site(spec, digits_sites(1)[0])
    with pytest.raises(PlatformError, match="not begun"):
        site.train()
    with pytest.raises(PlatformError, match="join"):
        site.begin_round(3, None)
    site.begin_round(0, None)
    with pytest.raises(PlatformError, match="already"):
        site.begin_round(0, None)
    with pytest.raises(MaskError, match="values"):
        site.begin_round(1, GlobalUpdate(mean=np.zeros(5, np.float32)))
    good = aggregate([site.train()])
    assert site.plan is not None and good.mask_digest == site.plan.mask_digest
    stale = GlobalUpdate(mean=good.mean, mask_digest="0" * 64)
    with pytest.raises(MaskError, match="made under"):
        site.begin_round(1, stale)
    site.begin_round(1, good)


def test_incompatible_data_is_refused() -> None:
    data = digits_sites(1)[0]
    spec = make_spec().model_copy(update={"model": ModelSpec(kind="mlp", input_shape=(32,))})
    with pytest.raises(ConfigError, match="shape"):
        Site(spec, data)
    brain = make_spec().model_copy(update={"model": ModelSpec(kind="brainage")})
    with pytest.raises(ConfigError, match="regression"):
        Site(brain, data)


def test_site_evaluates_on_its_validation_set() -> None:
    site = Site(make_spec(), digits_sites(1)[0])
    site.begin_round(0, None)
    site.train()
    metrics = site.evaluate()
    assert set(metrics) == {"accuracy", "loss"}
    with pytest.raises(ConfigError):
        site.evaluate(x=site.data.x_val)


def test_finish_takes_in_the_final_aggregate() -> None:
    spec = make_spec("fedsparsify-local", start_round=0)
    sites = [Site(spec, d) for d in digits_sites(3)]
    for s in sites:
        s.begin_round(0, None)
    final = aggregate([s.train() for s in sites])
    masks = [s.finish(final) for s in sites]
    assert len({mask_digest(m) for m in masks}) == 1
    assert sparsity(masks[0]) > 0.2  # the majority of the round-0 votes, not the full plan mask
    plan = sites[0].plan
    assert plan is not None
    counts = np.rint(np.asarray(final.vote_fraction, dtype=np.float64) * 3)
    expected = final.mean * (counts >= 1)  # floor(3 / 2) = 1 vote of 3 keeps a coordinate
    np.testing.assert_array_equal(plan.layout.flatten(sites[0].model.state_dict()), expected)
    restored = Site(spec, sites[0].data)
    restored.load_state_dict(sites[0].state_dict())
    assert restored.finished
    assert state_digest(restored.model.state_dict()) == state_digest(sites[0].model.state_dict())
    for site in (sites[0], restored):
        with pytest.raises(PlatformError, match="finished"):
            site.begin_round(1, final)
        with pytest.raises(PlatformError, match="finished"):
            site.train()
