"""Safe retries against a real server: a POST retried with its Idempotency-Key gets the first
answer (the same credentials, the same federation), through a connection that really drops."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.crypto import SiteIdentity
from fedsparsify.errors import TransportError
from tests.conftest import Recorder
from tests.reliability.live import ADMIN_TOKEN, Federation, LiveServer
from tests.security.edge import AnswerLosingProxy, live_server
from tests.sites import registration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TTL_S = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that keeps idempotent answers for a few seconds only (to see them expire)."""
    with live_server(tmp_path_factory, "edge-retries", idempotency_ttl_s=str(TTL_S)) as srv:
        yield srv


def _spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "min_clients": 2,
        "quorum": 2,
        "crypto_preset": "plaintext",
        "method": "fedavg",
        "schedule": {"kind": "none"},
        "model": {"kind": "mlp", "input_shape": [8]},
    }


def _registration(name: str) -> dict[str, object]:
    return registration(name, 10, SiteIdentity.generate())


def _create(server: LiveServer, name: str) -> dict[str, str]:
    r = httpx.post(f"{server.url}/v1/federations", json=_spec(name), headers=ADMIN, timeout=30)
    assert r.status_code == 201, r.text
    body: dict[str, str] = r.json()
    return body


def _members(server: LiveServer, fid: str) -> list[dict[str, object]]:
    r = httpx.get(f"{server.url}/v1/federations/{fid}/clients", headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    members: list[dict[str, object]] = r.json()
    return members


def _works(server: LiveServer, fid: str, token: str) -> bool:
    r = httpx.get(
        f"{server.url}/v1/federations/{fid}/clients",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return r.status_code == 200


def test_a_repeated_registration_returns_the_same_credentials(server: LiveServer) -> None:
    fed = _create(server, "retry-raw")
    url = f"{server.url}/v1/federations/{fed['id']}/clients"
    body = _registration("north")
    headers = {"X-Enrollment-Token": fed["enrollment_token"], "Idempotency-Key": "reg-north-1"}
    first = httpx.post(url, json=body, headers=headers, timeout=30)
    second = httpx.post(url, json=body, headers=headers, timeout=30)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _works(server, fed["id"], second.json()["token"])
    assert [m["name"] for m in _members(server, fed["id"])] == ["north"]
    # Without a key the same request is a new one: the name is taken.
    third = httpx.post(url, json=body, headers={"X-Enrollment-Token": fed["enrollment_token"]})
    assert third.status_code == 409


def test_a_key_reused_for_another_request_is_422(server: LiveServer) -> None:
    fed = _create(server, "retry-mismatch")
    url = f"{server.url}/v1/federations/{fed['id']}/clients"
    headers = {"X-Enrollment-Token": fed["enrollment_token"], "Idempotency-Key": "same-key"}
    assert httpx.post(url, json=_registration("a"), headers=headers).status_code == 201
    r = httpx.post(url, json=_registration("b"), headers=headers)
    assert r.status_code == 422
    assert "another request" in r.json()["detail"]
    assert [m["name"] for m in _members(server, fed["id"])] == ["a"]


def test_keys_are_scoped_to_the_caller(server: LiveServer) -> None:
    """The same key under two enrolment tokens: two registrations, no cross-talk."""
    fed_a, fed_b = _create(server, "scope-a"), _create(server, "scope-b")
    got = []
    for fed in (fed_a, fed_b):
        r = httpx.post(
            f"{server.url}/v1/federations/{fed['id']}/clients",
            json=_registration("site"),
            headers={"X-Enrollment-Token": fed["enrollment_token"], "Idempotency-Key": "k-1"},
        )
        assert r.status_code == 201 and "idempotent-replayed" not in r.headers, r.text
        got.append(r.json())
    assert got[0]["client_id"] != got[1]["client_id"]
    assert got[0]["federation_id"] == fed_a["id"] and got[1]["federation_id"] == fed_b["id"]


def test_a_lost_registration_answer_is_retried_to_the_same_token(
    server: LiveServer, record: Recorder
) -> None:
    """The client's first connection drops after the server committed the registration."""
    fed = _create(server, "retry-proxy")
    with (
        AnswerLosingProxy(server.port, lose=1) as proxy,
        AggregatorClient(proxy.url, retries=3, backoff_s=0.05) as client,
    ):
        reg = client.register(
            fed["id"],
            enrollment_token=fed["enrollment_token"],
            name="south",
            identity=SiteIdentity.generate().public(),
            num_samples=12,
        )
        keys = list(proxy.keys)
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]
    members = _members(server, fed["id"])
    assert [(m["id"], m["name"]) for m in members] == [(reg.client_id, "south")]
    assert _works(server, fed["id"], reg.token)
    record("edge", item="retried_registration", attempts=len(keys), same_credentials=True)


def test_a_lost_create_answer_makes_one_federation(server: LiveServer) -> None:
    with (
        AnswerLosingProxy(server.port, lose=1) as proxy,
        AggregatorClient(proxy.url, token=ADMIN_TOKEN, retries=3, backoff_s=0.05) as admin,
    ):
        created = admin.create_federation(_spec("created-once"))
        listed = [f for f in admin.list_federations() if f["name"] == "created-once"]
        keys = list(proxy.keys)
    assert keys[0] == keys[1]
    assert [f["id"] for f in listed] == [created["id"]]
    r = httpx.get(
        f"{server.url}/v1/federations/{created['id']}/spec",
        headers={"X-Enrollment-Token": created["enrollment_token"]},
    )
    assert r.status_code == 200  # the replayed enrolment token is the stored one


def test_a_lost_round_open_answer_opens_one_round(server: LiveServer) -> None:
    fed = Federation.create(server, [10, 20], open_round=False, name="round-once")
    with (
        AnswerLosingProxy(server.port, lose=1) as proxy,
        AggregatorClient(proxy.url, token=ADMIN_TOKEN, retries=3, backoff_s=0.05) as admin,
    ):
        opened = admin.start_round(fed.id)
        keys = list(proxy.keys)
    rounds = httpx.get(f"{server.url}{fed.path('/rounds')}", headers=ADMIN).json()
    assert keys[0] == keys[1]
    assert opened.index == 0
    assert [r["index"] for r in rounds] == [0]


def test_the_stored_answer_holds_no_token_in_clear(server: LiveServer) -> None:
    fed = _create(server, "sealed")
    r = httpx.post(
        f"{server.url}/v1/federations/{fed['id']}/clients",
        json=_registration("secretive"),
        headers={"X-Enrollment-Token": fed["enrollment_token"], "Idempotency-Key": "seal-1"},
    )
    token = r.json()["token"]
    stored = b"".join(
        p.read_bytes() for p in server.data_dir.glob("fedsparsify.db*") if p.is_file()
    )
    assert token.encode() not in stored
    assert fed["enrollment_token"].encode() not in stored
    assert b"seal-1" not in stored


def test_answers_expire(server: LiveServer) -> None:
    fed = _create(server, "expiring")
    url = f"{server.url}/v1/federations/{fed['id']}/clients"
    body = _registration("late")
    headers = {"X-Enrollment-Token": fed["enrollment_token"], "Idempotency-Key": "exp-1"}
    assert httpx.post(url, json=body, headers=headers).status_code == 201
    time.sleep(TTL_S + 0.5)
    r = httpx.post(url, json=body, headers=headers)
    assert r.status_code == 409  # executed anew: the name is taken, nothing replayed


def test_the_client_retries_only_what_is_safe(server: LiveServer) -> None:
    """Through a connection that loses the first answer: a GET is retried; a method that is
    neither idempotent nor keyed (PATCH) is not, and fails with a transport error."""
    with (
        AnswerLosingProxy(server.port, lose=1) as proxy,
        AggregatorClient(proxy.url, retries=3, backoff_s=0.05) as client,
    ):
        assert client.health()["status"] == "ok"
        assert proxy.connections == 2
    with (
        AnswerLosingProxy(server.port, lose=1) as proxy,
        AggregatorClient(proxy.url, retries=3, backoff_s=0.05) as client,
        pytest.raises(TransportError),
    ):
        client._request("PATCH", "/healthz")
    assert proxy.connections == 1
    assert proxy.keys == [None]
