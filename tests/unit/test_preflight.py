"""Every rule of preflight.evaluate, on plain facts (the shape preflight.gather returns)."""

from __future__ import annotations

import copy
import json

import pytest

from pgops.config import PgopsConfig, parse_config
from pgops.errors import ConfigError, TransientError
from pgops.monitoring.preflight import JOBS, Check, Report, enforce, evaluate

CONFIG = PgopsConfig()
ROLES = CONFIG.setup.roles()


def _conn(key: str, conn_id: str | None = None) -> dict:
    return {"conn_id": conn_id or ROLES[key], "defined": True, "login": ROLES[key], "current_user": ROLES[key],
            "database": "fixia", "error": None, "transient": False}


def _role(**attrs) -> dict:
    return {"superuser": False, "login": True, "replication": False, "pg_monitor": False, **attrs}


GOOD: dict = {
    "connections": {key: _conn(key) for key in ("backup", "monitor", "maintenance", "owner")},
    "replication": {"ok": True, "error": None, "system_identifier": "7714", "timeline": 1},
    "server": {
        "server_version_num": 150018, "database": "fixia", "current_user": "pgops_monitor",
        "client_address": "10.0.0.7", "wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
        "max_slot_wal_keep_size_mb": 8192, "max_wal_size": "2GB", "data_checksums": True,
        "data_directory": "/srv/pg/15/main", "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements_installed": True, "wal_bytes_per_hour": None,
    },
    "roles": {
        "pgops_backup": _role(replication=True),
        "pgops_monitor": _role(pg_monitor=True),
        "pgops_maintenance": _role(),
        "pgops_owner": _role(),
    },
    "privileges": {
        "pgops_schema": {"owner": "pgops_owner",
                         "usage": {"pgops_backup": True, "pgops_monitor": True, "pgops_maintenance": True,
                                   "pgops_owner": True}},
        "backup_functions": {"pg_catalog.pg_switch_wal()": True, "pg_catalog.pg_create_restore_point(text)": True},
        "sentinel": {"exists": True, "select": True, "insert": True, "delete": True},
        "count_tables": {t: {"exists": True, "schema": t.split(".")[0], "schema_exists": True, "usage": True,
                             "select": True} for t in CONFIG.restore_verification.count_tables},
    },
    "tablespaces": [],
    "migrations": {"expected": ["core_0001"], "applied": ["core_0001"], "behind": [], "changed": []},
    "binaries": {"host": "worker1", "bindir": "/usr/lib/postgresql/15/bin", "error": None, "missing": []},
    "scratch": {"path": "/srv/scratch", "error": None, "exists": True, "writable_dir": "/srv/scratch",
                "free_bytes": 10 * 2**30},
    "errors": {},
}


def facts(**changes) -> dict:
    """GOOD with ``changes``: each key a path into the facts, parts joined by ``__`` (``server__wal_level``)."""
    out = copy.deepcopy(GOOD)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = out
        for part in parents:
            node = node[part]
        node[last] = value
    return out


def by_name(checks: list[Check]) -> dict[tuple[str, str], Check]:
    return {(c.job, c.check): c for c in checks}


def not_passed(checks: list[Check]) -> dict[tuple[str, str], str]:
    return {(c.job, c.check): c.verdict for c in checks if c.verdict not in ("passed", "not_applicable")}


def one(checks: list[Check], job: str, check: str) -> Check:
    return by_name(checks)[(job, check)]


# -- the whole report ---------------------------------------------------------------------


def test_a_well_set_up_database_passes_every_check():
    checks = evaluate(GOOD, CONFIG)
    assert not_passed(checks) == {}
    assert Report(checks).ok
    assert [c.job for c in checks] == sorted((c.job for c in checks), key=JOBS.index), "grouped by job, in order"
    assert {c.job for c in checks} == set(JOBS)
    assert len(by_name(checks)) == len(checks), "check names are unique per job"


def test_not_applicable_checks_say_why():
    checks = [c for c in evaluate(GOOD, CONFIG) if c.verdict == "not_applicable"]
    assert {(c.job, c.check) for c in checks} == {("maintenance", "partitions"), ("maintenance", "materialized_views")}
    assert all("not built yet" in c.message for c in checks)


def test_every_failure_and_warning_has_a_fix():
    worst = facts(server__wal_level="minimal", server__max_wal_senders=0, server__max_slot_wal_keep_size_mb=-1,
                  server__data_checksums=False, server__shared_preload_libraries="",
                  roles__pgops_backup=_role(superuser=True, login=False),
                  replication={"ok": False, "error": 'FATAL:  no pg_hba.conf entry for replication connection from '
                               'host "10.0.0.7", user "pgops_backup", no encryption', "transient": False})
    checks = evaluate(worst, CONFIG)
    assert [c for c in checks if c.verdict in ("failed", "warning") and not c.fix] == []
    assert [c for c in checks if c.verdict == "passed" and c.fix] == []


def test_json_is_a_stable_list_of_five_keys():
    report = Report(evaluate(facts(server__data_checksums=False), CONFIG))
    data = json.loads(json.dumps(report.to_json()))
    assert all(list(row) == ["job", "check", "verdict", "message", "fix"] for row in data)
    assert {"job": "backup", "check": "data_checksums", "verdict": "warning"}.items() <= data[7].items()
    assert data == Report(evaluate(facts(server__data_checksums=False), CONFIG)).to_json()


def test_the_table_has_a_row_per_check_and_the_fix_under_it():
    report = Report(evaluate(facts(server__wal_level="minimal"), CONFIG))
    table = report.table()
    lines = table.splitlines()
    assert lines[0].split() == ["job", "check", "verdict", "detail", "/", "fix"]
    row = next(i for i, line in enumerate(lines) if line.split()[:3] == ["backup", "wal_level", "FAILED"])
    assert lines[row + 1].strip() == "fix: ALTER SYSTEM SET wal_level = 'replica'; then restart PostgreSQL (it " \
                                     "takes effect only at server start)"
    assert lines[row + 1].index("fix:") == lines[row].index("wal_level is"), "the fix sits in the detail column"
    assert "1 failed" in lines[-1] and "NOT READY" in lines[-1]
    assert sum(1 for line in lines if line.startswith(("backup ", "restore_verification ", "monitoring ",
                                                       "maintenance ", "migrations "))) == len(report.checks)


def test_enforce_raises_a_config_error_listing_each_failure_and_its_fix():
    enforce(Report(evaluate(facts(server__data_checksums=False), CONFIG)))  # warnings only: no error
    with pytest.raises(ConfigError) as info:
        enforce(Report(evaluate(facts(server__wal_level="minimal", server__max_replication_slots=1), CONFIG)))
    message = str(info.value)
    assert "backup/wal_level: wal_level is 'minimal'" in message
    assert "fix: ALTER SYSTEM SET wal_level = 'replica';" in message
    assert "backup/max_replication_slots" in message
    assert "data_checksums" not in message


def test_an_unreachable_server_is_transient_and_retried():
    error = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: Connection refused'
    down = facts(server=None, roles=None, privileges=None, tablespaces=None, migrations=None,
                 connections__monitor={**_conn("monitor"), "error": error, "transient": True},
                 connections__backup={**_conn("backup"), "error": error, "transient": True},
                 connections__maintenance={**_conn("maintenance"), "error": error, "transient": True},
                 connections__owner={**_conn("owner"), "error": error, "transient": True},
                 replication={"ok": False, "error": error, "transient": True})
    report = Report(evaluate(down, CONFIG))
    assert not report.ok
    failed = report.failures
    assert all(c.transient for c in failed)
    assert one(failed, "backup", "wal_level").message == ("could not be checked: nothing could be read as the "
                                                          "monitoring role (why: monitoring/connection)")
    with pytest.raises(TransientError):
        enforce(report)


# -- facts that could not be read ----------------------------------------------------------


def test_a_check_that_could_not_run_has_failed():
    checks = evaluate(facts(errors={"privileges": "permission denied for schema fixia"}), CONFIG)
    failed = not_passed(checks)
    assert failed == {
        ("backup", "execute:pg_switch_wal()"): "failed", ("backup", "execute:pg_create_restore_point(text)"): "failed",
        ("backup", "sentinel_table"): "failed", ("backup", "sentinel_grants"): "failed",
        **{("backup", f"count_table:{t}"): "failed" for t in CONFIG.restore_verification.count_tables},
        ("restore_verification", "sentinel_table"): "failed", ("maintenance", "schema_usage"): "failed",
        ("migrations", "schema_owner"): "failed"}
    check = one(checks, "backup", "sentinel_table")
    assert check.message == "could not be checked: privileges could not be read: permission denied for schema fixia"
    assert "pgops_monitor" in check.fix and not check.transient


def test_monitoring_connection_failure_fails_every_database_check_and_names_why():
    error = ('cannot log in to PostgreSQL as pgops_monitor@10.0.0.5:5432/fixia: connection failed: FATAL:  password '
             'authentication failed for user "pgops_monitor"')
    checks = evaluate(facts(server=None, connections__monitor={**_conn("monitor"), "error": error}), CONFIG)
    connection = one(checks, "monitoring", "connection")
    assert connection.verdict == "failed"
    assert connection.message == ("connection 'pgops_monitor' cannot log in: password authentication failed for user "
                                  '"pgops_monitor"')
    assert "set the password of Airflow connection pgops_monitor" in connection.fix
    for job, check in [("backup", "wal_level"), ("backup", "role"), ("monitoring", "pg_stat_statements"),
                       ("backup", "migration_level"), ("backup", "tablespaces")]:
        assert one(checks, job, check).verdict == "failed"
        assert "could not be checked" in one(checks, job, check).message
    assert one(checks, "restore_verification", "binaries").verdict == "passed", "local checks still run"


# -- backup ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "check", "fix"),
    [
        ({"server__wal_level": "minimal"}, "wal_level", "ALTER SYSTEM SET wal_level = 'replica';"),
        ({"server__max_wal_senders": 1}, "max_wal_senders", "ALTER SYSTEM SET max_wal_senders = 10;"),
        ({"server__max_replication_slots": 1}, "max_replication_slots", "ALTER SYSTEM SET max_replication_slots = 10;"),
        ({"server__server_version_num": 140010}, "server_version", "PostgreSQL 15 or later"),
    ],
)
def test_each_server_setting_fails_backups_with_its_fix(change, check, fix):
    checks = evaluate(facts(**change), CONFIG)
    assert not_passed(checks) == {("backup", check): "failed"}
    assert fix in one(checks, "backup", check).fix


def test_wal_level_logical_is_enough():
    assert not_passed(evaluate(facts(server__wal_level="logical"), CONFIG)) == {}


def test_an_unbounded_slot_wal_keep_size_is_a_failure_not_a_warning():
    checks = evaluate(facts(server__max_slot_wal_keep_size_mb=-1), CONFIG)
    assert not_passed(checks) == {("backup", "max_slot_wal_keep_size"): "failed"}
    check = one(checks, "backup", "max_slot_wal_keep_size")
    assert "unbounded" in check.message
    assert check.fix.splitlines()[0] == "ALTER SYSTEM SET max_slot_wal_keep_size = '8GB'; SELECT pg_reload_conf();"


def test_the_slot_bound_suggested_follows_the_measured_wal_rate():
    check = one(evaluate(facts(server__max_slot_wal_keep_size_mb=-1, server__wal_bytes_per_hour=3 * 2**30), CONFIG),
                "backup", "max_slot_wal_keep_size")
    assert check.fix.splitlines()[0] == "ALTER SYSTEM SET max_slot_wal_keep_size = '36GB'; SELECT pg_reload_conf();"
    assert "3.00 GB/h" in check.fix
    assert "= '8GB'" in one(evaluate(facts(server__max_slot_wal_keep_size_mb=-1, server__wal_bytes_per_hour=1e6),
                                     CONFIG), "backup", "max_slot_wal_keep_size").fix, "never below 8GB"


def test_a_bounded_slot_says_its_size():
    check = one(evaluate(facts(server__max_slot_wal_keep_size_mb=1536), CONFIG), "backup", "max_slot_wal_keep_size")
    assert check.verdict == "passed" and "1536MB" in check.message


def test_checksums_off_is_a_warning_with_the_offline_fix():
    checks = evaluate(facts(server__data_checksums=False), CONFIG)
    assert not_passed(checks) == {("backup", "data_checksums"): "warning"}
    assert "pg_checksums --enable --pgdata /srv/pg/15/main" in one(checks, "backup", "data_checksums").fix
    assert "PostgreSQL stopped" in one(checks, "backup", "data_checksums").fix


def test_tablespaces_are_refused_with_the_drop_to_run():
    checks = evaluate(facts(tablespaces=[["fast", "/srv/ssd/fast"]]), CONFIG)
    assert not_passed(checks) == {("backup", "tablespaces"): "failed"}
    check = one(checks, "backup", "tablespaces")
    assert "fast (/srv/ssd/fast)" in check.message
    assert check.fix.splitlines()[-1] == "DROP TABLESPACE fast;"


def test_replication_connection_without_pg_hba_line_gets_the_exact_line():
    error = ('connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  no pg_hba.conf entry '
             'for replication connection from host "10.0.0.7", user "pgops_backup", no encryption')
    checks = evaluate(facts(replication={"ok": False, "error": error, "transient": False}), CONFIG)
    assert not_passed(checks) == {("backup", "replication_connection"): "failed"}
    check = one(checks, "backup", "replication_connection")
    assert "no pg_hba.conf entry for replication connection" in check.message
    fix = check.fix.splitlines()
    assert "host replication pgops_backup 10.0.0.7/32 scram-sha-256" in fix
    assert fix[-1].endswith("SELECT pg_reload_conf();")
    assert not check.transient


def test_pg_hba_line_for_an_ipv6_client():
    error = 'FATAL:  no pg_hba.conf entry for replication connection from host "::1", user "pgops_backup", SSL off'
    check = one(evaluate(facts(replication={"ok": False, "error": error, "transient": False}), CONFIG),
                "backup", "replication_connection")
    assert "host replication pgops_backup ::1/128 scram-sha-256" in check.fix


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        ("FATAL:  must be superuser or replication role to start walsender", "ALTER ROLE pgops_backup REPLICATION;"),
        ("FATAL:  number of requested standby connections exceeds max_wal_senders (currently 0)",
         "ALTER SYSTEM SET max_wal_senders = 10;"),
        ('FATAL:  password authentication failed for user "pgops_backup"', "set the password of Airflow connection"),
        ("FATAL:  something new", "see the server log"),
    ],
)
def test_other_replication_refusals_name_their_fix(error, fix):
    check = one(evaluate(facts(replication={"ok": False, "error": error, "transient": False}), CONFIG),
                "backup", "replication_connection")
    assert check.verdict == "failed" and fix in check.fix


def test_replication_not_tried_without_a_backup_connection():
    checks = evaluate(facts(replication=None, connections__backup={"conn_id": "pgops_backup", "defined": False,
                                                                   "error": "not defined"}), CONFIG)
    assert not_passed(checks) == {("backup", "connection"): "failed", ("backup", "replication_connection"): "failed"}
    assert "AIRFLOW_CONN_PGOPS_BACKUP" in one(checks, "backup", "connection").fix


@pytest.mark.parametrize(
    ("attrs", "problem", "fix"),
    [
        ({"superuser": True}, "is a superuser", "ALTER ROLE pgops_backup NOSUPERUSER;"),
        ({"login": False}, "cannot log in", "ALTER ROLE pgops_backup LOGIN;"),
        ({"replication": False}, "lacks REPLICATION", "ALTER ROLE pgops_backup REPLICATION;"),
        ({"superuser": True, "replication": False}, "is a superuser",
         "ALTER ROLE pgops_backup NOSUPERUSER REPLICATION;"),
    ],
)
def test_backup_role_attributes(attrs, problem, fix):
    checks = evaluate(facts(roles__pgops_backup=_role(replication=True) | attrs), CONFIG)
    assert not_passed(checks) == {("backup", "role"): "failed"}
    check = one(checks, "backup", "role")
    assert problem in check.message and check.fix == fix


def test_a_missing_role_points_to_setup():
    roles = {k: v for k, v in GOOD["roles"].items() if k != "pgops_backup"}
    privileges = {**GOOD["privileges"], "backup_functions": None,
                  "sentinel": {"exists": True, "select": None, "insert": None, "delete": None},
                  "count_tables": {t: {**v, "usage": None, "select": None}
                                   for t, v in GOOD["privileges"]["count_tables"].items()}}
    checks = evaluate(facts(roles=roles, privileges=privileges), CONFIG)
    failed = not_passed(checks)
    assert set(failed.values()) == {"failed"}
    assert {("backup", "role"), ("backup", "execute:pg_switch_wal()"), ("backup", "sentinel_grants"),
            ("backup", "count_table:fixia.users")} <= set(failed)
    assert one(checks, "backup", "role").message == "role 'pgops_backup' (setup.backup_role) does not exist"
    assert one(checks, "backup", "role").fix.startswith("pgops db setup")
    assert one(checks, "backup", "execute:pg_switch_wal()").message.startswith("not checked")


@pytest.mark.parametrize("function", ["pg_catalog.pg_switch_wal()", "pg_catalog.pg_create_restore_point(text)"])
def test_a_missing_function_grant_gets_its_grant(function):
    checks = evaluate(facts(privileges__backup_functions={**GOOD["privileges"]["backup_functions"], function: False}),
                      CONFIG)
    name = f"execute:{function.removeprefix('pg_catalog.')}"
    assert not_passed(checks) == {("backup", name): "failed"}
    assert one(checks, "backup", name).fix == f"GRANT EXECUTE ON FUNCTION {function} TO pgops_backup;"


def test_sentinel_privileges_and_schema_usage():
    usage = {**GOOD["privileges"]["pgops_schema"]["usage"], "pgops_backup": False}
    checks = evaluate(facts(privileges__sentinel={"exists": True, "select": True, "insert": False, "delete": False},
                            privileges__pgops_schema={"owner": "pgops_owner", "usage": usage}), CONFIG)
    assert not_passed(checks) == {("backup", "sentinel_grants"): "failed"}
    fix = one(checks, "backup", "sentinel_grants").fix.splitlines()
    assert fix[1:] == ["GRANT USAGE ON SCHEMA pgops TO pgops_backup;",
                       "GRANT INSERT, DELETE ON TABLE pgops.backup_sentinel TO pgops_backup;"]


def test_a_missing_sentinel_table_fails_backup_and_restore_with_upgrade_when_behind():
    checks = evaluate(facts(privileges__sentinel={"exists": False, "select": None, "insert": None, "delete": None},
                            migrations={"expected": ["core_0001"], "applied": [], "behind": [
                                "core: at nothing, head is core_0001"], "changed": []}), CONFIG)
    assert not_passed(checks) == {("backup", "sentinel_table"): "failed", ("backup", "sentinel_grants"): "failed",
                                  ("restore_verification", "sentinel_table"): "failed",
                                  ("backup", "migration_level"): "failed"}
    assert one(checks, "backup", "sentinel_table").fix == "pgops db upgrade"
    assert one(checks, "restore_verification", "sentinel_table").fix == "pgops db upgrade"
    level = one(checks, "backup", "migration_level")
    assert level.message == ("schema pgops is behind the heads of core (setup.lines): core: at nothing, head is "
                             "core_0001")
    assert level.fix == "pgops db upgrade"


def test_a_sentinel_table_dropped_after_its_migration_says_how_to_recreate_it():
    checks = evaluate(facts(privileges__sentinel={"exists": False, "select": None, "insert": None, "delete": None}),
                      CONFIG)
    assert "include/sql/migrations/core/0001_schema.up.sql" in one(checks, "backup", "sentinel_table").fix


def test_a_changed_applied_migration_fails_naming_it():
    changed = ["core_0001: its files changed after it was applied (core_0001_schema.py, 0001_schema.up.sql, ...)"]
    checks = evaluate(facts(migrations={**GOOD["migrations"], "changed": changed}), CONFIG)
    assert not_passed(checks) == {("backup", "migration_files"): "failed"}
    check = one(checks, "backup", "migration_files")
    assert "core_0001: its files changed" in check.message
    assert "new migration" in check.fix


def test_unreadable_migrations_fail_both_migration_checks():
    checks = evaluate(facts(errors={"migrations": "permission denied for table alembic_version"}), CONFIG)
    assert not_passed(checks) == {("backup", "migration_level"): "failed", ("backup", "migration_files"): "failed"}


def test_count_tables_missing_is_a_warning_and_missing_grant_a_failure():
    tables = copy.deepcopy(GOOD["privileges"]["count_tables"])
    tables["fixia.users"] = {"exists": False, "schema": "fixia", "schema_exists": True, "usage": True, "select": None}
    tables["fixia.payments"].update(usage=False, select=False)
    checks = evaluate(facts(privileges__count_tables=tables), CONFIG)
    assert not_passed(checks) == {("backup", "count_table:fixia.users"): "warning",
                                  ("backup", "count_table:fixia.payments"): "failed"}
    assert "restore_verification.count_tables" in one(checks, "backup", "count_table:fixia.users").fix
    fix = one(checks, "backup", "count_table:fixia.payments").fix.splitlines()
    assert fix[1:] == ["GRANT USAGE ON SCHEMA fixia TO pgops_backup;",
                       "GRANT SELECT ON TABLE fixia.payments TO pgops_backup;"]


def test_count_tables_follow_the_configuration_and_names_are_quoted_when_needed():
    config = parse_config({"restore_verification": {"count_tables": ["app.user"]}})
    tables = {"app.user": {"exists": True, "schema": "app", "schema_exists": True, "usage": True, "select": False}}
    checks = evaluate(facts(privileges__count_tables=tables), config)
    assert not_passed(checks) == {("backup", "count_table:app.user"): "failed"}
    assert one(checks, "backup", "count_table:app.user").fix.splitlines()[-1] == \
        'GRANT SELECT ON TABLE app."user" TO pgops_backup;'


# -- connections ---------------------------------------------------------------------------


def test_a_connection_logging_in_as_another_role_fails_and_says_so():
    wrong = {**_conn("backup"), "login": "postgres", "current_user": "postgres"}
    roles = {**GOOD["roles"], "postgres": _role(superuser=True, replication=True)}
    checks = evaluate(facts(connections__backup=wrong, roles=roles), CONFIG)
    assert not_passed(checks) == {("backup", "connection"): "failed"}
    check = one(checks, "backup", "connection")
    assert check.message == ("connection 'pgops_backup' logs in as 'postgres' (a superuser: pgops jobs never connect "
                             "as one), not as 'pgops_backup' (setup.backup_role)")
    assert "set the login of Airflow connection pgops_backup to pgops_backup" in check.fix


def test_a_connection_to_another_database_fails():
    checks = evaluate(facts(connections__maintenance={**_conn("maintenance"), "database": "postgres"}), CONFIG)
    assert not_passed(checks) == {("maintenance", "connection"): "failed"}
    assert "names database 'postgres'" in one(checks, "maintenance", "connection").message


def test_a_connection_without_pg_hba_line_gets_the_database_line():
    error = ('cannot log in to PostgreSQL as pgops_maintenance@10.0.0.5:5432/fixia: connection failed: FATAL:  no '
             'pg_hba.conf entry for host "10.0.0.7", user "pgops_maintenance", database "fixia", no encryption')
    checks = evaluate(facts(connections__maintenance={**_conn("maintenance"), "error": error, "current_user": None}),
                      CONFIG)
    check = one(checks, "maintenance", "connection")
    assert check.verdict == "failed"
    assert "host fixia pgops_maintenance 10.0.0.7/32 scram-sha-256" in check.fix.splitlines()


@pytest.mark.parametrize(
    ("error", "fix"),
    [('FATAL:  role "pgops_maintenance" does not exist', "pgops db setup"),
     ('FATAL:  permission denied for database "fixia"', "GRANT CONNECT ON DATABASE fixia TO pgops_maintenance;"),
     ('FATAL:  role "pgops_maintenance" is not permitted to log in', "ALTER ROLE pgops_maintenance LOGIN;"),
     ('FATAL:  database "fixa" does not exist', "set the schema (database) of Airflow connection")],
)
def test_login_failures_name_their_fix(error, fix):
    check = one(evaluate(facts(connections__maintenance={**_conn("maintenance"), "error": error}), CONFIG),
                "maintenance", "connection")
    assert check.verdict == "failed" and fix in check.fix


def test_an_undefined_owner_connection_is_only_a_warning():
    checks = evaluate(facts(connections__owner={"conn_id": "pgops_owner", "defined": False, "error": "x"}), CONFIG)
    assert not_passed(checks) == {("migrations", "connection"): "warning"}
    assert "AIRFLOW_CONN_PGOPS_OWNER" in one(checks, "migrations", "connection").fix


# -- restore verification -----------------------------------------------------------------


def test_missing_binaries_fail_restore_verification():
    checks = evaluate(facts(binaries={"host": "worker1", "bindir": "/opt/pg/bin", "error": None,
                                      "missing": ["pg_amcheck"]}), CONFIG)
    assert not_passed(checks) == {("restore_verification", "binaries"): "failed"}
    check = one(checks, "restore_verification", "binaries")
    assert check.message == "on worker1: pg_amcheck not found (or not executable) in /opt/pg/bin"
    assert "PGOPS_PG_BINDIR" in check.fix


def test_no_bindir_at_all_fails_restore_verification():
    checks = evaluate(facts(binaries={"host": "w", "bindir": None, "error": "PostgreSQL 15 server binaries not found",
                                      "missing": ["pg_ctl", "pg_verifybackup", "pg_amcheck"]}), CONFIG)
    assert not_passed(checks) == {("restore_verification", "binaries"): "failed"}


def test_an_unwritable_scratch_dir_fails_restore_verification():
    checks = evaluate(facts(scratch={"path": "/srv/scratch", "error": "cannot write in /srv: Read-only file system"}),
                      CONFIG)
    assert not_passed(checks) == {("restore_verification", "scratch_dir"): "failed"}
    assert "mkdir -p /srv/scratch" in one(checks, "restore_verification", "scratch_dir").fix


def test_a_scratch_dir_that_can_be_created_passes():
    check = one(evaluate(facts(scratch={"path": "/srv/scratch", "error": None, "exists": False, "writable_dir": "/srv",
                                        "free_bytes": None}), CONFIG), "restore_verification", "scratch_dir")
    assert check.verdict == "passed" and "can be created (/srv is writable)" in check.message


# -- monitoring ---------------------------------------------------------------------------


def test_pg_stat_statements_not_preloaded_is_a_monitoring_warning_only():
    checks = evaluate(facts(server__shared_preload_libraries="auto_explain",
                            server__pg_stat_statements_installed=False), CONFIG)
    assert not_passed(checks) == {("monitoring", "pg_stat_statements"): "warning"}
    fix = one(checks, "monitoring", "pg_stat_statements").fix
    assert "ALTER SYSTEM SET shared_preload_libraries = 'auto_explain,pg_stat_statements';" in fix
    assert "CREATE EXTENSION pg_stat_statements;" in fix
    assert Report(checks).ok, "never a failure, and never a backup problem"


def test_pg_stat_statements_preloaded_but_not_created():
    checks = evaluate(facts(server__pg_stat_statements_installed=False), CONFIG)
    assert not_passed(checks) == {("monitoring", "pg_stat_statements"): "warning"}
    assert one(checks, "monitoring", "pg_stat_statements").fix == \
        "as a superuser in database fixia: CREATE EXTENSION pg_stat_statements;"


@pytest.mark.parametrize(
    ("attrs", "fix"),
    [({"pg_monitor": False}, "GRANT pg_monitor TO pgops_monitor;"),
     ({"superuser": True}, "ALTER ROLE pgops_monitor NOSUPERUSER;")],
)
def test_monitor_role(attrs, fix):
    checks = evaluate(facts(roles__pgops_monitor=_role(pg_monitor=True) | attrs), CONFIG)
    assert not_passed(checks) == {("monitoring", "role"): "failed"}
    assert one(checks, "monitoring", "role").fix == fix


# -- maintenance and migrations ------------------------------------------------------------


def test_maintenance_role_and_schema_usage():
    usage = {**GOOD["privileges"]["pgops_schema"]["usage"], "pgops_maintenance": False}
    checks = evaluate(facts(roles__pgops_maintenance=_role(superuser=True),
                            privileges__pgops_schema={"owner": "pgops_owner", "usage": usage}), CONFIG)
    assert not_passed(checks) == {("maintenance", "role"): "failed", ("maintenance", "schema_usage"): "failed"}
    assert one(checks, "maintenance", "schema_usage").fix.endswith("GRANT USAGE ON SCHEMA pgops TO pgops_maintenance;")


def test_no_schema_pgops_points_to_setup():
    checks = evaluate(facts(privileges__pgops_schema=None), CONFIG)
    assert not_passed(checks) == {("backup", "sentinel_grants"): "failed", ("maintenance", "schema_usage"): "failed",
                                  ("migrations", "schema_owner"): "failed"}
    assert one(checks, "migrations", "schema_owner").fix.startswith("pgops db setup")


def test_schema_pgops_owned_by_another_role():
    checks = evaluate(facts(privileges__pgops_schema={**GOOD["privileges"]["pgops_schema"], "owner": "fixia_owner"}),
                      CONFIG)
    assert not_passed(checks) == {("migrations", "schema_owner"): "failed"}
    check = one(checks, "migrations", "schema_owner")
    assert "owned by 'fixia_owner'" in check.message
    assert "ALTER SCHEMA pgops OWNER TO pgops_owner;" in check.fix


def test_owner_role_superuser_is_refused_but_need_not_log_in():
    checks = evaluate(facts(roles__pgops_owner=_role(login=False)), CONFIG)
    assert not_passed(checks) == {}
    checks = evaluate(facts(roles__pgops_owner=_role(superuser=True)), CONFIG)
    assert not_passed(checks) == {("migrations", "role"): "failed"}


def test_configured_role_names_are_used_everywhere():
    config = parse_config({"setup": {"backup_role": "ops_bk", "monitor_role": "ops_mon",
                                     "maintenance_role": "ops_mnt", "owner_role": "ops_own"}})
    renamed = {"pgops_backup": "ops_bk", "pgops_monitor": "ops_mon", "pgops_maintenance": "ops_mnt",
               "pgops_owner": "ops_own"}
    data = facts(roles={renamed[k]: v for k, v in GOOD["roles"].items()},
                 privileges__pgops_schema={"owner": "ops_own", "usage": {v: True for v in renamed.values()}},
                 connections={key: {**_conn(key), "login": renamed[ROLES[key]], "current_user": renamed[ROLES[key]]}
                              for key in ("backup", "monitor", "maintenance", "owner")})
    assert not_passed(evaluate(data, config)) == {}
    # the default names are now the wrong ones
    assert set(not_passed(evaluate(GOOD, config))) >= {("backup", "role"), ("backup", "connection"),
                                                        ("migrations", "schema_owner")}


def test_pg_stat_statements_created_but_not_preloaded_needs_only_the_preload():
    check = one(evaluate(facts(server__shared_preload_libraries=""), CONFIG), "monitoring", "pg_stat_statements")
    assert check.verdict == "warning"
    assert check.fix == ("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'; then restart PostgreSQL")


def test_settings_the_monitoring_role_may_not_read_fail_as_not_checked_and_its_role_says_why():
    """Without pg_monitor, current_setting('data_directory') is refused: the settings
    cannot be judged, the connection itself is fine, and the role check names the grant."""
    error = "must be superuser or have privileges of pg_read_all_settings to examine \"data_directory\""
    checks = evaluate(facts(server=None, errors={"server": error}, roles__pgops_monitor=_role()), CONFIG)
    assert one(checks, "monitoring", "connection").verdict == "passed"
    assert one(checks, "monitoring", "role").fix == "GRANT pg_monitor TO pgops_monitor;"
    for check in ("wal_level", "max_slot_wal_keep_size", "data_checksums"):
        assert one(checks, "backup", check).verdict == "failed"
        assert one(checks, "backup", check).message == f"could not be checked: server could not be read: {error}"
    assert one(checks, "monitoring", "pg_stat_statements").verdict == "failed"
    assert one(checks, "backup", "tablespaces").verdict == "passed", "read on its own"


def test_migrations_unreadable_without_usage_on_pgops_point_to_upgrade():
    """Before core's first migration (or after it was undone) the monitoring role has
    no USAGE on schema pgops, so the version table cannot be read: that is a reason to
    upgrade, not a monitoring-role problem."""
    usage = {**GOOD["privileges"]["pgops_schema"]["usage"], "pgops_monitor": False}
    checks = evaluate(facts(errors={"migrations": "permission denied for schema pgops"},
                            privileges__pgops_schema={"owner": "pgops_owner", "usage": usage}), CONFIG)
    assert not_passed(checks) == {("backup", "migration_level"): "failed", ("backup", "migration_files"): "failed"}
    level = one(checks, "backup", "migration_level")
    assert "has no USAGE on schema pgops" in level.message
    assert level.fix.splitlines() == ["pgops db upgrade", "(if they have run: as the owner role (pgops_owner): "
                                      "GRANT USAGE ON SCHEMA pgops TO pgops_monitor;)"]
