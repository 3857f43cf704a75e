"""End to end: a real ``fedsparsify serve`` (uvicorn) on a loopback port, real ciphertexts.

Three sites with real identities; the dealer uploads the public context and seals and signs the
secret context for the others; every site opens its own envelope, masks and encrypts, streams
its update up, downloads the encrypted sum and decrypts it. Results are checked against
``np.average`` with the round's weights. Driven by the live-server harness of
``tests/reliability/live.py``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.reliability.live import ATOL, Federation, LiveServer, Site, expected_average

pytestmark = pytest.mark.e2e

N_VALUES = 5000
SAMPLES = (120, 80, 200)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def upload(server: LiveServer, fed: Federation, site: Site, index: int, v: np.ndarray) -> dict:
    """Stream an encrypted update up; 201 expected."""
    r = fed.upload(server, site, index, fed.encrypt(server, site, v, index))
    assert r.status_code == 201, r.text
    return dict(r.json())


def check_average(
    server: LiveServer, fed: Federation, index: int, values: dict[str, np.ndarray]
) -> np.ndarray:
    """Every site decrypts the round's average; it is the weighted average of ``values``."""
    rnd = fed.round(server, index)
    chosen = [s for s in fed.sites if s.name in values]
    want = expected_average(
        [values[s.name] for s in chosen], [rnd["weights"][s.client_id] for s in chosen]
    )
    for site in fed.sites:
        contributors, avg = fed.decrypted_average(server, site, index)
        assert contributors == {s.client_id for s in chosen}
        np.testing.assert_allclose(avg, want, atol=ATOL, rtol=0)
    return avg


def test_three_clients_two_rounds(server: LiveServer) -> None:
    fed = Federation.create(server, SAMPLES, quorum=2)
    rng = np.random.default_rng(7)
    global_model = np.zeros(N_VALUES, dtype=np.float32)
    # A bad upload over real HTTP gets its JSON answer, even with a large streamed body.
    with fed.sites[1].http(server.url) as c:
        junk = (b"\x00" * 65536 for _ in range(40))
        r = c.put(fed.path("/rounds/0/updates/values"), content=junk)
        assert r.status_code == 400 and r.json()["error"] == "malformed_stream"
    disconnect_mid_upload(server, fed, fed.sites[1])
    for index in range(2):
        values = {
            s.name: (global_model + rng.normal(0, 0.05, N_VALUES)).astype(np.float32)
            for s in fed.sites
        }
        # Round 0 one site after the other, round 1 all at once.
        with ThreadPoolExecutor(max_workers=1 if index == 0 else len(fed.sites)) as pool:
            answers = list(
                pool.map(
                    lambda s: upload(server, fed, s, index, values[s.name]),  # noqa: B023
                    fed.sites,
                )
            )
        assert all(a["accepted"] and a["n_values"] == N_VALUES for a in answers)
        assert fed.wait_state(server, index, ("closed", "failed"))["state"] == "closed"
        global_model = check_average(server, fed, index, values).astype(np.float32)
    with server.admin() as admin:
        body = admin.get(fed.path()).json()
    assert body["state"] == "completed"
    assert [r["state"] for r in body["history"]] == ["closed", "closed"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "fedsparsify_rounds_closed_total 2.0" in metrics
    assert 'fedsparsify_uploads_accepted_total{channel="values"} 6.0' in metrics
    assert 'fedsparsify_uploads_refused_total{code="malformed_stream"} 1.0' in metrics
    assert 'fedsparsify_uploads_refused_total{code="truncated_stream"} 1.0' in metrics


def test_restart_in_the_middle_of_a_round(server: LiveServer) -> None:
    fed = Federation.create(server, SAMPLES, rounds=1, quorum=2)
    rng = np.random.default_rng(3)
    values = {s.name: rng.normal(0, 0.05, N_VALUES).astype(np.float32) for s in fed.sites}
    for site in fed.sites[:2]:
        upload(server, fed, site, 0, values[site.name])
    server.kill9()
    server.restart()
    rnd = fed.round(server, 0)
    assert rnd["state"] == "collecting"
    assert rnd["uploaded"] == [fed.sites[0].client_id, fed.sites[1].client_id]
    upload(server, fed, fed.sites[2], 0, values[fed.sites[2].name])
    assert fed.wait_state(server, 0, ("closed", "failed"))["state"] == "closed"
    check_average(server, fed, 0, values)


def test_unmasked_dropout_closes_at_the_deadline_with_the_quorum(server: LiveServer) -> None:
    """Without pairwise masks (a spec choice), a round closes at its deadline with the sites
    that uploaded; with masks it restarts instead (tests/reliability/test_faults.py)."""
    fed = Federation.create(
        server, SAMPLES, quorum=2, round_timeout_s=6.0, auto_advance=False, pairwise_masks=False
    )
    rng = np.random.default_rng(11)
    values = {s.name: rng.normal(0, 0.05, N_VALUES).astype(np.float32) for s in fed.sites[:2]}
    for site in fed.sites[:2]:  # site-2 never uploads
        upload(server, fed, site, 0, values[site.name])
    rnd = fed.wait_state(server, 0, ("closed", "failed"), timeout_s=30)
    assert rnd["state"] == "closed"
    assert rnd["contributors"] == [fed.sites[0].client_id, fed.sites[1].client_id]
    check_average(server, fed, 0, values)
    late = fed.sites[2]
    r = fed.upload(server, late, 0, fed.encrypt(server, late, np.zeros(N_VALUES, np.float32), 0))
    assert (r.status_code, r.json()["error"]) == (409, "round_closed")


def disconnect_mid_upload(server: LiveServer, fed: Federation, site: Site) -> None:
    """A client that vanishes halfway through its body leaves nothing behind."""
    body = fed.encrypt(server, site, np.zeros(N_VALUES, dtype=np.float32), 0)
    head = (
        f"PUT {fed.path('/rounds/0/updates/values')} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {site.token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(0.3)
    tmp = server.data_dir / "blobs" / "tmp"

    def partial() -> list[Path]:
        return [p for p in tmp.rglob("*") if p.is_file()]

    stop = time.monotonic() + 10
    while partial() and time.monotonic() < stop:
        time.sleep(0.05)
    assert not partial()
    assert fed.round(server, 0)["uploads"]["values"] == []
