"""Fixtures of the security tests: a generated PKI and a real aggregator serving HTTPS."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsparsify.clients.launcher import AggregatorProcess, start_aggregator
from tests.security.pki import Pki, make_pki

#: A fresh admin token per session, so that a scan for it cannot match by accident.
ADMIN_TOKEN = "fsa_" + secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The CA and server certificate the aggregator is started with."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An unrelated CA (and certificate): trusting it must not make our server trusted."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), label="other")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[AggregatorProcess]:
    """``fedsparsify serve --tls-cert --tls-key`` on a loopback port, debug logging on."""
    root = tmp_path_factory.mktemp("tls-server")
    server = start_aggregator(
        root / "data",
        admin_token=ADMIN_TOKEN,
        tls_cert=pki.cert,
        tls_key=pki.key,
        ca=pki.ca,
        log_level="debug",
        extra_env={"FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.1"},
    )
    with server:
        yield server


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Scratch space of the sites (update and aggregate files)."""
    return tmp_path / "work"
