"""Request bodies at the HTTP edge: size limits and read timeouts, before anything else runs.

A pure ASGI middleware that wraps the whole app, so it acts before routing, body parsing and
authentication:

- A request line and headers over ``max_head_bytes`` are answered 431 (an incomplete one is
  bounded by the HTTP parser, :mod:`fedsparsify.api.server`).
- A ``Content-Length`` over the route's limit is answered 413 at once; no body byte is read.
- Bodies of *streamed* routes (update uploads, the public context, key envelopes; see
  :func:`streamed_kind`) pass through as they arrive, counted against their limit
  (``max_upload_bytes``, ``max_context_bytes``, ``max_envelope_bytes``); at most
  ``max_concurrent_uploads`` are received at once, more are answered 503 with ``Retry-After``.
- Every other body (JSON) is read here, at most ``max_json_bytes`` (413 past it), and then
  handed to the app: a hostile body is never parsed.
- While a body is incomplete, each piece must arrive within ``body_chunk_timeout_s``, and once
  it has waited that long in all, it must average ``body_min_bytes_per_s``: else 408 (a stalled
  or trickling client). A streamed body that stalls or overflows ends for the app with
  ``http.disconnect``; :func:`body_refusal` tells the route why, and the route answers 408 or
  413 and removes what it staged.

Every answer sent while the request body is still unread carries ``Connection: close``, so the
server closes the connection instead of reading the rest (uvicorn would otherwise read and drop
a declared 2 GiB). Each refusal is counted in ``fedsparsify_edge_refused_total{reason}``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedsparsify.api.errors import error_response
from fedsparsify.api.metrics import ServerMetrics
from fedsparsify.api.settings import Settings
from fedsparsify.errors import (
    FedsparsifyError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnavailableError,
)

__all__ = ["BODY_REFUSAL", "EdgeLimits", "Refusal", "body_refusal", "streamed_kind"]

log = logging.getLogger(__name__)

#: Scope key under which a refused streamed body leaves its reason for the route.
BODY_REFUSAL = "fedsparsify.body_refusal"
Refusal = Literal["too_large", "stalled", "too_slow"]

_REASONS: dict[Refusal, str] = {
    "too_large": "body_too_large",
    "stalled": "body_stalled",
    "too_slow": "body_too_slow",
}
_CLOSE = (b"connection", b"close")
_DISCONNECT: Message = {"type": "http.disconnect"}

_STREAMED = (
    ("update", re.compile(r"/v1/federations/[^/]+/rounds/[^/]+/updates/[^/]+")),
    ("context", re.compile(r"/v1/federations/[^/]+/keys/context")),
    ("envelope", re.compile(r"/v1/federations/[^/]+/keys/envelopes/[^/]+")),
)


def streamed_kind(method: str, path: str) -> str | None:
    """``update``, ``context`` or ``envelope`` for a route whose raw body streams to its
    handler; None for every other request (its body is read here, as JSON-sized)."""
    if method != "PUT":
        return None
    for kind, pattern in _STREAMED:
        if pattern.fullmatch(path):
            return kind
    return None


def body_refusal(scope: Scope) -> Refusal | None:
    """Why the edge ended a streamed body early (None: it did not)."""
    refusal: Refusal | None = scope.get(BODY_REFUSAL)
    return refusal


def _head_size(scope: Scope) -> int:
    """Bytes of the request line and headers, near enough (a complete head that h11 parsed
    in one piece is not bounded by its incomplete-event limit)."""
    size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
    return size + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class _Body:
    """One request body as the app receives it: counted against a limit and timed."""

    def __init__(
        self,
        receive: Receive,
        *,
        limit: int,
        chunk_timeout_s: float,
        min_bytes_per_s: float,
        on_refusal: Callable[[Refusal], None],
    ) -> None:
        self._receive = receive
        self.limit = limit
        self.chunk_timeout_s = chunk_timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self._on_refusal = on_refusal
        self.received = 0
        self.waited_s = 0.0
        self.complete = False
        self.refusal: Refusal | None = None

    def _refuse(self, refusal: Refusal) -> Message:
        self.refusal = refusal
        self._on_refusal(refusal)
        return _DISCONNECT

    async def receive(self) -> Message:
        """The next body message; ``http.disconnect`` once the body is refused."""
        if self.refusal is not None:
            return _DISCONNECT
        if self.complete:
            return await self._receive()  # after the body: only the disconnect is left
        started = time.monotonic()
        try:
            with anyio.fail_after(self.chunk_timeout_s):
                message = await self._receive()
        except TimeoutError:
            return self._refuse("stalled")
        self.waited_s += time.monotonic() - started
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            return self._refuse("too_large")
        if not message.get("more_body", False):
            self.complete = True
        elif (
            self.min_bytes_per_s > 0
            and self.waited_s > self.chunk_timeout_s
            and self.received < self.min_bytes_per_s * self.waited_s
        ):
            return self._refuse("too_slow")
        return message

    def error(self, what: str) -> FedsparsifyError:
        """The error answering this body's refusal."""
        if self.refusal == "too_large":
            return PayloadTooLargeError(f"{what} exceeds the limit of {self.limit} bytes")
        if self.refusal == "stalled":
            return RequestTimeoutError(
                f"{what} stalled: nothing arrived for {self.chunk_timeout_s:g} s "
                f"after {self.received} bytes"
            )
        rate = self.received / self.waited_s if self.waited_s else 0.0
        return RequestTimeoutError(
            f"{what} arrives too slowly: {rate:.0f} B/s, below the floor of "
            f"{self.min_bytes_per_s:.0f} B/s"
        )


class EdgeLimits:
    """The middleware (see the module docstring); one per app."""

    def __init__(self, app: ASGIApp, *, settings: Settings, metrics: ServerMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.uploads_in_flight = 0

    def _limit(self, kind: str | None) -> int:
        s = self.settings
        limits = {
            "update": s.max_upload_bytes,
            "context": s.max_context_bytes,
            "envelope": s.max_envelope_bytes,
        }
        return limits.get(kind or "", s.max_json_bytes)

    def _count(self, reason: str) -> None:
        self.metrics.edge_refused.labels(reason=reason).inc()

    def _count_upload(self, kind: str | None, error: FedsparsifyError) -> None:
        # An update refused here never reaches its route, which counts the others.
        if kind == "update":
            self.metrics.uploads_refused.labels(code=error.code).inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = _head_size(scope)
        if head > self.settings.max_head_bytes:
            self._count("head_too_large")
            await self._answer(
                scope,
                receive,
                send,
                PayloadTooLargeError(
                    f"request line and headers of {head} bytes exceed the limit of "
                    f"{self.settings.max_head_bytes} bytes"
                ),
                status=431,
            )
            return
        kind = streamed_kind(scope["method"], scope["path"])
        limit = self._limit(kind)
        what = f"{kind} body" if kind else "request body"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            self._count("body_too_large")
            error = PayloadTooLargeError(
                f"{what} of {declared} bytes exceeds the limit of {limit} bytes"
            )
            self._count_upload(kind, error)
            log.info("%s %r: %s", scope["method"], scope["path"], error)
            await self._answer(scope, receive, send, error)
            return

        def refused(refusal: Refusal) -> None:
            scope[BODY_REFUSAL] = refusal
            self._count(_REASONS[refusal])
            log.info("%s %r: %s refused (%s)", scope["method"], scope["path"], what, refusal)

        body = _Body(
            receive,
            limit=limit,
            chunk_timeout_s=self.settings.body_chunk_timeout_s,
            min_bytes_per_s=self.settings.body_min_bytes_per_s,
            on_refusal=refused,
        )
        if kind is None:
            await self._buffered(scope, body, send, what)
        else:
            await self._streamed(scope, kind, body, send)

    async def _buffered(self, scope: Scope, body: _Body, send: Send, what: str) -> None:
        parts: list[bytes] = []
        while not body.complete:
            message = await body.receive()
            if body.refusal is not None:
                await self._answer(scope, body.receive, send, body.error(what))
                return
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            parts.append(message.get("body", b""))
        data = b"".join(parts)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await body.receive()
            replayed = True
            return {"type": "http.request", "body": data, "more_body": False}

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, kind: str, body: _Body, send: Send) -> None:
        if self.uploads_in_flight >= self.settings.max_concurrent_uploads:
            self._count("uploads_busy")
            busy = UnavailableError(
                f"{self.uploads_in_flight} uploads are being received (the most this "
                "aggregator takes at once); retry shortly"
            )
            self._count_upload(kind, busy)
            await self._answer(scope, body.receive, send, busy)
            return

        async def send_closing_if_unread(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.complete:
                headers = list(message.get("headers", []))
                if _CLOSE not in headers:
                    message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        self.uploads_in_flight += 1
        try:
            await self.app(scope, body.receive, send_closing_if_unread)
        finally:
            self.uploads_in_flight -= 1

    @staticmethod
    async def _answer(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Send,
        error: FedsparsifyError,
        *,
        status: int | None = None,
    ) -> None:
        response = error_response(status or error.http_status, error.code, str(error))
        response.headers["connection"] = "close"
        if isinstance(error, UnavailableError):
            response.headers["retry-after"] = "1"
        await response(scope, receive, send)
