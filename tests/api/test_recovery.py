"""Restarts: accepted uploads survive, leftovers are discarded, stale sums rebuilt."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

import fedsparsify.api.services.round_store as rounds_module
from fedsparsify.api import Settings, create_app
from fedsparsify.api.db import RoundRow
from fedsparsify.api.services.round_store import read_header, sum_key, upload_key
from fedsparsify.crypto import PublicContext, SecretContext, add_updates, decrypt_sum
from tests.api.conftest import Fed, Harness, vectors

pytestmark = pytest.mark.both_databases

ATOL = 1e-6


_FEDS: dict[str, Fed] = {}


def restart(settings: Settings, key_set: SecretContext) -> tuple[TestClient, Harness]:
    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    return client, Harness(client, app, key_set, feds=_FEDS)


def check_average(
    h: Harness, fed: Fed, expected_members: list[int], values: list[np.ndarray]
) -> None:
    reader = fed.members[0]
    header, total = decrypt_sum(h.key_set, io.BytesIO(h.aggregate(fed, 0, reader)))
    assert sorted(header.contributors) == sorted(fed.members[i].id for i in expected_members)
    weights = [fed.members[i].num_samples for i in expected_members]
    expected = np.average(np.stack([values[i] for i in expected_members]), axis=0, weights=weights)
    np.testing.assert_allclose(total / header.weight, expected, atol=ATOL, rtol=0)


def two_uploads(h: Harness, *, masks: bool = False) -> tuple[Fed, list[np.ndarray]]:
    """Two of three uploads. Unmasked by default: these tests close rounds with a subset of the
    participants, which pairwise masks replace by a new attempt (tests/api/test_attempts.py)."""
    fed = h.federation(samples=(10, 20, 30), pairwise_masks=masks)
    _FEDS[fed.id] = fed
    values = vectors(3)
    for m, v in zip(fed.members[:2], values[:2], strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, m.num_samples / 60)).status_code == 201
    return fed, values


def test_accepted_uploads_survive_a_restart(
    client: TestClient, h: Harness, settings: Settings, key_set: SecretContext
) -> None:
    fed, values = two_uploads(h, masks=True)
    before = h.sum_bytes(fed, 0)
    client.__exit__(None, None, None)
    client2, h2 = restart(settings, key_set)
    try:
        rnd = h2.round(fed, 0)
        assert rnd["state"] == "collecting"
        assert rnd["uploaded"] == [fed.members[0].id, fed.members[1].id]
        assert h2.sum_bytes(fed, 0) == before
        last = fed.members[2]
        assert h2.upload(fed, 0, last, h2.encrypt(last, values[2], 30 / 60)).status_code == 201
        assert h2.round(fed, 0)["state"] == "closed"
        check_average(h2, fed, [0, 1, 2], values)
    finally:
        client2.__exit__(None, None, None)


def test_restart_discards_leftovers_and_rebuilds_a_stale_sum(
    client: TestClient, h: Harness, settings: Settings, key_set: SecretContext
) -> None:
    fed, values = two_uploads(h)
    a, b, c = fed.members
    blobs = h.state.blobs
    # A crash after the database commit but before the sum's rename: the sum lacks b.
    public = PublicContext.from_bytes(key_set.public_bytes())
    source = blobs.path(upload_key(fed.id, 0, "values", a.id))
    with source.open("rb") as src, blobs.path(sum_key(fed.id, 0, "values")).open("wb") as out:
        add_updates(public, [src], out)
    # Half-written temporary files (of a dead process, and one left by release 0.1 directly in
    # tmp/) and an upload file the database never recorded.
    dead = blobs.tmp_root / "deadhost-4242-00000000"
    dead.mkdir()
    (dead / "upload-values.deadbeef.tmp").write_bytes(b"FSUP partial")
    (blobs.tmp_root / "upload-values.0badf00d.tmp").write_bytes(b"FSUP partial")
    orphan = blobs.path(upload_key(fed.id, 0, "values", c.id))
    orphan.write_bytes(h.encrypt(c, values[2], 30 / 60))
    client.__exit__(None, None, None)
    client2, h2 = restart(settings, key_set)
    try:
        assert h2.state.blobs.temporary_files() == []
        assert not dead.exists()
        assert not orphan.exists()
        header = read_header(blobs.path(sum_key(fed.id, 0, "values")))
        assert header is not None and sorted(header.contributors) == sorted([a.id, b.id])
        rnd = h2.round(fed, 0)
        assert rnd["uploaded"] == [a.id, b.id]
        assert h2.upload(fed, 0, c, h2.encrypt(c, values[2], 30 / 60)).status_code == 201
        check_average(h2, fed, [0, 1, 2], values)
    finally:
        client2.__exit__(None, None, None)


def test_restart_with_a_missing_sum(
    client: TestClient, h: Harness, settings: Settings, key_set: SecretContext
) -> None:
    fed, values = two_uploads(h)
    h.state.blobs.delete(sum_key(fed.id, 0, "values"))
    client.__exit__(None, None, None)
    client2, h2 = restart(settings, key_set)
    try:
        h2.expire(fed, 0)
        assert h2.round(fed, 0)["state"] == "closed"
        check_average(h2, fed, [0, 1], values)
    finally:
        client2.__exit__(None, None, None)


def test_restart_finishes_a_round_caught_aggregating(
    client: TestClient, h: Harness, settings: Settings, key_set: SecretContext
) -> None:
    fed, values = two_uploads(h)
    a, b, _ = fed.members
    with h.state.db.session() as session:
        session.execute(
            update(RoundRow)
            .where(RoundRow.federation_id == fed.id)
            .values(state="aggregating", contributors=[a.id, b.id], deadline=0.0)
        )
        session.commit()
    client.__exit__(None, None, None)
    client2, h2 = restart(settings, key_set)
    try:
        rnd = h2.round(fed, 0)
        assert rnd["state"] == "closed" and rnd["contributors"] == [a.id, b.id]
        check_average(h2, fed, [0, 1], values)
        assert h2.round(fed)["index"] == 1  # auto_advance carried on
        uploads = h2.state.blobs.path(f"federations/{fed.id}/rounds/0/uploads")
        assert not uploads.exists()  # individual uploads are not kept after close
    finally:
        client2.__exit__(None, None, None)


def test_deadline_that_passed_while_down(
    client: TestClient, h: Harness, settings: Settings, key_set: SecretContext
) -> None:
    fed, values = two_uploads(h)
    with h.state.db.session() as session:
        session.execute(
            update(RoundRow).where(RoundRow.federation_id == fed.id).values(deadline=0.0)
        )
        session.commit()
    client.__exit__(None, None, None)
    client2, h2 = restart(settings, key_set)
    try:
        assert h2.round(fed, 0)["state"] == "closed"
        check_average(h2, fed, [0, 1], values)
    finally:
        client2.__exit__(None, None, None)


def test_a_failed_close_is_retried(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    fed, values = two_uploads(h)
    service = h.app.state.rounds.lifecycle
    real_close = service._close
    calls = []

    def flaky(*args: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        real_close(*args)

    monkeypatch.setattr(service, "_close", flaky)
    last = fed.members[2]
    r = h.upload(fed, 0, last, h.encrypt(last, values[2], 30 / 60))
    assert r.status_code == 201  # stored and counted, even though closing failed
    assert r.json()["round_state"] in ("aggregating", "closed")  # the checker may be quick
    service.check_deadlines()
    assert h.round(fed, 0)["state"] == "closed"
    assert len(calls) == 2
    check_average(h, fed, [0, 1, 2], values)


def test_recomputed_aggregate_in_several_passes(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a fan-in of 2, three uploads are summed in two passes; same result."""

    monkeypatch.setattr(rounds_module, "FAN_IN", 2)
    fed = h.federation(samples=(10, 20, 30, 40), pairwise_masks=False)
    values = vectors(4)
    for m, v in zip(fed.members[:3], values[:3], strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, m.num_samples / 100)).status_code == 201
    h.state.blobs.delete(sum_key(fed.id, 0, "values"))
    h.expire(fed, 0)
    check_average(h, fed, [0, 1, 2], values)
