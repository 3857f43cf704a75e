"""Federations: create, list, describe (state, participants, keys, per-round history), and the
spec for sites that hold the enrolment token but have not registered yet."""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fedsparsify.api.db import (
    ClientRow,
    FederationRow,
    RoundMetricRow,
    RoundRow,
    UploadRow,
    now,
)
from fedsparsify.api.schemas import (
    FederationCreated,
    FederationOut,
    FederationSummary,
    KeyStatus,
    ParticipantOut,
    RoundHistory,
    iso,
)
from fedsparsify.api.security import hash_token, new_id, token_matches
from fedsparsify.api.services.auth import record_seen, require_member, resolve_caller
from fedsparsify.api.services.enrollment import check_join_code, issue_join_code
from fedsparsify.api.services.liveness import active_ids
from fedsparsify.api.state import AppState
from fedsparsify.crypto import get_preset
from fedsparsify.errors import AuthenticationError, ConfigError, ConflictError, NotFoundError
from fedsparsify.platform.model_size import parameter_count
from fedsparsify.platform.names import name_key
from fedsparsify.platform.spec import FederationSpec
from fedsparsify.platform.spec_compat import SPEC_VERSION, load_stored_spec

__all__ = [
    "check_model_size",
    "create_federation",
    "describe_federation",
    "get_federation",
    "keys_required",
    "list_federations",
    "read_spec",
    "spec_of",
]

log = logging.getLogger(__name__)


def spec_of(fed: FederationRow) -> FederationSpec:
    """The stored spec as today's model, through the compatibility step for older formats."""
    return load_stored_spec(fed.spec, fed.spec_version)


def keys_required(fed: FederationRow) -> bool:
    """Whether rounds need the dealer's public context and envelopes (encrypted presets)."""
    return get_preset(spec_of(fed).crypto_preset).encrypted


def get_federation(session: Session, federation_id: str) -> FederationRow:
    """The federation, or :class:`NotFoundError`."""
    fed = session.get(FederationRow, federation_id)
    if fed is None:
        raise NotFoundError(f"no federation {federation_id!r}")
    return fed


def read_spec(
    state: AppState,
    session: Session,
    federation_id: str,
    *,
    enrollment_token: str | None,
    bearer: str | None,
) -> FederationSpec:
    """The spec, for a holder of the federation's enrolment token (``X-Enrollment-Token``, or
    ``bearer``) or for the admin or a member (``bearer``).

    Existence is told only to the admin (404): a caller without a valid token gets the same 401
    whether or not ``federation_id`` exists, and a client of another federation the same 403.
    The enrolment token is looked up by its hash, independently of ``federation_id``.
    """
    if not enrollment_token and not bearer:
        raise AuthenticationError(
            "missing token: the enrolment token (X-Enrollment-Token or Authorization: Bearer), "
            "or a member's or the admin's bearer token"
        )
    if enrollment_token and (fed := _enrolled(session, federation_id, enrollment_token)):
        return spec_of(fed)
    if bearer:
        try:
            caller = resolve_caller(state, session, bearer)
        except AuthenticationError:
            if fed := _enrolled(session, federation_id, bearer):
                return spec_of(fed)
        else:
            require_member(caller, federation_id)
            record_seen(state, caller)
            return spec_of(get_federation(session, federation_id))
    raise AuthenticationError(
        f"wrong enrolment token for federation {federation_id!r} (or no such federation)"
    )


def _enrolled(session: Session, federation_id: str, token: str) -> FederationRow | None:
    """The federation ``token`` is the enrolment token of, if it is ``federation_id``."""
    fed = session.scalars(
        select(FederationRow).where(FederationRow.enrollment_token_hash == hash_token(token))
    ).first()
    if fed is None or fed.id != federation_id:
        return None
    if not token_matches(token, fed.enrollment_token_hash):
        return None
    check_join_code(fed, at=now())
    return fed


def check_model_size(spec: FederationSpec, max_parameters: int) -> int:
    """The model's trainable parameter count; :class:`ConfigError` (422) over the limit."""
    count = parameter_count(spec.model)
    if count > max_parameters:
        raise ConfigError(
            f"the {spec.model.kind} model has {count:,} trainable parameters, more than this "
            f"aggregator's limit of {max_parameters:,} (FEDSPARSIFY_MAX_MODEL_PARAMETERS)"
        )
    return count


def create_federation(
    session: Session, spec: FederationSpec, *, liveness_s: float, max_parameters: int
) -> FederationCreated:
    """Add a new federation to ``session`` (flushed; the caller commits, see
    :func:`~fedsparsify.api.services.idempotency.run_once`); the answer carries its enrolment
    token, the only time it is seen. The name must differ from every other federation's in
    :func:`~fedsparsify.platform.names.name_key` (409)."""
    get_preset(spec.crypto_preset)
    check_model_size(spec, max_parameters)
    key = name_key(spec.name)
    taken = next(
        (n for n in session.scalars(select(FederationRow.name)) if name_key(n) == key), None
    )
    if taken is not None:
        raise ConflictError(f"a federation named {taken!r} exists; choose another name")
    fed = FederationRow(
        id=new_id(),
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        spec_version=SPEC_VERSION,
        state="enrolling",
    )
    token = issue_join_code(fed, spec)
    session.add(fed)
    session.flush()
    log.info("federation %s (%r) created, preset %s", fed.id, fed.name, spec.crypto_preset)
    out = describe_federation(session, fed, liveness_s=liveness_s)
    return FederationCreated(
        **out.model_dump(),
        enrollment_token=token,
        enrollment_expires_at=iso(fed.enrollment_expires_at),
        enrollment_max_uses=int(fed.enrollment_max_uses or 0),
    )


def list_federations(session: Session) -> list[FederationSummary]:
    """Every federation, oldest first."""
    feds = session.scalars(select(FederationRow).order_by(FederationRow.created_at)).all()
    counts = dict(
        session.execute(
            select(ClientRow.federation_id, func.count()).group_by(ClientRow.federation_id)
        ).all()
    )
    latest = dict(
        session.execute(
            select(RoundRow.federation_id, func.max(RoundRow.index)).group_by(
                RoundRow.federation_id
            )
        ).all()
    )
    return [
        FederationSummary(
            id=f.id,
            name=f.name,
            state=f.state,
            current_round=latest.get(f.id),
            rounds=spec_of(f).rounds,
            clients=int(counts.get(f.id, 0)),
            created_at=iso(f.created_at),
        )
        for f in feds
    ]


def describe_federation(
    session: Session, fed: FederationRow, *, liveness_s: float
) -> FederationOut:
    """The full public view of a federation; a participant's ``active`` is as if a round
    opened now with a liveness window of ``liveness_s`` seconds."""
    clients = session.scalars(
        select(ClientRow).where(ClientRow.federation_id == fed.id).order_by(ClientRow.created_at)
    ).all()
    rounds = session.scalars(
        select(RoundRow).where(RoundRow.federation_id == fed.id).order_by(RoundRow.index)
    ).all()
    round_ids = [r.id for r in rounds]
    upload_bytes: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    metrics: dict[int, dict[str, dict[str, float]]] = defaultdict(dict)
    if round_ids:
        for up in session.scalars(select(UploadRow).where(UploadRow.round_id.in_(round_ids))):
            upload_bytes[up.round_id][up.client_id][up.channel] = up.bytes
        for m in session.scalars(
            select(RoundMetricRow).where(RoundMetricRow.round_id.in_(round_ids))
        ):
            metrics[m.round_id][m.client_id] = dict(m.metrics)
    active = active_ids(session, fed.id, clients, at=now(), window_s=liveness_s)
    required = keys_required(fed)
    awaiting = [
        c.id
        for c in clients
        if not c.is_dealer and c.envelope_bytes is None and c.removed_at is None
    ]
    history = [
        RoundHistory(
            index=r.index,
            attempt=r.attempt or 0,
            state=r.state,
            reason=r.reason,
            participants=list(r.participants),
            contributors=list(r.contributors or []),
            value_count=r.value_count,
            mask_digest=r.mask_digest,
            upload_bytes={k: dict(v) for k, v in upload_bytes[r.id].items()},
            aggregate_bytes=dict(r.aggregate_bytes or {}),
            aggregation_s=r.aggregation_s,
            metrics=metrics[r.id],
            opened_at=iso(r.opened_at),
            closed_at=iso(r.closed_at),
        )
        for r in rounds
    ]
    return FederationOut(
        id=fed.id,
        name=fed.name,
        state=fed.state,
        reason=fed.reason,
        spec=spec_of(fed),
        created_at=iso(fed.created_at),
        finished_at=iso(fed.finished_at),
        current_round=rounds[-1].index if rounds else None,
        dealer_id=fed.dealer_id,
        participants=[
            ParticipantOut(
                id=c.id,
                name=c.name,
                fingerprint=c.fingerprint,
                num_samples=c.num_samples,
                is_dealer=c.is_dealer,
                has_envelope=c.envelope_bytes is not None,
                removed=c.removed_at is not None,
                last_seen_at=iso(c.last_seen_at),
                active=c.id in active,
            )
            for c in clients
        ],
        keys=KeyStatus(
            required=required,
            context_uploaded=fed.context_digest is not None,
            context_digest=fed.context_digest,
            envelopes_sealed=sum(1 for c in clients if c.envelope_bytes is not None),
            awaiting_envelope=awaiting,
        ),
        history=history,
    )
