"""pgops installed on a database that is not Fixia's, through the real commands:
``pgops db setup`` (as a superuser), ``pgops db upgrade`` (as pgops' owner role), then a
full backup, WAL shipping and a restore drill, with the application's roles, privileges
and owners exactly as before. Also: idempotence, the downgrade round trip, a changed
migration refused, each role refused what it must not do, and teardown."""

from __future__ import annotations

import json
import os
import shutil

import psycopg
import pytest
import yaml

from pgops import cli
from pgops.backup.basebackup import run_full_backup
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.database import setup
from pgops.devstack import seed
from pgops.postgres import sqlfiles
from pgops.postgres.session import connect_params
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.verification import verify_restore

from .servers import start_cluster
from .test_restore import shared_tempdir

ROLES = parse_config({}).setup.roles()
PGOPS = sorted(ROLES.values())

# The catalog as the application sees it: every role but pgops' own, their memberships,
# default privileges, and the owner and ACL (expanded from the defaults) of every
# relation, schema, function and database, leaving out the entries granted to pgops'
# roles and everything in schema pgops.
APPLICATION_CATALOG = """
WITH acl(kind, name, owner, entries) AS (
    SELECT 'relation', n.nspname || '.' || c.relname, c.relowner,
           pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault(
               (CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner)))
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pgops', 'pg_toast') AND n.nspname NOT LIKE 'pg\\_temp%%'
    UNION ALL
    SELECT 'schema', n.nspname, n.nspowner,
           pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n'::"char", n.nspowner)))
    FROM pg_catalog.pg_namespace n WHERE n.nspname <> 'pgops'
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, p.proowner,
           pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f'::"char", p.proowner)))
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname <> 'pgops'
    UNION ALL
    SELECT 'database', d.datname, d.datdba,
           pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d'::"char", d.datdba)))
    FROM pg_catalog.pg_database d
)
SELECT pg_catalog.json_build_object(
  'roles', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(rolname, rolsuper, rolinherit, rolcreaterole,
                rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil) ORDER BY rolname)
            FROM pg_catalog.pg_roles WHERE rolname <> ALL (%(pgops)s)),
  'members', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(r.rolname, m.rolname, a.admin_option)
                ORDER BY r.rolname, m.rolname)
              FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles r ON r.oid = a.roleid
              JOIN pg_catalog.pg_roles m ON m.oid = a.member WHERE m.rolname <> ALL (%(pgops)s)),
  'default_acl', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(pg_catalog.pg_get_userbyid(d.defaclrole),
                    d.defaclnamespace::regnamespace::text, d.defaclobjtype, d.defaclacl::text)
                    ORDER BY d.defaclrole, d.defaclnamespace, d.defaclobjtype)
                  FROM pg_catalog.pg_default_acl d
                  WHERE pg_catalog.pg_get_userbyid(d.defaclrole) <> ALL (%(pgops)s)),
  'objects', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(kind, name, owner, grants) ORDER BY kind, name)
              FROM (SELECT kind, name, pg_catalog.pg_get_userbyid(owner) AS owner,
                           pg_catalog.array_agg(g.text ORDER BY g.text) FILTER (WHERE g.text IS NOT NULL) AS grants
                    FROM acl, LATERAL (SELECT CASE WHEN (entries).grantee = 0 THEN 'PUBLIC'
                                                   ELSE pg_catalog.pg_get_userbyid((entries).grantee) END AS grantee) w,
                         LATERAL (SELECT CASE WHEN w.grantee <> ALL (%(pgops)s)
                                         THEN w.grantee || ':' || (entries).privilege_type || ':'
                                              || (entries).is_grantable END AS text) g
                    GROUP BY kind, name, owner) o))
"""

# Everything, pgops' own objects included (for "a second run changes nothing").
WHOLE_CATALOG = """
SELECT pg_catalog.json_build_object(
  'roles', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(rolname, rolsuper, rolcanlogin, rolreplication,
                pg_catalog.shobj_description(oid, 'pg_authid')) ORDER BY rolname) FROM pg_catalog.pg_roles),
  'members', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(roleid::regrole::text, member::regrole::text)
                ORDER BY roleid::regrole::text, member::regrole::text) FROM pg_catalog.pg_auth_members),
  'relations', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(c.oid::regclass::text, c.relowner::regrole::text,
                  c.relacl::text) ORDER BY c.oid::regclass::text) FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
  'schemas', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(nspname, nspowner::regrole::text, nspacl::text)
                ORDER BY nspname) FROM pg_catalog.pg_namespace),
  'functions', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(oid::regprocedure::text, proacl::text)
                ORDER BY oid::regprocedure::text) FROM pg_catalog.pg_proc WHERE proacl IS NOT NULL),
  'databases', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(datname, datacl::text) ORDER BY datname)
                FROM pg_catalog.pg_database),
  'default_acl', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(defaclrole::regrole::text, defaclacl::text)
                  ORDER BY defaclrole::regrole::text, defaclnamespace, defaclobjtype) FROM pg_catalog.pg_default_acl),
  'versions', (SELECT pg_catalog.json_agg(version_num ORDER BY version_num) FROM pgops.alembic_version)
)
"""


def snapshot(cluster, query: str = APPLICATION_CATALOG) -> dict:
    with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
        return conn.execute(query, {"pgops": PGOPS}).fetchone()[0]


def make_shop(cluster) -> None:
    """An application database of its own: its owner role logs in through PUBLIC's
    CONNECT (nothing granted to it explicitly), owns its schema and tables, and gives a
    reader role SELECT, also through default privileges."""
    with connect_params(cluster.superuser_params(), application_name="test", statement_timeout_s=60) as conn:
        conn.execute("CREATE DATABASE shop")
        conn.execute("CREATE ROLE shop_owner LOGIN PASSWORD 'shop-secret'")
        conn.execute("CREATE ROLE shop_reader NOLOGIN")
    with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
        conn.execute("CREATE SCHEMA shop AUTHORIZATION shop_owner")
        conn.execute("SET ROLE shop_owner")
        conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA shop GRANT SELECT ON TABLES TO shop_reader")
        conn.execute("CREATE TABLE shop.orders (id bigserial PRIMARY KEY, item text NOT NULL,"
                     " created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("CREATE INDEX orders_created_at ON shop.orders (created_at)")
        conn.execute("CREATE TABLE shop.customers (id bigserial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO shop.orders (item) SELECT 'item ' || g FROM generate_series(1, 500) g")


def conn_env(cluster, passwords: dict[str, str]) -> dict[str, str]:
    conn_ids = {"backup": "pgops_backup", "monitor": "pgops_monitor", "maintenance": "pgops_maintenance",
                "owner": "pgops_owner"}
    return {f"AIRFLOW_CONN_{conn_ids[job].upper()}": json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": cluster.port, "login": ROLES[job],
        "password": passwords[ROLES[job]], "schema": "shop"}) for job in ROLES}


def superuser_dsn(cluster) -> str:
    return f"host={cluster.socket_dir} port={cluster.port} user=postgres dbname=shop"


def pgops(*argv: str) -> int:
    return cli.main(list(argv))


@pytest.fixture(scope="module")
def shop():
    saved = dict(os.environ)
    base = shared_tempdir("pgops-shop-")
    cluster = start_cluster()
    try:
        make_shop(cluster)
        raw = {"repository": {"url": str(base / "repo")}, "backup": {"spool_dir": str(base / "spool")},
               "restore_verification": {"scratch_dir": str(base / "scratch"), "count_tables": ["shop.orders"]}}
        (base / "pgops.yaml").write_text(yaml.safe_dump(raw))
        os.environ["PGOPS_CONFIG"] = str(base / "pgops.yaml")
        yield cluster, parse_config(raw), base
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(shop):
    """The shop database with pgops installed through the commands, and the operator's
    passwords set; yields the catalog as it was before, too."""
    cluster, config, base = shop
    before = snapshot(cluster)
    assert pgops("db", "setup", "--dsn", superuser_dsn(cluster)) == 0
    passwords = {name: f"pw-{name}" for name in PGOPS}
    with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
        for name, password in passwords.items():  # the operator's secrets store, in production
            seed.set_role_password(conn, name, password)
    os.environ.update(conn_env(cluster, passwords))
    assert pgops("db", "upgrade") == 0
    return cluster, config, base, before, passwords


def test_print_sql_shows_the_plan_and_changes_nothing(shop, capsys):
    cluster, _config, _base = shop
    before = snapshot(cluster)
    assert pgops("db", "setup", "--print-sql", "--dsn", superuser_dsn(cluster)) == 0
    out = capsys.readouterr().out
    assert 'CREATE ROLE "pgops_backup" LOGIN REPLICATION' in out
    assert 'GRANT SELECT ON TABLE "shop"."orders" TO "pgops_backup"' in out
    assert "REVOKE" not in out and "OWNER TO" not in out
    assert snapshot(cluster) == before


def test_backup_wal_and_drill_work_and_the_application_is_untouched(installed):
    cluster, config, base, before, _ = installed
    repo = LocalRepository(base / "repo")
    run_full_backup(config, repo)
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="shop_owner", password="shop-secret",
                         dbname="shop", autocommit=True) as app:  # still through PUBLIC's CONNECT
        app.execute("INSERT INTO shop.orders (item) VALUES ('after the backup')")
    result = ship_wal(config, repo)
    assert result.shipped and not result.chain_breaks and not result.sentinel_count_errors, result
    evidence = verify_restore(config, repo, RestoreRequest(latest=True))
    assert evidence.verdict == "passed", evidence.report()
    assert snapshot(cluster) == before


def test_a_second_setup_and_upgrade_change_nothing(installed, capsys):
    cluster, *_ = installed
    whole = snapshot(cluster, WHOLE_CATALOG)
    capsys.readouterr()
    assert pgops("db", "setup", "--dsn", superuser_dsn(cluster)) == 0
    assert "0 statement(s) run: everything was in place" in capsys.readouterr().out
    assert pgops("db", "upgrade") == 0
    assert snapshot(cluster, WHOLE_CATALOG) == whole


def test_upgrade_downgrade_upgrade_round_trips(installed, capsys):
    cluster, *_ = installed
    whole = snapshot(cluster, WHOLE_CATALOG)
    assert pgops("db", "downgrade", "core@base") == 0
    with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
        left = [r[0] for r in conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                           "c.relnamespace WHERE n.nspname = 'pgops' ORDER BY 1")]
    assert left == ["alembic_version", "alembic_version_pkc"]
    capsys.readouterr()
    assert pgops("db", "upgrade") == 0
    assert json.loads(capsys.readouterr().out)["applied"] == ["core_0001"]
    assert snapshot(cluster, WHOLE_CATALOG) == whole


def test_an_applied_migration_that_changed_is_refused(installed, monkeypatch, tmp_path, capsys):
    copy = tmp_path / "sql"
    shutil.copytree(sqlfiles.SQL_ROOT, copy)
    up = copy / "migrations" / "core" / "0001_schema.up.sql"
    up.write_text(up.read_text().replace("text NOT NULL CHECK", "text NOT NULL  CHECK"))
    monkeypatch.setattr(sqlfiles, "SQL_ROOT", copy)
    capsys.readouterr()
    for action in (("upgrade",), ("downgrade", "core@base"), ("current",)):
        assert pgops("db", *action) == 4, action
        err = capsys.readouterr().err
        assert "core_0001: its files changed after it was applied (core_0001_schema.py, 0001_schema.up.sql" in err


def test_the_fixia_line_is_refused_where_it_is_not_configured(installed, capsys):
    assert pgops("db", "upgrade", "fixia@head") == 2
    assert "setup.lines" in capsys.readouterr().err
    assert pgops("db", "upgrade", "core_9999") == 2  # Alembic's own error, as a ConfigError: no traceback
    assert "Can't locate revision identified by 'core_9999'" in capsys.readouterr().err


def test_each_role_is_refused_what_it_must_not_do(installed):
    cluster, _config, _base, _before, passwords = installed

    def as_role(job: str):
        return psycopg.connect(host="127.0.0.1", port=cluster.port, user=ROLES[job],
                               password=passwords[ROLES[job]], dbname="shop", autocommit=True)

    denied = psycopg.errors.InsufficientPrivilege
    with as_role("backup") as conn:
        assert conn.execute("SELECT count(*) FROM shop.orders").fetchone()[0] > 0  # a counted table
        assert conn.execute("SELECT pg_switch_wal() IS NOT NULL").fetchone()[0]
        for statement in ("INSERT INTO shop.orders (item) VALUES ('x')", "DELETE FROM shop.orders",
                          "SELECT * FROM shop.customers", "CREATE TABLE pgops.x (id int)",
                          "DROP TABLE pgops.backup_sentinel", "CREATE ROLE intruder"):
            with pytest.raises(denied):
                conn.execute(statement)
    with as_role("monitor") as conn:
        assert conn.execute("SELECT count(*) >= 0 FROM pgops.backup_sentinel").fetchone()[0]
        assert conn.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
        for statement in ("SELECT * FROM shop.orders", "INSERT INTO pgops.backup_sentinel (kind, token) VALUES "
                          "('wal_switch', 'x')", "DELETE FROM pgops.backup_sentinel", "CREATE TABLE pgops.x (id int)",
                          "CREATE TABLE public.x (id int)", "SELECT pg_switch_wal()", "ALTER SYSTEM SET work_mem = '1GB'"):
            with pytest.raises(denied):
                conn.execute(statement)
    with as_role("maintenance") as conn:
        for statement in ("SELECT * FROM shop.orders", "DROP TABLE shop.orders", "SELECT pg_switch_wal()",
                          "DELETE FROM pgops.backup_sentinel"):
            with pytest.raises(denied):
                conn.execute(statement)
    with as_role("owner") as conn:
        for statement in ("SELECT * FROM shop.orders", "CREATE TABLE shop.x (id int)", "CREATE ROLE intruder",
                          "SELECT pg_switch_wal()"):
            with pytest.raises(denied):
                conn.execute(statement)


def test_a_role_pgops_did_not_create_is_refused_and_teardown_leaves_the_database_as_it_was(capsys, monkeypatch):
    """On a fresh server: a role of the configured name that the application owns makes
    set-up refuse with nothing changed; after a set-up under other names, upgrade and a
    backup role's use, the printed teardown, run by a DBA, leaves the catalog exactly as
    it was before pgops came."""
    cluster = start_cluster()
    try:
        make_shop(cluster)
        base = shared_tempdir("pgops-shop2-")
        (base / "pgops.yaml").write_text(yaml.safe_dump({"restore_verification": {"count_tables": ["shop.orders"]}}))
        monkeypatch.setenv("PGOPS_CONFIG", str(base / "pgops.yaml"))
        with connect_params(cluster.superuser_params(), application_name="test", statement_timeout_s=60) as conn:
            conn.execute("CREATE ROLE pgops_monitor LOGIN")  # the application's, by chance
            conn.execute("GRANT shop_reader TO pgops_monitor")
        before_whole = snapshot(cluster, WHOLE_CATALOG.replace(",\n  'versions', (SELECT pg_catalog.json_agg("
                                                              "version_num ORDER BY version_num) FROM pgops.alembic_version)", ""))
        capsys.readouterr()
        assert pgops("db", "setup", "--dsn", superuser_dsn(cluster)) == 2
        assert "role 'pgops_monitor' (setup.monitor_role) exists and was not created by pgops" in capsys.readouterr().err
        assert snapshot(cluster, WHOLE_CATALOG.replace(",\n  'versions', (SELECT pg_catalog.json_agg("
                                                       "version_num ORDER BY version_num) FROM pgops.alembic_version)", "")) \
            == before_whole

        (base / "pgops.yaml").write_text(yaml.safe_dump({"restore_verification": {"count_tables": ["shop.orders"]},
                                                         "setup": {"monitor_role": "ops_monitor"}}))
        names = [n if n != "pgops_monitor" else "ops_monitor" for n in PGOPS]
        before = snapshot(cluster)
        assert pgops("db", "setup", "--dsn", superuser_dsn(cluster)) == 0
        assert pgops("db", "upgrade", "--dsn", superuser_dsn(cluster)) == 0
        with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'pgops' "
                                 "AND tablename = 'backup_sentinel'").fetchone()[0]
        assert owner == "pgops_owner"  # a superuser's upgrade still creates the owner's objects
        with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
            conn.execute("CREATE VIEW shop.last_backups AS SELECT written_at FROM pgops.backup_sentinel")
        capsys.readouterr()
        assert pgops("db", "teardown", "--print-sql", "--dsn", superuser_dsn(cluster)) == 3
        refused = capsys.readouterr().out
        assert "view shop.last_backups depends on an object in schema pgops" in refused and "DROP" not in \
            "".join(line for line in refused.splitlines() if not line.startswith("--"))
        with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
            conn.execute("DROP VIEW shop.last_backups")
        status = pgops("db", "teardown", "--print-sql", "--dsn", superuser_dsn(cluster))
        script = capsys.readouterr().out
        assert status == 0, script
        assert "DROP SCHEMA pgops CASCADE" in script and '"pgops_monitor"' not in script
        with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
            conn.execute(script)  # what the DBA runs
            left = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY (%s)", [names])]
        assert left == []
        assert snapshot(cluster) == before
    finally:
        cluster.destroy()


def test_setup_refuses_without_a_superuser(installed, capsys):
    cluster, _config, _base, _before, passwords = installed
    dsn = f"host=127.0.0.1 port={cluster.port} user={ROLES['owner']} password={passwords[ROLES['owner']]} dbname=shop"
    capsys.readouterr()
    assert pgops("db", "setup", "--dsn", dsn) == 2
    assert "must run as a superuser" in capsys.readouterr().err
    assert setup.COMMENT_PREFIX == "pgops "


def extra_migrations(tmp_path, monkeypatch, specs: list[tuple[str, str, str, str]]) -> None:
    """Copies of the migrations and SQL with ``specs`` (revision, down revision, up SQL,
    down SQL) added on the core line, in use for the rest of the test."""
    from pgops.database import migrations

    scripts, sql = tmp_path / "alembic", tmp_path / "sql"
    shutil.copytree(migrations.SCRIPT_DIR, scripts)
    shutil.copytree(sqlfiles.SQL_ROOT, sql)
    for revision, down, up_sql, down_sql in specs:
        number = revision.split("_")[1]
        (scripts / "versions" / f"{revision}_test.py").write_text(
            f'"""{revision}: a test migration."""\nfrom pgops.database.migrations import sql_migration\n'
            f'revision = "{revision}"\ndown_revision = "{down}"\nbranch_labels = None\ndepends_on = None\n'
            f'upgrade, downgrade = sql_migration(revision, "core/{number}_test", __file__)\n')
        (sql / "migrations" / "core" / f"{number}_test.up.sql").write_text(up_sql)
        (sql / "migrations" / "core" / f"{number}_test.down.sql").write_text(down_sql)
    monkeypatch.setattr(migrations, "SCRIPT_DIR", scripts)
    monkeypatch.setattr(sqlfiles, "SQL_ROOT", sql)


def test_a_concurrent_index_migration_runs_outside_a_transaction_and_lock_waits_are_bounded(
        installed, tmp_path, monkeypatch, capsys):
    """``-- transaction: none`` runs CREATE INDEX CONCURRENTLY (which PostgreSQL refuses in
    a transaction block). A migration that must wait for a lock gives up after
    lock_timeout with a TransientError (exit 75) and is not recorded; the ones before it
    stay applied; once the lock is gone, a rerun completes (the concurrent migration
    first drops the invalid index its failed try may have left)."""
    cluster, config, base, *_ = installed
    extra_migrations(tmp_path, monkeypatch, [
        ("core_0002", "core_0001",
         "-- test\n-- locks: SHARE UPDATE EXCLUSIVE (writes go on), CONCURRENTLY\n-- transaction: none\n\n"
         "-- step: leftover\n-- an invalid index a failed earlier try left behind\n"
         "DROP INDEX CONCURRENTLY IF EXISTS pgops.backup_sentinel_token\n\n"
         "-- step: index\nCREATE INDEX CONCURRENTLY backup_sentinel_token ON pgops.backup_sentinel (token)\n",
         "-- test\n-- locks: none\n-- transaction: none\n\n-- step: index\n"
         "DROP INDEX CONCURRENTLY pgops.backup_sentinel_token\n"),
        ("core_0003", "core_0002",
         "-- test\n-- locks: ACCESS EXCLUSIVE on pgops.backup_sentinel, for a catalog change only\n\n"
         "-- step: column\nALTER TABLE pgops.backup_sentinel ADD COLUMN note text\n",
         "-- test\n-- locks: ACCESS EXCLUSIVE on pgops.backup_sentinel\n\n-- step: column\n"
         "ALTER TABLE pgops.backup_sentinel DROP COLUMN note\n"),
    ])
    raw = yaml.safe_load((base / "pgops.yaml").read_text())
    (base / "pgops-lock.yaml").write_text(yaml.safe_dump({**raw, "database": {"lock_timeout_s": 1}}))
    monkeypatch.setenv("PGOPS_CONFIG", str(base / "pgops-lock.yaml"))

    def versions():
        with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as c:
            return [r[0] for r in c.execute("SELECT version_num FROM pgops.alembic_version")]

    def upgrade_while_locked() -> str:
        with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60,
                            autocommit=False) as holder:
            holder.execute("LOCK TABLE pgops.backup_sentinel IN ACCESS EXCLUSIVE MODE")
            capsys.readouterr()
            assert pgops("db", "upgrade") == 75
            return capsys.readouterr().err

    assert "waited longer than lock_timeout (1 s)" in upgrade_while_locked()
    assert versions() == ["core_0001"]
    assert pgops("db", "upgrade") == 0
    with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                            "'pgops.backup_sentinel_token'::regclass").fetchone() == (True,)
    assert versions() == ["core_0003"]
    assert pgops("db", "downgrade", "core_0002") == 0
    assert "waited longer than lock_timeout" in upgrade_while_locked()
    assert versions() == ["core_0002"]
    assert pgops("db", "downgrade", "core_0001") == 0
    with connect_params(cluster.superuser_params("shop"), application_name="test", statement_timeout_s=60) as conn:
        assert conn.execute("SELECT to_regclass('pgops.backup_sentinel_token')").fetchone() == (None,)
    assert versions() == ["core_0001"]
