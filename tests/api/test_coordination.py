"""Coordination of aggregator processes: the data directory's lock (SQLite), advisory locks,
leadership and liveness (PostgreSQL), metrics summed across processes.

Two coordinators in one test process stand for two processes: their locks are held on separate
database connections (PostgreSQL) or separate open files (``flock``), exactly as two processes
would hold them.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import select, update

from fedsparsify.api import Settings, create_app, schema
from fedsparsify.api.datadir import LOCK_NAME, DataDirLock, read_holder
from fedsparsify.api.db import Database, MetricSampleRow, RoundRow
from fedsparsify.api.metrics_store import RETIRED, SharedMetrics
from fedsparsify.api.pg_coordination import PostgresCoordinator
from fedsparsify.clients.launcher import free_port
from fedsparsify.errors import ConfigError
from tests.api.conftest import ADMIN, ADMIN_TOKEN, Harness, vectors


def test_data_dir_lock_names_its_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    holder = read_holder(tmp_path / LOCK_NAME)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    second = DataDirLock(tmp_path, purpose="fedsparsify db upgrade")
    with pytest.raises(ConfigError, match=rf"in use by fedsparsify serve \(pid {os.getpid()} on"):
        second.acquire()
    first.release()
    second.acquire()  # free again
    assert read_holder(tmp_path / LOCK_NAME)["purpose"] == "fedsparsify db upgrade"
    second.release()


def test_second_app_on_a_data_dir_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", admin_token=ADMIN_TOKEN)
    app = create_app(settings)
    with pytest.raises(ConfigError, match="one process owns a data directory"):
        create_app(settings)
    app.state.fedsparsify.close()
    create_app(settings).state.fedsparsify.close()


def test_reads_do_not_wait_for_a_writer(tmp_path: Path, key_set: object) -> None:
    """SQLite: a GET answers while another connection holds the write lock (WAL, deferred
    read transactions); writes wait for it (here: time out after the busy timeout)."""
    settings = Settings(
        data_dir=tmp_path / "d",
        admin_token=ADMIN_TOKEN,
        sqlite_busy_timeout_ms=300,
        deadline_check_interval_s=3600,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        h = Harness(client, app, key_set)  # type: ignore[arg-type]
        fed = h.federation(samples=(10, 20, 30))
        writer = sqlite3.connect(tmp_path / "d" / "fedsparsify.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE federations SET name = name")
        try:
            for path in ("/rounds/current", "/rounds", "", "/clients"):
                r = client.get(fed.path(path), headers=ADMIN)
                assert r.status_code == 200, (path, r.text)
            blocked = client.post("/v1/federations", json={"name": "x"}, headers=ADMIN)
            assert blocked.status_code == 503 and blocked.json()["error"] == "unavailable"
        finally:
            writer.execute("ROLLBACK")
            writer.close()


@pytest.mark.both_databases
def test_a_get_applies_no_deadline(settings: Settings, key_set: object) -> None:
    """Deadlines are the background checker's job: a GET only reads."""
    app = create_app(settings.model_copy(update={"deadline_check_interval_s": 3600.0}))
    with TestClient(app) as client:
        h = Harness(client, app, key_set)  # type: ignore[arg-type]
        fed = h.federation(samples=(10, 20, 30))
        m = fed.members[0]
        assert h.upload(fed, 0, m, h.encrypt(m, vectors(1)[0], 10 / 60)).status_code == 201
        with h.state.db.session() as session:
            session.execute(
                update(RoundRow).where(RoundRow.federation_id == fed.id).values(deadline=0)
            )
            session.commit()
        assert h.round(fed, 0)["state"] == "collecting"
        assert client.get(fed.path(), headers=ADMIN).json()["history"][0]["state"] == "collecting"
        late = fed.members[1]
        r = h.upload(fed, 0, late, h.encrypt(late, vectors(1)[0], 20 / 60))
        assert (r.status_code, r.json()["error"]) == (409, "round_closed")
        app.state.rounds.check_deadlines()
        assert h.round(fed, 0)["state"] == "failed"  # 1 upload, quorum 2


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[PostgresCoordinator, PostgresCoordinator]]:
    a, b = PostgresCoordinator(pg_url), PostgresCoordinator(pg_url)
    yield a, b
    a.close()
    b.close()


def test_round_lock_excludes_another_process(two: tuple[PostgresCoordinator, ...]) -> None:
    a, b = two
    order: list[str] = []
    with a.round_lock("fed", 3):
        got = threading.Event()

        def take() -> None:
            with b.round_lock("fed", 3):
                order.append("b")
                got.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        assert not got.wait(0.5)  # b waits while a holds round 3
        with b.round_lock("fed", 4):  # another round is free
            order.append("b4")
        order.append("a")
    assert got.wait(10)
    waiter.join()
    assert order == ["b4", "a", "b"]


def test_one_leader_and_a_successor(two: tuple[PostgresCoordinator, ...], pg_url: str) -> None:
    a, b = two
    assert [a.try_lead(), b.try_lead()] == [True, False]
    assert a.try_lead() and not b.try_lead()
    a.close()
    assert b.try_lead()
    c = PostgresCoordinator(pg_url)
    try:
        assert not c.try_lead()
    finally:
        c.close()


def test_liveness_is_the_instance_lock(two: tuple[PostgresCoordinator, ...]) -> None:
    a, b = two
    with a.claim_dead(b.instance_id) as dead:
        assert dead is False
    with a.claim_dead(a.instance_id) as dead:
        assert dead is False  # never itself
    b.close()
    with a.claim_dead(b.instance_id) as dead:
        assert dead is True
    with a.claim_dead("never-existed-1-0") as dead:
        assert dead is True


def test_a_process_whose_connection_broke_retakes_its_lock(pg_url: str) -> None:
    a = PostgresCoordinator(pg_url)
    other = PostgresCoordinator(pg_url)
    try:
        assert a._instance is not None
        a._instance.invalidate()  # the socket is gone, as after a network failure
        with other.claim_dead(a.instance_id) as dead:
            assert dead is True  # for that moment it looked dead
        a.check()  # the housekeeping tick re-takes it
        with other.claim_dead(a.instance_id) as dead:
            assert dead is False
    finally:
        a.close()
        other.close()


def shared(db: Database, instance: str) -> tuple[SharedMetrics, Counter, Gauge]:
    registry = CollectorRegistry()
    counter = Counter("t_events", "Events.", ["kind"], registry=registry)
    gauge = Gauge("t_in_flight", "In flight.", registry=registry)
    return SharedMetrics(db, registry, instance), counter, gauge


def test_metrics_add_up_and_survive_a_dead_process(pg_url: str) -> None:
    db = Database(pg_url)
    schema.prepare(db)
    try:
        one, c1, g1 = shared(db, "host-1-a")
        two_, c2, g2 = shared(db, "host-2-b")
        c1.labels(kind="x").inc(3)
        c2.labels(kind="x").inc(4)
        c2.labels(kind="y").inc(1)
        g1.set(2)
        g2.set(5)
        one.flush()
        two_.flush()
        totals = {(n, lb): v for n, lb, v in one.totals()}
        assert totals[("t_events_total", '{"kind": "x"}')] == 7.0
        assert totals[("t_events_total", '{"kind": "y"}')] == 1.0
        assert totals[("t_in_flight", "{}")] == 7.0
        assert one.flush() == 0  # nothing changed: nothing written
        c1.labels(kind="x").inc()
        assert one.flush() == 1
        two_.retire("host-1-a")  # process 1 died: its counter stays, its gauge goes
        assert one.instances() == ["host-2-b"]
        totals = {(n, lb): v for n, lb, v in two_.totals()}
        assert totals[("t_events_total", '{"kind": "x"}')] == 8.0
        assert totals[("t_in_flight", "{}")] == 5.0
        text = "\n".join(
            f"{s.name} {s.labels} {s.value}"
            for fam in two_.scrape_registry.collect()
            for s in fam.samples
        )
        assert "t_events_total {'kind': 'x'} 8.0" in text
        with db.read() as session:
            kept = session.scalars(
                select(MetricSampleRow.instance).where(MetricSampleRow.instance == RETIRED)
            ).all()
        assert kept
    finally:
        db.dispose()


def test_healthz_checks_the_database(pg_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "d", database_url=pg_url, admin_token="fsa_x"))
    with TestClient(app) as client:
        body = client.get("/healthz").json()
        assert (body["status"], body["database"]) == ("ok", "postgresql")
        state = app.state.fedsparsify
        working = state.db
        state.db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")
        try:
            r = client.get("/healthz")
            assert (r.status_code, r.json()["error"]) == (503, "unavailable")
        finally:
            state.db.dispose()
            state.db = working
        assert client.get("/healthz").status_code == 200


def test_processes_starting_together_on_an_empty_database(pg_url: str, tmp_path: Path) -> None:
    """The schema is created once (under the schema lock); every process then serves."""
    apps: list[object] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            apps.append(
                create_app(
                    Settings(data_dir=tmp_path / "shared", database_url=pg_url, admin_token="fsa_x")
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(apps) == 3
        db = Database(pg_url)
        try:
            assert schema.status(db).state == "current"
        finally:
            db.dispose()
    finally:
        for app in apps:
            app.state.fedsparsify.close()  # type: ignore[attr-defined]
