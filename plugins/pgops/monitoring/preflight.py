"""Preflight: is the database set up the way pgops needs it?

Backups need ``wal_level=replica``, WAL senders and slots, and a cluster without
tablespaces (:mod:`pgops.postgres.tablespaces`); restore verification needs data
checksums to mean something; monitoring needs pg_stat_statements; and no job may
connect as a superuser. :func:`evaluate` is pure (facts in, findings out) so each rule
is unit-tested; :func:`run` gathers the facts as the monitoring role and fails with
every problem named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pgops.config import PgopsConfig
from pgops.errors import ConfigError
from pgops.postgres import tablespaces

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.check}: {self.message}"


def evaluate(facts: dict[str, Any], logins: dict[str, str | None]) -> list[Finding]:
    """Judge gathered ``facts``; ``logins`` maps each job (backup, monitor,
    maintenance) to the role its connection logs in as."""
    found: list[Finding] = []

    def error(check: str, message: str) -> None:
        found.append(Finding("error", check, message))

    if facts["server_version_num"] < MIN_SERVER_VERSION:
        error("server_version", f"PostgreSQL {facts['server_version_num']} is older than 15")
    if facts["wal_level"] not in ("replica", "logical"):
        error("wal_level", f"wal_level is {facts['wal_level']!r}; backups need 'replica' or 'logical'")
    if facts["max_wal_senders"] < 2:
        error("max_wal_senders", f"max_wal_senders is {facts['max_wal_senders']}; pgops needs at least 2 "
              "(one for WAL streaming, one for a base backup)")
    if facts["max_replication_slots"] < 2:
        error("max_replication_slots", f"max_replication_slots is {facts['max_replication_slots']}; pgops needs at "
              "least 2 free (WAL shipping's slot, and the temporary slot each full backup holds its WAL with)")
    if facts["max_slot_wal_keep_size"] in ("-1", "-1kB"):
        found.append(Finding("warning", "max_slot_wal_keep_size",
                             "unlimited: a stalled WAL shipper could fill the server's disk"))
    if not facts["data_checksums"]:
        found.append(Finding("warning", "data_checksums",
                             "off: page corruption cannot be detected in backups or restores"))
    refused = tablespaces.refusal(facts["tablespaces"])
    if refused:
        error("tablespaces", refused)
    libraries = [lib.strip() for lib in facts["shared_preload_libraries"].split(",")]
    if "pg_stat_statements" not in libraries:
        error("pg_stat_statements", "not in shared_preload_libraries; query monitoring needs it")
    elif not facts["pg_stat_statements_installed"]:
        error("pg_stat_statements", "preloaded but the extension is not created in this database")

    roles: dict[str, dict[str, bool]] = facts["roles"] or {}
    for job, login in logins.items():
        if not login:
            error(f"role:{job}", f"the {job} connection has no login")
            continue
        attrs = roles.get(login)
        if attrs is None:
            error(f"role:{job}", f"role {login!r} does not exist")
            continue
        if attrs["superuser"]:
            error(f"role:{job}", f"role {login!r} is a superuser; pgops jobs must use least privilege")
        if not attrs["login"]:
            error(f"role:{job}", f"role {login!r} cannot log in")
        if job == "backup" and not attrs["replication"]:
            error(f"role:{job}", f"role {login!r} lacks REPLICATION, needed by pg_basebackup and pg_receivewal")
        if job == "monitor" and not attrs["pg_monitor"]:
            error(f"role:{job}", f"role {login!r} is not a member of pg_monitor")
    return found


def gather(config: PgopsConfig) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Read the facts as the monitoring role."""
    from psycopg.rows import dict_row

    from pgops.connections import get_connection
    from pgops.postgres import sqlfiles
    from pgops.postgres.session import connect

    db = config.database
    logins = {
        "backup": get_connection(db.backup_conn_id).login,
        "monitor": get_connection(db.monitor_conn_id).login,
        "maintenance": get_connection(db.maintenance_conn_id).login,
    }
    with connect(db.monitor_conn_id, db, job="preflight") as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sqlfiles.load("monitoring/preflight.sql"), {"roles": [v for v in logins.values() if v]})
            facts = cur.fetchone()
        facts["tablespaces"] = tablespaces.user_tablespaces(conn)
    return facts, logins


def run(config: PgopsConfig) -> list[Finding]:
    """Gather, judge, log every finding; raise ConfigError when any is an error."""
    facts, logins = gather(config)
    findings = evaluate(facts, logins)
    for finding in findings:
        (log.error if finding.level == "error" else log.warning)("%s", finding)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise ConfigError("the database is not ready for pgops:\n" + "\n".join(f"  {f}" for f in errors))
    log.info("preflight passed: PostgreSQL %s, wal_level=%s, checksums=%s, %d warning(s)",
             facts["server_version_num"], facts["wal_level"], facts["data_checksums"], len(findings))
    return findings
