"""Schema migrations: the baseline is release 0.1's schema, the revisions build the models on
SQLite and PostgreSQL, ``serve`` refuses an older schema, and ``db upgrade`` brings release
0.1's database (the committed fixture) up to date with its federations, rounds and blobs
readable through the API."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import JSON, MetaData, create_engine, inspect, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from fedsparsify.api import Settings, create_app, schema
from fedsparsify.api.db import Base, Database
from fedsparsify.cli import app as cli
from fedsparsify.errors import ConfigError
from tests.api.conftest import bearer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1"
IDS = json.loads((FIXTURE / "ids.json").read_text())
CREDENTIALS = json.loads((FIXTURE / "site" / "credentials.json").read_text())
ADMIN_01 = bearer(IDS["admin_token"])


@pytest.fixture
def release_0_1(tmp_path: Path) -> Path:
    """A copy of the data directory release 0.1 wrote."""
    target = tmp_path / "aggregator"
    shutil.copytree(FIXTURE / "aggregator", target)
    return target


def sqlite_ddl(path: Path) -> list[tuple[str, str, str | None]]:
    """Every table and index as SQLite stores it (the version table left out)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return sorted((t, n, s) for t, n, s in rows if "alembic_version" not in n)


def upgrade_to(url: str, revision: str) -> None:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            command.upgrade(schema._config(conn), revision)
            conn.commit()
    finally:
        db.dispose()


def shape(engine: Engine) -> dict[str, Any]:
    """Tables, columns (name, type family, nullable), keys and indexes, engine-neutral."""
    inspector = inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        out[table] = {
            "columns": [
                (c["name"], type(c["type"]).__name__.upper()[:4], c["nullable"])
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
                if i["name"] and i["name"].startswith("ix_")
            ),
        }
    return out


def test_the_revisions_chain_to_one_head() -> None:
    script = ScriptDirectory.from_config(schema._config())
    revisions = list(script.walk_revisions())
    assert len(script.get_heads()) == 1
    assert revisions[-1].revision == schema.BASELINE and revisions[-1].down_revision is None
    assert [r.revision for r in reversed(revisions)] == [
        f"{i:04d}" for i in range(1, len(revisions) + 1)
    ]


def test_baseline_is_release_0_1_schema_byte_for_byte(tmp_path: Path) -> None:
    made = tmp_path / "baseline.db"
    upgrade_to(f"sqlite:///{made}", schema.BASELINE)
    assert sqlite_ddl(made) == sqlite_ddl(FIXTURE / "aggregator" / "fedsparsify.db")


def test_baseline_on_postgresql_has_release_0_1_shape(pg_url: str) -> None:
    upgrade_to(pg_url, schema.BASELINE)
    on_pg = create_engine(pg_url)
    on_sqlite = create_engine(f"sqlite:///{FIXTURE / 'aggregator' / 'fedsparsify.db'}")
    try:
        pg, lite = shape(on_pg), shape(on_sqlite)
    finally:
        on_pg.dispose()
        on_sqlite.dispose()
    assert pg.keys() == lite.keys()
    for table in lite:
        assert [c[0] for c in pg[table]["columns"]] == [c[0] for c in lite[table]["columns"]]
        assert [c[2] for c in pg[table]["columns"]] == [c[2] for c in lite[table]["columns"]]
        for key in ("pk", "unique", "fks", "indexes"):
            assert pg[table][key] == lite[table][key], (table, key)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_head_builds_exactly_the_models(engine: str, tmp_path: Path, request: Any) -> None:
    url = (
        f"sqlite:///{tmp_path / 'head.db'}"
        if engine == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    upgrade_to(url, "head")
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        db.dispose()
    assert diff == [], f"the models and the revisions differ (add a revision): {diff}"


def test_an_empty_database_is_created_at_the_head(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert schema.status(db).state == "empty"
        assert schema.prepare(db).state == "current"
        assert schema.status(db).revision == schema.head_revision()
    finally:
        db.dispose()


def test_serve_refuses_release_0_1_database_naming_the_command(release_0_1: Path) -> None:
    before = (release_0_1 / "fedsparsify.db").read_bytes()
    with pytest.raises(ConfigError, match="fedsparsify db upgrade") as refused:
        create_app(Settings(data_dir=release_0_1))
    assert "older than this release" in str(refused.value)
    assert (release_0_1 / "fedsparsify.db").read_bytes() == before  # untouched
    # and the data directory is free again: the upgrade can run
    result = CliRunner().invoke(cli, ["db", "upgrade", "--data-dir", str(release_0_1)])
    assert result.exit_code == 0, result.output


def test_serve_refuses_a_database_from_a_newer_release(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", admin_token="fsa_x")
    create_app(settings).state.fedsparsify.close()
    with sqlite3.connect(tmp_path / "d" / "fedsparsify.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigError, match="newer fedsparsify"):
        create_app(settings)


@pytest.fixture
def upgraded(release_0_1: Path) -> Iterator[TestClient]:
    """Release 0.1's data directory after ``fedsparsify db upgrade``, served."""
    result = CliRunner().invoke(cli, ["db", "upgrade", "--data-dir", str(release_0_1)])
    assert result.exit_code == 0, result.output
    assert "upgraded from unversioned to" in result.output
    again = CliRunner().invoke(cli, ["db", "upgrade", "--data-dir", str(release_0_1)])
    assert "already at the newest revision" in again.output
    app = create_app(Settings(data_dir=release_0_1))
    with TestClient(app) as client:
        yield client


def test_upgraded_release_0_1_keeps_federations_rounds_and_blobs(
    upgraded: TestClient, release_0_1: Path
) -> None:
    fid, enrolling = IDS["federation"], IDS["enrolling"]
    listed = upgraded.get("/v1/federations", headers=ADMIN_01)
    assert listed.status_code == 200, listed.text
    assert {f["id"]: f["state"] for f in listed.json()} == {
        fid: "completed",
        enrolling: "enrolling",
    }
    fed = upgraded.get(f"/v1/federations/{fid}", headers=ADMIN_01).json()
    assert fed["spec"]["name"] == "release-0.1 fixture" and fed["spec"]["seed"] == 3
    assert [r["state"] for r in fed["history"]] == ["closed", "closed"]
    assert len(fed["participants"]) == 2
    site = bearer(CREDENTIALS["token"])  # site-1's token, as 0.1 gave it
    rounds = upgraded.get(f"/v1/federations/{fid}/rounds", headers=site).json()
    assert [(r["index"], r["state"], len(r["contributors"])) for r in rounds] == [
        (0, "closed", 2),
        (1, "closed", 2),
    ]
    blobs = release_0_1 / "blobs" / "federations" / fid
    for index in (0, 1):
        r = upgraded.get(f"/v1/federations/{fid}/rounds/{index}/aggregate/values", headers=site)
        assert r.status_code == 200
        assert r.content == (blobs / "rounds" / str(index) / "aggregate-values.bin").read_bytes()
    context = upgraded.get(f"/v1/federations/{fid}/keys/context", headers=site)
    assert context.content == (blobs / "keys" / "context.bin").read_bytes()
    envelope = upgraded.get(f"/v1/federations/{fid}/keys/envelope", headers=site)
    assert (
        envelope.content
        == (blobs / "keys" / "envelopes" / f"{CREDENTIALS['client_id']}.bin").read_bytes()
    )
    spec = upgraded.get(
        f"/v1/federations/{enrolling}/spec",
        headers={"X-Enrollment-Token": "wrong"},
    )
    assert spec.status_code == 401
    with sqlite3.connect(release_0_1 / "fedsparsify.db") as conn:
        assert conn.execute("SELECT DISTINCT spec_version FROM federations").fetchall() == [(1,)]


def test_database_from_before_0_1_gets_last_seen_at(release_0_1: Path) -> None:
    db_file = release_0_1 / "fedsparsify.db"
    with sqlite3.connect(db_file) as conn:
        conn.execute("ALTER TABLE clients DROP COLUMN last_seen_at")
    db = Database(f"sqlite:///{db_file}")
    try:
        before, after = schema.upgrade(db)
        assert (before.state, after.state) == ("unversioned", "current")
        assert "last_seen_at" in {c["name"] for c in inspect(db.engine).get_columns("clients")}
    finally:
        db.dispose()
    app = create_app(Settings(data_dir=release_0_1))
    with TestClient(app) as client:
        site = bearer(CREDENTIALS["token"])
        fid = IDS["federation"]
        assert client.get(f"/v1/federations/{fid}", headers=site).status_code == 200
        view = client.get(f"/v1/federations/{fid}", headers=ADMIN_01).json()
        seen = {p["id"]: p["last_seen_at"] for p in view["participants"]}
        assert seen[CREDENTIALS["client_id"]] is not None  # touched by the request above


def test_upgrade_refuses_a_database_that_is_not_fedsparsify(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY)")
    db = Database(f"sqlite:///{path}")
    try:
        with pytest.raises(ConfigError, match="not a fedsparsify database"):
            schema.upgrade(db)
    finally:
        db.dispose()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"patients"}


def test_upgrade_refuses_while_the_aggregator_runs(release_0_1: Path) -> None:
    """SQLite: the data directory's lock; the aggregator is not disturbed."""
    first = CliRunner().invoke(cli, ["db", "upgrade", "--data-dir", str(release_0_1)])
    assert first.exit_code == 0
    app = create_app(Settings(data_dir=release_0_1))
    with TestClient(app):
        result = CliRunner().invoke(cli, ["db", "upgrade", "--data-dir", str(release_0_1)])
        assert result.exit_code == 1 and "in use by fedsparsify serve" in result.output


def copy_rows(source: Path, url: str) -> None:
    """Every row of a SQLite database into the same tables elsewhere."""
    src = create_engine(f"sqlite:///{source}")
    dst = create_engine(url)
    target = MetaData()
    target.reflect(dst)  # the tables as they are there (release 0.1's), not today's models
    try:
        with src.connect() as read, dst.begin() as write:
            for table in target.sorted_tables:
                if table.name == "alembic_version":
                    continue
                json_columns = [c.name for c in table.columns if isinstance(c.type, JSON)]
                rows = [dict(r._mapping) for r in read.execute(text(f"SELECT * FROM {table.name}"))]
                for row in rows:  # SQLite hands JSON back as text
                    row.update({c: json.loads(row[c]) for c in json_columns if row[c] is not None})
                if rows:
                    write.execute(table.insert(), rows)
            if dst.dialect.name == "postgresql":
                for table in ("rounds", "uploads", "round_metrics"):
                    write.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                        )
                    )
            write.execute(text("DROP TABLE alembic_version"))
    finally:
        src.dispose()
        dst.dispose()


def test_release_0_1_data_on_postgresql_upgrades_and_serves(release_0_1: Path, pg_url: str) -> None:
    upgrade_to(pg_url, schema.BASELINE)  # 0.1's tables, as 0.1's create_all made them
    copy_rows(release_0_1 / "fedsparsify.db", pg_url)
    settings = Settings(data_dir=release_0_1, database_url=pg_url)
    with pytest.raises(ConfigError, match="fedsparsify db upgrade --database-url"):
        create_app(settings)
    result = CliRunner().invoke(cli, ["db", "upgrade", "--database-url", pg_url])
    assert result.exit_code == 0, result.output
    app = create_app(settings)
    with TestClient(app) as client:
        fid = IDS["federation"]
        rounds = client.get(f"/v1/federations/{fid}/rounds", headers=ADMIN_01).json()
        assert [r["state"] for r in rounds] == ["closed", "closed"]
        site = bearer(CREDENTIALS["token"])
        r = client.get(f"/v1/federations/{fid}/rounds/1/aggregate/values", headers=site)
        blob = release_0_1 / "blobs" / "federations" / fid / "rounds" / "1" / "aggregate-values.bin"
        assert r.content == blob.read_bytes()
        # New rows get ids after the copied ones.
        created = client.post(
            "/v1/federations",
            json={"name": "after upgrade", "model": {"kind": "mlp", "input_shape": [8]}},
            headers=ADMIN_01,
        )
        assert created.status_code == 201, created.text


def test_postgresql_upgrade_refuses_while_aggregators_are_connected(
    pg_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "d", database_url=pg_url, admin_token="fsa_x")
    app = create_app(settings)  # at the head, holding its instance lock
    db = Database(pg_url)
    try:
        with db.engine.connect() as conn:
            command.stamp(schema._config(conn), schema.BASELINE)  # as if the schema were old
            conn.commit()
        with pytest.raises(ConfigError, match="aggregator process\\(es\\) are connected"):
            schema.upgrade(db)
    finally:
        db.dispose()
        app.state.fedsparsify.close()


def test_db_status_names_the_state(release_0_1: Path) -> None:
    before = CliRunner().invoke(cli, ["db", "status", "--data-dir", str(release_0_1)])
    assert before.exit_code == 0 and before.output.startswith("unversioned"), before.output
    CliRunner().invoke(cli, ["db", "upgrade", "--data-dir", str(release_0_1)])
    after = CliRunner().invoke(cli, ["db", "status", "--data-dir", str(release_0_1)])
    assert after.output.startswith(f"current: revision {schema.head_revision()}"), after.output
    missing = CliRunner().invoke(cli, ["db", "status", "--data-dir", str(release_0_1 / "nope")])
    assert missing.exit_code == 2 and "no database at" in missing.output


def test_new_revision_writes_the_next_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a developer runs after changing a model (see the migrations package)."""
    copy = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(schema, "MIGRATIONS", copy)
    following = f"{int(schema.head_revision()) + 1:04d}"
    written = schema.new_revision("nothing changed")
    assert written.parent == copy / "versions"
    assert written.name == f"{following}_nothing_changed.py"
    body = written.read_text()
    assert f"revision = '{following}'" in body or f'revision = "{following}"' in body
    assert schema.head_revision() == following
