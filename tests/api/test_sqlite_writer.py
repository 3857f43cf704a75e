"""The SQLite writer lock: held from a writing transaction's BEGIN to its end, by nobody else,
and given back on every way a transaction can end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from fedsparsify.api.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'w.db'}", busy_timeout_ms=5_000)
    with database.session() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
        session.commit()
    return database


def rows(db: Database) -> list[int]:
    with db.read() as session:
        return [r[0] for r in session.execute(text("SELECT x FROM t ORDER BY rowid"))]


def test_held_only_while_a_writing_transaction_is_open(db: Database) -> None:
    with db.session() as session:
        assert not db._writer.locked()  # a session begins lazily: nothing taken yet
        session.execute(text("INSERT INTO t VALUES (1)"))
        assert db._writer.locked()
        session.commit()
        assert not db._writer.locked()
    with db.read() as session:
        session.execute(text("SELECT count(*) FROM t")).scalar_one()
        assert not db._writer.locked()  # readers never take it
    assert rows(db) == [1]


def test_given_back_on_error_rollback_and_close(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("boom")
    assert not db._writer.locked()
    with db.session() as session:  # closed without commit: the pool's reset rolls back
        session.execute(text("INSERT INTO t VALUES (2)"))
    assert not db._writer.locked()
    with db.engine.connect() as conn:  # a connection lost mid-transaction
        transaction = conn.begin()
        conn.exec_driver_sql("INSERT INTO t VALUES (3)")
        assert db._writer.locked()
        conn.invalidate()
        assert not db._writer.locked()
        transaction.rollback()
    assert not db._writer.locked()
    assert rows(db) == []


def test_a_second_writer_waits_for_the_first_and_then_goes_on(db: Database) -> None:
    first_in, second_done = threading.Event(), threading.Event()
    order: list[str] = []

    def second() -> None:
        first_in.wait()
        with db.session() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            order.append("second")
            session.commit()
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with db.session() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        first_in.set()
        assert not second_done.wait(0.3)  # blocked behind this transaction
        order.append("first")
        session.commit()
    thread.join(10)
    assert order == ["first", "second"]
    assert rows(db) == [1, 2]
    assert not db._writer.locked()


def test_an_open_unused_session_blocks_nobody(db: Database) -> None:
    """A session opened in one thread and not yet used must not stop another thread's write
    (the lock follows SQLite's own, which a session takes at its first statement)."""
    with db.session():
        done = threading.Event()

        def other() -> None:
            with db.session() as session:
                session.execute(text("INSERT INTO t VALUES (7)"))
                session.commit()
            done.set()

        threading.Thread(target=other).start()
        # well before the 5 s busy timeout after which a waiting writer would go on anyway
        assert done.wait(2)
    assert rows(db) == [7]
