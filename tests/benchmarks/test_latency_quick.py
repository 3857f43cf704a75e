"""``benchmarks/latency.py --quick`` runs end to end over real HTTP and writes the documented
shape: every mode has a row with positive byte counts and every phase, sparse uploads are
smaller than dense ones, and the scaling and inference parts are there. Timings are not
checked (benchmarks make timing claims, tests do not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsparsify.bench.latency import MODE_PRESETS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "latency.py"
ROW_KEYS = {
    "mode",
    "sparsity",
    "n_params",
    "n_kept",
    "clients",
    "upload_bytes",
    "download_bytes",
    "client_round_s",
    "other_s",
    "upload_bytes_per_kept",
    "total_vs_floor",
    "server_add_s",
    "server_peak_rss_mb",
    "phases",
}
PHASES = {
    "mask_pack",
    "pairwise_mask",
    "encrypt",
    "serialise",
    "upload",
    "download",
    "deserialise",
    "decrypt",
    "unpack",
    "server_validate",
    "server_add",
}

pytestmark = pytest.mark.e2e


def test_quick_run_writes_rows_for_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "latency.json").read_text())
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu_model"]
    rows = report["rows"]
    assert {r["mode"] for r in rows} == set(MODE_PRESETS)
    for row in rows:
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert set(row["phases"]) >= PHASES, PHASES - set(row["phases"])
        assert row["upload_bytes"] > 0 and row["download_bytes"] > 0
        assert row["clients"] == 2
        assert 0 < row["n_kept"] <= row["n_params"]
        assert row["server_peak_rss_mb"] > 0
    by_mode = {(r["mode"], r["sparsity"]): r for r in rows}
    dense = by_mode[("ckks-lean-dense", 0.0)]
    peer = by_mode[("ckks-peer-dense", 0.0)]
    plain = by_mode[("plaintext", 0.0)]
    assert dense["n_kept"] == dense["n_params"] == plain["n_kept"]
    sparse = sorted(
        (r for r in rows if r["mode"] == "ckks-lean-sparse"), key=lambda r: r["sparsity"]
    )
    assert [r["sparsity"] for r in sparse] == [0.9, 0.95]
    floors = {r["sparsity"]: r for r in rows if r["mode"] == "plaintext-sparse"}
    for row in sparse:
        # kept coordinates follow the sparsity (plus the MLP's biases, never pruned)
        kept = (1 - row["sparsity"]) * row["n_params"]
        assert kept <= row["n_kept"] <= kept + 0.005 * row["n_params"]
        assert row["upload_bytes"] < dense["upload_bytes"] < peer["upload_bytes"]
        assert row["download_bytes"] < dense["download_bytes"]
        floor = floors[row["sparsity"]]
        assert floor["n_kept"] == row["n_kept"]
        assert 4 * row["n_kept"] <= floor["upload_bytes"] < 4 * row["n_kept"] + 2000
        assert row["total_vs_floor"] == pytest.approx(
            (row["upload_bytes"] + row["download_bytes"])
            / (floor["upload_bytes"] + floor["download_bytes"])
        )
    assert sparse[1]["upload_bytes"] < sparse[0]["upload_bytes"]
    assert {r["sparsity"] for r in report["ratios"]} == {0.9, 0.95}
    assert [s["clients"] for s in report["scaling"]] == [2, 4]
    inference = report["inference"]["rows"]
    assert [r["sparsity"] for r in inference] == [0.0, 0.9, 0.95]
    for r in inference[1:]:
        assert r["bitmask_values_bytes"] < r["dense_bytes"]
        assert r["n_nonzero"] < r["n_params"]
    for name in ("latency.md", "latency_phases.png", "latency_bytes.png", "latency_scaling.png"):
        assert (out / name).stat().st_size > 0
