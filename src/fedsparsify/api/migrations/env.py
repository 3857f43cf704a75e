"""Alembic's entry point: runs the revisions on the connection the caller passes.

Only online use through :mod:`fedsparsify.api.schema` is supported (``fedsparsify db ...``),
which hands over an open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from fedsparsify.api.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `fedsparsify db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    compare_server_default=False,
)
with context.begin_transaction():
    context.run_migrations()
