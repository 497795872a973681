"""pgops' migrations, run by Alembic: ``pgops db upgrade|downgrade|current|history``.

The revisions live in ``plugins/pgops/database/alembic/versions``; each one is a few
lines of Python that hand Alembic the SQL files of ``include/sql/migrations/<line>/``
(:func:`sql_migration`). Two lines, each an Alembic branch with its own label:
``core`` (every database) and ``fixia`` (the Fixia reference schema's own objects,
only where ``setup.lines`` lists it). The version table is ``pgops.alembic_version``.

What pgops adds to Alembic:

* every migration records the sha256 of its files in ``pgops.migration_checksums``,
  and every command first compares the applied ones with the files here: a migration
  changed after it was applied is refused, naming it (:func:`check_applied`);
* every migration runs with ``lock_timeout`` (``database.lock_timeout_s``) in a
  transaction of its own, and its SQL file says in a ``-- locks:`` header what it locks
  and for how long; a file marked ``-- transaction: none`` (``CREATE INDEX
  CONCURRENTLY``) runs outside a transaction, statement by statement, and first drops
  the index a failed earlier try may have left (``DROP INDEX CONCURRENTLY IF EXISTS``:
  a concurrent build that fails leaves an invalid index behind);
* the session runs as ``setup.owner_role`` (``SET ROLE`` when a superuser connects),
  so everything a migration creates belongs to pgops' owner role;
* role names reach the SQL as bound parameters (the settings ``pgops.<job>_role`` of
  the migration's transaction), never pasted into it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgops.errors import ConfigError, IntegrityError, TransientError
from pgops.postgres import sqlfiles

if TYPE_CHECKING:
    import psycopg

    from pgops.config import PgopsConfig

log = logging.getLogger(__name__)

SCHEMA = "pgops"
VERSION_TABLE = "alembic_version"
SCRIPT_DIR = Path(__file__).resolve().parent / "alembic"
MIGRATIONS_SQL = "migrations"

_HEADER_LOCKS = re.compile(r"^-- locks: \S", re.MULTILINE)
_NO_TRANSACTION = re.compile(r"^-- transaction: none\s*$", re.MULTILINE)


# -- the revision files' side -------------------------------------------------------


def sql_files(name: str) -> tuple[Path, Path]:
    """The up and down SQL files of migration ``name`` (``core/0001_schema``)."""
    root = sqlfiles.SQL_ROOT / MIGRATIONS_SQL
    return root / f"{name}.up.sql", root / f"{name}.down.sql"


def file_checksum(revision_file: str | Path, name: str) -> str:
    """sha256 over a revision's Python file and both its SQL files: what it applied."""
    digest = hashlib.sha256()
    for path in (Path(revision_file), *sql_files(name)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"migration file {path} cannot be read: {exc}") from exc
        digest.update(path.name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def runs_outside_transaction(text: str) -> bool:
    return bool(_NO_TRANSACTION.search(text))


def sql_migration(revision: str, name: str, revision_file: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """``upgrade`` and ``downgrade`` for a revision whose bodies are the SQL files of
    ``name``. Each sets the role names and ``lock_timeout`` for its transaction, runs the
    file's steps (``-- step:`` markers, one statement each), and records or removes the
    revision's checksum."""
    up_file, down_file = sql_files(name)

    def run(path: Path, record: bool) -> None:
        from alembic import context, op
        from sqlalchemy import text

        settings: dict[str, str] = context.config.attributes["settings"]
        body = path.read_text(encoding="utf-8")
        if not _HEADER_LOCKS.search(body):
            raise ConfigError(f"migration {path} has no '-- locks:' header saying what it locks")
        relative = str(path.relative_to(sqlfiles.SQL_ROOT))

        def prologue(local: bool = True, extra: dict[str, str] | None = None) -> None:
            # For the transaction; outside one (autocommit) for the session, which
            # runs nothing but migrations.
            for key, value in {**settings, **(extra or {})}.items():
                op.execute(text("SELECT pg_catalog.set_config(:key, :value, :local)")
                           .bindparams(key=key, value=value, local=local))

        if runs_outside_transaction(body):
            # CREATE INDEX CONCURRENTLY and alike: each statement on its own, committed.
            with op.get_context().autocommit_block():
                # No statement_timeout: a concurrent build blocks no writes and may take hours
                # on a large table; lock_timeout still bounds its lock waits.
                prologue(local=False, extra={"statement_timeout": "0"})
                for _step, statement in sqlfiles.steps(relative):
                    op.execute(text(statement))
        else:
            prologue()
            for _step, statement in sqlfiles.steps(relative):
                op.execute(text(statement))
        if not record:
            # A downgrade forgets the checksum last, in the transaction that also updates
            # the version table (after an autocommit body too), and only if the table
            # is still there (core_0001's downgrade drops it).
            op.execute(text("SELECT pg_catalog.set_config('pgops.revision', :revision, true)")
                       .bindparams(revision=revision))
            op.execute(text(sqlfiles.load("setup/forget_checksum.sql")))
        if record:
            op.execute(text(f"INSERT INTO {SCHEMA}.migration_checksums (revision, sha256) VALUES (:revision, :sha256) "
                            "ON CONFLICT (revision) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                            "applied_at = pg_catalog.clock_timestamp()")
                       .bindparams(revision=revision, sha256=file_checksum(revision_file, name)))

    def upgrade() -> None:
        run(up_file, True)

    def downgrade() -> None:
        run(down_file, False)

    return upgrade, downgrade


# -- the runner's side --------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    revision: str
    line: str
    down_revision: str | None
    doc: str
    path: Path
    sql_name: str


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPT_DIR))


def revisions() -> list[Revision]:
    """Every revision, base first, with its line and files."""
    out = []
    for script in reversed(list(_script().walk_revisions())):
        module = script.module
        labels = set(script.branch_labels or ())
        line = next(iter(labels), None) or script.revision.split("_", 1)[0]
        source = Path(script.path).read_text(encoding="utf-8")
        match = re.search(r'sql_migration\(revision, "([^"]+)"', source)
        if not match:
            raise ConfigError(f"migration {script.path} does not name its SQL files with sql_migration()")
        out.append(Revision(script.revision, line, script.down_revision, (module.__doc__ or "").strip(),
                            Path(script.path), match.group(1)))
    return out


def heads(lines: list[str]) -> set[str]:
    """The head revision of each line in ``lines``."""
    script = _script()
    return {script.get_revision(f"{line}@head").revision for line in lines}


def _settings(config: PgopsConfig) -> dict[str, str]:
    roles = config.setup.roles()
    return {f"pgops.{job}_role": name for job, name in roles.items()} | {
        "lock_timeout": f"{config.database.lock_timeout_s * 1000}"}


def _alembic_config(config: PgopsConfig, **attributes: Any):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_DIR))
    cfg.attributes["settings"] = _settings(config)
    cfg.attributes.update(attributes)
    return cfg


def _target(config: PgopsConfig, revision: str | None) -> list[str]:
    """The revisions to upgrade to: the heads of the configured lines, or ``revision``
    when it is one of them (or on one)."""
    from pgops.config import MIGRATION_LINES

    lines = config.setup.lines
    if revision is None:
        # "heads" when every line is wanted: one pass, as Alembic's offline mode needs
        return ["heads"] if set(lines) == set(MIGRATION_LINES) else [f"{line}@head" for line in lines]
    line = revision.split("@", 1)[0].split("_", 1)[0]
    if line in ("core", "fixia") and line not in lines:
        raise ConfigError(f"revision {revision!r} is on the {line} line, which setup.lines ({lines}) does not list")
    return [revision]


@contextmanager
def _connection(conn_factory: Callable[[], psycopg.Connection], config: PgopsConfig) -> Iterator[Any]:
    """An SQLAlchemy connection over pgops' own session, running as the owner role."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    owner = config.setup.owner_role

    def creator():
        conn = conn_factory()
        conn.autocommit = False
        from psycopg import sql

        current = conn.execute("SELECT current_user").fetchone()[0]
        if current != owner:
            try:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            except Exception as exc:
                conn.close()
                raise ConfigError(f"migrations run as {owner!r} (setup.owner_role); {current!r} cannot SET ROLE to "
                                  f"it ({exc}). Connect as {owner!r} (connection database.owner_conn_id) or as a "
                                  "superuser") from exc
        conn.commit()
        return conn

    engine = create_engine("postgresql+psycopg://", creator=creator, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def applied_checksums(conn: psycopg.Connection) -> dict[str, str] | None:
    """revision → recorded sha256; None when no migration has ever run here."""
    exists = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                          [f"{SCHEMA}.migration_checksums"]).fetchone()[0]
    if not exists:
        return None
    return dict(conn.execute(f"SELECT revision, sha256 FROM {SCHEMA}.migration_checksums").fetchall())


def applied_versions(conn: psycopg.Connection) -> set[str]:
    """The revisions in the version table (one per line that has been upgraded)."""
    exists = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                          [f"{SCHEMA}.{VERSION_TABLE}"]).fetchone()[0]
    if not exists:
        return set()
    return {row[0] for row in conn.execute(f"SELECT version_num FROM {SCHEMA}.{VERSION_TABLE}")}


def changed_migrations(recorded: dict[str, str]) -> list[str]:
    """Each applied migration whose files differ from what it applied, or that has no file."""
    known = {r.revision: r for r in revisions()}
    problems = []
    for revision, sha in sorted(recorded.items()):
        found = known.get(revision)
        if found is None:
            problems.append(f"{revision}: applied here, but no such migration file in {SCRIPT_DIR / 'versions'}")
            continue
        now = file_checksum(found.path, found.sql_name)
        if now != sha:
            up, down = sql_files(found.sql_name)
            problems.append(f"{revision}: its files changed after it was applied ({found.path.name}, {up.name}, "
                            f"{down.name}; sha256 applied {sha[:12]}…, now {now[:12]}…)")
    return problems


def check_applied(conn: psycopg.Connection) -> None:
    """Refuse to go on when an applied migration's files changed since, or when one is
    applied without a recorded checksum (stamped by hand?): IntegrityError."""
    recorded = applied_checksums(conn)
    problems = changed_migrations(recorded or {})
    known = {r.revision for r in revisions()}
    for revision in sorted(with_ancestors(applied_versions(conn)) & known):
        if revision not in (recorded or {}):
            problems.append(f"{revision}: applied here (version table {SCHEMA}.{VERSION_TABLE}) but no checksum "
                            f"is recorded in {SCHEMA}.migration_checksums, so its files cannot be checked")
    if problems:
        raise IntegrityError("applied migrations do not match their files, so pgops will not migrate this database:\n  "
                             + "\n  ".join(problems) + "\nA migration is never edited once applied: restore its "
                             "files as they were, and put the change in a new migration")


def _run(conn_factory: Callable[[], psycopg.Connection], config: PgopsConfig, action: Callable) -> None:
    import psycopg
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        with _connection(conn_factory, config) as connection:
            check_applied(connection.connection.driver_connection)
            connection.commit()
            cfg = _alembic_config(config, connection=connection)
            action(cfg)
            connection.commit()
    except CommandError as exc:  # an unknown revision, an impossible target
        raise ConfigError(f"{exc} (pgops db history lists the revisions)") from exc
    except DBAPIError as exc:
        # The migrations that committed stay applied; the failed one was rolled back.
        cause = exc.orig
        where = f"{getattr(getattr(cause, 'diag', None), 'message_primary', None) or cause}"
        if isinstance(cause, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
            raise TransientError(f"a migration waited longer than lock_timeout ({config.database.lock_timeout_s} s) "
                                 f"or statement_timeout for a lock or its work and was rolled back: {where}. The "
                                 "migrations before it stay applied; find the session holding the lock "
                                 "(pg_stat_activity, pg_locks) and run it again") from exc
        if isinstance(cause, psycopg.OperationalError):
            raise TransientError(f"the migration session failed: {where}; the migrations before it stay applied") \
                from exc
        raise ConfigError(f"a migration failed and was rolled back: {where}; the migrations before it stay "
                          "applied (pgops db current)") from exc


def upgrade(config: PgopsConfig, conn_factory: Callable[[], psycopg.Connection], revision: str | None = None) -> list[str]:
    """Upgrade to ``revision``, default the head of every configured line; returns the
    versions now applied."""
    from alembic import command

    targets = _target(config, revision)

    def action(cfg):
        for target in targets:
            log.info("upgrading pgops' schema to %s", target)
            command.upgrade(cfg, target)

    _run(conn_factory, config, action)
    return current(config, conn_factory)


def downgrade(config: PgopsConfig, conn_factory: Callable[[], psycopg.Connection], revision: str) -> list[str]:
    from alembic import command

    def action(cfg):
        log.info("downgrading pgops' schema to %s", revision)
        command.downgrade(cfg, revision)

    _run(conn_factory, config, action)
    return current(config, conn_factory)


def current(config: PgopsConfig, conn_factory: Callable[[], psycopg.Connection]) -> list[str]:
    """The applied versions (checked against the files first)."""
    conn = conn_factory()
    try:
        check_applied(conn)
        return sorted(applied_versions(conn))
    finally:
        conn.close()


def run_action(config: PgopsConfig, conn_factory: Callable[[], psycopg.Connection], action: str,
               revision: str | None = None) -> dict[str, Any]:
    """``upgrade`` (to ``revision``, default the configured heads), ``downgrade`` (to
    ``revision``, required) or ``current``; returns :func:`status` afterwards. What
    ``pgops db`` and the pgops_db_migrate DAG both run."""
    if action == "upgrade":
        versions = upgrade(config, conn_factory, revision)
    elif action == "downgrade":
        if not revision:
            raise ConfigError("a downgrade needs a revision (core@base, fixia@base, or a revision id): nothing was done")
        versions = downgrade(config, conn_factory, revision)
    elif action == "current":
        versions = current(config, conn_factory)
    else:
        raise ConfigError(f"unknown migration action {action!r}: upgrade, downgrade or current")
    return status(config, set(versions))


def offline_sql(config: PgopsConfig, revision: str | None, *, downgrade_from: bool = False) -> str:
    """The SQL an upgrade (or, with ``downgrade_from``, a downgrade ``FROM:TO``) would
    run, for a DBA to review and run as the owner role (Alembic's offline mode)."""
    from alembic import command

    out = io.StringIO()
    cfg = _alembic_config(config, output=out)
    out.write(f"-- pgops migrations, {'downgrade' if downgrade_from else 'upgrade'} "
              f"{revision or 'to the heads of ' + '+'.join(config.setup.lines)}, generated by pgops (Alembic's "
              f"offline mode).\n-- Run as {config.setup.owner_role} (setup.owner_role) or a superuser: "
              "psql -v ON_ERROR_STOP=1 -f FILE. Each migration commits on its own.\n")
    out.write(f'SET ROLE "{config.setup.owner_role}";\n')
    from alembic.util.exc import CommandError

    try:
        if downgrade_from:
            command.downgrade(cfg, revision, sql=True)
        else:
            for target in _target(config, revision):
                command.upgrade(cfg, target, sql=True)
    except CommandError as exc:
        raise ConfigError(f"{exc} (pgops db history lists the revisions)") from exc
    return out.getvalue()


def with_ancestors(applied: set[str]) -> set[str]:
    """The applied versions and every revision they stand on. Alembic keeps only the
    tips in its version table: once fixia_0001 (which depends on core_0001) is applied,
    core_0001 is no longer listed there, though applied. An unknown version stays as it
    is (:func:`changed_migrations` names it)."""
    from alembic.script.revision import RevisionError

    script = _script()
    out = set(applied)
    for version in applied:
        try:
            out.update(r.revision for r in script.iterate_revisions(version, "base"))
        except RevisionError:
            pass
    return out


def status(config: PgopsConfig, applied: set[str]) -> dict[str, Any]:
    """Where the database stands against the configured lines: pure, for preflight and
    the ``db`` commands. ``applied``: the version table's rows (tips)."""
    expected = heads(config.setup.lines)
    known = {r.revision: r for r in revisions()}
    order = [r.revision for r in revisions()]  # base first
    everything = with_ancestors(applied)
    behind = []
    for head in sorted(expected):
        line = known[head].line
        have = [v for v in order if v in everything and known[v].line == line]
        if head not in everything:
            behind.append(f"{line}: at {have[-1] if have else 'nothing'}, head is {head}")
    return {"expected": sorted(expected), "applied": sorted(everything), "behind": behind}
