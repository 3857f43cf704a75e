"""Site processes started by the launcher (``fedsparsify client --ca``) over HTTPS.

Two sites of the digits data set run a one-round federation against ``serve --tls-cert``; a site
started without the CA stops with a one-line error instead of a stack trace.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedsparsify.clients.launcher import AggregatorProcess, confirm_peers, start_site
from fedsparsify.platform.data import make_digits_federation, save_site
from fedsparsify.platform.spec import FederationSpec, ModelSpec, TrainingSpec
from tests.security.pki import Pki

pytestmark = pytest.mark.e2e


def _spec() -> FederationSpec:
    return FederationSpec(
        name="tls-sites",
        rounds=1,
        min_clients=2,
        quorum=2,
        round_timeout_s=120,
        crypto_preset="lean",
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=16),
        training=TrainingSpec(local_epochs=1, batch_size=64, lr=0.05),
        seed=5,
    )


def test_site_processes_run_a_round_over_https(
    tls_server: AggregatorProcess, pki: Pki, tmp_path: Path
) -> None:
    data = make_digits_federation(2, partition="iid", seed=5)
    with tls_server.admin() as admin:
        created = admin.create_federation(_spec().model_dump(mode="json"))
        fid, join = created["id"], f"{created['id']}:{created['enrollment_token']}"
        peers = confirm_peers(
            {s.name: tmp_path / "state" / s.name for s in data.sites}, tmp_path / "peers.txt"
        )
        sites = []
        for site in data.sites:
            save_site(site, tmp_path / "data" / site.name)
            sites.append(
                start_site(
                    server=tls_server.url,
                    enrollment_token=join,
                    data_dir=tmp_path / "data" / site.name,
                    state_dir=tmp_path / "state" / site.name,
                    name=site.name,
                    log_dir=tmp_path / "logs",
                    ca=pki.ca,
                    peers=peers,
                )
            )
        try:
            deadline = time.monotonic() + 120
            while admin.get_federation(fid)["keys"]["envelopes_sealed"] < 1:
                assert time.monotonic() < deadline
                assert all(p.alive() for p in sites), [p.log_tail() for p in sites]
                time.sleep(0.2)
            admin.start_round(fid)
            for proc in sites:
                proc.popen.wait(timeout=120)
                assert proc.popen.returncode == 0, proc.log_tail()
        finally:
            for proc in sites:
                proc.stop()
        fed = admin.get_federation(fid)
    assert fed["state"] == "completed"
    assert len(fed["history"][0]["contributors"]) == 2


def test_a_site_without_the_ca_stops_with_a_clear_error(
    tls_server: AggregatorProcess, tmp_path: Path
) -> None:
    site = make_digits_federation(1, seed=1).sites[0]
    save_site(site, tmp_path / "data")
    proc = start_site(
        server=tls_server.url,
        enrollment_token="0" * 32 + ":fse_anything",
        data_dir=tmp_path / "data",
        state_dir=tmp_path / "state",
        name="no-ca",
        log_dir=tmp_path / "logs",
    )
    assert proc.popen.wait(timeout=60) == 1
    log = proc.log_path.read_text()
    assert "error:" in log and "does not verify" in log, log
    assert "Traceback" not in log
