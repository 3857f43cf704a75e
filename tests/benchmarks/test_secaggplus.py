"""Flower's SecAgg+ stages and our masked CKKS round, each against numpy's weighted average;
the comparison skips SecAgg+ with a message when flwr is absent."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.bench import secaggplus, side_by_side
from fedsparsify.crypto import create_secret_context


def test_secaggplus_round_recovers_the_weighted_average() -> None:
    if secaggplus.available() is not None:
        pytest.skip(str(secaggplus.available()))
    rng = np.random.default_rng(5)
    vectors = [rng.normal(0, 0.05, 3000).astype(np.float32) for _ in range(5)]
    samples = [100, 250, 400, 50, 700]
    got = secaggplus.run_secaggplus(vectors, samples)
    assert got["max_abs_error"] < 5e-5  # Flower's 2^22 quantisation
    # the masked upload is int64 per value plus keys and shares
    assert got["upload_bytes"] > 8 * 3000
    assert got["download_bytes"] > 4 * 3000


def test_ours_masked_round_recovers_the_weighted_average(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    vectors = [rng.normal(0, 0.05, 3 * 4096).astype(np.float32) for _ in range(4)]
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    got = side_by_side.run_ours(create_secret_context("lean"), vectors, weights, tmp_path)
    assert got["max_abs_error"] < 1e-6
    assert 5.0 < got["upload_bytes"] / (3 * 4096) < 6.5  # seeded frames, two values per slot
    assert got["download_bytes"] > got["upload_bytes"]  # a sum is not seeded


def test_without_flwr_the_comparison_says_why_and_runs_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "flwr" or m.startswith("flwr.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "flwr", None)  # import flwr -> ImportError
    reason = secaggplus.available()
    assert reason is not None and "pip install -e .[bench]" in reason
    rows, skipped = side_by_side.compare(sizes=(5000,), sites=(4,))
    assert skipped == reason
    assert {r["system"] for r in rows} == {"ours (lean CKKS + pairwise masks)"}
    assert {r["mode"] for r in rows} == {"dense", "kept at 0.95"}
    assert "SecAgg+ skipped" in side_by_side.markdown(rows, skipped)
