"""Shared key sets and streams for the crypto tests (made once per session)."""

from __future__ import annotations

import dataclasses

import pytest

from fedsparsify.crypto import PRESETS, PublicContext, SecretContext, create_secret_context
from tests.crypto._helpers import N_STREAM, SMALL, stream, values


@pytest.fixture(scope="session")
def lean() -> SecretContext:
    return create_secret_context("lean")


@pytest.fixture(scope="session")
def lean_other() -> SecretContext:
    """Same parameters, another key set."""
    return create_secret_context("lean")


@pytest.fixture(scope="session")
def lean_public_key() -> SecretContext:
    """Lean parameters with public-key (unseeded) encryption."""
    return create_secret_context(dataclasses.replace(PRESETS["lean"], seeded=False))


@pytest.fixture(scope="session")
def peer() -> SecretContext:
    return create_secret_context("peer-default")


@pytest.fixture(scope="session")
def plain() -> SecretContext:
    return create_secret_context("plaintext")


@pytest.fixture(scope="session")
def small() -> SecretContext:
    return create_secret_context(SMALL)


@pytest.fixture(scope="session")
def lean_pub(lean: SecretContext) -> PublicContext:
    return PublicContext.from_bytes(lean.public_bytes())


@pytest.fixture(scope="session")
def lean_stream(lean: SecretContext) -> bytes:
    return stream(lean, values(N_STREAM), contributor="site-a")
