"""``fedsparsify demo``: brain age trained across simulated hospitals, encrypted and pruned.

The demo starts a real aggregator on a loopback port and one ``fedsparsify client`` process per
site, all over real HTTP; it prepares each site's data folder (synthetic T1 MRI from the MNI152
template, or a real NIfTI folder split by its ``site`` column), creates the federation as an
admin, opens round 0 once every site holds its key, follows the rounds live, and writes a report
comparing the sparse encrypted run with an in-process plaintext run of the same seed (and, with
``--compare``, with dense encrypted and dense plaintext federations run through the same API).

Every federation of a run shares that one aggregator; its dashboard is at ``/``, and the admin
token to sign in with is written, owner-only, to ``admin-token`` in the report directory.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

import torch

from fedsparsify.clients.launcher import (
    AggregatorProcess,
    SiteProcess,
    confirm_peers,
    start_aggregator,
    start_site,
)
from fedsparsify.clients.progress import DemoDisplay, LiveStatus, summary_lines
from fedsparsify.clients.report import Reference, RoundRow, RunResult, write_report
from fedsparsify.clients.rest import RoundStatus
from fedsparsify.clients.state import StateDir
from fedsparsify.errors import ConfigError, FedsparsifyError
from fedsparsify.platform.data import (
    COARSE_SHAPE,
    FederatedData,
    load_nifti_federation,
    make_brainage_federation,
    save_site,
)
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.runner import InProcessFederation
from fedsparsify.platform.schedules import progressive_between
from fedsparsify.platform.spec import (
    FederationSpec,
    ModelSpec,
    ScheduleSpec,
    TrainingSpec,
)

__all__ = [
    "DemoOptions",
    "RunPlan",
    "demo_runs",
    "run_demo",
    "run_demo_with_progress",
]

Preset = Literal["lean", "peer-default", "plaintext"]

log = logging.getLogger(__name__)

#: The encrypted run's final test MAE must match the plaintext run of the same seed within this
#: many years (CKKS noise of ~1e-6 per coordinate perturbs training only slightly; the bound is
#: documented in the README and checked by the demo).
MAE_TOLERANCE_Y = 1.0


@dataclass(frozen=True)
class DemoOptions:
    """What ``fedsparsify demo`` runs."""

    out_dir: Path
    sites: int = 4
    rounds: int = 60
    preset: Preset = "lean"
    data: Path | None = None
    compare: bool = False
    seed: int = 0
    subjects_per_site: int = 150
    target_sparsity: float = 0.9
    round_timeout_s: float = 90.0
    kill_site_after_round: int | None = None
    cache_dir: Path | None = None
    #: After the report, keep the aggregator (and its dashboard) up until SIGINT or SIGTERM.
    keep_serving: bool = False


@dataclass(frozen=True)
class RunPlan:
    """One federation of the demo: a name and a spec."""

    name: str
    spec: FederationSpec


def _pruning_window(rounds: int) -> tuple[int, int]:
    """Prune every round from a quarter to three quarters of the run: the model learns dense
    first, reaches the target by ``end`` and recovers under the final mask after it."""
    start = max(1, rounds // 4)
    return start, max(start, (3 * rounds) // 4)


def _spec(options: DemoOptions, *, name: str, preset: Preset, sparse: bool) -> FederationSpec:
    schedule = (
        progressive_between(options.target_sparsity, *_pruning_window(options.rounds))
        if sparse
        else ScheduleSpec(kind="none")
    )
    return FederationSpec(
        name=name,
        rounds=options.rounds,
        min_clients=options.sites,
        quorum=max(1, options.sites - 1),
        round_timeout_s=options.round_timeout_s,
        auto_advance=True,
        crypto_preset=preset,
        method="fedsparsify-global" if sparse else "fedavg",
        schedule=schedule,
        model=ModelSpec(kind="brainage", input_shape=COARSE_SHAPE, width=4),
        training=TrainingSpec(local_epochs=1, batch_size=8, lr=2e-3, optimizer="adam"),
        seed=options.seed,
    )


def demo_runs(options: DemoOptions) -> list[RunPlan]:
    """The federations the demo runs, the main (sparse, encrypted) one first."""
    runs = [
        RunPlan(
            "sparse-ckks",
            _spec(options, name="brain-age sparse", preset=options.preset, sparse=True),
        )
    ]
    if options.compare:
        runs.append(
            RunPlan(
                "dense-ckks",
                _spec(options, name="brain-age dense", preset="peer-default", sparse=False),
            )
        )
        runs.append(
            RunPlan(
                "dense-plaintext",
                _spec(options, name="brain-age plaintext", preset="plaintext", sparse=False),
            )
        )
    return runs


def prepare_data(options: DemoOptions) -> FederatedData:
    """Load or synthesise the sites' data and write one folder per site under ``out/data``."""
    if options.data is not None:
        data = load_nifti_federation(options.data, shape=COARSE_SHAPE, seed=options.seed)
    else:
        data = make_brainage_federation(
            options.sites,
            subjects_per_site=options.subjects_per_site,
            size_skew=False,
            iid=False,
            shape=COARSE_SHAPE,
            test_subjects=200,
            seed=options.seed,
            cache_dir=options.cache_dir,
        )
    if len(data.sites) != options.sites:
        raise ConfigError(
            f"the data has {len(data.sites)} sites, the demo asks for {options.sites}"
        )
    for site in data.sites:
        save_site(site, options.out_dir / "data" / site.name)
    return data


def _wait(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise FedsparsifyError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.3)


def _rows_from_history(fed: dict[str, Any]) -> list[RoundRow]:
    rows = []
    for entry in fed.get("history", []):
        metrics: dict[str, dict[str, float]] = entry.get("metrics", {})
        per_site = [m for m in metrics.values() if "sparsity" in m]

        def mean(key: str, sites: list[dict[str, float]] = per_site) -> float:
            values = [m[key] for m in sites if key in m]
            return fmean(values) if values else float("nan")

        uploads = entry.get("upload_bytes", {})
        aggregate_size = sum(entry.get("aggregate_bytes", {}).values())
        rows.append(
            RoundRow(
                round=int(entry["index"]),
                sparsity=mean("sparsity"),
                val_mae=mean("val_mae"),
                upload_bytes=mean("upload_bytes"),
                encrypt_ms=1000 * mean("encrypt_s"),
                aggregate_ms=1000 * float(entry.get("aggregation_s") or 0.0),
                contributors=len(entry.get("contributors", [])),
                participants=len(entry.get("participants", [])),
                upload_total_bytes=float(sum(sum(c.values()) for c in uploads.values())),
                download_total_bytes=float(aggregate_size * len(entry.get("contributors", []))),
            )
        )
    return rows


def _final_model_mae(
    spec: FederationSpec, data: FederatedData, state_dir: Path
) -> tuple[float, float] | None:
    """Test MAE and sparsity of the final global model a site holds (the site's own copy)."""
    checkpoint = StateDir(state_dir).load_checkpoint()
    if checkpoint is None or not checkpoint.get("final"):
        return None
    site = Site(spec, data.sites[0])
    site.load_state_dict(checkpoint["site"])
    from fedsparsify.platform.masks import sparsity

    mae = site.evaluate(data.x_test, data.y_test)["mae"]
    return mae, sparsity(site.mask)


def run_federation_over_http(
    plan: RunPlan,
    options: DemoOptions,
    data: FederatedData,
    *,
    server: AggregatorProcess,
    on_progress: Callable[[LiveStatus], None] | None = None,
) -> RunResult:
    """One federation on ``server`` with one process per site; the run's rows and metrics."""
    run_dir = options.out_dir / "runs" / plan.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    result = RunResult(plan.name, plan.spec.crypto_preset, plan.spec.method)
    started = time.monotonic()
    sites: list[SiteProcess] = []
    live = LiveStatus(plan.name, rounds=plan.spec.rounds)
    with server.admin() as admin:
        created = admin.create_federation(plan.spec.model_dump(mode="json"))
        fid = str(created["id"])
        join_code = f"{fid}:{created['enrollment_token']}"
        peers = confirm_peers(
            {site.name: run_dir / "sites" / site.name for site in data.sites},
            run_dir / "peers.txt",
        )
        try:
            for site in data.sites:
                sites.append(
                    start_site(
                        server=server.url,
                        enrollment_token=join_code,
                        data_dir=options.out_dir / "data" / site.name,
                        state_dir=run_dir / "sites" / site.name,
                        name=site.name,
                        log_dir=run_dir / "logs",
                        peers=peers,
                    )
                )
            if on_progress is not None:
                on_progress(live)
            _wait_until_ready(server, admin, fid, len(sites), sites)
            admin.start_round(fid)
            live.started = time.monotonic()
            killed: SiteProcess | None = None
            while True:
                fed = admin.get_federation(fid)
                _update_live(live, fed, admin.get_round(fid, "current"))
                if on_progress is not None:
                    on_progress(live)
                if fed["state"] in ("completed", "failed"):
                    break
                if (
                    options.kill_site_after_round is not None
                    and killed is None
                    and live.round > options.kill_site_after_round
                ):
                    killed = sites[-1]
                    killed.kill()
                    result.events.append(
                        f"{killed.name} was killed (SIGKILL) during round {live.round}; the "
                        f"federation went on with the quorum of {plan.spec.quorum} sites"
                    )
                for proc in sites:
                    if proc is not killed and not proc.alive() and proc.popen.returncode != 0:
                        raise FedsparsifyError(f"site {proc.name} failed:\n{proc.log_tail()}")
                time.sleep(0.5)
            _wait(lambda: all(not p.alive() for p in sites), timeout_s=120, what="sites to finish")
            fed = admin.get_federation(fid)
        finally:
            for proc in sites:
                proc.stop()
        result.rows = _rows_from_history(fed)
        for row in result.rows:
            if row.contributors < row.participants:
                result.events.append(
                    f"round {row.round}: {row.contributors} of {row.participants} sites uploaded; "
                    "the sum and the weights cover only those"
                )
        if fed["state"] != "completed":
            result.events.append(f"federation ended {fed['state']}: {fed.get('reason')}")
    final = _final_model_mae(plan.spec, data, run_dir / "sites" / data.sites[0].name)
    if final is not None:
        result.final_test_mae, result.final_sparsity = final
    result.wall_s = time.monotonic() - started
    return result


def _wait_until_ready(
    server: AggregatorProcess, admin: Any, fid: str, n_sites: int, sites: list[SiteProcess]
) -> None:
    def ready() -> bool:
        for proc in sites:
            if not proc.alive():
                raise FedsparsifyError(f"site {proc.name} exited early:\n{proc.log_tail()}")
        fed = admin.get_federation(fid)
        keys = fed["keys"]
        keyed = not keys["required"] or (keys["context_uploaded"] and not keys["awaiting_envelope"])
        return len(fed["participants"]) >= n_sites and bool(keyed)

    _wait(ready, timeout_s=300, what="sites to register and receive keys")


def _update_live(live: LiveStatus, fed: dict[str, Any], current: RoundStatus | None) -> None:
    if current is not None:
        live.round = current.index
        live.state = current.state
        live.uploaded = len(current.uploaded)
        live.participants = len(current.participants)
    finished = {
        int(e["index"]) for e in fed.get("history", []) if e["state"] in ("closed", "failed")
    }
    live.done = len(finished)
    closed = [r for r in _rows_from_history(fed) if r.contributors > 0 and r.val_mae == r.val_mae]
    live.row = closed[-1] if closed else None


def mean_age_mae(data: FederatedData) -> float:
    """Test MAE of the trivial model that predicts the pooled mean training age."""
    ages = torch.cat([site.y_train.double().flatten() for site in data.sites])
    return float((data.y_test.double().flatten() - ages.mean()).abs().mean())


def reference_plaintext(plan: RunPlan, data: FederatedData) -> Reference:
    """The same spec run in process without HTTP or encryption: final test MAE and sparsity."""
    federation = InProcessFederation(plan.spec, data)
    rows = federation.run()
    return Reference(
        final_test_mae=float(rows[-1]["mae"]),
        final_sparsity=float(rows[-1]["sparsity"]),
        sparsity=tuple(float(r["sparsity"]) for r in rows),
    )


def _admin_token_file(out_dir: Path, token: str) -> Path:
    """The admin token, owner-only, for signing in to the dashboard (never printed or logged)."""
    path = out_dir / "admin-token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return path


def serve_until_interrupted(server: AggregatorProcess) -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM arrives, or the aggregator exits. Both signals
    are handled here even where the shell started the demo with SIGINT ignored (a background
    job), as uvicorn does."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while server.alive() and not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(
    options: DemoOptions,
    *,
    on_progress: Callable[[LiveStatus], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_dashboard: Callable[[str, Path], None] | None = None,
    on_report: Callable[[Path, list[RunResult], Reference], None] | None = None,
) -> tuple[Path, list[RunResult], Reference]:
    """Run the demo on one aggregator; return the report's path, the runs and the in-process
    reference. ``on_dashboard(address, admin token file)`` once the aggregator is up,
    ``on_report(report, runs, reference)`` once the report is written (then, with
    ``options.keep_serving``, the aggregator stays up until interrupted)."""
    phase = on_phase or (lambda text: None)
    torch.set_num_threads(1)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    aggregator_dir = options.out_dir / "aggregator"
    shutil.rmtree(aggregator_dir, ignore_errors=True)
    admin_token = secrets.token_urlsafe(24)
    with start_aggregator(aggregator_dir, admin_token=admin_token) as server:
        token_file = _admin_token_file(options.out_dir, admin_token)
        if on_dashboard is not None:
            on_dashboard(f"{server.url}/", token_file)
        report, results, reference = _run_and_report(options, server, on_progress, phase)
        if on_report is not None:
            on_report(report, results, reference)
        if options.keep_serving:
            serve_until_interrupted(server)
    return report, results, reference


def _run_and_report(
    options: DemoOptions,
    server: AggregatorProcess,
    on_progress: Callable[[LiveStatus], None] | None,
    phase: Callable[[str], None],
) -> tuple[Path, list[RunResult], Reference]:
    phase("preparing the sites' data")
    data = prepare_data(options)
    results = [
        run_federation_over_http(plan, options, data, server=server, on_progress=on_progress)
        for plan in demo_runs(options)
    ]
    main = results[0]
    phase("running the same spec in process, without HTTP or encryption (the reference)")
    reference = reference_plaintext(demo_runs(options)[0], data)
    ref_mae, ref_sparsity = reference.final_test_mae, reference.final_sparsity
    notes = [
        f"{options.sites} sites, {options.rounds} rounds, preset {options.preset}, "
        f"seed {options.seed}",
        f"in-process plaintext run of the same spec and seed: final test MAE {ref_mae:.2f} y, "
        f"sparsity {ref_sparsity:.3f}",
        f"for scale: predicting the sites' mean training age gives a test MAE of "
        f"{mean_age_mae(data):.2f} y",
    ]
    if main.final_test_mae is not None:
        gap = abs(main.final_test_mae - ref_mae)
        verdict = "within" if gap <= MAE_TOLERANCE_Y else "OUTSIDE"
        notes.append(
            f"encrypted vs plaintext final test MAE: {main.final_test_mae:.2f} vs {ref_mae:.2f} "
            f"(gap {gap:.2f} y, {verdict} the {MAE_TOLERANCE_Y:.1f} y tolerance)"
        )
    report = write_report(
        options.out_dir,
        results,
        title="fedsparsify demo: federated brain age, sparse and encrypted",
        notes=notes,
        extra={"reference_plaintext": {"final_test_mae": ref_mae, "final_sparsity": ref_sparsity}},
        reference=reference,
    )
    return report, results, reference


def run_demo_with_progress(options: DemoOptions) -> Path:
    """:func:`run_demo` with a progress bar per federation (plain lines when stdout is not a
    terminal) and a closing summary with wall time and bytes moved."""
    from rich.console import Console

    console = Console()
    started = time.monotonic()
    console.print(
        f"[bold]fedsparsify demo[/]: {options.sites} sites, {options.rounds} rounds, "
        f"preset {options.preset}; report in {options.out_dir}",
        highlight=False,
    )
    display = DemoDisplay(console)

    def dashboard(address: str, token_file: Path) -> None:
        console.print(
            f"dashboard: {address} (sign in with the admin token in {token_file})",
            soft_wrap=True,
            highlight=False,
        )

    def closing(report: Path, results: list[RunResult], reference: Reference) -> None:
        display.__exit__(None, None, None)
        for line in summary_lines(results, reference, time.monotonic() - started):
            console.print(line, highlight=False, soft_wrap=True)
        if options.keep_serving:
            console.print("the aggregator keeps serving the dashboard: Ctrl-C to stop")

    with display:
        report, _results, _reference = run_demo(
            options,
            on_progress=display.update,
            on_phase=display.phase,
            on_dashboard=dashboard,
            on_report=closing,
        )
    return report
