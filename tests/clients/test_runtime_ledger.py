"""A site killed between encrypting its upload and sending it resumes without reusing a mask.

Re-encrypting the same update under the same attempt's masks would give the aggregator, with a
colluding key holder, two encryptions of one masked value: harmless. Retraining after a restart
could give a *different* update under the same masks, and the difference of two such uploads
is the difference of the updates in clear. So a site keeps the exact bytes it is about to send
in its state directory and, after a restart, sends those bytes and nothing new.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.clients.launcher import confirm_peers
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.clients.runtime import ClientRuntime
from fedsparsify.platform.data import load_site, make_digits_federation, save_site
from tests.reliability.live import ADMIN_TOKEN, LiveServer

pytestmark = pytest.mark.e2e


class Killed(Exception):
    """Stands for SIGKILL at the worst moment: the upload is encrypted and kept, not sent."""


def test_a_restarted_site_resends_the_bytes_it_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_digits_federation(2, partition="iid", seed=6)
    names = [s.name for s in data.sites]
    for site in data.sites:
        save_site(site, tmp_path / "data" / site.name)
    peers = confirm_peers({n: tmp_path / "state" / n for n in names}, tmp_path / "peers.txt")
    server = LiveServer(tmp_path)
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as admin:
            created = admin.post(
                "/v1/federations",
                json={
                    "name": "ledger",
                    "rounds": 1,
                    "min_clients": 2,
                    "quorum": 2,
                    "method": "fedavg",
                    "schedule": {"kind": "none"},
                    "model": {"kind": "mlp", "input_shape": [1, 8, 8], "hidden": 8},
                },
            ).json()
        fid = created["id"]

        def runtime(name: str) -> ClientRuntime:
            return ClientRuntime(
                server=server.url,
                federation_id=fid,
                enrollment_token=created["enrollment_token"],
                data_loader=lambda shape: load_site(tmp_path / "data" / name, input_shape=shape),
                state_dir=tmp_path / "state" / name,
                name=name,
                poll_s=0.05,
                peers=peers,
            )

        encoded: list[str] = []
        real_encode = UpdateCodec.encode

        def counting(self: UpdateCodec, *args: Any, **kwargs: Any) -> Any:
            encoded.append(self.contributor)
            return real_encode(self, *args, **kwargs)

        monkeypatch.setattr(UpdateCodec, "encode", counting)
        sent: dict[str, str] = {}
        real_upload = AggregatorClient.upload
        victim_state = tmp_path / "state" / names[1]

        def upload(self: AggregatorClient, fid: str, index: int, channel: str, src: Path) -> Any:
            if victim_state in src.parents:
                digest = hashlib.sha256(src.read_bytes()).hexdigest()
                if "first" not in sent:
                    sent["first"] = digest
                    raise Killed
                sent["resent"] = digest
            return real_upload(self, fid, index, channel, src)

        monkeypatch.setattr(AggregatorClient, "upload", upload)
        dealer = runtime(names[0])
        errors: list[BaseException] = []

        def run_dealer() -> None:
            try:
                dealer.run(max_wait_s=120)
            except BaseException as exc:  # reported below
                errors.append(exc)

        def open_round_0() -> None:
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
            ) as admin:
                stop = time.monotonic() + 120
                while time.monotonic() < stop:
                    keys = admin.get(f"/v1/federations/{fid}").json()["keys"]
                    if keys["envelopes_sealed"] >= 1:
                        admin.post(f"/v1/federations/{fid}/rounds")
                        return
                    time.sleep(0.1)

        thread = threading.Thread(target=run_dealer, daemon=True)
        thread.start()
        threading.Thread(target=open_round_0, daemon=True).start()
        victim = runtime(names[1])
        victim_id = victim.creds.client_id
        with pytest.raises(Killed):
            victim.run(max_wait_s=120)
        assert encoded.count(victim_id) == 1
        restarted = runtime(names[1])  # same state directory: same identity, same ledger
        restarted.run(max_wait_s=120)
        thread.join(120)
        assert not errors, errors
        assert encoded.count(victim_id) == 1, "the restarted site encrypted its upload again"
        assert sent["resent"] == sent["first"], "the restarted site sent other bytes"
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as admin:
            fed = admin.get(f"/v1/federations/{fid}").json()
        assert fed["state"] == "completed"
        assert sorted(fed["history"][0]["contributors"]) == sorted(
            [dealer.creds.client_id, victim_id]
        )
    finally:
        server.stop()
