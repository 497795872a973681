"""Refusals that need no server: binaries of another major version, too little disk,
an occupied target directory."""

from __future__ import annotations

import shutil
from collections import namedtuple
from datetime import timedelta
from pathlib import Path

import pytest

from pgops.errors import ConfigError, UnsafeOperation
from pgops.restore.plan import RestorePlan
from pgops.restore.run import check_binaries, check_free_space, check_target_dir

from .test_restore_plan import record


def test_binaries_of_another_major_version_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_ctl").write_text("#!/bin/sh\necho 'pg_ctl (PostgreSQL) 16.4'\n")
    (fake / "pg_ctl").chmod(0o755)
    monkeypatch.setenv("PGOPS_PG_BINDIR", str(fake))
    with pytest.raises(ConfigError, match="the backup is PostgreSQL 15 but .*16.4"):
        check_binaries("15")


def test_too_little_disk_is_refused_before_download(tmp_path, monkeypatch):
    rec = record("a", 1, 24).model_copy(update={"raw_size": 50 * 2**30})
    plan = RestorePlan(rec, "latest", {}, rec.stop_time + timedelta(hours=1), 3)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100 * 2**30, 90 * 2**30, 10 * 2**30))
    with pytest.raises(UnsafeOperation, match="has 10.0 GiB free; restoring backup a needs about 50.3 GiB"):
        check_free_space(tmp_path / "new" / "dir", plan)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100 * 2**30, 0, 100 * 2**30))
    check_free_space(tmp_path / "new" / "dir", plan)


def test_target_directory_rules(tmp_path):
    assert check_target_dir(tmp_path / "absent") is False
    (tmp_path / "empty").mkdir()
    assert check_target_dir(tmp_path / "empty") is True
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnsafeOperation, match="not a directory"):
        check_target_dir(tmp_path / "file")


def test_a_directory_the_postgres_user_cannot_reach_is_refused(tmp_path):
    import os

    from pgops.restore.run import check_server_user_access

    if os.geteuid() != 0:
        pytest.skip("only root hands the server to the postgres OS user")
    import tempfile

    private = Path(tempfile.mkdtemp(prefix="pgops-private-"))  # 0700, owned by root
    try:
        with pytest.raises(ConfigError, match="postgres OS user cannot enter"):
            check_server_user_access(private / "restored")
        private.chmod(0o755)
        check_server_user_access(private / "restored")
    finally:
        shutil.rmtree(private)
