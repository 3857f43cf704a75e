"""The dashboard's sign-in, sessions and pages over HTTP (in process; the browser tests are in
``test_dashboard_browser.py``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from fedsparsify.api import Settings, create_app
from fedsparsify.api.db import ClientRow, DashboardSessionRow
from fedsparsify.api.routes.deps import SESSION_COOKIE
from fedsparsify.api.services.sessions import MAX_SESSIONS_PER_TOKEN
from tests.api.conftest import ADMIN, ADMIN_TOKEN, Harness, bearer
from tests.cli import run_cli

FIXTURE = Path(__file__).parents[1] / "fixtures" / "release-0.1"
FORM = "application/x-www-form-urlencoded"


def sign_in(client: TestClient, token: str, **headers: str) -> str | None:
    """POST the form; the new session id, or None when refused (the cookie jar is cleared)."""
    client.cookies.clear()
    r = client.post(
        "/dashboard/sign-in",
        content=f"token={token}",
        headers={"Content-Type": FORM, **headers},
        follow_redirects=False,
    )
    if r.status_code != 303:
        assert "set-cookie" not in r.headers
        return None
    assert r.headers["location"] == "/"
    return r.cookies[SESSION_COOKIE]


def rows(h: Harness) -> list[DashboardSessionRow]:
    with h.state.db.session() as session:
        return list(session.scalars(select(DashboardSessionRow)))


def test_the_page_is_the_sign_in_form_until_signed_in(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'action="/dashboard/sign-in"' in r.text and 'name="token"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"
    assert sign_in(client, ADMIN_TOKEN) is not None
    page = client.get("/")
    assert page.status_code == 200 and "/dashboard/static/dashboard.js" in page.text
    for name, kind in (("dashboard.js", "text/javascript"), ("charts.js", "text/javascript")):
        asset = client.get(f"/dashboard/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert (
        client.get("/dashboard/static/dashboard.css").headers["content-type"].startswith("text/css")
    )


@pytest.mark.parametrize(
    "name", ["nope.js", "sign-in.html", "..%2Fapp.py", "%2E%2E%2Fdb.py", "__init__.py", "a" * 80]
)
def test_only_shipped_assets_are_served(client: TestClient, name: str) -> None:
    r = client.get(f"/dashboard/static/{name}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_sign_in_sets_a_strict_http_only_cookie_and_stores_only_its_hash(h: Harness) -> None:
    r = h.client.post(
        "/dashboard/sign-in",
        data={"token": ADMIN_TOKEN},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=fsd_")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower() and "secure" not in attributes  # plain HTTP here
    assert f"Max-Age={int(h.state.settings.dashboard_session_s)}" in cookie
    session_id = r.cookies[SESSION_COOKIE]
    assert ADMIN_TOKEN not in cookie and ADMIN_TOKEN not in r.headers["location"]
    (row,) = rows(h)
    assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert row.credential_hash == hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    assert row.expires_at == pytest.approx(row.created_at + h.state.settings.dashboard_session_s)


def test_the_cookie_is_secure_over_https(app: object) -> None:
    with TestClient(app, base_url="https://testserver") as client:  # type: ignore[arg-type]
        r = client.post(
            "/dashboard/sign-in",
            data={"token": ADMIN_TOKEN},
            headers={"Origin": "https://testserver"},
            follow_redirects=False,
        )
    assert r.status_code == 303
    assert "secure" in {p.strip().lower() for p in r.headers["set-cookie"].split(";")}


def test_wrong_tokens_are_refused(h: Harness) -> None:
    fed = h.federation(open_round=False)
    for token in ("", "fsa_wrong", ADMIN_TOKEN + "x", fed.enrollment_token, "x" * 400):
        r = h.client.post("/dashboard/sign-in", data={"token": token}, follow_redirects=False)
        assert r.status_code == 401, token
        assert "set-cookie" not in r.headers
        assert "neither the admin token" in r.text
        assert 'name="token"' in r.text  # the form again
    assert rows(h) == []


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Origin": "http://testserver"}, True),
        ({}, True),  # no Origin: not a browser's cross-site form
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}, True),
        ({"Origin": "http://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "https://testserver"}, False),  # another scheme is another origin
        ({"Origin": "http://testserver:8080"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"}, False),
    ],
)
def test_sign_in_checks_where_the_form_came_from(
    h: Harness, headers: dict[str, str], allowed: bool
) -> None:
    session_id = sign_in(h.client, ADMIN_TOKEN, **headers)
    assert (session_id is not None) is allowed
    if not allowed:
        r = h.client.post(
            "/dashboard/sign-in",
            content=f"token={ADMIN_TOKEN}",
            headers={"Content-Type": FORM, **headers},
            follow_redirects=False,
        )
        assert r.status_code == 403 and "another" in r.text
        assert rows(h) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (f'{{"token": "{ADMIN_TOKEN}"}}', "application/json", 400),
        (f"token={ADMIN_TOKEN}", "text/plain", 400),
        ("token=%ff%fe", FORM, 400),  # not UTF-8 once decoded: refused, not a 500
        ("a=1&b=2&c=3&d=4&e=5&token=x", FORM, 400),
        ("token=" + "x" * 5000, FORM, 413),
        (f"token={ADMIN_TOKEN}&token={ADMIN_TOKEN}", FORM, 401),
        (b"token=\xff\xfe", FORM, 400),
    ],
)
def test_bad_forms_are_refused_clearly(
    h: Harness, body: str | bytes, content_type: str, status: int
) -> None:
    r = h.client.post(
        "/dashboard/sign-in",
        content=body,
        headers={"Content-Type": content_type},
        follow_redirects=False,
    )
    assert r.status_code == status, r.text
    assert "set-cookie" not in r.headers and 'name="token"' in r.text
    assert rows(h) == []


def test_a_session_reads_what_the_token_reads_and_nothing_more(h: Harness) -> None:
    ours = h.federation()
    theirs = h.federation()
    member = ours.members[1]
    # The admin's session sees what the admin token sees.
    assert sign_in(h.client, ADMIN_TOKEN)
    for path in ("/v1/federations", ours.path(), theirs.path("/clients"), theirs.path("/rounds")):
        with_cookie = h.client.get(path)
        assert with_cookie.status_code == 200, path
        assert with_cookie.json() == h.client.get(path, headers=ADMIN).json()
    # A member's session: its own federation only, exactly as with its token.
    assert sign_in(h.client, member.token)
    for path in (
        "/v1/federations",
        ours.path(),
        ours.path("/clients"),
        ours.path("/rounds"),
        ours.path("/rounds/0"),
        theirs.path(),
        theirs.path("/clients"),
        theirs.path("/rounds"),
    ):
        with_cookie = h.client.get(path)
        with_token = h.client.get(path, headers=member.auth)
        assert with_cookie.status_code == with_token.status_code, path
        if with_token.status_code == 200:
            a, b = with_cookie.json(), with_token.json()
            if isinstance(a, dict) and "participants" in a and "history" in a:
                for p in (*a["participants"], *b["participants"]):  # liveness moves on
                    p.pop("last_seen_at")
            assert a == b, path
    assert h.client.get(theirs.path()).status_code == 403
    assert h.client.get("/v1/federations").status_code == 403


def test_a_session_never_writes(h: Harness) -> None:
    fed = h.federation(open_round=False)
    member = fed.members[0]
    for token in (ADMIN_TOKEN, member.token):
        assert sign_in(h.client, token)
        for method, path in (
            ("POST", "/v1/federations"),
            ("POST", fed.path("/rounds")),
            ("PUT", fed.path("/keys/context")),
            ("PUT", fed.path("/rounds/0/updates/values")),
            ("POST", fed.path("/rounds/0/metrics")),
        ):
            r = h.client.request(method, path, content=b"{}")
            assert r.status_code == 401, (method, path, r.text)
            assert "only reads" in r.json()["detail"]
    assert h.client.get(fed.path("/rounds")).json() == []


def test_whoami(h: Harness) -> None:
    fed = h.federation(open_round=False)
    member = fed.members[2]
    assert sign_in(h.client, member.token)
    me = h.client.get("/dashboard/session").json()
    assert me["role"] == "client" and me["name"] == member.name
    assert me["client_id"] == member.id and me["federation_id"] == fed.id
    assert me["expires_at"] is not None and me["poll_s"] == h.state.settings.dashboard_poll_s
    h.client.cookies.clear()
    admin = h.client.get("/dashboard/session", headers=ADMIN).json()
    assert admin["role"] == "admin" and admin["federation_id"] is None
    assert admin["expires_at"] is None  # a bearer token has no session
    assert h.client.get("/dashboard/session").status_code == 401


def test_a_site_signed_in_is_not_a_site_seen(h: Harness) -> None:
    """Looking at the dashboard with a site's token must not make that site a live participant
    of the next round."""
    fed = h.federation(open_round=False)
    member = fed.members[1]
    assert sign_in(h.client, member.token)

    def last_seen() -> float | None:
        with h.state.db.session() as session:
            return session.get(ClientRow, member.id).last_seen_at  # type: ignore[union-attr]

    with h.state.db.session() as session:
        session.execute(update(ClientRow).where(ClientRow.id == member.id).values(last_seen_at=5.0))
        session.commit()
    for path in ("/", "/dashboard/session", fed.path(), fed.path("/clients"), fed.path("/rounds")):
        assert h.client.get(path).status_code == 200
    assert last_seen() == 5.0
    h.client.cookies.clear()
    assert h.client.get(fed.path(), headers=member.auth).status_code == 200  # positive control
    assert last_seen() != 5.0


def test_sessions_expire(h: Harness) -> None:
    session_id = sign_in(h.client, ADMIN_TOKEN)
    assert h.client.get("/dashboard/session").status_code == 200
    with h.state.db.session() as session:
        session.execute(update(DashboardSessionRow).values(expires_at=1.0))
        session.commit()
    r = h.client.get("/dashboard/session")
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    page = h.client.get("/")
    assert 'name="token"' in page.text and f"{SESSION_COOKIE}=" in page.headers["set-cookie"]
    # The next sign-in purges expired rows.
    assert sign_in(h.client, ADMIN_TOKEN) != session_id
    assert len(rows(h)) == 1


def test_sign_out_deletes_the_session(h: Harness) -> None:
    session_id = sign_in(h.client, ADMIN_TOKEN)
    assert session_id is not None
    refused = h.client.post(
        "/dashboard/sign-out", headers={"Origin": "http://evil.example"}, follow_redirects=False
    )
    assert refused.status_code == 403 and len(rows(h)) == 1
    r = h.client.post("/dashboard/sign-out", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert rows(h) == []
    h.client.cookies.set(SESSION_COOKIE, session_id)
    assert h.client.get("/dashboard/session").status_code == 401


def test_a_token_holds_a_bounded_number_of_sessions(h: Harness) -> None:
    first = sign_in(h.client, ADMIN_TOKEN)
    for _ in range(MAX_SESSIONS_PER_TOKEN):
        assert sign_in(h.client, ADMIN_TOKEN)
    assert len(rows(h)) == MAX_SESSIONS_PER_TOKEN
    h.client.cookies.set(SESSION_COOKIE, first or "")
    assert h.client.get("/dashboard/session").status_code == 401  # the oldest was ended


@pytest.mark.parametrize(
    "value", [b"", b"fsd_unknown", b"x" * 5000, "fsd_é".encode("latin-1"), b'"fsd_;,\\"']
)
def test_unknown_cookies_are_401(client: TestClient, value: bytes) -> None:
    cookie = {"Cookie": SESSION_COOKIE.encode() + b"=" + value}
    r = client.get("/v1/federations", headers=cookie)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert 'name="token"' in client.get("/", headers=cookie).text


def test_a_new_admin_token_ends_the_old_admin_sessions(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert sign_in(client, ADMIN_TOKEN)
        session_id = client.cookies[SESSION_COOKIE]
        assert client.get("/v1/federations").status_code == 200
    rotated = settings.model_copy(update={"admin_token": SecretStr("fsa_rotated")})
    with TestClient(create_app(rotated)) as client:
        client.cookies.set(SESSION_COOKIE, session_id)
        r = client.get("/v1/federations")
        assert r.status_code == 401 and "no longer valid" in r.json()["detail"]
        assert client.get("/v1/federations", headers=bearer("fsa_rotated")).status_code == 200


def test_removing_a_member_ends_its_sessions(h: Harness) -> None:
    fed = h.federation(open_round=False)
    member = fed.members[2]
    assert sign_in(h.client, member.token)
    assert h.client.get(fed.path()).status_code == 200
    h.client.cookies.clear()
    r = h.client.delete(fed.path(f"/clients/{member.id}"), headers=ADMIN)
    assert r.status_code == 200, r.text
    assert sign_in(h.client, member.token) is None  # its token no longer signs in
    assert sign_in(h.client, fed.members[1].token)  # the others' still do


def test_a_removed_members_open_session_ends(h: Harness) -> None:
    fed = h.federation(open_round=False)
    member = fed.members[2]
    assert sign_in(h.client, member.token)
    r = h.client.delete(fed.path(f"/clients/{member.id}"), headers=ADMIN)
    assert r.status_code == 200, r.text
    gone = h.client.get(fed.path())
    assert gone.status_code == 401 and "no longer valid" in gone.json()["detail"]
    assert rows(h) == []  # the dead session's row is deleted


def test_release_0_1_data_is_shown(tmp_path: Path) -> None:
    """A data directory written by release 0.1, after `fedsparsify db upgrade`, has the sessions
    table and is shown: the admin and a site of its completed federation sign in and read it."""
    data = tmp_path / "aggregator"
    shutil.copytree(FIXTURE / "aggregator", data)
    run_cli("db", "upgrade", "--data-dir", str(data))
    ids = json.loads((FIXTURE / "ids.json").read_text())
    site = json.loads((FIXTURE / "site" / "credentials.json").read_text())
    app = create_app(Settings(data_dir=data, admin_token=ids["admin_token"]))
    with TestClient(app) as client:
        assert sign_in(client, ids["admin_token"])
        listed = {f["id"]: f for f in client.get("/v1/federations").json()}
        assert listed[ids["federation"]]["state"] == "completed"
        assert ids["enrolling"] in listed
        assert sign_in(client, site["token"])
        me = client.get("/dashboard/session").json()
        assert me["federation_id"] == ids["federation"] and me["name"] == site["name"]
        fed = client.get(f"/v1/federations/{ids['federation']}").json()
        assert [r["index"] for r in fed["history"]] == [0, 1]
        assert client.get(f"/v1/federations/{ids['enrolling']}").status_code == 403
