"""Property-based fuzzing of the live API (schemathesis), then a real round on the same server.

No generated request, valid or not, with or without real credentials, may get a 5xx; and the
federation the fuzzer hammered must still complete its rounds with a correct encrypted average.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.conftest import Recorder
from tests.reliability.fuzzing import Identities, fuzz_api
from tests.reliability.live import (
    ADMIN_TOKEN,
    ATOL,
    Federation,
    LiveServer,
    Site,
    expected_average,
)

pytestmark = pytest.mark.e2e

N_VALUES = 3000


def fuzz_then_federate(server: LiveServer, record: Recorder, examples: int) -> None:
    fed = Federation.create(
        server, [120, 80, 200], rounds=2, open_round=False, enrollment={"max_uses": 10}
    )
    dealer, member, _ = fed.sites
    # The fuzzer's client id is a spare member without a key (never a participant): the admin
    # operations it reaches with real ids (remove a member) must not take a participant away.
    spare = Site("spare", 1)
    with httpx.Client(base_url=server.url, timeout=60) as anon:
        reg = anon.post(
            fed.path("/clients"),
            json=spare.registration(),
            headers={"X-Enrollment-Token": fed.enrollment_token},
        )
        assert reg.status_code == 201, reg.text
    with server.admin() as admin:
        assert admin.post(fed.path("/rounds")).status_code == 201
    ids = Identities(
        admin_token=ADMIN_TOKEN,
        enrollment_token=fed.enrollment_token,
        dealer_token=dealer.token,
        member_token=member.token,
        federation_id=fed.id,
        client_id=reg.json()["client_id"],
    )
    stats = fuzz_api(server.url, ids, examples=examples)
    record("fuzz", examples_per_operation=examples, **stats.as_dict())
    assert stats.server_errors == [], json.dumps(stats.server_errors, indent=1)
    assert len(stats.by_operation) >= 22  # every operation of the served OpenAPI was exercised
    assert stats.by_class["2xx"] > 0 and stats.by_class["4xx"] > 0
    assert stats.cases >= 22 * examples
    assert server.proc.alive()
    # Nothing the fuzzer sent got into round 0, and round 1 has not been opened by it.
    rnd = fed.round(server, 0)
    assert rnd["state"] == "open" and rnd["uploads"]["values"] == []
    assert fed.round(server)["index"] == 0
    # The federation still completes, with real encrypted uploads and a correct average.
    rng = np.random.default_rng(5)
    worst = 0.0
    for index in range(2):
        values = [rng.normal(0, 0.05, N_VALUES).astype(np.float32) for _ in fed.sites]
        for site, v in zip(fed.sites, values, strict=True):
            r = fed.upload(server, site, index, fed.encrypt(server, site, v, index))
            assert r.status_code == 201, r.text
        assert fed.wait_state(server, index, ("closed", "failed"))["state"] == "closed"
        weights = fed.round(server, index)["weights"]
        want = expected_average(values, [weights[s.client_id] for s in fed.sites])
        for site in fed.sites:
            contributors, avg = fed.decrypted_average(server, site, index)
            assert contributors == {s.client_id for s in fed.sites}
            np.testing.assert_allclose(avg, want, atol=ATOL, rtol=0)
            worst = max(worst, float(np.abs(avg - want).max()))
    with server.admin() as admin:
        assert admin.get(fed.path()).json()["state"] == "completed"
    record("fuzz_then_round", completed=True, max_abs_error=worst)


def test_fuzz_live_api_few_examples(server: LiveServer, record: Recorder) -> None:
    fuzz_then_federate(server, record, examples=8)


@pytest.mark.slow
def test_fuzz_live_api_many_examples(server: LiveServer, record: Recorder) -> None:
    fuzz_then_federate(server, record, examples=150)


def test_huge_or_non_finite_round_timeout_is_refused(server: LiveServer) -> None:
    """Found while fuzzing: a spec with ``round_timeout_s`` of 1e308 (or ``Infinity``, which
    Python's JSON parser accepts) was stored, and every round of it then answered 500 (its
    deadline is no representable date)."""
    base = {
        "name": "x",
        "min_clients": 1,
        "quorum": 1,
        "model": {"kind": "mlp", "input_shape": [8]},
    }
    with server.admin() as admin:
        for raw in ("1e308", "1e12", "Infinity", "NaN"):
            body = json.dumps(base)[:-1] + f', "round_timeout_s": {raw}}}'
            r = admin.post(
                "/v1/federations", content=body, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, (raw, r.text)
            assert r.json()["error"] == "invalid_config"
        year = admin.post("/v1/federations", json={**base, "round_timeout_s": 365 * 86400})
        assert year.status_code == 201, year.text
