from __future__ import annotations

from pathlib import Path

from pgops.backup import basebackup
from pgops.connections import ConnectionInfo


def _argv() -> list[str]:
    conn = ConnectionInfo(conn_id="pgops_backup", conn_type="postgres", host="db", port=5432, login="pgops_backup", password="s3cret",
                          schema="fixia", extra={})
    return basebackup.basebackup_argv(Path("/usr/lib/postgresql/15/bin"), conn, label="pgops X",
                                      checkpoint="fast", max_rate=None)


def test_pg_basebackup_gets_a_1_mib_stdout_buffer_through_stdbuf(monkeypatch):
    monkeypatch.setattr(basebackup.shutil, "which", lambda name: "/usr/bin/stdbuf" if name == "stdbuf" else None)
    argv = _argv()
    assert basebackup.with_buffered_stdout(argv) == ["/usr/bin/stdbuf", "--output=1M", *argv]
    assert "s3cret" not in " ".join(argv)


def test_without_stdbuf_the_argv_is_unchanged(monkeypatch):
    monkeypatch.setattr(basebackup.shutil, "which", lambda name: None)
    argv = _argv()
    assert basebackup.with_buffered_stdout(argv) == argv
