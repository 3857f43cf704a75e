"""The main job end to end, shrunk: two sites, two rounds, through the real CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest

from tests.platform.data.helpers import head

pytestmark = pytest.mark.e2e


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "fedsparsify", "demo", "--sites", "2", "--rounds", "2", *args],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def assert_matches_the_in_process_run(metrics: dict[str, Any]) -> None:
    """The encrypted federation over HTTP ends where the same spec run in process without
    encryption does: after two rounds the models differ only by CKKS noise crossing the result
    grid, far below 0.05 y of test MAE (the 60-round demo allows 1 y, chaos included)."""
    (main,) = metrics["runs"]
    ref = metrics["reference_plaintext"]
    assert isinstance(main["final_test_mae"], float)
    assert abs(main["final_test_mae"] - ref["final_test_mae"]) <= 0.05, (main, ref)
    assert main["final_sparsity"] == pytest.approx(ref["final_sparsity"], abs=1e-9)


def test_demo_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    run = _demo(tmp_path, "--subjects-per-site", "12", "--out", str(out))
    assert f"report: {out / 'report.md'}" in run.stdout
    # stdout is a pipe here: plain lines, one per closed round, numbered as in the table
    assert "\x1b[" not in run.stdout and "\r" not in run.stdout
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if " round " in line.split(":")[0]] == [
        "sparse-ckks round 0 (1/2)",
        "sparse-ckks round 1 (2/2)",
    ]
    summary = next(line for line in lines if line.startswith("sparse-ckks: final test MAE"))
    assert "2 rounds in" in summary and "moved (" in summary and "up," in summary
    assert any(line.startswith("demo wall time ") for line in lines)
    for name in ("report.md", "metrics.json", "mae.png", "sparsity.png", "bytes.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    heading = "# fedsparsify demo: federated brain age, sparse and encrypted"
    assert (out / "report.md").read_text().splitlines()[0] == heading
    assert metrics["title"] == heading.removeprefix("# ")
    (main,) = metrics["runs"]
    assert main["name"] == "sparse-ckks" and main["preset"] == "lean"
    assert [row["round"] for row in main["rows"]] == [0, 1]
    assert all(row["contributors"] == 2 for row in main["rows"])
    # round 1 trains under a pruned mask, so it uploads fewer bytes than round 0
    assert main["rows"][1]["sparsity"] > main["rows"][0]["sparsity"]
    assert main["rows"][1]["upload_bytes"] < main["rows"][0]["upload_bytes"]
    assert_matches_the_in_process_run(metrics)


def test_demo_trains_on_a_real_nifti_folder(tmp_path: Path) -> None:
    """``--data``: a BIDS-style folder with a site column becomes the federation's sites."""
    root = tmp_path / "t1"
    rows = ["participant_id\tage\tsite"]
    for i in range(16):
        site = "hospital-a" if i < 8 else "hospital-b"
        age = 25.0 + 4.0 * i
        volume = head(i) * (1.0 - 0.004 * age)  # older: a little darker
        path = root / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
        rows.append(f"sub-{i:02d}\t{age}\t{site}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    _demo(tmp_path, "--data", str(root), "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    (main,) = metrics["runs"]
    assert [row["contributors"] for row in main["rows"]] == [2, 2]
    assert_matches_the_in_process_run(metrics)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["hospital-a", "hospital-b"]


def test_demo_prints_the_dashboard_and_keeps_serving(tmp_path: Path) -> None:
    """The address comes first; with ``--keep-serving`` the dashboard answers after the report,
    with the admin token from the owner-only file, until SIGINT."""
    out = tmp_path / "report"
    args = ["--sites", "2", "--rounds", "1", "--subjects-per-site", "12", "--out", str(out)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "fedsparsify",
            "demo",
            *args,
            "--keep-serving",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if "keeps serving" in line:
                break
        output = "".join(lines)
        match = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/) \(.* token in (\S+)\)", output)
        assert match, output
        # printed at the start, right after the banner: before the data and the rounds
        assert lines[1].startswith("dashboard: "), output
        address, token_file = match.group(1), Path(match.group(2))
        assert token_file == out / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token not in output
        with httpx.Client(base_url=address, timeout=30, follow_redirects=True) as client:
            assert 'name="token"' in client.get("/").text
            signed = client.post("/dashboard/sign-in", data={"token": token})
            assert signed.status_code == 200 and "dashboard.js" in signed.text
            (fed,) = client.get("/v1/federations").json()
            assert fed["name"] == "brain-age sparse" and fed["state"] == "completed"
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where it hangs
            rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output + rest
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{address}healthz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
