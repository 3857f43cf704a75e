"""What a site runs: join a federation, get the key, then take part in every round.

The loop, per round: catch up on the aggregates of rounds already closed (decrypt, write back,
prune: the platform's :class:`~fedsparsify.platform.rounds.Site` does it), evaluate the global
model, train under the mask, encrypt only the kept coordinates
(:class:`~fedsparsify.clients.codec.UpdateCodec`), upload, report plaintext metrics, and save a
checkpoint so that a restarted site resumes where it stopped.

The key dealer (the first site to register) also creates the CKKS context, uploads its public
part, and seals the secret context for every other site that registers (optionally only for
X25519 fingerprints on an allow-list).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsparsify.clients.codec import CodecStats, UpdateCodec
from fedsparsify.clients.rest import AggregatorClient, RoundStatus
from fedsparsify.clients.state import Credentials, StateDir
from fedsparsify.crypto import (
    SecretContext,
    create_secret_context,
    generate_identity_keypair,
    key_fingerprint,
    open_envelope,
    seal_envelope,
)
from fedsparsify.errors import ConfigError, ConflictError, FedsparsifyError, NotFoundError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import sparsity
from fedsparsify.platform.models import model_input_shape
from fedsparsify.platform.rounds import GlobalUpdate, Site
from fedsparsify.platform.spec import FederationSpec

__all__ = ["ClientRuntime", "RoundReport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundReport:
    """What one site measured in one round (also reported to the aggregator as metrics)."""

    round_index: int
    metrics: dict[str, float] = field(default_factory=dict)


class ClientRuntime:
    """One site's participation in one federation."""

    def __init__(
        self,
        *,
        server: str,
        federation_id: str,
        data_loader: Callable[[tuple[int, ...]], SiteData],
        state_dir: Path,
        enrollment_token: str | None = None,
        name: str | None = None,
        verify: str | bool = True,
        poll_s: float = 0.5,
        allowed_fingerprints: frozenset[str] | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> None:
        self.state = StateDir(state_dir)
        self.poll_s = poll_s
        self.allowed_fingerprints = allowed_fingerprints
        self.on_round = on_round
        self._anon = AggregatorClient(server, verify=verify)
        saved = self.state.credentials
        if saved is None:
            if enrollment_token is None:
                raise ConfigError("first start needs the federation's join code (--enroll)")
            spec_json = self._anon.get_spec(federation_id, enrollment_token=enrollment_token)
        else:
            spec_json = self._anon.with_token(saved.token).get_federation(saved.federation_id)[
                "spec"
            ]
        self.spec = FederationSpec.model_validate(spec_json)
        self.data = data_loader(model_input_shape(self.spec.model))
        self.name = name or (saved.name if saved else self.data.name)
        self.creds = saved or self._register(server, federation_id, enrollment_token or "")
        if self.creds.federation_id != federation_id:
            raise ConfigError(
                f"state dir {self.state.root} belongs to federation {self.creds.federation_id}, "
                f"not {federation_id}: use another --state directory"
            )
        self.api = self._anon.with_token(self.creds.token)
        self.site = Site(self.spec, self.data, name=self.name)
        checkpoint = self.state.load_checkpoint()
        self._uploaded_round = -1
        if checkpoint is not None:
            self.site.load_state_dict(checkpoint["site"])
            self._uploaded_round = int(checkpoint["uploaded_round"])
            log.info("%s resumed at round %d", self.name, self._uploaded_round)
        self._codec: UpdateCodec | None = None
        self._sealed: set[str] = set()

    @property
    def federation_id(self) -> str:
        """The federation this site takes part in."""
        return self.creds.federation_id

    # -- joining and keys -----------------------------------------------------------------

    def _register(self, server: str, federation_id: str, enrollment_token: str) -> Credentials:
        _private, public = self._identity()
        reg = self._anon.register(
            federation_id,
            enrollment_token=enrollment_token,
            name=self.name,
            public_key=public,
            num_samples=self.data.num_samples,
        )
        creds = Credentials(
            server=server,
            federation_id=reg.federation_id,
            client_id=reg.client_id,
            token=reg.token,
            is_dealer=reg.is_dealer,
            name=self.name,
        )
        self.state.save_credentials(creds)
        log.info(
            "%s registered as %s (dealer: %s); key fingerprint %s (confirm it with the dealer)",
            self.name,
            creds.client_id,
            creds.is_dealer,
            key_fingerprint(self._identity()[1]),
        )
        return creds

    def _identity(self) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        private = self.state.identity_private_key
        if private is None:
            private, public = generate_identity_keypair()
            self.state.save_identity_private_key(private)
            return private, public
        key = X25519PrivateKey.from_private_bytes(private)
        return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def _ensure_context(self) -> SecretContext:
        """The CKKS secret context: made by the dealer, opened from an envelope by others."""
        if self._codec is not None:
            return self._codec.context
        saved = self.state.secret_context
        if saved is not None:
            context = SecretContext.from_secret_bytes(saved)
        elif self.creds.is_dealer:
            context = create_secret_context(self.spec.crypto_preset)
            self.state.save_secret_context(context.secret_bytes())
        else:
            context = self._wait_for_envelope()
            self.state.save_secret_context(context.secret_bytes())
        if self.creds.is_dealer:
            self._publish_context(context)
        log.info("%s: CKKS key set %s (compare it with the dealer's)", self.name, context.digest)
        self._codec = UpdateCodec(context, contributor=self.creds.client_id)
        return context

    def _publish_context(self, context: SecretContext) -> None:
        try:
            self.api.put_context(self.federation_id, context.public_bytes())
        except ConflictError:
            log.debug("public context already published")

    def _wait_for_envelope(self) -> SecretContext:
        private, _ = self._identity()
        while True:
            envelope = self.api.get_envelope(self.federation_id)
            if envelope is not None:
                secret = open_envelope(
                    envelope,
                    recipient_private_key=private,
                    federation_id=self.federation_id,
                    recipient_id=self.creds.client_id,
                )
                return SecretContext.from_secret_bytes(secret)
            time.sleep(self.poll_s)

    def _seal_pending(self) -> None:
        """Dealer: seal the secret context for every member that has no envelope yet."""
        assert self._codec is not None
        secret = self._codec.context.secret_bytes()
        for member in self.api.list_clients(self.federation_id):
            member_id = str(member["id"])
            if member_id == self.creds.client_id or member.get("has_envelope"):
                continue
            if member_id in self._sealed:
                continue
            public = base64.b64decode(member["public_key"])
            if (
                self.allowed_fingerprints is not None
                and key_fingerprint(public) not in self.allowed_fingerprints
            ):
                log.warning("not sealing for %s: fingerprint not on the allow-list", member_id)
                self._sealed.add(member_id)
                continue
            envelope = seal_envelope(
                secret,
                recipient_public_key=public,
                federation_id=self.federation_id,
                recipient_id=member_id,
            )
            self.api.put_envelope(self.federation_id, member_id, envelope)
            self._sealed.add(member_id)
            log.info("sealed the key for %s", member_id)

    # -- rounds ---------------------------------------------------------------------------

    def run(self, *, max_wait_s: float | None = None) -> list[RoundReport]:
        """Take part in rounds until the federation completes or fails; returns the reports."""
        self._ensure_context()
        reports: list[RoundReport] = []
        started = time.monotonic()
        while True:
            if self.creds.is_dealer:
                self._seal_pending()
            fed = self.api.get_federation(self.federation_id)
            if fed["state"] in ("completed", "failed"):
                final = self._finish(fed)
                if final is not None:
                    reports.append(final)
                log.info("%s: federation %s", self.name, fed["state"])
                return reports
            report = self._maybe_take_part()
            if report is not None:
                reports.append(report)
                if self.on_round is not None:
                    self.on_round(report)
                continue
            if max_wait_s is not None and time.monotonic() - started > max_wait_s:
                raise FedsparsifyError(f"{self.name}: gave up after {max_wait_s:.0f}s")
            time.sleep(self.poll_s)

    def _current_round(self) -> RoundStatus | None:
        try:
            return self.api.get_round(self.federation_id, "current")
        except NotFoundError:
            return None

    def _maybe_take_part(self) -> RoundReport | None:
        status = self._current_round()
        if status is None or status.index <= self._uploaded_round:
            return None
        if status.is_finished or self.creds.client_id not in status.participants:
            return None
        if self.creds.client_id in status.uploaded:
            self._uploaded_round = status.index
            return None
        return self._take_part(status)

    def _catch_up(self, target: int) -> dict[str, float]:
        """Begin every round up to ``target``, taking in each closed round's aggregate."""
        assert self._codec is not None
        metrics: dict[str, float] = {}
        plan = self.site.plan
        first = 0 if plan is None else plan.round_index + 1
        for index in range(first, target + 1):
            previous: GlobalUpdate | None = None
            if index > 0:
                previous, stats = self._download(index - 1)
                if previous is not None:
                    metrics["download_bytes"] = float(stats.bytes)
                    metrics["decrypt_s"] = stats.seconds
            self.site.begin_round(index, previous)
        return metrics

    def _download(self, index: int) -> tuple[GlobalUpdate | None, CodecStats]:
        assert self._codec is not None
        status = self.api.get_round(self.federation_id, index)
        if status.state != "closed":
            return None, CodecStats()
        files: dict[str, Path] = {}
        for channel in status.channels:
            target = self.state.scratch(f"aggregate-{index}-{channel}.bin")
            self.api.download_aggregate(self.federation_id, index, channel, target)
            files[channel] = target
        update, stats = self._codec.decode(files)
        for path in files.values():
            path.unlink(missing_ok=True)
        return update, stats

    def _take_part(self, status: RoundStatus) -> RoundReport:
        assert self._codec is not None
        index = status.index
        metrics = self._catch_up(index)
        plan = self.site.plan
        assert plan is not None
        for key, value in self.site.evaluate().items():
            metrics[f"val_{key}"] = value
        metrics["sparsity"] = plan.sparsity
        metrics["n_values"] = float(plan.n_values)
        start = time.perf_counter()
        update = self.site.train()
        metrics["train_s"] = time.perf_counter() - start
        metrics.update({f"train_{k}": v for k, v in update.metrics.items()})
        scratch = self.state.scratch("")
        files, stats = self._codec.encode(
            update,
            total_samples=status.total_samples,
            n_participants=len(status.participants),
            scratch=scratch,
        )
        metrics["encrypt_s"] = stats.seconds
        metrics["upload_bytes"] = float(stats.bytes)
        start = time.perf_counter()
        try:
            for channel in status.channels:
                self.api.upload(self.federation_id, index, channel, files[channel])
        except ConflictError as exc:
            log.warning("%s: upload to round %d refused: %s", self.name, index, exc)
        metrics["upload_s"] = time.perf_counter() - start
        self._uploaded_round = index
        self._checkpoint()
        self._report(index, metrics)
        log.info(
            "%s round %d: sparsity %.3f, %d values, %d bytes up",
            self.name,
            index,
            plan.sparsity,
            plan.n_values,
            stats.bytes,
        )
        return RoundReport(index, metrics)

    def _finish(self, fed: dict[str, Any]) -> RoundReport | None:
        """After the last round: take in the final aggregate and report the final metrics."""
        if fed["state"] != "completed":
            return None
        last = int(fed["spec"]["rounds"]) - 1
        plan = self.site.plan
        if plan is None or plan.round_index != last or self.site.finished:
            return None
        previous, _stats = self._download(last)
        if previous is None:
            return None
        mask = self.site.finish(previous)
        metrics = {f"final_val_{k}": v for k, v in self.site.evaluate().items()}
        metrics["final_sparsity"] = sparsity(mask)
        self._checkpoint(final=True)
        self._report(last, metrics)
        return RoundReport(last, metrics)

    def _report(self, index: int, metrics: dict[str, float]) -> None:
        try:
            self.api.report_metrics(self.federation_id, index, metrics)
        except FedsparsifyError as exc:
            log.warning("%s: metrics for round %d not stored: %s", self.name, index, exc)

    def _checkpoint(self, *, final: bool = False) -> None:
        self.state.save_checkpoint(
            {"site": self.site.state_dict(), "uploaded_round": self._uploaded_round, "final": final}
        )
