"""The ``pgops`` command line.

It resolves connections exactly as the DAGs do (Airflow connections, which may come
from ``AIRFLOW_CONN_*`` environment variables), so it works while Airflow is down.
Exit status: 0 success, 2 configuration error, 3 refused as unsafe, 4 integrity
problem, 75 transient failure (try again), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pgops import __version__
from pgops.errors import ConfigError, PgopsError

log = logging.getLogger("pgops.cli")


def _config(args: argparse.Namespace):
    from pgops.config import load_config

    return load_config(args.config)


def _repo_config(args: argparse.Namespace):
    config = _config(args)
    return config.repository, config.encryption


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.show:
        print(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print("configuration is valid")
    return 0


def cmd_config_docs(args: argparse.Namespace) -> int:
    from pgops.config import render_docs

    sys.stdout.write(render_docs())
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    from pgops.monitoring import preflight

    report = preflight.run(_config(args))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    preflight.enforce(report)  # a failure: ConfigError (exit 2), or TransientError (75) when only unreachable
    return 0


def _dsn_params(dsn: str) -> dict:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg's ProgrammingError: say which argument, never echo a password
        raise ConfigError(f"--dsn is not a libpq connection string or URI: {type(exc).__name__}") from None


def _db_session(args: argparse.Namespace, config, job: str, *, autocommit: bool = True):
    """A session for the ``db`` commands: ``--dsn`` (libpq string or URI; password from
    PGPASSWORD or ~/.pgpass), else the owner role's Airflow connection."""
    from pgops.postgres.session import connect, connect_params

    if args.dsn is not None:
        return connect_params(_dsn_params(args.dsn), application_name=f"{config.database.application_name}:{job}",
                              statement_timeout_s=config.database.statement_timeout_s,
                              connect_timeout_s=config.database.connect_timeout_s, autocommit=autocommit)
    if job == "setup":
        raise ConfigError(f"pgops db {args.db_command} needs --dsn: a superuser's connection to the database (libpq "
                          "string or URI, password from PGPASSWORD or ~/.pgpass)"
                          + ("; with --print-sql any role's will do" if args.db_command == "setup" else ""))
    return connect(config.database.owner_conn_id, config.database, job=job, autocommit=autocommit)


def cmd_db_setup(args: argparse.Namespace) -> int:
    from pgops.database import setup

    config = _config(args)
    with _db_session(args, config, "setup") as conn:
        facts = setup.gather(conn, config)
        plan = setup.plan_setup(facts, config, client_address=args.client_address)
        if args.print_sql:
            sys.stdout.write(plan.render(f"pgops db setup for database {facts['database']}"))
            return 3 if plan.refusals else 0
        setup.require_superuser(facts)
        setup.apply(conn, plan)
    print(f"pgops db setup: {len(plan.steps)} statement(s) run" + ("" if plan.steps else ": everything was in place"))
    for note in plan.notes:
        print(f"needs a DBA: {note}")
    print("next: pgops db upgrade (as the owner role, or --dsn of a superuser), then pgops preflight")
    return 0


def cmd_db_teardown(args: argparse.Namespace) -> int:
    from pgops.database import setup

    if not args.print_sql:
        raise ConfigError("pgops db teardown only prints the SQL that removes pgops (--print-sql): review it, then "
                          "run it as a superuser")
    config = _config(args)
    with _db_session(args, config, "setup") as conn:
        facts = setup.gather(conn, config)
    plan = setup.plan_teardown(facts, config)
    sys.stdout.write(plan.render(f"pgops db teardown for database {facts['database']}"))
    return 3 if plan.refusals else 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from pgops.database import migrations

    config = _config(args)
    action = args.db_command
    if getattr(args, "sql", False):
        if action == "downgrade" and ":" not in args.revision:
            raise ConfigError("downgrade --sql needs FROM:TO (offline, pgops cannot read where the database is)")
        sys.stdout.write(migrations.offline_sql(config, args.revision, downgrade_from=action == "downgrade"))
        return 0

    def session():
        return _db_session(args, config, "migrate", autocommit=False)

    print(json.dumps(migrations.run_action(config, session, action, getattr(args, "revision", None)), indent=2))
    return 0


def cmd_db_history(args: argparse.Namespace) -> int:
    from pgops.database import migrations

    for rev in migrations.revisions():
        print(f"{rev.revision:<12} {rev.line:<6} after {rev.down_revision or 'base':<12} {rev.doc.splitlines()[0]}")
    return 0


def cmd_backup_full(args: argparse.Namespace) -> int:
    from pgops.backup.basebackup import run_full_backup
    from pgops.repository import open_repository

    config = _config(args)
    record = run_full_backup(config, open_repository(config.repository, config.encryption))
    print(json.dumps({"backup_id": record.id, "raw_size": record.raw_size, "stored_size": record.stored_size,
                      "start_lsn": record.start_lsn, "stop_lsn": record.stop_lsn}, indent=2))
    return 0


def cmd_backup_wal(args: argparse.Namespace) -> int:
    from pgops.backup.walship import ship_wal
    from pgops.repository import open_repository

    config = _config(args)
    result = ship_wal(config, open_repository(config.repository, config.encryption))
    print(json.dumps(result.to_json(), indent=2))
    for problem in result.chain_breaks:
        print(f"pgops: WAL chain break: {problem}", file=sys.stderr)
    return 3 if result.chain_breaks else 0


def cmd_backups_list(args: argparse.Namespace) -> int:
    from pgops.backup.inventory import render_table, scan, summarize
    from pgops.repository import open_repository

    view = summarize(scan(open_repository(*_repo_config(args))))
    print(json.dumps(view, indent=2) if args.json else render_table(view))
    return 0


def cmd_backups_verify(args: argparse.Namespace) -> int:
    from pgops.backup.verify import verify
    from pgops.repository import open_repository

    report = verify(open_repository(*_repo_config(args)), full=args.full, sample=args.sample)
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print(f"re-read {report.checked_objects} backup object(s) and {report.checked_segments} WAL file(s): "
          f"{len(report.problems)} problem(s)")
    return 4 if report.problems else 0


def cmd_backups_prune(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from pgops.backup.retention import policy_from_config, prune
    from pgops.repository import open_repository

    config = _config(args)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ConfigError(f"--now {args.now!r} needs a UTC offset, e.g. 2026-11-25T01:00:00+00:00")
    plan = prune(open_repository(config.repository, config.encryption), policy_from_config(config), now, dry_run=args.dry_run)
    print(plan.describe())
    return 0


def _timestamp(text: str | None):
    from datetime import datetime

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--target-time {text!r} is not an ISO timestamp (2026-11-25T03:00:00+00:00)") from exc
    if value.tzinfo is None:
        raise ConfigError(f"--target-time {text!r} needs a UTC offset, e.g. 2026-11-25T03:00:00+00:00")
    return value


def cmd_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pgops.repository import open_repository
    from pgops.restore.plan import RestoreRequest
    from pgops.restore.run import NETWORK_LOCAL, NETWORK_SOURCE, how_to_connect, run_restore

    logging.getLogger("pgops").setLevel(min(logging.getLogger("pgops").getEffectiveLevel(), logging.INFO))
    request = RestoreRequest(backup_id=args.backup_id, target_time=_timestamp(args.target_time),
                             target_lsn=args.target_lsn, latest=args.latest)
    config = _config(args)
    settings = {"archive_mode": "off"} if args.archive_mode == "off" else None
    network = NETWORK_SOURCE if args.keep_network else args.listen or NETWORK_LOCAL
    result = run_restore(config, open_repository(config.repository, config.encryption), request, Path(args.to),
                         start=args.start, port=args.port, server_settings=settings, network=network)
    print(json.dumps(result.to_json(), indent=2))
    print(f"pgops: {'WARNING: ' if network == NETWORK_SOURCE else ''}{how_to_connect(result)}", file=sys.stderr)
    if not args.start:
        print(f"pgops: restored into {result.target_dir}; start it with: pg_ctl start -D {result.target_dir} "
              "(as the postgres OS user, with the same AIRFLOW_CONN_* variables for an S3 or encrypted "
              "repository); recovery then fetches WAL with pgops wal-fetch", file=sys.stderr)
    return 0


def _wal_fetch_source(args: argparse.Namespace):
    """(repository opener, retry seconds, prefetch) for wal-fetch. An explicit local
    --repository without encryption needs neither the configuration nor Airflow: that
    keeps the command quick to start, once per WAL file during recovery."""
    from pgops.restore import walfetch

    retry_s, prefetch = args.retry_seconds, args.prefetch
    if args.repository and "://" not in args.repository and not args.encryption_key_conn_id:
        from pathlib import Path

        from pgops.repository.local import LocalRepository

        def opener():
            return LocalRepository(Path(args.repository))
    else:
        from pgops.config import EncryptionConfig, RepositoryConfig
        from pgops.repository import open_repository

        if args.repository:
            repo_cfg = RepositoryConfig(url=args.repository, aws_conn_id=args.aws_conn_id or "pgops_s3")
            enc = EncryptionConfig(enabled=bool(args.encryption_key_conn_id),
                                   key_conn_id=args.encryption_key_conn_id or "pgops_encryption")
        else:
            config = _config(args)
            repo_cfg, enc = config.repository, config.encryption
            retry_s = config.restore.wal_fetch_retry_s if retry_s is None else retry_s
            prefetch = config.restore.wal_prefetch if prefetch is None else prefetch

        def opener():
            return open_repository(repo_cfg, enc)
    return (opener, walfetch.DEFAULT_RETRY_S if retry_s is None else retry_s,
            walfetch.DEFAULT_PREFETCH if prefetch is None else prefetch)


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    """restore_command: 0 found, 1 truly not found, 255 anything else (recovery stops)."""
    from pathlib import Path

    from pgops.restore import walfetch

    dest = Path(args.path)
    spool = Path(args.spool) if args.spool else None
    if not walfetch.is_wal_request(args.name) or walfetch.beyond(args.name, args.stop_after):
        return walfetch.NOT_FOUND  # a .partial or backup history file (pgops stores none), or past --stop-after
    try:
        if walfetch.take_prefetched(args.name, dest, spool):
            return walfetch.FOUND
        opener, retry_s, prefetch = _wal_fetch_source(args)
        found = walfetch.fetch_with_retries(
            lambda: walfetch.fetch_wal(opener(), args.name, dest, spool=spool, prefetch=prefetch,
                                       expect_until=args.expect_until, stop_after=args.stop_after), retry_s)
    except PgopsError as exc:
        print(f"pgops wal-fetch: {args.name}: {type(exc).__name__}: {exc}; stopping recovery (exit 255) rather "
              "than ending it early", file=sys.stderr)
        return walfetch.ABORT
    except Exception as exc:  # anything unexpected must stop recovery, never look like "not found"
        print(f"pgops wal-fetch: {args.name}: unexpected {type(exc).__name__}: {exc}; stopping recovery",
              file=sys.stderr)
        return walfetch.ABORT
    return walfetch.FOUND if found else walfetch.NOT_FOUND


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgops",
        description="Operate the Fixia PostgreSQL database: backups, restores, checks. "
        "Connections are Airflow connections (AIRFLOW_CONN_* variables work with Airflow down).",
    )
    parser.add_argument("--version", action="version", version=f"pgops {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default: $PGOPS_CONFIG, else config/pgops.yaml under $PGOPS_HOME); "
                        "it must exist (PGOPS_USE_DEFAULTS=1: the built-in defaults when none does)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="check or show the configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate the configuration file; non-zero exit when invalid")
    check.add_argument("--show", action="store_true", help="print the effective configuration as JSON")
    check.set_defaults(func=cmd_config_check)
    docs = config_sub.add_parser("docs", help="print the configuration reference (docs/configuration.md)")
    docs.set_defaults(func=cmd_config_docs)

    backup = sub.add_parser("backup", help="take a full backup or ship WAL now (as the DAGs do)")
    backup_sub = backup.add_subparsers(dest="backup_command", metavar="KIND", required=True)
    full = backup_sub.add_parser("full", help="stream a full backup into the repository; prints its id")
    full.set_defaults(func=cmd_backup_full)
    walp = backup_sub.add_parser("wal", help="switch WAL and ship every complete segment; exit 3 on a chain break")
    walp.set_defaults(func=cmd_backup_wal)

    backups = sub.add_parser("backups", help="list or verify what the repository holds")
    backups_sub = backups.add_subparsers(dest="backups_command", metavar="ACTION", required=True)
    lst = backups_sub.add_parser("list", help="backups, WAL ranges and restorable windows (docs/catalog.md)")
    lst.add_argument("--json", action="store_true", help="the stable JSON form")
    lst.set_defaults(func=cmd_backups_list)
    ver = backups_sub.add_parser("verify", help="re-read stored objects and check checksums and WAL continuity; "
                                 "exit 4 naming each problem")
    how = ver.add_mutually_exclusive_group()
    how.add_argument("--full", action="store_true", help="re-read every object")
    how.add_argument("--sample", type=int, default=0, metavar="N",
                     help="re-read N random backup objects and N random WAL files (default: metadata only)")
    ver.set_defaults(func=cmd_backups_verify)
    prn = backups_sub.add_parser("prune", help="apply the retention policy (see docs/configuration.md, retention)")
    prn.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    prn.add_argument("--now", metavar="TIMESTAMP", help="judge ages as of this ISO time (default: now)")
    prn.set_defaults(func=cmd_backups_prune)

    rst = sub.add_parser(
        "restore", help="restore a backup (and WAL) into a directory; works with Airflow down",
        description="Restore into an empty or new directory: pick the backup for the target from the catalog, "
        "download and check every frame, extract, run pg_verifybackup, write recovery.signal and the recovery "
        "settings (restore_command = pgops wal-fetch). Refuses before downloading anything when the target "
        "cannot be reached. See docs/restore.md.")
    rst.add_argument("--to", required=True, metavar="DIR", help="the new data directory (must not exist or be empty)")
    rst.add_argument("--backup-id", metavar="ID", help="this backup (alone: recover only to its consistent point)")
    what = rst.add_mutually_exclusive_group()
    what.add_argument("--latest", action="store_true", help="the newest backup and all WAL shipped after it")
    what.add_argument("--target-time", metavar="TS", help="recover to this time (ISO 8601 with offset)")
    what.add_argument("--target-lsn", metavar="LSN", help="recover to this WAL position (X/Y)")
    rst.add_argument("--start", action="store_true",
                     help="start the server (as the postgres OS user) and wait until recovery has ended")
    rst.add_argument("--port", type=int, metavar="N", help="port for the restored server (default with --start: "
                     "a free one; its socket goes into the data directory)")
    reach = rst.add_mutually_exclusive_group()
    reach.add_argument("--listen", choices=("localhost",),
                       help="also listen on TCP at localhost (127.0.0.1, ::1), password logins only. Default: the "
                       "Unix socket in the data directory only, with a pg_hba.conf admitting local connections only")
    reach.add_argument("--keep-network", action="store_true",
                       help="keep the source's listen_addresses and pg_hba.conf (for a server that takes over from "
                       "the source): the copy is then reachable as the source was")
    rst.add_argument("--archive-mode", choices=("preserve", "off"), default="preserve",
                     help="preserve (default): the restored server archives WAL as the source was set to; off: "
                     "archive_mode = off, for a copy that must not push WAL into the source's archive")
    rst.set_defaults(func=cmd_restore)

    wf = sub.add_parser(
        "wal-fetch", help="restore_command: fetch WAL file NAME to PATH (exit 0 found, 1 not found, 255 stop)",
        description="PostgreSQL's restore_command contract: exit 0 once the file is in place; 1 only when the "
        "repository truly has no such file (recovery ends there); 255 for any other failure after retries "
        "(recovery stops with an error instead of ending early).")
    wf.add_argument("name", metavar="NAME", help="%%f: the WAL or history file name")
    wf.add_argument("path", metavar="PATH", help="%%p: where to put it")
    wf.add_argument("--repository", metavar="URL", help="repository URL (default: from the configuration)")
    wf.add_argument("--aws-conn-id", metavar="ID", help="Airflow connection for an s3:// repository")
    wf.add_argument("--encryption-key-conn-id", metavar="ID", help="Airflow connection holding the encryption key")
    wf.add_argument("--spool", metavar="DIR", help="prefetch directory (prefetching is off without it)")
    wf.add_argument("--prefetch", type=int, metavar="N", help="segments to fetch per call, this one included")
    wf.add_argument("--retry-seconds", type=int, metavar="S", help="retry transient errors this long")
    wf.add_argument("--expect-until", metavar="SEGMENT",
                    help="segments up to this one must exist: missing is an error (255), not the end (1)")
    wf.add_argument("--stop-after", metavar="SEGMENT",
                    help="answer 'not found' (1) for the segments after this one on its timeline: recovery ends "
                         "there")
    wf.set_defaults(func=cmd_wal_fetch, needs_airflow=False)

    pre = sub.add_parser("preflight", help="check, per job, what each configured pgops job needs; exit 2 on a failure",
                         description="Checks, for each job, what it needs from the database and the server (as the "
                         "monitoring role, and the backup role over the replication protocol), and names the fix "
                         "for each failure. See docs/setup.md.")
    pre.add_argument("--json", action="store_true", help="the stable JSON form instead of the table")
    pre.set_defaults(func=cmd_preflight)

    db = sub.add_parser("db", help="install pgops on a database, and migrate its objects (docs/setup.md)")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dsn_help = ("libpq connection string or URI (password from PGPASSWORD or ~/.pgpass); default: the Airflow "
                "connection database.owner_conn_id")
    stp = db_sub.add_parser(
        "setup", help="create pgops' roles and schema (as a superuser), or print the SQL for a DBA",
        description="Plans what is missing (roles of setup.*_role, CONNECT, schema pgops, the backup role's grants) "
        "and runs it in one transaction. Never revokes from PUBLIC, changes an owner or touches a role pgops did "
        "not create; prints what needs a DBA (pg_hba.conf lines, server settings, passwords). Idempotent.")
    stp.add_argument("--dsn", metavar="DSN", help="a superuser's connection (any role's with --print-sql)")
    stp.add_argument("--print-sql", action="store_true", help="print the plan as SQL for a DBA; change nothing")
    stp.add_argument("--client-address", metavar="CIDR",
                     help="where pgops' jobs connect from, for the printed pg_hba.conf lines (default: the address "
                     "this command connects from)")
    stp.set_defaults(func=cmd_db_setup)
    up = db_sub.add_parser("upgrade", help="run migrations up to REV (default: the head of each line in setup.lines)")
    up.add_argument("revision", nargs="?", metavar="REV", help="core@head, fixia_0001, ... (default: every configured "
                    "line's head)")
    up.add_argument("--dsn", metavar="DSN", help=dsn_help)
    up.add_argument("--sql", action="store_true", help="print the SQL instead (Alembic's offline mode), from base")
    up.set_defaults(func=cmd_db_migrate)
    down = db_sub.add_parser("downgrade", help="undo migrations down to REV (core@base, fixia@base, a revision)")
    down.add_argument("revision", metavar="REV")
    down.add_argument("--dsn", metavar="DSN", help=dsn_help)
    down.add_argument("--sql", action="store_true", help="print the SQL instead; REV is FROM:TO")
    down.set_defaults(func=cmd_db_migrate)
    cur = db_sub.add_parser("current", help="the applied versions, against the configured heads")
    cur.add_argument("--dsn", metavar="DSN", help=dsn_help)
    cur.set_defaults(func=cmd_db_migrate)
    hist = db_sub.add_parser("history", help="every migration, per line")
    hist.set_defaults(func=cmd_db_history, needs_airflow=False)
    td = db_sub.add_parser("teardown", help="print the SQL that removes pgops from the database (--print-sql)")
    td.add_argument("--dsn", metavar="DSN", help="a superuser's connection (libpq string or URI), required")
    td.add_argument("--print-sql", action="store_true", help="print it (pgops never runs it itself)")
    td.set_defaults(func=cmd_db_teardown)
    return parser


class _CurrentStderr:
    """A file that writes to whatever ``sys.stderr`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # restore_command takes an exit at or below 125 as "no such file" and ends
        # recovery; argparse exits 2. A wal-fetch it cannot parse (say, written by another
        # pgops version) must stop recovery instead.
        if exc.code and "wal-fetch" in (sys.argv[1:] if argv is None else argv):
            from pgops.restore.walfetch import ABORT

            print("pgops wal-fetch: cannot parse the arguments; stopping recovery (exit 255)", file=sys.stderr)
            return ABORT
        raise
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    # Importing Airflow (for its connection lookup) installs its own log handlers on
    # stdout; stdout is for the command's output (JSON, tables), so logs are forced
    # back onto stderr at the level asked for.
    import contextlib

    if getattr(args, "needs_airflow", True):
        with contextlib.redirect_stdout(sys.stderr):
            import airflow.sdk  # noqa: F401
        # Airflow's structlog loggers (the providers' hooks log through them) write to
        # the sys.stdout of the moment they are first used: send them to stderr too,
        # whatever sys.stderr is when they write.
        import structlog

        structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=_CurrentStderr()))

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    try:
        return args.func(args)
    except PgopsError as exc:
        print(f"pgops: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pgops: interrupted", file=sys.stderr)
        return 130
