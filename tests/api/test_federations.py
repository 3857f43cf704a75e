"""Federations, client registration and key distribution."""

from __future__ import annotations

import base64

import pytest

from fedsparsify.crypto import PublicIdentity, SiteIdentity, create_secret_context
from tests.api.conftest import ADMIN, Harness, spec, vectors
from tests.sites import registration

pytestmark = pytest.mark.both_databases


def test_create_list_get(h: Harness) -> None:
    r = h.client.post("/v1/federations", json=spec(name="brain"), headers=ADMIN)
    assert r.status_code == 201
    body = r.json()
    assert body["state"] == "enrolling"
    assert body["name"] == "brain"
    assert body["enrollment_token"].startswith("fse_")
    assert body["current_round"] is None
    assert body["spec"]["crypto_preset"] == "lean"
    assert body["keys"] == {
        "required": True,
        "context_uploaded": False,
        "context_digest": None,
        "envelopes_sealed": 0,
        "awaiting_envelope": [],
    }
    fid = body["id"]
    listed = h.client.get("/v1/federations", headers=ADMIN).json()
    assert [f["id"] for f in listed] == [fid]
    assert listed[0]["clients"] == 0 and listed[0]["rounds"] == 2
    got = h.client.get(f"/v1/federations/{fid}", headers=ADMIN).json()
    assert "enrollment_token" not in got
    assert got["spec"] == body["spec"]


def test_unknown_federation_is_404(h: Harness) -> None:
    r = h.client.get("/v1/federations/nope", headers=ADMIN)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "bad",
    [
        {"quorum": 5, "min_clients": 3},
        {"rounds": 0},
        {"crypto_preset": "rot13"},
        {"name": ""},
        {"unknown_field": 1},
        {"method": "fedavg"},
    ],
)
def test_invalid_spec_is_422(h: Harness, bad: dict[str, object]) -> None:
    r = h.client.post("/v1/federations", json=spec(**bad), headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_config"
    assert r.json()["detail"]


def test_not_json_is_422(h: Harness) -> None:
    r = h.client.post(
        "/v1/federations",
        content=b"\xff\x00",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_config"


def test_registration(h: Harness) -> None:
    fed = h.create()
    first = h.register(fed, "hospital-a", 120)
    second = h.register(fed, "hospital-b", 80)
    assert first.is_dealer and not second.is_dealer
    assert first.token.startswith("fsc_") and first.token != second.token
    listed = h.client.get(fed.path("/clients"), headers=second.auth).json()
    assert [c["name"] for c in listed] == ["hospital-a", "hospital-b"]
    pub = first.identity.public()
    assert listed[0] == {
        "id": first.id,
        "name": "hospital-a",
        "public_key": base64.b64encode(pub.envelope_key).decode(),
        "signing_key": base64.b64encode(pub.signing_key).decode(),
        "mask_key": base64.b64encode(pub.mask_key).decode(),
        "fingerprint": PublicIdentity(pub.signing_key, pub.envelope_key, pub.mask_key).fingerprint,
        "num_samples": 120,
        "is_dealer": True,
        "has_envelope": False,
        "removed": False,
    }
    got = h.client.get(fed.path(), headers=ADMIN).json()
    assert got["dealer_id"] == first.id
    assert [p["num_samples"] for p in got["participants"]] == [120, 80]


def test_duplicate_name_is_409(h: Harness) -> None:
    fed = h.create()
    h.register(fed, "same", 1)
    r = h.client.post(
        fed.path("/clients"),
        json=registration("same", 1, SiteIdentity.generate()),
        headers={"X-Enrollment-Token": fed.enrollment_token},
    )
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"


_GOOD = registration("x", 1, SiteIdentity.generate())
_ZERO = base64.b64encode(bytes(32)).decode()
_ORDER_8 = base64.b64encode(
    (325606250916557431795983626356110631294008115727848805560023387167927233504).to_bytes(
        32, "little"
    )
).decode()


@pytest.mark.parametrize(
    "body",
    [
        {**_GOOD, "public_key": base64.b64encode(b"short").decode()},
        {**_GOOD, "public_key": "not base64!!"},
        {**_GOOD, "num_samples": 0},
        {**_GOOD, "name": ""},
        {k: v for k, v in _GOOD.items() if k != "num_samples"},
        {k: v for k, v in _GOOD.items() if k != "mask_key"},
        {k: v for k, v in _GOOD.items() if k != "signing_key"},
        {**_GOOD, "public_key": _ZERO},
        {**_GOOD, "mask_key": _ZERO},
        {**_GOOD, "mask_key": _ORDER_8},
        {**_GOOD, "public_key": _ORDER_8},
        {**_GOOD, "signing_key": _ZERO},
    ],
    ids=[
        "short-key",
        "not-base64",
        "no-samples",
        "empty-name",
        "missing-samples",
        "missing-mask-key",
        "missing-signing-key",
        "zero-envelope-key",
        "zero-mask-key",
        "low-order-mask-key",
        "low-order-envelope-key",
        "zero-signing-key",
    ],
)
def test_bad_registration_is_422(h: Harness, body: dict[str, object]) -> None:
    fed = h.create()
    r = h.client.post(
        fed.path("/clients"), json=body, headers={"X-Enrollment-Token": fed.enrollment_token}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_config"


def test_public_context_upload_and_download(h: Harness) -> None:
    fed = h.create()
    dealer = h.register(fed, "d", 1)
    member = h.register(fed, "m", 1)
    data = h.key_set.public_bytes()
    assert h.client.get(fed.path("/keys/context"), headers=member.auth).status_code == 404
    r = h.client.put(fed.path("/keys/context"), content=data, headers=dealer.auth)
    assert r.status_code == 201
    assert r.json() == {
        "digest": h.key_set.digest,
        "preset": "lean",
        "bytes": len(data),
        "created": True,
    }
    again = h.client.put(fed.path("/keys/context"), content=data, headers=dealer.auth)
    assert again.status_code == 200 and again.json()["created"] is False
    got = h.client.get(fed.path("/keys/context"), headers=member.auth)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["x-context-digest"] == h.key_set.digest
    status = h.client.get(fed.path(), headers=ADMIN).json()["keys"]
    assert status["context_uploaded"] and status["context_digest"] == h.key_set.digest
    assert status["awaiting_envelope"] == [member.id]


def test_public_context_cannot_change(h: Harness, other_key_set: object) -> None:
    fed = h.create()
    dealer = h.register(fed, "d", 1)
    h.client.put(fed.path("/keys/context"), content=h.key_set.public_bytes(), headers=dealer.auth)
    r = h.client.put(
        fed.path("/keys/context"),
        content=other_key_set.public_bytes(),  # type: ignore[attr-defined]
        headers=dealer.auth,
    )
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"


def test_bad_contexts_are_refused(h: Harness) -> None:
    fed = h.create()
    dealer = h.register(fed, "d", 1)
    cases = {
        b"": 400,
        b"garbage" * 10: 400,
        h.key_set.secret_bytes(): 400,  # holds the secret key: never stored
        h.key_set.public_bytes()[:-10]: 400,
        create_secret_context("plaintext").public_bytes(): 409,  # other preset than the spec's
    }
    for data, status in cases.items():
        r = h.client.put(fed.path("/keys/context"), content=data, headers=dealer.auth)
        assert r.status_code == status, (data[:8], r.text)
        assert r.json()["error"] in ("crypto_error", "parameter_mismatch")
    got = h.client.get(fed.path(), headers=ADMIN).json()["keys"]
    assert got["context_uploaded"] is False


def test_envelopes(h: Harness) -> None:
    fed = h.create()
    dealer = h.register(fed, "d", 1)
    member = h.register(fed, "m", 1)
    r = h.client.get(fed.path("/keys/envelope"), headers=member.auth)
    assert r.status_code == 404
    r = h.client.put(
        fed.path(f"/keys/envelopes/{member.id}"), content=b"sealed", headers=dealer.auth
    )
    assert r.status_code == 201
    assert r.json() == {"client_id": member.id, "bytes": 6, "replaced": False}
    r = h.client.put(
        fed.path(f"/keys/envelopes/{member.id}"), content=b"resealed", headers=dealer.auth
    )
    assert r.status_code == 200 and r.json()["replaced"] is True
    assert h.client.get(fed.path("/keys/envelope"), headers=member.auth).content == b"resealed"
    listed = h.client.get(fed.path("/clients"), headers=member.auth).json()
    assert [c["has_envelope"] for c in listed] == [False, True]
    # The dealer needs none; unknown clients do not exist; empty and oversized bodies.
    assert (
        h.client.put(
            fed.path(f"/keys/envelopes/{dealer.id}"), content=b"x", headers=dealer.auth
        ).status_code
        == 409
    )
    assert (
        h.client.put(
            fed.path("/keys/envelopes/nobody"), content=b"x", headers=dealer.auth
        ).status_code
        == 404
    )
    assert (
        h.client.put(
            fed.path(f"/keys/envelopes/{member.id}"), content=b"", headers=dealer.auth
        ).status_code
        == 400
    )
    big = b"x" * ((1 << 20) + 1)
    r = h.client.put(fed.path(f"/keys/envelopes/{member.id}"), content=big, headers=dealer.auth)
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"

    def chunks() -> object:
        for _ in range(20):
            yield b"y" * 65536

    r = h.client.put(
        fed.path(f"/keys/envelopes/{member.id}"), content=chunks(), headers=dealer.auth
    )
    assert r.status_code == 413
    assert h.client.get(fed.path("/keys/envelope"), headers=member.auth).content == b"resealed"


def test_registration_closes_with_the_federation(h: Harness) -> None:
    fed = h.federation(rounds=1, enrollment={"max_uses": 10, "late_joiners": True})
    for m, v in zip(fed.members, vectors(3), strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m))).status_code == 201
    assert h.client.get(fed.path(), headers=ADMIN).json()["state"] == "completed"
    r = h.client.post(
        fed.path("/clients"),
        json=registration("late", 1, SiteIdentity.generate()),
        headers={"X-Enrollment-Token": fed.enrollment_token},
    )
    assert r.status_code == 409
