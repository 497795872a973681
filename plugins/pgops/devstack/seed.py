"""Create the Fixia reference database: schema, the application's roles, deterministic
synthetic data; then install pgops on it the way an operator would.

All the data is generated inside PostgreSQL, set-based (``include/sql/fixia/generate.sql``);
Python only sends the steps, times them and logs progress. pgops itself is installed by
:func:`install_pgops`: the code of ``pgops db setup`` and ``pgops db upgrade``, then the
passwords an operator's secrets store would set.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgops.errors import IntegrityError
from pgops.postgres import sqlfiles

if TYPE_CHECKING:
    import psycopg

    from pgops.config import PgopsConfig
    from pgops.database.setup import Plan

log = logging.getLogger(__name__)


def create_database(admin: psycopg.Connection, dbname: str) -> bool:
    """Create ``dbname`` unless it exists; returns True when it was created."""
    from psycopg import sql

    exists = admin.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [dbname]).fetchone()
    if exists:
        return False
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return True


def apply_schema(conn: psycopg.Connection) -> None:
    """The application's side: extensions, tables, indexes, its own roles and owners;
    safe to re-run. Nothing of pgops."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    conn.execute(sqlfiles.load("fixia/schema.sql"))
    conn.execute(sqlfiles.load("fixia/roles.sql"))


def install_pgops(superuser: dict[str, Any], config: PgopsConfig, passwords: dict[str, str]) -> Plan:
    """pgops on the database ``superuser`` (libpq parameters) names: ``pgops db setup``,
    the passwords (``passwords``: role → password, as a secrets store would set them),
    then ``pgops db upgrade``. Returns the set-up plan that was applied."""
    from pgops.database import migrations, setup
    from pgops.postgres.session import connect_params

    with connect_params(superuser, application_name="pgops:setup", statement_timeout_s=600) as conn:
        plan = setup.setup_database(conn, config)
        for role, password in passwords.items():
            set_role_password(conn, role, password)
    migrations.upgrade(config, lambda: connect_params(superuser, application_name="pgops:migrate",
                                                      statement_timeout_s=config.database.statement_timeout_s,
                                                      autocommit=False))
    return plan


def set_role_password(conn: psycopg.Connection, role: str, password: str) -> None:
    """Set a role's password from a SCRAM hash computed here: the cleartext never
    reaches the server, so it cannot end up in a server log."""
    from psycopg import sql

    hashed = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(hashed.decode()))
    )


def is_seeded(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM fixia.users)").fetchone()[0]


def generate(conn: psycopg.Connection, scale: int, anchor: datetime) -> dict[str, float]:
    """Load synthetic data at ``scale`` into empty tables, in one transaction.

    Returns the seconds each step took. Indexes are built after the load, then the
    tables are analyzed, so the database is ready for queries.
    """
    from psycopg import ClientCursor

    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    timings: dict[str, float] = {}
    params = {"scale": scale, "anchor": anchor}
    total = time.monotonic()
    with conn.transaction():
        cur = ClientCursor(conn)
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute("SET LOCAL synchronous_commit = off")
        # Foreign keys are checked row by row by triggers; the generator builds every
        # reference from existing ids, so they are skipped during the load (superuser
        # only) and checked set-based afterwards by check_references().
        cur.execute("SET LOCAL session_replication_role = replica")
        for name, statement in sqlfiles.steps("fixia/generate.sql"):
            started = time.monotonic()
            cur.execute(statement, params)
            timings[name] = time.monotonic() - started
            log.info("seed scale %s: %s done in %.1fs", scale, name, timings[name])
        started = time.monotonic()
        cur.execute(sqlfiles.load("fixia/indexes.sql"))
        timings["indexes"] = time.monotonic() - started
        log.info("seed scale %s: indexes built in %.1fs", scale, timings["indexes"])
        started = time.monotonic()
        broken = check_references(conn)
        if broken:
            raise IntegrityError("generated data breaks foreign keys: " + "; ".join(broken))
        timings["check_references"] = time.monotonic() - started
    started = time.monotonic()
    conn.execute("ANALYZE")
    timings["analyze"] = time.monotonic() - started
    log.info("seed scale %s: loaded in %.1fs", scale, time.monotonic() - total)
    return timings


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row counts of every Fixia table."""
    from psycopg import sql

    names = [row[0] for row in conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'fixia' AND c.relkind IN ('r', 'p') ORDER BY 1"
    )]
    return {
        name: conn.execute(sql.SQL("SELECT count(*) FROM fixia.{}").format(sql.Identifier(name))).fetchone()[0]
        for name in names
    }


def check_references(conn: psycopg.Connection) -> list[str]:
    """Every foreign key of schema fixia checked set-based (one anti-join each).

    Returns one message per constraint with orphaned rows; empty when all hold.
    """
    from psycopg import sql

    problems = []
    for conname, child, column, parent, parent_column in conn.execute(sqlfiles.load("fixia/foreign_keys.sql")).fetchall():
        query = sql.SQL(
            "SELECT count(*) FROM fixia.{child} c WHERE c.{col} IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM fixia.{parent} p WHERE p.{pcol} = c.{col})"
        ).format(
            child=sql.Identifier(child), col=sql.Identifier(column),
            parent=sql.Identifier(parent), pcol=sql.Identifier(parent_column),
        )
        orphans = conn.execute(query).fetchone()[0]
        if orphans:
            problems.append(f"{conname}: {orphans} rows of fixia.{child}.{column} reference no fixia.{parent}")
    return problems
