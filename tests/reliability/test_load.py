"""Concurrent uploads to one round: no errors, nothing lost, a correct sum, flat memory."""

from __future__ import annotations

import math

import pytest

from tests.conftest import Recorder
from tests.reliability.live import ATOL, LiveServer
from tests.reliability.load import LoadResult, brainage_size, run_load

pytestmark = pytest.mark.e2e


def check(result: LoadResult, flat_mib: float) -> None:
    assert result.statuses == {201: result.clients}, result
    assert result.accepted == result.clients and result.lost == 0
    # crypto's budget is 3e-7·sqrt(K) for K independent encryptions. A ciphertext reused by
    # c sites adds its noise c times over (coherently), so the sum's noise is that of
    # K_eff = distinct · c² independent ones (8 · 4² = 128 for the 32-site run).
    copies = result.clients / result.distinct_updates
    k_eff = result.distinct_updates * copies * copies
    assert result.max_abs_error <= max(ATOL, 3e-7 * math.sqrt(k_eff)), result
    # Memory does not grow with the number of uploads: the last quarter of the uploads does not
    # raise the aggregator's RSS by more than ``flat_mib`` over the first quarter (holding every
    # upload in memory would add clients x upload_bytes).
    growth = result.rss_last_quarter_peak_mib - result.rss_first_quarter_peak_mib
    assert growth <= flat_mib, result
    # And the whole load costs far less than keeping a quarter of the uploads in memory.
    held = result.clients * result.upload_bytes / (1 << 20) / 4
    assert result.rss_peak_mib - result.rss_baseline_mib < 64 + held, result


def test_eight_concurrent_clients_small_updates(server: LiveServer, record: Recorder) -> None:
    result = run_load(server, clients=8, n_values=200_000, distinct=2)
    record("load", **result.as_dict())
    check(result, flat_mib=64)


@pytest.mark.slow
def test_32_concurrent_clients_full_size_brainage(server: LiveServer, record: Recorder) -> None:
    n_values = brainage_size()
    assert n_values == 2_948_801
    result = run_load(server, clients=32, n_values=n_values, distinct=8)
    record("load", **result.as_dict())
    check(result, flat_mib=256)
