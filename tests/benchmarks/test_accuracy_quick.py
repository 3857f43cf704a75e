"""``benchmarks/accuracy.py --quick``: every method runs its own schedule, and the summary is
the mean ± std over seeds of each run's last-5-round test metric (checked against the curves)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedsparsify.bench.accuracy import RUN_KEYS, SETUPS, TAIL
from fedsparsify.platform.data import make_digits_federation

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "accuracy.py"
METHODS = {"fedavg", "fedsparsify-global", "fedsparsify-local", "random", "one-shot"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("accuracy")
    out = tmp / "results"
    args = ["--quick", "--out", str(out), "--cache-dir", str(tmp / "cache"), "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for dataset in ("digits", "brainage"):
        assert (out / f"accuracy_{dataset}.png").stat().st_size > 0
    loaded: dict[str, Any] = json.loads((out / "accuracy.json").read_text())
    return loaded


def _curve(report: dict[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    (curve,) = [
        c
        for c in report["curves"]
        if all(c[k] == run[k] for k in ("dataset", "method", "target_sparsity", "seed"))
    ]
    return list(curve["per_round"])


def test_provenance_is_recorded(report: dict[str, Any]) -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", report["commit"])
    assert isinstance(report["dirty"], bool)
    assert report["command"].startswith("benchmarks/accuracy.py --quick")
    assert report["seeds"] == [0, 1] and report["tail_rounds"] == TAIL


def test_each_run_value_is_the_mean_of_its_last_five_rounds(report: dict[str, Any]) -> None:
    runs = report["runs"]
    assert {(r["dataset"], r["seed"]) for r in runs} == {
        (d, s) for d in ("digits", "brainage") for s in (0, 1)
    }
    for run in runs:
        assert tuple(run) == RUN_KEYS
        rows = _curve(report, run)
        assert len(rows) == run["rounds"] == SETUPS[run["dataset"]](True).rounds
        tail = [r[run["metric"]] for r in rows[-TAIL:]]
        assert run["value"] == pytest.approx(statistics.fmean(tail), rel=1e-5)
        assert run["final_value"] == pytest.approx(rows[-1][run["metric"]], rel=1e-5)


def test_summary_is_mean_and_sample_std_over_seeds(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert len(summary) == 2 * len(METHODS)
    for entry in summary:
        values = [
            r["value"]
            for r in report["runs"]
            if (r["dataset"], r["method"], r["target_sparsity"])
            == (entry["dataset"], entry["method"], entry["target_sparsity"])
        ]
        assert len(values) == 2
        assert entry["mean"] == pytest.approx(statistics.fmean(values))
        assert entry["std"] == pytest.approx(statistics.stdev(values))
        if entry["method"] != "fedavg":
            dense = next(
                e for e in summary if e["dataset"] == entry["dataset"] and e["method"] == "fedavg"
            )
            deltas = [v - d for v, d in zip(entry["values"], dense["values"], strict=True)]
            assert entry["paired_delta_mean"] == pytest.approx(statistics.fmean(deltas))
            near = abs(entry["mean"] - dense["mean"]) <= max(entry["std"], dense["std"])
            assert (entry["versus_fedavg"] == "within one std") == near
    for line in ("fedavg", "fedsparsify-global", "random"):
        assert re.search(
            rf"\| digits \| accuracy \| {line} \| 0\.\d{{4}} ± 0\.\d{{4}}", report["table"]
        )


def test_methods_follow_their_own_schedules(report: dict[str, Any]) -> None:
    """Dense stays dense; progressive schedules pass through intermediate sparsities; one-shot
    jumps once; random and FedSparsify-Local prune other coordinates than global magnitude."""
    for dataset in ("digits", "brainage"):
        setup = SETUPS[dataset](True)
        by_method = {
            r["method"]: _curve(report, r)
            for r in report["runs"]
            if r["dataset"] == dataset and r["seed"] == 0
        }
        assert set(by_method) == METHODS
        spars = {m: [r["sparsity"] for r in rows] for m, rows in by_method.items()}
        assert set(spars["fedavg"]) == {0.0}
        for method in ("fedsparsify-global", "random"):
            assert spars[method][setup.prune_end] == pytest.approx(0.9, abs=1e-3)
            assert 0.0 < spars[method][setup.prune_start] < 0.9  # a step on the way
        one = spars["one-shot"]
        assert one[: setup.one_shot_round] == [0.0] * setup.one_shot_round
        assert all(s == pytest.approx(0.9, abs=1e-3) for s in one[setup.one_shot_round :])
        assert abs(spars["fedsparsify-local"][-1] - 0.9) < 0.02  # the vote lands near it
        metric = setup.metric
        curves = {m: [r[metric] for r in rows] for m, rows in by_method.items()}
        assert curves["random"] != curves["fedsparsify-global"]
        assert curves["fedsparsify-local"] != curves["fedsparsify-global"]
        assert curves["one-shot"] != curves["fedsparsify-global"]


def test_digits_accuracy_counts_images_of_the_larger_test_split(report: dict[str, Any]) -> None:
    """40 % of the 1,797 digits are held out (719 images): every accuracy is k / n_test."""
    for seed in (0, 1):
        data = make_digits_federation(seed=seed, **SETUPS["digits"](True).data)
        n_test = int(data.y_test.shape[0])
        assert n_test == 719
        for run in report["runs"]:
            if run["dataset"] != "digits" or run["seed"] != seed:
                continue
            for row in _curve(report, run):
                count = row["accuracy"] * n_test
                assert count == pytest.approx(round(count), abs=2e-3)
