"""Request and response models of the REST API.

Input models (what clients send), stored rows (:mod:`fedsparsify.api.db`) and public response
models are separate classes: responses are built field by field, so token hashes and file
paths never leave the server. Times are ISO 8601 strings in UTC.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fedsparsify.crypto import check_ed25519_public, check_x25519_public
from fedsparsify.errors import CryptoError
from fedsparsify.platform.spec import MAX_ROUND_TIMEOUT_S, DisplayName, FederationSpec

__all__ = [
    "ClientOut",
    "ClientRegistered",
    "ClientRegistration",
    "ContextStored",
    "DashboardSession",
    "EnrollmentOut",
    "EnrollmentRotation",
    "EnvelopeStored",
    "ErrorBody",
    "FederationCreated",
    "FederationOut",
    "FederationState",
    "FederationSummary",
    "Health",
    "KeyStatus",
    "MemberRemoved",
    "MetricsReport",
    "MetricsStored",
    "ParticipantOut",
    "RoundHistory",
    "RoundOut",
    "RoundState",
    "UploadAccepted",
    "iso",
]

FederationState = Literal["enrolling", "running", "completed", "failed"]
RoundState = Literal["open", "collecting", "aggregating", "closed", "failed"]

X25519_KEY_BYTES = 32
MAX_METRICS = 64


def iso(ts: float | None) -> str | None:
    """UNIX seconds as ISO 8601 UTC (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- inputs --------------------------------------------------------------------------------


def _key(value: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64") from exc
    if len(raw) != X25519_KEY_BYTES:
        raise ValueError(f"{what} must be {X25519_KEY_BYTES} raw bytes, got {len(raw)}")
    return raw


class ClientRegistration(_In):
    """Body of ``POST /v1/federations/{fid}/clients``: a site's name, its three public keys
    (checked: an all-zero or low-order X25519 point is refused) and its sample count."""

    name: DisplayName = Field(
        ...,
        description="unique in the federation, compared in NFKC and case-folded; stored in NFC "
        "with whitespace trimmed; control and invisible characters are refused",
    )
    public_key: str = Field(..., description="X25519 envelope key, 32 raw bytes, base64")
    signing_key: str = Field(..., description="Ed25519 signing key, 32 raw bytes, base64")
    mask_key: str = Field(..., description="X25519 mask key, 32 raw bytes, base64")
    num_samples: int = Field(..., ge=1, le=2**40, description="local training samples")

    @field_validator("public_key", "mask_key")
    @classmethod
    def _x25519(cls, value: str, info: ValidationInfo) -> str:
        try:
            check_x25519_public(_key(value, str(info.field_name)), str(info.field_name))
        except CryptoError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("signing_key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        try:
            check_ed25519_public(_key(value, "signing_key"), "signing_key")
        except CryptoError as exc:
            raise ValueError(str(exc)) from exc
        return value

    def key_bytes(self) -> tuple[bytes, bytes, bytes]:
        """The decoded ``(signing, envelope, mask)`` keys."""
        return (
            base64.b64decode(self.signing_key),
            base64.b64decode(self.public_key),
            base64.b64decode(self.mask_key),
        )


class EnrollmentRotation(_In):
    """Body of ``POST /v1/federations/{fid}/enrollment``: the new join code's limits."""

    max_uses: int | None = Field(
        None, ge=1, le=100_000, description="registrations it allows (default: the spec's)"
    )
    expires_after_s: float | None = Field(
        None, gt=0.0, le=MAX_ROUND_TIMEOUT_S, description="lifetime (default: the spec's)"
    )


class MetricsReport(_In):
    """Body of ``POST .../rounds/{r}/metrics``: plaintext evaluation scalars."""

    metrics: dict[str, float] = Field(..., description="name -> finite number, at most 64")

    @field_validator("metrics")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        if len(value) > MAX_METRICS:
            raise ValueError(f"at most {MAX_METRICS} metrics per report")
        for name, number in value.items():
            if not 0 < len(name) <= 64:
                raise ValueError("metric names must have 1 to 64 characters")
            if not name.isprintable():
                raise ValueError(f"metric name {name!r} holds a control or invisible character")
            if not math.isfinite(number):
                raise ValueError(f"metric {name!r} is not finite")
        return value


# -- outputs -------------------------------------------------------------------------------


class ErrorBody(_Out):
    """Every error answer: a stable code (``fedsparsify.errors``) and a human-readable text."""

    error: str = Field(..., examples=["mask_mismatch"])
    detail: str


class Health(_Out):
    """``GET /healthz``."""

    status: Literal["ok"] = "ok"
    version: str
    database: Literal["sqlite", "postgresql"] = "sqlite"


class ParticipantOut(_Out):
    """A registered client as the federation view shows it (no keys, no tokens)."""

    id: str
    name: str
    fingerprint: str = Field(..., description="of its three public keys (as registered)")
    num_samples: int
    is_dealer: bool
    has_envelope: bool
    removed: bool = Field(..., description="removed by the admin: in no new round")
    last_seen_at: str | None = Field(
        ..., description="last request made with its token, or its registration"
    )
    active: bool = Field(
        ...,
        description="seen within the server's client_liveness_s, or uploaded all of the latest "
        "round: a key holder that is active when a round opens is one of its participants",
    )


class KeyStatus(_Out):
    """Where the federation's key distribution stands."""

    required: bool = Field(..., description="false for the plaintext preset")
    context_uploaded: bool
    context_digest: str | None
    envelopes_sealed: int
    awaiting_envelope: list[str] = Field(..., description="client ids without an envelope")


class RoundHistory(_Out):
    """One round in the federation's history."""

    index: int
    attempt: int
    state: RoundState
    reason: str | None
    participants: list[str]
    contributors: list[str] = Field(..., description="clients in the aggregate (closed rounds)")
    value_count: int | None = Field(..., description="n_values of the uploads (kept coords)")
    mask_digest: str | None
    upload_bytes: dict[str, dict[str, int]] = Field(..., description="client -> channel -> bytes")
    aggregate_bytes: dict[str, int] = Field(..., description="channel -> bytes of the sum")
    aggregation_s: float = Field(..., description="server seconds spent adding ciphertexts")
    metrics: dict[str, dict[str, float]] = Field(..., description="client -> reported scalars")
    opened_at: str | None
    closed_at: str | None


class FederationSummary(_Out):
    """A federation in the list."""

    id: str
    name: str
    state: FederationState
    current_round: int | None
    rounds: int
    clients: int
    created_at: str | None


class FederationOut(_Out):
    """``GET /v1/federations/{fid}``."""

    id: str
    name: str
    state: FederationState
    reason: str | None
    spec: FederationSpec
    created_at: str | None
    finished_at: str | None
    current_round: int | None
    dealer_id: str | None
    participants: list[ParticipantOut]
    keys: KeyStatus
    history: list[RoundHistory]


class FederationCreated(FederationOut):
    """``POST /v1/federations``: the federation plus its enrolment token, shown only here."""

    enrollment_token: str
    enrollment_expires_at: str | None
    enrollment_max_uses: int


class ClientRegistered(_Out):
    """``POST /v1/federations/{fid}/clients``: the bearer token is shown only here."""

    client_id: str
    token: str
    is_dealer: bool
    federation_id: str
    name: str


class ClientOut(_Out):
    """A member as other members see it (to seal envelopes for it)."""

    id: str
    name: str
    public_key: str = Field(..., description="X25519 envelope key, base64")
    signing_key: str | None = Field(..., description="Ed25519, base64 (None: release 0.1)")
    mask_key: str | None = Field(..., description="X25519 mask key, base64 (None: release 0.1)")
    fingerprint: str = Field(..., description="computed by the aggregator: recompute it yourself")
    num_samples: int
    is_dealer: bool
    has_envelope: bool
    removed: bool


class ContextStored(_Out):
    """``PUT .../keys/context``."""

    digest: str
    preset: str
    bytes: int
    created: bool = Field(..., description="false when the same bytes were stored before")


class EnvelopeStored(_Out):
    """``PUT .../keys/envelopes/{client_id}``."""

    client_id: str
    bytes: int
    replaced: bool


class RoundOut(_Out):
    """A round's status."""

    index: int
    attempt: int = Field(..., description="restarts of the round after missed deadlines")
    state: RoundState
    reason: str | None
    participants: list[str]
    participants_digest: str | None = Field(
        ..., description="SHA-256 of the participants' ids and mask keys (binds uploads)"
    )
    weights: dict[str, float] = Field(
        ..., description="each participant's weight for the values channel (sums to 1)"
    )
    pairwise_masks: bool
    total_samples: int = Field(
        ..., description="sum of the participants' num_samples: weight = num_samples / this"
    )
    deadline: str | None
    quorum: int
    channels: list[str]
    context_digest: str | None
    mask_digest: str | None = Field(..., description="fixed by the first accepted upload")
    value_count: int | None = Field(..., description="fixed by the first accepted upload")
    uploaded: list[str] = Field(..., description="clients that uploaded every channel")
    uploads: dict[str, list[str]] = Field(..., description="channel -> clients that uploaded it")
    contributors: list[str] = Field(..., description="clients in the aggregate once closed")
    aggregate_ready: bool
    opened_at: str | None
    closed_at: str | None


class EnrollmentOut(_Out):
    """A federation's join code after rotation: the token is shown only here."""

    federation_id: str
    enrollment_token: str
    join_code: str = Field(..., description="FEDERATION_ID:TOKEN, for `client --enroll`")
    expires_at: str | None
    max_uses: int


class MemberRemoved(_Out):
    """``DELETE /v1/federations/{fid}/clients/{client_id}``."""

    client_id: str
    removed_at: str | None


class UploadAccepted(_Out):
    """``PUT .../rounds/{r}/updates/{channel}``."""

    accepted: bool = True
    duplicate: bool = Field(False, description="true: byte-identical re-upload, nothing changed")
    round: int
    channel: str
    client_id: str
    bytes: int
    sha256: str
    weight: float
    n_values: int
    n_ciphertexts: int
    round_state: RoundState


class DashboardSession(_Out):
    """``GET /dashboard/session``: who the dashboard's cookie (or a bearer token) stands for."""

    role: Literal["admin", "client"]
    client_id: str | None
    federation_id: str | None = Field(..., description="a client's own federation")
    name: str | None = Field(..., description="a client's name")
    expires_at: str | None = Field(..., description="when the session ends (None: bearer)")
    poll_s: float = Field(..., description="how often the page refreshes, seconds")


class MetricsStored(_Out):
    """``POST .../rounds/{r}/metrics``: the client's metrics for the round after merging."""

    round: int
    client_id: str
    metrics: dict[str, float]
