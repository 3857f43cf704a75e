"""``benchmarks/accuracy.py --quick`` runs end to end and writes the documented JSON shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "accuracy.py"
ROW_KEYS = {"dataset", "method", "target_sparsity", "final_sparsity", "metric", "value", "rounds"}
METHODS = {"fedavg", "fedsparsify-global", "fedsparsify-local", "random", "one-shot"}


def test_quick_run_writes_rows_curves_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "accuracy.json").read_text())
    rows = report["rows"]
    assert rows
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["metric"] == {"digits": "accuracy", "brainage": "mae"}[row["dataset"]]
        assert isinstance(row["value"], float)
        assert 0.0 <= row["final_sparsity"] < 1.0
    for dataset in ("digits", "brainage"):
        methods = {r["method"] for r in rows if r["dataset"] == dataset}
        assert methods == METHODS
        pruned = [r for r in rows if r["dataset"] == dataset and r["method"] != "fedavg"]
        assert {r["target_sparsity"] for r in pruned} == {0.9}
        # the schedules reach their target (majority voting may land near it)
        for r in pruned:
            assert abs(r["final_sparsity"] - 0.9) < 0.02, r
        assert (out / f"accuracy_{dataset}.png").stat().st_size > 0
    dense = [r for r in rows if r["method"] == "fedavg"]
    assert all(r["target_sparsity"] == 0.0 and r["final_sparsity"] == 0.0 for r in dense)
    assert len(report["curves"]) == len(rows)
    for curve in report["curves"]:
        assert len(curve["per_round"]) == next(
            r["rounds"] for r in rows if r["dataset"] == curve["dataset"]
        )
