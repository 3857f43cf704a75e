"""Auth: admin, enrolment and client tokens; who may see and do what."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedsparsify.api import Settings, create_app
from fedsparsify.api.db import Base
from fedsparsify.crypto import SiteIdentity
from tests.api.conftest import ADMIN, ADMIN_TOKEN, Harness, bearer, spec
from tests.sites import registration


def test_missing_token_is_401_with_the_error_shape(client: TestClient) -> None:
    r = client.get("/v1/federations")
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert set(r.json()) == {"error", "detail"}
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [bearer("fsa_wrong"), bearer(ADMIN_TOKEN + "x"), {"Authorization": f"Basic {ADMIN_TOKEN}"}],
)
def test_wrong_token_is_401(client: TestClient, header: dict[str, str]) -> None:
    r = client.post("/v1/federations", json=spec(), headers=header)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


def test_client_token_cannot_do_admin_things(h: Harness) -> None:
    fed = h.federation(open_round=False)
    member = fed.members[1]
    assert h.client.get("/v1/federations", headers=member.auth).status_code == 403
    assert h.client.post("/v1/federations", json=spec(), headers=member.auth).status_code == 403
    r = h.client.post(fed.path("/rounds"), headers=member.auth)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"


def test_client_of_another_federation_is_403(h: Harness) -> None:
    fed_a = h.federation(open_round=False)
    fed_b = h.federation(open_round=False)
    outsider = fed_b.members[0]
    for path in ("", "/clients", "/keys/context", "/rounds", "/rounds/current"):
        r = h.client.get(fed_a.path(path), headers=outsider.auth)
        assert r.status_code == 403, (path, r.text)
    r = h.upload(fed_a, 0, outsider, b"FSUP")
    assert r.status_code == 403


def test_member_sees_its_federation_without_secrets(h: Harness, data_dir: Path) -> None:
    fed = h.federation(open_round=False)
    r = h.client.get(fed.path(), headers=fed.members[2].auth)
    assert r.status_code == 200
    text = r.text
    assert "hash" not in text
    assert str(data_dir) not in text and "blobs" not in text
    assert fed.enrollment_token not in text
    for m in fed.members:
        assert m.token not in text
    listed = h.client.get(fed.path("/clients"), headers=fed.members[2].auth).text
    assert all(m.token not in listed for m in fed.members)


def test_enrolment_token_is_required_and_checked(h: Harness) -> None:
    fed = h.create()
    body = registration("x", 3, SiteIdentity.generate())
    r = h.client.post(fed.path("/clients"), json=body)
    assert r.status_code == 401
    r = h.client.post(fed.path("/clients"), json=body, headers={"X-Enrollment-Token": "nope"})
    assert r.status_code == 401
    other = h.create()
    r = h.client.post(
        fed.path("/clients"), json=body, headers={"X-Enrollment-Token": other.enrollment_token}
    )
    assert r.status_code == 401
    r = h.client.post(fed.path("/clients"), json=body, headers=bearer(fed.enrollment_token))
    assert r.status_code == 201, r.text
    # The enrolment token is not a client token.
    r = h.client.get(fed.path(), headers=bearer(fed.enrollment_token))
    assert r.status_code == 401


def test_tokens_are_stored_hashed(h: Harness, settings: Settings) -> None:
    fed = h.federation(open_round=False)
    if h.state.db.is_sqlite:  # the file's bytes, free pages and the WAL included
        raw = Path(settings.data_dir / "fedsparsify.db").read_bytes()
        for wal in settings.data_dir.glob("fedsparsify.db-wal"):
            raw += wal.read_bytes()
    else:  # every row of every table
        with h.state.db.read() as session:
            raw = b"".join(
                repr(row).encode()
                for table in Base.metadata.sorted_tables
                for row in session.execute(table.select()).all()
            )
    for secret in [ADMIN_TOKEN, fed.enrollment_token, *(m.token for m in fed.members)]:
        assert secret.encode() not in raw


def test_generated_admin_token_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "gen")
    with caplog.at_level(logging.WARNING, logger="fedsparsify.api"):
        app = create_app(settings)
    found = re.findall(r"fsa_[A-Za-z0-9_-]{43}", caplog.text)
    assert len(found) == 1
    token = found[0]
    with TestClient(app) as c:
        assert c.get("/v1/federations", headers=bearer(token)).status_code == 200
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedsparsify.api"):
        again = create_app(settings)
    assert "fsa_" not in caplog.text
    with TestClient(again) as c:
        assert c.get("/v1/federations", headers=bearer(token)).status_code == 200
        assert c.get("/v1/federations", headers=ADMIN).status_code == 401
    with sqlite3.connect(settings.data_dir / "fedsparsify.db") as db:
        rows = db.execute("select value_hash from server_secrets").fetchall()
    assert rows and token not in str(rows)


def test_configured_admin_token_replaces_a_generated_one(tmp_path: Path) -> None:
    create_app(Settings(data_dir=tmp_path / "d")).state.fedsparsify.close()
    app = create_app(Settings(data_dir=tmp_path / "d", admin_token=ADMIN_TOKEN))
    with TestClient(app) as c:
        assert c.get("/v1/federations", headers=ADMIN).status_code == 200


def test_envelope_is_only_the_callers_own(h: Harness) -> None:
    fed = h.federation(open_round=False)
    _dealer, b, c = fed.members
    got_b = h.client.get(fed.path("/keys/envelope"), headers=b.auth).content
    got_c = h.client.get(fed.path("/keys/envelope"), headers=c.auth).content
    assert got_b != got_c
    # b's envelope opens for b and the key set is the dealer's.
    assert h.secret_of(fed, b).digest == h.key_set.digest
    assert h.secret_of(fed, c).digest == h.key_set.digest
    # There is no route to fetch someone else's envelope.
    r = h.client.get(fed.path(f"/keys/envelopes/{c.id}"), headers=b.auth)
    assert r.status_code == 405


def test_only_the_dealer_uploads_keys(h: Harness) -> None:
    fed = h.create()
    dealer = h.register(fed, "d", 5)
    other = h.register(fed, "o", 5)
    r = h.client.put(
        fed.path("/keys/context"), content=h.key_set.public_bytes(), headers=other.auth
    )
    assert r.status_code == 403
    r = h.client.put(fed.path("/keys/context"), content=h.key_set.public_bytes(), headers=ADMIN)
    assert r.status_code == 403
    r = h.client.put(fed.path(f"/keys/envelopes/{dealer.id}"), content=b"x", headers=other.auth)
    assert r.status_code == 403
