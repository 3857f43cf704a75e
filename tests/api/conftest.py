"""Fixtures for the aggregator's tests: an app on a temporary data dir, real keys, helpers."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from fedsparsify.api import Settings, create_app
from fedsparsify.api.db import RoundRow
from fedsparsify.api.services.round_store import sum_key
from fedsparsify.api.state import AppState
from fedsparsify.crypto import (
    RoundBinding,
    SecretContext,
    SiteIdentity,
    create_secret_context,
    decrypt_sum,
    open_envelope,
    seal_envelope,
)
from tests.sites import Site, encrypt_for, registration

# Starlette suggests another HTTP library for its TestClient; httpx is the one this project uses.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

ADMIN_TOKEN = "fsa_test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Small vectors: two ciphertexts of the lean preset (4096 values each).
N_VALUES = 5000
MASK = "a" * 64


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Member(Site):
    """A registered client as a test holds it: a :class:`tests.sites.Site` of a federation."""

    federation_id: str = ""

    @property
    def id(self) -> str:
        """Its client id."""
        return self.client_id


@dataclass
class Fed:
    """A federation set up by :meth:`Harness.federation`."""

    id: str
    enrollment_token: str
    members: list[Member] = field(default_factory=list)

    def path(self, suffix: str = "") -> str:
        """``/v1/federations/{id}`` + suffix."""
        return f"/v1/federations/{self.id}{suffix}"


def spec(**overrides: Any) -> dict[str, Any]:
    """A small federation spec (rounds long enough never to expire on their own)."""
    base: dict[str, Any] = {
        "name": "test-fed",
        "rounds": 2,
        "min_clients": 3,
        "quorum": 2,
        "round_timeout_s": 3600.0,
        "auto_advance": True,
        "crypto_preset": "lean",
        "method": "fedsparsify-global",
        "model": {"kind": "mlp", "input_shape": [8]},
        # tests register more sites than min_clients; the join code's limits have their own tests
        "enrollment": {"max_uses": 100},
    }
    base.update(overrides)
    return base


class Harness:
    """Drives one app through its REST API with real keys and ciphertexts: in process (a
    ``TestClient`` and the app), or a real server in another process (an ``httpx.Client`` on
    its address, no app: then only what goes through the REST API)."""

    def __init__(
        self,
        client: httpx.Client,
        app: FastAPI | None,
        key_set: SecretContext,
        feds: dict[str, Fed] | None = None,
        *,
        admin_token: str = ADMIN_TOKEN,
    ) -> None:
        self.client = client
        self._app = app
        self.admin = bearer(admin_token)
        self.key_set = key_set
        #: Federations this harness (or the one before a restart) created, by id.
        self.feds: dict[str, Fed] = feds if feds is not None else {}

    @property
    def app(self) -> FastAPI:
        """The app, when it runs in this process."""
        if self._app is None:
            raise RuntimeError("this harness drives a server in another process")
        return self._app

    @property
    def state(self) -> AppState:
        """The app's state (database, blobs, metrics)."""
        state: AppState = self.app.state.fedsparsify
        return state

    def create(self, **overrides: Any) -> Fed:
        """Create a federation as the admin (named ``test-fed-N`` unless ``name`` is given:
        federation names are unique)."""
        overrides.setdefault("name", f"test-fed-{len(self.feds) + 1}")
        r = self.client.post("/v1/federations", json=spec(**overrides), headers=self.admin)
        assert r.status_code == 201, r.text
        body = r.json()
        fed = Fed(id=body["id"], enrollment_token=body["enrollment_token"])
        self.feds[fed.id] = fed
        return fed

    def register(self, fed: Fed, name: str, num_samples: int) -> Member:
        """Register a client with a fresh identity (signing, envelope and mask keys)."""
        identity = SiteIdentity.generate()
        r = self.client.post(
            fed.path("/clients"),
            json=registration(name, num_samples, identity),
            headers={"X-Enrollment-Token": fed.enrollment_token},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        member = Member(
            name=name,
            num_samples=num_samples,
            identity=identity,
            client_id=body["client_id"],
            token=body["token"],
            is_dealer=body["is_dealer"],
            federation_id=fed.id,
        )
        fed.members.append(member)
        return member

    def distribute_keys(self, fed: Fed, key_set: SecretContext | None = None) -> None:
        """The dealer uploads the public context and seals an envelope for every other member
        (the dealer then holds ``key_set``; the others open theirs with :meth:`open_keys`)."""
        key_set = key_set or self.key_set
        dealer = next(m for m in fed.members if m.is_dealer)
        dealer.key_set = key_set
        r = self.client.put(
            fed.path("/keys/context"), content=key_set.public_bytes(), headers=dealer.auth
        )
        assert r.status_code in (200, 201), r.text
        for m in fed.members:
            if m.is_dealer:
                continue
            envelope = seal_envelope(
                key_set.secret_bytes(),
                recipient_public_key=m.public_key,
                federation_id=fed.id,
                recipient_id=m.id,
                dealer_id=dealer.id,
                key_set_digest=key_set.digest,
                signer=dealer.identity,
            )
            r = self.client.put(
                fed.path(f"/keys/envelopes/{m.id}"), content=envelope, headers=dealer.auth
            )
            assert r.status_code in (200, 201), r.text

    def federation(
        self,
        samples: tuple[int, ...] = (10, 20, 30),
        *,
        open_round: bool = True,
        key_set: SecretContext | None = None,
        **overrides: Any,
    ) -> Fed:
        """Create, register ``len(samples)`` clients, distribute keys, open round 0."""
        fed = self.create(**overrides)
        for i, n in enumerate(samples):
            self.register(fed, f"site-{i}", n)
        self.distribute_keys(fed, key_set)
        if open_round:
            r = self.client.post(fed.path("/rounds"), headers=self.admin)
            assert r.status_code == 201, r.text
        return fed

    def open_keys(self, fed: Fed) -> None:
        """Every other member downloads its envelope and opens it (checking the dealer's
        signature and the key-set digest): each member then holds its own key set."""
        for m in fed.members:
            if not m.is_dealer:
                m.key_set = self.secret_of(fed, m)

    def wait_state(
        self, fed: Fed, index: int, states: tuple[str, ...], timeout_s: float = 60
    ) -> dict[str, Any]:
        """Poll until round ``index`` is in one of ``states``."""
        stop = time.monotonic() + timeout_s
        while True:
            rnd = self.round(fed, index)
            if rnd["state"] in states:
                return rnd
            assert time.monotonic() < stop, f"round {index} still {rnd['state']}"
            time.sleep(0.05)

    def decrypted_average(
        self, fed: Fed, member: Member, index: int, channel: str = "values"
    ) -> tuple[set[str], np.ndarray]:
        """Stream round ``index``'s encrypted sum down as ``member``, decrypt it with the
        member's own key set and divide by its weight: (contributors, average)."""
        key_set = member.key_set or self.secret_of(fed, member)
        path = fed.path(f"/rounds/{index}/aggregate/{channel}")
        with self.client.stream("GET", path, headers=member.auth) as r:
            assert r.status_code == 200, r.read()
            header, total = decrypt_sum(key_set, r.iter_bytes())
        return set(header.contributors), total / header.weight

    def round(self, fed: Fed, index: int | str = "current") -> dict[str, Any]:
        """A round's status as the admin sees it."""
        r = self.client.get(fed.path(f"/rounds/{index}"), headers=self.admin)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def weight(self, fed: Fed, member: Member, index: int = 0) -> float:
        """The member's weight in a round (its capped share: see ``round_weights``)."""
        return float(self.round(fed, index)["weights"][member.id])

    def encrypt(
        self,
        member: Member,
        values: np.ndarray,
        weight: float,
        *,
        mask: str = MASK,
        key_set: SecretContext | None = None,
        contributor: str | None = None,
        index: int | str = "current",
        channel: str = "values",
        binding: RoundBinding | None = None,
    ) -> bytes:
        """A real encrypted update for the member's round ``index`` (the latest by default):
        bound to its federation, round, attempt and participant set, and pairwise-masked with
        the round's participants when the federation's spec asks for masks."""
        fed = self.feds[member.federation_id]
        return encrypt_for(
            key_set or self.key_set,
            member,
            values,
            weight,
            status=self.round(fed, index),
            federation_id=fed.id,
            members=fed.members,
            mask_digest=mask,
            channel=channel,
            contributor=contributor,
            binding=binding,
        )

    def upload(
        self, fed: Fed, index: int, member: Member, body: bytes, channel: str = "values"
    ) -> Any:
        """PUT an update."""
        return self.client.put(
            fed.path(f"/rounds/{index}/updates/{channel}"),
            content=body,
            headers={**member.auth, "Content-Type": "application/octet-stream"},
        )

    def report(self, fed: Fed, index: int, member: Member, metrics: dict[str, float]) -> Any:
        """POST a member's plaintext metrics for a round."""
        return self.client.post(
            fed.path(f"/rounds/{index}/metrics"), json={"metrics": metrics}, headers=member.auth
        )

    def sum_bytes(self, fed: Fed, index: int, channel: str = "values") -> bytes | None:
        """The round's stored running sum, or None."""
        path = self.state.blobs.path(sum_key(fed.id, index, channel))
        return path.read_bytes() if path.exists() else None

    def expire(self, fed: Fed, index: int) -> None:
        """Move a round's deadline into the past and run the deadline check."""
        with self.state.db.session() as session:
            session.execute(
                update(RoundRow)
                .where(RoundRow.federation_id == fed.id, RoundRow.index == index)
                .values(deadline=0.0)
            )
            session.commit()
        self.app.state.rounds.check_deadlines()

    def aggregate(self, fed: Fed, index: int, member: Member, channel: str = "values") -> bytes:
        """Download a closed round's aggregate."""
        r = self.client.get(fed.path(f"/rounds/{index}/aggregate/{channel}"), headers=member.auth)
        assert r.status_code == 200, r.text
        return r.content

    def secret_of(self, fed: Fed, member: Member) -> SecretContext:
        """The key set a member gets from its own envelope (the dealer holds it already)."""
        if member.is_dealer:
            return self.key_set
        r = self.client.get(fed.path("/keys/envelope"), headers=member.auth)
        assert r.status_code == 200, r.text
        dealer = next(m for m in fed.members if m.is_dealer)
        secret, _digest = open_envelope(
            r.content,
            recipient_private_key=member.private_key,
            federation_id=fed.id,
            recipient_id=member.id,
            dealer_signing_key=dealer.identity.public().signing_key,
        )
        return SecretContext.from_secret_bytes(secret)


def vectors(count: int, n: int = N_VALUES, seed: int = 0) -> list[np.ndarray]:
    """``count`` random float32 update vectors in the lean preset's range."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.05, n).astype(np.float32) for _ in range(count)]


@pytest.fixture(scope="session")
def key_set() -> SecretContext:
    """One real lean key set for the whole session (creating one takes ~50 ms)."""
    return create_secret_context("lean")


@pytest.fixture(scope="session")
def other_key_set() -> SecretContext:
    """Another lean key set (for wrong-context uploads)."""
    return create_secret_context("lean")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data directory."""
    return tmp_path / "data"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests built on ``settings`` run on SQLite (embedded, the default); those marked
    ``both_databases`` (the modules where the database matters: rounds, uploads, recovery,
    liveness, federations, enrolment, attempts) also on a fresh PostgreSQL database."""
    if "database_url" not in metafunc.fixturenames:
        return
    both = metafunc.definition.get_closest_marker("both_databases") is not None
    metafunc.parametrize(
        "database_url", ["sqlite", "postgresql"] if both else ["sqlite"], indirect=True
    )


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data directory) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def settings(data_dir: Path, database_url: str | None) -> Settings:
    """Settings with a known admin token and a fast deadline checker."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        deadline_check_interval_s=0.05,
        max_envelope_bytes=1 << 20,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The aggregator app."""
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A test client with the app's lifespan running (deadline checker on)."""
    with TestClient(app) as c:
        yield c


@pytest.fixture
def h(client: TestClient, app: FastAPI, key_set: SecretContext) -> Harness:
    """The harness."""
    return Harness(client, app, key_set)
