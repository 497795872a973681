"""Alembic's environment for pgops' migrations (run by :mod:`pgops.database.migrations`,
never by the ``alembic`` command: the connection and the role names come from pgops).

Each migration runs in a transaction of its own, so a failure leaves the database at
the last migration that completed; the version table is ``pgops.alembic_version``.
"""

from alembic import context

from pgops.database import migrations

attributes = context.config.attributes
options = {
    "version_table_schema": migrations.SCHEMA,
    "transaction_per_migration": True,
}
if context.is_offline_mode():
    # --sql: the exact statements, values rendered as literals, for a DBA to review and run.
    # paramstyle named: with psycopg's pyformat every '%' would be printed doubled.
    context.configure(url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"},
                      output_buffer=attributes["output"], **options)
else:
    context.configure(connection=attributes["connection"], **options)
with context.begin_transaction():
    context.run_migrations()
