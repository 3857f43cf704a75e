"""The REST client: error translation, retries and streaming, over httpx.MockTransport."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from fedsparsify import errors
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.crypto import SiteIdentity


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


def test_409_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(409, json={"error": "mask_mismatch", "detail": "digest abc"})

    with pytest.raises(errors.MaskMismatchError):
        _client(httpx.MockTransport(handler)).get_round("f", 0)
    assert len(calls) == 1


def test_register_sends_key_and_enrollment_token() -> None:
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["enroll"] = request.headers["X-Enrollment-Token"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            201,
            json={"federation_id": "f", "client_id": "c1", "token": "secret", "is_dealer": True},
        )

    identity = SiteIdentity.generate().public()
    reg = _client(httpx.MockTransport(handler)).register(
        "f", enrollment_token="enr", name="site-a", identity=identity, num_samples=7
    )
    assert reg.client_id == "c1" and reg.is_dealer and reg.token == "secret"
    assert seen["enroll"] == "enr"
    body = seen["body"]
    assert isinstance(body, dict)
    assert base64.b64decode(body["public_key"]) == identity.envelope_key
    assert base64.b64decode(body["signing_key"]) == identity.signing_key
    assert base64.b64decode(body["mask_key"]) == identity.mask_key
    assert body["num_samples"] == 7


def test_upload_streams_the_file_and_download_is_atomic(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    stored: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            stored["body"] = request.read()
            return httpx.Response(201, json={"accepted": True, "bytes": len(stored["body"])})
        return httpx.Response(200, content=stored["body"])

    client = _client(httpx.MockTransport(handler))
    src = tmp_path / "update.bin"
    src.write_bytes(payload)
    assert client.upload("f", 0, "values", src)["bytes"] == len(payload)
    target = tmp_path / "sum.bin"
    assert client.download_aggregate("f", 0, "values", target) == len(payload)
    assert target.read_bytes() == payload
    assert not (tmp_path / "sum.bin.part").exists()


def test_missing_envelope_is_none() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(404, json={"error": "not_found", "detail": "no envelope"})
    )
    assert _client(transport).get_envelope("f") is None
