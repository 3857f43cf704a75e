"""What a simulated round costs, local against Ray, as the number of sites grows.

For each engine and site count: a federation on the synthetic task with the default
simulation spec pruned to 0.9 before round 0 (a small MLP, 692 of 6,922 weights kept plus
biases, about 830 values), lean CKKS, pairwise masks on, one CPU per site. Round 0 warms up
(Ray starts its workers, no aggregate to decrypt) and is reported apart; the other rounds give
seconds per round, bytes per round (every upload plus the aggregate each participant downloads),
the driver's peak RSS (sampled, driver process alone) and the workers' peak RSS (each worker's
own high-water mark). Pairwise masks cost each site one key agreement and one ChaCha20 stream
per other participant, so a round's work grows with the square of its participants; ``--sample
N:F`` trains a fraction of N sites per round, as large federations do.

``fedsparsify bench simulate`` or ``benchmarks/simulate.py``; ``--quick`` for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from fedsparsify.bench.probes import RssSampler
from fedsparsify.bench.provenance import git_commit
from fedsparsify.sim import Simulation, make_engine, make_source
from fedsparsify.sim.specs import default_spec

__all__ = ["KEYS", "main", "measure"]

KEYS = (
    "engine",
    "sites",
    "per_round",
    "rounds",
    "first_round_s",
    "round_s",
    "bytes_per_round",
    "upload_bytes_per_site",
    "aggregate_bytes",
    "driver_peak_mb",
    "driver_growth_mb",
    "worker_peak_mb",
    "final_accuracy",
    "sparsity",
)


def measure(
    engine_name: str, sites: int, *, rounds: int, sample: float | None, cpus: int | None
) -> dict[str, Any]:
    """One row: ``rounds`` measured rounds after a warm-up round."""
    spec = default_spec(rounds=rounds + 1, one_shot=True, target=0.9)
    source = make_source("synthetic", sites, spec)
    engine = make_engine(engine_name, num_cpus=cpus if engine_name == "ray" else None)
    sampler = RssSampler(os.getpid(), children=False)
    try:
        sampler.reset()
        baseline = sampler.current_mb()
        result = Simulation(spec, source, engine, sample=sample).run()
        peak = sampler.peak_mb()
    finally:
        sampler.close()
        engine.close()
    measured = result.rows[1:]
    return {
        "engine": engine_name,
        "sites": sites,
        "per_round": result.per_round,
        "rounds": len(measured),
        "first_round_s": result.rows[0].seconds,
        "round_s": statistics.median(r.seconds for r in measured),
        "bytes_per_round": statistics.median(r.bytes_per_round for r in measured),
        "upload_bytes_per_site": statistics.median(r.upload_bytes_per_site for r in measured),
        "aggregate_bytes": measured[-1].aggregate_bytes,
        "driver_peak_mb": peak,
        "driver_growth_mb": peak - baseline,
        "worker_peak_mb": result.worker_peak_rss_mb,
        "final_accuracy": result.final_test["accuracy"],
        "sparsity": result.final_sparsity,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's table."""
    lines = [
        "| engine | sites | per round | s/round | first round s | bytes/round | upload B/site "
        "| aggregate B | driver peak MiB (growth) | worker peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['sites']:,} | {r['per_round']:,} | {r['round_s']:.2f} "
            f"| {r['first_round_s']:.2f} | {r['bytes_per_round']:,.0f} "
            f"| {r['upload_bytes_per_site']:,.0f} | {r['aggregate_bytes']:,} "
            f"| {r['driver_peak_mb']:.0f} (+{r['driver_growth_mb']:.0f}) "
            f"| {r['worker_peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def _samples(text: str) -> dict[int, float]:
    out = {}
    for item in filter(None, text.split(",")):
        sites, _, fraction = item.partition(":")
        out[int(sites)] = float(fraction)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="4 and 8 sites, one round (CI)")
    parser.add_argument("--sites", default="10,100,1000", help="comma-separated site counts")
    parser.add_argument("--engines", default="local,ray", help="comma-separated: local, ray")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (after warm-up)")
    parser.add_argument(
        "--sample", default="1000:0.1", help="N:F pairs: train F of N sites a round"
    )
    parser.add_argument("--cpus", type=int, help="CPUs of the local Ray cluster (all)")
    parser.add_argument("--json", type=Path, help="write the rows, commit and command here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sites = [4, 8] if args.quick else [int(s) for s in args.sites.split(",") if s]
    rounds = 1 if args.quick else max(1, args.rounds)
    samples = _samples(args.sample)
    print(
        f"# simulate: sites {sites}, engines {args.engines}, {rounds} measured rounds, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    rows = []
    started = time.perf_counter()
    for n in sites:
        for engine in filter(None, args.engines.split(",")):
            row = measure(engine, n, rounds=rounds, sample=samples.get(n), cpus=args.cpus)
            rows.append(row)
            print(
                f"  {engine:>5} {n:>6,} sites ({row['per_round']:,}/round): "
                f"{row['round_s']:.2f} s/round, driver +{row['driver_growth_mb']:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    print(f"# done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "git_commit": git_commit(),
            "command": "fedsparsify bench simulate "
            + shlex.join(argv if argv is not None else sys.argv[1:]),
            "cpus": os.cpu_count(),
            "rows": [{k: r[k] for k in KEYS} for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0
