"""Several aggregator processes on one PostgreSQL database and one blob directory.

Three real ``fedsparsify serve`` processes share a database and a data directory; eight sites
spread their requests across them (each upload goes to the next process, and to another one
when its process is gone). Faults: ``kill -9`` of a process during an upload, a new process
started (its recovery runs) while uploads are in flight on the others, ``kill -9`` of a process
while it adds the last upload into the encrypted sum. Every round must close exactly once with
the exact weighted average of all eight, no accepted upload may be lost, no answer may be a 5xx.

On SQLite, a second process on the same data directory refuses to start.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedsparsify.errors import FedsparsifyError
from tests.conftest import Recorder
from tests.reliability.live import (
    ATOL,
    Federation,
    LiveServer,
    Site,
    UploadInBackground,
    expected_average,
    temporaries,
    wait_for,
)

pytestmark = pytest.mark.e2e

SAMPLES = (50, 60, 70, 80, 90, 100, 110, 120)
ROUNDS = 3
#: 245 ciphertexts (~6 MB) per upload: adding one into the sum takes long enough to be caught.
N_VALUES = 1_000_000
FAST = {
    "FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.1",
    "FEDSPARSIFY_METRICS_FLUSH_INTERVAL_S": "0.2",
    "FEDSPARSIFY_ORPHAN_SWEEP_INTERVAL_S": "1",
}


class Cluster:
    """Aggregator processes on one database and one data directory."""

    def __init__(self, root: Path, database_url: str, count: int) -> None:
        self.root = root
        self.database_url = database_url
        self.data_dir = root / "shared"
        self.servers: list[LiveServer] = []
        self.statuses: list[int | str] = []
        self._lock = threading.Lock()
        for _ in range(count):
            self.add()

    def add(self) -> LiveServer:
        """Start one more process."""
        server = LiveServer(
            self.root,
            env=FAST,
            database_url=self.database_url,
            data_dir=self.data_dir,
            name=f"aggregator-{len(self.servers)}",
        )
        self.servers.append(server)
        return server

    def live(self) -> list[LiveServer]:
        """The processes still running."""
        return [s for s in self.servers if s.proc.alive()]

    def note(self, status: int | str) -> None:
        """Remember what a site saw."""
        with self._lock:
            self.statuses.append(status)

    def upload(self, fed: Federation, site: Site, index: int, body: bytes, first: int) -> int:
        """PUT an upload to process ``first``, and to the next live one after a transport
        error or a 503 (what a load balancer in front of the processes does)."""
        for attempt in range(20):
            live = self.live()
            server = live[(first + attempt) % len(live)]
            try:
                r = fed.upload(server, site, index, body)
            except httpx.TransportError as exc:
                self.note(type(exc).__name__)
                continue
            self.note(r.status_code)
            if r.status_code in (200, 201):
                return r.status_code
            if r.status_code != 503:
                raise AssertionError(f"{r.status_code}: {r.text[:300]}")
            time.sleep(0.2)
        raise AssertionError(f"{site.name} round {index}: no process took the upload")

    def upload_all(
        self, fed: Federation, pairs: list[tuple[int, bytes]], index: int, offset: int = 0
    ) -> list[int]:
        """Upload concurrently; site ``i`` starts at process ``i + offset``."""
        results: dict[int, int] = {}

        def one(i: int, body: bytes) -> None:
            results[i] = self.upload(fed, fed.sites[i], index, body, i + offset)

        threads = [threading.Thread(target=one, args=pair) for pair in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == len(pairs), "an upload thread did not finish"
        return [results[i] for i, _ in pairs]

    def logs(self) -> str:
        """Everything every process logged."""
        return "\n".join(s.log_path.read_text(errors="replace") for s in self.servers)

    def stop(self) -> None:
        """Stop every process."""
        for server in self.servers:
            server.stop()


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    """Three processes on one fresh PostgreSQL database."""
    group = Cluster(tmp_path, pg_url, 3)
    try:
        yield group
    finally:
        group.stop()


def round_values(index: int) -> list[np.ndarray]:
    """Every site's update of round ``index``."""
    rng = np.random.default_rng(500 + index)
    return [rng.normal(0, 0.05, N_VALUES).astype(np.float32) for _ in SAMPLES]


def leaders(cluster: Cluster) -> int:
    """How many of the live processes say they lead."""
    return sum(1 for s in cluster.live() if " leads: " in s.log_path.read_text(errors="replace"))


def test_three_processes_eight_sites_kills_and_a_restart(
    cluster: Cluster, record: Recorder
) -> None:
    a, b, c = cluster.servers
    assert wait_for(lambda: leaders(cluster) == 1, 10, poll_s=0.05)
    fed = Federation.create(a, SAMPLES, rounds=ROUNDS, quorum=7, round_timeout_s=600)
    faults: list[dict[str, object]] = []
    for index in range(ROUNDS):
        values = round_values(index)
        status = fed.wait_state(cluster.live()[0], index, ("open",))
        bodies = [
            fed.encrypt(a, s, v, index, status=status)  # pairwise-masked, bound to the round
            for s, v in zip(fed.sites, values, strict=True)
        ]
        if index == 0:
            # kill -9 of A while site 1's upload to it is half sent, and others are in flight.
            paused = UploadInBackground(fed, a, 1, 0, bodies[1], pause_halfway=True)
            assert paused.half_sent.wait(60)
            assert wait_for(lambda: bool(temporaries(a, "upload-")), 10)
            others = threading.Thread(
                target=cluster.upload_all,
                args=(fed, [(i, bodies[i]) for i in range(8) if i != 1], 0),
            )
            others.start()
            time.sleep(0.2)
            a.kill9()
            outcome = paused.join()
            assert isinstance(outcome, str), outcome  # the site saw the connection drop
            assert cluster.upload(fed, fed.sites[1], 0, bodies[1], 1) == 201  # its retry
            others.join(120)
            faults.append({"fault": "kill -9 of a process during an upload", "client_saw": outcome})
            assert wait_for(lambda: leaders(cluster) >= 1, 10, poll_s=0.05)
        elif index == 1:
            # A new process starts while uploads are half sent to B and C: its recovery must
            # leave their temporary files alone, and both uploads must then be accepted.
            to_b = UploadInBackground(fed, b, 2, 1, bodies[2], pause_halfway=True)
            to_c = UploadInBackground(fed, c, 3, 1, bodies[3], pause_halfway=True)
            assert to_b.half_sent.wait(60) and to_c.half_sent.wait(60)
            assert wait_for(lambda: len(temporaries(b, "upload-")) >= 2, 10)
            in_flight = set(temporaries(b, "upload-"))
            cluster.add()  # runs recovery at start, with B and C live
            kept = in_flight <= set(temporaries(b, "upload-"))
            assert kept, "a starting process removed a live process's in-flight upload"
            assert (to_b.join(), to_c.join()) == (201, 201)
            rest = [(i, bodies[i]) for i in range(8) if i not in (2, 3)]
            assert set(cluster.upload_all(fed, rest, 1, offset=1)) == {201}
            faults.append(
                {"fault": "a new process starts during uploads to two others", "kept": kept}
            )
        else:
            # kill -9 of B while it adds the last upload into the encrypted sum.
            assert set(cluster.upload_all(fed, [(i, bodies[i]) for i in range(7)], 2)) == {201}
            last = UploadInBackground(fed, b, 7, 2, bodies[7])
            caught = wait_for(lambda: bool(temporaries(b, "sum.")), 30)
            b.kill9()
            outcome = last.join()
            retry = cluster.upload(fed, fed.sites[7], 2, bodies[7], 2)
            faults.append(
                {
                    "fault": "kill -9 of a process adding the last upload into the sum",
                    "caught_in_the_act": caught,
                    "client_saw": outcome,
                    "retry_status": retry,
                }
            )
            assert caught and isinstance(outcome, str), outcome
            assert retry in (200, 201)
        server = cluster.live()[0]
        rnd = fed.wait_state(server, index, ("closed", "failed"))
        assert rnd["state"] == "closed", rnd
        assert sorted(rnd["contributors"]) == sorted(s.client_id for s in fed.sites)
        weights = [status["weights"][s.client_id] for s in fed.sites]
        want = expected_average(values, weights)
        contributors, avg = fed.decrypted_average(server, fed.sites[5], index)
        assert contributors == {s.client_id for s in fed.sites}
        np.testing.assert_allclose(avg, want, atol=ATOL, rtol=0)
    server = cluster.live()[0]
    with server.admin() as admin:
        assert admin.get(fed.path()).json()["state"] == "completed"
    logs = cluster.logs()
    for index in range(ROUNDS):
        closes = re.findall(rf"federation {fed.id} round {index} closed with", logs)
        assert len(closes) == 1, f"round {index} closed {len(closes)} times"
    assert not [s for s in cluster.statuses if isinstance(s, int) and s >= 500]
    # The dead processes' temporary files are swept by the leader.
    assert wait_for(lambda: temporaries(server, "") == [], 10, poll_s=0.1), temporaries(server, "")
    record(
        "replicas",
        processes=len(cluster.servers),
        sites=len(SAMPLES),
        rounds=ROUNDS,
        faults=faults,
        statuses=sorted({str(s) for s in cluster.statuses}),
        five_xx=0,
    )


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text answer."""
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return sum(float(v) for v in found)


def test_metrics_add_up_across_processes(cluster: Cluster) -> None:
    first = cluster.servers[0]
    fed = Federation.create(first, SAMPLES[:6], rounds=1, auto_advance=False)
    values = [np.full(2000, 0.01 * (i + 1), dtype=np.float32) for i in range(6)]
    status = fed.round(first, 0)
    bodies = [
        fed.encrypt(first, s, v, 0, status=status) for s, v in zip(fed.sites, values, strict=True)
    ]
    assert set(cluster.upload_all(fed, list(enumerate(bodies)), 0)) == {201}  # 2 per process

    def totals(server: LiveServer) -> tuple[float, float]:
        with server.admin() as admin:
            text = admin.get("/metrics").text
        return (
            metric(text, "fedsparsify_uploads_accepted_total"),
            metric(text, "fedsparsify_rounds_closed_total"),
        )

    for server in cluster.servers:  # every process answers the sum over all three
        assert wait_for(lambda s=server: totals(s) == (6.0, 1.0), 10, poll_s=0.1), totals(server)
    cluster.servers[0].kill9()  # a dead process's counts stay in the sum
    assert wait_for(lambda: totals(cluster.servers[1]) == (6.0, 1.0), 10, poll_s=0.1)


def test_healthz_names_the_database(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.servers[0].url) as c:
        assert c.get("/healthz").json()["database"] == "postgresql"


def test_second_process_on_a_sqlite_data_dir_refuses_to_start(tmp_path: Path) -> None:
    first = LiveServer(tmp_path, name="first")
    try:
        started = time.monotonic()
        with pytest.raises(FedsparsifyError, match="exited early") as refused:
            LiveServer(tmp_path, data_dir=first.data_dir, name="second")
        waited = time.monotonic() - started
        message = str(refused.value)
        assert f"in use by fedsparsify serve (pid {first.pid} on host" in message, message
        assert "PostgreSQL" in message
        assert waited < 30
        with first.admin() as admin:  # the first one is untouched
            assert admin.get("/healthz").status_code == 200
    finally:
        first.stop()
