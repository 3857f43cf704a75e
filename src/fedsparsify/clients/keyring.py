"""A site's CKKS key set: made by the dealer, sealed for confirmed members, opened after checks.

The dealer (the first site to register) creates the key set, uploads its public part, and seals
the secret context for each member it confirmed, signing every envelope with its Ed25519 key
(bound to federation, recipient and key-set digest). A member skipped because it is not
confirmed, or because its keys are unusable, is logged once and never crashes the dealer.

Any other site opens its envelope only after checking that the signer is a member it confirmed,
then that the key set inside has the signed digest, and that the public context the aggregator
serves has it too: an aggregator that swaps the envelope or the context is refused with a
:class:`~fedsparsify.errors.TrustError` or :class:`~fedsparsify.errors.EnvelopeError`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.clients.roster import Roster
from fedsparsify.clients.state import Credentials, StateDir
from fedsparsify.crypto import (
    SecretContext,
    SiteIdentity,
    create_secret_context,
    envelope_dealer,
    open_envelope,
    seal_envelope,
)
from fedsparsify.errors import ConflictError, CryptoError, TrustError

__all__ = ["KeyRing"]

log = logging.getLogger(__name__)


class KeyRing:
    """The key set of one site in one federation."""

    def __init__(
        self,
        *,
        api: AggregatorClient,
        state: StateDir,
        identity: SiteIdentity,
        creds: Credentials,
        preset: str,
        poll_s: float,
    ) -> None:
        self.api = api
        self.state = state
        self.identity = identity
        self.creds = creds
        self.preset = preset
        self.poll_s = poll_s
        self._skipped: set[str] = set()
        self._warned: set[str] = set()

    @property
    def federation_id(self) -> str:
        """The federation."""
        return self.creds.federation_id

    def context(self, roster: Callable[[], Roster]) -> SecretContext:
        """The secret context: saved, created (dealer) or opened from a verified envelope."""
        saved = self.state.secret_context
        if saved is not None:
            context = SecretContext.from_secret_bytes(saved)
        elif self.creds.is_dealer:
            context = create_secret_context(self.preset)
            self.state.save_secret_context(context.secret_bytes())
        else:
            context = self._wait_for_envelope(roster)
            self.state.save_secret_context(context.secret_bytes())
        if self.creds.is_dealer:
            self._publish(context)
        return context

    def _publish(self, context: SecretContext) -> None:
        try:
            self.api.put_context(self.federation_id, context.public_bytes())
        except ConflictError as exc:
            raise TrustError(
                f"the aggregator holds another public context than this dealer's: {exc}"
            ) from exc

    def _wait_for_envelope(self, roster: Callable[[], Roster]) -> SecretContext:
        while True:
            envelope = self.api.get_envelope(self.federation_id)
            current = roster()
            if envelope is not None:
                return self._open(envelope, current)
            dealers = [m for m in current.members.values() if m.is_dealer]
            if dealers and not current.confirmed(dealers[0]):
                raise TrustError(
                    f"the aggregator names {dealers[0].describe()} as the key dealer, who is not "
                    "one of your confirmed peers: no key from it will be accepted. The first "
                    "site to register deals the keys; ask the admin for a new federation in "
                    "which a confirmed site registers first"
                )
            time.sleep(self.poll_s)

    def _open(self, envelope: bytes, roster: Roster) -> SecretContext:
        dealer_id, _claimed = envelope_dealer(envelope)
        dealer = roster.confirmed_member(dealer_id, "dealer who signed your key envelope")
        assert dealer.identity is not None
        secret, digest = open_envelope(
            envelope,
            recipient_private_key=self.identity.envelope_private,
            federation_id=self.federation_id,
            recipient_id=self.creds.client_id,
            dealer_signing_key=dealer.identity.signing_key,
        )
        context = SecretContext.from_secret_bytes(secret)
        if context.digest != digest:
            raise TrustError("the key set in the envelope is not the one its dealer signed")
        served = hashlib.sha256(self.api.get_context(self.federation_id)).hexdigest()
        if served != digest:
            raise TrustError(
                f"the aggregator serves public context {served[:16]}…, but the dealer "
                f"{dealer.describe()} signed key set {digest[:16]}…: refusing"
            )
        log.info("key set %s opened: signed by the dealer %s", digest[:16], dealer.describe())
        return context

    def seal_pending(self, context: SecretContext, roster: Roster) -> None:
        """Dealer: seal the secret context for every confirmed member without an envelope."""
        secret = context.secret_bytes()
        for member in roster.members.values():
            if member.id == self.creds.client_id or member.has_envelope or member.removed:
                continue
            if member.id in self._skipped:
                continue
            if not roster.confirmed(member):
                if member.id not in self._warned:
                    log.warning(
                        "not sealing the key for %s: not one of the confirmed peers",
                        member.describe(),
                    )
                    self._warned.add(member.id)
                continue
            assert member.identity is not None
            try:
                envelope = seal_envelope(
                    secret,
                    recipient_public_key=member.identity.envelope_key,
                    federation_id=self.federation_id,
                    recipient_id=member.id,
                    dealer_id=self.creds.client_id,
                    key_set_digest=context.digest,
                    signer=self.identity,
                )
                self.api.put_envelope(self.federation_id, member.id, envelope)
            except (CryptoError, ConflictError) as exc:
                log.warning("not sealing the key for %s: %s", member.describe(), exc)
                self._skipped.add(member.id)
                continue
            log.info("sealed the key for %s", member.describe())
