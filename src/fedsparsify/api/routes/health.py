"""``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from fedsparsify import __version__
from fedsparsify.api.routes.deps import StateDep
from fedsparsify.api.schemas import ErrorBody, Health
from fedsparsify.errors import UnavailableError

log = logging.getLogger(__name__)

router = APIRouter(tags=["service"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Health: the process and its database (no auth)",
    responses={503: {"model": ErrorBody, "description": "the database does not answer"}},
)
def healthz(state: StateDep) -> Health:
    """200 while the process serves requests and its database answers (and, on PostgreSQL,
    this process still holds its coordination lock); 503 ``unavailable`` otherwise, so a load
    balancer takes the process out of rotation."""
    try:
        state.check_health()
    except (SQLAlchemyError, UnavailableError) as exc:
        log.warning("health check failed: %s", exc)
        raise UnavailableError(f"the database does not answer: {type(exc).__name__}") from exc
    return Health(
        version=__version__, database="postgresql" if state.db.is_postgresql else "sqlite"
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (no auth)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(state: StateDep) -> Response:
    """Rounds opened/closed/failed, uploads accepted/refused (by code), bytes received/served,
    aggregation seconds. On PostgreSQL: the sum over every aggregator process on the database
    (each writes its samples there every ``metrics_flush_interval_s``)."""
    return Response(state.metrics_text(), media_type=CONTENT_TYPE_LATEST)
