"""Start an aggregator and site processes on this machine, over real HTTP on loopback.

Used by the demo, the latency benchmark and the end-to-end tests: every process is the real
``fedsparsify`` command (``serve`` and ``client``), so a local simulation exercises exactly
what a hospital and an operator would run. With a TLS certificate and key the aggregator serves
HTTPS, and every client made here (admin, readiness probe, sites via ``--ca``) verifies it
against the given CA.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.clients.roster import peers_line
from fedsparsify.clients.state import StateDir
from fedsparsify.errors import ConfigError, FedsparsifyError, TransportError

__all__ = [
    "AggregatorProcess",
    "SiteProcess",
    "confirm_peers",
    "free_port",
    "start_aggregator",
    "start_site",
]

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedsparsify", *args]


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


@dataclass
class _Process:
    """A child process whose output goes to a log file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        if not self.alive():
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 20) -> str:
        """The last lines of the child's output, for error messages."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _spawn(
    args: list[str],
    log_path: Path,
    env: dict[str, str],
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=preexec,
        )


def _fd_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@dataclass
class AggregatorProcess(_Process):
    """``fedsparsify serve`` on a loopback port."""

    url: str = ""
    admin_token: str = ""
    data_dir: Path = field(default_factory=Path)
    #: CA bundle that verifies the aggregator's TLS certificate (None: plain HTTP or system CAs).
    ca: Path | None = None

    @property
    def verify(self) -> str | bool:
        """What clients of this aggregator pass as ``verify``."""
        return str(self.ca) if self.ca is not None else True

    def admin(self) -> AggregatorClient:
        """A REST client holding the admin token."""
        return AggregatorClient(self.url, token=self.admin_token, verify=self.verify)

    def __enter__(self) -> AggregatorProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_aggregator(
    data_dir: Path,
    *,
    admin_token: str,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    ca: Path | None = None,
    log_level: str = "info",
    database_url: str | None = None,
    log_path: Path | None = None,
    fd_limit: int | None = None,
) -> AggregatorProcess:
    """Start the aggregator and wait until ``/healthz`` answers.

    With ``tls_cert`` and ``tls_key`` it serves HTTPS (certificate valid for 127.0.0.1) and the
    probe and :meth:`AggregatorProcess.admin` verify it against ``ca``. With ``database_url``
    (PostgreSQL) several of them may share ``data_dir``: give each its own ``log_path``.
    ``fd_limit`` caps the process's open files (soft and hard), as a small container or
    ``ulimit -n`` would."""
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("TLS needs both a certificate and its key")
    port = port or free_port()
    scheme = "https" if tls_cert is not None else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    env = _child_env({"FEDSPARSIFY_ADMIN_TOKEN": admin_token, **(extra_env or {})})
    args = _command(
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        log_level,
    )
    if tls_cert is not None and tls_key is not None:
        args += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
    if database_url is not None:  # in the environment, not on the command line (ps shows it)
        env["FEDSPARSIFY_DATABASE_URL"] = database_url
    log_path = log_path or data_dir.parent / f"{data_dir.name}-aggregator.log"
    proc = AggregatorProcess(
        popen=_spawn(args, log_path, env, _fd_limit(fd_limit) if fd_limit else None),
        log_path=log_path,
        url=url,
        admin_token=admin_token,
        data_dir=data_dir,
        ca=ca,
    )
    deadline = time.monotonic() + ready_timeout_s
    probe = AggregatorClient(url, retries=0, timeout_s=2.0, verify=proc.verify)
    try:
        while True:
            if not proc.alive():
                raise FedsparsifyError(f"aggregator exited early:\n{proc.log_tail()}")
            try:
                probe.health()
                return proc
            except TransportError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise FedsparsifyError(
                        f"aggregator not ready after {ready_timeout_s:.0f}s:\n{proc.log_tail()}"
                    ) from None
                time.sleep(0.2)
    finally:
        probe.close()


def confirm_peers(state_dirs: dict[str, Path], path: Path) -> Path:
    """Create each site's identity in its state directory and write the peers file every site
    is started with (``--peers``): a local simulation plays the hospitals' out-of-band exchange
    of fingerprints, so its sites run the strict path (they act only with these peers)."""
    lines = [
        peers_line(name, StateDir(state).identity().public().fingerprint)
        for name, state in state_dirs.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# confirmed sites: name fingerprint\n" + "\n".join(lines) + "\n")
    return path


@dataclass
class SiteProcess(_Process):
    """``fedsparsify client`` for one site."""

    name: str = ""
    state_dir: Path = field(default_factory=Path)


def start_site(
    *,
    server: str,
    enrollment_token: str,
    data_dir: Path,
    state_dir: Path,
    name: str,
    log_dir: Path,
    extra_args: tuple[str, ...] = (),
    ca: Path | None = None,
    peers: Path | None = None,
) -> SiteProcess:
    """Start one site's client process (it registers, gets its key, and runs every round);
    with ``ca`` it verifies the aggregator's TLS certificate against that CA (``--ca``), with
    ``peers`` it acts only with the sites in that file (``--peers``, see :func:`confirm_peers`)."""
    if ca is not None:
        extra_args = ("--ca", str(ca), *extra_args)
    if peers is not None:
        extra_args = ("--peers", str(peers), *extra_args)
    args = _command(
        "client",
        "--server",
        server,
        "--enroll",
        enrollment_token,
        "--data",
        str(data_dir),
        "--state",
        str(state_dir),
        "--name",
        name,
        *extra_args,
    )
    log_path = log_dir / f"{name}.log"
    return SiteProcess(
        popen=_spawn(args, log_path, _child_env()),
        log_path=log_path,
        name=name,
        state_dir=state_dir,
    )
