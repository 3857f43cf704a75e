"""Trust, tried as an attacker: real ``fedsparsify serve`` and ``fedsparsify client`` processes.

The operator holds the join code and the aggregator's storage, so each test plays a malicious
operator: it registers a "site" of its own and makes the aggregator list it as a key holder, it
feeds members a hostile key, it swaps the public context, it forges a key envelope. Honest sites
started with ``--peers`` must refuse each time with a clear message, and the dealer must keep
running.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, update
from sqlalchemy import insert as insert_into

from fedsparsify.api.db import ClientRow, FederationRow
from fedsparsify.api.services.keys import context_key, envelope_key
from fedsparsify.clients.launcher import (
    AggregatorProcess,
    SiteProcess,
    confirm_peers,
    start_aggregator,
    start_site,
)
from fedsparsify.clients.state import StateDir
from fedsparsify.crypto import SiteIdentity, create_secret_context, seal_envelope
from fedsparsify.platform.data import make_digits_federation, save_site
from fedsparsify.platform.spec import (
    EnrollmentSpec,
    FederationSpec,
    ModelSpec,
    ScheduleSpec,
    TrainingSpec,
)
from tests.sites import registration

pytestmark = pytest.mark.e2e

NAMES = ("site-0", "site-1")


@dataclass
class Scene:
    """An aggregator, a federation and everything needed to start its two honest sites."""

    root: Path
    server: AggregatorProcess
    admin: httpx.Client
    federation_id: str
    join_code: str

    @property
    def token(self) -> str:
        """The join code's token."""
        return self.join_code.split(":", 1)[1]

    def path(self, suffix: str = "") -> str:
        return f"/v1/federations/{self.federation_id}{suffix}"

    def state(self, name: str) -> Path:
        return self.root / "state" / name

    def site(self, name: str, peers: Path) -> SiteProcess:
        return start_site(
            server=self.server.url,
            enrollment_token=self.join_code,
            data_dir=self.root / "data" / name,
            state_dir=self.state(name),
            name=name,
            log_dir=self.root / "logs",
            peers=peers,
        )

    def peers(self, *names: str) -> Path:
        path = self.root / f"peers-{'-'.join(names)}.txt"
        return confirm_peers({n: self.state(n) for n in names}, path)

    def fed(self) -> dict[str, Any]:
        body: dict[str, Any] = self.admin.get(self.path()).json()
        return body

    def database(self, change: Callable[[Any], None]) -> None:
        """Write the aggregator's database directly, as its operator can."""
        engine = create_engine(f"sqlite:///{self.server.data_dir / 'fedsparsify.db'}")
        with engine.begin() as conn:
            change(conn)
        engine.dispose()

    def blob(self, key: str) -> Path:
        return self.server.data_dir / "blobs" / key


def wait(predicate: Callable[[], bool], what: str, procs: list[SiteProcess], s: float = 90) -> None:
    stop = time.monotonic() + s
    while not predicate():
        for proc in procs:
            assert proc.alive() or proc.popen.returncode == 0, f"{proc.name}:\n{proc.log_tail()}"
        assert time.monotonic() < stop, f"timed out waiting for {what}"
        time.sleep(0.2)


def log_of(proc: SiteProcess) -> str:
    return proc.log_path.read_text(errors="replace")


def refused(proc: SiteProcess) -> bool:
    return "not taking part" in log_of(proc)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    data = make_digits_federation(2, partition="iid", seed=2)
    for site, name in zip(data.sites, NAMES, strict=True):
        save_site(site, tmp_path / "data" / name)
    spec = FederationSpec(
        name="trust",
        rounds=2,
        min_clients=2,
        quorum=2,
        round_timeout_s=15,
        crypto_preset="lean",
        method="fedavg",
        schedule=ScheduleSpec(kind="none"),
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=8),
        training=TrainingSpec(local_epochs=1, batch_size=64, lr=0.05),
        enrollment=EnrollmentSpec(max_uses=6),
    )
    token = secrets.token_urlsafe(16)
    env = {"FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.2"}
    with (
        start_aggregator(tmp_path / "agg", admin_token=token, extra_env=env) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as admin,
    ):
        created = admin.post("/v1/federations", json=spec.model_dump(mode="json")).json()
        yield Scene(
            tmp_path, server, admin, created["id"], f"{created['id']}:{created['enrollment_token']}"
        )


def _stop(procs: list[SiteProcess]) -> None:
    for proc in procs:
        proc.stop()


def test_the_operators_own_site_gets_no_key_and_no_honest_site_rounds_with_it(
    scene: Scene,
) -> None:
    peers = scene.peers(*NAMES)
    procs = [scene.site(name, peers) for name in NAMES]
    try:
        wait(lambda: len(scene.fed()["participants"]) == 2, "both sites to register", procs)
        # The operator registers a "site" of its own with the join code it holds.
        intruder = SiteIdentity.generate()
        r = httpx.post(
            f"{scene.server.url}{scene.path('/clients')}",
            json=registration("operator-site", 500, intruder),
            headers={"X-Enrollment-Token": scene.token},
        )
        assert r.status_code == 201, r.text
        intruder_id = r.json()["client_id"]
        fingerprint = intruder.public().fingerprint
        wait(
            lambda: scene.fed()["keys"]["envelopes_sealed"] >= 1,
            "the honest member's envelope",
            procs,
        )
        dealer = next(p for p in procs if "dealer: True" in log_of(p))
        wait(
            lambda: "not sealing the key for 'operator-site'" in log_of(dealer),
            "the dealer's refusal",
            procs,
        )
        fed = scene.fed()
        assert intruder_id in fed["keys"]["awaiting_envelope"]
        assert not scene.blob(envelope_key(scene.federation_id, intruder_id)).exists()
        # The operator makes its aggregator list the intruder as a key holder anyway, so that
        # it is a participant of round 0 (whose masks it would then share).
        scene.database(
            lambda c: c.execute(
                update(ClientRow).where(ClientRow.id == intruder_id).values(envelope_bytes=1)
            )
        )
        r = scene.admin.post(scene.path("/rounds"))
        assert r.status_code == 201 and intruder_id in r.json()["participants"], r.text
        for proc in procs:
            wait(partial(refused, proc), f"{proc.name}'s refusal", procs)
            refusal = next(line for line in log_of(proc).splitlines() if "not taking part" in line)
            assert "have not confirmed" in refusal and fingerprint in refusal, refusal
        assert scene.admin.get(scene.path("/rounds/0")).json()["uploads"]["values"] == []
        # The admin removes it: round 0 fails at its deadline, round 1 runs without it.
        assert scene.admin.delete(scene.path(f"/clients/{intruder_id}")).status_code == 200
        for proc in procs:
            proc.popen.wait(timeout=120)
            assert proc.popen.returncode == 0, proc.log_tail()
    finally:
        _stop(procs)
    fed = scene.fed()
    assert [h["state"] for h in fed["history"]] == ["failed", "closed"]
    assert intruder_id not in fed["history"][1]["participants"]
    assert fed["state"] == "completed"


def test_an_unconfirmed_dealer_is_refused_at_once(scene: Scene) -> None:
    """Whoever registers first deals the keys. When that is the operator's own "site", honest
    sites do not wait for a key they would never accept: they stop and say why."""
    r = httpx.post(
        f"{scene.server.url}{scene.path('/clients')}",
        json=registration("operator-site", 500, SiteIdentity.generate()),
        headers={"X-Enrollment-Token": scene.token},
    )
    assert r.status_code == 201 and r.json()["is_dealer"]
    member = scene.site(NAMES[1], scene.peers(*NAMES))
    try:
        assert member.popen.wait(timeout=120) == 2, member.log_tail()
        log = log_of(member)
        assert "'operator-site'" in log and "as the key dealer" in log, log
    finally:
        member.stop()


def test_a_hostile_member_key_does_not_stop_the_dealer(scene: Scene) -> None:
    """The aggregator lists a member whose keys are all zeros (registration would refuse it, so
    the operator writes it into its database): the dealer logs it, skips it, keeps running."""
    peers = scene.peers(*NAMES)
    dealer = scene.site(NAMES[0], peers)
    procs = [dealer]
    try:
        wait(lambda: scene.fed()["keys"]["context_uploaded"], "the dealer's public context", procs)

        def insert(conn: Any) -> None:
            conn.execute(
                insert_into(ClientRow).values(
                    id="f" * 32,
                    federation_id=scene.federation_id,
                    name="zero-keys",
                    public_key=bytes(32),
                    signing_key=bytes(32),
                    mask_key=bytes(32),
                    fingerprint="0" * 32,
                    num_samples=5,
                    token_hash=secrets.token_hex(32),
                    is_dealer=False,
                    created_at=time.time(),
                )
            )

        scene.database(insert)
        procs.append(scene.site(NAMES[1], peers))
        wait(lambda: scene.fed()["keys"]["envelopes_sealed"] >= 1, "the honest envelope", procs)
        wait(lambda: "'zero-keys'" in log_of(dealer), "the dealer to log the member", procs)
        assert dealer.alive()
        assert "not sealing the key for 'zero-keys'" in log_of(dealer)
    finally:
        _stop(procs)


def test_a_swapped_public_context_is_refused(scene: Scene) -> None:
    peers = scene.peers(*NAMES)
    dealer = scene.site(NAMES[0], peers)
    procs = [dealer]
    try:
        wait(lambda: scene.fed()["keys"]["context_uploaded"], "the dealer's public context", procs)
        # The operator replaces the stored public context with one of a key set it made.
        theirs = create_secret_context("lean")
        scene.blob(context_key(scene.federation_id)).write_bytes(theirs.public_bytes())
        scene.database(
            lambda c: c.execute(
                update(FederationRow)
                .where(FederationRow.id == scene.federation_id)
                .values(context_digest=theirs.digest)
            )
        )
        member = scene.site(NAMES[1], peers)
        procs.append(member)
        assert member.popen.wait(timeout=120) == 2, member.log_tail()
        log = log_of(member)
        assert "refused: the aggregator serves public context" in log, log
        assert "Traceback" not in log
        assert StateDir(scene.state(NAMES[1])).secret_context is None  # nothing kept
    finally:
        _stop(procs)


def test_a_forged_envelope_is_refused(scene: Scene) -> None:
    """The dealer has not confirmed site-1 (its peers file lists only itself), so it seals
    nothing for it; the operator stores an envelope of its own key set for site-1, claiming to
    be the dealer. site-1 confirmed the dealer: the signature does not verify, it refuses."""
    dealer = scene.site(NAMES[0], scene.peers(NAMES[0]))
    procs = [dealer]
    try:
        wait(lambda: scene.fed()["keys"]["context_uploaded"], "the dealer's public context", procs)
        scene.peers(*NAMES)  # creates site-1's identity; site-1 confirms both
        member = scene.site(NAMES[1], scene.root / f"peers-{'-'.join(NAMES)}.txt")
        procs.append(member)
        wait(lambda: len(scene.fed()["participants"]) == 2, "site-1 to register", procs)
        members = scene.admin.get(scene.path("/clients")).json()
        dealer_id = next(m["id"] for m in members if m["is_dealer"])
        member_id = next(m["id"] for m in members if not m["is_dealer"])
        theirs = create_secret_context("lean")
        forged = seal_envelope(
            theirs.secret_bytes(),
            recipient_public_key=StateDir(scene.state(NAMES[1])).identity().public().envelope_key,
            federation_id=scene.federation_id,
            recipient_id=member_id,
            dealer_id=dealer_id,
            key_set_digest=theirs.digest,
            signer=SiteIdentity.generate(),  # the operator's key, not the dealer's
        )
        target = scene.blob(envelope_key(scene.federation_id, member_id))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(forged)
        scene.database(
            lambda c: c.execute(
                update(ClientRow)
                .where(ClientRow.id == member_id)
                .values(envelope_bytes=len(forged))
            )
        )
        assert member.popen.wait(timeout=120) == 2, member.log_tail()
        log = log_of(member)
        assert "refused:" in log and "signature does not verify" in log, log
        assert StateDir(scene.state(NAMES[1])).secret_context is None
        assert dealer.alive()
    finally:
        _stop(procs)


def test_without_peers_a_site_stops_after_registering_and_says_what_to_confirm(
    scene: Scene,
) -> None:
    proc = start_site(
        server=scene.server.url,
        enrollment_token=scene.join_code,
        data_dir=scene.root / "data" / NAMES[0],
        state_dir=scene.state(NAMES[0]),
        name=NAMES[0],
        log_dir=scene.root / "logs",
    )
    try:
        assert proc.popen.wait(timeout=120) == 2, proc.log_tail()
    finally:
        proc.stop()
    log = log_of(proc)
    own = StateDir(scene.state(NAMES[0])).identity().public().fingerprint
    assert "will not go on without confirmed peers" in log and f"{NAMES[0]} {own}" in log, log
    assert len(scene.fed()["participants"]) == 1  # it registered, then stopped
