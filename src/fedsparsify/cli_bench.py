"""``fedsparsify bench``: the benchmarks, each a thin typed front to its module in
:mod:`fedsparsify.bench` (the scripts in ``benchmarks/`` run the same code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedsparsify.cli_common import fail
from fedsparsify.errors import ConfigError

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks (the scripts in benchmarks/ run the same code).")


def _flag_args(**options: object) -> list[str]:
    """Keyword options as the benchmark scripts' command line (``None``/``False`` left out)."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.rstrip("_").replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)] if value else []
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def _split(value: str | None) -> list[str] | None:
    return [v for v in value.split(",") if v] if value else None


@bench_app.command("crypto")
def bench_crypto(
    quick: Annotated[bool, typer.Option(help="100k values (CI)")] = False,
    full: Annotated[bool, typer.Option(help="3M values")] = False,
    brainage: Annotated[
        bool, typer.Option(help="BrainAge's 2,948,801 values (4 clients unless --clients)")
    ] = False,
    n_total: Annotated[int | None, typer.Option(min=1, help="any other model size")] = None,
    clients: Annotated[
        int | None, typer.Option(min=1, help="clients in the sum (10; --brainage: 4)")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the rows to this JSON file")
    ] = None,
    candidates: Annotated[
        bool, typer.Option(help="also measure the N=2048 lean candidate")
    ] = False,
    only: Annotated[
        str | None, typer.Option(help="comma-separated preset names (default: all)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the values")] = 0,
    secaggplus: Annotated[
        bool,
        typer.Option(
            help="instead: ours (pairwise-masked lean CKKS) next to Flower's SecAgg+ at 1M and "
            "2,948,801 values, 4 and 16 sites (needs the bench extra; skipped with a message)"
        ),
    ] = False,
    masking: Annotated[
        bool,
        typer.Option(
            help="instead: what the pairwise masks cost a site (BrainAge at 0.95; 4, 16 and "
            "100 participants; `bench masking` has the options)"
        ),
    ] = False,
) -> None:
    """What sparse CKKS updates cost per preset and sparsity, without a network."""
    from fedsparsify.bench.crypto_costs import main as crypto_main

    if masking:
        from fedsparsify.bench.masking import main as masking_main

        raise typer.Exit(masking_main(_flag_args(quick=quick, json=json_out)))

    if sum((quick, full, brainage, n_total is not None)) > 1:
        raise typer.BadParameter(
            "choose one of --quick, --full, --brainage, --n-total", param_hint="--quick"
        )
    argv = _flag_args(
        quick=quick,
        full=full,
        brainage=brainage,
        n_total=n_total,
        clients=clients,
        json=json_out,
        candidates=candidates,
        only=only,
        seed=seed,
        secaggplus=secaggplus,
    )
    raise typer.Exit(crypto_main(argv))


@bench_app.command("pool")
def bench_pool(
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="runs per size (median)")] = 3,
    quick: Annotated[bool, typer.Option(help="1 and 4 frames only (CI)")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the rows to this JSON file")
    ] = None,
) -> None:
    """When encrypting and decrypting frames in worker processes pays, on this machine."""
    from fedsparsify.bench.pool import main as pool_main

    argv = _flag_args(workers=workers, repeats=repeats, quick=quick, json=json_out)
    raise typer.Exit(pool_main(argv))


@bench_app.command("masking")
def bench_masking(
    participants: Annotated[str, typer.Option(help="comma-separated participant counts")] = (
        "4,16,100"
    ),
    workload: Annotated[str, typer.Option(help="brainage, vec1m or vec100k")] = "brainage",
    sparsity: Annotated[float, typer.Option(min=0.0, max=0.999)] = 0.95,
    repeats: Annotated[int, typer.Option(min=1, help="runs per row (median)")] = 3,
    quick: Annotated[bool, typer.Option(help="vec100k, 4 and 16 participants (CI)")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write rows and provenance to this JSON file")
    ] = None,
) -> None:
    """What the pairwise masks cost a site per round (expansion, encryption), and the sum's
    error against the result grid."""
    from fedsparsify.bench.masking import main as masking_main

    argv = _flag_args(
        participants=participants,
        workload=workload,
        sparsity=sparsity,
        repeats=repeats,
        quick=quick,
        json=json_out,
    )
    raise typer.Exit(masking_main(argv))


def _sparsities(text: str) -> tuple[float, ...]:
    """``--sparsities`` as floats (a clear error naming the bad entry)."""
    out = []
    for part in text.split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"--sparsities: {part!r} is not a number") from None
    return tuple(out)


@bench_app.command("accuracy")
def bench_accuracy(
    quick: Annotated[bool, typer.Option(help="tiny CI run: few rounds, s=0.9")] = False,
    out: Annotated[Path | None, typer.Option(help="results folder")] = None,
    datasets: Annotated[str | None, typer.Option(help="comma-separated: digits, brainage")] = None,
    targets: Annotated[
        str | None, typer.Option(help="comma-separated target sparsities, e.g. 0.8,0.9")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated methods (default: all five)")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="comma-separated data and model seeds (default 0,1,2)")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="brain-age volume cache")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads per job")] = 1,
    jobs: Annotated[int, typer.Option(min=1, help="federations run in parallel")] = 1,
    resume: Annotated[
        bool, typer.Option(help="store each finished run and reuse stored runs of the same setup")
    ] = False,
    stored_only: Annotated[
        bool, typer.Option(help="report the stored runs only, run nothing (lists the missing)")
    ] = False,
    device: Annotated[str | None, typer.Option(help="e.g. cuda (default: CPU)")] = None,
) -> None:
    """FedAvg against FedSparsify and its baselines at target sparsities over seeds (mean ± std
    of each run's last-5-round test metric), in process."""
    from fedsparsify.bench.accuracy import main as accuracy_main

    argv = _flag_args(
        quick=quick,
        out=out,
        datasets=_split(datasets),
        targets=_split(targets),
        methods=_split(methods),
        seeds=_split(seeds),
        cache_dir=cache_dir,
        threads=threads,
        jobs=jobs,
        resume=resume,
        stored_only=stored_only,
        device=device,
    )
    raise typer.Exit(accuracy_main(argv))


@bench_app.command("privacy")
def bench_privacy(
    quick: Annotated[bool, typer.Option(help="tiny federation, 2 seeds (CI)")] = False,
    out: Annotated[Path | None, typer.Option(help="folder for privacy.json")] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds (default 0,1,2)")] = None,
    references: Annotated[
        int | None, typer.Option(min=1, help="reference federations of the calibrated attack")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="brain-age volume cache")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 1,
    resume: Annotated[
        bool, typer.Option(help="store finished references and targets and reuse them")
    ] = False,
) -> None:
    """Membership inference against the final brain-age models (FedAvg, FedSparsify 0.9 and
    0.95) and against what the aggregator stores."""
    from fedsparsify.bench.privacy import main as privacy_main

    argv = _flag_args(
        quick=quick,
        out=out,
        seeds=_split(seeds),
        references=references,
        cache_dir=cache_dir,
        threads=threads,
        resume=resume,
    )
    raise typer.Exit(privacy_main(argv))


@bench_app.command("replicas")
def bench_replicas(
    quick: Annotated[bool, typer.Option(help="8 sites, 20k values, 1 round (CI)")] = False,
    sites: Annotated[int | None, typer.Option(min=1, help="concurrent sites (32)")] = None,
    values: Annotated[int | None, typer.Option(min=1, help="values per update (100,000)")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="rounds per setup (3)")] = None,
    processes: Annotated[
        str, typer.Option(help="PostgreSQL process counts (comma-separated)")
    ] = "1,2,3",
    no_sqlite: Annotated[bool, typer.Option(help="skip the SQLite row")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result to this JSON file")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the values")] = 0,
) -> None:
    """Upload throughput and latency of concurrent sites on 1, 2 and 3 aggregator processes on
    PostgreSQL against one on SQLite."""
    from fedsparsify.bench.replicas import main as replicas_main

    argv = _flag_args(
        quick=quick,
        sites=sites,
        values=values,
        rounds=rounds,
        processes=processes,
        no_sqlite=no_sqlite,
        json=json_out,
        seed=seed,
    )
    raise typer.Exit(replicas_main(argv))


@bench_app.command("simulate")
def bench_simulate(
    quick: Annotated[bool, typer.Option(help="4 and 8 sites, one round (CI)")] = False,
    sites: Annotated[str, typer.Option(help="comma-separated site counts")] = "10,100,1000",
    engines: Annotated[str, typer.Option(help="comma-separated: local, ray")] = "local,ray",
    rounds: Annotated[int, typer.Option(min=1, help="measured rounds (after warm-up)")] = 2,
    sample: Annotated[
        str, typer.Option(help="N:F pairs: train F of N sites a round ('' for all)")
    ] = "1000:0.1",
    cpus: Annotated[int | None, typer.Option(min=1, help="CPUs of the local Ray cluster")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the rows, commit and command here")
    ] = None,
) -> None:
    """Seconds, bytes and memory per simulated round for 10, 100 and 1,000 sites, local
    against Ray."""
    from fedsparsify.bench.simulate import main as simulate_main

    argv = _flag_args(
        quick=quick,
        sites=sites,
        engines=engines,
        rounds=rounds,
        sample=sample,
        cpus=cpus,
        json=json_out,
    )
    raise typer.Exit(simulate_main(argv))


@bench_app.command("latency")
def bench_latency(
    quick: Annotated[bool, typer.Option(help="100k values, 2 sites, 1 round (CI)")] = False,
    out: Annotated[Path, typer.Option(help="where latency.json/.md/.png go")] = Path(
        "benchmarks/results"
    ),
    workloads: Annotated[
        str | None, typer.Option(help="comma-separated: brainage, vec1m, vec10m, vec100k")
    ] = None,
    clients: Annotated[
        int | None, typer.Option(help="site processes (default 4; --quick: 2)")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="rounds per row (default 3)")] = None,
    scaling_clients: Annotated[
        str | None, typer.Option(help="comma-separated client counts; '' skips")
    ] = None,
    inference: Annotated[bool, typer.Option(help="measure the pruned model's inference")] = True,
    modes: Annotated[
        str | None,
        typer.Option(help="comma-separated modes, e.g. ckks-peer-dense,ckks-lean-sparse"),
    ] = None,
    sparsities: Annotated[
        str | None, typer.Option(help="comma-separated sparsities of the sparse modes, e.g. 0.95")
    ] = None,
    site_poll_s: Annotated[
        float | None, typer.Option(help="how often the sites poll (default 0.5 s, the client's)")
    ] = None,
    site_threads: Annotated[
        int | None, typer.Option(help="torch threads per site (default 1; 0: one per core)")
    ] = None,
    site_evaluate: Annotated[
        bool, typer.Option(help="sites evaluate their model each round, as users' do")
    ] = False,
) -> None:
    """Dense and sparse encrypted rounds over real HTTP, phase by phase, with the aggregator's
    scaling and the pruned model's inference costs."""
    from fedsparsify.bench.latency import make_config, run
    from fedsparsify.errors import FedsparsifyError

    try:
        config = make_config(
            quick=quick,
            out_dir=out,
            workloads=tuple(workloads.split(",")) if workloads else None,
            clients=clients,
            rounds=rounds,
            scaling_clients=None
            if scaling_clients is None
            else tuple(int(k) for k in scaling_clients.split(",") if k),
            inference=inference,
            modes=tuple(modes.split(",")) if modes else None,
            sparsities=_sparsities(sparsities) if sparsities else None,
            site_poll_s=site_poll_s,
            site_threads=site_threads,
            site_evaluate=site_evaluate,
        )
        run(config)
    except FedsparsifyError as exc:
        raise fail(exc) from exc
