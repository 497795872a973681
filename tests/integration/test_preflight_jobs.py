"""Preflight on real servers: each missing requirement, made by changing a real server,
fails its check with the documented fix; the fix, carried out as written, makes the
check pass; and a Fixia server as pgops installs it passes every check."""

from __future__ import annotations

import json
import re
import subprocess
from contextlib import contextmanager

import pytest

from pgops.config import parse_config
from pgops.database import migrations
from pgops.errors import ConfigError, TransientError
from pgops.monitoring import preflight
from pgops.postgres import sqlfiles
from pgops.postgres.cluster import FIXIA_SERVER_SETTINGS, as_server_user, find_bindir, free_port
from pgops.postgres.session import connect_params

from .servers import make_fixia, start_cluster

LINES = {"setup": {"lines": ["core", "fixia"]}}  # the Fixia servers run both migration lines
_STATEMENT = re.compile(r"(?:ALTER SYSTEM SET|ALTER ROLE|GRANT|CREATE EXTENSION|SELECT pg_reload_conf\(\))[^;]*;")


@pytest.fixture
def config(tmp_path):
    return parse_config({**LINES, "restore_verification": {"scratch_dir": str(tmp_path / "scratch")}})


@pytest.fixture(scope="module")
def server():
    """A Fixia server of this module's own (schema, roles, no data): tests change it and
    put it back."""
    cluster = start_cluster()
    try:
        yield make_fixia(cluster, scale=None)
    finally:
        cluster.destroy()


@pytest.fixture
def conns(server, monkeypatch):
    for key, value in server.airflow_conn_env().items():
        monkeypatch.setenv(key, value)
    return server


def outcome(report: preflight.Report) -> dict[tuple[str, str], str]:
    """(job, check) → verdict of every check that neither passed nor is not applicable."""
    return {(c.job, c.check): c.verdict for c in report.checks if c.verdict not in ("passed", "not_applicable")}


def check(report: preflight.Report, job: str, name: str) -> preflight.Check:
    (found,) = [c for c in report.checks if (c.job, c.check) == (job, name)]
    return found


def apply_sql(server, fix: str, *, role: str | None = None) -> None:
    """Run the SQL statements of a fix, as written, as the superuser (or ``role``)."""
    statements = _STATEMENT.findall(fix)
    assert statements, f"no SQL in the fix: {fix!r}"
    with server.superuser() as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        for statement in statements:
            conn.execute(statement)


def restart(cluster) -> None:
    cluster.stop()
    cluster.start()


# -- the whole story on one misconfigured server --------------------------------------------


MISCONFIGURED = {**{k: v for k, v in FIXIA_SERVER_SETTINGS.items() if not k.startswith(("shared_preload_libraries",
                                                                                        "pg_stat_statements"))},
                 "wal_level": "minimal", "max_wal_senders": 0, "max_slot_wal_keep_size": -1}


def test_a_misconfigured_server_fails_backups_and_each_documented_fix_repairs_it(monkeypatch, config):
    """wal_level=minimal, no WAL senders, an unbounded slot limit, no replication line in
    pg_hba.conf, no data checksums, pg_stat_statements not preloaded."""
    cluster = start_cluster(MISCONFIGURED, hba=["host all all 127.0.0.1/32 scram-sha-256"])
    try:
        cluster.stop()
        subprocess.run(as_server_user([str(cluster.bindir / "pg_checksums"), "--disable", "--pgdata",
                                       str(cluster.datadir)]), check=True, capture_output=True)
        cluster.start()
        server = make_fixia(cluster, scale=None)
        for key, value in server.airflow_conn_env().items():
            monkeypatch.setenv(key, value)

        report = preflight.run(config)
        assert not report.ok
        assert outcome(report) == {
            ("backup", "replication_connection"): "failed", ("backup", "wal_level"): "failed",
            ("backup", "max_wal_senders"): "failed", ("backup", "max_slot_wal_keep_size"): "failed",
            ("backup", "data_checksums"): "warning", ("monitoring", "pg_stat_statements"): "warning"}
        replication = check(report, "backup", "replication_connection")
        assert "number of requested standby connections exceeds max_wal_senders (currently 0)" in replication.message
        assert check(report, "backup", "wal_level").fix == ("ALTER SYSTEM SET wal_level = 'replica'; then restart "
                                                            "PostgreSQL (it takes effect only at server start)")
        assert check(report, "backup", "max_wal_senders").fix.startswith("ALTER SYSTEM SET max_wal_senders = 10;")
        slot = check(report, "backup", "max_slot_wal_keep_size")
        assert "-1 (unbounded)" in slot.message
        assert slot.fix.splitlines()[0] == ("ALTER SYSTEM SET max_slot_wal_keep_size = '8GB'; "
                                            "SELECT pg_reload_conf();")
        checksums = check(report, "backup", "data_checksums")
        assert f"pg_checksums --enable --pgdata {cluster.datadir}" in checksums.fix
        statements = check(report, "monitoring", "pg_stat_statements")
        assert statements.fix == ("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'; then restart "
                                  "PostgreSQL"), "the extension exists already: only the preload is missing"
        with pytest.raises(ConfigError, match=r"backup/max_slot_wal_keep_size: .*\n    fix: ALTER SYSTEM SET "
                                              r"max_slot_wal_keep_size = '8GB'"):
            preflight.enforce(report)

        # the settings' fixes as written, one restart
        for name in ("wal_level", "max_wal_senders", "max_slot_wal_keep_size"):
            apply_sql(server, check(report, "backup", name).fix)
        apply_sql(server, statements.fix)
        restart(cluster)
        report = preflight.run(config)
        assert outcome(report) == {("backup", "replication_connection"): "failed",
                                   ("backup", "data_checksums"): "warning"}
        replication = check(report, "backup", "replication_connection")
        assert "no pg_hba.conf entry for replication connection" in replication.message
        fix = replication.fix.splitlines()
        assert "host replication pgops_backup 127.0.0.1/32 scram-sha-256" in fix
        assert fix[-1] == "then reload: SELECT pg_reload_conf();"

        # the pg_hba.conf line, then the reload
        hba = cluster.datadir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "host replication pgops_backup 127.0.0.1/32 scram-sha-256\n")
        apply_sql(server, replication.fix)
        report = preflight.run(config)
        assert outcome(report) == {("backup", "data_checksums"): "warning"}
        assert report.ok, "checksums off is a warning only"

        # checksums: the offline command, with the server stopped
        command = re.search(r"pg_checksums --enable --pgdata (\S+)", checksums.fix).group(1)
        cluster.stop()
        subprocess.run(as_server_user([str(cluster.bindir / "pg_checksums"), "--enable", "--pgdata", command]),
                       check=True, capture_output=True)
        cluster.start()
        report = preflight.run(config)
        assert outcome(report) == {}
        preflight.enforce(report)
    finally:
        cluster.destroy()


# -- on a well set-up server --------------------------------------------------------------


def test_a_fixia_server_as_pgops_installs_it_passes(conns, config):
    report = preflight.run(config)
    assert outcome(report) == {}
    assert report.ok
    assert {(c.job, c.check) for c in report.checks if c.verdict == "not_applicable"} == {
        ("maintenance", "partitions"), ("maintenance", "materialized_views")}
    assert check(report, "backup", "replication_connection").message.startswith(
        "pgops_backup connects over the replication protocol (IDENTIFY_SYSTEM: system ")
    assert json.loads(json.dumps(report.to_json())) == report.to_json()
    assert "the database is ready for pgops" in report.table().splitlines()[-1]


def test_revoked_grants_fail_with_the_grant_that_restores_them(conns, config):
    with conns.superuser() as conn:
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() FROM pgops_backup")
        conn.execute("REVOKE INSERT ON pgops.backup_sentinel FROM pgops_backup")
        conn.execute("REVOKE SELECT ON fixia.payments FROM pgops_backup")
        conn.execute("REVOKE USAGE ON SCHEMA pgops FROM pgops_maintenance")
    try:
        report = preflight.run(config)
        assert outcome(report) == {("backup", "execute:pg_switch_wal()"): "failed",
                                   ("backup", "sentinel_grants"): "failed",
                                   ("backup", "count_table:fixia.payments"): "failed",
                                   ("maintenance", "schema_usage"): "failed"}
        fixes = {name: check(report, job, name).fix for job, name in outcome(report)}
        assert fixes["execute:pg_switch_wal()"] == ("GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO "
                                                    "pgops_backup;")
        assert fixes["sentinel_grants"].endswith("GRANT INSERT ON TABLE pgops.backup_sentinel TO pgops_backup;")
        assert fixes["count_table:fixia.payments"].endswith("GRANT SELECT ON TABLE fixia.payments TO pgops_backup;")
        assert fixes["schema_usage"].endswith("GRANT USAGE ON SCHEMA pgops TO pgops_maintenance;")
        for name, fix in fixes.items():
            # as each fix says: pgops' owner role for pgops' objects, a superuser (or the table's owner) otherwise
            apply_sql(conns, fix, role="pgops_owner" if name in ("sentinel_grants", "schema_usage") else None)
        assert outcome(preflight.run(config)) == {}
    finally:
        with conns.superuser() as conn:
            conn.execute("GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO pgops_backup")
            conn.execute("GRANT INSERT ON pgops.backup_sentinel TO pgops_backup")
            conn.execute("GRANT SELECT ON fixia.payments TO pgops_backup")
            conn.execute("GRANT USAGE ON SCHEMA pgops TO pgops_maintenance")


def test_a_monitoring_role_without_pg_monitor_cannot_read_the_settings_and_says_so(conns, config):
    with conns.superuser() as conn:
        conn.execute("REVOKE pg_monitor FROM pgops_monitor")
    try:
        report = preflight.run(config)
        role = check(report, "monitoring", "role")
        assert role.verdict == "failed" and role.fix == "GRANT pg_monitor TO pgops_monitor;"
        assert check(report, "monitoring", "connection").verdict == "passed"
        wal_level = check(report, "backup", "wal_level")
        assert wal_level.verdict == "failed", "a check that could not run has failed"
        assert wal_level.message.startswith("could not be checked: server could not be read: ")
        assert "pg_read_all_settings" in wal_level.message
        apply_sql(conns, role.fix)
        assert outcome(preflight.run(config)) == {}
    finally:
        with conns.superuser() as conn:
            conn.execute("GRANT pg_monitor TO pgops_monitor")


def test_a_superuser_job_role_is_refused(conns, config):
    with conns.superuser() as conn:
        conn.execute("ALTER ROLE pgops_maintenance SUPERUSER")
        conn.execute("ALTER ROLE pgops_backup NOREPLICATION")
    try:
        report = preflight.run(config)
        assert outcome(report) == {("maintenance", "role"): "failed", ("backup", "role"): "failed",
                                   ("backup", "replication_connection"): "failed"}
        assert check(report, "maintenance", "role").fix == "ALTER ROLE pgops_maintenance NOSUPERUSER;"
        assert check(report, "backup", "role").fix == "ALTER ROLE pgops_backup REPLICATION;"
        assert "must be superuser or replication role" in check(report, "backup", "replication_connection").message
        apply_sql(conns, check(report, "maintenance", "role").fix)
        apply_sql(conns, check(report, "backup", "role").fix)
        assert outcome(preflight.run(config)) == {}
    finally:
        with conns.superuser() as conn:
            conn.execute("ALTER ROLE pgops_maintenance NOSUPERUSER")
            conn.execute("ALTER ROLE pgops_backup REPLICATION")


def test_a_connection_that_logs_in_as_another_role_is_named(conns, config, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_MAINTENANCE", conns.airflow_conn_env()["AIRFLOW_CONN_PGOPS_MONITOR"])
    report = preflight.run(config)
    assert outcome(report) == {("maintenance", "connection"): "failed"}
    connection = check(report, "maintenance", "connection")
    assert connection.message == ("connection 'pgops_maintenance' logs in as 'pgops_monitor', not as "
                                  "'pgops_maintenance' (setup.maintenance_role)")


def test_a_wrong_password_is_named_with_its_connection(conns, config, monkeypatch):
    env = json.loads(conns.airflow_conn_env()["AIRFLOW_CONN_PGOPS_BACKUP"])
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_BACKUP", json.dumps({**env, "password": "wrong"}))
    report = preflight.run(config)
    assert outcome(report) == {("backup", "connection"): "failed", ("backup", "replication_connection"): "failed"}
    assert 'password authentication failed for user "pgops_backup"' in check(report, "backup", "connection").message
    assert check(report, "backup", "connection").fix.startswith("set the password of Airflow connection pgops_backup")


def test_an_unreachable_server_is_a_transient_failure(conns, config, monkeypatch):
    env = json.loads(conns.airflow_conn_env()["AIRFLOW_CONN_PGOPS_MONITOR"])
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_MONITOR", json.dumps({**env, "port": free_port()}))
    report = preflight.run(config)
    assert check(report, "monitoring", "connection").verdict == "failed"
    assert check(report, "backup", "wal_level").message.startswith(
        "could not be checked: nothing could be read as the monitoring role (why: monitoring/connection)")
    assert all(c.transient for c in report.failures)
    with pytest.raises(TransientError):
        preflight.enforce(report)


def test_restore_verification_needs_its_binaries_and_a_scratch_directory(conns, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pg_ctl").symlink_to(find_bindir() / "pg_ctl")
    monkeypatch.setenv("PGOPS_PG_BINDIR", str(bindir))
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    config = parse_config({**LINES, "restore_verification": {"scratch_dir": str(not_a_dir / "scratch")}})
    report = preflight.run(config)
    assert outcome(report) == {("restore_verification", "binaries"): "failed",
                               ("restore_verification", "scratch_dir"): "failed"}
    assert f"pg_verifybackup, pg_amcheck not found (or not executable) in {bindir}" in \
        check(report, "restore_verification", "binaries").message
    scratch = check(report, "restore_verification", "scratch_dir")
    assert f"{not_a_dir} is not a directory" in scratch.message
    assert scratch.fix.startswith(f"mkdir -p {not_a_dir / 'scratch'}")


def test_a_count_table_that_does_not_exist_is_a_warning(conns, tmp_path):
    config = parse_config({**LINES, "restore_verification": {
        "scratch_dir": str(tmp_path), "count_tables": ["fixia.users", "fixia.nosuch", "nosuch.table"]}})
    report = preflight.run(config)
    assert outcome(report) == {("backup", "count_table:fixia.nosuch"): "warning",
                               ("backup", "count_table:nosuch.table"): "warning"}
    assert report.ok


def test_a_tablespace_fails_backups(conns, config):
    location = conns.cluster.base / "ts_preflight"
    location.mkdir()
    from pgops.postgres.cluster import chown_to_server_user

    chown_to_server_user(location)
    with conns.superuser() as conn:
        conn.execute(f"CREATE TABLESPACE ts_preflight LOCATION '{location}'")
    try:
        report = preflight.run(config)
        assert outcome(report) == {("backup", "tablespaces"): "failed"}
        tablespace = check(report, "backup", "tablespaces")
        assert f"ts_preflight ({location})" in tablespace.message
        assert tablespace.fix.splitlines()[-1] == "DROP TABLESPACE ts_preflight;"
    finally:
        with conns.superuser() as conn:
            conn.execute("DROP TABLESPACE IF EXISTS ts_preflight")


# -- migrations, on a server of their own ---------------------------------------------------


@contextmanager
def own_fixia(monkeypatch):
    cluster = start_cluster()
    try:
        server = make_fixia(cluster, scale=None)
        for key, value in server.airflow_conn_env().items():
            monkeypatch.setenv(key, value)
        yield server
    finally:
        cluster.destroy()


def _superuser_factory(server, config):
    return lambda: connect_params(server.cluster.superuser_params(server.dbname), application_name="pgops:test",
                                  statement_timeout_s=60, autocommit=False)


def test_a_database_behind_its_migrations_fails_with_pgops_db_upgrade(monkeypatch, config):
    with own_fixia(monkeypatch) as server:
        migrations.downgrade(config, _superuser_factory(server, config), "base")
        report = preflight.run(config)
        assert outcome(report) == {
            ("backup", "migration_level"): "failed", ("backup", "migration_files"): "failed",
            ("backup", "sentinel_table"): "failed", ("backup", "sentinel_grants"): "failed",
            ("restore_verification", "sentinel_table"): "failed", ("maintenance", "schema_usage"): "failed"}
        level = check(report, "backup", "migration_level")
        assert "the monitoring role (pgops_monitor) has no USAGE on schema pgops" in level.message
        assert level.fix.splitlines()[0] == "pgops db upgrade"
        assert check(report, "backup", "sentinel_table").fix == "pgops db upgrade"
        migrations.upgrade(config, _superuser_factory(server, config))  # what pgops db upgrade runs
        assert outcome(preflight.run(config)) == {}


def test_a_database_behind_by_a_line_names_it(monkeypatch, config):
    """The Fixia line's migration undone (its version row deleted): core is at its head,
    fixia is not."""
    with own_fixia(monkeypatch) as server:
        with server.superuser() as conn:
            versions = [v for (v,) in conn.execute("SELECT version_num FROM pgops.alembic_version")]
            conn.execute("DELETE FROM pgops.alembic_version")
            conn.execute("INSERT INTO pgops.alembic_version (version_num) SELECT 'core_0001'")
        report = preflight.run(config)
        assert outcome(report) == {("backup", "migration_level"): "failed"}, versions
        level = check(report, "backup", "migration_level")
        assert level.message == ("schema pgops is behind the heads of core+fixia (setup.lines): fixia: at nothing, "
                                 "head is fixia_0001")
        assert level.fix == "pgops db upgrade"
        core_only = parse_config({"setup": {"lines": ["core"]}, "restore_verification": {
            "scratch_dir": config.restore_verification.scratch_dir}})
        assert outcome(preflight.run(core_only)) == {}, "a database that is not Fixia's needs core only"


def test_a_dropped_sentinel_table_and_a_changed_migration_are_named(monkeypatch, config):
    with own_fixia(monkeypatch) as server:
        with server.superuser() as conn:
            conn.execute("DROP TABLE pgops.backup_sentinel")
            conn.execute("UPDATE pgops.migration_checksums SET sha256 = repeat('0', 64) WHERE revision LIKE 'core%'")
        report = preflight.run(config)
        assert outcome(report) == {
            ("backup", "sentinel_table"): "failed", ("backup", "sentinel_grants"): "failed",
            ("restore_verification", "sentinel_table"): "failed", ("backup", "migration_files"): "failed"}
        changed = check(report, "backup", "migration_files")
        assert re.search(r"core_\w+: its files changed after it was applied", changed.message)
        fix = check(report, "backup", "sentinel_table").fix
        assert "include/sql/migrations/core/0001_schema.up.sql" in fix and "pgops_owner" in fix

        # the fix as it says: those steps of the migration, as the owner role
        steps = dict(sqlfiles.steps("migrations/core/0001_schema.up.sql"))
        with server.superuser() as conn:
            conn.execute("SET ROLE pgops_owner")
            with conn.transaction():
                for job, role in config.setup.roles().items():
                    conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", [f"pgops.{job}_role", role])
                for step in ("sentinel", "sentinel_index", "grants"):
                    conn.execute(steps[step])
        assert outcome(preflight.run(config)) == {("backup", "migration_files"): "failed"}
