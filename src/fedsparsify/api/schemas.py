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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedsparsify.platform.spec import FederationSpec

__all__ = [
    "ClientOut",
    "ClientRegistered",
    "ClientRegistration",
    "ContextStored",
    "EnvelopeStored",
    "ErrorBody",
    "FederationCreated",
    "FederationOut",
    "FederationState",
    "FederationSummary",
    "Health",
    "KeyStatus",
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


class ClientRegistration(_In):
    """Body of ``POST /v1/federations/{fid}/clients``."""

    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")
    public_key: str = Field(..., description="X25519 public key, 32 raw bytes, base64")
    num_samples: int = Field(..., ge=1, le=2**40, description="local training samples")

    @field_validator("public_key")
    @classmethod
    def _x25519(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("public_key is not base64") from exc
        if len(raw) != X25519_KEY_BYTES:
            raise ValueError(f"public_key must be {X25519_KEY_BYTES} raw bytes, got {len(raw)}")
        return value

    def public_key_bytes(self) -> bytes:
        """The decoded X25519 key."""
        return base64.b64decode(self.public_key)


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


class ParticipantOut(_Out):
    """A registered client as the federation view shows it (no keys, no tokens)."""

    id: str
    name: str
    num_samples: int
    is_dealer: bool
    has_envelope: bool
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
    public_key: str = Field(..., description="X25519, base64")
    fingerprint: str
    num_samples: int
    is_dealer: bool
    has_envelope: bool


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
    state: RoundState
    reason: str | None
    participants: list[str]
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


class MetricsStored(_Out):
    """``POST .../rounds/{r}/metrics``: the client's metrics for the round after merging."""

    round: int
    client_id: str
    metrics: dict[str, float]
