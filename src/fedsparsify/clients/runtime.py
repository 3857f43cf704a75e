"""What a site runs: join a federation, get the key, then take part in every round.

The loop, per round attempt: check the round against the confirmed roster (every participant a
confirmed peer, the participant-set digest and the weights what this site computes itself),
catch up on the aggregates of rounds already closed (decrypt, write back, prune: the platform's
:class:`~fedsparsify.platform.rounds.Site` does it), evaluate, train under the mask once per
round (the update is saved, so a new attempt or a restart re-encrypts it instead of retraining),
encrypt only the kept coordinates with this attempt's pairwise masks
(:class:`~fedsparsify.clients.codec.UpdateCodec`), keep the exact bytes in the state directory,
upload them (after a restart: the same bytes again), report plaintext metrics, checkpoint.

A site acts only with peers it confirmed (``peers``, from ``--peers FILE``), unless
``trust_aggregator_roster`` is set (for trying things out; logged loudly). Without either it
stops after registering and says which fingerprints to confirm. Key distribution:
:mod:`fedsparsify.clients.keyring`; trust checks: :mod:`fedsparsify.clients.roster`.

With ``crypto_workers`` (``--crypto-workers``), updates of at least
``crypto_workers_min_values`` values are encrypted and decrypted in that many worker processes
(off by default: on a 2-core machine it pays only for large updates, see ``fedsparsify bench
pool``).

Hooks, for benchmarks: a :class:`RoundProbe` hears how long each step of a round took (the
codec's crypto phases included), and ``train`` and ``evaluate`` can stand in for
:meth:`Site.train` and :meth:`Site.evaluate`, so that the round the benchmark times is the one
users run, without the model's own compute in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedsparsify.clients.codec import CodecStats, UpdateCodec
from fedsparsify.clients.export import final_summary
from fedsparsify.clients.keyring import KeyRing
from fedsparsify.clients.rest import AggregatorClient, RoundStatus
from fedsparsify.clients.roster import Member, Peers, Roster, peers_line
from fedsparsify.clients.site_log import SiteLog
from fedsparsify.clients.state import Credentials, StateDir
from fedsparsify.crypto import PairwiseMasker, RoundBinding
from fedsparsify.crypto.parallel import FramePool
from fedsparsify.errors import (
    ConfigError,
    ConflictError,
    FedsparsifyError,
    NotFoundError,
    PermissionDeniedError,
    RoundMismatchError,
    TrustError,
)
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import sparsity
from fedsparsify.platform.models import model_input_shape
from fedsparsify.platform.round_rules import VALUES, VOTES, vote_weight
from fedsparsify.platform.rounds import GlobalUpdate, LocalUpdate, Site
from fedsparsify.platform.spec import FederationSpec

__all__ = ["STEPS", "ClientRuntime", "RoundProbe", "RoundReport"]

log = logging.getLogger(__name__)


#: Updates from this many values up go to the crypto worker processes, when there are any.
DEFAULT_POOL_MIN_VALUES = 128 * 4096

#: Steps a :class:`RoundProbe` hears about: ``take_part`` (a whole round attempt, waiting
#: excluded), ``begin`` (the platform takes in the previous aggregate and decides the mask),
#: ``download`` and ``decode`` (an aggregate, of round ``round_index``), ``train``, ``masks``
#: (pairwise maskers), ``encode`` and ``upload``, ``finish`` (taking in the last aggregate).
STEPS = ("take_part", "begin", "download", "decode", "train", "masks", "encode", "upload", "finish")


class RoundProbe(Protocol):
    """Hears the seconds each step took (``stats``: the codec's, for ``encode``/``decode``)."""

    def step(self, round_index: int, name: str, seconds: float, stats: CodecStats | None) -> None:
        """One step of round ``round_index`` is done."""
        ...


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
        peers: Path | None = None,
        trust_aggregator_roster: bool = False,
        on_round: Callable[[RoundReport], None] | None = None,
        probe: RoundProbe | None = None,
        train: Callable[[Site], LocalUpdate] | None = None,
        evaluate: Callable[[Site], dict[str, float]] | None = None,
        crypto_workers: int = 0,
        crypto_workers_min_values: int = DEFAULT_POOL_MIN_VALUES,
    ) -> None:
        self.state = StateDir(state_dir)
        self.identity = self.state.identity()
        self.fingerprint = self.identity.public().fingerprint
        self.poll_s = poll_s
        self.peers_file = peers
        self.trust_all = trust_aggregator_roster
        self.on_round = on_round
        self.probe = probe
        self._train = train or Site.train
        self._evaluate: Callable[[Site], dict[str, float]] = evaluate or Site.evaluate
        self._workers = (crypto_workers, crypto_workers_min_values)
        self._pool: FramePool | None = None
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
        log.info(
            "%s: fingerprint %s (send this line to the other sites: %s)",
            self.name,
            self.fingerprint,
            peers_line(self.name, self.fingerprint),
        )
        if self.trust_all:
            log.warning(
                "%s: --trust-aggregator-roster: acting with EVERY member the aggregator lists, "
                "unconfirmed ones included; an aggregator that registers a site of its own then "
                "receives the key. For trying things out only.",
                self.name,
            )
        self.creds = saved or self._register(server, federation_id, enrollment_token or "")
        if self.creds.federation_id != federation_id:
            raise ConfigError(
                f"state dir {self.state.root} belongs to federation {self.creds.federation_id}, "
                f"not {federation_id}: use another --state directory"
            )
        self.api = self._anon.with_token(self.creds.token)
        self.keys = KeyRing(
            api=self.api,
            state=self.state,
            identity=self.identity,
            creds=self.creds,
            preset=self.spec.crypto_preset,
            poll_s=poll_s,
        )
        self.site = Site(self.spec, self.data, name=self.name)
        checkpoint = self.state.load_checkpoint()
        if checkpoint is not None:
            self.site.load_state_dict(checkpoint["site"])
            log.info("%s resumed at round %d", self.name, int(checkpoint["uploaded_round"]))
        self._codec: UpdateCodec | None = None
        self._done: set[tuple[int, int]] = set()
        self.view = SiteLog(
            self.name,
            server=server,
            federation_id=self.federation_id,
            rounds=self.spec.rounds,
            state_dir=state_dir,
        )

    @property
    def federation_id(self) -> str:
        """The federation this site takes part in."""
        return self.creds.federation_id

    def _timed(
        self, index: int, name: str, started: float, stats: CodecStats | None = None
    ) -> float:
        """Tell the probe that step ``name`` took since ``started``; return now."""
        now = time.perf_counter()
        if self.probe is not None:
            self.probe.step(index, name, now - started, stats)
        return now

    # -- joining and trust ----------------------------------------------------------------

    def _register(self, server: str, federation_id: str, enrollment_token: str) -> Credentials:
        reg = self._anon.register(
            federation_id,
            enrollment_token=enrollment_token,
            name=self.name,
            identity=self.identity.public(),
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
        log.info("%s registered as %s (dealer: %s)", self.name, creds.client_id, creds.is_dealer)
        return creds

    def roster(self) -> Roster:
        """The aggregator's member list, judged against the confirmed peers (re-read each time,
        so that a peers file extended while the site runs takes effect)."""
        peers = Peers.load(self.peers_file) if self.peers_file is not None else None
        members = [Member.from_json(m) for m in self.api.list_clients(self.federation_id)]
        return Roster(members, own_id=self.creds.client_id, peers=peers, trust_all=self.trust_all)

    def _require_peers(self) -> None:
        """Without --peers (or the opt-out), stop and say exactly what to confirm."""
        if self.peers_file is not None or self.trust_all:
            return
        others = [m for m in self.roster().members.values() if m.id != self.creds.client_id]
        lines = "\n".join(f"  {peers_line(m.name, m.fingerprint)}" for m in others) or "  (none)"
        raise TrustError(
            f"{self.name} registered but will not go on without confirmed peers. Compare "
            "fingerprints with the other sites out of band (phone, signed e-mail), write the "
            "ones you confirm into a file, one 'name fingerprint' per line, and restart with "
            f"--peers FILE. Yours: {peers_line(self.name, self.fingerprint)}. Members listed "
            f"by the aggregator now:\n{lines}"
        )

    def _ensure_codec(self) -> UpdateCodec:
        if self._codec is None:
            if not self.creds.is_dealer and self.state.secret_context is None:
                self.view.waiting_for_key()
            context = self.keys.context(self.roster)
            log.info("%s: CKKS key set %s", self.name, context.digest)
            workers, min_values = self._workers
            if workers > 0:
                self._pool = FramePool(context, workers=workers)
            self._codec = UpdateCodec(
                context,
                contributor=self.creds.client_id,
                pool=self._pool,
                pool_min_values=min_values,
            )
        return self._codec

    def close(self) -> None:
        """Stop the crypto worker processes, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- rounds ---------------------------------------------------------------------------

    def run(self, *, max_wait_s: float | None = None) -> list[RoundReport]:
        """Take part in rounds until the federation completes or fails; returns the reports."""
        try:
            return self._run(max_wait_s)
        finally:
            self.close()

    def _run(self, max_wait_s: float | None) -> list[RoundReport]:
        self._require_peers()
        codec = self._ensure_codec()
        reports: list[RoundReport] = []
        started = time.monotonic()
        while True:
            if self.creds.is_dealer:
                self.keys.seal_pending(codec.context, self.roster())
            fed = self.api.get_federation(self.federation_id)
            if fed["state"] in ("completed", "failed"):
                final = self._finish(fed)
                if final is not None:
                    reports.append(final)
                checkpoint = self.state.load_checkpoint() or {}
                self.view.ended(fed, self.creds.client_id, checkpoint.get("summary"))
                return reports
            report = self._maybe_take_part()
            if report is not None:
                reports.append(report)
                if self.on_round is not None:
                    self.on_round(report)
                continue
            if max_wait_s is not None and time.monotonic() - started > max_wait_s:
                raise FedsparsifyError(f"{self.name}: gave up after {max_wait_s:.0f}s")
            self.view.waiting(fed, self.creds.client_id)
            time.sleep(self.poll_s)

    def _current_round(self) -> RoundStatus | None:
        try:
            return self.api.get_round(self.federation_id, "current")
        except NotFoundError:
            return None

    def _maybe_take_part(self) -> RoundReport | None:
        status = self._current_round()
        if status is None or status.is_finished:
            return None
        me = self.creds.client_id
        attempt = (status.index, status.attempt)
        if me not in status.participants or attempt in self._done:
            return None
        if all(me in status.uploads.get(ch, ()) for ch in status.channels):
            self._done.add(attempt)
            return None
        try:
            return self._take_part(status)
        except TrustError as exc:
            log.error("%s round %d attempt %d: %s", self.name, *attempt, exc)
            self._done.add(attempt)
            return None

    def _catch_up(self, target: int) -> dict[str, float]:
        """Begin every round up to ``target``, taking in each closed round's aggregate."""
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
            started = time.perf_counter()
            self.site.begin_round(index, previous)
            self._timed(index, "begin", started)
        return metrics

    def _download(self, index: int) -> tuple[GlobalUpdate | None, CodecStats]:
        codec = self._ensure_codec()
        status = self.api.get_round(self.federation_id, index)
        if status.state != "closed":
            return None, CodecStats()
        files: dict[str, Path] = {}
        started = time.perf_counter()
        for channel in status.channels:
            target = self.state.scratch(f"aggregate-{index}-{channel}.bin")
            self.api.download_aggregate(self.federation_id, index, channel, target)
            files[channel] = target
        started = self._timed(index, "download", started)
        update, stats = codec.decode(files)
        self._timed(index, "decode", started, stats)
        for path in files.values():
            path.unlink(missing_ok=True)
        return update, stats

    def _trained(self, index: int, metrics: dict[str, float]) -> LocalUpdate:
        """This round's update: the saved one, or trained now (once per round) and saved."""
        saved = self.state.load_update(index)
        if saved is not None:
            return LocalUpdate(
                values=saved["values"],
                num_samples=int(saved["num_samples"]),
                votes=saved.get("votes"),
                mask_digest=str(saved["mask_digest"]),
            )
        plan = self.site.plan
        assert plan is not None
        for key, value in self._evaluate(self.site).items():
            metrics[f"val_{key}"] = value
        metrics["sparsity"] = plan.sparsity
        metrics["n_values"] = float(plan.n_values)
        start = time.perf_counter()
        update = self._train(self.site)
        metrics["train_s"] = self._timed(index, "train", start) - start
        metrics.update({f"train_{k}": v for k, v in update.metrics.items()})
        arrays: dict[str, np.ndarray] = {
            "values": update.values,
            "num_samples": np.asarray(update.num_samples),
            "mask_digest": np.asarray(update.mask_digest),
        }
        if update.votes is not None:
            arrays["votes"] = update.votes
        self.state.save_update(index, arrays)
        self.state.forget_rounds_before(index)
        self._checkpoint(index)
        return update

    def _take_part(self, status: RoundStatus) -> RoundReport:
        started = time.perf_counter()
        report = self._attempt(status)
        self._timed(status.index, "take_part", started)
        return report

    def _attempt(self, status: RoundStatus) -> RoundReport:
        index, attempt = status.index, status.attempt
        roster = self.roster()
        mask_keys = roster.check_round(
            participants=status.participants,
            digest=status.participants_digest,
            weights=status.weights,
            spec=self.spec,
        )
        log.info(
            "%s round %d attempt %d: participants' declared samples %s",
            self.name,
            index,
            attempt,
            roster.declared_samples(status.participants),
        )
        started = time.perf_counter()
        metrics = self._catch_up(index)
        update = self._trained(index, metrics)
        files, stats = self._encrypted(status, update, mask_keys)
        metrics["encrypt_s"] = stats.seconds
        metrics["upload_bytes"] = float(stats.bytes)
        start = time.perf_counter()
        try:
            for channel in status.channels:
                if self.creds.client_id not in status.uploads.get(channel, ()):
                    self.api.upload(self.federation_id, index, channel, files[channel])
        except (ConflictError, RoundMismatchError, PermissionDeniedError) as exc:
            # The round moved on meanwhile (closed, or a new attempt began): the next poll sees
            # its new state, and this site takes part in the new attempt if it is in it.
            log.warning("%s: upload to round %d refused: %s", self.name, index, exc)
        metrics["upload_s"] = self._timed(index, "upload", start) - start
        self._done.add((index, attempt))
        metrics["round_s"] = time.perf_counter() - started
        if attempt == 0:
            self._report(index, metrics)
        self.view.round_done(index, attempt, metrics)
        return RoundReport(index, metrics)

    def _encrypted(
        self, status: RoundStatus, update: LocalUpdate, mask_keys: dict[str, bytes]
    ) -> tuple[dict[str, Path], CodecStats]:
        """This attempt's upload files: the ones already sent (a restart resends the same
        bytes), or freshly encrypted with this attempt's masks and kept before sending."""
        index, attempt = status.index, status.attempt
        sent = {ch: self.state.sent_path(index, attempt, ch) for ch in status.channels}
        if all(path.exists() for path in sent.values()):
            size = sum(path.stat().st_size for path in sent.values())
            return sent, CodecStats(bytes=size)
        codec = self._ensure_codec()
        binding = RoundBinding(
            federation_id=self.federation_id,
            round=index,
            attempt=attempt,
            participants_digest=status.participants_digest or "",
        )
        weights = {VALUES: self._values_weight(status, update)}
        if VOTES in status.channels:
            weights[VOTES] = vote_weight(len(status.participants))
        maskers = None
        started = time.perf_counter()
        if self.spec.pairwise_masks:
            maskers = {
                ch: PairwiseMasker(
                    own_id=self.creds.client_id,
                    own_mask_private=self.identity.mask_private,
                    mask_keys=mask_keys,
                    binding=binding,
                    channel=ch,
                )
                for ch in weights
            }
        started = self._timed(index, "masks", started)
        files, stats = codec.encode(
            update,
            weights=weights,
            binding=binding,
            maskers=maskers,
            scratch=self.state.scratch(""),
        )
        self._timed(index, "encode", started, stats)
        for channel, path in files.items():
            sent[channel] = self.state.keep_sent(path, index, attempt, channel)
        return sent, stats

    def _values_weight(self, status: RoundStatus, update: LocalUpdate) -> float:
        if status.weights:
            return float(status.weights[self.creds.client_id])
        return update.num_samples / status.total_samples  # a round of release 0.1

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
        started = time.perf_counter()
        mask = self.site.finish(previous)
        self._timed(last, "finish", started)
        metrics = {f"final_val_{k}": v for k, v in self._evaluate(self.site).items()}
        metrics["final_sparsity"] = sparsity(mask)
        summary = final_summary(
            self.site,
            fed,
            key_set_digest=self._ensure_codec().context.digest,
            client_id=self.creds.client_id,
        )
        self._checkpoint(last, final=True, summary=summary)
        self._report(last, metrics)
        return RoundReport(last, metrics)

    def _report(self, index: int, metrics: dict[str, float]) -> None:
        try:
            self.api.report_metrics(self.federation_id, index, metrics)
        except FedsparsifyError as exc:
            log.warning("%s: metrics for round %d not stored: %s", self.name, index, exc)

    def _checkpoint(
        self, index: int, *, final: bool = False, summary: dict[str, Any] | None = None
    ) -> None:
        self.state.save_checkpoint(
            {
                "site": self.site.state_dict(),
                "uploaded_round": index,
                "final": final,
                "spec": self.spec.model_dump(mode="json"),
                "summary": summary,
            }
        )
