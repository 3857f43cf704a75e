"""One benchmark site: a separate process that joins federations and times every round phase.

It runs jobs from a queue (one job per benchmark row: a fresh federation), so the process and
its imports are paid once. Per job it registers with the enrolment token, gets the CKKS key the
way a real site does (the dealer creates and publishes it and seals it for the others; everyone
else opens their envelope), says it is ready, and then for each round: waits for the round to
open, selects its kept coordinates (``ParameterLayout.flatten``), encrypts and writes the update
with the project's :class:`~fedsparsify.clients.codec.UpdateCodec`, uploads it with
:class:`~fedsparsify.clients.rest.AggregatorClient`, waits (untimed) for the aggregate,
downloads it, decrypts it and writes the mean back into its model (``ParameterLayout.scatter``).
"""

from __future__ import annotations

import logging
import multiprocessing.queues
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsparsify.bench.workloads import Workload, build_workload
from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.clients.keyring import KeyRing
from fedsparsify.clients.rest import AggregatorClient, RoundStatus
from fedsparsify.clients.roster import Member, Roster
from fedsparsify.clients.state import Credentials, StateDir
from fedsparsify.crypto import PairwiseMasker, RoundBinding, SecretContext, create_secret_context
from fedsparsify.errors import FedsparsifyError, NotFoundError
from fedsparsify.platform.rounds import LocalUpdate
from fedsparsify.platform.spec import FederationSpec

__all__ = ["CLIENT_PHASES", "ClientJob", "client_main", "split_phases"]

log = logging.getLogger(__name__)

#: Client phases in round order; their sum is the client's round time (waiting excluded).
CLIENT_PHASES = (
    "mask_pack",
    "pairwise_mask",
    "encrypt",
    "serialise",
    "upload",
    "download",
    "deserialise",
    "decrypt",
    "unpack",
)
NUM_SAMPLES = 100
POLL_S = 0.01
WAIT_LIMIT_S = 1800.0


@dataclass(frozen=True)
class ClientJob:
    """One benchmark row, as one site sees it."""

    url: str
    federation_id: str
    enrollment_token: str
    name: str
    preset: str
    workload: str
    sparsity: float
    rounds: int
    n_clients: int
    seed: int
    spec: FederationSpec

    @property
    def masks(self) -> bool:
        """Whether the federation's uploads carry pairwise masks."""
        return self.spec.pairwise_masks


def split_phases(
    select_s: float,
    encode: Any,
    upload_s: float,
    download_s: float,
    decode: Any,
    scatter_s: float,
) -> dict[str, float]:
    """Client phase seconds from the codec's stats: codec time outside its crypto phases
    (headers, file writes; reading the header, dividing by the weight) goes to ``serialise``
    and ``unpack`` so that the phases add up to the measured wall time."""
    enc, dec = encode.phases, decode.phases
    return {
        "mask_pack": select_s + enc.get("pack", 0.0),
        "pairwise_mask": enc.get("mask", 0.0),
        "encrypt": enc.get("encrypt", 0.0),
        "serialise": encode.seconds
        - enc.get("pack", 0.0)
        - enc.get("mask", 0.0)
        - enc.get("encrypt", 0.0),
        "upload": upload_s,
        "download": download_s,
        "deserialise": dec.get("deserialise", 0.0),
        "decrypt": dec.get("decrypt", 0.0),
        "unpack": decode.seconds
        - dec.get("deserialise", 0.0)
        - dec.get("decrypt", 0.0)
        + scatter_s,
    }


def _wait(what: str, ready: Any) -> Any:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        value = ready()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise FedsparsifyError(f"gave up waiting for {what}")
        time.sleep(POLL_S)


def _round(api: AggregatorClient, fid: str, index: int) -> RoundStatus | None:
    try:
        return api.get_round(fid, index)
    except NotFoundError:
        return None


def _key(job: ClientJob, keys: KeyRing, roster: Callable[[], Roster]) -> SecretContext:
    """The key set as a real site gets it (dealer: create, publish, seal for every member once
    all registered; others: open the dealer's signed envelope after its checks)."""
    context = keys.context(roster)
    if keys.creds.is_dealer:
        members = _wait(
            "every site to register",
            lambda: r if len((r := roster()).members) >= job.n_clients else None,
        )
        keys.seal_pending(context, members)
    return context


def run_job(job: ClientJob, workload: Workload, scratch: Path, ready: Any) -> list[dict[str, Any]]:
    """Take part in every round of the job's federation; one record per round."""
    fid = job.federation_id
    layout = workload.layout(job.sparsity)
    state = StateDir(scratch / f"state-{fid}")
    identity = state.identity()
    with AggregatorClient(job.url, timeout_s=600.0) as anon:
        reg = anon.register(
            fid,
            enrollment_token=job.enrollment_token,
            name=job.name,
            identity=identity.public(),
            num_samples=NUM_SAMPLES,
        )
    creds = Credentials(job.url, fid, reg.client_id, reg.token, reg.is_dealer, job.name)
    records: list[dict[str, Any]] = []
    with AggregatorClient(job.url, token=reg.token, timeout_s=600.0) as api:

        def roster() -> Roster:
            members = [Member.from_json(m) for m in api.list_clients(fid)]
            return Roster(members, own_id=reg.client_id, peers=None, trust_all=True)

        keys = KeyRing(
            api=api, state=state, identity=identity, creds=creds, preset=job.preset, poll_s=POLL_S
        )
        ctx = _key(job, keys, roster)
        codec = UpdateCodec(ctx, contributor=reg.client_id)
        ready.put(("ready", job.name))
        for index in range(job.rounds):
            status = _wait(f"round {index}", lambda i=index: _round(api, fid, i))
            started = time.perf_counter()
            update = LocalUpdate(
                values=layout.flatten(workload.state),
                num_samples=NUM_SAMPLES,
                mask_digest=layout.mask_digest,
            )
            select_s = time.perf_counter() - started
            binding = RoundBinding(fid, index, status.attempt, status.participants_digest or "")
            maskers = None
            if job.masks:
                mask_keys = roster().check_round(
                    participants=status.participants,
                    digest=status.participants_digest,
                    weights=status.weights,
                    spec=job.spec,
                )
                maskers = {
                    "values": PairwiseMasker(
                        own_id=reg.client_id,
                        own_mask_private=identity.mask_private,
                        mask_keys=mask_keys,
                        binding=binding,
                        channel="values",
                    )
                }
            files, encode = codec.encode(
                update,
                weights={"values": status.weights[reg.client_id]},
                binding=binding,
                maskers=maskers,
                scratch=scratch,
            )
            started = time.perf_counter()
            api.upload(fid, index, "values", files["values"])
            upload_s = time.perf_counter() - started
            _wait(
                f"round {index}'s aggregate",
                lambda i=index: s if (s := _round(api, fid, i)) and s.aggregate_ready else None,
            )
            target = scratch / "aggregate-values.bin"
            started = time.perf_counter()
            download_bytes = api.download_aggregate(fid, index, "values", target)
            download_s = time.perf_counter() - started
            mean, decode = codec.decode({"values": target})
            started = time.perf_counter()
            layout.scatter(mean.mean, workload.state)
            scatter_s = time.perf_counter() - started
            phases = split_phases(select_s, encode, upload_s, download_s, decode, scatter_s)
            records.append(
                {
                    "client": job.name,
                    "round": index,
                    "n_kept": layout.n_values,
                    "upload_bytes": encode.bytes,
                    "download_bytes": download_bytes,
                    "phases": phases,
                    "client_round_s": sum(phases.values()),
                }
            )
            for path in (*files.values(), target):
                path.unlink(missing_ok=True)
    return records


def client_main(
    jobs: multiprocessing.queues.Queue[Any], results: multiprocessing.queues.Queue[Any]
) -> None:
    """Process entry point: run jobs until ``None``; report ``("done", name, records)`` or
    ``("error", name, message)`` for each."""
    logging.basicConfig(level=logging.WARNING)
    cache: dict[tuple[str, int], Workload] = {}
    with tempfile.TemporaryDirectory(prefix="fedsparsify-bench-site-") as tmp:
        while (job := jobs.get()) is not None:
            try:
                key = (job.workload, job.seed)
                if key not in cache:
                    cache.clear()
                    cache[key] = build_workload(job.workload, seed=job.seed)
                _warm_up(job.preset)
                records = run_job(job, cache[key], Path(tmp), results)
                results.put(("done", job.name, records))
            except Exception as exc:  # reported to the orchestrator, which stops the run
                log.exception("site %s failed", job.name)
                results.put(("error", job.name, f"{type(exc).__name__}: {exc}"))


_warmed: set[str] = set()


def _warm_up(preset: str) -> None:
    """Encrypt and decrypt one chunk once per preset, so no round pays first-call costs."""
    if preset in _warmed:
        return
    import io

    import numpy as np

    from fedsparsify.crypto import decrypt_sum, encrypt_update

    ctx = create_secret_context(preset)
    x = np.zeros(ctx.preset.values_per_ciphertext, dtype=np.float32)
    decrypt_sum(ctx, io.BytesIO(b"".join(encrypt_update(ctx, x, weight=1.0, mask_digest="w"))))
    _warmed.add(preset)
