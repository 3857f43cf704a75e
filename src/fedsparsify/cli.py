"""The ``fedsparsify`` command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedsparsify import __version__
from fedsparsify.cli_db import db_app

if TYPE_CHECKING:
    from fedsparsify.clients.rest import AggregatorClient

app = typer.Typer(
    help="fedsparsify: federated training with progressive pruning and sparse CKKS aggregation.",
    no_args_is_help=True,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="ciphertext blobs, and the SQLite database by default (default: "
            "$FEDSPARSIFY_DATA_DIR); with PostgreSQL, a directory every process mounts"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="postgresql+psycopg://user:password@host/db to run several processes on one "
            "database (default: $FEDSPARSIFY_DATABASE_URL, else SQLite in --data-dir)"
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    tls_cert: Annotated[
        Path | None, typer.Option(help="serve HTTPS: PEM certificate (chain), with --tls-key")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --tls-cert (unencrypted)")
    ] = None,
    shutdown_timeout_s: Annotated[
        int,
        typer.Option(
            help="on SIGTERM, wait at most this long for requests in flight and open "
            "connections (idle TLS keep-alive ones would otherwise hold the exit for 30 s)"
        ),
    ] = 5,
) -> None:
    """Run the aggregator (REST API; OpenAPI at /docs). Other settings: FEDSPARSIFY_* env.

    SQLite (default): one process per data directory; a second one exits at once, naming the
    first. PostgreSQL: start as many as you like on one database and one shared --data-dir.
    Refuses a database whose schema is older than this release (run `fedsparsify db upgrade`);
    an empty database is created at the newest schema."""
    import uvicorn

    from fedsparsify.api import Settings, create_app
    from fedsparsify.errors import FedsparsifyError

    check_tls_files(tls_cert, tls_key)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_options(data_dir=data_dir, database_url=database_url)
    try:
        aggregator = create_app(settings)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    uvicorn.run(
        aggregator,
        host=host,
        port=port,
        log_level=log_level.lower(),
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        timeout_graceful_shutdown=max(1, shutdown_timeout_s),
    )


def check_tls_files(cert: Path | None, key: Path | None) -> None:
    """Both or neither; readable, PEM, and the key belongs to the certificate."""
    import ssl

    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise typer.BadParameter(
            "HTTPS needs both --tls-cert and --tls-key",
            param_hint="--tls-key" if cert is not None else "--tls-cert",
        )
    for path, hint in ((cert, "--tls-cert"), (key, "--tls-key")):
        try:
            path.read_bytes()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint=hint
            ) from exc
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            cert, key, password=lambda: b""
        )
    except ssl.SSLError as exc:
        raise typer.BadParameter(
            f"{cert} and {key} are not a PEM certificate and its unencrypted private key: {exc}",
            param_hint="--tls-cert/--tls-key",
        ) from exc


# -- admin: federations -------------------------------------------------------------------

federation_app = typer.Typer(
    help="Create and drive federations (admin token: --admin-token or $FEDSPARSIFY_ADMIN_TOKEN).",
    no_args_is_help=True,
)
app.add_typer(federation_app, name="federation")

ServerOpt = Annotated[str, typer.Option("--server", help="aggregator URL, e.g. http://host:8000")]
AdminOpt = Annotated[
    str, typer.Option("--admin-token", envvar="FEDSPARSIFY_ADMIN_TOKEN", help="admin bearer token")
]
CaOpt = Annotated[
    Path | None, typer.Option("--ca", help="CA bundle that signed the aggregator's TLS certificate")
]


def _admin(server: str, token: str, ca: Path | None) -> AggregatorClient:
    from fedsparsify.clients.rest import AggregatorClient

    return AggregatorClient(server, token=token, verify=str(ca) if ca else True)


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg="red")
    return typer.Exit(code=1)


@federation_app.command("create")
def federation_create(
    server: ServerOpt,
    admin_token: AdminOpt,
    spec: Annotated[
        Path | None, typer.Option(help="federation spec as JSON (see FederationSpec)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="name, when no --spec is given")] = None,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    min_clients: Annotated[int | None, typer.Option(help="override min_clients")] = None,
    preset: Annotated[str | None, typer.Option(help="lean, peer-default or plaintext")] = None,
    ca: CaOpt = None,
) -> None:
    """Create a federation; prints its id and the join code sites pass to `client --enroll`."""
    import json

    from fedsparsify.errors import FedsparsifyError
    from fedsparsify.platform.spec import FederationSpec

    try:
        body: dict[str, object] = json.loads(spec.read_text()) if spec else {}
        overrides = {
            "name": name,
            "rounds": rounds,
            "min_clients": min_clients,
            "crypto_preset": preset,
        }
        body.update({k: v for k, v in overrides.items() if v is not None})
        if "quorum" not in body and "min_clients" in body:
            body["quorum"] = body["min_clients"]
        parsed = FederationSpec.model_validate(body)
        created = _admin(server, admin_token, ca).create_federation(parsed.model_dump(mode="json"))
    except (OSError, ValueError, FedsparsifyError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"federation: {created['id']}")
    typer.echo(f"join code (shown once): {created['id']}:{created['enrollment_token']}")


@federation_app.command("list")
def federation_list(server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None) -> None:
    """List federations: id, name, state, current round."""
    from fedsparsify.errors import FedsparsifyError

    try:
        rows = _admin(server, admin_token, ca).list_federations()
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    for row in rows:
        typer.echo(
            f"{row['id']}  {row['name']:<24} {row['state']:<10} round {row.get('current_round')}"
        )


@federation_app.command("show")
def federation_show(
    federation_id: str, server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None
) -> None:
    """Show one federation (state, participants, per-round history) as JSON."""
    import json

    from fedsparsify.errors import FedsparsifyError

    try:
        fed = _admin(server, admin_token, ca).get_federation(federation_id)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(fed, indent=2))


@federation_app.command("start-round")
def federation_start_round(
    federation_id: str, server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None
) -> None:
    """Open the next round (with auto_advance, later rounds open by themselves)."""
    from fedsparsify.errors import FedsparsifyError

    try:
        status = _admin(server, admin_token, ca).start_round(federation_id)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"round {status.index}: {status.state}, participants {len(status.participants)}")


@federation_app.command("members")
def federation_members(
    federation_id: str, server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None
) -> None:
    """List members: name, id, fingerprint (as registered), samples, dealer, key, removed."""
    from fedsparsify.errors import FedsparsifyError

    try:
        members = _admin(server, admin_token, ca).list_clients(federation_id)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    for m in members:
        flags = [
            "dealer" if m["is_dealer"] else "",
            "key" if m["has_envelope"] or m["is_dealer"] else "no key",
            "REMOVED" if m["removed"] else "",
        ]
        typer.echo(
            f"{m['name']:<24} {m['id']}  {m['fingerprint']}  {m['num_samples']:>8} samples  "
            + " ".join(f for f in flags if f)
        )


@federation_app.command("rotate-code")
def federation_rotate_code(
    federation_id: str,
    server: ServerOpt,
    admin_token: AdminOpt,
    max_uses: Annotated[int | None, typer.Option(help="registrations it allows")] = None,
    expires_after_s: Annotated[float | None, typer.Option(help="lifetime in seconds")] = None,
    ca: CaOpt = None,
) -> None:
    """Issue a new join code (the old one stops working at once); prints it once."""
    from fedsparsify.errors import FedsparsifyError

    try:
        out = _admin(server, admin_token, ca).rotate_join_code(
            federation_id, max_uses=max_uses, expires_after_s=expires_after_s
        )
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"join code (shown once): {out['join_code']}")
    typer.echo(f"valid for {out['max_uses']} registration(s) until {out['expires_at']}")


@federation_app.command("revoke-code")
def federation_revoke_code(
    federation_id: str, server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None
) -> None:
    """Stop the join code: no one registers until `rotate-code` issues a new one."""
    from fedsparsify.errors import FedsparsifyError

    try:
        _admin(server, admin_token, ca).revoke_join_code(federation_id)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo("join code revoked")


@federation_app.command("remove-member")
def federation_remove_member(
    federation_id: str, client_id: str, server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None
) -> None:
    """Remove a member: its token stops working and no new round includes it."""
    from fedsparsify.errors import FedsparsifyError

    try:
        out = _admin(server, admin_token, ca).remove_client(federation_id, client_id)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"removed {out['client_id']} at {out['removed_at']}")


# -- a site ---------------------------------------------------------------------------------


def split_join_code(code: str, federation: str | None) -> tuple[str, str]:
    """``FEDERATION_ID:TOKEN`` (as `federation create` prints it) → (federation id, token)."""
    if federation:
        return federation, code
    fid, sep, token = code.partition(":")
    if not sep or not fid or not token:
        raise typer.BadParameter(
            "pass the join code FEDERATION_ID:TOKEN printed by `federation create`, "
            "or --federation ID with the bare token",
            param_hint="--enroll",
        )
    return fid, token


@app.command()
def client(
    server: ServerOpt,
    data: Annotated[
        Path,
        typer.Option(
            help="this site's data: a NIfTI folder with participants.tsv, or a saved site folder"
        ),
    ],
    enroll: Annotated[
        str | None,
        typer.Option(
            help="join code FEDERATION_ID:TOKEN (first start only; then the saved "
            "credentials in --state are used)"
        ),
    ] = None,
    federation: Annotated[
        str | None, typer.Option(help="federation id (if --enroll is a bare token, or to resume)")
    ] = None,
    state: Annotated[
        Path, typer.Option(help="this site's own state directory (keys, credentials, checkpoints)")
    ] = Path(".fedsparsify-site"),
    name: Annotated[str | None, typer.Option(help="site name shown to the federation")] = None,
    ca: CaOpt = None,
    peers: Annotated[
        Path | None,
        typer.Option(
            help="the sites you confirmed out of band: lines of 'name fingerprint' (see "
            "`fedsparsify identity`); you act only with these"
        ),
    ] = None,
    trust_aggregator_roster: Annotated[
        bool,
        typer.Option(
            "--trust-aggregator-roster",
            help="act with every member the aggregator lists, unconfirmed ones included "
            "(for trying things out: the aggregator could then read your updates)",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Join a federation as a site and take part in every round until it completes."""
    from fedsparsify.clients.runtime import ClientRuntime
    from fedsparsify.clients.state import StateDir
    from fedsparsify.errors import EnvelopeError, FedsparsifyError, TrustError
    from fedsparsify.platform.data import load_site

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        saved = StateDir(state).credentials
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    if enroll is not None:
        fid, token = split_join_code(enroll, federation)
    elif saved is not None:
        fid, token = federation or saved.federation_id, ""
    else:
        raise typer.BadParameter("first start needs --enroll", param_hint="--enroll")
    try:
        runtime = ClientRuntime(
            server=server,
            federation_id=fid,
            enrollment_token=token or None,
            data_loader=lambda shape: load_site(data, input_shape=shape),
            state_dir=state,
            name=name,
            verify=str(ca) if ca else True,
            peers=peers,
            trust_aggregator_roster=trust_aggregator_roster,
        )
        reports = runtime.run()
    except (TrustError, EnvelopeError) as exc:
        typer.secho(f"refused: {exc}", err=True, fg="red")
        raise typer.Exit(code=2) from exc
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{runtime.name}: done after {len(reports)} rounds")


@app.command()
def roster(
    state: Annotated[
        Path, typer.Option(help="this site's state directory (after it registered)")
    ] = Path(".fedsparsify-site"),
    peers: Annotated[Path | None, typer.Option(help="the peers file the site runs with")] = None,
    ca: CaOpt = None,
) -> None:
    """Who else is in the federation, as this site sees it: each member's fingerprint computed
    here from its keys, and whether your --peers file confirms it."""
    from fedsparsify.clients.rest import AggregatorClient
    from fedsparsify.clients.roster import Member, Peers, Roster
    from fedsparsify.clients.state import StateDir
    from fedsparsify.errors import FedsparsifyError

    try:
        store = StateDir(state)
        creds = store.credentials
        if creds is None:
            raise typer.BadParameter(f"{state} holds no registration yet", param_hint="--state")
        with AggregatorClient(
            creds.server, token=creds.token, verify=str(ca) if ca else True
        ) as api:
            members = [Member.from_json(m) for m in api.list_clients(creds.federation_id)]
        judged = Roster(
            members,
            own_id=creds.client_id,
            peers=Peers.load(peers) if peers is not None else None,
        )
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    for m in members:
        if m.id == creds.client_id:
            verdict = "you"
        elif m.removed:
            verdict = "removed"
        elif judged.confirmed(m):
            verdict = f"confirmed as {judged.peers.names[m.fingerprint]!r}" if judged.peers else ""
        else:
            verdict = "NOT CONFIRMED" + (f" ({m.problem})" if m.problem else "")
        role = " dealer" if m.is_dealer else ""
        typer.echo(
            f"{m.name:<24} {m.fingerprint or '-':<32} {m.num_samples:>8} samples{role}  {verdict}"
        )


@app.command()
def identity(
    state: Annotated[
        Path, typer.Option(help="this site's state directory (the identity is created there)")
    ] = Path(".fedsparsify-site"),
    name: Annotated[str, typer.Option(help="the site's name, as the other sites know it")] = "",
) -> None:
    """Print this site's line for the other sites' --peers files ('name fingerprint'),
    creating its keys (Ed25519 signing, X25519 envelope and mask) on first use."""
    from fedsparsify.clients.roster import peers_line
    from fedsparsify.clients.state import StateDir
    from fedsparsify.errors import FedsparsifyError

    try:
        store = StateDir(state)
        fingerprint = store.identity().public().fingerprint
        label = name or (store.credentials.name if store.credentials else state.name)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(peers_line(label, fingerprint))


# -- the main job ----------------------------------------------------------------------------


@app.command()
def demo(
    sites: Annotated[int, typer.Option(help="number of simulated hospitals")] = 4,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 60,
    preset: Annotated[
        str, typer.Option(help="CKKS preset of the main run: lean, peer-default")
    ] = "lean",
    data: Annotated[
        Path | None, typer.Option(help="real NIfTI folder (participants.tsv with a site column)")
    ] = None,
    compare: Annotated[
        bool, typer.Option(help="also run dense encrypted and dense plaintext federations")
    ] = False,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports/demo"),
    kill_site_after_round: Annotated[
        int | None, typer.Option(help="kill the last site after this round (shows the quorum)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of data, model and training")] = 0,
    subjects_per_site: Annotated[
        int, typer.Option(help="synthetic subjects per site (sizes are skewed around it)")
    ] = 150,
) -> None:
    """Train brain age across simulated sites over HTTP, encrypted and pruned; write a report."""
    from fedsparsify.clients.demo import DemoOptions, run_demo_with_progress
    from fedsparsify.errors import FedsparsifyError

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    if preset not in ("lean", "peer-default", "plaintext"):
        raise typer.BadParameter("choose lean, peer-default or plaintext", param_hint="--preset")
    options = DemoOptions(
        out_dir=out,
        sites=sites,
        rounds=rounds,
        preset=preset,  # type: ignore[arg-type]
        data=data,
        compare=compare,
        seed=seed,
        kill_site_after_round=kill_site_after_round,
        subjects_per_site=subjects_per_site,
        cache_dir=Path(".cache/brainage"),
    )
    try:
        report = run_demo_with_progress(options)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"report: {report}")


# -- database -------------------------------------------------------------------------------

app.add_typer(db_app, name="db")

# -- benchmarks -------------------------------------------------------------------------------

bench_app = typer.Typer(help="Benchmarks (the scripts in benchmarks/ run the same code).")
app.add_typer(bench_app, name="bench")


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@bench_app.command("crypto", context_settings=_PASS_THROUGH)
def bench_crypto(ctx: typer.Context) -> None:
    """What sparse CKKS updates cost per preset and sparsity, without a network (options:
    `fedsparsify bench crypto --help`; e.g. --quick, --json FILE)."""
    from fedsparsify.bench.crypto_costs import main as crypto_main

    raise typer.Exit(crypto_main(list(ctx.args)))


@bench_app.command("accuracy", context_settings=_PASS_THROUGH)
def bench_accuracy(ctx: typer.Context) -> None:
    """FedAvg against FedSparsify and its baselines, in process (options:
    `fedsparsify bench accuracy --help`; e.g. --quick, --out DIR)."""
    from fedsparsify.bench.accuracy import main as accuracy_main

    raise typer.Exit(accuracy_main(list(ctx.args)))


@bench_app.command("replicas", context_settings=_PASS_THROUGH)
def bench_replicas(ctx: typer.Context) -> None:
    """Upload throughput and latency of 32 concurrent sites on 1, 2 and 3 aggregator processes
    on PostgreSQL against one on SQLite (options: `fedsparsify bench replicas --help`)."""
    from fedsparsify.bench.replicas import main as replicas_main

    raise typer.Exit(replicas_main(list(ctx.args)))


@bench_app.command("latency")
def bench_latency(
    quick: Annotated[bool, typer.Option(help="100k values, 2 sites, 1 round (CI)")] = False,
    out: Annotated[Path, typer.Option(help="where latency.json/.md/.png go")] = Path(
        "benchmarks/results"
    ),
    workloads: Annotated[
        str | None, typer.Option(help="comma-separated: brainage, vec1m, vec10m, vec100k")
    ] = None,
    clients: Annotated[int | None, typer.Option(help="site processes (default 2)")] = None,
    rounds: Annotated[int | None, typer.Option(help="rounds per row (default 3)")] = None,
    scaling_clients: Annotated[
        str | None, typer.Option(help="comma-separated client counts; '' skips")
    ] = None,
    inference: Annotated[bool, typer.Option(help="measure the pruned model's inference")] = True,
) -> None:
    """Dense and sparse encrypted rounds over real HTTP, phase by phase, with the aggregator's
    scaling and the pruned model's inference costs."""
    from fedsparsify.bench.latency import make_config, run
    from fedsparsify.errors import FedsparsifyError

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
    )
    try:
        run(config)
    except FedsparsifyError as exc:
        raise _fail(exc) from exc


def main() -> None:
    """Console-script entry point."""
    app()
