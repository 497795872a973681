"""Airflow connection -> libpq: every libpq parameter in the extra passed on and quoted by
psycopg, anything else refused by name, the password never in a conninfo string."""

from __future__ import annotations

import json

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgops.connections import ConnectionInfo, get_connection
from pgops.errors import ConfigError
from pgops.postgres import session
from pgops.postgres.session import conninfo_string, libpq_params

AWKWARD = "/etc/pgops/it's a \\ path/root.crt"  # a space, a quote and a backslash
EXTRA = {"sslmode": "verify-full", "sslrootcert": AWKWARD, "target_session_attrs": "read-write",
         "options": "-c search_path='my schema',public", "keepalives_idle": 30}


def conn(extra: dict, password: str = "pa ss'wo\\rd") -> ConnectionInfo:
    return ConnectionInfo("pgops_backup", "postgres", "db.example", 6432, "backup user", password, "fixia", extra)


def test_every_libpq_extra_reaches_the_tools_conninfo_exactly():
    text = conninfo_string(conn(EXTRA), "pgops:full_backup")
    assert conninfo_to_dict(text) == {
        "host": "db.example", "port": "6432", "user": "backup user", "application_name": "pgops:full_backup",
        **{k: str(v) for k, v in EXTRA.items()}}
    assert "pa ss" not in text and "password" not in text and "fixia" not in text


def test_every_libpq_extra_reaches_the_session_and_the_password_goes_as_a_parameter():
    params = libpq_params(conn(EXTRA))
    assert params == {"host": "db.example", "port": 6432, "user": "backup user", "password": "pa ss'wo\\rd",
                      "dbname": "fixia", **{k: str(v) for k, v in EXTRA.items()}}


def test_extras_libpq_does_not_take_or_pgops_sets_are_refused_by_name():
    extra = {"cursor": "dictcursor", "sslmod": "require", "host": "elsewhere", "application_name": "x",
             "sslpassword": "hunter2", "sslmode": "require"}
    with pytest.raises(ConfigError) as info:
        libpq_params(conn(extra))
    message = str(info.value)
    assert "'pgops_backup'" in message and "hunter2" not in message
    for key in ("cursor", "sslmod", "host", "application_name", "sslpassword"):
        assert f"{key} (" in message
    assert "sslmode (" not in message
    with pytest.raises(ConfigError, match="cursor"):
        conninfo_string(conn({"cursor": "dictcursor"}), "pgops:wal_shipping")


def test_the_connections_options_are_kept_and_pgops_timeouts_follow_them(monkeypatch):
    import psycopg

    seen = {}
    monkeypatch.setattr(psycopg, "connect", lambda **kwargs: seen.update(kwargs))
    session.connect_params(libpq_params(conn(EXTRA)), application_name="pgops:test", statement_timeout_s=5,
                           lock_timeout_s=1)
    assert seen["options"] == "-c search_path='my schema',public -c statement_timeout=5000 -c lock_timeout=1000"
    assert seen["password"] == "pa ss'wo\\rd" and seen["sslrootcert"] == AWKWARD


@pytest.mark.parametrize("extra, words", [("{sslmode: require}", "not JSON"), ("[1, 2]", "JSON object, not list")])
def test_an_extra_that_is_not_a_json_object_is_refused_not_dropped(monkeypatch, extra, words):
    """Airflow itself would log the error and hand back an empty extra (no sslmode)."""
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_TEST", json.dumps({"conn_type": "postgres", "host": "h", "extra": extra}))
    with pytest.raises(ConfigError, match=f"'pgops_test': its extra .*{words}"):
        get_connection("pgops_test")
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_TEST", json.dumps({"conn_type": "postgres", "extra": {"sslmode": "require"}}))
    assert get_connection("pgops_test").extra == {"sslmode": "require"}


@pytest.mark.parametrize("key", ["require_auth", "sslnegotiation", "load_balance_hosts"])
def test_extras_postgresql_15s_tools_do_not_know_are_refused(key):
    """psycopg's bundled libpq is newer than PostgreSQL 15's, which pg_basebackup and
    pg_receivewal use: an extra only the newer one knows would make them stop."""
    with pytest.raises(ConfigError, match=f"{key} \\(not a libpq connection parameter"):
        libpq_params(conn({key: "x"}))
