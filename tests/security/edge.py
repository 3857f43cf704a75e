"""Tools of the HTTP-edge tests: raw sockets, a proxy that loses answers, RSS sampling.

Everything talks to a real ``fedsparsify serve`` on loopback. Attacks come from 127.0.0.2 (a
loopback address of its own) where the test needs an honest client on 127.0.0.1 beside them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType

import httpx
import psutil
import pytest

from tests.reliability.live import LiveServer

ATTACKER = "127.0.0.2"


@contextmanager
def live_server(
    factory: pytest.TempPathFactory, label: str, **settings: object
) -> Iterator[LiveServer]:
    """``fedsparsify serve`` with ``settings`` (``FEDSPARSIFY_<NAME>``), stopped afterwards."""
    env = {f"FEDSPARSIFY_{name.upper()}": str(value) for name, value in settings.items()}
    server = LiveServer(factory.mktemp(label), env=env)
    try:
        yield server
    finally:
        server.stop()


def open_socket(port: int, *, source: str = "127.0.0.1", timeout_s: float = 10.0) -> socket.socket:
    """A TCP connection to the server from ``source``."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout_s, source_address=(source, 0)
    )
    sock.settimeout(timeout_s)
    return sock


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request line and headers."""
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Answer:
    """What came back on a raw socket: a status and JSON body, or a closed connection."""

    status: int | None
    body: dict[str, object] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def read_answer(sock: socket.socket, *, started: float | None = None) -> Answer:
    """Read one answer (status, headers, JSON body) or the connection's end; ``seconds`` since
    ``started``. A socket timeout propagates: the server neither answered nor closed in time."""
    started = time.monotonic() if started is None else started
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(None, seconds=time.monotonic() - started)
            data += chunk
    except ConnectionResetError:
        if not data:
            return Answer(None, seconds=time.monotonic() - started)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    try:
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except ConnectionResetError:
        pass
    body = json.loads(rest[:length]) if length and rest[:1] == b"{" else {}
    return Answer(status, body, headers, time.monotonic() - started)


def closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def healthz_ok(url: str, timeout_s: float = 5.0) -> bool:
    """``GET /healthz`` on a fresh connection answers 200 within ``timeout_s``."""
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class RssSampler:
    """Samples a process's resident memory every few milliseconds, in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.005) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    @property
    def growth_mb(self) -> float:
        """Peak minus the level before, in MB (10^6 bytes)."""
        return (self.peak - self.baseline) / 1e6

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        time.sleep(0.1)  # let the last allocation show
        self._stop.set()
        self._thread.join()


class AnswerLosingProxy:
    """A TCP proxy on loopback that loses the server's answer on its first ``lose`` connections.

    The request reaches the server whole and the server answers (so it has done the work), but
    the client's connection is closed before a byte of the answer reaches it: what a client sees
    when a connection drops at the worst moment. Later connections are relayed both ways. The
    ``Idempotency-Key`` of every request that went through is kept in ``keys``.
    """

    def __init__(self, upstream_port: int, *, lose: int = 1) -> None:
        self.upstream_port = upstream_port
        self.lose = lose
        self.connections = 0
        self.keys: list[str | None] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            losing = self.connections <= self.lose
            threading.Thread(target=self._serve, args=(client, losing), daemon=True).start()

    def _serve(self, client: socket.socket, losing: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60)
        threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
        try:
            while chunk := upstream.recv(65536):
                if losing:
                    break  # the server answered: the client never hears it
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        seen = b""
        try:
            while chunk := client.recv(65536):
                seen += chunk
                while b"\r\n\r\n" in seen:
                    head, _, seen = seen.partition(b"\r\n\r\n")
                    key = None
                    for line in head.decode("latin-1").split("\r\n")[1:]:
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "idempotency-key":
                            key = value.strip()
                    self.keys.append(key)
                    seen = b""  # bodies here are small JSON: drop them from the scan
                upstream.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        """Stop accepting."""
        self._closing = True
        self._listener.close()

    def __enter__(self) -> AnswerLosingProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
