"""The aggregator's app factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from fedsparsify import __version__
from fedsparsify.api import schema
from fedsparsify.api.errors import install_exception_handlers
from fedsparsify.api.limits import EdgeLimits
from fedsparsify.api.routes import clients, dashboard, federations, health, keys, rounds
from fedsparsify.api.services.auth import bootstrap_admin_token
from fedsparsify.api.services.rounds import RoundService
from fedsparsify.api.settings import Settings
from fedsparsify.api.state import AppState

__all__ = ["API_DESCRIPTION", "DOCS_ASSETS", "create_app"]

#: Where the docs pages' scripts and styles are served from.
DOCS_ASSETS = "/docs-assets"

log = logging.getLogger(__name__)

API_DESCRIPTION = """
The fedsparsify aggregator: it runs federations on CKKS ciphertexts it cannot read.

**Auth.** `Authorization: Bearer <token>`. The admin token comes from `FEDSPARSIFY_ADMIN_TOKEN`
or is generated on first start and logged once. Creating a federation returns its enrolment
token once; registering a client with it returns that client's bearer token once. Tokens are
stored hashed. Missing or unknown token: 401; valid token, not allowed: 403.

**Dashboard.** `/` serves a read-only page for people: sign in there with the admin token or a
client token; the browser then holds a session cookie (HttpOnly, SameSite=Strict) that every
`GET` below accepts in place of the bearer token, with the same rights. Changes always need the
bearer token.

**Errors.** Always `{"error": code, "detail": text}`; codes are those of `fedsparsify.errors`
(e.g. 409 `mask_mismatch`, 409 `round_closed`, 413 `payload_too_large`, 422 `invalid_config`).

**Retries.** Send a fresh `Idempotency-Key` (e.g. a random UUID) with every POST and the
same one on each retry of it: a retry gets the first answer again (`Idempotent-Replayed: true`;
kept 24 h, sealed under the caller's credential and the key), e.g. the same client id and token
after a lost registration answer. The same key with another body: 422.

**Limits.** JSON bodies at most 1 MiB, uploads 1 GiB (413, answered before the body is read when
`Content-Length` says so); a body that stalls or trickles: 408; too many uploads or connections
at once: 503 with `Retry-After`. Every limit is a `FEDSPARSIFY_*` setting.

**A federation, step by step.**
1. Admin: `POST /v1/federations` (a `FederationSpec`) → `id`, `enrollment_token`.
2. Each site: `GET /v1/federations/{fid}/spec` with `X-Enrollment-Token` (the model's input
   shape, to load its data and count its samples), then `POST /v1/federations/{fid}/clients`
   with `X-Enrollment-Token` and `{name, public_key (X25519, base64), num_samples}` →
   `client_id`, `token`, `is_dealer`.
3. The dealer (first to register): `PUT .../keys/context` (public context bytes), then for
   every other member (`GET .../clients`) `PUT .../keys/envelopes/{client_id}` (sealed secret
   context). Members fetch `GET .../keys/envelope` (their own only) and `GET .../keys/context`.
4. Admin: `POST .../rounds` opens round 0 (participants: the dealer and clients with an
   envelope; every client for `plaintext`). Later rounds open by themselves with
   `auto_advance`. Only *active* clients are participants: seen (any request with their token,
   or registration) within `FEDSPARSIFY_CLIENT_LIVENESS_S` (30 s), or done with the previous
   round; if fewer than `quorum` are active, all are. A site left out is back in the next
   round once it makes a request again (polling `.../rounds/current` is enough).
5. Each participant: `GET .../rounds/current`, then for each of the round's `channels`
   `PUT .../rounds/{r}/updates/{channel}` (streamed `encrypt_update` output with
   `weight = num_samples / total_samples`, `contributor = client_id`), and optionally
   `POST .../rounds/{r}/metrics`.
6. The round closes when every participant uploaded every channel, or at its deadline once
   `quorum` clients uploaded everything (else it fails, with a reason). Dropped clients are in
   neither the ciphertext sum nor the weight sum.
7. Members: `GET .../rounds/{r}/aggregate/{channel}` → the encrypted sum; decrypt and divide by
   the header's weight. After the last round the federation is `completed`.
"""


async def _background_loop(service: RoundService, interval_s: float, stop: asyncio.Event) -> None:
    """Housekeeping every ``interval_s`` until ``stop``; a tick in progress (it may hold a round
    lock) always runs to its end, so shutdown never pulls the database from under it."""
    while not stop.is_set():
        try:
            await run_in_threadpool(service.housekeeping)
        except Exception:
            log.exception("deadline check or housekeeping failed")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the aggregator: data directory locked (SQLite) or coordination joined
    (PostgreSQL), schema checked (an empty database is created at the newest revision, an older
    one refused), admin token installed, crash leftovers recovered.

    Storage is set up here (not in the lifespan) so that the app also works under transports
    that do not run lifespans; the lifespan runs the deadline checker and housekeeping, and
    releases the database and the data directory at the end.
    """
    settings = settings if settings is not None else Settings()
    state = AppState(settings)
    try:
        schema.prepare(state.db)
        bootstrap_admin_token(state)
        round_service = RoundService(state)
        round_service.recover()
    except BaseException:
        state.close()
        raise

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            _background_loop(round_service, settings.deadline_check_interval_s, stop)
        )
        try:
            yield
        finally:
            stop.set()
            await task
            state.close()

    # Swagger UI and ReDoc from assets inside the installed fastapi-offline package: the docs
    # work on a machine without internet, and no page makes an outside request.
    app = FastAPIOffline(
        title="fedsparsify aggregator",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.fedsparsify = state
    app.state.rounds = round_service
    install_exception_handlers(app)
    app.add_middleware(EdgeLimits, settings=settings, metrics=state.metrics)
    app.include_router(health.router)
    app.include_router(federations.router)
    app.include_router(clients.router)
    app.include_router(keys.router)
    app.include_router(rounds.router)
    app.include_router(dashboard.router)
    return app
