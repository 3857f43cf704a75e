"""A site's ``fedsparsify client`` process killed with SIGKILL mid-federation, then restarted on
the same state directory: it keeps its identity (no second registration), resumes from its
checkpoint, and the federation ends with the same global model as an undisturbed in-process run.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx
import pytest
import torch

from fedsparsify.clients.launcher import confirm_peers, start_aggregator, start_site
from fedsparsify.clients.state import StateDir
from fedsparsify.platform.data import make_digits_federation, save_site
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.runner import InProcessFederation
from fedsparsify.platform.spec import FederationSpec, ModelSpec, ScheduleSpec, TrainingSpec
from tests.conftest import Recorder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_site_killed_and_restarted_resumes_from_its_state_dir(
    tmp_path: Path, record: Recorder
) -> None:
    spec = FederationSpec(
        name="client-restart",
        rounds=3,
        min_clients=2,
        quorum=2,
        round_timeout_s=300,
        crypto_preset="lean",
        method="fedsparsify-global",
        schedule=ScheduleSpec(kind="progressive", target=0.5, fraction=0.5, start_round=1),
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=32),
        training=TrainingSpec(local_epochs=1, batch_size=32, lr=0.05, momentum=0.9),
        seed=4,
    )
    data = make_digits_federation(2, partition="iid", seed=4)
    for site in data.sites:
        save_site(site, tmp_path / "data" / site.name)
    token = secrets.token_urlsafe(16)
    with start_aggregator(tmp_path / "agg", admin_token=token) as server:
        admin = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        created = admin.post("/v1/federations", json=spec.model_dump(mode="json")).json()
        fid = created["id"]

        names = [s.name for s in data.sites]
        peers = confirm_peers({n: tmp_path / "state" / n for n in names}, tmp_path / "peers.txt")

        def launch(name: str) -> object:
            return start_site(
                server=server.url,
                enrollment_token=f"{fid}:{created['enrollment_token']}",  # the join code
                data_dir=tmp_path / "data" / name,
                state_dir=tmp_path / "state" / name,
                name=name,
                log_dir=tmp_path / "logs",
                peers=peers,
            )

        procs = {name: launch(name) for name in names}
        victim = names[1]
        try:
            stop = time.monotonic() + 120
            while True:  # both registered and keyed
                fed = admin.get(f"/v1/federations/{fid}").json()
                if len(fed["participants"]) == 2 and fed["keys"]["envelopes_sealed"] >= 1:
                    break
                assert time.monotonic() < stop, fed
                for proc in procs.values():
                    assert proc.alive(), proc.log_tail()  # type: ignore[attr-defined]
                time.sleep(0.2)
            assert admin.post(f"/v1/federations/{fid}/rounds").status_code == 201
            before = StateDir(tmp_path / "state" / victim).credentials
            stop = time.monotonic() + 120
            while True:  # round 1 is open and the victim has not uploaded to it yet
                rnd = admin.get(f"/v1/federations/{fid}/rounds/current").json()
                if rnd["index"] >= 1:
                    break
                assert time.monotonic() < stop, rnd
                time.sleep(0.02)
            assert before is not None and before.client_id not in rnd["uploaded"]
            procs[victim].kill()  # type: ignore[attr-defined]
            killed_in_round = rnd["index"]
            procs[victim] = launch(victim)
            for proc in procs.values():
                proc.popen.wait(timeout=300)  # type: ignore[attr-defined]
                assert proc.popen.returncode == 0, proc.log_tail()  # type: ignore[attr-defined]
        finally:
            for proc in procs.values():
                proc.stop()  # type: ignore[attr-defined]
        fed = admin.get(f"/v1/federations/{fid}").json()
        admin.close()
    assert fed["state"] == "completed", json.dumps(fed)[:2000]
    assert [h["state"] for h in fed["history"]] == ["closed"] * 3
    assert all(len(h["contributors"]) == 2 for h in fed["history"])
    assert len(fed["participants"]) == 2  # the restarted site did not register again
    after = StateDir(tmp_path / "state" / victim).credentials
    assert after == before
    finals = []
    for site in data.sites:
        checkpoint = StateDir(tmp_path / "state" / site.name).load_checkpoint()
        assert checkpoint is not None and checkpoint["final"]
        restored = Site(spec, site)
        restored.load_state_dict(checkpoint["site"])
        finals.append(restored.model.state_dict())
    a, b = finals
    assert all(torch.equal(a[k], b[k]) for k in a), "sites disagree on the final model"
    reference = InProcessFederation(spec, data)
    reference.run()
    ref = reference.global_model.state_dict()
    worst = max(float((a[k] - ref[k]).abs().max()) for k in a)
    record(
        "faults",
        injected=[
            {
                "fault": "site process kill -9 during round "
                f"{killed_in_round}, restarted on its state dir",
                "federation": fed["state"],
                "re_registered": False,
                "max_abs_difference_to_undisturbed": worst,
            }
        ],
    )
    assert worst < 1e-3, f"the restarted federation drifted {worst} from the undisturbed run"
