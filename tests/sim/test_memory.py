"""The driver's memory does not grow with the number of sites."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fedsparsify.bench.probes import RssSampler
from fedsparsify.platform.spec import FederationSpec, ModelSpec, ScheduleSpec
from fedsparsify.sim import RayEngine, SimResult, Simulation, make_source
from fedsparsify.sim.specs import default_spec

#: Allowed growth of the driver's peak RSS from 50 to 200 sites (MiB).
GROWTH_BOUND_MB = 15.0


def _run(sites: int) -> tuple[SimResult, float]:
    """One dense round of a 77k-value MLP (0.45 MiB per encrypted upload), masks off to keep
    the test short (they change no sizes); returns the driver's sampled peak growth."""
    base = default_spec(rounds=1, pairwise_masks=False).model_dump()
    base.update(
        method="fedavg",
        schedule=ScheduleSpec(kind="none").model_dump(),
        model=ModelSpec(kind="mlp", input_shape=(32,), hidden=256, num_classes=10).model_dump(),
    )
    spec = FederationSpec.model_validate(base)
    engine = RayEngine()
    sampler = RssSampler(os.getpid(), children=False)
    try:
        sampler.reset()
        before = sampler.current_mb()
        result = Simulation(spec, make_source("synthetic", sites, spec), engine).run()
        growth = sampler.peak_mb() - before
    finally:
        sampler.close()
        engine.close()
    return result, growth


@pytest.mark.slow  # about a minute on 2 cores: 258 encrypted 0.45 MiB updates
def test_driver_memory_is_flat_in_the_number_of_sites(ray_cluster: Any) -> None:
    """Sampled driver RSS (this process alone, every 20 ms) during a 50-site and a 200-site
    round: the peak grows by at most 15 MiB more at 200 sites, where holding the 150 extra
    updates alone would take about 68 MiB, so the test fails if the driver keeps what arrives.
    Measured (164k values, 0.97 MB uploads): +8.5 MiB at 50 sites, +8.0 MiB at 200."""
    _run(8)  # warm-up: imports, Ray workers, first allocations
    small, growth_50 = _run(50)
    large, growth_200 = _run(200)
    update_mb = large.rows[0].upload_bytes_per_site / 2**20
    held_mb = 150 * update_mb
    assert held_mb > 4 * GROWTH_BOUND_MB, held_mb  # the bound can tell holding from streaming
    assert large.rows[0].participants == 200 and small.rows[0].participants == 50
    assert growth_200 - growth_50 <= GROWTH_BOUND_MB, (growth_50, growth_200, update_mb)
