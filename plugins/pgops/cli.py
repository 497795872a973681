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

    findings = preflight.run(_config(args))
    for finding in findings:
        print(finding)
    print("preflight passed")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgops",
        description="Operate the Fixia PostgreSQL database: backups, restores, checks. "
        "Connections are Airflow connections (AIRFLOW_CONN_* variables work with Airflow down).",
    )
    parser.add_argument("--version", action="version", version=f"pgops {__version__}")
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: $PGOPS_CONFIG or config/pgops.yaml)")
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

    pre = sub.add_parser("preflight", help="check that the database is set up for pgops (as the monitoring role)")
    pre.set_defaults(func=cmd_preflight)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    # Importing Airflow (for its connection lookup) installs its own log handlers on
    # stdout; stdout is for the command's output (JSON, tables), so logs are forced
    # back onto stderr at the level asked for.
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        import airflow.sdk  # noqa: F401

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
