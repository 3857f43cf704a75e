"""The aggregator's schema history: Alembic revisions, applied by ``fedsparsify db upgrade``.

One straight chain, one revision per change, named by number:

- ``0001``: the schema of release 0.1, exactly as 0.1 wrote it (its database adopts this
  revision at its first ``db upgrade``);
- ``0002``: trust (issue 11): members' signing and mask keys and removal, round attempts,
  participant-set digests and weights, join-code policy;
- ``0003``: ``federations.spec_version`` and the ``metric_samples`` table (PostgreSQL metrics);
- ``0004``: sample and byte counts as 64-bit integers on PostgreSQL.

Adding a revision (say your change adds a column to ``api/db.py``):

1. Change the model in :mod:`fedsparsify.api.db`.
2. ``fedsparsify db revision -m "clients: signing key"`` writes
   ``versions/NNNN_<slug>.py`` with the next number, ``down_revision`` set to the current head
   and the operations Alembic's autogenerate found (it compares a database built from the
   revisions with the models). Read it and fix what autogenerate cannot know: a
   ``server_default`` for a NOT NULL column on tables that hold rows, data to copy, names.
3. Keep operations portable between SQLite and PostgreSQL: ``op.add_column`` works on both;
   anything else that alters a table on SQLite goes in ``with op.batch_alter_table(...)``.
4. ``tests/api/test_schema.py`` fails until the revisions build exactly the models, on
   SQLite and on PostgreSQL, and there is one head. If another branch added a revision with
   the same parent meanwhile, renumber yours and point its ``down_revision`` at theirs.

Stored formats that live inside columns (the federation spec) have versions of their own; see
:mod:`fedsparsify.platform.spec_compat`.
"""
