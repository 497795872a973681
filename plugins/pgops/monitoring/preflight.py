"""Preflight: does each pgops job have what it needs on this database, and if not, the fix.

Checks are grouped by job (:data:`JOBS`). Each has a verdict: ``passed``, ``failed``,
``warning`` or ``not_applicable`` (with the reason); a check that could not run (a fact
that could not be read) is ``failed``, never ``passed``. Every failure and warning
carries the exact fix: the SQL to run, the configuration or ``pg_hba.conf`` line to add.

* **backup** (full backups, WAL shipping): the backup connection logs in, and really
  works over the replication protocol (``IDENTIFY_SYSTEM``); ``wal_level``, WAL senders,
  replication slots, a bounded ``max_slot_wal_keep_size`` (unbounded fails: a stalled
  shipper would fill the server's disk), data checksums (a warning), no tablespaces
  (:mod:`pgops.postgres.tablespaces`), the role's attributes and grants, the sentinel
  table and the migration level.
* **restore_verification**: the PostgreSQL binaries it runs, a writable scratch
  directory (both on the host preflight runs on), the sentinel table.
* **monitoring**: the monitoring role (``pg_monitor``); ``pg_stat_statements`` is only a
  warning until query monitoring exists, and never concerns the backups.
* **maintenance**: its role and ``USAGE`` on schema pgops; the partition and view checks
  are not applicable until those jobs exist.
* **migrations**: the owner role, and that it owns schema pgops.

No job role may be a superuser, and each job's connection must log in as the role
configured for it (``setup.*_role``).

:func:`evaluate` is pure (facts and configuration in, checks out), so every rule is
unit-tested; :func:`gather` reads the facts, as the monitoring role except for each job
connection's own log-in test; :func:`run` does both and logs every check, without
raising; :func:`enforce` raises for a report with failures.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pgops.database.setup import BACKUP_FUNCTIONS
from pgops.errors import ConfigError, PgopsError, TransientError
from pgops.postgres import tablespaces

if TYPE_CHECKING:
    from pathlib import Path

    from pgops.config import PgopsConfig
    from pgops.connections import ConnectionInfo

log = logging.getLogger(__name__)

Verdict = Literal["passed", "failed", "warning", "not_applicable"]
PASSED: Verdict = "passed"
FAILED: Verdict = "failed"
WARNING: Verdict = "warning"
NOT_APPLICABLE: Verdict = "not_applicable"

JOBS = ("backup", "restore_verification", "monitoring", "maintenance", "migrations")
MIN_SERVER_VERSION = 150000
#: What a restore drill runs (pgops.restore.run, pgops.restore.verification).
RESTORE_TOOLS = ("pg_ctl", "pg_verifybackup", "pg_amcheck")
SENTINEL = "pgops.backup_sentinel"
#: WAL a bounded slot may hold, as hours of the server's average WAL rate (a few hours at peak)
SLOT_HOURS = 12
SLOT_MIN_GB = 8

_RELOAD = "SELECT pg_reload_conf();"
_SETUP_FIX = ("pgops db setup (as a superuser), or pgops db setup --print-sql for a DBA to review and run "
              "(docs/setup.md)")
_UPGRADE_FIX = "pgops db upgrade"
# connection failures that may pass by themselves: Airflow retries those
_TRANSIENT = ("Connection refused", "timeout expired", "could not translate host name", "No route to host",
              "the database system is starting up", "the database system is shutting down",
              "the database system is in recovery mode", "too many clients already")
_HBA_HOST = re.compile(r'no pg_hba\.conf entry for (?:replication connection )?from host "([^"]+)"|'
                       r'no pg_hba\.conf entry for host "([^"]+)"')
_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# PostgreSQL's reserved and type/function-name keywords: not usable unquoted as a name
_KEYWORDS = frozenset("""
all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate
collation column concurrently constraint create cross current_catalog current_date current_role
current_schema current_time current_timestamp current_user default deferrable desc distinct do else end
except false fetch for foreign freeze from full grant group having ilike in initially inner intersect into
is isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on
only or order outer overlaps placing primary references returning right select session_user similar some
symmetric table tablesample then to trailing true union unique user using variadic verbose when where
window with""".split())


# -- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check of one job. ``fix`` is set for every failure and warning."""

    job: str
    check: str
    verdict: Verdict
    message: str
    fix: str | None = None
    #: failed only because something may pass by itself (the server was unreachable)
    transient: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "check": self.check, "verdict": self.verdict, "message": self.message,
                "fix": self.fix}

    def __str__(self) -> str:
        fix = f" (fix: {' '.join(self.fix.split())})" if self.fix else ""
        return f"{self.job}/{self.check}: {self.verdict}: {self.message}{fix}"


_SHOWN = {PASSED: "passed", FAILED: "FAILED", WARNING: "WARNING", NOT_APPLICABLE: "not applicable"}


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == FAILED]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == WARNING]

    @property
    def ok(self) -> bool:
        """No failures (warnings allowed)."""
        return not self.failures

    def summary(self) -> str:
        counts = {v: sum(c.verdict == v for c in self.checks) for v in (FAILED, WARNING, PASSED, NOT_APPLICABLE)}
        return (f"preflight: {counts[FAILED]} failed, {counts[WARNING]} warning(s), {counts[PASSED]} passed, "
                f"{counts[NOT_APPLICABLE]} not applicable: "
                + ("the database is ready for pgops" if self.ok else "NOT READY, fix each failure above"))

    def to_json(self) -> list[dict[str, Any]]:
        """Stable JSON: one object per check, in the order of :data:`JOBS`."""
        return [c.to_json() for c in self.checks]

    def table(self) -> str:
        """A plain-text table: job | check | verdict | detail / fix (fix lines follow their check)."""
        header = ("job", "check", "verdict", "detail / fix")
        rows: list[tuple[str, str, str, str]] = []
        for c in self.checks:
            rows.append((c.job, c.check, _SHOWN[c.verdict], c.message))
            if c.fix:
                for i, line in enumerate(c.fix.splitlines()):
                    rows.append(("", "", "", ("fix: " if i == 0 else "     ") + line))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]

        def line(r: tuple[str, ...]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(r[:3], widths)) + "  " + r[3]

        out = [line(header), "  ".join("-" * w for w in widths) + "  " + "-" * len(header[3])]
        out += [line(r).rstrip() for r in rows]
        return "\n".join([*out, "", self.summary()]) + "\n"


# -- evaluation (pure) -------------------------------------------------------------------


def _ident(name: str) -> str:
    """``name`` as an SQL identifier: as is when PostgreSQL reads it unquoted, else quoted."""
    if _PLAIN_IDENTIFIER.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _qualified(name: str) -> str:
    schema, _, table = name.partition(".")
    return f"{_ident(schema)}.{_ident(table)}"


def _server_text(error: str) -> str:
    """The server's own words from a libpq error (after FATAL:), else the error."""
    match = re.search(r"(?:FATAL|ERROR):\s+(.*)", error, re.DOTALL)
    return " ".join((match.group(1) if match else error).split())


def _cidr(address: str | None) -> str:
    if not address:
        return "<the Airflow workers' address>/32"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # a host name: pg_hba.conf takes it as it is
    return f"{ip}/{32 if ip.version == 4 else 128}"


def _hba_client(error: str, fallback: str | None) -> str:
    match = _HBA_HOST.search(error)
    return _cidr((match.group(1) or match.group(2)) if match else fallback)


def _hba_fix(database: str, role: str, client: str) -> str:
    return (f"add this line to pg_hba.conf, above any line that matches first (the first matching line decides):\n"
            f"host {database} {role} {client} scram-sha-256\nthen reload: {_RELOAD}")


class _Judge:
    """Collects the checks of one evaluation; knows the facts and the configuration."""

    def __init__(self, facts: dict[str, Any], config: PgopsConfig) -> None:
        self.facts = facts
        self.config = config
        self.roles = config.setup.roles()
        self.checks: list[Check] = []
        self.errors: dict[str, str] = facts.get("errors") or {}
        self.monitor = facts["connections"]["monitor"]
        #: why nothing could be read through the monitoring session (its connection failed)
        self.monitor_error: str | None = self.monitor.get("error") or (
            None if self.monitor.get("defined") else "the monitoring connection is not defined")
        if self.monitor_error is None and facts.get("server") is None and "server" not in self.errors:
            self.monitor_error = "the monitoring session read nothing"
        self.monitor_transient = bool(self.monitor.get("transient"))

    def add(self, job: str, check: str, verdict: Verdict, message: str, fix: str | None = None,
            transient: bool = False) -> None:
        self.checks.append(Check(job, check, verdict, message, fix, transient))

    def judge(self, job: str, check: str, problems: list[tuple[str, str]], passed: str) -> None:
        """Failed with every problem and its fix, or passed."""
        if problems:
            self.add(job, check, FAILED, "; ".join(p for p, _ in problems),
                     "\n".join(dict.fromkeys(f for _, f in problems)))
        else:
            self.add(job, check, PASSED, passed)

    def unknown(self, *sections: str) -> str | None:
        """Why a fact in ``sections`` is not known, or None when all are."""
        if self.monitor_error is not None:
            return "nothing could be read as the monitoring role (why: monitoring/connection)"
        for section in sections:
            if section in self.errors:
                return f"{section} could not be read: {self.errors[section]}"
            if self.facts.get(section) is None:
                return f"{section} was not read"
        return None

    def could_not_run(self, job: str, check: str, reason: str) -> None:
        if self.monitor_error is not None:
            fix = "make the monitoring connection work first (monitoring/connection), then rerun pgops preflight"
        else:
            fix = (f"let the monitoring role ({self.roles['monitor']}) read it (it is in pg_monitor and reads schema "
                   "pgops), then rerun pgops preflight")
        self.add(job, check, FAILED, f"could not be checked: {reason}", fix,
                 transient=self.monitor_error is not None and self.monitor_transient)

    @property
    def server(self) -> dict[str, Any]:
        return self.facts["server"]

    @property
    def database(self) -> str:
        return (self.monitor.get("database") or (self.facts.get("server") or {}).get("database")
                or "<database>")

    def _client_address(self) -> str | None:
        """The address the monitoring session came from: where pgops' jobs connect from."""
        return (self.facts.get("server") or {}).get("client_address")

    def role_attrs(self, name: str) -> dict[str, Any] | None:
        return (self.facts.get("roles") or {}).get(name)

    def privileges(self) -> dict[str, Any]:
        return self.facts.get("privileges") or {}

    # -- shared checks ------------------------------------------------------------------

    def connection(self, job: str, key: str, *, optional: str | None = None) -> None:
        """The job's Airflow connection is defined, logs in as the configured role, to the
        database the facts were read from. ``optional``: why a missing connection is
        only a warning."""
        conn = self.facts["connections"][key]
        role = self.roles[key]
        conn_id = conn["conn_id"]
        if not conn.get("defined"):
            message = f"Airflow connection {conn_id!r} is not defined"
            fix = (f"define Airflow connection {conn_id} (type postgres, login {role}, schema: the database pgops "
                   f"operates), or export AIRFLOW_CONN_{conn_id.upper()} (docs/setup.md, 'Connections')")
            if optional:
                self.add(job, "connection", WARNING, f"{message}: {optional}", fix)
            else:
                self.add(job, "connection", FAILED, message, fix)
            return
        problems: list[tuple[str, str]] = []
        login = conn.get("login")
        if login != role:
            attrs = self.role_attrs(login) if login else None
            superuser = " (a superuser: pgops jobs never connect as one)" if attrs and attrs.get("superuser") else ""
            problems.append((f"connection {conn_id!r} logs in as {login!r}{superuser}, not as {role!r} "
                             f"(setup.{key}_role)",
                             f"set the login of Airflow connection {conn_id} to {role}, or, if {login!r} is the role "
                             f"pgops db setup made for this job, set setup.{key}_role: {login} in the configuration"))
        error = conn.get("error")
        if error:
            if conn.get("transient"):
                self.add(job, "connection", FAILED, f"connection {conn_id!r} cannot reach PostgreSQL: "
                         f"{_server_text(error)}", "start the server or correct the connection's host and port; "
                         "Airflow retries this", transient=True)
                return
            problems.append((f"connection {conn_id!r} cannot log in: {_server_text(error)}",
                             self._login_fix(error, conn_id, login or role)))
        elif self.monitor_error is None and conn.get("database") != self.database:
            problems.append((f"connection {conn_id!r} names database {conn.get('database')!r}, the monitoring "
                             f"connection (which preflight reads the facts through) {self.database!r}",
                             f"set the schema (database) of Airflow connection {conn_id} to the database pgops "
                             "operates, the same for every pgops connection"))
        self.judge(job, "connection", problems,
                   f"{conn_id} logs in as {conn.get('current_user') or login} to database {conn.get('database')!r}")

    def _login_fix(self, error: str, conn_id: str, login: str) -> str:
        if "no pg_hba.conf entry" in error:
            return _hba_fix(self.database, login, _hba_client(error, self._client_address()))
        if "password authentication failed" in error:
            return (f"set the password of Airflow connection {conn_id} to role {login}'s (the secrets store that "
                    f"sets it), or set the role's: ALTER ROLE {_ident(login)} PASSWORD '...';")
        if re.search(r'role "[^"]*" does not exist', error):
            return _SETUP_FIX
        if "permission denied for database" in error:
            return f"GRANT CONNECT ON DATABASE {_ident(self.database)} TO {_ident(login)};"
        if "not permitted to log in" in error:
            return f"ALTER ROLE {_ident(login)} LOGIN;"
        if re.search(r'database "[^"]*" does not exist', error):
            return f"set the schema (database) of Airflow connection {conn_id} to the database pgops operates"
        return f"correct Airflow connection {conn_id} (the error above is the server's); see the server log"

    def role(self, job: str, key: str, *, login: bool = True) -> None:
        """The configured role exists, is not a superuser, can log in (and, for backup,
        has REPLICATION; for monitoring, pg_monitor)."""
        name = self.roles[key]
        reason = self.unknown("roles")
        if reason:
            self.could_not_run(job, "role", reason)
            return
        attrs = self.role_attrs(name)
        if attrs is None:
            self.add(job, "role", FAILED, f"role {name!r} (setup.{key}_role) does not exist", _SETUP_FIX)
            return
        problems, keywords, grants = [], [], []
        if attrs.get("superuser"):
            problems.append("is a superuser: pgops jobs use least privilege")
            keywords.append("NOSUPERUSER")
        if login and not attrs.get("login"):
            problems.append("cannot log in")
            keywords.append("LOGIN")
        if key == "backup" and not attrs.get("replication"):
            problems.append("lacks REPLICATION (pg_basebackup and pg_receivewal need it)")
            keywords.append("REPLICATION")
        if key == "monitor" and not attrs.get("pg_monitor"):
            problems.append("is not a member of pg_monitor (or does not inherit its privileges)")
            grants.append(f"GRANT pg_monitor TO {_ident(name)};")
        if problems:
            fix = ([f"ALTER ROLE {_ident(name)} {' '.join(keywords)};"] if keywords else []) + grants
            self.add(job, "role", FAILED, f"role {name!r} " + "; ".join(problems), "\n".join(fix))
            return
        said = [a for a, on in (("LOGIN", attrs.get("login")), ("REPLICATION", attrs.get("replication")),
                                ("in pg_monitor", attrs.get("pg_monitor"))) if on]
        self.add(job, "role", PASSED, f"role {name!r}: {', '.join(said) or 'exists'}; not a superuser")

    def sentinel_table(self, job: str) -> None:
        reason = self.unknown("privileges")
        if reason:
            self.could_not_run(job, "sentinel_table", reason)
            return
        if (self.privileges().get("sentinel") or {}).get("exists"):
            self.add(job, "sentinel_table", PASSED, f"{SENTINEL} exists")
            return
        self.add(job, "sentinel_table", FAILED, f"{SENTINEL} does not exist: backups write a row to it before each "
                 "full backup and WAL switch, and restore drills look for that row", self._sentinel_fix())

    def _sentinel_fix(self) -> str:
        migrations = self.facts.get("migrations") or {}
        if "migrations" in self.errors or migrations.get("behind") or not migrations:
            return _UPGRADE_FIX
        return ("its migration (core 0001) is recorded as applied, so the table was dropped since: recreate it as the "
                f"owner role ({self.roles['owner']}) with the steps sentinel, sentinel_index and grants of "
                "include/sql/migrations/core/0001_schema.up.sql")

    # -- the jobs -----------------------------------------------------------------------

    def backup(self) -> None:
        job = "backup"
        self.connection(job, "backup")
        self.replication_connection()
        self.server_settings()
        self.role(job, "backup")
        self.backup_grants()
        self.sentinel_table(job)
        self.sentinel_grants()
        self.count_tables()
        self.migration_level()

    def replication_connection(self) -> None:
        job, check = "backup", "replication_connection"
        repl = self.facts.get("replication")
        conn = self.facts["connections"]["backup"]
        role = self.roles["backup"]
        if repl is None:
            self.add(job, check, FAILED, f"not tried: Airflow connection {conn['conn_id']!r} is not defined",
                     "see backup/connection")
            return
        if repl.get("ok"):
            self.add(job, check, PASSED, f"{conn.get('login')} connects over the replication protocol "
                     f"(IDENTIFY_SYSTEM: system "
                     f"{repl.get('system_identifier')}, timeline {repl.get('timeline')})")
            return
        error = repl.get("error") or "unknown error"
        said = _server_text(error)
        if repl.get("transient"):
            self.add(job, check, FAILED, f"cannot reach PostgreSQL: {said}", "start the server or correct the "
                     "connection's host and port; Airflow retries this", transient=True)
            return
        if "no pg_hba.conf entry" in error:
            fix = _hba_fix("replication", role, _hba_client(error, self._client_address()))
        elif "must be superuser or replication role" in error:
            fix = f"ALTER ROLE {_ident(role)} REPLICATION;"
        elif "max_wal_senders" in error:
            fix = "ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL (see backup/max_wal_senders)"
        elif "password authentication failed" in error:
            fix = (f"set the password of Airflow connection {conn['conn_id']} to role {role}'s (the secrets store that "
                   "sets it)")
        else:
            fix = "see the server log for why the replication connection was refused"
        self.add(job, check, FAILED, f"the backup role cannot open a replication connection: {said}", fix)

    def server_settings(self) -> None:
        job = "backup"
        names = ("server_version", "wal_level", "max_wal_senders", "max_replication_slots",
                 "max_slot_wal_keep_size", "data_checksums")
        reason = self.unknown("server")
        if reason:
            for name in names:
                self.could_not_run(job, name, reason)
        else:
            self._settings(job)
        self.tablespaces(job)

    def _settings(self, job: str) -> None:
        s = self.server
        restart = "then restart PostgreSQL (it takes effect only at server start)"
        version = s["server_version_num"]
        self.judge(job, "server_version", [(f"PostgreSQL {version // 10000} is older than 15", "run pgops against "
                   "PostgreSQL 15 or later")] if version < MIN_SERVER_VERSION else [],
                   f"PostgreSQL {version // 10000}.{version % 100}")
        self.judge(job, "wal_level", [(f"wal_level is {s['wal_level']!r}; base backups and WAL streaming need "
                                       "'replica' (or 'logical')",
                                       f"ALTER SYSTEM SET wal_level = 'replica'; {restart}")]
                   if s["wal_level"] not in ("replica", "logical") else [], f"wal_level is {s['wal_level']!r}")
        self.judge(job, "max_wal_senders", [(f"max_wal_senders is {s['max_wal_senders']}; pgops needs at least 2 "
                                             "(WAL streaming and a full backup at once)",
                                             f"ALTER SYSTEM SET max_wal_senders = 10; {restart}")]
                   if s["max_wal_senders"] < 2 else [], f"max_wal_senders is {s['max_wal_senders']}")
        self.judge(job, "max_replication_slots",
                   [(f"max_replication_slots is {s['max_replication_slots']}; pgops needs at least 2 (WAL shipping's "
                     "slot, and the temporary slot each full backup holds its WAL with)",
                     f"ALTER SYSTEM SET max_replication_slots = 10; {restart}")]
                   if s["max_replication_slots"] < 2 else [], f"max_replication_slots is {s['max_replication_slots']}")
        keep = s["max_slot_wal_keep_size_mb"]
        if keep is None or keep < 0:
            gb, basis = _slot_bound(s.get("wal_bytes_per_hour"))
            self.add(job, "max_slot_wal_keep_size", FAILED,
                     "max_slot_wal_keep_size is -1 (unbounded): a stalled WAL shipper makes its slot keep every WAL "
                     "segment until the disk holding pg_wal is full and PostgreSQL stops",
                     f"ALTER SYSTEM SET max_slot_wal_keep_size = '{gb}GB'; {_RELOAD}\n({gb}GB: {basis}. Size it to "
                     "several hours of peak WAL, below the free space of pg_wal's disk: docs/backups.md)")
        else:
            self.add(job, "max_slot_wal_keep_size", PASSED, f"max_slot_wal_keep_size is {_size_mb(keep)}: a stalled "
                     "shipper's slot is invalidated (a chain break) instead of filling the disk")
        if s["data_checksums"]:
            self.add(job, "data_checksums", PASSED, "data checksums are on")
        else:
            self.add(job, "data_checksums", WARNING,
                     "data checksums are off: a corrupted page is neither detected when read nor refused in a "
                     "backup, and restore drills cannot find it",
                     f"offline, as the postgres OS user on the database server, with PostgreSQL stopped: pg_checksums "
                     f"--enable --pgdata {s.get('data_directory') or '<data directory>'}\n"
                     "(it rewrites every data file: "
                     "plan the downtime; do it on each standby too)")

    def tablespaces(self, job: str) -> None:
        reason = self.unknown("tablespaces")
        if reason:
            self.could_not_run(job, "tablespaces", reason)
            return
        found = [tuple(t) for t in self.facts.get("tablespaces") or []]
        refused = tablespaces.refusal(found)
        if refused:
            self.add(job, "tablespaces", FAILED, refused,
                     "move every object into pg_default (ALTER TABLE | INDEX | MATERIALIZED VIEW ... SET TABLESPACE "
                     "pg_default; ALTER DATABASE ... SET TABLESPACE pg_default), then:\n"
                     + "\n".join(f"DROP TABLESPACE {_ident(name)};" for name, _ in found))
        else:
            self.add(job, "tablespaces", PASSED, "no tablespaces besides pg_default and pg_global")

    def backup_grants(self) -> None:
        job = "backup"
        role = self.roles["backup"]
        reason = self.unknown("privileges")
        functions = self.privileges().get("backup_functions")
        for function in BACKUP_FUNCTIONS:
            check = f"execute:{function.removeprefix('pg_catalog.')}"
            if reason:
                self.could_not_run(job, check, reason)
            elif functions is None:
                self.add(job, check, FAILED, f"not checked: role {role!r} does not exist", _SETUP_FIX)
            elif functions.get(function):
                self.add(job, check, PASSED, f"{role} may run {function}")
            else:
                self.add(job, check, FAILED, f"{role} may not run {function} (WAL shipping does)",
                         f"GRANT EXECUTE ON FUNCTION {function} TO {_ident(role)};")

    def sentinel_grants(self) -> None:
        job, check = "backup", "sentinel_grants"
        role = self.roles["backup"]
        reason = self.unknown("privileges")
        if reason:
            self.could_not_run(job, check, reason)
            return
        privileges = self.privileges()
        sentinel = privileges.get("sentinel") or {}
        if not sentinel.get("exists"):
            self.add(job, check, FAILED, f"not checked: {SENTINEL} does not exist", self._sentinel_fix())
            return
        if self.role_attrs(role) is None:
            self.add(job, check, FAILED, f"not checked: role {role!r} does not exist", _SETUP_FIX)
            return
        problems = []
        usage = ((privileges.get("pgops_schema") or {}).get("usage") or {}).get(role)
        if not usage:
            problems.append((f"{role} lacks USAGE on schema pgops", f"GRANT USAGE ON SCHEMA pgops TO {_ident(role)};"))
        missing = [p.upper() for p in ("select", "insert", "delete") if not sentinel.get(p)]
        if missing:
            problems.append((f"{role} lacks {', '.join(missing)} on {SENTINEL}",
                             f"GRANT {', '.join(missing)} ON TABLE {SENTINEL} TO {_ident(role)};"))
        if problems:
            self.add(job, check, FAILED, "; ".join(p for p, _ in problems),
                     f"as the owner role ({self.roles['owner']}) or a superuser:\n" + "\n".join(f for _, f in problems))
        else:
            self.add(job, check, PASSED, f"{role} may write, read and trim {SENTINEL}")

    def count_tables(self) -> None:
        job = "backup"
        role = self.roles["backup"]
        reason = self.unknown("privileges")
        tables = self.privileges().get("count_tables") or {}
        for name in self.config.restore_verification.count_tables:
            check = f"count_table:{name}"
            seen = tables.get(name)
            if reason:
                self.could_not_run(job, check, reason)
            elif seen is None:
                self.could_not_run(job, check, f"{name} was not looked up")
            elif not seen.get("exists"):
                self.add(job, check, WARNING,
                         f"{name} (restore_verification.count_tables) does not exist here: every sentinel records its "
                         "count as an error, and restore drills fail their row_counts check naming it",
                         f"remove {name} from restore_verification.count_tables in the configuration, or correct "
                         "the name")
            elif self.role_attrs(role) is None:
                self.add(job, check, FAILED, f"not checked: role {role!r} does not exist", _SETUP_FIX)
            else:
                schema = seen.get("schema") or name.partition(".")[0]
                fixes = []
                if not seen.get("usage"):
                    fixes.append(f"GRANT USAGE ON SCHEMA {_ident(schema)} TO {_ident(role)};")
                if not seen.get("select"):
                    fixes.append(f"GRANT SELECT ON TABLE {_qualified(name)} TO {_ident(role)};")
                if fixes:
                    self.add(job, check, FAILED, f"{role} cannot count {name}: it lacks "
                             + " and ".join(w for w, ok in ((f"USAGE on schema {schema}", seen.get("usage")),
                                                            ("SELECT on the table", seen.get("select"))) if not ok)
                             + " (the sentinel records its row count, the restore drill compares it)",
                             "as the table's owner or a superuser:\n" + "\n".join(fixes))
                else:
                    self.add(job, check, PASSED, f"{role} may count {name}")

    def migration_level(self) -> None:
        job = "backup"
        reason = self.unknown("migrations")
        monitor = self.roles["monitor"]
        usage = ((self.privileges().get("pgops_schema") or {}).get("usage") or {}).get(monitor)
        if reason and usage is False and self.monitor_error is None:
            # the version table is in schema pgops, which the monitoring role may use
            # only once core's first migration has granted it
            for check in ("migration_level", "migration_files"):
                self.add(job, check, FAILED, f"could not be checked: the monitoring role ({monitor}) has no USAGE on "
                         "schema pgops, which core's first migration grants: the migrations have not run here, or "
                         "were undone", f"{_UPGRADE_FIX}\n(if they have run: as the owner role "
                         f"({self.roles['owner']}): GRANT USAGE ON SCHEMA pgops TO {_ident(monitor)};)")
            return
        if reason:
            self.could_not_run(job, "migration_level", reason)
            self.could_not_run(job, "migration_files", reason)
            return
        m = self.facts["migrations"]
        lines = "+".join(self.config.setup.lines)
        if m.get("behind"):
            self.add(job, "migration_level", FAILED, f"schema pgops is behind the heads of {lines} "
                     f"(setup.lines): {'; '.join(m['behind'])}", _UPGRADE_FIX)
        else:
            self.add(job, "migration_level", PASSED, f"at the heads of {lines}: {', '.join(m.get('expected') or [])}")
        if m.get("changed"):
            self.add(job, "migration_files", FAILED, "applied migrations differ from their files here: "
                     + "; ".join(m["changed"]),
                     "a migration is never edited once applied: restore the named files as they were when it was "
                     "applied (the pgops release that applied it), and put the change in a new migration")
        else:
            self.add(job, "migration_files", PASSED, "every applied migration matches its files")

    def restore_verification(self) -> None:
        job = "restore_verification"
        binaries = self.facts.get("binaries") or {}
        host = binaries.get("host") or "this host"
        install = ("install PostgreSQL's server package of the database's major version on every worker that runs "
                   "restore drills (Debian: apt-get install postgresql-15), or set PGOPS_PG_BINDIR to the directory "
                   "holding pg_ctl, pg_verifybackup and pg_amcheck")
        if binaries.get("error"):
            self.add(job, "binaries", FAILED, f"on {host}: {binaries['error']}", install)
        elif binaries.get("missing"):
            self.add(job, "binaries", FAILED, f"on {host}: {', '.join(binaries['missing'])} not found (or not "
                     f"executable) in {binaries.get('bindir')}", install)
        else:
            self.add(job, "binaries", PASSED, f"{', '.join(RESTORE_TOOLS)} in {binaries.get('bindir')} (on {host})")
        scratch = self.facts.get("scratch") or {}
        path = scratch.get("path") or self.config.restore_verification.scratch_dir
        if scratch.get("error"):
            self.add(job, "scratch_dir", FAILED, f"restore_verification.scratch_dir {path} on {host}: "
                     f"{scratch['error']}",
                     f"mkdir -p {path} on {host} (writable by the user the Airflow worker runs as), or set "
                     "restore_verification.scratch_dir to such a directory")
        else:
            free = scratch.get("free_bytes")
            room = f", {free / 2**30:.1f} GiB free" if free is not None else ""
            state = ("is writable" if scratch.get("exists")
                     else f"can be created ({scratch.get('writable_dir')} is writable)")
            self.add(job, "scratch_dir", PASSED, f"{path} {state} on {host}{room}: a drill needs about the "
                     "database's size")
        self.sentinel_table(job)

    def monitoring(self) -> None:
        job = "monitoring"
        self.connection(job, "monitor")
        self.role(job, "monitor")
        reason = self.unknown("server")
        if reason:
            self.could_not_run(job, "pg_stat_statements", reason)
            return
        s = self.server
        libraries = [lib.strip() for lib in (s.get("shared_preload_libraries") or "").split(",") if lib.strip()]
        why = "query monitoring (not built yet) will need it; backups do not"
        if "pg_stat_statements" not in libraries:
            create = ("" if s.get("pg_stat_statements_installed") else
                      f", and, as a superuser in database {self.database}: CREATE EXTENSION pg_stat_statements;")
            self.add(job, "pg_stat_statements", WARNING,
                     f"pg_stat_statements is not in shared_preload_libraries: {why}",
                     f"ALTER SYSTEM SET shared_preload_libraries = '{','.join([*libraries, 'pg_stat_statements'])}'; "
                     f"then restart PostgreSQL{create}")
        elif not s.get("pg_stat_statements_installed"):
            self.add(job, "pg_stat_statements", WARNING, f"pg_stat_statements is preloaded but not created in "
                     f"database {self.database!r}: {why}",
                     f"as a superuser in database {self.database}: CREATE EXTENSION pg_stat_statements;")
        else:
            self.add(job, "pg_stat_statements", PASSED, "pg_stat_statements is preloaded and created")

    def maintenance(self) -> None:
        job = "maintenance"
        role = self.roles["maintenance"]
        self.connection(job, "maintenance")
        self.role(job, "maintenance")
        reason = self.unknown("privileges")
        if reason:
            self.could_not_run(job, "schema_usage", reason)
        else:
            schema = self.privileges().get("pgops_schema")
            if schema is None:
                self.add(job, "schema_usage", FAILED, "schema pgops does not exist", _SETUP_FIX)
            elif self.role_attrs(role) is None:
                self.add(job, "schema_usage", FAILED, f"not checked: role {role!r} does not exist", _SETUP_FIX)
            elif (schema.get("usage") or {}).get(role):
                self.add(job, "schema_usage", PASSED, f"{role} has USAGE on schema pgops")
            else:
                self.add(job, "schema_usage", FAILED, f"{role} lacks USAGE on schema pgops",
                         f"as the owner role ({self.roles['owner']}) or a superuser: GRANT USAGE ON SCHEMA pgops TO "
                         f"{_ident(role)};")
        for check, what in (("partitions", "partition maintenance"),
                            ("materialized_views", "materialized-view refresh")):
            self.add(job, check, NOT_APPLICABLE, f"{what} is not built yet: what it needs on the objects it manages "
                     "is checked once it exists")

    def migrations(self) -> None:
        job = "migrations"
        owner = self.roles["owner"]
        self.connection(job, "owner", optional="pgops db upgrade and the migration DAG need it; without it a DBA runs "
                        "the migrations (pgops db upgrade --dsn, as a superuser)")
        self.role(job, "owner", login=False)
        reason = self.unknown("privileges")
        if reason:
            self.could_not_run(job, "schema_owner", reason)
            return
        schema = self.privileges().get("pgops_schema")
        if schema is None:
            self.add(job, "schema_owner", FAILED, "schema pgops does not exist", _SETUP_FIX)
        elif schema.get("owner") != owner:
            self.add(job, "schema_owner", FAILED, f"schema pgops is owned by {schema.get('owner')!r}, not by {owner!r} "
                     "(setup.owner_role), which runs the migrations",
                     "if schema pgops is pgops' own (made before pgops db setup existed), as a superuser: "
                     f"ALTER SCHEMA pgops OWNER TO {_ident(owner)}; and ALTER TABLE pgops.<table> OWNER TO "
                     f"{_ident(owner)}; for each of its tables. Otherwise it is not pgops': rename it before "
                     "pgops db setup")
        else:
            self.add(job, "schema_owner", PASSED, f"schema pgops is owned by {owner}")


def _size_mb(mb: int) -> str:
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def _slot_bound(wal_bytes_per_hour: float | None) -> tuple[int, str]:
    """A bound for max_slot_wal_keep_size in GB, and how it was sized."""
    if not wal_bytes_per_hour:
        return SLOT_MIN_GB, "no WAL rate measured on this server yet, so the smallest pgops suggests"
    gb = max(SLOT_MIN_GB, math.ceil(wal_bytes_per_hour * SLOT_HOURS / 2**30))
    return gb, (f"{SLOT_HOURS} hours of this server's average WAL rate since its statistics were reset "
                f"({wal_bytes_per_hour / 2**30:.2f} GB/h), at least {SLOT_MIN_GB}GB")


def evaluate(facts: dict[str, Any], config: PgopsConfig) -> list[Check]:
    """Judge gathered ``facts`` (the shape :func:`gather` returns) for every job. Pure."""
    judge = _Judge(facts, config)
    judge.backup()
    judge.restore_verification()
    judge.monitoring()
    judge.maintenance()
    judge.migrations()
    return judge.checks


# -- gathering ---------------------------------------------------------------------------


def _transient(text: str) -> bool:
    return any(marker in text for marker in _TRANSIENT)


def _describe(conn_id: str) -> tuple[dict[str, Any], ConnectionInfo | None]:
    from pgops.connections import get_connection

    try:
        info = get_connection(conn_id)
    except ConfigError as exc:
        return {"conn_id": conn_id, "defined": False, "error": str(exc)}, None
    return {"conn_id": conn_id, "defined": True, "login": info.login, "current_user": None, "database": None,
            "error": None, "transient": False}, info


def _session(conn, entry: dict[str, Any]) -> None:
    from pgops.postgres import sqlfiles

    user, database = conn.execute(dict(sqlfiles.steps("monitoring/preflight.sql"))["session"]).fetchone()
    entry.update(current_user=user, database=database)


def _probe_session(conn_id: str, config: PgopsConfig, entry: dict[str, Any]) -> None:
    """Log in through the job's connection (pg_hba, password, CONNECT) and say as whom."""
    from pgops.postgres.session import connect

    try:
        with connect(conn_id, config.database, job="preflight") as conn:
            _session(conn, entry)
    except PgopsError as exc:
        entry.update(error=str(exc), transient=isinstance(exc, TransientError))


def _probe_replication(info: ConnectionInfo, config: PgopsConfig) -> dict[str, Any]:
    """Open a physical replication connection with the backup connection, as
    pg_basebackup and pg_receivewal will, and run IDENTIFY_SYSTEM on it."""
    import psycopg
    from psycopg import pq

    from pgops.postgres.session import libpq_params, session_options

    db = config.database
    try:
        params = libpq_params(info)
    except ConfigError as exc:
        return {"ok": False, "error": str(exc), "transient": False}
    session = session_options(f"{db.application_name}:preflight", db.statement_timeout_s)
    if params.get("options"):
        session["options"] = f"{params['options']} {session['options']}"
    try:
        conn = psycopg.connect(**{**params, **session}, replication="true", autocommit=True,
                               connect_timeout=db.connect_timeout_s)
    except psycopg.OperationalError as exc:
        return {"ok": False, "error": str(exc).strip(), "transient": _transient(str(exc))}
    try:
        result = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
        if result.status != pq.ExecStatus.TUPLES_OK:
            return {"ok": False, "error": (result.error_message or b"").decode(errors="replace").strip(),
                    "transient": False}
        return {"ok": True, "error": None, "system_identifier": (result.get_value(0, 0) or b"").decode(),
                "timeline": int(result.get_value(0, 1) or 0)}
    finally:
        conn.close()


def _database_facts(conn, config: PgopsConfig, facts: dict[str, Any]) -> None:
    """Everything read through the monitoring session; a section that cannot be read is
    recorded in ``facts['errors']`` (its checks then fail as not run)."""
    import psycopg
    from psycopg.rows import dict_row

    from pgops.database import migrations
    from pgops.postgres import sqlfiles

    steps = dict(sqlfiles.steps("monitoring/preflight.sql"))
    roles = config.setup.roles()
    logins = [c.get("login") for c in facts["connections"].values() if c.get("login")]
    names = sorted(set(roles.values()) | set(logins))
    params = {"roles": names, "backup_role": roles["backup"], "functions": list(BACKUP_FUNCTIONS),
              "count_tables": list(config.restore_verification.count_tables)}

    def read(section: str, reader) -> None:
        try:
            facts[section] = reader()
        except (psycopg.Error, PgopsError) as exc:
            facts["errors"][section] = " ".join(str(exc).split())
            log.warning("preflight could not read %s: %s", section, exc)

    with conn.cursor(row_factory=dict_row) as cur:
        read("server", lambda: cur.execute(steps["server"]).fetchone())
        read("roles", lambda: {r.pop("name"): r for r in cur.execute(steps["roles"], params).fetchall()})
        read("privileges", lambda: cur.execute(steps["privileges"], params).fetchone())
    read("tablespaces", lambda: tablespaces.user_tablespaces(conn))

    def migration_facts() -> dict[str, Any]:
        applied = migrations.applied_versions(conn)
        status = migrations.status(config, applied)
        return {**status, "changed": migrations.changed_migrations(migrations.applied_checksums(conn) or {})}

    read("migrations", migration_facts)


def _binaries(major: int) -> dict[str, Any]:
    import os
    import socket

    from pgops.postgres.cluster import find_bindir

    host = socket.gethostname()
    try:
        bindir = find_bindir(major)
    except ConfigError as exc:
        return {"host": host, "bindir": None, "error": str(exc), "missing": list(RESTORE_TOOLS)}
    missing = [tool for tool in RESTORE_TOOLS if not os.access(bindir / tool, os.X_OK)]
    return {"host": host, "bindir": str(bindir), "error": None, "missing": missing}


def _scratch(path: Path) -> dict[str, Any]:
    """Whether ``path`` is, or can be made, a directory this process writes in: a file
    is created and removed in it, or in its nearest existing parent."""
    import os
    import shutil
    import tempfile

    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            return {"path": str(path), "error": f"{probe} is not a directory"}
        fd, name = tempfile.mkstemp(prefix=".pgops-preflight-", dir=probe)
        os.close(fd)
        os.unlink(name)
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return {"path": str(path), "error": f"cannot write in {probe}: {exc.strerror or exc}"}
    return {"path": str(path), "error": None, "exists": probe == path, "writable_dir": str(probe),
            "free_bytes": free}


def gather(config: PgopsConfig) -> dict[str, Any]:
    """Read the facts :func:`evaluate` judges. Database facts are read as the monitoring
    role; each other job connection only logs in (and the backup one also over the
    replication protocol). Nothing is changed. Failures to read are facts too: they are
    recorded, not raised, so each check they concern fails saying why.

    The shape: ``connections`` (job → conn_id, defined, login, current_user, database,
    error, transient), ``replication`` (ok, error, transient, system_identifier,
    timeline; None when the backup connection is not defined), ``server`` (settings;
    None when the monitoring session failed), ``roles`` (name → superuser, login,
    replication, pg_monitor), ``privileges`` (pgops_schema, backup_functions, sentinel,
    count_tables), ``tablespaces``, ``migrations`` (expected, applied, behind,
    changed), ``binaries``, ``scratch``, and ``errors`` (section → why it is missing).
    """
    import psycopg

    from pgops.postgres.session import connect

    db = config.database
    facts: dict[str, Any] = {"connections": {}, "errors": {}, "server": None, "replication": None}
    infos: dict[str, ConnectionInfo | None] = {}
    for key, conn_id in (("backup", db.backup_conn_id), ("monitor", db.monitor_conn_id),
                         ("maintenance", db.maintenance_conn_id), ("owner", db.owner_conn_id)):
        facts["connections"][key], infos[key] = _describe(conn_id)

    monitor = facts["connections"]["monitor"]
    if infos["monitor"] is not None:
        try:
            with connect(db.monitor_conn_id, db, job="preflight") as conn:
                _session(conn, monitor)
                _database_facts(conn, config, facts)
        except (PgopsError, psycopg.Error) as exc:
            monitor.update(error=" ".join(str(exc).split()),
                           transient=isinstance(exc, TransientError))
            facts["server"] = None
    for key in ("backup", "maintenance", "owner"):
        if infos[key] is not None:
            _probe_session(facts["connections"][key]["conn_id"], config, facts["connections"][key])
    if infos["backup"] is not None:
        facts["replication"] = _probe_replication(infos["backup"], config)
    major = (facts["server"] or {}).get("server_version_num", MIN_SERVER_VERSION) // 10000
    facts["binaries"] = _binaries(major)
    facts["scratch"] = _scratch(config.resolve_path(config.restore_verification.scratch_dir))
    return facts


# -- running -----------------------------------------------------------------------------


def run(config: PgopsConfig) -> Report:
    """Gather, judge and log every check. Never raises for what it finds (see :func:`enforce`)."""
    report = Report(evaluate(gather(config), config))
    for c in report.checks:
        level = {FAILED: logging.ERROR, WARNING: logging.WARNING}.get(c.verdict, logging.INFO)
        log.log(level, "%s", c)
    log.log(logging.INFO if report.ok else logging.ERROR, "%s", report.summary())
    return report


def enforce(report: Report) -> None:
    """Raise for a report with failures, listing each with its fix: a ConfigError (not
    retried), or a TransientError when every failure is only that the server could not
    be reached (Airflow retries)."""
    failures = report.failures
    if not failures:
        return
    lines = []
    for c in failures:
        lines.append(f"  {c.job}/{c.check}: {c.message}")
        lines += [("    fix: " if i == 0 else "         ") + line for i, line in enumerate((c.fix or "").splitlines())]
    message = "the database is not ready for pgops (pgops preflight):\n" + "\n".join(lines)
    if all(c.transient for c in failures):
        raise TransientError(message)
    raise ConfigError(message)


def check(config: PgopsConfig) -> list[dict[str, Any]]:
    """The DAG's task: run, log the table, fail when any check failed; returns the JSON."""
    report = run(config)
    log.info("pgops preflight:\n%s", report.table())
    enforce(report)
    return report.to_json()
