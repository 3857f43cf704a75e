"""The package's one error tree.

Every exception fedsparsify raises on purpose derives from :class:`FedsparsifyError`.
Exceptions of the libraries below us (TenSEAL ``ValueError``/``RuntimeError``, ``cryptography``'s
``InvalidTag``, SQLAlchemy errors, httpx errors) are translated at the boundary with
``raise OurError(...) from exc``. Each class carries a stable ``code`` (the ``error`` field of the
REST API's JSON error body) and an ``http_status`` that ``fedsparsify.api`` maps it to; the
client translates a response's ``code`` back into the same class with :func:`error_for_code`.

::

    FedsparsifyError                      code            HTTP
    ├── ConfigError                       invalid_config   422  bad settings, spec or argument
    ├── CryptoError                       crypto_error     400
    │   ├── InsecureParametersError       insecure_parameters 422  below 128-bit security / unusable
    │   ├── ValueRangeError               value_out_of_range 422  values could overflow the CKKS sum
    │   ├── SecretKeyRequiredError        secret_key_required 400  a public context cannot decrypt
    │   └── EnvelopeError                 envelope_invalid 400  tampered/misaddressed key envelope
    ├── WireFormatError                   wire_format      400  an encrypted-update stream is bad
    │   ├── MalformedStreamError          malformed_stream 400  garbage: magic, version, header
    │   ├── TruncatedStreamError          truncated_stream 400  the stream ended early
    │   ├── TrailingBytesError            trailing_bytes   400  bytes after the last frame
    │   ├── ContextMismatchError          context_mismatch 409  made under another key set
    │   ├── ParameterMismatchError        parameter_mismatch 409  other CKKS parameters or slots
    │   ├── CountMismatchError            count_mismatch   409  wrong value or ciphertext count
    │   ├── MaskMismatchError             mask_mismatch    409  mask digest differs from the round's
    │   └── RoundMismatchError            round_mismatch   409  made for another federation, round,
    │                                                           attempt, participant set or channel
    ├── TrustError                        untrusted        403  a site refuses: unconfirmed peer,
    │                                                           dealer or roster (client side)
    ├── PlatformError                     platform_error   400  federated-learning core
    │   ├── MaskError                     mask_error       400  mask does not fit the model
    │   ├── DataError                     data_error       400  missing/unreadable data or metadata
    │   └── SimulationError               simulation_error 400  a simulated site or its engine
    │                                                           (Ray) failed
    ├── ServiceError                      service_error    400  aggregator domain errors
    │   ├── NotFoundError                 not_found        404
    │   ├── AuthenticationError           unauthorized     401  missing or wrong token
    │   ├── PermissionDeniedError         forbidden        403  valid token, not allowed
    │   ├── ConflictError                 conflict         409  state forbids it (duplicate, closed)
    │   │   └── RoundClosedError          round_closed     409  the round no longer takes uploads
    │   ├── PayloadTooLargeError          payload_too_large 413
    │   ├── RequestTimeoutError           request_timeout  408  the client stalled while sending
    │   └── UnavailableError              unavailable      503  try again later
    └── TransportError                    transport_error  ---  client side: the server could not
                                                               be reached or answered nonsense
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "ContextMismatchError",
    "CountMismatchError",
    "CryptoError",
    "DataError",
    "EnvelopeError",
    "FedsparsifyError",
    "InsecureParametersError",
    "MalformedStreamError",
    "MaskError",
    "MaskMismatchError",
    "NotFoundError",
    "ParameterMismatchError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PlatformError",
    "RequestTimeoutError",
    "RoundClosedError",
    "RoundMismatchError",
    "SecretKeyRequiredError",
    "ServiceError",
    "SimulationError",
    "TrailingBytesError",
    "TransportError",
    "TruncatedStreamError",
    "TrustError",
    "UnavailableError",
    "ValueRangeError",
    "WireFormatError",
    "all_error_classes",
    "error_for_code",
]


class FedsparsifyError(Exception):
    """Base of every error raised on purpose by fedsparsify."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400


class ConfigError(FedsparsifyError):
    """Invalid settings, federation spec or argument."""

    code = "invalid_config"
    http_status = 422


class CryptoError(FedsparsifyError):
    """A cryptographic operation failed."""

    code = "crypto_error"


class InsecureParametersError(CryptoError):
    """CKKS parameters below 128-bit security, or unusable for the job."""

    code = "insecure_parameters"
    http_status = 422


class ValueRangeError(CryptoError):
    """Values too large to encrypt: the homomorphic sum could overflow and decrypt to garbage."""

    code = "value_out_of_range"
    http_status = 422


class SecretKeyRequiredError(CryptoError):
    """The operation needs the secret key and the context holds none."""

    code = "secret_key_required"


class EnvelopeError(CryptoError):
    """A key envelope is tampered with, misaddressed or unreadable."""

    code = "envelope_invalid"


class WireFormatError(FedsparsifyError):
    """An encrypted-update stream is not what the reader expects."""

    code = "wire_format"


class MalformedStreamError(WireFormatError):
    """Garbage: wrong magic, unknown version, bad header or an unreadable frame."""

    code = "malformed_stream"


class TruncatedStreamError(WireFormatError):
    """The stream ended before its header or last frame was complete."""

    code = "truncated_stream"


class TrailingBytesError(WireFormatError):
    """Bytes follow the last frame the header announced."""

    code = "trailing_bytes"


class ContextMismatchError(WireFormatError):
    """The stream was made under another key set (context digest differs)."""

    code = "context_mismatch"
    http_status = 409


class ParameterMismatchError(WireFormatError):
    """The stream's CKKS parameters or slot layout differ from the expected ones."""

    code = "parameter_mismatch"
    http_status = 409


class CountMismatchError(WireFormatError):
    """Wrong number of values or ciphertexts for the round."""

    code = "count_mismatch"
    http_status = 409


class MaskMismatchError(WireFormatError):
    """The update's mask digest differs from the round's mask digest."""

    code = "mask_mismatch"
    http_status = 409


class RoundMismatchError(WireFormatError):
    """The update was made for another federation, round, attempt, participant set or channel
    (a replay, or a site behind the round)."""

    code = "round_mismatch"
    http_status = 409


class TrustError(FedsparsifyError):
    """A site refuses to go on: a peer, the dealer or the roster is not one it confirmed."""

    code = "untrusted"
    http_status = 403


class PlatformError(FedsparsifyError):
    """An error in the federated-learning core."""

    code = "platform_error"


class MaskError(PlatformError):
    """A mask does not fit the model (names, shapes, dtype) or would grow."""

    code = "mask_error"


class DataError(PlatformError):
    """Data is missing, unreadable or inconsistent with its metadata."""

    code = "data_error"


class SimulationError(PlatformError):
    """A simulated site's round, or the engine running it (Ray), failed."""

    code = "simulation_error"


class ServiceError(FedsparsifyError):
    """An aggregator domain error; ``fedsparsify.api`` maps it to an HTTP status."""

    code = "service_error"


class NotFoundError(ServiceError):
    """The resource does not exist."""

    code = "not_found"
    http_status = 404


class AuthenticationError(ServiceError):
    """A token is missing or wrong."""

    code = "unauthorized"
    http_status = 401


class PermissionDeniedError(ServiceError):
    """The caller is authenticated but not allowed to do this."""

    code = "forbidden"
    http_status = 403


class ConflictError(ServiceError):
    """The resource's state forbids the request (duplicate, wrong state)."""

    code = "conflict"
    http_status = 409


class RoundClosedError(ConflictError):
    """The round no longer accepts uploads (closed, failed or past its deadline)."""

    code = "round_closed"


class PayloadTooLargeError(ServiceError):
    """The request body exceeds the configured limit."""

    code = "payload_too_large"
    http_status = 413


class RequestTimeoutError(ServiceError):
    """The client sent its request too slowly (a stalled or trickling body)."""

    code = "request_timeout"
    http_status = 408


class UnavailableError(ServiceError):
    """The service cannot answer now; retry later."""

    code = "unavailable"
    http_status = 503


class TransportError(FedsparsifyError):
    """Client side: the server could not be reached or answered something unreadable."""

    code = "transport_error"
    http_status = 502


def all_error_classes() -> list[type[FedsparsifyError]]:
    """Every class of the tree, base first (depth-first)."""
    out: list[type[FedsparsifyError]] = []

    def walk(cls: type[FedsparsifyError]) -> None:
        out.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(FedsparsifyError)
    return out


def error_for_code(code: str) -> type[FedsparsifyError]:
    """The error class whose ``code`` is ``code``; :class:`FedsparsifyError` when unknown."""
    for cls in all_error_classes():
        if cls.code == code:
            return cls
    return FedsparsifyError
