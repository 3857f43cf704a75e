"""A data directory written by release 0.1, upgraded (`fedsparsify db upgrade`) and served by this
one: the stored specs still pass the new bounds, the new table of idempotent answers appears,
and old names count for uniqueness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx

from fedsparsify.clients.launcher import start_aggregator
from tests.cli import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1"


def test_release_0_1_data_serves_with_the_edge(tmp_path: Path) -> None:
    ids = json.loads((FIXTURE / "ids.json").read_text())
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "aggregator", data)
    run_cli("db", "upgrade", "--data-dir", str(data))
    admin = {"Authorization": f"Bearer {ids['admin_token']}"}
    with start_aggregator(data, admin_token=ids["admin_token"]) as proc:
        for fid in (ids["federation"], ids["enrolling"]):
            r = httpx.get(f"{proc.url}/v1/federations/{fid}", headers=admin, timeout=30)
            assert r.status_code == 200, r.text
        old_name = httpx.get(
            f"{proc.url}/v1/federations/{ids['federation']}", headers=admin, timeout=30
        ).json()["name"]
        twin = httpx.post(
            f"{proc.url}/v1/federations",
            json={"name": f" {old_name.upper()} ", "min_clients": 2, "quorum": 2},
            headers=admin,
            timeout=30,
        )
        assert twin.status_code == 409, twin.text
        keyed = {**admin, "Idempotency-Key": "after-upgrade"}
        body = {"name": "after upgrade", "min_clients": 2, "quorum": 2}
        first = httpx.post(f"{proc.url}/v1/federations", json=body, headers=keyed, timeout=30)
        again = httpx.post(f"{proc.url}/v1/federations", json=body, headers=keyed, timeout=30)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
