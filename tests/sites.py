"""Simulated hospitals for the tests that drive the REST API by hand (in process or live).

The transport-free pieces every such test needs, in one place: a site's identity and
registration body, the dealer's signed envelopes, opening one with its checks, and encrypting
an update for a round exactly as a site must (bound to the round's attempt and participant set,
pairwise-masked with the other participants when the spec asks for it).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    encrypt_update,
    open_envelope,
    seal_envelope,
)

__all__ = [
    "Site",
    "binding_of",
    "encrypt_for",
    "expected_average",
    "open_own_envelope",
    "registration",
    "signed_envelopes",
]


def registration(name: str, num_samples: int, identity: SiteIdentity) -> dict[str, Any]:
    """The body of ``POST .../clients`` with ``identity``'s three public keys."""
    pub = identity.public()
    return {
        "name": name,
        "public_key": base64.b64encode(pub.envelope_key).decode(),
        "signing_key": base64.b64encode(pub.signing_key).decode(),
        "mask_key": base64.b64encode(pub.mask_key).decode(),
        "num_samples": num_samples,
    }


@dataclass
class Site:
    """One simulated site: its identity, credentials and (once it has it) the key set."""

    name: str
    num_samples: int
    identity: SiteIdentity = field(default_factory=SiteIdentity.generate)
    client_id: str = ""
    token: str = ""
    is_dealer: bool = False
    key_set: SecretContext | None = None

    @property
    def private_key(self) -> bytes:
        """X25519 envelope private key."""
        return self.identity.envelope_private

    @property
    def public_key(self) -> bytes:
        """X25519 envelope public key."""
        return self.identity.public().envelope_key

    @property
    def auth(self) -> dict[str, str]:
        """Its bearer header."""
        return {"Authorization": f"Bearer {self.token}"}

    def registration(self) -> dict[str, Any]:
        """Its registration body."""
        return registration(self.name, self.num_samples, self.identity)

    def http(self, url: str, timeout: float = 120) -> httpx.Client:
        """An httpx client holding this site's bearer token."""
        return httpx.Client(base_url=url, headers=self.auth, timeout=timeout)


def signed_envelopes(
    dealer: Site, key_set: SecretContext, federation_id: str, members: Iterable[Site]
) -> dict[str, bytes]:
    """The dealer's signed envelope for each member (client id -> envelope)."""
    return {
        m.client_id: seal_envelope(
            key_set.secret_bytes(),
            recipient_public_key=m.public_key,
            federation_id=federation_id,
            recipient_id=m.client_id,
            dealer_id=dealer.client_id,
            key_set_digest=key_set.digest,
            signer=dealer.identity,
        )
        for m in members
        if m.client_id != dealer.client_id
    }


def open_own_envelope(
    site: Site, envelope: bytes, federation_id: str, dealer: Site
) -> SecretContext:
    """Open ``site``'s envelope after checking the dealer's signature and the digest."""
    secret, digest = open_envelope(
        envelope,
        recipient_private_key=site.private_key,
        federation_id=federation_id,
        recipient_id=site.client_id,
        dealer_signing_key=dealer.identity.public().signing_key,
    )
    key_set = SecretContext.from_secret_bytes(secret)
    assert key_set.digest == digest
    return key_set


def binding_of(status: Mapping[str, Any], federation_id: str) -> RoundBinding:
    """The round binding of a round's JSON status."""
    return RoundBinding(
        federation_id,
        int(status["index"]),
        int(status.get("attempt", 0)),
        status.get("participants_digest") or "",
    )


def encrypt_for(
    key_set: SecretContext,
    site: Site | Any,
    values: np.ndarray,
    weight: float,
    *,
    status: Mapping[str, Any],
    federation_id: str,
    members: Iterable[Any],
    mask_digest: str,
    channel: str = "values",
    contributor: str | None = None,
    binding: RoundBinding | None = None,
) -> bytes:
    """An encrypted update for the round ``status`` describes, as a site makes it.

    ``site`` and ``members`` need ``client_id`` (or ``id``) and ``identity``. Masks are added
    when the round says ``pairwise_masks``, ``site`` is one of its participants and the key set
    is encrypted (a test may encrypt under another preset to see it refused).
    """
    own = _id(site)
    binding = binding or binding_of(status, federation_id)
    masker = None
    participants = set(status["participants"])
    if status.get("pairwise_masks") and own in participants and key_set.preset.encrypted:
        keys = {_id(m): m.identity.public().mask_key for m in members if _id(m) in participants}
        masker = PairwiseMasker(
            own_id=own,
            own_mask_private=site.identity.mask_private,
            mask_keys=keys,
            binding=binding,
            channel=channel,
        )
    return b"".join(
        encrypt_update(
            key_set,
            values,
            weight=weight,
            mask_digest=mask_digest,
            contributor=own if contributor is None else contributor,
            binding=binding,
            channel=channel,
            masker=masker,
        )
    )


def _id(member: Any) -> str:
    return str(getattr(member, "client_id", None) or member.id)


def expected_average(values: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The independent answer: ``np.average`` in float64."""
    return np.average(np.stack([v.astype(np.float64) for v in values]), axis=0, weights=weights)
