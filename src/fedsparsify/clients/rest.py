"""A typed httpx client for the aggregator's REST API.

One method per operation; uploads and downloads stream. Connection errors and 503 / 408
answers are retried with exponential backoff, but only where a retry cannot do a thing twice:
idempotent methods (GET, PUT, ...) and POSTs, which always carry a fresh ``Idempotency-Key``
that their retries reuse, so the aggregator answers a retry of a request it already carried
out with the first answer (the same client id and token for a registration, the same
federation for a create) instead of doing it again. Every error answer is translated into the
package's error tree through its JSON ``error`` code (a 409 ``mask_mismatch`` becomes
:class:`~fedsparsify.errors.MaskMismatchError`), and transport failures become
:class:`~fedsparsify.errors.TransportError`.

TLS: ``verify`` is ``True`` (the system's CAs), a CA bundle file (or directory) that signed the
aggregator's certificate, an :class:`ssl.SSLContext`, or ``False`` (no check: tests only). A
certificate that does not verify is not retried: it fails at once with a ``TransportError``
that says so.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fedsparsify.crypto import PublicIdentity
from fedsparsify.errors import ConfigError, FedsparsifyError, TransportError, error_for_code

__all__ = ["AggregatorClient", "Registration", "RoundStatus", "tls_verification"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 1 << 16
#: Methods a retry cannot turn into a second action.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Answers that say "not now" rather than "no": retried.
_RETRY_STATUSES = frozenset({408, 503})


@dataclass(frozen=True)
class Registration:
    """What the aggregator answers once, at registration: keep the token safe."""

    federation_id: str
    client_id: str
    token: str
    is_dealer: bool


@dataclass(frozen=True)
class RoundStatus:
    """A round as the aggregator reports it."""

    index: int
    state: str
    reason: str | None
    participants: tuple[str, ...]
    total_samples: int
    channels: tuple[str, ...]
    mask_digest: str | None
    value_count: int | None
    uploaded: tuple[str, ...]
    aggregate_ready: bool
    deadline: str | None
    attempt: int = 0
    participants_digest: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    uploads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundStatus:
        """Parse the aggregator's round object."""
        return cls(
            index=int(data["index"]),
            state=str(data["state"]),
            reason=data.get("reason"),
            participants=tuple(data.get("participants", ())),
            total_samples=int(data.get("total_samples", 0)),
            channels=tuple(data.get("channels", ("values",))),
            mask_digest=data.get("mask_digest"),
            value_count=data.get("value_count"),
            uploaded=tuple(data.get("uploaded", ())),
            aggregate_ready=bool(data.get("aggregate_ready", False)),
            deadline=data.get("deadline"),
            attempt=int(data.get("attempt", 0)),
            participants_digest=data.get("participants_digest"),
            weights={str(k): float(v) for k, v in (data.get("weights") or {}).items()},
            uploads={str(k): tuple(v) for k, v in (data.get("uploads") or {}).items()},
        )

    @property
    def is_finished(self) -> bool:
        """Closed or failed: nothing more will be accepted."""
        return self.state in ("closed", "failed")


class AggregatorClient:
    """Talks to one aggregator as one identity (admin, enrolment or client token)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
        backoff_s: float = 0.25,
        verify: str | Path | bool | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        verify = tls_verification(verify)
        self._options: dict[str, Any] = {
            "timeout_s": timeout_s,
            "retries": retries,
            "backoff_s": backoff_s,
            "verify": verify,
            "transport": transport,
        }
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            verify=verify,
            transport=transport,
        )
        self._retries = retries
        self._backoff_s = backoff_s

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> AggregatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_token(self, token: str) -> AggregatorClient:
        """A client for the same server acting as another identity."""
        return AggregatorClient(self.base_url, token=token, **self._options)

    @property
    def base_url(self) -> str:
        """The aggregator's address."""
        return str(self._http.base_url)

    # -- plumbing -------------------------------------------------------------------------

    def _with_retries(self, what: str, call: Callable[[], T], *, retry: bool = True) -> T:
        """``call()``, retried on connection errors and 503 / 408 answers when ``retry`` (an
        idempotent method, or a POST carrying an ``Idempotency-Key``)."""
        delay = self._backoff_s
        retries = self._retries if retry else 0
        for attempt in range(retries + 1):
            try:
                return call()
            except (httpx.TransportError, _Retryable) as exc:
                tls = _tls_failure(exc)
                if tls is not None:
                    raise TransportError(
                        f"{what}: the TLS certificate of {self.base_url} does not verify "
                        f"({tls.verify_message or tls}); if your own CA signed it, pass that CA "
                        "(--ca)"
                    ) from exc
                if attempt == retries:
                    if isinstance(exc, _Retryable):
                        raise exc.error from None
                    raise TransportError(
                        f"cannot reach the aggregator at {self.base_url} ({what}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                log.info(
                    "%s failed (%s); retry %d in %.2fs",
                    what,
                    type(exc).__name__,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One logical request: a POST gets one ``Idempotency-Key`` that every retry reuses;
        other methods that are not idempotent are never retried."""
        headers = dict(kwargs.pop("headers", None) or {})
        if method == "POST":
            headers.setdefault("Idempotency-Key", secrets.token_urlsafe(18))
        keyed = "Idempotency-Key" in headers

        def call() -> httpx.Response:
            response = self._http.request(method, path, headers=headers, **kwargs)
            _raise_for_error(response)
            if response.headers.get("Idempotent-Replayed") == "true":
                log.info(
                    "%s %s: the aggregator had done this already; its first answer", method, path
                )
            return response

        return self._with_retries(f"{method} {path}", call, retry=method in _IDEMPOTENT or keyed)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise TransportError(f"{method} {self.base_url}{path}: answer is not JSON") from exc

    # -- operations -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return dict(self._json("GET", "/healthz"))

    def metrics(self) -> str:
        """``GET /metrics``: the aggregator's Prometheus metrics, as text."""
        return self._request("GET", "/metrics").text

    def create_federation(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Admin: create a federation; the answer holds the enrolment token, shown once."""
        return dict(self._json("POST", "/v1/federations", json=spec))

    def list_federations(self) -> list[dict[str, Any]]:
        """Admin: every federation."""
        return list(self._json("GET", "/v1/federations"))

    def get_spec(self, federation_id: str, *, enrollment_token: str) -> dict[str, Any]:
        """The federation spec, readable with the enrolment token before registering (a site
        needs the model's input shape to load its data and count its samples)."""
        return dict(
            self._json(
                "GET",
                f"/v1/federations/{federation_id}/spec",
                headers={"X-Enrollment-Token": enrollment_token},
            )
        )

    def get_federation(self, federation_id: str) -> dict[str, Any]:
        """State, spec, participants and per-round history of one federation."""
        return dict(self._json("GET", f"/v1/federations/{federation_id}"))

    def register(
        self,
        federation_id: str,
        *,
        enrollment_token: str,
        name: str,
        identity: PublicIdentity,
        num_samples: int,
    ) -> Registration:
        """Join a federation with its enrolment token and this site's three public keys; the
        answer's token is shown once."""

        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode("ascii")

        body = {
            "name": name,
            "public_key": b64(identity.envelope_key),
            "signing_key": b64(identity.signing_key),
            "mask_key": b64(identity.mask_key),
            "num_samples": num_samples,
        }
        data = self._json(
            "POST",
            f"/v1/federations/{federation_id}/clients",
            json=body,
            headers={"X-Enrollment-Token": enrollment_token},
        )
        return Registration(
            federation_id=str(data["federation_id"]),
            client_id=str(data["client_id"]),
            token=str(data["token"]),
            is_dealer=bool(data["is_dealer"]),
        )

    def list_clients(self, federation_id: str) -> list[dict[str, Any]]:
        """Members of a federation with their X25519 public keys (base64)."""
        return list(self._json("GET", f"/v1/federations/{federation_id}/clients"))

    def put_context(self, federation_id: str, public_context: bytes) -> dict[str, Any]:
        """Dealer: upload the public CKKS context (no secret key inside)."""
        return dict(
            self._json(
                "PUT", f"/v1/federations/{federation_id}/keys/context", content=public_context
            )
        )

    def get_context(self, federation_id: str) -> bytes:
        """The federation's public CKKS context."""
        return self._request("GET", f"/v1/federations/{federation_id}/keys/context").content

    def put_envelope(self, federation_id: str, client_id: str, envelope: bytes) -> None:
        """Dealer: store the secret-key envelope sealed for ``client_id``."""
        self._request(
            "PUT", f"/v1/federations/{federation_id}/keys/envelopes/{client_id}", content=envelope
        )

    def get_envelope(self, federation_id: str) -> bytes | None:
        """The caller's own envelope, or None while the dealer has not sealed it yet."""
        try:
            return self._request("GET", f"/v1/federations/{federation_id}/keys/envelope").content
        except FedsparsifyError as exc:
            if exc.code == "not_found":
                return None
            raise

    def rotate_join_code(
        self,
        federation_id: str,
        *,
        max_uses: int | None = None,
        expires_after_s: float | None = None,
    ) -> dict[str, Any]:
        """Admin: a new join code (the old one stops working)."""
        body = {"max_uses": max_uses, "expires_after_s": expires_after_s}
        data: dict[str, Any] = self._json(
            "POST", f"/v1/federations/{federation_id}/enrollment", json=body
        )
        return data

    def revoke_join_code(self, federation_id: str) -> None:
        """Admin: the join code stops working."""
        self._request("DELETE", f"/v1/federations/{federation_id}/enrollment")

    def remove_client(self, federation_id: str, client_id: str) -> dict[str, Any]:
        """Admin: remove a member (no new round includes it; its token stops working)."""
        data: dict[str, Any] = self._json(
            "DELETE", f"/v1/federations/{federation_id}/clients/{client_id}"
        )
        return data

    def start_round(self, federation_id: str) -> RoundStatus:
        """Admin: open the next round."""
        return RoundStatus.from_json(self._json("POST", f"/v1/federations/{federation_id}/rounds"))

    def get_round(self, federation_id: str, index: int | str = "current") -> RoundStatus:
        """One round's status (``"current"`` for the latest)."""
        return RoundStatus.from_json(
            self._json("GET", f"/v1/federations/{federation_id}/rounds/{index}")
        )

    def upload(self, federation_id: str, index: int, channel: str, source: Path) -> dict[str, Any]:
        """Stream an encrypted-update file (its size declared, so that an aggregator that
        refuses it by size answers before a byte is sent); retried from its start on
        connection errors."""
        path = f"/v1/federations/{federation_id}/rounds/{index}/updates/{channel}"

        def call() -> httpx.Response:
            with source.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size  # declared: a refusal by size is at once
                response = self._http.put(
                    path,
                    content=_file_chunks(fh),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                )
            _raise_for_error(response)
            return response

        return dict(self._with_retries(f"PUT {path}", call).json())

    def download_aggregate(self, federation_id: str, index: int, channel: str, target: Path) -> int:
        """Stream a closed round's encrypted sum into ``target`` (atomically); bytes written."""
        path = f"/v1/federations/{federation_id}/rounds/{index}/aggregate/{channel}"
        tmp = target.with_name(target.name + ".part")

        def call() -> int:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_error(response)
                written = 0
                with tmp.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
            tmp.replace(target)
            return written

        return self._with_retries(f"GET {path}", call)

    def report_metrics(self, federation_id: str, index: int, metrics: dict[str, float]) -> None:
        """Report plaintext evaluation scalars for a round."""
        self._request(
            "POST",
            f"/v1/federations/{federation_id}/rounds/{index}/metrics",
            json={"metrics": metrics},
        )


def tls_verification(verify: str | Path | bool | ssl.SSLContext) -> bool | ssl.SSLContext:
    """What httpx's ``verify`` gets: a CA bundle path becomes an SSL context trusting it
    (:class:`ConfigError` when it is unreadable or holds no certificate)."""
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    path = Path(verify)
    try:
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        path.read_bytes()
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"CA bundle {path}: cannot use it to verify the aggregator: {exc}"
        ) from exc


def _tls_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed behind an httpx transport error, if any: retrying
    cannot help (other TLS errors, such as a connection cut mid-stream, are retried)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


class _Retryable(Exception):
    """A 503 or 408 answer: retried, then raised as the translated error."""

    def __init__(self, error: FedsparsifyError) -> None:
        super().__init__(str(error))
        self.error = error


def _file_chunks(fh: Any) -> Iterator[bytes]:
    while chunk := fh.read(_CHUNK):
        yield chunk


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, detail = str(body["error"]), str(body.get("detail", ""))
    except (ValueError, KeyError, TypeError):
        code, detail = "", response.text[:200]
    cls = error_for_code(code) if code else FedsparsifyError
    if cls is FedsparsifyError:
        error: FedsparsifyError = TransportError(
            f"HTTP {response.status_code} from {response.request.url}: {detail}"
        )
    else:
        error = cls(detail)
    if response.status_code in _RETRY_STATUSES:
        raise _Retryable(error)
    raise error
