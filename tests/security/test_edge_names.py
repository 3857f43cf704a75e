"""Names against a real server: control characters refused, whitespace and Unicode normalised,
uniqueness on the normalised form, and nothing a client sends forges a line of the server log."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fedsparsify.crypto import SiteIdentity
from tests.conftest import Recorder
from tests.reliability.live import ADMIN_TOKEN, LiveServer
from tests.security.edge import live_server, open_socket, read_answer, request_head
from tests.sites import registration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORGED = "2026-12-01 12:00:00,000 WARNING fedsparsify.api.services.auth: admin token rotated"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory, "edge-names") as srv:
        yield srv


def _create(server: LiveServer, name: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/federations",
        json={"name": name, "min_clients": 2, "quorum": 2},
        headers=ADMIN,
        timeout=30,
    )


def _register(server: LiveServer, fed: dict[str, str], name: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/federations/{fed['id']}/clients",
        json=registration(name, 5, SiteIdentity.generate()),
        headers={"X-Enrollment-Token": fed["enrollment_token"]},
        timeout=30,
    )


def _log_lines(server: LiveServer) -> list[str]:
    return server.proc.log_path.read_text(errors="replace").splitlines()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (f"brain\n{FORGED}", "U+000A"),
        ("brain\r\nage", "U+000D"),
        ("brain\u202eega", "U+202E"),
        ("brain\x00age", "U+0000"),
        ("   ", "empty"),
    ],
)
def test_control_and_invisible_characters_are_422(server: LiveServer, name: str, why: str) -> None:
    r = _create(server, name)
    assert r.status_code == 422, r.text
    assert why in r.json()["detail"]


def test_federation_names_are_unique_after_normalising(
    server: LiveServer, record: Recorder
) -> None:
    r = _create(server, "  Brain   Age  ")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Brain Age"
    for twin in ("Brain Age ", "brain age", "ＢＲＡＩＮ ＡＧＥ", "Brain\u00a0Age"):
        again = _create(server, twin)
        assert again.status_code == 409, (twin, again.text)
        assert "Brain Age" in again.json()["detail"]
    record("edge", item="names", twins_refused_409=4)


def test_client_names_are_unique_after_normalising(server: LiveServer) -> None:
    fed = _create(server, "clinics").json()
    first = _register(server, fed, "  Nörth  ")
    assert first.status_code == 201, first.text
    assert first.json()["name"] == "Nörth"
    for twin in ("Nörth ", "no\u0308rth", "NÖRTH"):
        r = _register(server, fed, twin)
        assert r.status_code == 409, (twin, r.text)
    assert _register(server, fed, "Hôpital Sud").status_code == 201
    assert _register(server, fed, f"x\n{FORGED}").status_code == 422


def test_user_supplied_text_never_starts_a_log_line(server: LiveServer) -> None:
    """A path parameter holding a newline and a fake log line, refused at the edge and logged:
    the server log shows it escaped, on the line of the message that quotes it."""
    with open_socket(server.port) as sock:
        sock.sendall(
            request_head(
                "POST",
                f"/v1/federations/x%0A{FORGED.replace(' ', '%20')}/clients",
                {"Content-Type": "application/json", "Content-Length": str(10 << 20)},
            )
        )
        assert read_answer(sock).status == 413
    ok = _create(server, "Logged Name")
    assert ok.status_code == 201
    lines = _log_lines(server)
    assert not any(line.startswith(FORGED[:19]) for line in lines)
    assert any("x\\n2026-12-01" in line for line in lines), "the refusal is logged, escaped"
    assert any("'Logged Name'" in line for line in lines)
