"""What pairwise masks cost one site: seconds and PRG bytes per round, with the upload unchanged.

For K participants (default 4, 16 and 100, a complete graph: every pair masks) one site derives
its K-1 pair seeds (X25519 + HKDF) and expands them with ChaCha20 into residues for every
ciphertext of its update, on the full-size BrainAge model pruned to 0.95 (its kept coordinates
under the ``lean`` preset). Measured with the real code path (:class:`PairwiseMasker`, the
update encrypted by :func:`encrypt_update` with and without its masker):

- ``derive_s``: the K-1 key agreements and HKDFs;
- ``mask_s``: expanding every frame's mask (all pairs);
- ``encrypt_plain_s`` / ``encrypt_masked_s``: the whole encryption without / with the masks;
- ``prg_bytes``: ChaCha20 output consumed; ``upload_bytes_plain`` / ``upload_bytes_masked``;
- ``sum_max_error``: the largest error of the decrypted average of K masked updates (one
  ciphertext each, N(0, 0.05) values, equal weights) against numpy, beside the result grid the
  sites round to (:data:`~fedsparsify.platform.round_rules.RESULT_GRID`).

    fedsparsify bench crypto --masking [--participants 4,16,100] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsparsify.bench.provenance import provenance
from fedsparsify.bench.workloads import build_workload
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
from fedsparsify.platform.round_rules import RESULT_GRID

__all__ = ["main", "measure_masking"]

KEYS = (
    "participants",
    "n_kept",
    "frames",
    "derive_s",
    "mask_s",
    "encrypt_plain_s",
    "encrypt_masked_s",
    "prg_bytes",
    "upload_bytes_plain",
    "upload_bytes_masked",
    "sum_max_error",
    "result_grid",
)


def _kept_values(workload: str, sparsity: float) -> np.ndarray:
    work = build_workload(workload, seed=0)
    return work.layout(sparsity).flatten(work.state)


def _encrypt(ctx: Any, values: np.ndarray, binding: RoundBinding, masker: Any) -> tuple[float, int]:
    started = time.perf_counter()
    size = sum(
        len(chunk)
        for chunk in encrypt_update(
            ctx,
            values,
            weight=0.25,
            mask_digest="m",
            contributor="site-000",
            binding=binding,
            masker=masker,
        )
    )
    return time.perf_counter() - started, size


def _sum_error(ctx: Any, k: int) -> float:
    """Max |decrypted average - numpy| for K masked updates of one ciphertext each."""
    rng = np.random.default_rng(k)
    n = ctx.preset.values_per_ciphertext
    ids = [f"site-{i:03d}" for i in range(k)]
    identities = {i: SiteIdentity.generate() for i in ids}
    keys = {i: identities[i].public().mask_key for i in ids}
    binding = RoundBinding("bench", 0, 0, participants_digest(keys))
    xs = [rng.normal(0.0, 0.05, n).astype(np.float32) for _ in ids]
    streams = []
    for i, x in zip(ids, xs, strict=True):
        masker = PairwiseMasker(
            own_id=i,
            own_mask_private=identities[i].mask_private,
            mask_keys=keys,
            binding=binding,
            channel="values",
        )
        streams.append(
            b"".join(
                encrypt_update(
                    ctx,
                    x,
                    weight=1 / k,
                    mask_digest="m",
                    contributor=i,
                    binding=binding,
                    masker=masker,
                )
            )
        )
    out = io.BytesIO()
    add_updates(ctx.public(), [io.BytesIO(s) for s in streams], out)
    header, total = decrypt_sum(ctx, io.BytesIO(out.getvalue()))
    want = np.mean(np.stack([x.astype(np.float64) for x in xs]), axis=0)
    return float(np.abs(total / header.weight - want).max())


def measure_masking(
    participants: tuple[int, ...] = (4, 16, 100),
    *,
    workload: str = "brainage",
    sparsity: float = 0.95,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """One row per participant count (medians over ``repeats``)."""
    ctx = create_secret_context("lean")
    values = _kept_values(workload, sparsity)
    frames = -(-values.size // ctx.preset.values_per_ciphertext)
    moduli, ring = ctx.public().moduli, ctx.preset.poly_modulus_degree
    rows = []
    for k in participants:
        ids = [f"site-{i:03d}" for i in range(k)]
        identities = {i: SiteIdentity.generate() for i in ids}
        keys = {i: identities[i].public().mask_key for i in ids}
        binding = RoundBinding("bench", 0, 0, participants_digest(keys))
        timings: dict[str, list[float]] = {"derive": [], "mask": [], "plain": [], "masked": []}
        prg = sizes_plain = sizes_masked = 0
        for _ in range(repeats):
            started = time.perf_counter()
            masker = PairwiseMasker(
                own_id=ids[0],
                own_mask_private=identities[ids[0]].mask_private,
                mask_keys=keys,
                binding=binding,
                channel="values",
            )
            timings["derive"].append(time.perf_counter() - started)
            started = time.perf_counter()
            for frame in range(frames):
                masker.frame_mask(frame, moduli, ring)
            timings["mask"].append(time.perf_counter() - started)
            prg = masker.prg_bytes
            seconds, sizes_plain = _encrypt(ctx, values, binding, None)
            timings["plain"].append(seconds)
            seconds, sizes_masked = _encrypt(ctx, values, binding, masker)
            timings["masked"].append(seconds)
        row = {
            "participants": k,
            "n_kept": int(values.size),
            "frames": frames,
            "derive_s": statistics.median(timings["derive"]),
            "mask_s": statistics.median(timings["mask"]),
            "encrypt_plain_s": statistics.median(timings["plain"]),
            "encrypt_masked_s": statistics.median(timings["masked"]),
            "prg_bytes": prg,
            "upload_bytes_plain": sizes_plain,
            "upload_bytes_masked": sizes_masked,
            "sum_max_error": _sum_error(ctx, k),
            "result_grid": RESULT_GRID,
        }
        rows.append(row)
        print(
            f"  K={k:>4}: derive {row['derive_s']:.4f}s, masks {row['mask_s']:.3f}s, "
            f"{prg / 1e6:.1f} MB PRG, upload {sizes_plain:,} -> {sizes_masked:,} B",
            file=sys.stderr,
            flush=True,
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table."""
    lines = [
        "| participants | kept values | frames | derive s | masks s | PRG bytes "
        "| encrypt s, no masks | encrypt s, masked | upload bytes, no masks "
        "| upload bytes, masked | max error of the K-site average |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['participants']} | {r['n_kept']:,} | {r['frames']} | {r['derive_s']:.4f} | "
            f"{r['mask_s']:.3f} | {r['prg_bytes']:,} | {r['encrypt_plain_s']:.3f} | "
            f"{r['encrypt_masked_s']:.3f} | {r['upload_bytes_plain']:,} | "
            f"{r['upload_bytes_masked']:,} | {r['sum_max_error']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table; with ``--json`` write rows and provenance."""
    parser = argparse.ArgumentParser(
        prog="fedsparsify bench crypto --masking", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--participants", default="4,16,100", help="comma-separated counts")
    parser.add_argument("--workload", default="brainage", help="brainage or vec1m, vec100k")
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="vec100k, 4 and 16 participants")
    parser.add_argument("--json", type=Path, help="write rows and provenance here")
    args = parser.parse_args(argv)
    participants = tuple(int(k) for k in args.participants.split(",") if k)
    workload = args.workload
    if args.quick:
        participants, workload, args.repeats = (4, 16), "vec100k", 1
    rows = measure_masking(
        participants, workload=workload, sparsity=args.sparsity, repeats=args.repeats
    )
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        body = {"provenance": provenance(), "workload": workload, "sparsity": args.sparsity}
        body["rows"] = [{k: r[k] for k in KEYS} for r in rows]
        args.json.write_text(json.dumps(body, indent=1) + "\n")
    return 0
