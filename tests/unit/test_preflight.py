from __future__ import annotations

import pytest

from pgops.monitoring.preflight import evaluate

GOOD = {
    "server_version_num": 150018,
    "wal_level": "replica",
    "data_checksums": True,
    "shared_preload_libraries": "pg_stat_statements",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "max_slot_wal_keep_size": "8GB",
    "pg_stat_statements_installed": True,
    "current_user": "pgops_monitor",
    "tablespaces": [],
    "roles": {
        "pgops_backup": {"superuser": False, "replication": True, "login": True, "pg_monitor": False},
        "pgops_monitor": {"superuser": False, "replication": False, "login": True, "pg_monitor": True},
        "pgops_maintenance": {"superuser": False, "replication": False, "login": True, "pg_monitor": False},
    },
}
LOGINS = {"backup": "pgops_backup", "monitor": "pgops_monitor", "maintenance": "pgops_maintenance"}


def checks(findings, level="error"):
    return {f.check for f in findings if f.level == level}


def test_a_well_set_up_server_has_no_findings():
    assert evaluate(GOOD, LOGINS) == []


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"server_version_num": 140010}, "server_version"),
        ({"wal_level": "minimal"}, "wal_level"),
        ({"max_wal_senders": 1}, "max_wal_senders"),
        ({"max_replication_slots": 0}, "max_replication_slots"),
        ({"max_replication_slots": 1}, "max_replication_slots"),  # a full backup holds its WAL with a second
        ({"shared_preload_libraries": "auto_explain"}, "pg_stat_statements"),
        ({"pg_stat_statements_installed": False}, "pg_stat_statements"),
        ({"tablespaces": [("fast", "/srv/ssd/fast")]}, "tablespaces"),
    ],
)
def test_each_server_problem_is_an_error(change, check):
    assert checks(evaluate({**GOOD, **change}, LOGINS)) == {check}


@pytest.mark.parametrize(
    ("change", "check"),
    [({"data_checksums": False}, "data_checksums"), ({"max_slot_wal_keep_size": "-1"}, "max_slot_wal_keep_size")],
)
def test_risky_settings_are_warnings(change, check):
    findings = evaluate({**GOOD, **change}, LOGINS)
    assert checks(findings) == set()
    assert checks(findings, "warning") == {check}


def test_superuser_job_role_is_refused():
    roles = {**GOOD["roles"], "pgops_backup": {**GOOD["roles"]["pgops_backup"], "superuser": True}}
    findings = evaluate({**GOOD, "roles": roles}, LOGINS)
    assert checks(findings) == {"role:backup"}
    assert "superuser" in str(findings[0])


def test_backup_role_needs_replication_and_monitor_needs_pg_monitor():
    roles = {
        **GOOD["roles"],
        "pgops_backup": {**GOOD["roles"]["pgops_backup"], "replication": False},
        "pgops_monitor": {**GOOD["roles"]["pgops_monitor"], "pg_monitor": False},
    }
    assert checks(evaluate({**GOOD, "roles": roles}, LOGINS)) == {"role:backup", "role:monitor"}


def test_missing_role_and_missing_login_are_named():
    findings = evaluate(GOOD, {**LOGINS, "maintenance": "nobody", "backup": None})
    messages = {str(f) for f in findings}
    assert "error: role:maintenance: role 'nobody' does not exist" in messages
    assert "error: role:backup: the backup connection has no login" in messages
