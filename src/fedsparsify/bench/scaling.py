"""How the aggregator's add time and memory grow with the number of clients.

For each client count K a fresh federation gets K registered identities (the first is the key
dealer: it publishes the public context and seals the key for the others), one round opens, and
K updates are encrypted in advance by this process (one per identity, with its client id as
contributor and weight ``num_samples / total_samples``) and then uploaded all at once, from K
threads of this process, each with its own HTTP client. Pre-encrypting keeps the run short; the
aggregator sees exactly what K real sites would send, all in flight together.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fedsparsify.bench.probes import RssSampler, read_counters
from fedsparsify.bench.workloads import build_workload
from fedsparsify.clients.rest import AggregatorClient, Registration
from fedsparsify.crypto import (
    RoundBinding,
    SecretContext,
    SiteIdentity,
    create_secret_context,
    encrypt_update,
    seal_envelope,
)
from fedsparsify.errors import FedsparsifyError

__all__ = ["measure_scaling", "setup_federation"]

NUM_SAMPLES = 100


def setup_federation(
    admin: AggregatorClient, k: int, preset: str, seed: int
) -> tuple[str, SecretContext, list[Registration]]:
    """A federation with ``k`` registered identities holding the key; the first is the dealer."""
    created = admin.create_federation(
        {
            "name": f"scaling-{k}-seed-{seed}",  # names are unique per aggregator
            "rounds": 1,
            "min_clients": k,
            "quorum": k,
            "auto_advance": False,
            "crypto_preset": preset,
            "round_timeout_s": 3600.0,
            "seed": seed,
            # The server's cost of adding does not depend on masks; without them one encrypted
            # update can be reused by several identities (only the header differs).
            "pairwise_masks": False,
        }
    )
    fid, token = str(created["id"]), str(created["enrollment_token"])
    members: list[tuple[Registration, SiteIdentity]] = []
    with admin.with_token("") as anon:
        for i in range(k):
            identity = SiteIdentity.generate()
            reg = anon.register(
                fid,
                enrollment_token=token,
                name=f"site-{i}",
                identity=identity.public(),
                num_samples=NUM_SAMPLES,
            )
            members.append((reg, identity))
    ctx = create_secret_context(preset)
    dealer_reg, dealer_identity = members[0]
    with admin.with_token(dealer_reg.token) as dealer:
        dealer.put_context(fid, ctx.public_bytes())
        for reg, identity in members[1:]:
            envelope = seal_envelope(
                ctx.secret_bytes(),
                recipient_public_key=identity.public().envelope_key,
                federation_id=fid,
                recipient_id=reg.client_id,
                dealer_id=dealer_reg.client_id,
                key_set_digest=ctx.digest,
                signer=dealer_identity,
            )
            dealer.put_envelope(fid, reg.client_id, envelope)
    return fid, ctx, [reg for reg, _ in members]


def measure_scaling(
    admin: AggregatorClient,
    sampler: RssSampler,
    *,
    counts: tuple[int, ...],
    workload: str,
    preset: str,
    sparsity: float,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per client count: server add seconds (total and per upload), validation
    seconds per upload, close seconds, wall time of the K concurrent uploads, the aggregator's
    RSS before the uploads and its peak during them."""
    work = build_workload(workload, seed=seed)
    layout = work.layout(sparsity)
    values = layout.flatten(work.state)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedsparsify-bench-scaling-") as tmp:
        for k in counts:
            fid, ctx, members = setup_federation(admin, k, preset, seed)
            status = admin.start_round(fid)
            binding = RoundBinding(fid, 0, status.attempt, status.participants_digest or "")
            paths: list[tuple[Registration, Path]] = []
            for reg in members:
                path = Path(tmp) / f"{reg.client_id}.bin"
                with path.open("wb") as out:
                    for chunk in encrypt_update(
                        ctx,
                        values,
                        weight=status.weights[reg.client_id],
                        mask_digest=layout.mask_digest,
                        contributor=reg.client_id,
                        binding=binding,
                    ):
                        out.write(chunk)
                paths.append((reg, path))
            before = read_counters(admin.metrics())
            rss_before = sampler.current_mb()
            sampler.reset()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=k) as pool:
                futures = [pool.submit(_upload, admin, fid, reg.token, p) for reg, p in paths]
                upload_s = [f.result() for f in futures]
            wall = time.perf_counter() - started
            peak = sampler.peak_mb()
            if not admin.get_round(fid, 0).aggregate_ready:
                raise FedsparsifyError(f"scaling K={k}: the round did not close")
            delta = read_counters(admin.metrics()) - before
            rows.append(
                {
                    "clients": k,
                    "model": workload,
                    "preset": preset,
                    "sparsity": sparsity,
                    "n_kept": layout.n_values,
                    "upload_bytes": paths[0][1].stat().st_size,
                    "server_add_total_s": delta.add_s,
                    "server_add_per_upload_s": delta.add_s / max(delta.adds, 1.0),
                    "server_validate_per_upload_s": delta.stage_s / max(delta.stages, 1.0),
                    "server_close_s": delta.close_s,
                    "uploads_wall_s": wall,
                    "upload_median_s": statistics.median(upload_s),
                    "server_rss_before_mb": rss_before,
                    "server_peak_rss_mb": peak,
                    "server_rss_growth_mb": peak - rss_before,
                }
            )
            for _reg, path in paths:
                path.unlink(missing_ok=True)
    return rows


def _upload(admin: AggregatorClient, fid: str, token: str, path: Path) -> float:
    with admin.with_token(token) as api:
        started = time.perf_counter()
        api.upload(fid, 0, "values", path)
        return time.perf_counter() - started
