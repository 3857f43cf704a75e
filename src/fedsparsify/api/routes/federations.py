"""``/v1/federations``: create (admin), list (admin), get (admin or member)."""

from __future__ import annotations

from fastapi import APIRouter

from fedsparsify.api.routes.deps import AdminDep, MemberDep, RoundsDep, SessionDep
from fedsparsify.api.schemas import (
    ErrorBody,
    FederationCreated,
    FederationOut,
    FederationSummary,
)
from fedsparsify.api.services import federations as service
from fedsparsify.platform.spec import FederationSpec

router = APIRouter(
    prefix="/v1/federations",
    tags=["federations"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)


@router.post("", status_code=201, response_model=FederationCreated, summary="Create (admin)")
def create_federation(
    spec: FederationSpec, _admin: AdminDep, session: SessionDep
) -> FederationCreated:
    """Create a federation from its spec. The answer's ``enrollment_token`` is shown only here
    (stored hashed): hand it to the sites, which register with it."""
    return service.create_federation(session, spec)


@router.get("", response_model=list[FederationSummary], summary="List (admin)")
def list_federations(_admin: AdminDep, session: SessionDep) -> list[FederationSummary]:
    """Every federation, oldest first."""
    return service.list_federations(session)


@router.get(
    "/{fid}",
    response_model=FederationOut,
    summary="Get (admin or member)",
    responses={404: {"model": ErrorBody}},
)
def get_federation(
    fid: str, _caller: MemberDep, session: SessionDep, rounds: RoundsDep
) -> FederationOut:
    """State (``enrolling``, ``running``, ``completed``, ``failed``), spec, current round,
    participants (no tokens), key status, and the per-round history: state, value count,
    contributors, upload bytes per client, aggregate bytes, aggregation seconds and the metrics
    clients reported (e.g. ``sparsity``, ``val_mae``)."""
    rounds.check_deadlines(fid)
    session.expire_all()
    return service.describe_federation(session, service.get_federation(session, fid))
