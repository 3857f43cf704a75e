"""The README's step-by-step REST walkthrough runs against a real aggregator and is correct."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fedsparsify.clients.launcher import start_aggregator

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "rest_walkthrough.py"
ADMIN_TOKEN = "fsa_walkthrough-admin-token"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rest_walkthrough", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_walkthrough_completes_a_federation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    walkthrough = _load()
    with start_aggregator(tmp_path / "data", admin_token=ADMIN_TOKEN) as server:
        worst = walkthrough.run(server.url, ADMIN_TOKEN)
        federations = server.admin().list_federations()
    assert worst < 1e-5  # lean preset: about 3e-7 * sqrt(sites) for values within |x| <= 32
    assert [f["state"] for f in federations] == ["completed"]
    printed = capsys.readouterr().out
    assert "PUT  /v1/federations/" in printed and "/rounds/0/updates/values -> 201" in printed


def test_walkthrough_names_the_wrong_admin_token(tmp_path: Path) -> None:
    walkthrough = _load()
    with (
        start_aggregator(tmp_path / "data", admin_token=ADMIN_TOKEN) as server,
        pytest.raises(SystemExit, match="expected 201, got 401"),
    ):
        walkthrough.run(server.url, "fsa_not-the-admin-token")
