"""Bounded bodies against a real server: a hostile body is refused before it is parsed or
authenticated, an oversized upload before any of its bytes is read, with flat server memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.errors import PayloadTooLargeError
from tests.conftest import Recorder
from tests.reliability.live import LiveServer
from tests.security.edge import (
    RssSampler,
    live_server,
    metric,
    open_socket,
    read_answer,
    request_head,
)

MIB = 1 << 20
#: The issue's body: 33 MB of ``[{},{},…]``.
HOSTILE = b"[" + b"{}," * 11_000_000 + b"{}]"
UPLOAD_LIMIT = 4 * MIB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``fedsparsify serve`` with the default JSON limit (1 MiB) and a 4 MiB upload limit."""
    with live_server(tmp_path_factory, "edge-bodies", max_upload_bytes=str(UPLOAD_LIMIT)) as srv:
        yield srv


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_33_mb_json_without_token_is_413_before_parsing(
    server: LiveServer, record: Recorder
) -> None:
    assert len(HOSTILE) > 33_000_000
    before = metric(server.url, "fedsparsify_edge_refused_total", reason="body_too_large")
    with RssSampler(server.pid) as rss:
        started = time.monotonic()
        r = httpx.post(
            f"{server.url}/v1/federations",
            content=HOSTILE,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        seconds = time.monotonic() - started
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert "1048576" in r.json()["detail"]
    assert r.headers["connection"] == "close"
    assert rss.growth_mb < 50, f"server RSS grew by {rss.growth_mb:.1f} MB"
    after = metric(server.url, "fedsparsify_edge_refused_total", reason="body_too_large")
    assert after == before + 1
    record(
        "edge",
        item="json_33mb_declared",
        status=r.status_code,
        seconds=round(seconds, 3),
        rss_growth_mb=round(rss.growth_mb, 1),
    )


def test_33_mb_json_chunked_is_413_after_the_limit(server: LiveServer, record: Recorder) -> None:
    """No Content-Length: the edge counts while reading and stops at 1 MiB."""
    with RssSampler(server.pid) as rss:
        started = time.monotonic()
        r = httpx.post(
            f"{server.url}/v1/federations",
            content=_chunks(HOSTILE),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        seconds = time.monotonic() - started
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert rss.growth_mb < 50, f"server RSS grew by {rss.growth_mb:.1f} MB"
    record(
        "edge",
        item="json_33mb_chunked",
        status=r.status_code,
        seconds=round(seconds, 3),
        rss_growth_mb=round(rss.growth_mb, 1),
    )


def test_hostile_json_under_the_limit_keeps_memory_flat(
    server: LiveServer, record: Recorder
) -> None:
    """The largest body the edge lets through, as hostile as it gets, parsed and refused."""
    body = b"[" + b"{}," * (MIB // 3 - 1) + b"{}]"
    assert len(body) <= MIB
    with RssSampler(server.pid) as rss:
        r = httpx.post(
            f"{server.url}/v1/federations",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    assert r.status_code in (401, 422), r.text
    assert rss.growth_mb < 50, f"server RSS grew by {rss.growth_mb:.1f} MB"
    record("edge", item="json_1mib_hostile", status=r.status_code, rss_growth_mb=rss.growth_mb)


def test_validation_errors_are_capped(server: LiveServer) -> None:
    """A body with a hundred thousand bad items gets a short answer, not one line per item."""
    body = {"name": "x", "model": {"kind": "mlp", "input_shape": [{}] * 100_000}}
    with server.admin() as admin:
        r = admin.post("/v1/federations", json=body)
    assert r.status_code == 422
    assert len(r.content) < 4096, len(r.content)


def test_upload_declaring_2_gib_is_413_before_any_body_byte(
    server: LiveServer, record: Recorder
) -> None:
    refused = metric(server.url, "fedsparsify_uploads_refused_total", code="payload_too_large")
    with open_socket(server.port, timeout_s=5) as sock:
        started = time.monotonic()
        sock.sendall(
            request_head(
                "PUT",
                "/v1/federations/f/rounds/0/updates/values",
                {
                    "Authorization": "Bearer fsc_anything",
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(2**31),
                },
            )
        )
        answer = read_answer(sock, started=started)  # not one body byte sent
    assert answer.status == 413
    assert answer.body["error"] == "payload_too_large"
    assert str(2**31) in str(answer.body["detail"])
    assert answer.headers["connection"] == "close"
    after = metric(server.url, "fedsparsify_uploads_refused_total", code="payload_too_large")
    assert after == refused + 1
    record("edge", item="upload_2gib_declared", status=413, seconds=round(answer.seconds, 3))


def test_python_client_sees_the_413_of_an_oversized_upload(
    server: LiveServer, tmp_path: Path
) -> None:
    """The server never reads the body; the client still reads its answer."""
    big = tmp_path / "update.bin"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT + MIB))
    with (
        AggregatorClient(server.url, token="fsc_anything", retries=0) as client,
        pytest.raises(PayloadTooLargeError, match="exceeds the limit"),
    ):
        client.upload("f" * 32, 0, "values", big)
