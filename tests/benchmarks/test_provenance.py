"""Provenance: a results file rewritten in the checkout does not make the code 'dirty'."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fedsparsify.bench.provenance import code_changes


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_results_and_docs_do_not_count_as_code_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "docs").mkdir()
    for name in ("src/code.py", "benchmarks/results/r.json", "docs/report.md"):
        (repo / name).write_text("first\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert code_changes(repo / "src") == ""
    (repo / "benchmarks" / "results" / "r.json").write_text("second\n")
    (repo / "docs" / "report.md").write_text("second\n")
    assert code_changes(repo / "src") == ""
    (repo / "src" / "code.py").write_text("second\n")
    assert "src/code.py" in (code_changes(repo) or "")
    assert code_changes(tmp_path) is None  # not a checkout
