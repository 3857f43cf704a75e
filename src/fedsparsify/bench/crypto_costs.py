"""What sparse CKKS updates cost, against a peer's dense parameters and plaintext.

For each preset (``lean`` seeded and public-key, ``peer-default`` public-key and seeded, and
``plaintext`` as the floor) and each sparsity (0, 0.5, 0.8, 0.9, 0.95, 0.99) of an
``n_total``-value model, K simulated clients (default 10) with N(0, 0.05) weights and
sample-count weights summing to 1 each:

- select their kept coordinates with the mask, multiply by their weight, encrypt chunk by chunk
  and write the update stream to a file (``client_s``: the median over clients, seconds),
- the aggregator adds the K streams with the public context only (``add_s``: seconds per client),
- one client decrypts the aggregate (``decrypt_s``; a seeded aggregate's second polynomials are
  rebuilt from the contributors' seeds first),
- ``max_abs_error``: max |decrypted sum - numpy's float64 weighted sum|.

``bytes`` is one client's upload (header included), ``bytes_per_kept_value`` = bytes / n_kept;
``download_bytes`` the aggregate every client downloads; ``vs_floor`` upload + download against
the ``plaintext`` row of the same sparsity (the kept values as float32, 4 bytes each). The rows
go to stdout as a Markdown table and, with ``--json PATH``, to a JSON object with the command,
the machine, the git commit and the rows (keys: :data:`KEYS`).

    python benchmarks/crypto_costs.py --quick            # 100k values (CI)
    python benchmarks/crypto_costs.py --json benchmarks/results/crypto_costs.json   # 1M
    python benchmarks/crypto_costs.py --brainage         # BrainAge's 2,948,801, 4 clients
    python benchmarks/crypto_costs.py --full             # 3M
    python benchmarks/crypto_costs.py --masking --json benchmarks/results/masking.json
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsparsify.bench.provenance import git_commit
from fedsparsify.crypto import (
    PRESETS,
    CkksPreset,
    SecretContext,
    add_updates,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
)

SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
#: Trainable parameters of the full-size BrainAge CNN (``--brainage``).
BRAINAGE_VALUES = 2_948_801
KEYS = (
    "preset",
    "seeded",
    "sparsity",
    "n_total",
    "n_kept",
    "bytes",
    "bytes_per_kept_value",
    "download_bytes",
    "download_bytes_per_kept_value",
    "vs_floor",
    "client_s",
    "add_s",
    "decrypt_s",
    "max_abs_error",
)
#: The other candidate for ``lean`` (``--candidates``): same bytes, all of N=2048's 54 bits.
CANDIDATE_2048 = CkksPreset(
    name="lean-n2048",
    encrypted=True,
    poly_modulus_degree=2048,
    coeff_mod_bit_sizes=(40, 14),
    scale_bits=32,
    seeded=True,
    complex_packing=True,
)


def variants(candidates: bool) -> list[CkksPreset]:
    """The parameter sets to measure, in table order."""
    lean, peer = PRESETS["lean"], PRESETS["peer-default"]
    out = [
        lean,
        dataclasses.replace(lean, seeded=False),
        peer,
        dataclasses.replace(peer, seeded=True),
        PRESETS["plaintext"],
    ]
    if candidates:
        out.insert(1, CANDIDATE_2048)
    return out


def client_weights(k: int, rng: np.random.Generator) -> np.ndarray:
    """Sample-count weights of k clients, summing to 1."""
    counts = rng.integers(100, 1000, k).astype(np.float64)
    return np.asarray(counts / counts.sum(), dtype=np.float64)


def keep_mask(n_total: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask keeping exactly round((1 - sparsity) * n_total) coordinates."""
    n_kept = round((1.0 - sparsity) * n_total)
    mask = np.zeros(n_total, dtype=bool)
    mask[rng.permutation(n_total)[:n_kept]] = True
    return mask


def warm_up(ctx: SecretContext) -> None:
    """Encrypt, add and decrypt one ciphertext, so that no row pays for first-call costs."""
    x = np.zeros(ctx.preset.values_per_ciphertext, dtype=np.float32)
    update = io.BytesIO(b"".join(encrypt_update(ctx, x, weight=1.0, mask_digest="warm")))
    total = io.BytesIO()
    add_updates(ctx.public(), [update], total)
    total.seek(0)
    decrypt_sum(ctx, total)


def measure(
    ctx: SecretContext,
    models: list[np.ndarray],
    weights: np.ndarray,
    mask: np.ndarray,
    sparsity: float,
    workdir: Path,
) -> dict[str, Any]:
    """One row: K clients encrypt, the aggregator adds, one client decrypts."""
    client_s, files = [], []
    for k, (model, weight) in enumerate(zip(models, weights, strict=True)):
        path = workdir / f"client-{k}.bin"
        start = time.perf_counter()
        kept = model[mask]
        with path.open("wb") as out:
            for chunk in encrypt_update(
                ctx, kept, weight=float(weight), mask_digest="bench", contributor=f"site-{k}"
            ):
                out.write(chunk)
        client_s.append(time.perf_counter() - start)
        files.append(path)
    total_path = workdir / "aggregate.bin"
    public = ctx.public()
    start = time.perf_counter()
    handles = [p.open("rb") for p in files]
    try:
        with total_path.open("wb") as out:
            add_updates(public, handles, out)
    finally:
        for handle in handles:
            handle.close()
    add_s = (time.perf_counter() - start) / len(models)
    start = time.perf_counter()
    with total_path.open("rb") as fh:
        _, total = decrypt_sum(ctx, fh)
    decrypt_s = time.perf_counter() - start
    expected = np.zeros(int(mask.sum()), dtype=np.float64)
    for model, weight in zip(models, weights, strict=True):
        expected += weight * model[mask].astype(np.float64)
    n_kept = int(mask.sum())
    size = files[0].stat().st_size
    download = total_path.stat().st_size
    for path in [*files, total_path]:
        path.unlink()
    return {
        "preset": ctx.preset.name,
        "seeded": ctx.preset.seeded,
        "sparsity": sparsity,
        "n_total": int(mask.size),
        "n_kept": n_kept,
        "bytes": size,
        "bytes_per_kept_value": size / n_kept if n_kept else float("nan"),
        "download_bytes": download,
        "download_bytes_per_kept_value": download / n_kept if n_kept else float("nan"),
        "vs_floor": None,
        "client_s": statistics.median(client_s),
        "add_s": add_s,
        "decrypt_s": decrypt_s,
        "max_abs_error": float(np.max(np.abs(total - expected))) if n_kept else 0.0,
    }


def add_floor_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_floor``: upload + download bytes against the plaintext row of the same sparsity."""
    floor = {
        r["sparsity"]: r["bytes"] + r["download_bytes"] for r in rows if r["preset"] == "plaintext"
    }
    for r in rows:
        base = floor.get(r["sparsity"])
        r["vs_floor"] = (r["bytes"] + r["download_bytes"]) / base if base else None


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (plus client µs per kept value, to show linearity)."""
    head = (
        "| preset | seeded | sparsity | n_kept | upload B | up B/kept | download B | down B/kept "
        "| vs floor | client s | client µs/kept | add s/client | decrypt s | max abs error |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        per_value = 1e6 * r["client_s"] / r["n_kept"] if r["n_kept"] else float("nan")
        vs = r["vs_floor"]
        lines.append(
            f"| {r['preset']} | {'yes' if r['seeded'] else 'no'} | {r['sparsity']:.2f} "
            f"| {r['n_kept']:,} | {r['bytes']:,} | {r['bytes_per_kept_value']:.3f} "
            f"| {r['download_bytes']:,} | {r['download_bytes_per_kept_value']:.3f} "
            f"| {'' if vs is None else f'{vs:.2f}x'} "
            f"| {r['client_s']:.3f} | {per_value:.3f} | {r['add_s']:.4f} "
            f"| {r['decrypt_s']:.3f} | {r['max_abs_error']:.1e} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="100k values (CI)")
    size.add_argument("--full", action="store_true", help="3M values")
    size.add_argument(
        "--brainage",
        action="store_true",
        help="BrainAge's 2,948,801 values with 4 clients (unless --clients says otherwise)",
    )
    size.add_argument("--n-total", type=int, help="any other model size")
    parser.add_argument("--clients", type=int, help="clients in the sum (10; --brainage: 4)")
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    parser.add_argument(
        "--candidates", action="store_true", help="also measure the N=2048 lean candidate"
    )
    parser.add_argument(
        "--only", help="comma-separated preset names to measure (default: all of them)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--secaggplus",
        action="store_true",
        help="instead: ours (pairwise-masked lean CKKS) next to Flower's SecAgg+ "
        "(needs the bench extra; skipped with a message without it)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--masking" in argv:  # the pairwise masks' cost: its own table (bench/masking.py)
        from fedsparsify.bench.masking import main as masking_main

        return masking_main([a for a in argv if a != "--masking"])
    args = parse_args(argv)
    if args.secaggplus:
        from fedsparsify.bench.side_by_side import run

        return run(
            quick=args.quick, json_path=args.json, command=["fedsparsify", "bench", "crypto", *argv]
        )
    n_total = args.n_total or (
        100_000
        if args.quick
        else 3_000_000
        if args.full
        else BRAINAGE_VALUES
        if args.brainage
        else 1_000_000
    )
    args.clients = args.clients or (4 if args.brainage else 10)
    rng = np.random.default_rng(args.seed)
    models = [rng.normal(0.0, 0.05, n_total).astype(np.float32) for _ in range(args.clients)]
    weights = client_weights(args.clients, rng)
    masks = {s: keep_mask(n_total, s, rng) for s in SPARSITIES}
    print(
        f"# crypto costs: {n_total:,} values, {args.clients} clients, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}",
        file=sys.stderr,
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="fedsparsify-bench-") as tmp:
        only = set(args.only.split(",")) if args.only else None
        for preset in variants(args.candidates):
            if only is not None and preset.name not in only:
                continue
            ctx = create_secret_context(preset)
            warm_up(ctx)
            for sparsity in SPARSITIES:
                row = measure(ctx, models, weights, masks[sparsity], sparsity, Path(tmp))
                rows.append(row)
                print(
                    f"  {row['preset']:>14} seeded={row['seeded']!s:5} s={sparsity:.2f} "
                    f"{row['bytes_per_kept_value']:6.2f} B/kept  client {row['client_s']:.3f}s",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"# done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    add_floor_ratios(rows)
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(
            ["fedsparsify bench crypto", *(argv if argv is not None else sys.argv[1:])]
        )
        result = {
            "benchmark": "crypto",
            "command": command,
            "git_commit": git_commit(),
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_at_start": load_at_start,
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "n_total": n_total,
            "clients": args.clients,
            "elapsed_s": time.perf_counter() - started,
            "rows": [{k: r[k] for k in KEYS} for r in rows],
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
