"""Aggregator settings, read from ``FEDSPARSIFY_*`` environment variables (pydantic-settings).

Never built at import time: :func:`fedsparsify.api.app.create_app` takes a :class:`Settings`
(or builds one from the environment when given none).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_MIB = 1 << 20


class Settings(BaseSettings):
    """Everything the aggregator is configured with."""

    model_config = SettingsConfigDict(env_prefix="FEDSPARSIFY_", extra="ignore")

    data_dir: Path = Field(
        Path("fedsparsify-data"),
        description="ciphertext blobs, and the SQLite database by default; with PostgreSQL a "
        "directory that every aggregator process mounts (a shared POSIX file system)",
    )
    database_url: str | None = Field(
        None,
        description="SQLite (default: a file in data_dir; one process) or PostgreSQL "
        "(postgresql+psycopg://user:password@host/db; any number of processes)",
    )
    database_pool_size: int = Field(
        5,
        ge=1,
        description="pooled database connections per process (up to three times as many under "
        "load; on PostgreSQL about 10 more for locks): size max_connections for every process",
    )
    admin_token: SecretStr | None = Field(
        None, description="admin bearer token; generated on first start (logged once) if unset"
    )
    max_upload_bytes: int = Field(1024 * _MIB, ge=1, description="limit on one update upload")
    max_context_bytes: int = Field(64 * _MIB, ge=1, description="limit on the public context")
    max_envelope_bytes: int = Field(16 * _MIB, ge=1, description="limit on one key envelope")
    deadline_check_interval_s: float = Field(
        0.5, gt=0.0, description="how often open rounds are checked against their deadline"
    )
    client_liveness_s: float = Field(
        30.0,
        gt=0.0,
        description="a client heard from (any request with its token, or registration) within "
        "this many seconds is active: a new round's participants are the active key holders",
    )
    metrics_flush_interval_s: float = Field(
        1.0,
        gt=0.0,
        description="PostgreSQL: how often a process writes its metrics to the database",
    )
    orphan_sweep_interval_s: float = Field(
        30.0,
        gt=0.0,
        description="PostgreSQL: how often the leader removes dead processes' temporary files",
    )
    keep_uploads: bool = Field(
        False, description="keep individual uploads after a round closes (default: delete)"
    )
    sqlite_busy_timeout_ms: int = Field(10_000, ge=0)
    dashboard_session_s: float = Field(
        8 * 3600.0,
        gt=0.0,
        le=30 * 86400.0,
        description="a dashboard sign-in lasts this many seconds, then the browser signs in again",
    )
    dashboard_poll_s: float = Field(
        2.0, ge=0.2, le=300.0, description="how often the dashboard page asks for fresh data"
    )

    # -- the HTTP edge (api/limits.py, api/server.py) ------------------------------------------
    max_json_bytes: int = Field(
        1 * _MIB, ge=1024, description="limit on a JSON (or any non-upload) request body"
    )
    body_chunk_timeout_s: float = Field(
        30.0, gt=0.0, description="longest wait for the next piece of a request body"
    )
    body_min_bytes_per_s: float = Field(
        1024.0,
        ge=0.0,
        description="slowest average a request body may arrive at, judged once it has taken "
        "longer than body_chunk_timeout_s (0: no floor)",
    )
    head_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="a request line and headers must arrive within this many seconds of the "
        "connection opening or of the previous answer",
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0.0, description="an idle keep-alive connection is closed after this long"
    )
    max_head_bytes: int = Field(
        16 * 1024, ge=1024, description="limit on a request line plus its headers"
    )
    max_connections: int = Field(
        512,
        ge=8,
        description="open connections at most; more are answered 503 and closed at once "
        "(lowered to what the file-descriptor limit allows)",
    )
    max_connections_per_ip: int = Field(
        64,
        ge=0,
        description="open connections from one address at most (0: no limit; raise it behind "
        "a reverse proxy, where every connection comes from the proxy)",
    )
    max_concurrent_uploads: int = Field(
        64,
        ge=1,
        description="streamed bodies (updates, contexts, envelopes) received at once; more "
        "are answered 503 with Retry-After",
    )
    max_model_parameters: int = Field(
        20_000_000,
        ge=1,
        description="a federation's model may have at most this many trainable parameters",
    )
    idempotency_ttl_s: float = Field(
        24 * 3600.0,
        gt=0.0,
        description="how long the answer to a POST with an Idempotency-Key is kept for replay",
    )

    @classmethod
    def from_options(cls, *, data_dir: Path | None, database_url: str | None) -> Settings:
        """Settings from the environment, with the command line's ``--data-dir`` and
        ``--database-url`` winning where given (an option left out keeps the environment's)."""
        overrides: dict[str, object] = {}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if database_url is not None:
            overrides["database_url"] = database_url
        return cls(**overrides)  # type: ignore[arg-type]

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or a SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fedsparsify.db').resolve()}"

    @property
    def is_embedded(self) -> bool:
        """SQLite: one process owns the data directory (PostgreSQL: any number share it)."""
        return self.effective_database_url.startswith("sqlite")

    @property
    def blob_dir(self) -> Path:
        """Where ciphertext blobs live."""
        return self.data_dir / "blobs"
