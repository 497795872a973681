"""The Fixia reference database as the local stack and the tests build it."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from pgops.devstack import seed

from .servers import ANCHOR, make_fixia, start_cluster

pytestmark = pytest.mark.integration

SCALE_1 = {
    "categories": 40,
    "users": 10_000,
    "professional_profiles": 4_000,
    "services": 20_000,
    "projects": 15_000,
    "reviews": 5_000,
    "payments": 50_000,
    "user_activity": 500_000,
    "notifications": 1_000_000,
}


def test_scale_1_has_the_planned_rows_and_proportions(fixia):
    with fixia.superuser() as conn:
        counts = seed.table_counts(conn)
    for table, expected in SCALE_1.items():
        assert counts[table] == expected, table
    # jobs: one per project in progress or completed (~65% of projects)
    assert 0.6 * 15_000 < counts["jobs"] < 0.7 * 15_000
    largest = sorted(counts, key=counts.get, reverse=True)[:3]
    assert set(largest) == {"notifications", "user_activity", "payments"}


def test_foreign_keys_hold_and_types_follow_ids(fixia):
    with fixia.superuser() as conn:
        assert seed.check_references(conn) == []
        wrong = conn.execute(
            "SELECT count(*) FROM fixia.services s JOIN fixia.users u ON u.id = s.professional_id"
            " WHERE u.user_type = 'client'").fetchone()[0]
        assert wrong == 0
        wrong = conn.execute(
            "SELECT count(*) FROM fixia.projects p JOIN fixia.users u ON u.id = p.client_id"
            " WHERE u.user_type = 'professional'").fetchone()[0]
        assert wrong == 0


def test_created_at_spans_24_months_before_the_anchor(fixia):
    with fixia.superuser() as conn:
        for table in ("users", "services", "payments", "notifications", "user_activity", "reviews"):
            lo, hi = conn.execute(f"SELECT min(created_at), max(created_at) FROM fixia.{table}").fetchone()
            assert hi < ANCHOR, table
            assert (ANCHOR - lo).days >= 600, table
            assert (ANCHOR - lo).days <= 731, table


def test_text_is_spanish(fixia):
    with fixia.superuser() as conn:
        titles = [r[0] for r in conn.execute("SELECT title FROM fixia.services ORDER BY id LIMIT 200")]
    assert any(ch in "".join(titles) for ch in "áéíóúñ")
    assert any(t.startswith(("Servicio de", "Reparación y", "Asesoría en", "Clases de")) for t in titles)


def test_generation_is_deterministic():
    """The same scale and anchor give byte-identical tables (checked in a second cluster
    at scale 1 for the tables built from the most derived choices)."""
    cluster = start_cluster()
    try:
        one = make_fixia(cluster, scale=1)
        with one.superuser() as conn:
            conn.execute("CREATE DATABASE fixia_again")
        with one.superuser("fixia_again") as conn:
            seed.apply_schema(conn)
            seed.generate(conn, 1, ANCHOR)

        def digest(dbname: str, table: str) -> str:
            with one.superuser(dbname) as conn:
                h = hashlib.sha256()
                for row in conn.execute(f"SELECT t::text FROM fixia.{table} t ORDER BY id"):
                    h.update(row[0].encode())
                return h.hexdigest()

        for table in ("users", "services", "jobs", "reviews", "payments"):
            assert digest("fixia", table) == digest("fixia_again", table), table
    finally:
        cluster.destroy()


def test_job_roles_have_least_privilege(fixia):
    with fixia.superuser() as conn:
        roles = dict(conn.execute(
            "SELECT rolname, (rolsuper OR rolcreatedb OR rolcreaterole) FROM pg_roles WHERE rolname LIKE 'pgops_%'"
        ).fetchall())
        owners = dict(conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'fixia' AND c.relkind = 'r'"
        ).fetchall())
    assert roles == {"pgops_backup": False, "pgops_monitor": False, "pgops_maintenance": False, "pgops_owner": False}
    assert set(owners.values()) == {"fixia_owner"}  # pgops owns nothing of the application's

    with fixia.as_role("pgops_monitor") as conn:
        assert conn.execute("SELECT count(*) >= 0 FROM pg_stat_statements").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM fixia.users")
    with fixia.as_role("pgops_backup") as conn:
        assert conn.execute("SELECT pg_switch_wal() IS NOT NULL").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM fixia.notifications")
    with fixia.as_role("pgops_maintenance") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_switch_wal()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE fixia.users")
