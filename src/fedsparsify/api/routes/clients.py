"""``/v1/federations/{fid}/clients``: register with the enrolment token; list members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from fedsparsify.api.routes.deps import (
    AdminDep,
    MemberDep,
    OnceDep,
    ReadSessionDep,
    SessionDep,
    StateDep,
    mark_replayed,
)
from fedsparsify.api.schemas import (
    ClientOut,
    ClientRegistered,
    ClientRegistration,
    ErrorBody,
    MemberRemoved,
)
from fedsparsify.api.services import clients as service
from fedsparsify.api.services.federations import get_federation
from fedsparsify.api.services.idempotency import run_once

router = APIRouter(
    prefix="/v1/federations/{fid}/clients",
    tags=["clients"],
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)


@router.post(
    "",
    status_code=201,
    response_model=ClientRegistered,
    summary="Register (enrolment token)",
    responses={409: {"model": ErrorBody}},
)
def register(
    fid: str,
    body: ClientRegistration,
    session: SessionDep,
    state: StateDep,
    once: OnceDep,
    response: Response,
    x_enrollment_token: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ClientRegistered:
    """Join the federation with its join code's token (header ``X-Enrollment-Token``, or
    ``Authorization: Bearer <enrolment token>``), a name (unique in the federation, compared
    in NFKC and case-folded: 409 otherwise), three public keys (32 raw bytes each, base64:
    ``public_key`` X25519 for the key envelope, ``signing_key`` Ed25519, ``mask_key`` X25519;
    an all-zero or low-order X25519 point: 422) and the local sample count (above the spec's
    ``max_samples_per_site``: 422).
    401 when the join code is wrong, expired, used up or revoked; 409 once round 0 has opened
    (unless the spec allows late joiners) or for a taken name.

    The answer's ``token`` is this client's bearer token, shown only here (stored hashed). The
    first client to register is the key dealer (``is_dealer``). Send an ``Idempotency-Key``: a
    retry with the same key (and enrolment token) gets the same client id and token back."""
    token = x_enrollment_token
    if token is None and authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value:
            token = value.strip()
    answer, replayed = run_once(
        session,
        once.request(body),
        ClientRegistered,
        lambda: service.register_client(session, fid, token, body),
        ttl_s=state.settings.idempotency_ttl_s,
        status_code=201,
    )
    mark_replayed(response, replayed)
    return answer


@router.get(
    "",
    response_model=list[ClientOut],
    summary="List members (member)",
    responses={403: {"model": ErrorBody}},
)
def list_clients(fid: str, _caller: MemberDep, session: ReadSessionDep) -> list[ClientOut]:
    """Members with their X25519 public keys and fingerprints (the dealer seals an envelope
    for each) and whether their envelope is sealed."""
    get_federation(session, fid)
    return service.list_clients(session, fid)


@router.delete(
    "/{client_id}",
    response_model=MemberRemoved,
    summary="Remove a member (admin)",
    responses={403: {"model": ErrorBody}},
)
def remove_client(fid: str, client_id: str, _admin: AdminDep, session: SessionDep) -> MemberRemoved:
    """The member's token stops working and it is a participant of no new round."""
    get_federation(session, fid)
    return service.remove_client(session, fid, client_id)
