"""Every bad upload is refused with its documented status, and the round's sum is unchanged."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedsparsify.api import Settings, create_app
from fedsparsify.crypto import SecretContext, create_secret_context
from tests.api.conftest import ADMIN_TOKEN, MASK, Fed, Harness, Member, vectors

pytestmark = pytest.mark.both_databases


@pytest.fixture
def started(h: Harness) -> tuple[Fed, bytes]:
    """Round 0 open, the first client's upload accepted: (federation, sum bytes)."""
    fed = h.federation(samples=(10, 20, 30))
    first = fed.members[0]
    r = h.upload(fed, 0, first, h.encrypt(first, vectors(1)[0], 10 / 60))
    assert r.status_code == 201, r.text
    stored = h.sum_bytes(fed, 0)
    assert stored is not None
    return fed, stored


def good(
    h: Harness, member: Member, *, mask: str = MASK, key_set: SecretContext | None = None
) -> bytes:
    """A valid update of ``member`` for round 0 (or one made under another mask / key set)."""
    weight = member.num_samples / 60
    return h.encrypt(member, vectors(1, seed=5)[0], weight, mask=mask, key_set=key_set)


def with_header(body: bytes, **changes: object) -> bytes:
    """Rewrite fields of a stream's JSON header (the frames stay)."""
    length = struct.unpack(">I", body[5:9])[0]
    header = json.loads(body[9 : 9 + length])
    header.update(changes)
    raw = json.dumps(header, separators=(",", ":")).encode()
    return body[:5] + struct.pack(">I", len(raw)) + raw + body[9 + length :]


CASES: dict[str, tuple[Callable[[Harness, Member, SecretContext], bytes], int, str]] = {
    "empty": (lambda h, m, o: b"", 400, "truncated_stream"),
    "garbage": (lambda h, m, o: b"hello, this is not an update" * 100, 400, "malformed_stream"),
    "bad magic, right length": (lambda h, m, o: b"XXXX" + good(h, m)[4:], 400, "malformed_stream"),
    "truncated header": (lambda h, m, o: good(h, m)[:20], 400, "truncated_stream"),
    "truncated frame": (lambda h, m, o: good(h, m)[:-100], 400, "truncated_stream"),
    "trailing bytes": (lambda h, m, o: good(h, m) + b"\x00" * 7, 400, "trailing_bytes"),
    "corrupt frame": (
        lambda h, m, o: good(h, m)[:-3000] + b"\x13" * 3000,
        400,
        "malformed_stream",
    ),
    "other context": (lambda h, m, o: good(h, m, key_set=o), 409, "context_mismatch"),
    "wrong mask": (lambda h, m, o: good(h, m, mask="b" * 64), 409, "mask_mismatch"),
    "wrong count": (
        lambda h, m, o: h.encrypt(m, vectors(1, n=4000)[0], 20 / 60),
        409,
        "count_mismatch",
    ),
    "wrong ciphertext count": (
        lambda h, m, o: with_header(good(h, m), n_ciphertexts=3),
        409,
        "count_mismatch",
    ),
    "other preset": (
        lambda h, m, o: good(h, m, key_set=create_secret_context("plaintext")),
        409,
        "parameter_mismatch",
    ),
    "aggregate, not update": (
        lambda h, m, o: with_header(good(h, m), kind="aggregate"),
        400,
        "malformed_stream",
    ),
    "weight above share": (
        lambda h, m, o: h.encrypt(m, vectors(1)[0], 0.9),
        422,
        "value_out_of_range",
    ),
    "someone else's name": (
        lambda h, m, o: h.encrypt(m, vectors(1)[0], 20 / 60, contributor="not-me"),
        403,
        "forbidden",
    ),
    "anonymous": (
        lambda h, m, o: h.encrypt(m, vectors(1)[0], 20 / 60, contributor=""),
        403,
        "forbidden",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_upload_is_refused_and_the_sum_unchanged(
    h: Harness,
    started: tuple[Fed, bytes],
    other_key_set: SecretContext,
    case: str,
) -> None:
    fed, before = started
    member = fed.members[1]
    make, status, code = CASES[case]
    r = h.upload(fed, 0, member, make(h, member, other_key_set))
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert h.sum_bytes(fed, 0) == before
    rnd = h.round(fed, 0)
    assert rnd["uploads"]["values"] == [fed.members[0].id]
    assert list(h.state.blobs.tmp_dir.iterdir()) == []
    # The client can still upload a good update afterwards.
    assert h.upload(fed, 0, member, good(h, member)).status_code == 201
    assert h.sum_bytes(fed, 0) != before


def test_streamed_in_small_chunks(h: Harness, started: tuple[Fed, bytes]) -> None:
    fed, _ = started
    member = fed.members[1]
    body = good(h, member)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 999):
            yield body[i : i + 999]

    r = h.client.put(fed.path("/rounds/0/updates/values"), content=chunks(), headers=member.auth)
    assert r.status_code == 201, r.text
    assert r.json()["bytes"] == len(body)


def test_duplicates(h: Harness, started: tuple[Fed, bytes]) -> None:
    fed, before = started
    first = fed.members[0]
    # The same bytes again: idempotent.
    original = h.state.blobs.path(f"federations/{fed.id}/rounds/0/uploads/values/{first.id}.bin")
    r = h.upload(fed, 0, first, original.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is True and r.json()["accepted"] is True
    assert h.sum_bytes(fed, 0) == before
    # Other bytes: refused.
    r = h.upload(fed, 0, first, good(h, first))
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert h.sum_bytes(fed, 0) == before


def test_identical_retry_after_the_round_closed_is_idempotent(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30), auto_advance=False)
    bodies = [
        h.encrypt(m, v, m.num_samples / 60) for m, v in zip(fed.members, vectors(3), strict=True)
    ]
    for m, body in zip(fed.members, bodies, strict=True):
        assert h.upload(fed, 0, m, body).status_code == 201
    assert h.round(fed, 0)["state"] == "closed"
    r = h.upload(fed, 0, fed.members[2], bodies[2])
    assert r.status_code == 200 and r.json()["duplicate"]
    r = h.upload(fed, 0, fed.members[2], bodies[1])
    assert r.status_code == 409


def test_unknown_round_channel_and_wrong_caller(h: Harness, started: tuple[Fed, bytes]) -> None:
    fed, before = started
    member = fed.members[1]
    assert h.upload(fed, 5, member, good(h, member)).status_code == 404
    r = h.upload(fed, 0, member, good(h, member), channel="votes")
    assert r.status_code == 404
    r = h.client.put(fed.path("/rounds/0/updates/values"), content=good(h, member))
    assert r.status_code == 401
    r = h.client.put(
        fed.path("/rounds/0/updates/values"),
        content=good(h, member),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 403
    assert h.sum_bytes(fed, 0) == before


def test_oversize_upload_is_413(tmp_path: Path, key_set: SecretContext) -> None:
    settings = Settings(
        data_dir=tmp_path / "small", admin_token=ADMIN_TOKEN, max_upload_bytes=20_000
    )
    app = create_app(settings)
    with TestClient(app) as client:
        h = Harness(client, app, key_set)
        fed = h.federation(samples=(10, 20, 30))
        member = fed.members[0]
        body = good(h, member)
        assert len(body) > 20_000
        r = h.upload(fed, 0, member, body)  # Content-Length announces it: refused at once
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 8192):
                yield body[i : i + 8192]

        r = client.put(fed.path("/rounds/0/updates/values"), content=chunks(), headers=member.auth)
        assert r.status_code == 413
        assert h.sum_bytes(fed, 0) is None
        assert h.round(fed, 0)["uploads"]["values"] == []
        metrics = client.get("/metrics").text
        assert 'fedsparsify_uploads_refused_total{code="payload_too_large"} 2.0' in metrics
