"""The ``fedsparsify`` command."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedsparsify import __version__
from fedsparsify.cli_bench import bench_app
from fedsparsify.cli_common import fail
from fedsparsify.cli_db import db_app

if TYPE_CHECKING:
    from fedsparsify.clients.rest import AggregatorClient

app = typer.Typer(
    help="fedsparsify: federated training with progressive pruning and sparse CKKS aggregation.",
    no_args_is_help=True,
)


class LogLevel(StrEnum):
    """What ``--log-level`` accepts."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


LogLevelOpt = Annotated[
    LogLevel,
    typer.Option(case_sensitive=False, help="debug also shows every HTTP request"),
]


def _configure_logging(level: LogLevel) -> None:
    """Log lines with time and origin; httpx's per-request lines only at debug level."""
    logging.basicConfig(
        level=level.value.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level is not LogLevel.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)


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
    log_level: LogLevelOpt = LogLevel.info,
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
    """Run the aggregator (REST API; OpenAPI at /docs). Other settings: FEDSPARSIFY_* env,
    among them the HTTP edge's limits (body sizes, timeouts, connections; see the README).

    SQLite (default): one process per data directory; a second one exits at once, naming the
    first. PostgreSQL: start as many as you like on one database and one shared --data-dir.
    Refuses a database whose schema is older than this release (run `fedsparsify db upgrade`);
    an empty database is created at the newest schema."""
    from fedsparsify.api import Settings
    from fedsparsify.api.server import serve as run_server
    from fedsparsify.errors import FedsparsifyError

    check_tls_files(tls_cert, tls_key)
    settings = Settings.from_options(data_dir=data_dir, database_url=database_url)
    try:
        run_server(
            settings,
            host=host,
            port=port,
            log_level=log_level.value,
            tls_cert=tls_cert,
            tls_key=tls_key,
            shutdown_timeout_s=shutdown_timeout_s,
        )
    except FedsparsifyError as exc:
        raise fail(exc) from exc


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


def _read_json_object(path: Path) -> dict[str, object]:
    import json

    from fedsparsify.errors import ConfigError

    try:
        body = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"{path} must hold one JSON object (a federation spec)")
    return body


@federation_app.command("create")
def federation_create(
    server: ServerOpt,
    admin_token: AdminOpt,
    spec: Annotated[
        Path | None,
        typer.Option(help="federation spec as JSON (e.g. examples/specs/brainage-demo.json)"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="name, when no --spec is given")] = None,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    min_clients: Annotated[int | None, typer.Option(help="override min_clients")] = None,
    preset: Annotated[str | None, typer.Option(help="lean, peer-default or plaintext")] = None,
    ca: CaOpt = None,
) -> None:
    """Create a federation; prints its id and the join code sites pass to `client --enroll`."""
    from fedsparsify.errors import FedsparsifyError
    from fedsparsify.platform.spec import parse_spec

    if spec is None and name is None:
        raise typer.BadParameter(
            "give a spec file (see examples/specs/) or at least --name", param_hint="--spec"
        )
    try:
        body: dict[str, object] = _read_json_object(spec) if spec else {}
        overrides = {
            "name": name,
            "rounds": rounds,
            "min_clients": min_clients,
            "crypto_preset": preset,
        }
        body.update({k: v for k, v in overrides.items() if v is not None})
        if "quorum" not in body and "min_clients" in body:
            body["quorum"] = body["min_clients"]
        parsed = parse_spec(body, source=str(spec) if spec else "the options")
        created = _admin(server, admin_token, ca).create_federation(parsed.model_dump(mode="json"))
    except (OSError, ValueError, FedsparsifyError) as exc:
        raise fail(exc) from exc
    typer.echo(f"federation: {created['id']}")
    typer.echo(f"join code (shown once): {created['id']}:{created['enrollment_token']}")


@federation_app.command("list")
def federation_list(server: ServerOpt, admin_token: AdminOpt, ca: CaOpt = None) -> None:
    """List federations: id, name, state, current round."""
    from fedsparsify.errors import FedsparsifyError

    try:
        rows = _admin(server, admin_token, ca).list_federations()
    except FedsparsifyError as exc:
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
            help="this site's data: a folder with participants.tsv and its T1 NIfTI volumes "
            "(BIDS sub-X/anat/*T1w.nii.gz; `fedsparsify data synth` makes some)"
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
    crypto_workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="encrypt and decrypt large updates in this many worker processes (0: off; "
            "`fedsparsify bench pool` shows when it pays)",
        ),
    ] = 0,
    log_level: LogLevelOpt = LogLevel.info,
) -> None:
    """Join a federation as a site and take part in every round until it completes."""
    from fedsparsify.clients.runtime import ClientRuntime
    from fedsparsify.clients.state import StateDir
    from fedsparsify.errors import EnvelopeError, FedsparsifyError, TrustError
    from fedsparsify.platform.data import load_site

    _configure_logging(log_level)
    try:
        saved = StateDir(state).credentials
    except FedsparsifyError as exc:
        raise fail(exc) from exc
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
            crypto_workers=crypto_workers,
        )
        runtime.run()
    except (TrustError, EnvelopeError) as exc:
        typer.secho(f"refused: {exc}", err=True, fg="red")
        raise typer.Exit(code=2) from exc
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    typer.echo(runtime.view.outcome or f"{runtime.name}: done")


# -- a hospital's data and model ---------------------------------------------------------------

data_app = typer.Typer(
    help="Site data: synthetic hospitals to try things with.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


class Dataset(StrEnum):
    """What ``data synth`` writes."""

    brainage = "brainage"
    digits = "digits"


@data_app.command("synth")
def data_synth(
    sites: Annotated[int, typer.Option(min=1, help="number of hospitals")] = 3,
    subjects: Annotated[int, typer.Option(min=4, help="subjects per hospital")] = 60,
    out: Annotated[
        Path, typer.Option(help="folder to write (site-K/ and heldout/ go in it)")
    ] = Path("hospitals"),
    shape: Annotated[
        str, typer.Option(help="volume grid: full (91x109x91), demo (24x28x24) or DxHxW")
    ] = "demo",
    heldout: Annotated[
        int, typer.Option(min=0, help="held-out subjects (from every site's population)")
    ] = 60,
    seed: Annotated[int, typer.Option(min=0, help="seed of scanners, ages and anatomy")] = 0,
    dataset: Annotated[
        Dataset, typer.Option(help="brainage: BIDS T1 NIfTI; digits: site.npz (digits spec)")
    ] = Dataset.brainage,
) -> None:
    """Write synthetic hospitals as BIDS-style site folders (participants.tsv + T1 NIfTI)."""
    from fedsparsify.errors import FedsparsifyError
    from fedsparsify.platform.data import make_digits_federation, save_site
    from fedsparsify.platform.data.synth import synth_shape, write_synthetic_federation

    try:
        if dataset is Dataset.digits:
            for site in make_digits_federation(sites, seed=seed).sites:
                save_site(site, out / site.name)
                typer.echo(f"{out / site.name}: {site.num_samples} train, {len(site.y_val)} val")
            return
        folders = write_synthetic_federation(
            out,
            sites=sites,
            subjects=subjects,
            heldout=heldout,
            shape=synth_shape(shape),
            seed=seed,
        )
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    for folder in folders:
        typer.echo(
            f"{folder.path}: {folder.subjects} subjects, ages {folder.age_min:.0f}-"
            f"{folder.age_max:.0f}"
        )


@app.command()
def export(
    state: Annotated[Path, typer.Option(help="the site's state directory (`client --state`)")],
    out: Annotated[Path, typer.Option(help="new folder for the model")],
    spec: Annotated[
        Path | None,
        typer.Option(help="the federation's spec, for state written by release 0.1 only"),
    ] = None,
) -> None:
    """Write a finished site's final model: safetensors, mask, sparse form and a model card."""
    from fedsparsify.clients.export import export_model
    from fedsparsify.errors import FedsparsifyError

    try:
        card = export_model(state, out, spec_file=spec)
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    validation = card.get("final_validation") or {}
    typer.echo(
        f"model: {out} ({card['kept_weights']:,} of {card['prunable_weights']:,} weights kept, "
        f"sparsity {card['final_sparsity']:.3f}"
        + (f", validation MAE {validation['mae']:.2f} y" if "mae" in validation else "")
        + ")"
    )
    typer.echo(f"model card: {out / 'model-card.md'}")


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="a folder written by `fedsparsify export`")],
    source: Annotated[
        Path, typer.Argument(metavar="INPUT", help="one NIfTI file, or a folder of T1 scans")
    ],
    out: Annotated[Path, typer.Option(help="CSV to write")] = Path("predictions.csv"),
    participants: Annotated[
        Path | None,
        typer.Option(
            help="participants.tsv with ages, for the brain-age gap (default: INPUT's own)"
        ),
    ] = None,
) -> None:
    """Predict brain age for T1 scans; with known ages also the (bias-corrected) brain-age gap."""
    from fedsparsify.errors import FedsparsifyError
    from fedsparsify.platform.data.nifti import PARTICIPANTS_FILE
    from fedsparsify.platform.modelfile import read_model_dir
    from fedsparsify.platform.predict import find_scans, read_ages, write_predictions_csv
    from fedsparsify.platform.predict import predict as predict_ages

    try:
        exported = read_model_dir(model)
        scans = find_scans(source)
        table = participants
        if table is None and source.is_dir() and (source / PARTICIPANTS_FILE).is_file():
            table = source / PARTICIPANTS_FILE
        ages = read_ages(table) if table is not None else None
        rows = predict_ages(exported, scans, ages)
        write_predictions_csv(rows, out)
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    done = [r for r in rows if r.ok]
    resampled = sum(
        1 for r in done if any(n.startswith(("resampled", "reoriented")) for n in r.notes)
    )
    typer.echo(
        f"{out}: {len(done)} of {len(rows)} scans predicted"
        + (
            f" ({resampled} reoriented or resampled to the model's grid, see notes)"
            if resampled
            else ""
        )
        + (f"; ages from {table}" if table is not None else "")
    )
    bias = exported.age_bias
    if bias is None and ages:
        typer.echo("no age-bias correction in the model card: corrected columns left empty")
    elif bias is not None and ages and (weakness := bias.weakness()) is not None:
        typer.echo(f"note: {weakness}")
    failed = [r for r in rows if not r.ok]
    for row in failed:
        typer.secho(f"error: {row.notes[-1].removeprefix('error: ')}", err=True, fg="red")
    if failed:
        raise typer.Exit(code=1)


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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
    keep_serving: Annotated[
        bool, typer.Option(help="keep the aggregator and its dashboard up after the run (Ctrl-C)")
    ] = False,
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
        keep_serving=keep_serving,
    )
    try:
        report = run_demo_with_progress(options)
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    typer.echo(f"report: {report}")


# -- simulation -------------------------------------------------------------------------------


@app.command()
def simulate(
    clients: Annotated[int, typer.Option(help="number of simulated sites")],
    spec: Annotated[
        Path | None,
        typer.Option(help="federation spec as JSON (default: small MLP, lean CKKS, masks, 0.9)"),
    ] = None,
    engine: Annotated[str, typer.Option(help="ray (tasks on a Ray cluster) or local")] = "ray",
    address: Annotated[
        str | None, typer.Option(help="join this Ray cluster (e.g. 10.0.0.5:6379, or 'auto')")
    ] = None,
    cpus_per_client: Annotated[float, typer.Option(help="CPUs reserved per site task")] = 1.0,
    cpus: Annotated[
        int | None, typer.Option(help="CPUs of the local Ray cluster (default: all cores)")
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(help="sites per round: a fraction (0.1) or a count (50); default all"),
    ] = None,
    data: Annotated[str, typer.Option(help="synthetic, digits or brainage")] = "synthetic",
    alpha: Annotated[float, typer.Option(help="Dirichlet label skew (synthetic, digits)")] = 0.5,
    samples_per_site: Annotated[
        int, typer.Option(help="mean samples per site (synthetic) or subjects (brainage)")
    ] = 100,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports/simulate"),
) -> None:
    """Run a federation of N simulated sites with the real round code and crypto, as Ray tasks
    (or in this process); live progress, then report.md, metrics.json and plots in --out."""
    import shlex
    import sys

    from fedsparsify.errors import FedsparsifyError
    from fedsparsify.platform.spec import FederationSpec
    from fedsparsify.sim import Simulation, make_engine, make_source, parse_sample
    from fedsparsify.sim.report import format_progress, summary_table, write_simulation_report
    from fedsparsify.sim.specs import default_spec

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    try:
        if spec is None:
            parsed = default_spec(rounds=rounds or 20)
        else:
            parsed = FederationSpec.model_validate_json(spec.read_text())
            if rounds is not None:
                parsed = FederationSpec.model_validate({**parsed.model_dump(), "rounds": rounds})
        source = make_source(
            data,  # type: ignore[arg-type]
            clients,
            parsed,
            alpha=alpha,
            samples_per_site=samples_per_site,
            seed=parsed.seed,
            cache_dir=Path(".cache/brainage") if data == "brainage" else None,
        )
        runner = make_engine(
            engine, address=address, num_cpus=cpus, cpus_per_client=cpus_per_client
        )
    except (OSError, ValueError, FedsparsifyError) as exc:
        raise fail(exc) from exc
    from rich.console import Console
    from rich.live import Live
    from rich.markdown import Markdown
    from rich.text import Text

    console = Console()
    console.print(
        f"[bold]fedsparsify simulate[/]: {clients} sites ({data}), {parsed.rounds} rounds, "
        f"engine {runner.name}, preset {parsed.crypto_preset}; report in {out}"
    )
    try:
        with Live(Text("starting ..."), console=console, refresh_per_second=4) as live:
            simulation = Simulation(
                parsed,
                source,
                runner,
                sample=parse_sample(sample),
                threads_per_site=max(1, int(cpus_per_client)),
                on_progress=lambda p: live.update(Text(format_progress(p))),
            )
            result = simulation.run()
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    finally:
        runner.close()
    command = "fedsparsify " + shlex.join(sys.argv[1:])
    report = write_simulation_report(out, result, parsed, data=data, command=command)
    console.print(Markdown(summary_table(result, parsed)))
    typer.echo(f"report: {report}")


# -- database -------------------------------------------------------------------------------

app.add_typer(db_app, name="db")

app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console-script entry point."""
    app()
