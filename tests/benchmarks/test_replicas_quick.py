"""``fedsparsify bench replicas`` runs end to end (SQLite and PostgreSQL processes over real
HTTP) and writes the documented JSON shape. Timings are not checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsparsify.cli import app

pytestmark = pytest.mark.e2e


def test_quick_run_writes_one_row_per_setup(tmp_path: Path, postgres: object) -> None:
    out = tmp_path / "replicas.json"
    # two rounds per setup: each round is a federation of its own, on one server
    args = ["--quick", "--sites", "4", "--values", "5000", "--rounds", "2", "--processes", "1,2"]
    args += ["--json", str(out)]
    result = CliRunner().invoke(app, ["bench", "replicas", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["benchmark"] == "replicas"
    assert report["command"] == "fedsparsify bench replicas " + " ".join([*args, "--seed", "0"])
    assert len(report["git_commit"].removesuffix("+dirty")) in (40, len("unknown"))
    rows = report["rows"]
    assert [(r["database"], r["processes"]) for r in rows] == [
        ("sqlite", 1),
        ("postgresql", 1),
        ("postgresql", 2),
    ]
    for row in rows:
        assert row["uploads"] == 8 and row["sites"] == 4 and row["upload_bytes"] > 0
        assert row["uploads_per_s"] > 0
        assert 0 < row["latency_p50_s"] <= row["latency_p99_s"]
        assert row["server_add_s_per_upload"] > 0 and row["server_stage_s_per_upload"] > 0
    assert "| postgresql | 2 |" in result.output
