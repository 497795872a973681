from __future__ import annotations

from pathlib import Path

from pgops.backup import basebackup
from pgops.connections import ConnectionInfo


BINDIR = Path("/usr/lib/postgresql/15/bin")
CONN = ConnectionInfo(conn_id="pgops_backup", conn_type="postgres", host="db", port=5432, login="pgops_backup",
                      password="s3cret", schema="fixia", extra={})


def _argv(checkpoint: str = "fast", max_rate: str | None = None) -> list[str]:
    return basebackup.basebackup_argv(BINDIR, CONN, label="pgops X", checkpoint=checkpoint, max_rate=max_rate)


def test_the_exact_pg_basebackup_command_line():
    assert _argv() == [
        "/usr/lib/postgresql/15/bin/pg_basebackup",
        "--dbname", "host=db port=5432 user=pgops_backup application_name=pgops:full_backup",
        "--pgdata", "-", "--format", "tar", "--wal-method", "fetch", "--checkpoint", "fast",
        "--label", "pgops X", "--no-password", "--verbose",
    ]
    argv = _argv(checkpoint="spread", max_rate="100M")
    assert argv[argv.index("--checkpoint") + 1] == "spread"
    assert argv[-2:] == ["--max-rate", "100M"]


def test_the_exact_pg_receivewal_command_line():
    from pgops.backup.walship import receivewal_argv

    assert receivewal_argv(BINDIR, "host=db user=pgops_backup", Path("/spool/pgops"), "pgops", 0x3000000) == [
        "/usr/lib/postgresql/15/bin/pg_receivewal", "--dbname", "host=db user=pgops_backup",
        "--directory", "/spool/pgops", "--slot", "pgops", "--endpos", "0/3000000", "--no-loop",
        "--no-password", "--verbose",
    ]


def test_pg_basebackup_gets_a_1_mib_stdout_buffer_through_stdbuf(monkeypatch):
    monkeypatch.setattr(basebackup.shutil, "which", lambda name: "/usr/bin/stdbuf" if name == "stdbuf" else None)
    argv = _argv()
    assert basebackup.with_buffered_stdout(argv) == ["/usr/bin/stdbuf", "--output=1M", *argv]
    assert "s3cret" not in " ".join(argv)


def test_without_stdbuf_the_argv_is_unchanged(monkeypatch):
    monkeypatch.setattr(basebackup.shutil, "which", lambda name: None)
    argv = _argv()
    assert basebackup.with_buffered_stdout(argv) == argv


def test_pg_basebackups_tablespace_refusal_is_a_config_error_not_a_retry():
    from pgops.errors import ConfigError
    from pgops.postgres.tablespaces import basebackup_refusal

    refused = basebackup_refusal("pg_basebackup: error: can only write single tablespace to stdout, database has 2")
    assert isinstance(refused, ConfigError) and "does not back tablespaces up" in str(refused)
    assert basebackup_refusal("pg_basebackup: error: connection to server failed") is None
