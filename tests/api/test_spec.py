"""``GET /v1/federations/{fid}/spec``: readable with the enrolment token before registering."""

from __future__ import annotations

import pytest

from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.errors import AuthenticationError
from fedsparsify.platform.spec import FederationSpec
from tests.api.conftest import ADMIN, Harness, bearer, spec

UNKNOWN = "0" * 32


def expected_spec(**overrides: object) -> dict[str, object]:
    return FederationSpec.model_validate(spec(**overrides)).model_dump(mode="json")


def test_enrolment_token_reads_the_spec_before_registering(h: Harness) -> None:
    fed = h.create(name="test-fed", model={"kind": "mlp", "input_shape": [3, 4]})
    want = expected_spec(model={"kind": "mlp", "input_shape": [3, 4]})
    for headers in (
        {"X-Enrollment-Token": fed.enrollment_token},
        bearer(fed.enrollment_token),
    ):
        r = h.client.get(fed.path("/spec"), headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == want
    assert r.json()["model"]["input_shape"] == [3, 4]
    # Nobody registered by reading it.
    assert h.client.get(fed.path(), headers=ADMIN).json()["participants"] == []


def test_members_and_admin_read_the_spec(h: Harness) -> None:
    fed = h.create(name="test-fed")
    member = h.register(fed, "site", 5)
    for headers in (ADMIN, member.auth):
        r = h.client.get(fed.path("/spec"), headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == expected_spec()
    # A valid member token with a wrong enrolment header, and a client of another federation
    # that sends this federation's enrolment token (a REST client built with its own token).
    r = h.client.get(fed.path("/spec"), headers={**member.auth, "X-Enrollment-Token": "fse_no"})
    assert r.status_code == 200
    stranger = h.register(h.create(), "stranger", 1)
    r = h.client.get(
        fed.path("/spec"), headers={**stranger.auth, "X-Enrollment-Token": fed.enrollment_token}
    )
    assert r.status_code == 200 and r.json() == expected_spec()


def test_missing_or_wrong_token_is_401(h: Harness) -> None:
    fed = h.create()
    other = h.create()
    for headers in (
        {},
        {"X-Enrollment-Token": "fse_wrong"},
        bearer("fse_wrong"),
        {"X-Enrollment-Token": other.enrollment_token},  # another federation's
        {"Authorization": f"Basic {fed.enrollment_token}"},
    ):
        r = h.client.get(fed.path("/spec"), headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_client_of_another_federation_is_403(h: Harness) -> None:
    fed = h.create()
    other = h.create()
    stranger = h.register(other, "stranger", 1)
    r = h.client.get(fed.path("/spec"), headers=stranger.auth)
    assert r.status_code == 403
    # The same answer whether or not the federation exists.
    r = h.client.get(f"/v1/federations/{UNKNOWN}/spec", headers=stranger.auth)
    assert r.status_code == 403


def test_unknown_federation(h: Harness) -> None:
    """404 for the admin; anonymous callers cannot tell an unknown federation from a known one
    whose enrolment token they lack."""
    fed = h.create()
    other = h.create()
    r = h.client.get(f"/v1/federations/{UNKNOWN}/spec", headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    for headers in (
        {},
        bearer("fse_x"),
        {"X-Enrollment-Token": other.enrollment_token},
        bearer(other.enrollment_token),
    ):
        unknown = h.client.get(f"/v1/federations/{UNKNOWN}/spec", headers=headers)
        known = h.client.get(fed.path("/spec"), headers=headers)
        assert unknown.status_code == known.status_code == 401
        assert unknown.json()["detail"].replace(UNKNOWN, fed.id) == known.json()["detail"]


def test_spec_is_readable_after_the_federation_finished(h: Harness) -> None:
    fed = h.federation(rounds=1)
    h.expire(fed, 0)
    assert h.client.get(fed.path(), headers=ADMIN).json()["state"] == "failed"
    r = h.client.get(fed.path("/spec"), headers={"X-Enrollment-Token": fed.enrollment_token})
    assert r.status_code == 200 and r.json()["rounds"] == 1


def test_aggregator_client_get_spec(h: Harness) -> None:
    """The REST client's ``get_spec`` against this route (over the test transport)."""
    fed = h.create(name="test-fed")
    api = AggregatorClient(
        "http://testserver", transport=h.client._transport, retries=0, backoff_s=0.0
    )
    with api:
        assert api.get_spec(fed.id, enrollment_token=fed.enrollment_token) == expected_spec()
        with pytest.raises(AuthenticationError):
            api.get_spec(fed.id, enrollment_token="fse_wrong")
