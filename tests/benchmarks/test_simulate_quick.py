"""``fedsparsify bench simulate --quick``: rows, commit and command in the JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedsparsify.bench.simulate import KEYS
from fedsparsify.cli import app


def test_quick_simulation_benchmark_writes_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "simulate.json"
    result = CliRunner().invoke(
        app, ["bench", "simulate", "--quick", "--engines", "local", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert len(payload["git_commit"].removesuffix("+dirty")) in (40, len("unknown"))
    assert payload["command"].startswith("fedsparsify bench simulate --quick")
    rows = payload["rows"]
    assert [(r["engine"], r["sites"]) for r in rows] == [("local", 4), ("local", 8)]
    for r in rows:
        assert set(r) == set(KEYS)
        assert r["sparsity"] > 0.89 and r["per_round"] == r["sites"]
        # every site uploads one seeded ciphertext and downloads the previous aggregate (sizes
        # vary by a few hundred bytes with zstd)
        per_site = r["upload_bytes_per_site"] + r["aggregate_bytes"]
        assert abs(r["bytes_per_round"] - r["sites"] * per_site) < 0.01 * r["bytes_per_round"]
        # one partly filled ciphertext (a tail frame, wire format 3): about 5 B per kept value
        # plus the header, far below a full 4096-slot frame (20 kB)
        assert 1_000 < r["upload_bytes_per_site"] < 20_000
    assert "| local | 8 |" in result.output
