"""When does encrypting and decrypting in worker processes pay? The crossover, on this machine.

One site alone (no other process of the benchmark competes), ``lean`` with pairwise masks for
4 participants: for updates of 1 to 720 frames (4,096 values each; BrainAge at 0.95 is 37, dense
BrainAge 720), the median of ``--repeats`` runs of encrypting the update and of decrypting the
seeded 4-site aggregate, in this process and in a :class:`~fedsparsify.crypto.parallel.FramePool`
of ``--workers`` processes. Workers are started before timing (a site keeps its pool).

    fedsparsify bench pool --json benchmarks/results/pool.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from fedsparsify.bench.provenance import git_commit
from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SiteIdentity,
    add_updates,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
    participants_digest,
)
from fedsparsify.crypto.parallel import FramePool

__all__ = ["FRAMES", "main", "measure"]

FRAMES = (1, 4, 16, 37, 128, 360, 720)
SITES = ("site-0", "site-1", "site-2", "site-3")


def _masker(identities: dict[str, SiteIdentity], who: str) -> PairwiseMasker:
    keys = {k: v.public().mask_key for k, v in identities.items()}
    binding = RoundBinding("bench", 0, 0, participants_digest(keys))
    return PairwiseMasker(
        own_id=who,
        own_mask_private=identities[who].mask_private,
        mask_keys=keys,
        binding=binding,
        channel="values",
    )


def _median_s(action: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return float(statistics.median(times))


def measure(frames: tuple[int, ...], *, workers: int, repeats: int) -> list[dict[str, Any]]:
    """One row per update size: seconds with and without the pool, and the speed-up."""
    ctx = create_secret_context("lean")
    identities = {who: SiteIdentity.generate() for who in SITES}
    maskers = {who: _masker(identities, who) for who in SITES}
    rows = []
    with FramePool(ctx, workers=workers) as pool:
        pool.warm_up()
        for n_frames in frames:
            n = n_frames * ctx.preset.values_per_ciphertext
            x = np.random.default_rng(n_frames).normal(0.0, 0.05, n).astype(np.float32)

            def encrypt(who: str, with_pool: FramePool | None, x: np.ndarray = x) -> bytes:
                masker = maskers[who]
                return b"".join(
                    encrypt_update(
                        ctx,
                        x,
                        weight=0.25,
                        mask_digest="m",
                        contributor=who,
                        binding=masker.binding,
                        masker=masker,
                        pool=with_pool,
                    )
                )

            uploads = [encrypt(who, None) for who in SITES]
            total = io.BytesIO()
            add_updates(ctx.public(), [io.BytesIO(u) for u in uploads], total)
            aggregate = total.getvalue()
            row = {
                "frames": n_frames,
                "values": n,
                "encrypt_s": _median_s(lambda: encrypt("site-0", None), repeats),
                "encrypt_pool_s": _median_s(lambda: encrypt("site-0", pool), repeats),
                "decrypt_s": _median_s(lambda a=aggregate: decrypt_sum(ctx, [a]), repeats),
                "decrypt_pool_s": _median_s(
                    lambda a=aggregate: decrypt_sum(ctx, [a], pool=pool), repeats
                ),
            }
            row["encrypt_speedup"] = row["encrypt_s"] / row["encrypt_pool_s"]
            row["decrypt_speedup"] = row["decrypt_s"] / row["decrypt_pool_s"]
            rows.append(row)
            print(
                f"  {n_frames:>4} frames: encrypt {row['encrypt_s']:.4f} s, pool "
                f"{row['encrypt_pool_s']:.4f} s ({row['encrypt_speedup']:.2f}x); decrypt "
                f"{row['decrypt_s']:.4f} s, pool {row['decrypt_pool_s']:.4f} s "
                f"({row['decrypt_speedup']:.2f}x)",
                file=sys.stderr,
                flush=True,
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| frames | values | encrypt s | with pool | speed-up | decrypt s | with pool | speed-up |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {r['values']:,} | {r['encrypt_s']:.4f} | {r['encrypt_pool_s']:.4f} "
            f"| {r['encrypt_speedup']:.2f}x | {r['decrypt_s']:.4f} | {r['decrypt_pool_s']:.4f} "
            f"| {r['decrypt_speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedsparsify bench pool``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (median; 3)")
    parser.add_argument("--quick", action="store_true", help="1 and 4 frames only (CI)")
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    frames = (1, 4) if args.quick else FRAMES
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    started = time.perf_counter()
    rows = measure(frames, workers=args.workers, repeats=args.repeats)
    print(markdown(rows))
    if args.json:
        command = " ".join(
            ["fedsparsify bench pool", *(argv if argv is not None else sys.argv[1:])]
        )
        result = {
            "benchmark": "pool",
            "command": command,
            "git_commit": git_commit(),
            "cpus": os.cpu_count(),
            "workers": args.workers,
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "elapsed_s": time.perf_counter() - started,
            "rows": rows,
        }
        with open(args.json, "w") as fh:
            fh.write(json.dumps(result, indent=1) + "\n")
    return 0
