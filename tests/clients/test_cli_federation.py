"""A two-site, two-round federation through the real CLI processes and real HTTP.

The aggregator is ``fedsparsify serve`` and each site is ``fedsparsify client`` in its own
process; the admin drives the federation with the CLI too. The sites' final global models must be
identical to each other and match an in-process plaintext run of the same spec within CKKS noise.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest
import torch

from fedsparsify.clients.launcher import confirm_peers, start_aggregator, start_site
from fedsparsify.clients.state import StateDir
from fedsparsify.platform.data import make_digits_federation, save_site
from fedsparsify.platform.masks import sparsity
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.runner import InProcessFederation
from fedsparsify.platform.spec import (
    FederationSpec,
    Method,
    ModelSpec,
    ScheduleSpec,
    TrainingSpec,
)
from fedsparsify.platform.training import evaluate
from tests.cli import run_cli

pytestmark = pytest.mark.e2e


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    return run_cli(*args, env=env).stdout


@pytest.mark.parametrize("method", ["fedsparsify-global", "fedsparsify-local"])
def test_two_sites_two_rounds_over_cli_and_http(tmp_path: Path, method: Method) -> None:
    """FedSparsify-Local's majority vote runs on encrypted 0/1 votes (a second channel)."""
    spec = FederationSpec(
        name="cli-e2e",
        method=method,
        rounds=2,
        min_clients=2,
        quorum=2,
        round_timeout_s=120,
        crypto_preset="lean",
        schedule=ScheduleSpec(kind="progressive", target=0.5, fraction=0.5, start_round=1),
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=32),
        training=TrainingSpec(local_epochs=1, batch_size=32, lr=0.05, momentum=0.9),
        seed=3,
    )
    data = make_digits_federation(2, partition="iid", seed=3)
    for site in data.sites:
        save_site(site, tmp_path / "data" / site.name)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    admin_token = secrets.token_urlsafe(16)
    with start_aggregator(tmp_path / "agg", admin_token=admin_token) as server:
        env = {**os.environ, "FEDSPARSIFY_ADMIN_TOKEN": admin_token}
        out = _cli(
            "federation", "create", "--server", server.url, "--spec", str(spec_file), env=env
        )
        fid = out.split("federation: ")[1].split()[0]
        join = out.split("join code (shown once): ")[1].split()[0]
        peers = confirm_peers(
            {s.name: tmp_path / "state" / s.name for s in data.sites}, tmp_path / "peers.txt"
        )
        sites = [
            start_site(
                server=server.url,
                enrollment_token=join,
                data_dir=tmp_path / "data" / site.name,
                state_dir=tmp_path / "state" / site.name,
                name=site.name,
                log_dir=tmp_path / "logs",
                peers=peers,
            )
            for site in data.sites
        ]
        try:
            deadline = time.monotonic() + 120
            while True:
                fed = json.loads(_cli("federation", "show", fid, "--server", server.url, env=env))
                keys = fed["keys"]
                if len(fed["participants"]) == 2 and keys["envelopes_sealed"] >= 1:
                    break
                assert time.monotonic() < deadline, fed
                for proc in sites:
                    assert proc.alive(), proc.log_tail()
                time.sleep(0.3)
            _cli("federation", "start-round", fid, "--server", server.url, env=env)
            for proc in sites:
                proc.popen.wait(timeout=240)
                assert proc.popen.returncode == 0, proc.log_tail()
        finally:
            for proc in sites:
                proc.stop()
        fed = json.loads(_cli("federation", "show", fid, "--server", server.url, env=env))
    assert fed["state"] == "completed"
    assert [h["state"] for h in fed["history"]] == ["closed", "closed"]
    assert all(len(h["contributors"]) == 2 for h in fed["history"])
    channels = ["values", "votes"] if method == "fedsparsify-local" else ["values"]
    assert all(sorted(h["aggregate_bytes"]) == channels for h in fed["history"]), fed["history"]
    # every site reported metrics for both rounds, and the final ones after the last round
    last = fed["history"][-1]["metrics"]
    assert all("final_val_accuracy" in m for m in last.values()), last

    finals = []
    for site in data.sites:
        checkpoint = StateDir(tmp_path / "state" / site.name).load_checkpoint()
        assert checkpoint is not None and checkpoint["final"]
        restored = Site(spec, site)
        restored.load_state_dict(checkpoint["site"])
        finals.append(restored)
    a, b = (s.model.state_dict() for s in finals)
    assert all(torch.equal(a[k], b[k]) for k in a), "sites disagree on the final global model"

    reference = InProcessFederation(spec, data)
    reference.run()
    ref_state = reference.global_model.state_dict()
    worst = max(float((a[k] - ref_state[k]).abs().max()) for k in a)
    assert worst < 1e-3, f"encrypted run drifted {worst} from the plaintext run"
    assert sparsity(finals[0].mask) == pytest.approx(sparsity(reference.global_mask))
    ours = finals[0].evaluate(data.x_test, data.y_test)["accuracy"]
    theirs = evaluate(reference.global_model, data.x_test, data.y_test, "classification")[
        "accuracy"
    ]
    assert abs(ours - float(theirs)) <= 0.05
