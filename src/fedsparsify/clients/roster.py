"""Who a site trusts: the peers it confirmed out of band, and the roster the aggregator relays.

A peers file holds one confirmed site per line, ``name fingerprint`` (``#`` starts a comment)::

    # hospitals of the brain-age federation, confirmed by phone on 2026-11-30
    hospital-a  3f2a9c0d4b1e8f7a6c5d4e3f2a1b0c9d
    hospital-b  8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b

The aggregator's member list is only a claim: a site recomputes every member's fingerprint from
the public keys it is given and acts only with members whose fingerprint is confirmed (or with
every member when it runs with ``--trust-aggregator-roster``, loudly). Before it uploads, it checks
the round against the roster: every participant confirmed, the participant-set digest and the
weights what it computes itself from the members' keys and declared sample counts.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsparsify.crypto import PublicIdentity, is_fingerprint, participants_digest
from fedsparsify.errors import ConfigError, CryptoError, TrustError
from fedsparsify.platform.round_rules import WEIGHT_TOLERANCE, round_weights
from fedsparsify.platform.spec import FederationSpec

__all__ = ["Member", "Peers", "Roster", "peers_line"]

log = logging.getLogger(__name__)

_MAX_PEERS_BYTES = 1 << 20


def peers_line(name: str, fingerprint: str) -> str:
    """One line of a peers file."""
    return f"{name} {fingerprint}"


@dataclass(frozen=True)
class Peers:
    """Confirmed fingerprints and the names they were confirmed under."""

    names: Mapping[str, str]

    @classmethod
    def parse(cls, text: str, source: str = "peers file") -> Peers:
        """Parse ``name fingerprint`` lines; :class:`ConfigError` naming a bad line."""
        names: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            name, fingerprint = (parts[0], parts[1].lower()) if len(parts) == 2 else ("", "")
            if not is_fingerprint(fingerprint) or not name.strip():
                raise ConfigError(
                    f"{source} line {number}: expected 'name fingerprint' (32 hex digits), got "
                    f"{line[:80]!r}"
                )
            names[fingerprint] = name.strip()
        return cls(names)

    @classmethod
    def load(cls, path: Path) -> Peers:
        """Read a peers file."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the peers file {path}: {exc.strerror}") from exc
        if len(data) > _MAX_PEERS_BYTES:
            raise ConfigError(f"the peers file {path} is larger than 1 MiB")
        try:
            return cls.parse(data.decode("utf-8"), str(path))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"the peers file {path} is not UTF-8") from exc


@dataclass(frozen=True)
class Member:
    """One member as relayed by the aggregator, with the fingerprint this site computed."""

    id: str
    name: str
    num_samples: int
    is_dealer: bool
    has_envelope: bool
    removed: bool
    identity: PublicIdentity | None
    problem: str = ""

    @property
    def fingerprint(self) -> str:
        """Computed here from its keys ("" when its keys are missing or unusable)."""
        return self.identity.fingerprint if self.identity is not None else ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Member:
        """From one entry of ``GET .../clients``; keys that do not decode make it unusable."""
        identity: PublicIdentity | None = None
        problem = ""
        try:
            keys = [data.get("signing_key"), data.get("public_key"), data.get("mask_key")]
            if any(not isinstance(k, str) for k in keys):
                raise CryptoError("it registered no signing or mask key (release 0.1)")
            raw = [base64.b64decode(str(k), validate=True) for k in keys]
            identity = PublicIdentity(signing_key=raw[0], envelope_key=raw[1], mask_key=raw[2])
            identity.check()
        except (CryptoError, binascii.Error, ValueError) as exc:
            identity, problem = None, str(exc)
        samples = data.get("num_samples")
        return cls(
            id=str(data.get("id", ""))[:256],
            name=str(data.get("name", ""))[:128],
            num_samples=samples if isinstance(samples, int) and samples > 0 else 0,
            is_dealer=bool(data.get("is_dealer", False)),
            has_envelope=bool(data.get("has_envelope", False)),
            removed=bool(data.get("removed", False)),
            identity=identity,
            problem=problem,
        )

    def describe(self) -> str:
        """``name (fingerprint)`` for logs; user-supplied text escaped."""
        return f"{self.name!r} ({self.fingerprint or 'no usable keys: ' + self.problem})"


class Roster:
    """The aggregator's member list as this site judges it."""

    def __init__(
        self,
        members: Iterable[Member],
        *,
        own_id: str,
        peers: Peers | None,
        trust_all: bool = False,
    ) -> None:
        self.members = {m.id: m for m in members}
        self.own_id = own_id
        self.peers = peers
        self.trust_all = trust_all

    def confirmed(self, member: Member) -> bool:
        """Usable keys, not removed, and confirmed (or this site itself, or trust-all)."""
        if member.identity is None or member.removed:
            return False
        if member.id == self.own_id or self.trust_all:
            return True
        return self.peers is not None and member.fingerprint in self.peers.names

    def get(self, member_id: str) -> Member:
        """A member; :class:`TrustError` if the aggregator did not list it."""
        member = self.members.get(member_id)
        if member is None:
            raise TrustError(f"the aggregator names {member_id!r}, which its member list lacks")
        return member

    def confirmed_member(self, member_id: str, role: str) -> Member:
        """A member this site confirmed; :class:`TrustError` naming it otherwise."""
        member = self.get(member_id)
        if not self.confirmed(member):
            raise TrustError(
                f"the {role} {member.describe()} is not one of your confirmed peers: refusing"
            )
        return member

    def unconfirmed(self) -> list[Member]:
        """Members (not removed, not this site) whose fingerprint is not confirmed."""
        return [
            m
            for m in self.members.values()
            if not m.removed and m.id != self.own_id and not self.confirmed(m)
        ]

    def check_round(
        self,
        *,
        participants: Iterable[str],
        digest: str | None,
        weights: Mapping[str, float],
        spec: FederationSpec,
    ) -> dict[str, bytes]:
        """Check a round attempt before taking part; returns the participants' mask keys.

        :class:`TrustError` when a participant is not confirmed, the participant-set digest or
        the weights differ from what this site computes from the confirmed keys and declared
        sample counts.
        """
        chosen = [self.get(p) for p in participants]
        strangers = [m for m in chosen if not self.confirmed(m)]
        if strangers:
            raise TrustError(
                "the round includes member(s) you have not confirmed: "
                + ", ".join(m.describe() for m in strangers)
                + "; not taking part (confirm them out of band and add them to --peers, or ask "
                "the admin to remove them)"
            )
        keys = {m.id: m.identity.mask_key for m in chosen if m.identity is not None}
        if spec.pairwise_masks and digest != participants_digest(keys):
            raise TrustError(
                "the round's participant-set digest differs from the one computed from the "
                "confirmed mask keys: the aggregator shows different keys to different sites"
            )
        if weights:
            want = round_weights(
                {m.id: m.num_samples for m in chosen},
                weighting=spec.weighting,
                max_weight_share=spec.max_weight_share,
            )
            if set(want) != set(weights) or any(
                abs(float(weights[c]) - w) > WEIGHT_TOLERANCE * max(w, 1e-12)
                for c, w in want.items()
            ):
                raise TrustError(
                    f"the round's weights {dict(weights)} are not the spec's rule applied to "
                    f"the declared sample counts ({want})"
                )
        return keys

    def declared_samples(self, participants: Iterable[str]) -> str:
        """``name=count`` for logs: what every site checks its weight against."""
        return ", ".join(
            f"{self.members[p].name!r}={self.members[p].num_samples}"
            for p in participants
            if p in self.members
        )
