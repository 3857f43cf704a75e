"""Ours against Flower's SecAgg+ on the same values: ``fedsparsify bench crypto --secaggplus``.

For each model size (1M and 2,948,801 values, the full BrainAge CNN), each federation size (4 and
16 sites) and each of dense and "the kept values at 0.95" (5 % of the coordinates), K sites hold
N(0, 0.05) vectors with sample-count weights:

- ours: the real crypto code, lean CKKS with pairwise masks (:class:`~fedsparsify.crypto.
  PairwiseMasker`, one X25519 identity per site): each site masks and encrypts its weighted
  values and later decrypts the aggregate; the aggregator adds the K uploads with the public
  context only.
- SecAgg+: :mod:`fedsparsify.bench.secaggplus` (Flower 1.42's own stages and primitives).

Per row: per-site seconds (median), upload and download bytes per site, server seconds, and the
max |error| of the result against numpy. What each protects is in :data:`PROTECTS`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsparsify.bench.crypto_costs import warm_up
from fedsparsify.bench.secaggplus import available, run_secaggplus
from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    add_updates,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
    participants_digest,
)

__all__ = ["PROTECTS", "compare", "markdown", "run_ours"]

SIZES = (1_000_000, 2_948_801)
SITES = (4, 16)
KEPT_SPARSITY = 0.95
PROTECTS = {
    "secagg+": (
        "the server sees the sum (the aggregate model in clear) and relays the sites' public "
        "keys unsigned; an update stays hidden from the server and fewer than the threshold of "
        "colluding sites"
    ),
    "ours": (
        "the server sees nothing (CKKS ciphertexts under pairwise masks, no secret key); the "
        "server with any colluding sites learns at most the honest sites' sum; keys come from "
        "confirmed fingerprints"
    ),
}


def run_ours(
    ctx: SecretContext, vectors: list[np.ndarray], weights: np.ndarray, workdir: Path
) -> dict[str, Any]:
    """One masked, encrypted round of ``vectors`` with the real crypto code."""
    ids = [f"site-{k:02d}" for k in range(len(vectors))]
    identities = {i: SiteIdentity.generate() for i in ids}
    keys = {i: identities[i].public().mask_key for i in ids}
    binding = RoundBinding("side-by-side", 0, 0, participants_digest(keys))
    site_s, files = [], []
    for cid, vector, weight in zip(ids, vectors, weights, strict=True):
        path = workdir / f"{cid}.bin"
        start = time.perf_counter()
        masker = PairwiseMasker(
            own_id=cid,
            own_mask_private=identities[cid].mask_private,
            mask_keys=keys,
            binding=binding,
            channel="values",
        )
        with path.open("wb") as out:
            for chunk in encrypt_update(
                ctx,
                vector,
                weight=float(weight),
                mask_digest="bench",
                contributor=cid,
                binding=binding,
                masker=masker,
            ):
                out.write(chunk)
        site_s.append(time.perf_counter() - start)
        files.append(path)
    total_path = workdir / "aggregate.bin"
    start = time.perf_counter()
    handles = [p.open("rb") for p in files]
    try:
        with total_path.open("wb") as out:
            add_updates(ctx.public(), handles, out)
    finally:
        for handle in handles:
            handle.close()
    server_s = time.perf_counter() - start
    start = time.perf_counter()
    with total_path.open("rb") as fh:
        header, total = decrypt_sum(ctx, fh)
    decrypt_s = time.perf_counter() - start
    expected = np.zeros(vectors[0].size, dtype=np.float64)
    for vector, weight in zip(vectors, weights, strict=True):
        expected += weight * vector.astype(np.float64)
    row = {
        "site_s": statistics.median(site_s) + decrypt_s,
        "upload_bytes": statistics.median(p.stat().st_size for p in files),
        "download_bytes": total_path.stat().st_size,
        "server_s": server_s,
        "max_abs_error": float(np.max(np.abs(total / header.weight - expected))),
    }
    for path in [*files, total_path]:
        path.unlink()
    return row


def compare(
    *, sizes: tuple[int, ...] = SIZES, sites: tuple[int, ...] = SITES, seed: int = 0
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for ours and (when flwr imports) SecAgg+; the second value says why SecAgg+ was
    skipped, or is None."""
    skipped = available()
    rng = np.random.default_rng(seed)
    ctx = create_secret_context("lean")
    warm_up(ctx)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedsparsify-side-by-side-") as tmp:
        for n_total in sizes:
            for k in sites:
                samples = rng.integers(100, 1000, k)
                weights = samples / samples.sum()
                full = [rng.normal(0.0, 0.05, n_total).astype(np.float32) for _ in range(k)]
                n_kept = round((1.0 - KEPT_SPARSITY) * n_total)
                kept_at = np.sort(rng.permutation(n_total)[:n_kept])
                for mode, vectors in (
                    ("dense", full),
                    ("kept at 0.95", [v[kept_at] for v in full]),
                ):
                    base = {
                        "n_total": n_total,
                        "sites": k,
                        "mode": mode,
                        "n_values": vectors[0].size,
                    }
                    ours = run_ours(ctx, vectors, weights, Path(tmp))
                    rows.append({"system": "ours (lean CKKS + pairwise masks)", **base, **ours})
                    if skipped is None:
                        peer = run_secaggplus(vectors, [int(s) for s in samples])
                        rows.append({"system": "Flower SecAgg+ 1.42", **base, **peer})
    return rows, skipped


def markdown(rows: list[dict[str, Any]], skipped: str | None) -> str:
    """The rows as a Markdown table, then what each system protects."""
    lines = [
        "| system | values in the model | sites | what is sent | values sent | per-site s "
        "| upload B/site | download B/site | server s | max abs error |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['n_total']:,} | {r['sites']} | {r['mode']} | {r['n_values']:,} "
            f"| {r['site_s']:.3f} | {int(r['upload_bytes']):,} | {int(r['download_bytes']):,} "
            f"| {r['server_s']:.3f} | {r['max_abs_error']:.1e} |"
        )
    lines.append("")
    lines.append("| system | what it protects |")
    lines.append("|---|---|")
    lines.append(f"| Flower SecAgg+ 1.42 | {PROTECTS['secagg+']} |")
    lines.append(f"| ours | {PROTECTS['ours']} |")
    if skipped:
        lines.append("")
        lines.append(f"SecAgg+ skipped: {skipped}")
    return "\n".join(lines)


def run(*, quick: bool, json_path: Path | None, command: list[str]) -> int:
    """Measure, print the table, write ``json_path`` (with provenance); 0 on success."""
    import json
    import sys

    from fedsparsify.bench.provenance import provenance

    record = provenance(command)
    started = time.perf_counter()
    sizes, sites = ((100_000,), (4,)) if quick else (SIZES, SITES)
    rows, skipped = compare(sizes=sizes, sites=sites)
    if skipped:
        print(f"# SecAgg+ skipped: {skipped}", file=sys.stderr)
    table = markdown(rows, skipped)
    print(table)
    if json_path is not None:
        report = {
            "benchmark": "secaggplus-side-by-side",
            **record,
            "quick": quick,
            "rows": rows,
            "protects": PROTECTS,
            "secaggplus_skipped": skipped,
            "seconds": round(time.perf_counter() - started, 1),
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
    return 0
