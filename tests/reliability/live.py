"""A real aggregator process (``fedsparsify serve``) and sites that drive it over HTTP.

The one harness for tests against a live server: the server is started with
:func:`fedsparsify.clients.launcher.start_aggregator` and can be killed with SIGKILL and
restarted on the same data directory and port. Federations on it are driven by the tests' one
harness, :class:`tests.api.conftest.Harness`, over an httpx client for the server's URL. Sites
hold real identities and the real CKKS key set (the dealer's, or one opened from its signed
envelope), and encrypt exactly as a site must (:func:`tests.sites.encrypt_for`: bound to the
round, pairwise-masked).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fedsparsify.clients.launcher import AggregatorProcess, free_port, start_aggregator
from fedsparsify.crypto import SecretContext, create_secret_context
from tests.api.conftest import Fed, Harness, Member
from tests.sites import Site, encrypt_for, expected_average

__all__ = [
    "ADMIN_TOKEN",
    "ATOL",
    "MASK",
    "Federation",
    "LiveServer",
    "Member",
    "Site",
    "UploadInBackground",
    "expected_average",
    "temporaries",
    "wait_for",
]

ADMIN_TOKEN = "fsa_reliability-admin"
#: Live federations bring their own key set (``Federation.create``); the harness needs none.
_NO_KEY_SET: SecretContext = None  # type: ignore[assignment]
#: The crypto layer's absolute precision for a weighted sum of |x| < 1 values (lean preset).
ATOL = 1e-6
MASK = "d" * 64


class LiveServer:
    """``fedsparsify serve`` on a fixed loopback port and data directory; kill -9 and restart.

    With ``database_url`` (PostgreSQL) several may share one ``data_dir``: give each a ``name``.
    """

    def __init__(
        self,
        root: Path,
        *,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        data_dir: Path | None = None,
        name: str = "aggregator",
    ) -> None:
        self.data_dir = data_dir or root / "data"
        self.database_url = database_url
        self.log_path = root / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.1", **(env or {})}
        self.starts = 0
        self.proc: AggregatorProcess = self._start()

    def _start(self) -> AggregatorProcess:
        self.starts += 1
        return start_aggregator(
            self.data_dir,
            admin_token=ADMIN_TOKEN,
            port=self.port,
            extra_env=self.env,
            database_url=self.database_url,
            log_path=self.log_path,
        )

    @property
    def pid(self) -> int:
        """The server process id (for RSS sampling)."""
        return self.proc.pid

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or an OOM kill."""
        self.proc.kill()

    def restart(self) -> None:
        """Start again on the same data directory and port."""
        self.proc.kill()
        self.proc = self._start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        self.proc.stop()

    def admin(self, timeout: float = 60) -> httpx.Client:
        """An httpx client holding the admin token."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=timeout
        )


@dataclass
class Federation:
    """A federation on a live server, driven by the tests' one harness
    (:class:`tests.api.conftest.Harness` over an httpx client for the server's URL). Its sites
    are the harness's members, each holding the key set it opened from its own envelope."""

    id: str
    enrollment_token: str
    sites: list[Member] = field(default_factory=list)
    fed: Fed | None = None

    def path(self, suffix: str = "") -> str:
        """``/v1/federations/{id}`` + suffix."""
        return f"/v1/federations/{self.id}{suffix}"

    @staticmethod
    @contextmanager
    def harness(server: LiveServer, timeout: float = 120) -> Iterator[Harness]:
        """The harness over an httpx client for ``server`` (its admin token)."""
        with httpx.Client(base_url=server.url, timeout=timeout) as http:
            yield Harness(http, None, _NO_KEY_SET, admin_token=ADMIN_TOKEN)

    @classmethod
    def create(
        cls, server: LiveServer, samples: Iterable[int], *, open_round: bool = True, **spec: Any
    ) -> Federation:
        """Admin creates it, every site registers, the dealer distributes a fresh key set, each
        site opens its envelope, round 0 opens."""
        samples = tuple(samples)
        body = {
            "name": f"reliability-{secrets.token_hex(4)}",  # names are unique per server
            "rounds": 2,
            "min_clients": len(samples),
            "quorum": max(1, len(samples) - 1),
            "round_timeout_s": 600,
            "enrollment": {},
            **spec,
        }
        with cls.harness(server) as h:
            fed = h.federation(
                samples, open_round=False, key_set=create_secret_context("lean"), **body
            )
            h.open_keys(fed)
            if open_round:
                r = h.client.post(fed.path("/rounds"), headers=h.admin)
                assert r.status_code == 201, r.text
        return cls(fed.id, fed.enrollment_token, list(fed.members), fed)

    def _fed(self) -> Fed:
        assert self.fed is not None
        return self.fed

    def round(self, server: LiveServer, index: int | str = "current") -> dict[str, Any]:
        """A round's status as the admin sees it."""
        with self.harness(server) as h:
            return h.round(self._fed(), index)

    def weight(self, server: LiveServer, site: Member, index: int) -> float:
        """The site's weight in the round's current attempt."""
        return float(self.round(server, index)["weights"][site.client_id])

    def encrypt(
        self,
        server: LiveServer,
        site: Member,
        values: np.ndarray,
        index: int | str = "current",
        *,
        weight: float | None = None,
        status: dict[str, Any] | None = None,
    ) -> bytes:
        """The site's encrypted update for the round's current attempt, under its own key set
        (its own weight unless ``weight`` is given; ``status``: the round as already fetched)."""
        assert site.key_set is not None
        status = status or self.round(server, index)
        return encrypt_for(
            site.key_set,
            site,
            values,
            float(status["weights"][site.client_id]) if weight is None else weight,
            status=status,
            federation_id=self.id,
            members=self.sites,
            mask_digest=MASK,
        )

    def upload(
        self, server: LiveServer, site: Member, index: int, body: bytes | Iterator[bytes]
    ) -> httpx.Response:
        """PUT an update (bytes, or an iterator streamed chunk by chunk)."""
        with self.harness(server) as h:
            return h.upload(self._fed(), index, site, body)  # type: ignore[arg-type]

    def wait_state(
        self, server: LiveServer, index: int, states: tuple[str, ...], timeout_s: float = 60
    ) -> dict[str, Any]:
        """Poll until round ``index`` is in one of ``states``."""
        with self.harness(server) as h:
            return h.wait_state(self._fed(), index, states, timeout_s)

    def decrypted_average(
        self, server: LiveServer, site: Member, index: int
    ) -> tuple[set[str], np.ndarray]:
        """Download round ``index``'s encrypted sum, decrypt it, divide by its weight."""
        with self.harness(server) as h:
            return h.decrypted_average(self._fed(), site, index)


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.0005) -> bool:
    stop = time.monotonic() + timeout_s
    while time.monotonic() < stop:
        if condition():
            return True
        time.sleep(poll_s)
    return False


def temporaries(server: LiveServer, prefix: str) -> list[str]:
    """Names of temporary files (of any process) that start with ``prefix``."""
    tmp = server.data_dir / "blobs" / "tmp"
    return [p.name for p in tmp.rglob("*") if p.is_file() and p.name.startswith(prefix)]


class UploadInBackground:
    """An upload on its own thread; its body may pause halfway until told to go on."""

    def __init__(
        self,
        fed: Federation,
        server: LiveServer,
        site_index: int,
        index: int,
        body: bytes,
        *,
        pause_halfway: bool = False,
    ) -> None:
        self.half_sent = threading.Event()
        self.resume = threading.Event()
        self.outcome: int | str = "pending"
        self.body = body
        self.pause = pause_halfway
        site = fed.sites[site_index]
        self.thread = threading.Thread(
            target=self._run, args=(fed, server, site, index), daemon=True
        )
        self.thread.start()

    def _chunks(self) -> Iterator[bytes]:
        half = len(self.body) // 2
        for start in range(0, half, 1 << 16):
            yield self.body[start : min(start + (1 << 16), half)]
        self.half_sent.set()
        self.resume.wait(60)
        yield self.body[half:]

    def _run(self, fed: Federation, server: LiveServer, site: Member, index: int) -> None:
        content = self._chunks() if self.pause else self.body
        try:
            self.outcome = fed.upload(server, site, index, content).status_code
        except httpx.TransportError as exc:
            self.outcome = type(exc).__name__

    def join(self) -> int | str:
        self.resume.set()
        self.thread.join(60)
        return self.outcome
