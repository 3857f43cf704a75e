"""``fedsparsify bench crypto|accuracy`` run the packaged benchmarks with their own options."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedsparsify.bench.crypto_costs import KEYS, SPARSITIES
from fedsparsify.cli import app


def test_bench_crypto_passes_its_options_through(tmp_path: Path) -> None:
    out = tmp_path / "costs.json"
    result = CliRunner().invoke(
        app, ["bench", "crypto", "--n-total", "20000", "--only", "plaintext", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    result = json.loads(out.read_text())
    assert result["command"].startswith("fedsparsify bench crypto --n-total 20000")
    assert result["git_commit"]
    rows = result["rows"]
    assert {r["preset"] for r in rows} == {"plaintext"}
    assert all(r["vs_floor"] == 1.0 for r in rows)
    assert [r["sparsity"] for r in rows] == list(SPARSITIES)
    assert all(set(r) == set(KEYS) and r["n_total"] == 20000 for r in rows)
    assert rows[-1]["bytes"] < rows[0]["bytes"]


def test_bench_crypto_refuses_an_unknown_option() -> None:
    result = CliRunner().invoke(app, ["bench", "crypto", "--no-such-option"])
    assert result.exit_code == 2


def test_bench_crypto_masking_runs_the_masking_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "masking.json"
    result = CliRunner().invoke(
        app, ["bench", "crypto", "--masking", "--quick", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    assert [r["participants"] for r in body["rows"]] == [4, 16]
    assert all(r["upload_bytes_masked"] == r["upload_bytes_plain"] for r in body["rows"])


def test_bench_latency_picks_modes_and_sparsities() -> None:
    from fedsparsify.bench.latency import make_config

    config = make_config(
        quick=True,
        out_dir=Path("x"),
        modes=("ckks-peer-dense", "ckks-lean-sparse"),
        sparsities=(0.95,),
    )
    assert config.plan("vec100k") == [("ckks-peer-dense", 0.0), ("ckks-lean-sparse", 0.95)]


def test_bench_latency_names_a_bad_mode_or_sparsity(tmp_path: Path) -> None:
    runner = CliRunner()
    out = ["--out", str(tmp_path)]
    result = runner.invoke(app, ["bench", "latency", "--modes", "ckks-lean,plaintext", *out])
    assert result.exit_code == 1
    assert "unknown mode(s) ['ckks-lean']" in result.output
    result = runner.invoke(app, ["bench", "latency", "--sparsities", "0.9,1.5", *out])
    assert result.exit_code == 1
    assert "strictly between 0 and 1, got [1.5]" in result.output
    result = runner.invoke(app, ["bench", "latency", "--sparsities", "0.9,most", *out])
    assert result.exit_code == 1
    assert "'most' is not a number" in result.output
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_bench_latency_site_options_reach_the_config() -> None:
    from fedsparsify.bench.latency import make_config

    default = make_config(quick=True, out_dir=Path("x"))
    assert (default.site_poll_s, default.site_threads, default.site_evaluate) == (0.5, 1, False)
    old = make_config(
        quick=True, out_dir=Path("x"), site_poll_s=0.01, site_threads=0, site_evaluate=True
    )
    assert (old.site_poll_s, old.site_threads, old.site_evaluate) == (0.01, 0, True)
    result = CliRunner().invoke(app, ["bench", "latency", "--site-threads", "-1"])
    assert result.exit_code == 1
    assert "site threads must be >= 0" in result.output


def test_bench_latency_records_the_command_with_its_flags() -> None:
    from fedsparsify.bench.latency import config_command, make_config

    assert config_command(make_config(quick=False, out_dir=Path("benchmarks/results"))) == (
        "fedsparsify bench latency"
    )
    config = make_config(
        quick=False,
        out_dir=Path("benchmarks/results/latency-2-sites"),
        workloads=("brainage", "vec1m"),
        clients=2,
        scaling_clients=(),
        inference=False,
        site_poll_s=0.01,
        site_threads=0,
        site_evaluate=True,
    )
    assert config_command(config) == (
        "fedsparsify bench latency --out benchmarks/results/latency-2-sites --workloads "
        "brainage,vec1m --clients 2 --scaling-clients '' --no-inference --site-poll-s 0.01 "
        "--site-threads 0 --site-evaluate"
    )
