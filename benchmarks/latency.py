#!/usr/bin/env python
"""Dense and sparse encrypted rounds side by side over real HTTP, phase by phase.

A thin wrapper around :mod:`fedsparsify.bench.latency` (also ``fedsparsify bench latency``):
a real aggregator on loopback and K site processes run rounds for ``plaintext``,
``ckks-peer-dense``, ``ckks-lean-dense`` and ``ckks-lean-sparse`` (0.5 to 0.99 sparsity) on the
full-size BrainAge CNN and flat vectors of 1M and 10M values; then the aggregator's time and
memory against 2-32 clients and the pruned model's inference size and latency. Writes
``latency.json``, ``latency.md`` and ``latency_*.png`` to ``--out``.

    python benchmarks/latency.py --quick --out /tmp/latency   # CI: under two minutes
    python benchmarks/latency.py                              # the published run
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsparsify.bench.latency import make_config, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="100k values, 2 sites (CI)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--workloads", help="comma-separated: brainage, vec1m, vec10m, vec100k")
    parser.add_argument("--clients", type=int, help="site processes (default 2)")
    parser.add_argument("--rounds", type=int, help="rounds per row (default 3; 10M: 2)")
    parser.add_argument("--scaling-clients", help="comma-separated client counts, '' to skip")
    parser.add_argument("--no-inference", action="store_true", help="skip the inference part")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scaling = (
        None
        if args.scaling_clients is None
        else tuple(int(k) for k in args.scaling_clients.split(",") if k)
    )
    config = make_config(
        quick=args.quick,
        out_dir=args.out,
        workloads=tuple(args.workloads.split(",")) if args.workloads else None,
        clients=args.clients,
        rounds=args.rounds,
        scaling_clients=scaling,
        inference=not args.no_inference,
    )
    run(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
