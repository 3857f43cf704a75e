"""Client liveness: a site that stopped making requests is left out of the next round.

Time is moved by ageing the stored timestamps (``last_seen_at``, ``created_at``) rather than by
sleeping; one test runs on the real clock with a tiny liveness window.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from fedsparsify.api import Settings, create_app
from fedsparsify.api.db import ClientRow, now
from fedsparsify.api.services import liveness
from fedsparsify.crypto import SecretContext, create_secret_context
from tests.api.conftest import ADMIN, ADMIN_TOKEN, Fed, Harness, Member, TestClient, vectors

pytestmark = pytest.mark.both_databases

#: The default liveness window (Settings.client_liveness_s) is 30 s; this is well past it.
LONG_AGO = 3600.0


def age(h: Harness, *members: Member, by: float = LONG_AGO) -> None:
    """Make ``members`` look as if they were registered and last seen ``by`` seconds earlier."""
    with h.state.db.session() as session:
        session.execute(
            update(ClientRow)
            .where(ClientRow.id.in_([m.id for m in members]))
            .values(
                last_seen_at=ClientRow.last_seen_at - by,
                created_at=ClientRow.created_at - by,
            )
        )
        session.commit()


def stored_seen(h: Harness, member: Member) -> float | None:
    with h.state.db.session() as session:
        row = session.get(ClientRow, member.id)
        assert row is not None
        return row.last_seen_at


def view(h: Harness, fed: Fed) -> dict[str, dict[str, Any]]:
    """GET /v1/federations/{fid} participants by id (as the admin, who is nobody's client)."""
    r = h.client.get(fed.path(), headers=ADMIN)
    assert r.status_code == 200, r.text
    return {p["id"]: p for p in r.json()["participants"]}


def poll(h: Harness, fed: Fed, member: Member) -> None:
    """What a waiting site does: ask for the current round."""
    r = h.client.get(fed.path("/rounds/current"), headers=member.auth)
    assert r.status_code in (200, 404), r.text


def upload(h: Harness, fed: Fed, index: int, members: list[Member]) -> None:
    for m, v in zip(members, vectors(len(members), seed=index), strict=True):
        r = h.upload(fed, index, m, h.encrypt(m, v, h.weight(fed, m, index)))
        assert r.status_code == 201, r.text


def test_registration_counts_as_seen(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30), open_round=False)
    a, b, c = fed.members  # b and c made no request after registering
    seen = view(h, fed)
    for m in fed.members:
        assert seen[m.id]["active"] is True
        assert seen[m.id]["last_seen_at"].endswith("+00:00")
    assert "token" not in str(seen) and "public_key" not in str(seen)
    # A row from before the column existed (NULL): its registration time counts.
    with h.state.db.session() as session:
        session.execute(update(ClientRow).where(ClientRow.id == b.id).values(last_seen_at=None))
        session.commit()
    seen = view(h, fed)
    assert seen[b.id]["last_seen_at"] is None and seen[b.id]["active"] is True
    # Registered long ago and silent since: not active, left out by the admin's open.
    age(h, c)
    assert view(h, fed)[c.id]["active"] is False
    rnd = h.client.post(fed.path("/rounds"), headers=ADMIN).json()
    assert rnd["participants"] == [a.id, b.id]
    assert rnd["total_samples"] == 30


def test_silent_participant_is_left_out_and_comes_back(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30), rounds=3, pairwise_masks=False)
    a, b, c = fed.members
    assert h.round(fed, 0)["participants"] == [a.id, b.id, c.id]
    upload(h, fed, 0, [a, b])
    # Time passes: nobody makes a request. a and b uploaded all of round 0, so they stay active
    # however quiet they are; c did nothing and drops out of the window.
    age(h, a, b, c)
    seen = view(h, fed)
    assert [seen[m.id]["active"] for m in (a, b, c)] == [True, True, False]
    h.expire(fed, 0)  # closes with quorum 2; auto_advance opens round 1
    rnd = h.round(fed, 1)
    assert rnd["participants"] == [a.id, b.id]
    assert rnd["total_samples"] == 30
    # c comes back: one request and it is seen again.
    before = stored_seen(h, c)
    poll(h, fed, c)
    after = stored_seen(h, c)
    assert before is not None and after is not None and after > before + LONG_AGO / 2
    assert view(h, fed)[c.id]["active"] is True
    # Round 1 closes as soon as a and b uploaded: c does not hold it up until the deadline.
    upload(h, fed, 1, [a, b])
    assert h.round(fed, 1)["state"] == "closed"
    rnd = h.round(fed, 2)
    assert rnd["state"] == "open"
    assert rnd["participants"] == [a.id, b.id, c.id]
    assert rnd["total_samples"] == 60


def test_too_few_active_falls_back_to_every_key_holder(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    fed = h.federation(samples=(10, 20, 30), open_round=False)  # quorum 2
    a, b, c = fed.members
    age(h, a, b, c)
    poll(h, fed, a)  # one active client, the quorum is two
    assert [m["active"] for m in view(h, fed).values()] == [True, False, False]
    with caplog.at_level(logging.WARNING, logger="fedsparsify.api.services.lifecycle"):
        r = h.client.post(fed.path("/rounds"), headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["participants"] == [a.id, b.id, c.id]
    assert r.json()["total_samples"] == 60
    assert "only 1 of 3 key holder(s)" in caplog.text
    assert "every key holder is a participant" in caplog.text


def test_fallback_on_auto_advance_after_a_failed_round(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30), rounds=3)
    age(h, *fed.members)
    h.expire(fed, 0)  # nobody uploaded: fails; nobody is active for round 1
    assert h.round(fed, 0)["state"] == "failed"
    assert h.round(fed, 1)["participants"] == [m.id for m in fed.members]


def test_plaintext_preset_registered_clients_are_the_holders(h: Harness) -> None:
    fed = h.create(crypto_preset="plaintext")
    for i, n in enumerate((10, 20, 30)):
        h.register(fed, f"s{i}", n)
    a, b, c = fed.members
    r = h.client.put(
        fed.path("/keys/context"),
        content=create_secret_context("plaintext").public_bytes(),
        headers=a.auth,
    )
    assert r.status_code == 201
    age(h, b)
    rnd = h.client.post(fed.path("/rounds"), headers=ADMIN).json()
    assert rnd["participants"] == [a.id, c.id]


def test_last_seen_writes_are_throttled(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # Interval: min(TOUCH_INTERVAL_S, window / 2) = 15 s with the default 30 s window, so two
    # requests in a row cannot straddle it however slow this machine is.
    monkeypatch.setattr(liveness, "TOUCH_INTERVAL_S", 1000.0)
    fed = h.create()
    m = h.register(fed, "site", 5)
    registered = stored_seen(h, m)
    assert registered is not None and abs(registered - now()) < 60
    for _ in range(3):
        assert h.client.get(fed.path(), headers=m.auth).status_code == 200
    assert stored_seen(h, m) == registered  # polling does not write
    with h.state.db.session() as session:
        session.execute(
            update(ClientRow).where(ClientRow.id == m.id).values(last_seen_at=registered - 20)
        )
        session.commit()
    h.client.get(fed.path(), headers=m.auth)
    seen = stored_seen(h, m)
    assert seen is not None and seen >= registered
    # Requests with the admin's or the enrolment token touch no client.
    h.client.get(fed.path("/rounds/current"), headers=ADMIN)
    h.client.get(fed.path("/spec"), headers={"X-Enrollment-Token": fed.enrollment_token})
    assert stored_seen(h, m) == seen


def test_tiny_window_on_the_real_clock(data_dir: Path, key_set: SecretContext) -> None:
    """Liveness window 1 s, round timeout 1.5 s: a site silent since round 0 opened is not in
    round 1, which the background deadline checker opens by itself."""
    settings = Settings(
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        deadline_check_interval_s=0.05,
        client_liveness_s=1.0,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        h = Harness(client, app, key_set)
        fed = h.federation(
            samples=(10, 20, 30), open_round=False, round_timeout_s=1.5, pairwise_masks=False
        )
        a, b, c = fed.members
        for m in fed.members:
            poll(h, fed, m)
        r = client.post(fed.path("/rounds"), headers=ADMIN)
        assert r.json()["participants"] == [a.id, b.id, c.id], r.text
        bodies = [
            h.encrypt(m, v, m.num_samples / 60) for m, v in zip((a, b), vectors(2), strict=True)
        ]
        for m, body in zip((a, b), bodies, strict=True):
            assert h.upload(fed, 0, m, body).status_code == 201
        stop = time.monotonic() + 15
        while time.monotonic() < stop:
            current = h.round(fed)  # the admin's requests touch no client
            if current["index"] == 1:
                break
            time.sleep(0.05)
        assert current["index"] == 1
        assert h.round(fed, 0)["state"] == "closed"
        assert current["participants"] == [a.id, b.id]
