"""Every uploaded BrainAge coordinate stays inside the CKKS safe range (|x| <= ~32).

The age offset and scale are fixed buffers: never in the upload layout, never pruned, carried
by the site's saved state. Sites whose mean ages sit far from the offset pull the trainable
output bias away from 0; it must stay small.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import full_mask
from fedsparsify.platform.models import DEFAULT_MEAN_AGE, count_trainable, state_digest
from fedsparsify.platform.rounds import GlobalUpdate, Site, aggregate
from fedsparsify.platform.spec import FederationSpec, ModelSpec, ScheduleSpec, TrainingSpec

torch.set_num_threads(1)

SHAPE = (16, 16, 16)
CKKS_SAFE = 32.0


def brain_like_site(name: str, ages: np.ndarray, seed: int) -> SiteData:
    """Noisy spheres whose dark core (a 'ventricle') grows with age, z-scored per volume."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE, dtype=np.float32)
    radius = np.sqrt(((grid - 7.5) ** 2).sum(axis=0))
    vols = []
    for age in ages:
        core = 1.5 + 3.5 * (age - 20.0) / 70.0
        vol = (radius < 7.0).astype(np.float32) - 0.8 * (radius < core)
        vol = vol + rng.normal(0.0, 0.2, SHAPE).astype(np.float32)
        vols.append((vol - vol.mean()) / vol.std())
    x = torch.tensor(np.stack(vols)[:, None], dtype=torch.float32)
    y = torch.tensor(ages, dtype=torch.float32)
    cut = len(ages) - 4
    return SiteData(name, "regression", x[:cut], y[:cut], x[cut:], y[cut:])


def make_sites(spec: FederationSpec) -> list[Site]:
    rng = np.random.default_rng(0)
    young = brain_like_site("young", rng.uniform(20, 35, 20), seed=1)  # mean ~27: 35 y below
    old = brain_like_site("old", rng.uniform(80, 90, 20), seed=2)  # mean ~85: 22 y above
    return [Site(spec, young), Site(spec, old)]


def brainage_spec() -> FederationSpec:
    return FederationSpec(
        name="range",
        rounds=3,
        method="fedsparsify-global",
        schedule=ScheduleSpec(kind="progressive", fraction=0.3, target=0.5),
        model=ModelSpec(kind="brainage", input_shape=SHAPE, width=2),
        # plain SGD on raw-age MSE pulls the output bias hard towards each site's mean age
        training=TrainingSpec(lr=2e-5, batch_size=4, local_epochs=2),
        seed=0,
    )


def test_uploads_stay_in_the_ckks_range_and_leave_the_age_buffers_out() -> None:
    spec = brainage_spec()
    sites = make_sites(spec)
    model = sites[0].model
    assert set(full_mask(model)).isdisjoint({"age_offset", "age_scale"})
    previous: GlobalUpdate | None = None
    biases = []
    for r in range(spec.rounds):
        plans = [s.begin_round(r, previous) for s in sites]
        assert "age_offset" not in plans[0].layout.names
        assert "age_scale" not in plans[0].layout.names
        assert plans[0].layout.n_total == count_trainable(model)
        updates = [s.train() for s in sites]
        for update in updates:
            assert np.abs(update.values).max() < CKKS_SAFE
        # the young site's own trained bias is pulled down, the old site's up
        young_bias = float(sites[0].model.state_dict()["output.bias"])
        old_bias = float(sites[1].model.state_dict()["output.bias"])
        biases.append((young_bias, old_bias))
        previous = aggregate(updates)
        assert np.abs(previous.mean).max() < CKKS_SAFE
    # each site's own bias went much of the way to its mean age (in units of age_scale years):
    # with a trainable bias at the mean age the old site's would have gone past 80
    young_bias, old_bias = biases[-1]
    assert young_bias * spec.model.age_scale < -15.0
    assert old_bias * spec.model.age_scale > 10.0
    for site in sites:
        state = site.model.state_dict()
        assert float(state["age_offset"]) == pytest.approx(DEFAULT_MEAN_AGE)  # never trained
        assert float(state["age_scale"]) == spec.model.age_scale


def test_site_state_round_trip_keeps_the_age_buffers() -> None:
    spec = brainage_spec()
    site = make_sites(spec)[1]
    site.begin_round(0, None)
    upload = site.train()
    saved = site.state_dict()
    assert float(saved["model"]["age_offset"]) == pytest.approx(DEFAULT_MEAN_AGE)
    restored = Site(spec, site.data)
    restored.load_state_dict(saved)
    assert state_digest(restored.model.state_dict()) == state_digest(site._global)
    assert np.array_equal(restored.train().values, upload.values)
