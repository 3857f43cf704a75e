"""End to end: a real ``fedsparsify serve`` (uvicorn) on a loopback port, real ciphertexts.

Three sites with X25519 identities; the dealer uploads the public context and seals the secret
context for the others; every site opens its own envelope, encrypts, streams its update up,
downloads the encrypted sum and decrypts it. Results are checked against ``np.average``.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedsparsify.crypto import (
    SecretContext,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
    generate_identity_keypair,
    open_envelope,
    seal_envelope,
)
from tests.sites import Site

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "fsa_e2e-admin"
ATOL = 1e-6  # the crypto layer's documented absolute precision for a small weighted sum
N_VALUES = 5000
MASK = "c" * 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m fedsparsify serve`` in a subprocess."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FEDSPARSIFY_ADMIN_TOKEN": ADMIN_TOKEN,
            "FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.1",
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fedsparsify",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(data_dir),
                    "--log-level",
                    "warning",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", tmp_path / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def set_up(url: str, **spec: Any) -> tuple[str, list[Site]]:
    """Admin creates a federation; three sites register; keys are distributed."""
    body = {
        "name": "e2e",
        "rounds": 2,
        "min_clients": 3,
        "quorum": 2,
        "round_timeout_s": 600,
        "crypto_preset": "lean",
        "model": {"kind": "mlp", "input_shape": [8]},
        **spec,
    }
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    fed = ok(httpx.post(f"{url}/v1/federations", json=body, headers=admin), 201)
    fid = fed["id"]
    sites = []
    for name, n in (("north", 120), ("south", 80), ("east", 200)):
        private, public = generate_identity_keypair()
        site = Site(name, n, private, public)
        reg = ok(
            httpx.post(
                f"{url}/v1/federations/{fid}/clients",
                json={
                    "name": name,
                    "public_key": base64.b64encode(public).decode(),
                    "num_samples": n,
                },
                headers={"X-Enrollment-Token": fed["enrollment_token"]},
            ),
            201,
        )
        site.client_id, site.token, site.is_dealer = (
            reg["client_id"],
            reg["token"],
            reg["is_dealer"],
        )
        sites.append(site)
    dealer = sites[0]
    assert dealer.is_dealer
    dealer.key_set = create_secret_context("lean")
    with dealer.http(url) as c:
        ok(c.put(f"/v1/federations/{fid}/keys/context", content=dealer.key_set.public_bytes()), 201)
        for member in ok(c.get(f"/v1/federations/{fid}/clients")):
            if member["is_dealer"]:
                continue
            envelope = seal_envelope(
                dealer.key_set.secret_bytes(),
                recipient_public_key=base64.b64decode(member["public_key"]),
                federation_id=fid,
                recipient_id=member["id"],
            )
            ok(c.put(f"/v1/federations/{fid}/keys/envelopes/{member['id']}", content=envelope), 201)
    for site in sites[1:]:
        with site.http(url) as c:
            mine = c.get(f"/v1/federations/{fid}/keys/envelope")
            assert mine.status_code == 200
            context = c.get(f"/v1/federations/{fid}/keys/context")
        secret = open_envelope(
            mine.content,
            recipient_private_key=site.private_key,
            federation_id=fid,
            recipient_id=site.client_id,
        )
        site.key_set = SecretContext.from_secret_bytes(secret)
        assert site.key_set.digest == context.headers["x-context-digest"] == dealer.key_set.digest
    ok(httpx.post(f"{url}/v1/federations/{fid}/rounds", headers=admin), 201)
    return fid, sites


def upload(url: str, fid: str, site: Site, index: int, values: np.ndarray) -> dict[str, Any]:
    """Stream an encrypted update up, chunk by chunk as it is encrypted."""
    assert site.key_set is not None
    with site.http(url) as c:
        rnd = ok(c.get(f"/v1/federations/{fid}/rounds/{index}"))
        weight = site.num_samples / rnd["total_samples"]
        stream = encrypt_update(
            site.key_set, values, weight=weight, mask_digest=MASK, contributor=site.client_id
        )
        r = c.put(
            f"/v1/federations/{fid}/rounds/{index}/updates/values",
            content=stream,
            headers={"Content-Type": "application/octet-stream"},
        )
    return ok(r, 201)


def wait_closed(
    url: str, fid: str, site: Site, index: int, timeout_s: float = 30
) -> dict[str, Any]:
    with site.http(url) as c:
        stop = time.monotonic() + timeout_s
        while True:
            rnd = ok(c.get(f"/v1/federations/{fid}/rounds/{index}"))
            if rnd["state"] in ("closed", "failed") or time.monotonic() > stop:
                return rnd
            time.sleep(0.1)


def decrypted_average(url: str, fid: str, site: Site, index: int) -> tuple[set[str], np.ndarray]:
    assert site.key_set is not None
    with (
        site.http(url) as c,
        c.stream("GET", f"/v1/federations/{fid}/rounds/{index}/aggregate/values") as r,
    ):
        assert r.status_code == 200
        header, total = decrypt_sum(site.key_set, r.iter_bytes())
    return set(header.contributors), total / header.weight


def expected(values: dict[str, np.ndarray], sites: list[Site]) -> np.ndarray:
    chosen = [s for s in sites if s.name in values]
    return np.average(
        np.stack([values[s.name] for s in chosen]), axis=0, weights=[s.num_samples for s in chosen]
    )


def test_three_clients_two_rounds(server: Server) -> None:
    url = server.url
    fid, sites = set_up(url)
    rng = np.random.default_rng(7)
    global_model = np.zeros(N_VALUES, dtype=np.float32)
    # A bad upload over real HTTP gets its JSON answer, even with a large streamed body.
    with sites[1].http(url) as c:
        junk = (b"\x00" * 65536 for _ in range(40))
        r = c.put(f"/v1/federations/{fid}/rounds/0/updates/values", content=junk)
        assert r.status_code == 400 and r.json()["error"] == "malformed_stream"
    disconnect_mid_upload(server, fid, sites[1])
    for index in range(2):
        values = {
            s.name: (global_model + rng.normal(0, 0.05, N_VALUES)).astype(np.float32) for s in sites
        }
        # Round 0 one site after the other, round 1 all at once.
        with ThreadPoolExecutor(max_workers=1 if index == 0 else len(sites)) as pool:
            answers = list(
                pool.map(lambda s: upload(url, fid, s, index, values[s.name]), sites)  # noqa: B023
            )
        assert all(a["accepted"] and a["n_values"] == N_VALUES for a in answers)
        rnd = wait_closed(url, fid, sites[0], index)
        assert rnd["state"] == "closed"
        for site in sites:
            contributors, avg = decrypted_average(url, fid, site, index)
            assert contributors == {s.client_id for s in sites}
            np.testing.assert_allclose(avg, expected(values, sites), atol=ATOL, rtol=0)
        global_model = avg.astype(np.float32)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    fed = ok(httpx.get(f"{url}/v1/federations/{fid}", headers=admin))
    assert fed["state"] == "completed"
    assert [r["state"] for r in fed["history"]] == ["closed", "closed"]
    metrics = httpx.get(f"{url}/metrics").text
    assert "fedsparsify_rounds_closed_total 2.0" in metrics
    assert 'fedsparsify_uploads_accepted_total{channel="values"} 6.0' in metrics
    assert 'fedsparsify_uploads_refused_total{code="malformed_stream"} 1.0' in metrics
    assert 'fedsparsify_uploads_refused_total{code="truncated_stream"} 1.0' in metrics


def test_restart_in_the_middle_of_a_round(tmp_path: Path) -> None:
    first = Server(tmp_path / "data", tmp_path / "server.log")
    try:
        fid, sites = set_up(first.url, rounds=1)
        rng = np.random.default_rng(3)
        values = {s.name: rng.normal(0, 0.05, N_VALUES).astype(np.float32) for s in sites}
        for site in sites[:2]:
            upload(first.url, fid, site, 0, values[site.name])
    finally:
        first.kill()
    second = Server(tmp_path / "data", tmp_path / "server.log")
    try:
        url = second.url
        with sites[2].http(url) as c:
            rnd = ok(c.get(f"/v1/federations/{fid}/rounds/0"))
        assert rnd["state"] == "collecting"
        assert rnd["uploaded"] == [sites[0].client_id, sites[1].client_id]
        upload(url, fid, sites[2], 0, values[sites[2].name])
        assert wait_closed(url, fid, sites[2], 0)["state"] == "closed"
        contributors, avg = decrypted_average(url, fid, sites[1], 0)
        assert contributors == {s.client_id for s in sites}
        np.testing.assert_allclose(avg, expected(values, sites), atol=ATOL, rtol=0)
    finally:
        second.stop()


def test_dropout_deadline_with_quorum(server: Server) -> None:
    url = server.url
    fid, sites = set_up(url, round_timeout_s=2.0, auto_advance=False)
    rng = np.random.default_rng(11)
    values = {s.name: rng.normal(0, 0.05, N_VALUES).astype(np.float32) for s in sites[:2]}
    for site in sites[:2]:  # "east" never uploads
        upload(url, fid, site, 0, values[site.name])
    rnd = wait_closed(url, fid, sites[0], 0)
    assert rnd["state"] == "closed"
    assert rnd["contributors"] == [sites[0].client_id, sites[1].client_id]
    contributors, avg = decrypted_average(url, fid, sites[2], 0)
    assert contributors == {sites[0].client_id, sites[1].client_id}
    np.testing.assert_allclose(avg, expected(values, sites), atol=ATOL, rtol=0)
    assert upload_refused(url, fid, sites[2], 0) == (409, "round_closed")


def upload_refused(url: str, fid: str, site: Site, index: int) -> tuple[int, str]:
    assert site.key_set is not None
    body = b"".join(
        encrypt_update(
            site.key_set,
            np.zeros(N_VALUES, dtype=np.float32),
            weight=0.1,
            mask_digest=MASK,
            contributor=site.client_id,
        )
    )
    with site.http(url) as c:
        r = c.put(f"/v1/federations/{fid}/rounds/{index}/updates/values", content=body)
    return r.status_code, r.json()["error"]


def disconnect_mid_upload(server: Server, fid: str, site: Site) -> None:
    """A client that vanishes halfway through its body leaves nothing behind."""
    assert site.key_set is not None
    body = b"".join(
        encrypt_update(
            site.key_set,
            np.zeros(N_VALUES, dtype=np.float32),
            weight=0.1,
            mask_digest=MASK,
            contributor=site.client_id,
        )
    )
    head = (
        f"PUT /v1/federations/{fid}/rounds/0/updates/values HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {site.token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(0.3)
    tmp = server.data_dir / "blobs" / "tmp"
    stop = time.monotonic() + 10
    while any(tmp.iterdir()) and time.monotonic() < stop:
        time.sleep(0.05)
    assert not any(tmp.iterdir())
    with site.http(server.url) as c:
        rnd = ok(c.get(f"/v1/federations/{fid}/rounds/0"))
    assert rnd["uploads"]["values"] == []
