"""The REST client: error translation and retries over httpx.MockTransport (answers the real
aggregator never gives); everything the real aggregator can answer goes to the real app, plugged
in through ``transport=`` (the TestClient's transport, the app's lifespan running)."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedsparsify import errors
from fedsparsify.api import Settings, create_app
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.crypto import SiteIdentity
from tests.security.rounds import ATOL, N_VALUES, enrol, federation_spec, run_round

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

ADMIN_TOKEN = "fsa_rest-client-admin"


def _client(handler: httpx.MockTransport, **kwargs: object) -> AggregatorClient:
    return AggregatorClient(
        "http://agg.test", token="tok", backoff_s=0.0, transport=handler, **kwargs
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [c for c in errors.all_error_classes() if c.code != "error"])
def test_every_error_code_becomes_its_class(cls: type[errors.FedsparsifyError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(cls.http_status, json={"error": cls.code, "detail": "why"})

    with pytest.raises(cls, match="why") as info:
        _client(httpx.MockTransport(handler), retries=0).get_federation("f")
    assert type(info.value) is cls


def test_non_json_error_is_a_transport_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway"))
    with pytest.raises(errors.TransportError, match="502"):
        _client(transport).get_federation("f")


def test_connection_errors_are_retried_then_translated() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.TransportError, match="ConnectError"):
        _client(httpx.MockTransport(handler), retries=3).health()
    assert len(calls) == 4


def test_503_is_retried_until_it_succeeds() -> None:
    answers = [httpx.Response(503, json={"error": "unavailable", "detail": "busy"})] * 2 + [
        httpx.Response(200, json={"status": "ok"})
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    assert _client(httpx.MockTransport(handler)).health() == {"status": "ok"}
    assert answers == []


@dataclass
class RealApp:
    """The aggregator app behind a counting transport, and clients for it."""

    transport: httpx.BaseTransport
    requests: list[httpx.Request]

    def client(self, token: str | None = None, **kwargs: object) -> AggregatorClient:
        return AggregatorClient(
            "http://agg.test", token=token, backoff_s=0.0, transport=self.transport, **kwargs
        )  # type: ignore[arg-type]


class _Counting(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, seen: list[httpx.Request]) -> None:
        self.inner, self.seen = inner, seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.inner.handle_request(request)


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealApp]:
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN)
    with TestClient(create_app(settings)) as tc:
        seen: list[httpx.Request] = []
        yield RealApp(_Counting(tc._transport, seen), seen)


def test_an_encrypted_round_through_the_client_against_the_real_app(
    real: RealApp, tmp_path: Path
) -> None:
    """Register, keys, start, streamed uploads, atomic downloads: every site decrypts the
    weighted average of the three uploads (computed independently with numpy)."""
    result = run_round(real.client(ADMIN_TOKEN), real.client(), tmp_path / "work")
    assert set(result.averages) == {s.name for s in result.sites}
    for average in result.averages.values():
        assert average.shape == (N_VALUES,)
        np.testing.assert_allclose(average, result.expected, atol=ATOL, rtol=0)
    assert not list((tmp_path / "work").glob("*.part"))
    puts = [r for r in real.requests if r.method == "PUT" and r.url.path.endswith("/values")]
    assert len(puts) == 3


def test_register_sends_the_three_keys_and_the_server_lists_them(real: RealApp) -> None:
    admin = real.client(ADMIN_TOKEN)
    created = admin.create_federation(federation_spec())
    identity = SiteIdentity.generate().public()
    reg = real.client().register(
        created["id"],
        enrollment_token=created["enrollment_token"],
        name="site-a",
        identity=identity,
        num_samples=7,
    )
    assert reg.is_dealer and reg.token and reg.client_id
    sent = real.requests[-1]
    assert sent.headers["X-Enrollment-Token"] == created["enrollment_token"]
    (listed,) = real.client(reg.token).list_clients(created["id"])
    assert listed["id"] == reg.client_id and listed["num_samples"] == 7
    assert base64.b64decode(listed["public_key"]) == identity.envelope_key
    assert base64.b64decode(listed["signing_key"]) == identity.signing_key
    assert base64.b64decode(listed["mask_key"]) == identity.mask_key
    with pytest.raises(errors.AuthenticationError):
        real.client().register(
            created["id"], enrollment_token="wrong", name="b", identity=identity, num_samples=1
        )


def test_a_conflict_is_not_retried(real: RealApp) -> None:
    admin = real.client(ADMIN_TOKEN)
    fid, _, _ = enrol(admin, real.client())
    admin.start_round(fid)
    before = len(real.requests)
    with pytest.raises(errors.ConflictError) as info:
        admin.start_round(fid)  # round 0 is still open
    assert info.value.http_status == 409
    assert len(real.requests) == before + 1


def test_a_missing_envelope_is_none(real: RealApp) -> None:
    admin = real.client(ADMIN_TOKEN)
    created = admin.create_federation(federation_spec())
    regs = [
        real.client().register(
            created["id"],
            enrollment_token=created["enrollment_token"],
            name=f"site-{i}",
            identity=SiteIdentity.generate().public(),
            num_samples=10,
        )
        for i in range(2)
    ]
    assert real.client(regs[1].token).get_envelope(created["id"]) is None
