"""What one running aggregator holds: settings, database, blob store, metrics, locks, caches.

Built by :func:`fedsparsify.api.app.create_app` and handed to the services; nothing here knows
about HTTP. Embedded mode (SQLite) takes the data directory's lock first, so a second process
on it stops before touching anything; PostgreSQL mode coordinates through the database (see
:mod:`fedsparsify.api.coordination`).
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager

from prometheus_client import generate_latest

from fedsparsify.api.blobs import BlobStore
from fedsparsify.api.coordination import Coordinator, LocalCoordinator, new_instance_id
from fedsparsify.api.db import Database, redact
from fedsparsify.api.metrics import ServerMetrics
from fedsparsify.api.metrics_store import SharedMetrics
from fedsparsify.api.settings import Settings
from fedsparsify.crypto import PublicContext
from fedsparsify.errors import ConfigError

__all__ = ["AppState"]

log = logging.getLogger(__name__)


class AppState:
    """The aggregator's shared state (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.effective_database_url
        if not url.startswith(("sqlite", "postgresql")):
            raise ConfigError(
                f"database {redact(url)}: supported are SQLite (sqlite:///path) and PostgreSQL "
                "(postgresql+psycopg://...)"
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.instance_id = new_instance_id()
        self.coordinator: Coordinator
        if settings.is_embedded:
            self.coordinator = LocalCoordinator(settings.data_dir, self.instance_id)
        else:
            from fedsparsify.api.pg_coordination import PostgresCoordinator

            self.coordinator = PostgresCoordinator(url, self.instance_id)
        try:
            self.db = Database(
                url,
                busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                pool_size=settings.database_pool_size,
            )
            self.blobs = BlobStore(settings.blob_dir, owner=self.instance_id)
        except BaseException:
            self.coordinator.close()
            raise
        self.metrics = ServerMetrics()
        self.shared_metrics = (
            None
            if settings.is_embedded
            else SharedMetrics(self.db, self.metrics.registry, self.instance_id)
        )
        self.admin_token_hash: str | None = None
        self._contexts: dict[str, PublicContext] = {}
        self._contexts_guard = threading.Lock()

    def round_lock(self, federation_id: str, index: int) -> AbstractContextManager[None]:
        """Serialises everything that changes one round's files and state, across every
        process on the database."""
        return self.coordinator.round_lock(federation_id, index)

    def metrics_text(self) -> bytes:
        """``/metrics``: this process's metrics, or (PostgreSQL) the sum over all processes."""
        if self.shared_metrics is None:
            return bytes(generate_latest(self.metrics.registry))
        self.shared_metrics.flush()
        return bytes(generate_latest(self.shared_metrics.scrape_registry))

    def check_health(self) -> None:
        """Raise unless the database answers and this process's locks are in place."""
        self.db.ping()
        self.coordinator.check()

    def cached_context(self, federation_id: str) -> PublicContext | None:
        """The loaded public context of a federation, if already loaded."""
        with self._contexts_guard:
            return self._contexts.get(federation_id)

    def cache_context(self, federation_id: str, ctx: PublicContext) -> None:
        """Remember a loaded public context (they are immutable once stored)."""
        with self._contexts_guard:
            self._contexts[federation_id] = ctx

    def close(self) -> None:
        """Flush metrics, release the database connections and every lock."""
        try:
            if self.shared_metrics is not None:
                self.shared_metrics.flush()
        except Exception:
            log.exception("could not write the last metrics to the database")
        finally:
            self.blobs.remove_own_temporaries()
            self.db.dispose()
            self.coordinator.close()
