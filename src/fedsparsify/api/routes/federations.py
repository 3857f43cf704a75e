"""``/v1/federations``: create (admin), list (admin), get (admin or member), spec (enrolment
token, member or admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response
from fastapi.security import HTTPAuthorizationCredentials

from fedsparsify.api.routes.deps import (
    AdminDep,
    MemberDep,
    OnceDep,
    ReadSessionDep,
    SessionDep,
    StateDep,
    bearer_scheme,
    mark_replayed,
)
from fedsparsify.api.schemas import (
    EnrollmentOut,
    EnrollmentRotation,
    ErrorBody,
    FederationCreated,
    FederationOut,
    FederationSummary,
)
from fedsparsify.api.services import enrollment
from fedsparsify.api.services import federations as service
from fedsparsify.api.services.idempotency import run_once
from fedsparsify.platform.spec import FederationSpec

router = APIRouter(
    prefix="/v1/federations",
    tags=["federations"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)


@router.post(
    "",
    status_code=201,
    response_model=FederationCreated,
    summary="Create (admin)",
    responses={409: {"model": ErrorBody, "description": "the name is taken"}},
)
def create_federation(
    spec: FederationSpec,
    _admin: AdminDep,
    session: SessionDep,
    state: StateDep,
    once: OnceDep,
    response: Response,
) -> FederationCreated:
    """Create a federation from its spec. The answer's ``enrollment_token`` is shown only here
    (stored hashed): hand it to the sites, which register with it. Names are unique (compared
    in NFKC, case-folded: 409). 422 for a model over the aggregator's parameter limit, naming
    the count. With an ``Idempotency-Key``, a retry returns this same federation and token."""
    settings = state.settings
    answer, replayed = run_once(
        session,
        once.request(spec),
        FederationCreated,
        lambda: service.create_federation(
            session,
            spec,
            liveness_s=settings.client_liveness_s,
            max_parameters=settings.max_model_parameters,
        ),
        ttl_s=settings.idempotency_ttl_s,
        status_code=201,
    )
    mark_replayed(response, replayed)
    return answer


@router.get("", response_model=list[FederationSummary], summary="List (admin)")
def list_federations(_admin: AdminDep, session: ReadSessionDep) -> list[FederationSummary]:
    """Every federation, oldest first."""
    return service.list_federations(session)


@router.get(
    "/{fid}",
    response_model=FederationOut,
    summary="Get (admin or member)",
    responses={404: {"model": ErrorBody}},
)
def get_federation(
    fid: str, _caller: MemberDep, session: ReadSessionDep, state: StateDep
) -> FederationOut:
    """State (``enrolling``, ``running``, ``completed``, ``failed``), spec, current round,
    participants (no tokens), key status, and the per-round history: state, value count,
    contributors, upload bytes per client, aggregate bytes, aggregation seconds and the metrics
    clients reported (e.g. ``sparsity``, ``val_mae``). Each participant shows ``last_seen_at``
    (its last request, or its registration) and ``active``: seen within the server's
    ``client_liveness_s`` or done with the latest round, i.e. in the next round if it holds the
    key (unless fewer than ``quorum`` are active: then every key holder is)."""
    return service.describe_federation(
        session,
        service.get_federation(session, fid),
        liveness_s=state.settings.client_liveness_s,
    )


@router.get(
    "/{fid}/spec",
    response_model=FederationSpec,
    summary="The spec (enrolment token, member or admin)",
    responses={404: {"model": ErrorBody, "description": "admin only: no such federation"}},
)
def get_spec(
    fid: str,
    session: ReadSessionDep,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    x_enrollment_token: Annotated[str | None, Header()] = None,
) -> FederationSpec:
    """The federation's spec, readable before registering: a site needs the model's input
    shape to load its data and count its samples. Send the enrolment token (header
    ``X-Enrollment-Token``, or ``Authorization: Bearer <enrolment token>``), or a member's or
    the admin's bearer token. Without a valid token: 401, the same whether or not the federation
    exists; a client of another federation: 403; the admin: 404 for an unknown federation."""
    return service.read_spec(
        state,
        session,
        fid,
        enrollment_token=x_enrollment_token,
        bearer=credentials.credentials if credentials is not None else None,
    )


@router.post(
    "/{fid}/enrollment",
    status_code=201,
    response_model=EnrollmentOut,
    summary="Rotate the join code (admin)",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def rotate_enrollment(
    fid: str,
    body: EnrollmentRotation,
    _admin: AdminDep,
    session: SessionDep,
    state: StateDep,
    once: OnceDep,
    response: Response,
) -> EnrollmentOut:
    """Issue a new join code (shown only here); the old one stops working at once. Its limits
    default to the spec's ``enrollment`` (lifetime; uses: ``max_uses`` or ``min_clients``).
    With an ``Idempotency-Key``, a retry returns this join code instead of rotating again."""

    def rotate() -> EnrollmentOut:
        fed = service.get_federation(session, fid)
        return enrollment.rotate_join_code(session, fed, service.spec_of(fed), body)

    answer, replayed = run_once(
        session,
        once.request(body),
        EnrollmentOut,
        rotate,
        ttl_s=state.settings.idempotency_ttl_s,
        status_code=201,
        produce_commits=True,
    )
    mark_replayed(response, replayed)
    return answer


@router.delete(
    "/{fid}/enrollment",
    status_code=204,
    summary="Revoke the join code (admin)",
    responses={404: {"model": ErrorBody}},
)
def revoke_enrollment(fid: str, _admin: AdminDep, session: SessionDep) -> None:
    """The join code stops working; no one registers until the admin rotates it."""
    enrollment.revoke_join_code(session, service.get_federation(session, fid))
