"""``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fedsparsify import __version__
from fedsparsify.api.routes.deps import StateDep
from fedsparsify.api.schemas import Health

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health, summary="Liveness (no auth)")
def healthz() -> Health:
    """Answers while the process serves requests."""
    return Health(version=__version__)


@router.get(
    "/metrics",
    summary="Prometheus metrics (no auth)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(state: StateDep) -> Response:
    """Rounds opened/closed/failed, uploads accepted/refused (by code), bytes received/served,
    aggregation seconds."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
