"""A local repository as the postgres OS user reads it: restore_command (pgops wal-fetch)
runs as that user, not as the one that wrote the backups. Unreadable is never empty, and
what pgops writes is readable whatever the umask."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pgops.backup import wal
from pgops.backup.walship import ship_file
from pgops.postgres.cluster import as_server_user, chown_to_server_user
from pgops.repository.local import LocalRepository

SEGMENTS = [wal.Segment(1, n).name for n in range(1, 4)]


@pytest.fixture
def base():
    """A directory the postgres OS user can enter (tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pgops-access-"))
    path.chmod(0o755)
    out = path / "out"
    out.mkdir()
    chown_to_server_user(out)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_archive(root: Path) -> LocalRepository:
    """Three WAL segments and the repository identity, as the backup jobs write them."""
    repo = LocalRepository(root / "repo")
    src = root / "src"
    src.mkdir()
    for name in SEGMENTS:
        (src / name).write_bytes(name.encode() * 4096)
        ship_file(repo, src / name)
    repo.put_bytes("pgops.repository.json", b'{"format": 1, "system_identifier": "1", "pg_version": "15"}')
    return repo


def wal_fetch_as_postgres(repo: LocalRepository, name: str, dest: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOPS_")}
    return subprocess.run(as_server_user([sys.executable, "-m", "pgops", "wal-fetch", "--repository", str(repo.root),
                                          "--retry-seconds", "0", name, str(dest)]),
                          capture_output=True, text=True, env=env, cwd=dest.parent, timeout=120)


def test_an_unreadable_wal_directory_stops_recovery(base):
    """Before: the listing skipped the directory it could not read, and wal-fetch answered
    "not found" (exit 1): recovery would have ended and promoted with WAL still stored."""
    repo = write_archive(base)
    wal_dir = repo.root / "wal" / SEGMENTS[0][:16]
    assert wal_dir.is_dir()
    wal_dir.chmod(0)
    try:
        proc = wal_fetch_as_postgres(repo, SEGMENTS[1], base / "out" / "seg")
        assert proc.returncode == 255, proc.stderr
        assert f"{wal_dir} in the repository {repo.root} cannot be read" in proc.stderr
        assert not (base / "out" / "seg").exists()
    finally:
        wal_dir.chmod(0o755)


def test_what_pgops_writes_is_readable_by_the_server_user_whatever_the_umask(base):
    """Before: under umask 077 the repository was root's alone, and wal-fetch as postgres
    could not read it."""
    old = os.umask(0o077)
    try:
        repo = write_archive(base)
    finally:
        os.umask(old)
    paths = [repo.root, *repo.root.rglob("*")]
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_dir()} == {0o755}
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_file()} == {0o644}
    proc = wal_fetch_as_postgres(repo, SEGMENTS[2], base / "out" / "seg")
    assert proc.returncode == 0, proc.stderr
    assert (base / "out" / "seg").read_bytes() == SEGMENTS[2].encode() * 4096


def test_the_mode_of_an_existing_root_is_left_to_the_operator(base):
    root = base / "repo"
    root.mkdir(mode=0o750)
    root.chmod(0o750)
    write_archive(base)
    assert stat.S_IMODE(root.stat().st_mode) == 0o750
