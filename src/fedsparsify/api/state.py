"""What one running aggregator holds: settings, database, blob store, metrics, locks, caches.

Built by :func:`fedsparsify.api.app.create_app` and handed to the services; nothing here knows
about HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fedsparsify.api.blobs import BlobStore
from fedsparsify.api.db import Database
from fedsparsify.api.metrics import ServerMetrics
from fedsparsify.api.settings import Settings
from fedsparsify.crypto import PublicContext

__all__ = ["AppState"]


class AppState:
    """The aggregator's shared state (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(
            settings.effective_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        self.blobs = BlobStore(settings.blob_dir)
        self.metrics = ServerMetrics()
        self.admin_token_hash: str | None = None
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._contexts: dict[str, PublicContext] = {}
        self._contexts_guard = threading.Lock()

    @contextmanager
    def round_lock(self, federation_id: str, index: int) -> Iterator[None]:
        """Serialises everything that changes one round's files and state in this process."""
        with self._locks_guard:
            lock = self._locks.setdefault((federation_id, index), threading.Lock())
        with lock:
            yield

    def cached_context(self, federation_id: str) -> PublicContext | None:
        """The loaded public context of a federation, if already loaded."""
        with self._contexts_guard:
            return self._contexts.get(federation_id)

    def cache_context(self, federation_id: str, ctx: PublicContext) -> None:
        """Remember a loaded public context (they are immutable once stored)."""
        with self._contexts_guard:
            self._contexts[federation_id] = ctx

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()
