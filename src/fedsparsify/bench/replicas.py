"""Upload throughput and latency on 1, 2 and 3 aggregator processes (PostgreSQL) and on SQLite.

For each setup a fresh data directory (and database) gets N ``fedsparsify serve`` processes and
R federations of K sites (K identities registered, the first one the key dealer; no pairwise
masks, which cost the server nothing), one round each.
In each round the K updates, encrypted in advance (lean CKKS, their own client id as
contributor), are uploaded all at once from K threads, site ``i`` to process ``i mod N`` (what a
load balancer in front of the processes would do). Reported: uploads per second (K over the
wall time from the first request to the last answer, summed over rounds), the p50/p99
latency of one upload (request to answer), and from ``/metrics`` (summed over the processes) the
server's seconds per upload to receive and validate it and to add it into the running sum; the
adds of one round take turns under the round's lock, whichever process holds the upload.

PostgreSQL runs with its durable defaults (fsync, synchronous commit) next to SQLite's
``synchronous=FULL``; blobs are fsynced in both. Every process and the sites share one machine:
on a small one the processes compete with each other and with the clients for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsparsify.bench.latency import machine_info
from fedsparsify.bench.postgres import LocalPostgres
from fedsparsify.bench.probes import ServerCounters, read_counters
from fedsparsify.bench.provenance import git_commit
from fedsparsify.bench.scaling import setup_federation
from fedsparsify.clients.launcher import AggregatorProcess, start_aggregator
from fedsparsify.clients.rest import AggregatorClient, Registration
from fedsparsify.crypto import RoundBinding, encrypt_update
from fedsparsify.errors import FedsparsifyError

__all__ = ["main", "measure_setup"]

MASK = "b" * 64


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _start(
    count: int, data_dir: Path, database_url: str | None, token: str
) -> list[AggregatorProcess]:
    procs: list[AggregatorProcess] = []
    try:
        for i in range(count):
            procs.append(
                start_aggregator(
                    data_dir,
                    admin_token=token,
                    database_url=database_url,
                    log_path=data_dir.parent / f"aggregator-{i}.log",
                    log_level="warning",
                )
            )
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


def _settled(admin: AggregatorClient, before: ServerCounters, uploads: int) -> ServerCounters:
    """The counters' growth over one round, once every process has written its samples (on
    PostgreSQL ``/metrics`` sums them; each process writes every second)."""
    deadline = time.monotonic() + 15.0
    while True:
        delta = read_counters(admin.metrics()) - before
        if delta.adds >= uploads or time.monotonic() > deadline:
            return delta
        time.sleep(0.2)


def _round(
    procs: list[AggregatorProcess],
    fid: str,
    index: int,
    members: list[Registration],
    bodies: list[Path],
) -> tuple[float, list[float]]:
    """Upload every body at once; the wall time and each upload's latency."""
    latencies: list[float] = [0.0] * len(members)
    errors: list[BaseException] = []
    start = threading.Barrier(len(members) + 1)

    def one(i: int) -> None:
        proc = procs[i % len(procs)]
        try:
            with AggregatorClient(proc.url, token=members[i].token, retries=0) as api:
                start.wait()
                began = time.perf_counter()
                api.upload(fid, index, "values", bodies[i])
                latencies[i] = time.perf_counter() - began
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(members))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise FedsparsifyError(f"{len(errors)} upload(s) failed; first: {errors[0]!r}")
    return wall, latencies


def measure_setup(
    database: str,
    processes: int,
    *,
    sites: int,
    values: int,
    rounds: int,
    postgres: LocalPostgres | None,
    seed: int = 0,
) -> dict[str, Any]:
    """One row: ``processes`` aggregators on ``database`` ("sqlite" or "postgresql")."""
    token = secrets.token_urlsafe(24)
    rng = np.random.default_rng(seed)
    update = rng.normal(0.0, 0.05, values).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="fedsparsify-bench-replicas-") as tmp:
        root = Path(tmp)
        url = None
        name = f"bench_{processes}_{secrets.token_hex(4)}"
        if database == "postgresql":
            assert postgres is not None
            url = postgres.create_database(name)
        procs = _start(processes, root / "data", url, token)
        try:
            admin = procs[0].admin()
            walls: list[float] = []
            latencies: list[float] = []
            counters: list[ServerCounters] = []
            upload_bytes = 0
            for r in range(rounds):
                fid, ctx, members = setup_federation(admin, sites, "lean", seed + r)
                status = admin.start_round(fid)
                binding = RoundBinding(fid, 0, status.attempt, status.participants_digest or "")
                bodies: list[Path] = []
                for reg in members:
                    path = root / f"{reg.client_id}.bin"
                    with path.open("wb") as out:
                        for chunk in encrypt_update(
                            ctx,
                            update,
                            weight=status.weights[reg.client_id],
                            mask_digest=MASK,
                            contributor=reg.client_id,
                            binding=binding,
                        ):
                            out.write(chunk)
                    bodies.append(path)
                upload_bytes = bodies[0].stat().st_size
                before = read_counters(admin.metrics())
                try:
                    wall, each = _round(procs, fid, 0, members, bodies)
                except FedsparsifyError as exc:
                    tails = "\n".join(f"--- {p.log_path.name}\n{p.log_tail(15)}" for p in procs)
                    raise FedsparsifyError(f"{exc}\n{tails}") from exc
                if not admin.get_round(fid, 0).aggregate_ready:
                    raise FedsparsifyError(f"{database} x{processes}: round {r} did not close")
                walls.append(wall)
                latencies += each
                counters.append(_settled(admin, before, sites))
                for path in bodies:
                    path.unlink()
            admin.close()
        finally:
            for p in procs:
                p.stop()
            if url is not None and postgres is not None:
                postgres.drop_database(name)
    total = sites * rounds
    return {
        "database": database,
        "processes": processes,
        "sites": sites,
        "rounds": rounds,
        "values": values,
        "upload_bytes": upload_bytes,
        "uploads": total,
        "uploads_per_s": total / sum(walls),
        "round_wall_s": walls,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p99_s": _percentile(latencies, 99),
        "latency_mean_s": statistics.fmean(latencies),
        "server_stage_s_per_upload": sum(c.stage_s for c in counters) / total,
        "server_add_s_per_upload": sum(c.add_s for c in counters) / total,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table."""
    lines = [
        "| database | processes | uploads/s | p50 upload s | p99 upload s "
        "| server validate s / upload | server add s / upload |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['database']} | {r['processes']} | {r['uploads_per_s']:.1f} | "
            f"{r['latency_p50_s']:.3f} | {r['latency_p99_s']:.3f} | "
            f"{r['server_stage_s_per_upload']:.3f} | {r['server_add_s_per_upload']:.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="8 sites, 20k values, 1 round (CI)")
    parser.add_argument("--sites", type=int, help="concurrent sites (32)")
    parser.add_argument("--values", type=int, help="values per update (100,000)")
    parser.add_argument("--rounds", type=int, help="rounds per setup (3)")
    parser.add_argument(
        "--processes", default="1,2,3", help="PostgreSQL process counts (comma-separated)"
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite row")
    parser.add_argument("--json", type=Path, help="write the result to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sites = args.sites or (8 if args.quick else 32)
    values = args.values or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 3)
    counts = [int(c) for c in args.processes.split(",") if c]
    machine = machine_info()
    print(
        f"# replicas: {sites} sites, {values:,} values, {rounds} round(s); "
        f"{machine['cpu_model']}, nproc {machine['nproc']}, "
        f"load {machine['load_average_at_start']}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    setups = ([] if args.no_sqlite else [("sqlite", 1)]) + [("postgresql", n) for n in counts]
    with LocalPostgres(durable=True) as postgres:
        for database, n in setups:
            row = measure_setup(
                database,
                n,
                sites=sites,
                values=values,
                rounds=rounds,
                postgres=postgres,
                seed=args.seed,
            )
            rows.append(row)
            print(
                f"  {database:>10} x{n}: {row['uploads_per_s']:6.1f} uploads/s, "
                f"p50 {row['latency_p50_s']:.3f}s p99 {row['latency_p99_s']:.3f}s",
                file=sys.stderr,
                flush=True,
            )
    result = {
        "benchmark": "replicas",
        "command": "fedsparsify bench replicas "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(),
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
