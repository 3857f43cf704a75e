"""Faults: the aggregator killed with SIGKILL at the worst moments, a site that vanishes.

The disturbed federation must end with the same decrypted aggregates as an undisturbed run of the
same updates (within CKKS precision), and both must match ``np.average``; no accepted upload is
lost, and a client that lost its connection in the crash uploads again and is accepted.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.api import Settings, create_app
from fedsparsify.crypto import create_secret_context, decrypt_sum
from tests.api.conftest import ADMIN_TOKEN, Harness, TestClient, vectors
from tests.conftest import Recorder
from tests.reliability.live import (
    ATOL,
    Federation,
    LiveServer,
    UploadInBackground,
    expected_average,
    temporaries,
    wait_for,
)

#: Large enough (245 ciphertexts, ~6 MB per upload) that adding one upload into the running sum
#: takes long enough to be caught in the act.
N_VALUES = 1_000_000
SAMPLES = (120, 80, 200)
ROUNDS = 3


def round_values(index: int) -> list[np.ndarray]:
    """Every site's update of round ``index``: the same in every run."""
    rng = np.random.default_rng(1000 + index)
    return [rng.normal(0, 0.05, N_VALUES).astype(np.float32) for _ in SAMPLES]


def run_federation(
    server: LiveServer, faults: bool
) -> tuple[list[np.ndarray], list[dict[str, object]]]:
    """Three sites, three rounds; with ``faults``, kill -9 the aggregator during an upload
    (round 0), while it adds the last upload into the sum (round 1), and between rounds 1 and 2.
    Returns each round's decrypted average (as the dealer sees it) and the faults' outcomes."""
    fed = Federation.create(server, SAMPLES, rounds=ROUNDS)
    injected: list[dict[str, object]] = []
    averages = []
    for index in range(ROUNDS):
        values = round_values(index)
        bodies = [fed.encrypt(server, s, v, index) for s, v in zip(fed.sites, values, strict=True)]
        if not faults:
            for site, body in zip(fed.sites, bodies, strict=True):
                assert fed.upload(server, site, index, body).status_code == 201
        elif index == 0:
            assert fed.upload(server, fed.sites[0], 0, bodies[0]).status_code == 201
            upload = UploadInBackground(fed, server, 1, 0, bodies[1], pause_halfway=True)
            assert upload.half_sent.wait(60)
            assert wait_for(lambda: bool(temporaries(server, "upload-")), 10)
            server.kill9()
            outcome = upload.join()
            server.restart()
            rnd = fed.round(server, 0)
            kept = rnd["uploaded"] == [fed.sites[0].client_id]
            clean = temporaries(server, "") == []
            injected.append(
                {
                    "fault": "aggregator kill -9 during an upload (half the body sent)",
                    "client_saw": outcome,
                    "accepted_upload_kept": kept,
                    "partial_upload_discarded": clean and rnd["state"] == "collecting",
                }
            )
            assert isinstance(outcome, str), outcome  # the client saw the connection drop
            assert kept and clean and rnd["state"] == "collecting"
            for site, body in zip(fed.sites[1:], bodies[1:], strict=True):  # the client retries
                assert fed.upload(server, site, 0, body).status_code == 201
        else:  # index 1 or 2
            for site, body in zip(fed.sites[:2], bodies[:2], strict=True):
                assert fed.upload(server, site, index, body).status_code == 201
            if index == 1:
                upload = UploadInBackground(fed, server, 2, 1, bodies[2])
                caught = wait_for(lambda: bool(temporaries(server, "sum.")), 30)
                server.kill9()
                outcome = upload.join()
                server.restart()
                rnd = fed.round(server, 1)
                retry = fed.upload(server, fed.sites[2], 1, bodies[2]).status_code
                injected.append(
                    {
                        "fault": "aggregator kill -9 while adding the last upload "
                        "into the encrypted sum",
                        "caught_in_the_act": caught,
                        "client_saw": outcome,
                        "state_after_restart": rnd["state"],
                        "retry_status": retry,
                    }
                )
                assert caught and isinstance(outcome, str), outcome
                # Killed before the commit: the upload is gone and the retry is new (201).
                # Killed after it: restart closed the round and the retry is a duplicate (200).
                assert (rnd["state"], retry) in (("collecting", 201), ("closed", 200)), rnd
            else:
                assert fed.upload(server, fed.sites[2], index, bodies[2]).status_code == 201
        rnd = fed.wait_state(server, index, ("closed", "failed"))
        assert rnd["state"] == "closed", rnd
        want = expected_average(values, list(SAMPLES))
        contributors, avg = fed.decrypted_average(server, fed.sites[0], index)
        assert contributors == {s.client_id for s in fed.sites}
        np.testing.assert_allclose(avg, want, atol=ATOL, rtol=0)
        averages.append(avg)
        if faults and index == 1:
            server.kill9()  # between rounds: round 1 closed, round 2 opened by auto_advance
            server.restart()
            nxt = fed.round(server)
            injected.append(
                {
                    "fault": "aggregator kill -9 between rounds 1 and 2",
                    "next_round_after_restart": [nxt["index"], nxt["state"]],
                }
            )
            assert (nxt["index"], nxt["state"]) == (2, "open")
    with server.admin() as admin:
        assert admin.get(fed.path()).json()["state"] == "completed"
    return averages, injected


@pytest.mark.e2e
def test_aggregator_kill9_during_upload_aggregation_and_between_rounds(
    tmp_path: Path, record: Recorder, database_url: str | None
) -> None:
    calm = LiveServer(tmp_path / "undisturbed")  # the reference: SQLite, no faults
    try:
        reference, _ = run_federation(calm, faults=False)
    finally:
        calm.stop()
    crashing = LiveServer(tmp_path / "disturbed", database_url=database_url)
    try:
        results, injected = run_federation(crashing, faults=True)
    finally:
        crashing.stop()
    assert crashing.starts == 4  # three kills, three restarts
    worst = max(float(np.abs(a - b).max()) for a, b in zip(results, reference, strict=True))
    record(
        "faults",
        database="postgresql" if database_url else "sqlite",
        injected=injected,
        rounds=ROUNDS,
        n_values=N_VALUES,
        equal_to_undisturbed=worst <= 2 * ATOL,
        max_abs_difference=worst,
    )
    assert worst <= 2 * ATOL


@pytest.mark.e2e
def test_one_of_five_clients_vanishes(server: LiveServer, record: Recorder) -> None:
    """Pairwise masks: the vanished site's masks do not cancel, so at the deadline the round
    restarts as attempt 1 with the four that uploaded (new participant set, weights and masks);
    they upload again and the result is their exact weighted average."""
    samples = (50, 60, 70, 80, 90)
    fed = Federation.create(
        server, samples, rounds=1, quorum=4, round_timeout_s=8, auto_advance=False
    )
    values = vectors(5, n=4000, seed=9)
    for site, v in zip(fed.sites[:4], values[:4], strict=True):
        r = fed.upload(server, site, 0, fed.encrypt(server, site, v, 0))
        assert r.status_code == 201, r.text
    # site-4 vanished: it never uploads. Before the deadline the round waits for it.
    first = fed.round(server, 0)
    assert first["state"] == "collecting" and first["attempt"] == 0
    stop = time.monotonic() + 30
    while (second := fed.round(server, 0))["attempt"] == 0:
        assert time.monotonic() < stop
        time.sleep(0.1)
    survivors = [s.client_id for s in fed.sites[:4]]
    assert second["attempt"] == 1 and second["state"] == "open"
    assert sorted(second["participants"]) == sorted(survivors)
    assert second["participants_digest"] != first["participants_digest"]
    assert second["uploads"]["values"] == []
    # A replay of an attempt-0 upload into attempt 1 is refused: its masks would not cancel.
    replay = fed.encrypt(server, fed.sites[0], values[0], 0, status=first)
    r = fed.upload(server, fed.sites[0], 0, replay)
    assert (r.status_code, r.json()["error"]) == (409, "round_mismatch")
    for site, v in zip(fed.sites[:4], values[:4], strict=True):
        r = fed.upload(server, site, 0, fed.encrypt(server, site, v, 0))
        assert r.status_code == 201, r.text
    rnd = fed.wait_state(server, 0, ("closed", "failed"), timeout_s=30)
    assert rnd["state"] == "closed" and sorted(rnd["contributors"]) == sorted(survivors)
    weights = [second["weights"][c] for c in survivors]
    assert weights == pytest.approx([n / sum(samples[:4]) for n in samples[:4]])
    want = expected_average(values[:4], weights)
    errors = []
    for site in fed.sites:  # the vanished site, back later, can read the result too
        contributors, avg = fed.decrypted_average(server, site, 0)
        assert contributors == {s.client_id for s in fed.sites[:4]}
        np.testing.assert_allclose(avg, want, atol=ATOL, rtol=0)
        errors.append(float(np.abs(avg - want).max()))
    late = fed.sites[4]
    r = fed.upload(server, late, 0, fed.encrypt(server, late, values[4], 0, status=first))
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")  # not in attempt 1
    record(
        "faults",
        injected=[
            {
                "fault": "1 of 5 clients vanishes; deadline passes",
                "round": rnd["state"],
                "contributors": 4,
                "max_abs_error": max(errors),
            }
        ],
    )


def test_crash_after_the_last_commit_is_closed_at_restart(tmp_path: Path) -> None:
    """Killed between the last upload's database commit and the close: at restart the round
    closes at once instead of waiting for its deadline (a retried upload is only a duplicate)."""
    settings = Settings(
        data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, deadline_check_interval_s=60
    )
    key_set = create_secret_context("lean")
    app = create_app(settings)
    values = vectors(3)
    with TestClient(app) as client:
        h = Harness(client, app, key_set)
        fed = h.federation(samples=(10, 20, 30))
        for m, v in zip(fed.members[:2], values[:2], strict=True):
            assert h.upload(fed, 0, m, h.encrypt(m, v, m.num_samples / 60)).status_code == 201
        app.state.rounds.lifecycle.finish_locked = lambda *_: None  # the process dies right here
        last = fed.members[2]
        body = h.encrypt(last, values[2], 30 / 60)
        assert h.upload(fed, 0, last, body).status_code == 201
    app = create_app(settings)
    with TestClient(app) as client:
        h = Harness(client, app, key_set)
        assert h.round(fed, 0)["state"] == "closed"
        assert h.upload(fed, 0, last, body).status_code == 200  # the client's retry: duplicate
        avg = h.aggregate(fed, 0, fed.members[0])
    header, total = decrypt_sum(key_set, io.BytesIO(avg))
    want = expected_average(values, [10, 20, 30])
    np.testing.assert_allclose(total / header.weight, want, atol=ATOL, rtol=0)
