"""The operator's and the hospital's trust commands against a real aggregator process:
`federation members|rotate-code|revoke-code|remove-member`, `identity` and `roster`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx
import pytest

from fedsparsify.clients.launcher import start_aggregator
from fedsparsify.clients.state import Credentials, StateDir
from tests.cli import run_cli
from tests.sites import registration

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str], code: int = 0) -> str:
    out = run_cli(*args, env=env, code=code)
    return out.stdout + out.stderr


def test_trust_commands(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "FEDSPARSIFY_ADMIN_TOKEN": token}
    with start_aggregator(tmp_path / "agg", admin_token=token) as server:
        out = cli("federation", "create", "--server", server.url, "--name", "cli", env=env)
        fid = out.split("federation: ")[1].split()[0]
        join = out.split("join code (shown once): ")[1].split()[0]
        # Two hospitals make their identities; a's state registers (as `client` would).
        line_a = cli("identity", "--state", str(tmp_path / "a"), "--name", "hospital-a", env=env)
        line_b = cli("identity", "--state", str(tmp_path / "b"), "--name", "hospital-b", env=env)
        assert line_a.split()[0] == "hospital-a" and len(line_a.split()[1]) == 32
        assert line_a == cli(
            "identity", "--state", str(tmp_path / "a"), "--name", "hospital-a", env=env
        )
        ids = {}
        for name, folder in (("hospital-a", "a"), ("hospital-b", "b")):
            store = StateDir(tmp_path / folder)
            r = httpx.post(
                f"{server.url}/v1/federations/{fid}/clients",
                json=registration(name, 10, store.identity()),
                headers={"X-Enrollment-Token": join.split(":", 1)[1]},
            )
            assert r.status_code == 201, r.text
            body = r.json()
            ids[name] = body["client_id"]
            store.save_credentials(
                Credentials(
                    server.url, fid, body["client_id"], body["token"], body["is_dealer"], name
                )
            )
        members = cli("federation", "members", fid, "--server", server.url, env=env)
        assert line_a.split()[1] in members and "dealer" in members
        peers = tmp_path / "peers.txt"
        peers.write_text(line_a + line_b)
        seen = cli("roster", "--state", str(tmp_path / "b"), "--peers", str(peers), env=env)
        assert "confirmed as 'hospital-a'" in seen and "you" in seen
        peers.write_text(line_b)
        seen = cli("roster", "--state", str(tmp_path / "b"), "--peers", str(peers), env=env)
        assert "NOT CONFIRMED" in seen
        rotated = cli(
            "federation", "rotate-code", fid, "--server", server.url, "--max-uses", "1", env=env
        )
        new_code = rotated.split("join code (shown once): ")[1].split()[0]
        assert new_code != join and "1 registration(s)" in rotated
        cli("federation", "revoke-code", fid, "--server", server.url, env=env)
        r = httpx.get(
            f"{server.url}/v1/federations/{fid}/spec",
            headers={"X-Enrollment-Token": new_code.split(":", 1)[1]},
        )
        assert r.status_code == 401
        cli("federation", "remove-member", fid, ids["hospital-b"], "--server", server.url, env=env)
        members = cli("federation", "members", fid, "--server", server.url, env=env)
        assert "REMOVED" in members
        failed = cli("roster", "--state", str(tmp_path / "b"), env=env, code=1)
        assert "removed" in failed
