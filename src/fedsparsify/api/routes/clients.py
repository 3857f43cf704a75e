"""``/v1/federations/{fid}/clients``: register with the enrolment token; list members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from fedsparsify.api.routes.deps import MemberDep, SessionDep
from fedsparsify.api.schemas import ClientOut, ClientRegistered, ClientRegistration, ErrorBody
from fedsparsify.api.services import clients as service
from fedsparsify.api.services.federations import get_federation

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
    x_enrollment_token: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ClientRegistered:
    """Join the federation with its enrolment token (header ``X-Enrollment-Token``, or
    ``Authorization: Bearer <enrolment token>``), a name (unique in the federation: 409
    otherwise), an X25519 public key (32 raw bytes, base64) and the local sample count.

    The answer's ``token`` is this client's bearer token, shown only here (stored hashed). The
    first client to register is the key dealer (``is_dealer``)."""
    token = x_enrollment_token
    if token is None and authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value:
            token = value.strip()
    return service.register_client(session, fid, token, body)


@router.get(
    "",
    response_model=list[ClientOut],
    summary="List members (member)",
    responses={403: {"model": ErrorBody}},
)
def list_clients(fid: str, _caller: MemberDep, session: SessionDep) -> list[ClientOut]:
    """Members with their X25519 public keys and fingerprints (the dealer seals an envelope
    for each) and whether their envelope is sealed."""
    get_federation(session, fid)
    return service.list_clients(session, fid)
