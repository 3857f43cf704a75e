"""The bad-input battery: every refusal the aggregator documents, through the real server.

One ``fedsparsify serve`` (uvicorn on loopback, small size limits) holds:

- ``fed``: round 0 open, two of its three participants uploaded honestly, the third waits;
- ``late``: round 0 closed at its deadline with two of three (quorum 2);
- ``keyless``: a dealer and a member, no public context yet.

Each case sends one bad request and must get its documented 4xx and the one JSON error shape
``{"error": code, "detail": text}``; after each, every stored blob is byte-for-byte what it was.
After the battery the third participant uploads, the round closes, and the decrypted sum equals
``np.average`` of the three honest updates within the lean preset's documented 1e-6.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedsparsify.api.services.round_store import sum_key
from fedsparsify.clients.launcher import AggregatorProcess, start_aggregator
from fedsparsify.crypto import SecretContext, SiteIdentity, create_secret_context, decrypt_sum
from tests.api.conftest import ADMIN, ADMIN_TOKEN, Fed, Harness, Member, bearer, vectors
from tests.api.test_uploads import with_header
from tests.sites import registration

pytestmark = pytest.mark.e2e

ATOL = 1e-6
#: Above an honest update (50 kB) and a one-ciphertext peer-default one (235 kB), and below
#: what the server gathers before parsing (256 kB), so a long valid-looking stream hits it.
MAX_UPLOAD = 240_000
MAX_KEYS = 1 << 20
OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass
class Scene:
    """The server, its three federations, and what the honest participants sent."""

    server: AggregatorProcess
    h: Harness
    fed: Fed
    late: Fed
    keyless: Fed
    outsider: Member
    other: SecretContext
    values: list[np.ndarray]
    good_bodies: list[bytes]

    def blobs(self) -> dict[str, str]:
        """SHA-256 of every stored blob (temporary files included: there must be none)."""
        root = self.server.data_dir / "blobs"
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    def sum_bytes(self) -> bytes:
        """The running sum of ``fed``'s round 0."""
        return (self.server.data_dir / "blobs" / sum_key(self.fed.id, 0, "values")).read_bytes()

    def good(self, member: Member, **kwargs: Any) -> bytes:
        """A well-formed update of ``member`` (or one made with other settings)."""
        return self.h.encrypt(member, self.values[2], member.num_samples / 60, **kwargs)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("battery")
    limits = {
        "FEDSPARSIFY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "FEDSPARSIFY_MAX_CONTEXT_BYTES": str(MAX_KEYS),
        "FEDSPARSIFY_MAX_ENVELOPE_BYTES": str(MAX_KEYS),
        "FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.1",
    }
    with (
        start_aggregator(root / "data", admin_token=ADMIN_TOKEN, extra_env=limits) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        h = Harness(http, None, create_secret_context("lean"))  # type: ignore[arg-type]
        values = vectors(3, seed=21)
        late = h.federation(
            samples=(10, 20, 30), auto_advance=False, round_timeout_s=1.5, pairwise_masks=False
        )
        for m, v in zip(late.members[:2], values[:2], strict=True):
            assert h.upload(late, 0, m, h.encrypt(m, v, m.num_samples / 60)).status_code == 201
        fed = h.federation(
            samples=(10, 20, 30),
            auto_advance=False,
            enrollment={"max_uses": 100, "late_joiners": True},
        )
        bodies = [
            h.encrypt(m, v, m.num_samples / 60) for m, v in zip(fed.members, values, strict=True)
        ]
        for m, body in zip(fed.members[:2], bodies[:2], strict=True):
            assert h.upload(fed, 0, m, body).status_code == 201
        outsider = h.register(fed, "registered-after-round-0-opened", 5)
        keyless = h.create()
        h.register(keyless, "dealer", 5)
        h.register(keyless, "member", 5)
        stop = time.monotonic() + 30
        while h.round(late, 0)["state"] != "closed":
            assert time.monotonic() < stop
            time.sleep(0.1)
        yield Scene(
            server=server,
            h=h,
            fed=fed,
            late=late,
            keyless=keyless,
            outsider=outsider,
            other=create_secret_context("lean"),
            values=values,
            good_bodies=bodies,
        )


Send = Callable[[Scene], httpx.Response]


def put_update(
    member: Member | None, body: Callable[[Scene], Any], *, fed: str = "fed", path: str = ""
) -> Send:
    """PUT an update body to round 0 ``values`` (or ``path``) as ``member`` (None: no token)."""

    def send(s: Scene) -> httpx.Response:
        f: Fed = getattr(s, fed)
        headers = {**OCTETS, **(member.auth if member else {})}
        target = f.path(path or "/rounds/0/updates/values")
        return s.h.client.put(target, content=body(s), headers=headers)

    return send


def upload_as(index: int, body: Callable[[Scene, Member], Any], **kwargs: Any) -> Send:
    """The third participant of ``fed`` (who has not uploaded yet) sends ``body``."""

    def send(s: Scene) -> httpx.Response:
        member = s.fed.members[index]
        return put_update(member, lambda s: body(s, member), **kwargs)(s)

    return send


def third(body: Callable[[Scene, Member], Any]) -> Send:
    """Upload as the honest participant who has not uploaded yet."""
    return upload_as(2, body)


def chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    """A body without Content-Length (chunked transfer encoding)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def request(method: str, path: Callable[[Scene], str], **kwargs: Any) -> Send:
    """Any request; ``headers`` and ``content`` may be callables of the scene."""

    def send(s: Scene) -> httpx.Response:
        args = {k: v(s) if callable(v) else v for k, v in kwargs.items()}
        return s.h.client.request(method, path(s), **args)

    return send


def dealer_of(fed: str) -> Callable[[Scene], dict[str, str]]:
    """The auth header of a federation's key dealer."""
    return lambda s: getattr(s, fed).members[0].auth


def member_of(fed: str, index: int) -> Callable[[Scene], dict[str, str]]:
    """The auth header of a member."""
    return lambda s: getattr(s, fed).members[index].auth


_VALID = registration("mallory", 3, SiteIdentity.generate())
_ZERO_KEY = "A" * 43 + "="


def public_key_json(key: str | None = None, **fields: Any) -> Callable[[Scene], dict[str, Any]]:
    """A registration body (valid keys) with ``key`` as its envelope key and ``fields`` set."""
    body = {**_VALID, **fields}
    if key is not None:
        body["public_key"] = key
    return lambda s: dict(body)


def enrolment(fed: str) -> Callable[[Scene], dict[str, str]]:
    """The enrolment header of a federation."""
    return lambda s: {"X-Enrollment-Token": getattr(s, fed).enrollment_token}


#: case → (request, documented status, documented error code)
CASES: dict[str, tuple[Send, int, str]] = {
    # -- uploads: the stream itself
    "upload: empty body": (third(lambda s, m: b""), 400, "truncated_stream"),
    "upload: garbage": (third(lambda s, m: b"not an update " * 500), 400, "malformed_stream"),
    "upload: random bytes": (
        third(lambda s, m: np.random.default_rng(1).bytes(50_000)),
        400,
        "malformed_stream",
    ),
    "upload: bad magic, right length": (
        third(lambda s, m: b"XXXX" + s.good(m)[4:]),
        400,
        "malformed_stream",
    ),
    "upload: truncated header": (third(lambda s, m: s.good(m)[:20]), 400, "truncated_stream"),
    "upload: truncated stream": (third(lambda s, m: s.good(m)[:-100]), 400, "truncated_stream"),
    "upload: truncated, streamed in chunks": (
        third(lambda s, m: chunks(s.good(m)[:-5000])),
        400,
        "truncated_stream",
    ),
    "upload: trailing bytes": (
        third(lambda s, m: s.good(m) + b"\x00" * 7),
        400,
        "trailing_bytes",
    ),
    "upload: corrupt ciphertext frame": (
        third(lambda s, m: s.good(m)[:-3000] + b"\x13" * 3000),
        400,
        "malformed_stream",
    ),
    "upload: an aggregate, not an update": (
        third(lambda s, m: with_header(s.good(m), kind="aggregate")),
        400,
        "malformed_stream",
    ),
    "upload: ciphertext from another key set": (
        third(lambda s, m: s.good(m, key_set=s.other)),
        409,
        "context_mismatch",
    ),
    "upload: other CKKS parameters (plaintext preset)": (
        third(lambda s, m: s.good(m, key_set=create_secret_context("plaintext"))),
        409,
        "parameter_mismatch",
    ),
    "upload: other CKKS parameters (peer-default, N=8192)": (
        third(
            lambda s, m: s.h.encrypt(
                m, s.values[2][:4000], 0.5, key_set=create_secret_context("peer-default")
            )
        ),
        409,
        "parameter_mismatch",
    ),
    "upload: wrong ciphertext count": (
        third(lambda s, m: with_header(s.good(m), n_ciphertexts=3)),
        409,
        "count_mismatch",
    ),
    "upload: wrong value count": (
        third(lambda s, m: s.h.encrypt(m, s.values[2][:4000], 30 / 60)),
        409,
        "count_mismatch",
    ),
    "upload: wrong mask digest": (
        third(lambda s, m: s.good(m, mask="b" * 64)),
        409,
        "mask_mismatch",
    ),
    "upload: weight above the client's share": (
        third(lambda s, m: s.h.encrypt(m, s.values[2], 0.9)),
        422,
        "value_out_of_range",
    ),
    "upload: oversized, Content-Length": (
        third(lambda s, m: b"\x00" * (MAX_UPLOAD + 1)),
        413,
        "payload_too_large",
    ),
    "upload: oversized, streamed without length": (
        third(lambda s, m: chunks(s.good(m) * 25)),
        413,
        "payload_too_large",
    ),
    # -- uploads: the round
    "upload: duplicate with other bytes": (
        upload_as(0, lambda s, m: s.good(m)),
        409,
        "conflict",
    ),
    "upload: late, round closed": (
        lambda s: s.h.upload(
            s.late, 0, s.late.members[2], s.h.encrypt(s.late.members[2], s.values[2], 30 / 60)
        ),
        409,
        "round_closed",
    ),
    "upload: unknown round": (
        upload_as(2, lambda s, m: s.good(m), path="/rounds/7/updates/values"),
        404,
        "not_found",
    ),
    "upload: unknown channel": (
        upload_as(2, lambda s, m: s.good(m), path="/rounds/0/updates/votes"),
        404,
        "not_found",
    ),
    "upload: negative round": (
        upload_as(2, lambda s, m: s.good(m), path="/rounds/-1/updates/values"),
        422,
        "invalid_config",
    ),
    # -- uploads: who is calling
    "upload: missing token": (
        lambda s: put_update(None, lambda s: s.good(s.fed.members[2]))(s),
        401,
        "unauthorized",
    ),
    "upload: wrong token": (
        request(
            "PUT",
            lambda s: s.fed.path("/rounds/0/updates/values"),
            headers={**bearer("fsc_wrong"), **OCTETS},
            content=lambda s: s.good(s.fed.members[2]),
        ),
        401,
        "unauthorized",
    ),
    "upload: enrolment token as bearer": (
        request(
            "PUT",
            lambda s: s.fed.path("/rounds/0/updates/values"),
            headers=lambda s: {**bearer(s.fed.enrollment_token), **OCTETS},
            content=lambda s: s.good(s.fed.members[2]),
        ),
        401,
        "unauthorized",
    ),
    "upload: admin token": (
        request(
            "PUT",
            lambda s: s.fed.path("/rounds/0/updates/values"),
            headers={**ADMIN, **OCTETS},
            content=lambda s: s.good(s.fed.members[2]),
        ),
        403,
        "forbidden",
    ),
    "upload: client of another federation": (
        request(
            "PUT",
            lambda s: s.fed.path("/rounds/0/updates/values"),
            headers=lambda s: {**s.late.members[2].auth, **OCTETS},
            content=lambda s: s.good(s.late.members[2]),
        ),
        403,
        "forbidden",
    ),
    "upload: not a participant of the round": (
        lambda s: s.h.upload(s.fed, 0, s.outsider, s.h.encrypt(s.outsider, s.values[2], 0.01)),
        403,
        "forbidden",
    ),
    "upload: into someone else's slot (header names them)": (
        third(lambda s, m: s.good(m, contributor=s.fed.members[1].id)),
        403,
        "forbidden",
    ),
    "upload: replay of someone else's accepted upload": (
        third(lambda s, m: s.good_bodies[0]),
        403,
        "forbidden",
    ),
    "upload: anonymous contributor": (
        third(lambda s, m: s.good(m, contributor="")),
        403,
        "forbidden",
    ),
    # -- aggregate
    "aggregate: round still open": (
        request(
            "GET", lambda s: s.fed.path("/rounds/0/aggregate/values"), headers=member_of("fed", 2)
        ),
        409,
        "conflict",
    ),
    "aggregate: another federation's member": (
        request(
            "GET", lambda s: s.late.path("/rounds/0/aggregate/values"), headers=member_of("fed", 2)
        ),
        403,
        "forbidden",
    ),
    "metrics: not numbers": (
        request(
            "POST",
            lambda s: s.fed.path("/rounds/0/metrics"),
            headers=member_of("fed", 2),
            json={"metrics": {"val_mae": "a lot"}},
        ),
        422,
        "invalid_config",
    ),
    "metrics: another federation's round": (
        request(
            "POST",
            lambda s: s.late.path("/rounds/0/metrics"),
            headers=member_of("fed", 2),
            json={"metrics": {"val_mae": 1.0}},
        ),
        403,
        "forbidden",
    ),
    # -- public context (federation without one yet)
    "context: garbage": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=b"garbage" * 100,
        ),
        400,
        "crypto_error",
    ),
    "context: empty": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=b"",
        ),
        400,
        "crypto_error",
    ),
    "context: truncated": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=lambda s: s.other.public_bytes()[:-10],
        ),
        400,
        "crypto_error",
    ),
    "context: holds the secret key": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=lambda s: s.other.secret_bytes(),
        ),
        400,
        "crypto_error",
    ),
    "context: other preset than the spec's": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=lambda s: create_secret_context("peer-default").public_bytes(),
        ),
        409,
        "parameter_mismatch",
    ),
    "context: replaces an existing one": (
        request(
            "PUT",
            lambda s: s.fed.path("/keys/context"),
            headers=dealer_of("fed"),
            content=lambda s: s.other.public_bytes(),
        ),
        409,
        "conflict",
    ),
    "context: not the dealer": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=member_of("keyless", 1),
            content=lambda s: s.other.public_bytes(),
        ),
        403,
        "forbidden",
    ),
    "context: admin token": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=ADMIN,
            content=lambda s: s.other.public_bytes(),
        ),
        403,
        "forbidden",
    ),
    "context: missing token": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            content=lambda s: s.other.public_bytes(),
        ),
        401,
        "unauthorized",
    ),
    "context: oversized": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=b"\x00" * (MAX_KEYS + 1),
        ),
        413,
        "payload_too_large",
    ),
    "context: oversized, streamed without length": (
        request(
            "PUT",
            lambda s: s.keyless.path("/keys/context"),
            headers=dealer_of("keyless"),
            content=lambda s: chunks(b"\x00" * (MAX_KEYS + 1), 65536),
        ),
        413,
        "payload_too_large",
    ),
    "context: download before the dealer uploaded it": (
        request("GET", lambda s: s.keyless.path("/keys/context"), headers=member_of("keyless", 1)),
        404,
        "not_found",
    ),
    # -- envelopes
    "envelope: for an unknown client": (
        request(
            "PUT",
            lambda s: s.fed.path("/keys/envelopes/" + "0" * 32),
            headers=dealer_of("fed"),
            content=b"FSEV" + b"\x01" * 200,
        ),
        404,
        "not_found",
    ),
    "envelope: for a client of another federation": (
        request(
            "PUT",
            lambda s: s.fed.path(f"/keys/envelopes/{s.late.members[1].id}"),
            headers=dealer_of("fed"),
            content=b"FSEV" + b"\x01" * 200,
        ),
        404,
        "not_found",
    ),
    "envelope: empty": (
        request(
            "PUT",
            lambda s: s.fed.path(f"/keys/envelopes/{s.fed.members[1].id}"),
            headers=dealer_of("fed"),
            content=b"",
        ),
        400,
        "crypto_error",
    ),
    "envelope: for the dealer itself": (
        request(
            "PUT",
            lambda s: s.fed.path(f"/keys/envelopes/{s.fed.members[0].id}"),
            headers=dealer_of("fed"),
            content=b"FSEV" + b"\x01" * 200,
        ),
        409,
        "conflict",
    ),
    "envelope: sealed by someone not the dealer": (
        request(
            "PUT",
            lambda s: s.fed.path(f"/keys/envelopes/{s.fed.members[2].id}"),
            headers=member_of("fed", 1),
            content=b"FSEV" + b"\x01" * 200,
        ),
        403,
        "forbidden",
    ),
    "envelope: oversized": (
        request(
            "PUT",
            lambda s: s.fed.path(f"/keys/envelopes/{s.fed.members[1].id}"),
            headers=dealer_of("fed"),
            content=b"\x00" * (MAX_KEYS + 1),
        ),
        413,
        "payload_too_large",
    ),
    "envelope: oversized, streamed without length": (
        request(
            "PUT",
            lambda s: s.fed.path(f"/keys/envelopes/{s.fed.members[1].id}"),
            headers=dealer_of("fed"),
            content=lambda s: chunks(b"\x00" * (4 * MAX_KEYS), 65536),
        ),
        413,
        "payload_too_large",
    ),
    "envelope: client id '..'": (
        request(
            "PUT",
            lambda s: s.fed.path("/keys/envelopes/%2E%2E"),
            headers=dealer_of("fed"),
            content=b"FSEV" + b"\x01" * 200,
        ),
        404,
        "not_found",
    ),
    "envelope: download someone else's": (
        request(
            "GET",
            lambda s: s.fed.path(f"/keys/envelopes/{s.fed.members[2].id}"),
            headers=member_of("fed", 1),
        ),
        405,
        "method_not_allowed",
    ),
    "envelope: download as admin": (
        request("GET", lambda s: s.fed.path("/keys/envelope"), headers=ADMIN),
        403,
        "forbidden",
    ),
    "envelope: download another federation's": (
        request("GET", lambda s: s.late.path("/keys/envelope"), headers=member_of("fed", 2)),
        403,
        "forbidden",
    ),
    "envelope: download before it is sealed": (
        request("GET", lambda s: s.keyless.path("/keys/envelope"), headers=member_of("keyless", 1)),
        404,
        "not_found",
    ),
    # -- registration
    "register: public key not base64": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("fed"),
            json=public_key_json("!!not base64!!"),
        ),
        422,
        "invalid_config",
    ),
    "register: public key of 31 bytes": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("fed"),
            json=public_key_json("A" * 40 + "=="),
        ),
        422,
        "invalid_config",
    ),
    "register: wrong enrolment token": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers={"X-Enrollment-Token": "fse_wrong"},
            json=public_key_json(),
        ),
        401,
        "unauthorized",
    ),
    "register: all-zero envelope key": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("fed"),
            json=public_key_json(_ZERO_KEY),
        ),
        422,
        "invalid_config",
    ),
    "register: all-zero mask key": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("fed"),
            json=public_key_json(mask_key=_ZERO_KEY),
        ),
        422,
        "invalid_config",
    ),
    "register: no signing key (release 0.1 body)": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("fed"),
            json=lambda s: {k: v for k, v in _VALID.items() if k != "signing_key"},
        ),
        422,
        "invalid_config",
    ),
    "register: another federation's enrolment token": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("late"),
            json=public_key_json(),
        ),
        401,
        "unauthorized",
    ),
    "register: missing enrolment token": (
        request("POST", lambda s: s.fed.path("/clients"), json=public_key_json()),
        401,
        "unauthorized",
    ),
    "register: name taken": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=enrolment("fed"),
            json=public_key_json(name="site-1"),
        ),
        409,
        "conflict",
    ),
    "register: body not JSON": (
        request(
            "POST",
            lambda s: s.fed.path("/clients"),
            headers=lambda s: {**enrolment("fed")(s), "Content-Type": "application/json"},
            content=b"\x00garbage{",
        ),
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_changes_nothing(scene: Scene, case: str) -> None:
    send, status, code = CASES[case]
    before, uploads = scene.blobs(), scene.h.round(scene.fed, 0)["uploads"]
    response = send(scene)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    stop = time.monotonic() + 5  # a refused body's temporary file goes as the request ends
    while scene.blobs() != before and time.monotonic() < stop:
        time.sleep(0.05)
    assert scene.blobs() == before
    assert scene.h.round(scene.fed, 0)["uploads"] == uploads


def test_an_identical_duplicate_is_accepted_once(scene: Scene) -> None:
    before = scene.sum_bytes()
    member = scene.fed.members[0]
    response = scene.h.upload(scene.fed, 0, member, scene.good_bodies[0])
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is True
    assert scene.sum_bytes() == before


def test_after_the_battery_the_sum_is_the_honest_average(scene: Scene) -> None:
    """Runs last: the third participant uploads; nothing bad was mixed into the sum."""
    h, fed = scene.h, scene.fed
    response = h.upload(fed, 0, fed.members[2], scene.good_bodies[2])
    assert response.status_code == 201, response.text
    assert h.round(fed, 0)["state"] == "closed"
    honest = fed.members[:3]  # the fourth registered after round 0 opened
    weights = [m.num_samples for m in honest]
    expected = np.average(np.stack(scene.values), axis=0, weights=weights)
    for member in honest:
        key_set = h.secret_of(fed, member)
        header, total = decrypt_sum(key_set, io.BytesIO(h.aggregate(fed, 0, member)))
        assert sorted(header.contributors) == sorted(m.id for m in honest)
        assert header.weight == pytest.approx(1.0)
        np.testing.assert_allclose(total / header.weight, expected, atol=ATOL, rtol=0)
    late = h.round(scene.late, 0)
    assert late["contributors"] == [m.id for m in scene.late.members[:2]]


def test_the_battery_covers_the_list(scene: Scene) -> None:
    """The issue's list, each at least once."""
    wanted = [
        "empty body",
        "garbage",
        "truncated stream",
        "trailing bytes",
        "another key set",
        "other CKKS parameters",
        "wrong ciphertext count",
        "wrong mask digest",
        "duplicate",
        "late",
        "wrong token",
        "missing token",
        "someone else's slot",
        "someone else's",
        "oversized",
        "context: garbage",
        "envelope: for an unknown client",
    ]
    for words in wanted:
        assert any(words in case for case in CASES), words
    assert Path(scene.server.log_path).exists()
