"""Registration the aggregator controls: join codes that expire, run out and can be rotated or
revoked; registration closed once round 0 opens; sample caps; members the admin removes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from fedsparsify.api.db import FederationRow
from fedsparsify.crypto import SiteIdentity
from tests.api.conftest import ADMIN, Fed, Harness, vectors
from tests.sites import registration

pytestmark = pytest.mark.both_databases


def register(h: Harness, fed: Fed, name: str, n: int = 5, token: str | None = None) -> Any:
    return h.client.post(
        fed.path("/clients"),
        json=registration(name, n, SiteIdentity.generate()),
        headers={"X-Enrollment-Token": token or fed.enrollment_token},
    )


def test_a_join_code_allows_min_clients_registrations_by_default(h: Harness) -> None:
    r = h.client.post(
        "/v1/federations",
        json={
            "name": "uses",
            "min_clients": 2,
            "quorum": 2,
            "model": {"kind": "mlp", "input_shape": [8]},
        },
        headers=ADMIN,
    )
    assert r.status_code == 201 and r.json()["enrollment_max_uses"] == 2
    fed = Fed(id=r.json()["id"], enrollment_token=r.json()["enrollment_token"])
    assert register(h, fed, "a").status_code == 201
    assert register(h, fed, "b").status_code == 201
    third = register(h, fed, "c")
    assert third.status_code == 401 and "used up" in third.json()["detail"]
    # the spec endpoint refuses the used-up code too
    spec = h.client.get(fed.path("/spec"), headers={"X-Enrollment-Token": fed.enrollment_token})
    assert spec.status_code == 401


def test_an_expired_join_code_is_refused(h: Harness) -> None:
    fed = h.create()
    with h.state.db.session() as session:
        session.execute(
            update(FederationRow)
            .where(FederationRow.id == fed.id)
            .values(enrollment_expires_at=1.0)
        )
        session.commit()
    r = register(h, fed, "late")
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_rotation_replaces_and_revocation_stops_the_join_code(h: Harness) -> None:
    fed = h.create()
    assert register(h, fed, "a").status_code == 201
    r = h.client.post(fed.path("/enrollment"), json={"max_uses": 1}, headers=ADMIN)
    assert r.status_code == 201, r.text
    rotated = r.json()
    assert (
        rotated["max_uses"] == 1
        and rotated["join_code"] == f"{fed.id}:{rotated['enrollment_token']}"
    )
    old = register(h, fed, "b")
    assert old.status_code == 401  # the old code stopped working at once
    assert register(h, fed, "b", token=rotated["enrollment_token"]).status_code == 201
    assert register(h, fed, "c", token=rotated["enrollment_token"]).status_code == 401  # 1 use
    again = h.client.post(fed.path("/enrollment"), json={}, headers=ADMIN).json()
    assert h.client.delete(fed.path("/enrollment"), headers=ADMIN).status_code == 204
    revoked = register(h, fed, "d", token=again["enrollment_token"])
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    # only the admin may do either
    r = h.client.post(fed.path("/enrollment"), json={}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401


def test_registration_closes_when_round_0_opens(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30))
    r = register(h, fed, "mid-run", 1_099_511_627_776 // 2**20)
    assert r.status_code == 409 and "late joiners" in r.json()["detail"]
    late = h.federation(samples=(10, 20, 30), enrollment={"max_uses": 10, "late_joiners": True})
    assert register(h, late, "mid-run").status_code == 201


def test_oversized_sample_counts_are_refused_at_registration(h: Harness) -> None:
    fed = h.create(max_samples_per_site=1000)
    r = register(h, fed, "huge", 1_099_511_627_776)
    assert r.status_code == 422
    assert "max_samples_per_site 1000" in r.json()["detail"]
    assert register(h, fed, "fine", 1000).status_code == 201


def test_one_huge_site_cannot_take_the_average_over(h: Harness) -> None:
    """The attack of the issue: a site declaring 2^40 samples. With the default cap (0.5) its
    weight is half, not 1 - 9e-11, and an upload claiming more than its share is refused."""
    fed = h.federation(samples=(10, 20, 1_099_511_627_776))
    huge = fed.members[2]
    weights = h.round(fed, 0)["weights"]
    assert weights[huge.id] == 0.5
    assert weights[fed.members[0].id] == 10 / 30 * 0.5
    body = h.encrypt(huge, vectors(1)[0], 0.99)
    r = h.upload(fed, 0, huge, body)
    assert r.status_code == 422 and r.json()["error"] == "value_out_of_range"


def test_a_removed_member_is_in_no_new_round_and_its_token_stops(h: Harness) -> None:
    fed = h.federation(samples=(10, 20, 30, 40), open_round=False, quorum=2, min_clients=3)
    gone = fed.members[3]
    r = h.client.delete(fed.path(f"/clients/{gone.id}"), headers=ADMIN)
    assert r.status_code == 200 and r.json()["removed_at"]
    assert h.client.get(fed.path(), headers=gone.auth).status_code == 401
    listed = h.client.get(fed.path("/clients"), headers=fed.members[0].auth).json()
    assert [m["removed"] for m in listed] == [False, False, False, True]
    rnd = h.client.post(fed.path("/rounds"), headers=ADMIN).json()
    assert gone.id not in rnd["participants"] and len(rnd["participants"]) == 3
    assert (
        h.client.delete(fed.path(f"/clients/{gone.id}"), headers=fed.members[0].auth).status_code
        == 403
    )
