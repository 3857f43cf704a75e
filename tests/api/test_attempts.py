"""Rounds with pairwise masks: a missed deadline restarts the round as a new attempt with the
sites that uploaded; uploads are bound to their federation, round, attempt and participants."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from fedsparsify.crypto import decrypt_sum
from tests.api.conftest import MASK, Fed, Harness, Member, vectors
from tests.sites import encrypt_for

pytestmark = pytest.mark.both_databases


def made_for(h: Harness, fed: Fed, status: dict[str, Any], m: Member, v: np.ndarray) -> bytes:
    """``m``'s update as made for the round attempt ``status`` describes (masks included)."""
    return encrypt_for(
        h.key_set,
        m,
        v,
        status["weights"][m.id],
        status=status,
        federation_id=fed.id,
        members=fed.members,
        mask_digest=MASK,
    )


ATOL = 1e-6


def test_a_missed_deadline_restarts_the_round_with_the_uploaders(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30))
    a, b, c = fed.members
    values = vectors(3)
    first = h.round(fed, 0)
    for m, v in zip((b, c), values[1:], strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m))).status_code == 201
    assert h.sum_bytes(fed, 0) is not None
    h.expire(fed, 0)
    second = h.round(fed, 0)
    assert second["attempt"] == 1 and second["state"] == "open"
    assert second["participants"] == [b.id, c.id]
    assert second["participants_digest"] != first["participants_digest"]
    # the weights of the new participant set: 20/50 and 30/50, capped at max_weight_share 0.5
    assert second["weights"] == {b.id: 0.5, c.id: 0.5}
    assert second["uploads"]["values"] == [] and h.sum_bytes(fed, 0) is None
    assert "attempt 1" in second["reason"]
    # a's late upload for attempt 0: a is no participant of attempt 1
    r = h.upload(fed, 0, a, made_for(h, fed, first, a, values[0]))
    assert r.status_code == 403
    # b's attempt-0 upload, made again: made for another attempt, refused
    stale = made_for(h, fed, first, b, values[1])
    r = h.upload(fed, 0, b, stale)
    assert (r.status_code, r.json()["error"]) == (409, "round_mismatch")
    for m, v in zip((b, c), values[1:], strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m))).status_code == 201
    done = h.round(fed, 0)
    assert done["state"] == "closed" and done["contributors"] == [b.id, c.id]
    header, total = decrypt_sum(h.key_set, io.BytesIO(h.aggregate(fed, 0, a)))
    want = np.average(np.stack(values[1:]), axis=0, weights=[0.5, 0.5])
    np.testing.assert_allclose(total / header.weight, want, atol=ATOL, rtol=0)
    assert header.attempt == 1 and header.round == 0


def test_attempts_run_out_and_the_round_fails(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30), max_attempts=1, rounds=2)
    b, c = fed.members[1:]
    for m, v in zip((b, c), vectors(2), strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m))).status_code == 201
    h.expire(fed, 0)
    rnd = h.round(fed, 0)
    assert rnd["state"] == "failed" and "no attempt left (1 allowed" in rnd["reason"]
    assert h.round(fed)["index"] == 1  # the federation goes on from the last model


def test_a_round_upload_replayed_into_the_next_round_is_refused(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30))
    values = vectors(3)
    bodies = {
        m.id: h.encrypt(m, v, h.weight(fed, m)) for m, v in zip(fed.members, values, strict=True)
    }
    for m in fed.members:
        assert h.upload(fed, 0, m, bodies[m.id]).status_code == 201
    assert h.round(fed, 1)["state"] == "open"
    for m in fed.members:
        r = h.upload(fed, 1, m, bodies[m.id])  # byte for byte the round-0 upload
        assert (r.status_code, r.json()["error"]) == (409, "round_mismatch"), r.text
    assert h.round(fed, 1)["uploads"]["values"] == []


def test_votes_without_values_leave_a_site_out_of_the_next_attempt(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30), method="fedsparsify-local")
    a, b, c = fed.members
    values = vectors(3)
    votes = [(np.abs(v) > 0.03).astype(np.float32) for v in values]
    for m, v, vote in zip(fed.members, values, votes, strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m))).status_code == 201
        if m is not c:  # c uploads its values but never its votes
            body = h.encrypt(m, vote, 1 / 3, channel="votes")
            assert h.upload(fed, 0, m, body, channel="votes").status_code == 201
    h.expire(fed, 0)
    rnd = h.round(fed, 0)
    assert rnd["attempt"] == 1 and rnd["participants"] == [a.id, b.id]
    for m, v, vote in zip((a, b), values[:2], votes[:2], strict=True):
        assert h.upload(fed, 0, m, h.encrypt(m, v, h.weight(fed, m))).status_code == 201
        body = h.encrypt(m, vote, 1 / 2, channel="votes")
        assert h.upload(fed, 0, m, body, channel="votes").status_code == 201
    assert h.round(fed, 0)["state"] == "closed"
    header, fraction = decrypt_sum(h.key_set, io.BytesIO(h.aggregate(fed, 0, c, "votes")))
    np.testing.assert_allclose(fraction / header.weight, (votes[0] + votes[1]) / 2, atol=ATOL)
