"""The main job end to end, shrunk: two sites, two rounds, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsparsify",
            "demo",
            "--sites",
            "2",
            "--rounds",
            "2",
            "--subjects-per-site",
            "12",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in run.stdout
    for name in ("report.md", "metrics.json", "mae.png", "sparsity.png", "bytes.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    (main,) = metrics["runs"]
    assert main["name"] == "sparse-ckks" and main["preset"] == "lean"
    assert [row["round"] for row in main["rows"]] == [0, 1]
    assert all(row["contributors"] == 2 for row in main["rows"])
    # round 1 trains under a pruned mask, so it uploads fewer bytes than round 0
    assert main["rows"][1]["sparsity"] > main["rows"][0]["sparsity"]
    assert main["rows"][1]["upload_bytes"] < main["rows"][0]["upload_bytes"]
    assert main["final_test_mae"] is not None
    ref = metrics["reference_plaintext"]["final_test_mae"]
    assert abs(main["final_test_mae"] - ref) <= 1.0
