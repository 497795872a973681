"""The set-up and teardown planners, pg_hba matching, and the migration files' rules."""

from __future__ import annotations

import re

import pytest

from pgops.config import parse_config
from pgops.database import migrations, setup
from pgops.errors import ConfigError
from pgops.postgres import sqlfiles

CONFIG = parse_config({})
ROLES = CONFIG.setup.roles()


def ours(job: str, **attrs) -> dict:
    wanted = {"superuser": False, "login": True, "replication": job == "backup", "createdb": False,
              "createrole": False, "bypassrls": False, "pg_monitor": job == "monitor", "connect": True,
              "comment": f"pgops {job} role"}
    return {**wanted, **attrs}


def empty_facts(**extra) -> dict:
    facts = {"database": "shop", "superuser": True, "client_address": "10.1.2.3", "roles": {},
             "pgops_schema_owner": None, "backup_functions": {},
             "count_tables": {t: {"exists": True, "schema": t.split(".")[0], "usage": False, "select": False}
                              for t in CONFIG.restore_verification.count_tables},
             "wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
             "max_slot_wal_keep_size": "8GB", "shared_preload_libraries": "pg_stat_statements",
             "hba": [{"type": "host", "database": ["all"], "user_name": ["all"], "address": "10.0.0.0",
                      "netmask": "255.0.0.0", "auth_method": "scram-sha-256", "error": None},
                     {"type": "host", "database": ["replication"], "user_name": ["all"], "address": "10.0.0.0",
                      "netmask": "255.0.0.0", "auth_method": "scram-sha-256", "error": None}],
             "owned_elsewhere": [], "depends_on_pgops": []}
    facts.update(extra)
    return facts


def done_facts(**extra) -> dict:
    """The facts after a complete set-up."""
    done = {"roles": {name: ours(job) for job, name in ROLES.items()}, "pgops_schema_owner": ROLES["owner"],
            "backup_functions": {f: True for f in setup.BACKUP_FUNCTIONS},
            "count_tables": {t: {"exists": True, "schema": t.split(".")[0], "usage": True, "select": True}
                             for t in CONFIG.restore_verification.count_tables}}
    return empty_facts(**{**done, **extra})


def statements(plan) -> list[str]:
    return [step.sql() for step in plan.steps]


def test_a_fresh_database_gets_the_four_roles_the_schema_and_per_object_grants():
    sql = "\n".join(statements(setup.plan_setup(empty_facts(), CONFIG)))
    for name in ROLES.values():
        assert f'CREATE ROLE "{name}" LOGIN' in sql
        assert f'GRANT CONNECT ON DATABASE "shop" TO "{name}"' in sql
        assert f'COMMENT ON ROLE "{name}" IS \'pgops ' in sql
    assert 'CREATE ROLE "pgops_backup" LOGIN REPLICATION NOSUPERUSER' in sql
    assert 'GRANT pg_monitor TO "pgops_monitor"' in sql
    assert 'CREATE SCHEMA pgops AUTHORIZATION "pgops_owner"' in sql
    assert 'GRANT SELECT ON TABLE "fixia"."users" TO "pgops_backup"' in sql
    assert sql.count('GRANT USAGE ON SCHEMA "fixia" TO "pgops_backup"') == 1
    assert "GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO \"pgops_backup\"" in sql


def test_set_up_never_revokes_from_public_nor_changes_owners():
    for facts in (empty_facts(), done_facts(), empty_facts(roles={"pgops_backup": ours("backup", superuser=True)})):
        sql = "\n".join(statements(setup.plan_setup(facts, CONFIG))).upper()
        assert "REVOKE" not in sql and "OWNER TO" not in sql and "PUBLIC" not in sql
    whole = sqlfiles.load("setup/setup.sql").upper()
    assert "REVOKE" not in re.sub(r"^--.*$", "", whole, flags=re.MULTILINE)


def test_a_second_set_up_plans_nothing():
    plan = setup.plan_setup(done_facts(), CONFIG)
    assert plan.steps == [] and plan.refusals == []
    assert "nothing to do" in plan.render("x")


def test_a_role_pgops_did_not_create_is_refused_not_changed():
    facts = empty_facts(roles={"pgops_monitor": {**ours("monitor"), "comment": None, "pg_monitor": False}})
    plan = setup.plan_setup(facts, CONFIG)
    assert any("'pgops_monitor' (setup.monitor_role) exists and was not created by pgops" in r for r in plan.refusals)
    assert not any("pgops_monitor" in s for s in statements(plan))
    with pytest.raises(ConfigError, match="nothing was changed"):
        setup.apply(None, plan)  # refused before any statement


def test_a_role_of_ours_that_drifted_is_put_back():
    facts = done_facts(roles={**{n: ours(j) for j, n in ROLES.items()},
                              "pgops_backup": ours("backup", superuser=True, replication=False)})
    assert statements(setup.plan_setup(facts, CONFIG)) == [
        'ALTER ROLE "pgops_backup" LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS']


def test_a_schema_pgops_of_someone_else_is_refused():
    plan = setup.plan_setup(empty_facts(pgops_schema_owner="app_owner"), CONFIG)
    assert any("schema pgops exists, owned by 'app_owner'" in r for r in plan.refusals)


def test_configured_role_names_are_used_and_quoted():
    config = parse_config({"setup": {"backup_role": "ops_bk", "monitor_role": "ops_mon",
                                     "maintenance_role": "ops_maint", "owner_role": "ops_owner"}})
    sql = "\n".join(statements(setup.plan_setup(empty_facts(), config)))
    assert 'CREATE ROLE "ops_bk" LOGIN REPLICATION' in sql and "pgops_backup" not in sql


def test_missing_count_table_is_a_note_not_a_grant():
    facts = empty_facts(count_tables={"shop.gone": {"exists": False, "schema": "shop", "usage": None, "select": None}})
    plan = setup.plan_setup(facts, CONFIG)
    assert not any("gone" in s for s in statements(plan))
    assert any("shop.gone, which does not exist" in n for n in plan.notes)


def test_hba_lines_are_printed_only_when_missing_and_exactly():
    assert not [n for n in setup.plan_setup(done_facts(), CONFIG).notes if "pg_hba" in n]
    facts = done_facts(hba=[{"type": "host", "database": ["all"], "user_name": ["all"], "address": "127.0.0.1",
                             "netmask": "255.255.255.255", "auth_method": "scram-sha-256", "error": None}])
    notes = [n for n in setup.plan_setup(facts, CONFIG).notes if "pg_hba" in n]
    assert len(notes) == 2
    assert "host    replication    pgops_backup    10.1.2.3/32    scram-sha-256" in notes[0]
    assert "host    shop    pgops_backup,pgops_monitor,pgops_maintenance,pgops_owner    10.1.2.3/32" in notes[1]
    override = setup.plan_setup(facts, CONFIG, client_address="192.168.0.0/24").notes
    assert any("host    replication    pgops_backup    192.168.0.0/24" in n for n in override)


@pytest.mark.parametrize(("rules", "admitted"), [
    ([("replication", "all", "10.0.0.0", "255.0.0.0", "scram-sha-256")], True),
    ([("replication", "pgops_backup", "10.1.2.3", "255.255.255.255", "scram-sha-256")], True),
    ([("replication", "other", "10.0.0.0", "255.0.0.0", "scram-sha-256")], False),
    ([("all", "all", "10.0.0.0", "255.0.0.0", "scram-sha-256")], False),  # "all" is not replication
    ([("replication", "all", "127.0.0.1", "255.255.255.255", "scram-sha-256")], False),
    ([("replication", "all", "10.0.0.0", "255.0.0.0", "reject"),
      ("replication", "all", "10.0.0.0", "255.0.0.0", "scram-sha-256")], False),  # first match wins
    ([("replication", "all", "samenet", None, "md5")], True),
])
def test_hba_first_matching_rule_decides(rules, admitted):
    rows = [{"type": "host", "database": [db], "user_name": [user], "address": addr, "netmask": mask,
             "auth_method": method, "error": None} for db, user, addr, mask, method in rules]
    assert setup.hba_admits(rows, "shop", "pgops_backup", "10.1.2.3", replication=True) is admitted


def test_unbounded_slot_wal_and_settings_are_printed_as_fixes():
    notes = setup.plan_setup(done_facts(wal_level="minimal", max_wal_senders=0, max_slot_wal_keep_size="-1",
                                        shared_preload_libraries=""), CONFIG).notes
    text = "\n".join(notes)
    assert "ALTER SYSTEM SET wal_level = 'replica'" in text
    assert "ALTER SYSTEM SET max_wal_senders = 10" in text
    assert "ALTER SYSTEM SET max_slot_wal_keep_size = '64GB'" in text
    assert "shared_preload_libraries = 'pg_stat_statements'" in text


def test_teardown_refuses_while_a_pgops_role_owns_application_objects():
    plan = setup.plan_teardown(done_facts(owned_elsewhere=[{"object": "table shop.orders", "role": "pgops_maintenance"}]),
                               CONFIG)
    assert any("table shop.orders is owned by pgops_maintenance" in r for r in plan.refusals)
    plan = setup.plan_teardown(done_facts(), CONFIG)
    sql = statements(plan)
    assert sql[0] == "DROP SCHEMA pgops CASCADE" and sql[-1] == 'DROP ROLE "pgops_owner"'
    assert 'DROP OWNED BY "pgops_backup"' in sql


def test_teardown_leaves_roles_pgops_did_not_create():
    facts = done_facts(roles={**{n: ours(j) for j, n in ROLES.items()}, "pgops_monitor": {**ours("monitor"), "comment": "x"}})
    assert not any("pgops_monitor" in s for s in statements(setup.plan_teardown(facts, CONFIG)))


# -- migrations -----------------------------------------------------------------------


def test_every_migration_has_both_files_a_locks_header_and_its_line():
    revs = migrations.revisions()
    assert {r.line for r in revs} == {"core", "fixia"}
    for rev in revs:
        up, down = migrations.sql_files(rev.sql_name)
        for path in (up, down):
            text = path.read_text()
            assert re.search(r"^-- locks: \S", text, re.MULTILINE), f"{path} says nothing about its locks"
            assert sqlfiles.steps(str(path.relative_to(sqlfiles.SQL_ROOT)))
        assert rev.sql_name.startswith(f"{rev.line}/"), rev


def test_index_builds_outside_schema_pgops_are_concurrent_and_outside_a_transaction():
    for rev in migrations.revisions():
        for path in migrations.sql_files(rev.sql_name):
            text = re.sub(r"^--.*$", "", path.read_text(), flags=re.MULTILINE)
            for match in re.finditer(r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?P<rest>.*?)\s+ON\s+(?P<table>[\w.\"]+)", text,
                                     re.IGNORECASE | re.DOTALL):
                if not match.group("table").startswith("pgops."):
                    assert "CONCURRENTLY" in match.group("rest").upper(), f"{path}: {match.group(0)}"
                    assert migrations.runs_outside_transaction(path.read_text()), path
                if "CONCURRENTLY" in match.group("rest").upper():  # a failed try left an invalid index
                    name = match.group("rest").split()[-1]
                    assert re.search(rf"DROP INDEX CONCURRENTLY IF EXISTS [\w.]*{name}\b", text[:match.start()]), path
            if "CONCURRENTLY" in text.upper():
                assert migrations.runs_outside_transaction(path.read_text()), path


def test_heads_follow_the_configured_lines():
    core = parse_config({})
    both = parse_config({"setup": {"lines": ["fixia", "core"]}})
    assert both.setup.lines == ["core", "fixia"]
    assert migrations.heads(core.setup.lines) == {"core_0001"}
    assert migrations.heads(both.setup.lines) == {"core_0001", "fixia_0001"}
    assert migrations.status(core, set())["behind"] == ["core: at nothing, head is core_0001"]
    assert migrations.status(both, {"core_0001", "fixia_0001"})["behind"] == []
    # Alembic keeps only fixia_0001 once both are applied (it depends on core_0001)
    assert migrations.status(both, {"fixia_0001"}) == {"expected": ["core_0001", "fixia_0001"],
                                                       "applied": ["core_0001", "fixia_0001"], "behind": []}
    assert migrations.status(both, {"core_0001"})["behind"] == ["fixia: at nothing, head is fixia_0001"]
    with pytest.raises(ConfigError, match="setup.lines"):
        migrations._target(core, "fixia@head")


def test_a_changed_migration_file_is_named(tmp_path, monkeypatch):
    import shutil

    rev = next(r for r in migrations.revisions() if r.revision == "core_0001")
    recorded = {"core_0001": migrations.file_checksum(rev.path, rev.sql_name)}
    assert migrations.changed_migrations(recorded) == []
    copy = tmp_path / "sql"
    shutil.copytree(sqlfiles.SQL_ROOT, copy)
    up = copy / "migrations" / f"{rev.sql_name}.up.sql"
    up.write_text(up.read_text() + "\n-- an edit\n")
    monkeypatch.setattr(sqlfiles, "SQL_ROOT", copy)
    problems = migrations.changed_migrations(recorded)
    assert len(problems) == 1 and problems[0].startswith("core_0001: its files changed after it was applied")
    assert migrations.changed_migrations({"core_0099": "x"})[0].startswith("core_0099: applied here, but no such")


@pytest.mark.parametrize(("setup_section", "message"), [
    ({"lines": ["fixia"]}, "must include 'core'"),
    ({"lines": ["core", "core"]}, "lists a line twice"),
    ({"lines": ["core", "shop"]}, "Input should be 'core' or 'fixia'"),
    ({"backup_role": "pg_backup"}, "reserved by PostgreSQL"),
    ({"backup_role": "Bad-Name"}, "role names are lower-case"),
    ({"backup_role": "same", "monitor_role": "same"}, "four different names"),
])
def test_bad_setup_configuration_is_named(setup_section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"setup": setup_section})


def test_a_refused_plan_prints_no_statement_to_run_by_mistake():
    plan = setup.plan_teardown(done_facts(owned_elsewhere=[{"object": "table shop.orders", "role": "pgops_maintenance"}]),
                               CONFIG)
    assert plan.steps  # planned, but not printed
    script = plan.render("teardown")
    assert "DROP" not in script.replace("-- ", "") or all(
        line.startswith("--") for line in script.splitlines() if "DROP" in line)
    assert "BEGIN;" not in script and "\\quit" in script


def test_the_offline_script_is_what_psql_runs():
    """Alembic's offline mode doubles a '%' (pyformat); no migration may contain one."""
    both = parse_config({"setup": {"lines": ["core", "fixia"]}})
    script = migrations.offline_sql(both, None)
    assert "%%" not in script
    assert "INSERT INTO pgops.alembic_version (version_num) VALUES ('core_0001')" in script
    assert "fixia_0001" in script and script.startswith("-- pgops migrations")


def test_teardown_refuses_while_application_objects_depend_on_pgops():
    plan = setup.plan_teardown(done_facts(depends_on_pgops=["view shop.last_backups"]), CONFIG)
    assert plan.refusals == ["view shop.last_backups depends on an object in schema pgops: DROP SCHEMA pgops "
                             "CASCADE would drop it too; drop or change it first"]


def test_an_unknown_revision_is_a_config_error_not_a_traceback():
    with pytest.raises(ConfigError, match="core_9999.*pgops db history lists the revisions"):
        migrations.offline_sql(CONFIG, "core_9999")


@pytest.mark.parametrize(("action", "revision", "message"), [
    ("downgrade", None, "a downgrade needs a revision"),
    ("stamp", None, "unknown migration action 'stamp'"),
])
def test_a_bad_migration_action_is_refused_before_connecting(action, revision, message):
    def never():
        raise AssertionError("connected")

    with pytest.raises(ConfigError, match=message):
        migrations.run_action(CONFIG, never, action, revision)
