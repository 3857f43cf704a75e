"""Serving the aggregator: uvicorn with connection limits, head timeouts and safe logs.

What :mod:`fedsparsify.api.limits` cannot see, because it happens before a request exists, is
handled here, in the HTTP protocol uvicorn runs for each connection:

- at most ``max_connections`` open connections, and at most ``max_connections_per_ip`` (never
  more than half of ``max_connections``) from one address: a connection beyond either is
  answered 503 and closed at once, so one client cannot take every slot and ``/healthz`` keeps
  answering others;
- a request line and headers must arrive within ``head_timeout_s`` of the connection opening
  or of the previous answer, and fit in ``max_head_bytes``; a slow or idle one is closed
  (counted as ``head_timeout``), an oversized one gets a 400;
- idle keep-alive connections close after ``keep_alive_timeout_s``;
- the file-descriptor limit is raised to its hard limit, and the connection and upload limits
  lowered (with a warning) when even that cannot hold them.

Log messages are written with control characters escaped (:class:`EscapingFormatter`), so
nothing a client sends can start a line of its own in the server log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fedsparsify.api.app import create_app
from fedsparsify.api.metrics import ServerMetrics
from fedsparsify.api.settings import Settings

__all__ = ["ConnectionGuard", "EdgeProtocol", "EscapingFormatter", "fit_to_fd_limit", "serve"]

log = logging.getLogger(__name__)

#: File descriptors kept free for everything but client sockets (database, logs, event loop).
FD_RESERVE = 64
#: File descriptors one upload in flight may hold (its temporary file, the running sum).
FDS_PER_UPLOAD = 2
#: Connections the kernel queues for accepting (uvicorn's default).
LISTEN_BACKLOG = 2048


def escape_control(text: str) -> str:
    """``text`` with every non-printable character as a Python escape (``\\n``, ``\\x1b``).

    Uses ``repr`` rather than a codec: a codec module loads on first use, which fails when the
    process is out of file descriptors (exactly when there is most to log)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class EscapingFormatter(logging.Formatter):
    """A formatter whose messages cannot contain control characters (tracebacks keep their
    line breaks: they are ours, not a client's)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)


def _raw_answer(status: int, reason: str, code: str, detail: str) -> bytes:
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionGuard:
    """Counts open connections, in all and per address; shared by every connection."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_address: int,
        head_timeout_s: float,
        metrics: ServerMetrics,
    ) -> None:
        self.max_connections = max_connections
        half = max(1, max_connections // 2)
        self.max_per_address = min(max_per_address, half) if max_per_address else half
        self.head_timeout_s = head_timeout_s
        self.metrics = metrics
        self.open = 0
        self.per_address: Counter[str] = Counter()

    def admit(self, address: str) -> str | None:
        """Take a slot for a connection from ``address``; the refusal reason when full."""
        if self.open >= self.max_connections:
            return "too_many_connections"
        if self.per_address[address] >= self.max_per_address:
            return "too_many_connections_from_address"
        self.open += 1
        self.per_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """Give back the slot of an admitted connection."""
        self.open -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def count(self, reason: str) -> None:
        """Count a refusal in ``fedsparsify_edge_refused_total``."""
        self.metrics.edge_refused.labels(reason=reason).inc()


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol plus the connection limits and the head timeout."""

    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._address = self.client[0] if self.client else ""
        refusal = self.guard.admit(self._address)
        self._admitted = refusal is None
        if refusal is not None:
            self.guard.count(refusal)
            detail = (
                "this aggregator holds as many connections as it takes"
                if refusal == "too_many_connections"
                else "your address holds as many connections as one address may"
            )
            transport.write(
                _raw_answer(503, "Service Unavailable", "unavailable", f"{detail}; retry shortly")
            )
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if getattr(self, "_admitted", False):
            self._admitted = False
            self.guard.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the request line and headers are complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        """A malformed or oversized request head: the JSON error shape, then close."""
        self.transport.write(
            _raw_answer(
                400,
                "Bad Request",
                "bad_request",
                "invalid HTTP request: malformed, or a request line and headers over "
                f"{self.config.h11_max_incomplete_event_size} bytes",
            )
        )
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.guard.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.guard.count("head_timeout")
            self.transport.close()


def fit_to_fd_limit(settings: Settings) -> tuple[Settings, int]:
    """The settings to serve with and the listen backlog, within the file-descriptor limit.

    The limit is raised to its hard limit first. Besides the open connections, uploads and
    :data:`FD_RESERVE`, the backlog counts: asyncio accepts a whole burst of waiting connections
    before the guard can turn any away, and an accept that finds no descriptor stops accepting
    for a second (``/healthz`` with it). Where even the hard limit is too small, connections,
    uploads and backlog are lowered (with a warning) to fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = (
        settings.max_connections
        + FDS_PER_UPLOAD * settings.max_concurrent_uploads
        + FD_RESERVE
        + LISTEN_BACKLOG
    )
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return settings, LISTEN_BACKLOG
    room = max(0, soft - FD_RESERVE)
    backlog = max(8, room // 4)
    connections = max(8, min(settings.max_connections, room // 2))
    uploads = max(
        1,
        min(settings.max_concurrent_uploads, (room - connections - backlog) // FDS_PER_UPLOAD),
    )
    log.warning(
        "file-descriptor limit %d holds fewer than max_connections=%d plus "
        "max_concurrent_uploads=%d: serving at most %d connections and %d uploads at once, "
        "listen backlog %d",
        soft,
        settings.max_connections,
        settings.max_concurrent_uploads,
        connections,
        uploads,
        backlog,
    )
    fitted = settings.model_copy(
        update={"max_connections": connections, "max_concurrent_uploads": uploads}
    )
    return fitted, backlog


def configure_logging(level: str) -> None:
    """Log to stderr with escaped messages."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    shutdown_timeout_s: int = 5,
) -> None:
    """Run the aggregator until interrupted."""
    configure_logging(log_level)
    settings, backlog = fit_to_fd_limit(settings)
    app = create_app(settings)

    class Protocol(EdgeProtocol):
        guard = ConnectionGuard(
            max_connections=settings.max_connections,
            max_per_address=settings.max_connections_per_ip,
            head_timeout_s=settings.head_timeout_s,
            metrics=app.state.fedsparsify.metrics,
        )

    options: dict[str, Any] = {}
    if tls_cert is not None and tls_key is not None:
        options = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=Protocol,
        log_level=log_level.lower(),
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        h11_max_incomplete_event_size=settings.max_head_bytes,
        timeout_graceful_shutdown=max(1, shutdown_timeout_s),
        backlog=backlog,
        **options,
    )
    log.info(
        "HTTP edge: JSON bodies <= %d B, uploads <= %d B, body pieces within %gs, heads within "
        "%gs, <= %d connections (%d per address), <= %d uploads at once",
        settings.max_json_bytes,
        settings.max_upload_bytes,
        settings.body_chunk_timeout_s,
        settings.head_timeout_s,
        Protocol.guard.max_connections,
        Protocol.guard.max_per_address,
        settings.max_concurrent_uploads,
    )
    uvicorn.Server(config).run()
