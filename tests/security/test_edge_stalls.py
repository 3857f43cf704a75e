"""Bounded request time against a real server: stalled and trickling bodies, slow heads, too
many uploads or connections are answered or dropped within the configured time, while
``/healthz`` keeps answering and no temporary file is left behind."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.clients.launcher import start_aggregator
from tests.conftest import Recorder
from tests.reliability.live import ADMIN_TOKEN, Federation, LiveServer
from tests.security.edge import (
    ATTACKER,
    Answer,
    closed_within,
    healthz_ok,
    live_server,
    metric,
    open_socket,
    read_answer,
    request_head,
)

CHUNK_TIMEOUT_S = 1.5
HEAD_TIMEOUT_S = 2.0
#: What a loaded two-core machine may add to a configured time before the answer arrives.
SLACK_S = 6.0
MAX_UPLOADS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Short body and head timeouts; room for the test's 100 stalled sockets from one address."""
    with live_server(
        tmp_path_factory,
        "edge-stalls",
        body_chunk_timeout_s=str(CHUNK_TIMEOUT_S),
        head_timeout_s=str(HEAD_TIMEOUT_S),
        max_connections_per_ip="128",
        max_concurrent_uploads=str(MAX_UPLOADS),
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def fed(server: LiveServer) -> Federation:
    """Two sites with the key set and round 0 open."""
    return Federation.create(server, [10, 20])


def _tmp_files(server: LiveServer) -> list[Path]:
    """Temporary files of any aggregator process (each writes under its own folder)."""
    return sorted(p for p in (server.data_dir / "blobs" / "tmp").rglob("*") if p.is_file())


def _stalled_json(port: int, source: str = ATTACKER) -> tuple[socket.socket, float]:
    """A POST that sends a few bytes of a declared 1 MB body, then nothing."""
    sock = open_socket(port, source=source, timeout_s=CHUNK_TIMEOUT_S + SLACK_S)
    sock.sendall(
        request_head(
            "POST",
            "/v1/federations",
            {"Content-Type": "application/json", "Content-Length": "1000000"},
        )
        + b'{"name": "sta'
    )
    return sock, time.monotonic()


def _stalled_upload(
    server: LiveServer, fed: Federation, site_index: int, prefix: bytes
) -> tuple[socket.socket, float]:
    """A participant's upload that sends the start of a real update, then nothing."""
    site = fed.sites[site_index]
    sock = open_socket(server.port, timeout_s=CHUNK_TIMEOUT_S + SLACK_S)
    sock.sendall(
        request_head(
            "PUT",
            fed.path("/rounds/0/updates/values"),
            {
                "Authorization": f"Bearer {site.token}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(prefix) * 100),
            },
        )
        + prefix
    )
    return sock, time.monotonic()


def _finish(held: list[tuple[socket.socket, float]]) -> list[Answer]:
    answers = []
    for sock, started in held:
        with sock:
            answers.append(read_answer(sock, started=started))
    return answers


def test_stalled_bodies_and_uploads_are_dropped_healthz_answers(
    server: LiveServer, fed: Federation, record: Recorder
) -> None:
    stalled_before = metric(server.url, "fedsparsify_edge_refused_total", reason="body_stalled")
    timeouts_before = metric(
        server.url, "fedsparsify_uploads_refused_total", code="request_timeout"
    )
    update = fed.encrypt(server, fed.sites[0], np.zeros(100, dtype=np.float32), 0)
    held = [_stalled_json(server.port) for _ in range(100)]
    held += [_stalled_upload(server, fed, i % 2, update[:4096]) for i in range(10)]
    time.sleep(0.3)
    assert _tmp_files(server), "the stalled uploads should be staging a temporary file"
    health = [healthz_ok(server.url, timeout_s=2.0) for _ in range(5)]
    answers = _finish(held)
    assert all(health), health
    json_answers, upload_answers = answers[:100], answers[100:]
    for answer in json_answers:
        assert answer.status == 408, answer
        assert answer.body["error"] == "request_timeout"
    for answer in upload_answers:
        assert answer.status == 408, answer
        assert answer.body["error"] == "request_timeout"
        assert answer.headers["connection"] == "close"
    worst = max(a.seconds for a in answers)
    assert worst < CHUNK_TIMEOUT_S + SLACK_S
    assert min(a.seconds for a in answers) >= CHUNK_TIMEOUT_S * 0.9
    assert _tmp_files(server) == []
    assert (
        metric(server.url, "fedsparsify_edge_refused_total", reason="body_stalled")
        == stalled_before + 110
    )
    assert (
        metric(server.url, "fedsparsify_uploads_refused_total", code="request_timeout")
        == timeouts_before + 10
    )
    assert fed.round(server, 0)["uploads"]["values"] == []
    record(
        "edge",
        item="stalled_110",
        chunk_timeout_s=CHUNK_TIMEOUT_S,
        answered_408=sum(a.status == 408 for a in answers),
        first_s=round(min(a.seconds for a in answers), 2),
        worst_s=round(worst, 2),
        healthz_ok=sum(health),
        healthz_tries=len(health),
        tmp_files_left=len(_tmp_files(server)),
    )


def test_a_stalled_upload_then_a_good_one(server: LiveServer, fed: Federation) -> None:
    """The dropped upload left nothing behind: the same site's real upload is accepted."""
    site = fed.sites[1]
    update = fed.encrypt(server, site, np.full(100, 0.25, dtype=np.float32), 0)
    _finish([_stalled_upload(server, fed, 1, update[:1000])])
    r = fed.upload(server, site, 0, update)
    assert r.status_code == 201, r.text
    assert _tmp_files(server) == []


def test_a_trickling_body_is_408_too_slow(server: LiveServer, record: Recorder) -> None:
    """One byte every 0.4 s beats the per-chunk timeout but not the rate floor."""
    sock, started = _stalled_json(server.port)
    with sock:
        try:
            for _ in range(40):
                time.sleep(0.4)
                sock.sendall(b"a")
        except OSError:
            pass  # the server answered and closed: read its answer
        answer = read_answer(sock, started=started)
    assert answer.status == 408, answer
    assert "too slowly" in str(answer.body["detail"])
    assert answer.seconds < 2 * CHUNK_TIMEOUT_S + SLACK_S
    assert metric(server.url, "fedsparsify_edge_refused_total", reason="body_too_slow") >= 1
    record("edge", item="trickle", status=408, seconds=round(answer.seconds, 2))


def test_slow_and_silent_heads_are_closed(server: LiveServer, record: Recorder) -> None:
    before = metric(server.url, "fedsparsify_edge_refused_total", reason="head_timeout")
    silent = open_socket(server.port, source=ATTACKER)
    dribbling = open_socket(server.port, source=ATTACKER)
    started = time.monotonic()
    dribbling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    dribble_closed = False
    for _ in range(int((HEAD_TIMEOUT_S + SLACK_S) / 0.25)):
        try:
            dribbling.sendall(b"X")  # a header that never ends, a byte at a time
        except OSError:
            dribble_closed = True
            break
        time.sleep(0.25)
    dribble_s = time.monotonic() - started
    assert dribble_closed or closed_within(dribbling, 0.5)
    assert closed_within(silent, HEAD_TIMEOUT_S + SLACK_S)
    silent_s = time.monotonic() - started
    silent.close()
    dribbling.close()
    assert HEAD_TIMEOUT_S * 0.9 <= silent_s < HEAD_TIMEOUT_S + SLACK_S
    assert dribble_s < HEAD_TIMEOUT_S + SLACK_S
    assert metric(server.url, "fedsparsify_edge_refused_total", reason="head_timeout") >= before + 2
    record(
        "edge",
        item="slow_heads",
        head_timeout_s=HEAD_TIMEOUT_S,
        silent_closed_s=round(silent_s, 2),
        dribbling_closed_s=round(dribble_s, 2),
    )


def test_oversized_heads_are_refused_in_the_error_shape(server: LiveServer) -> None:
    with open_socket(server.port) as sock:
        sock.sendall(request_head("GET", "/healthz", {"X-Padding": "p" * 40_000}))
        complete = read_answer(sock)
    with open_socket(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"p" * 40_000)  # never ends
        incomplete = read_answer(sock)
    assert complete.status == 431
    assert complete.body["error"] == "payload_too_large"
    assert incomplete.status == 400
    assert incomplete.body["error"] == "bad_request"


def test_uploads_beyond_the_cap_are_503_at_once(
    server: LiveServer, fed: Federation, record: Recorder
) -> None:
    update = fed.encrypt(server, fed.sites[0], np.zeros(100, dtype=np.float32), 0)
    held = [_stalled_upload(server, fed, 0, update[:512]) for _ in range(MAX_UPLOADS)]
    time.sleep(0.3)
    extra = [_stalled_upload(server, fed, 0, update[:512]) for _ in range(3)]
    refused = _finish(extra)
    assert healthz_ok(server.url, timeout_s=2.0)
    for answer in refused:
        assert answer.status == 503, answer
        assert answer.body["error"] == "unavailable"
        assert answer.headers["retry-after"] == "1"
        assert answer.seconds < SLACK_S
    assert all(a.status == 408 for a in _finish(held))
    assert _tmp_files(server) == []
    record(
        "edge",
        item="upload_cap",
        cap=MAX_UPLOADS,
        refused_503=len(refused),
        worst_s=round(max(a.seconds for a in refused), 3),
    )


def test_a_small_fd_limit_still_serves_healthz(tmp_path: Path, record: Recorder) -> None:
    """The issue's case: 200 stalled sockets against a server limited to 160 open files."""
    proc = start_aggregator(
        tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        fd_limit=160,
        extra_env={"FEDSPARSIFY_BODY_CHUNK_TIMEOUT_S": "3"},
    )
    port = int(proc.url.rsplit(":", 1)[1])
    with proc:
        held = [_stalled_json(port) for _ in range(200)]
        health = [healthz_ok(proc.url, timeout_s=2.0) for _ in range(5)]
        answers = _finish(held)
        assert proc.alive()
        health.append(healthz_ok(proc.url, timeout_s=2.0))
        log = proc.log_path.read_text()
    assert all(health), health
    assert "file-descriptor limit 160" in log
    statuses = {a.status for a in answers}
    assert statuses <= {408, 503}, statuses
    turned_away = sum(a.status == 503 for a in answers)
    assert turned_away > 0
    assert max(a.seconds for a in answers) < 3 + SLACK_S
    record(
        "edge",
        item="fd_limit_160",
        sockets=len(answers),
        turned_away_503=turned_away,
        timed_out_408=sum(a.status == 408 for a in answers),
        worst_s=round(max(a.seconds for a in answers), 2),
        healthz_ok=sum(health),
        healthz_tries=len(health),
    )
