"""wal-fetch keeps PostgreSQL's restore_command contract: 0 found, 1 only when truly
absent, 255 (recovery stops) for everything else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgops.backup import wal
from pgops.backup.walship import ship_file
from pgops.errors import ConfigError, IntegrityError, TransientError
from pgops.repository.local import LocalRepository
from pgops.restore import walfetch


@pytest.fixture
def archive(tmp_path):
    repo = LocalRepository(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    contents = {}
    for n in range(1, 6):
        name = wal.Segment(1, n).name
        data = os.urandom(1024) * 64  # small stand-ins for 16 MiB segments
        (src / name).write_bytes(data)
        ship_file(repo, src / name)
        contents[name] = data
    repo.put_bytes("pgops.repository.json", b'{"format": 1, "system_identifier": "1", "pg_version": "15"}')
    (src / "00000002.history").write_text("1\t0/5000000\tno recovery target specified\n")
    ship_file(repo, src / "00000002.history")
    contents["00000002.history"] = (src / "00000002.history").read_bytes()
    return repo, contents


def test_found_not_found_and_history(archive, tmp_path):
    repo, contents = archive
    dest = tmp_path / "RECOVERYXLOG"
    name = wal.Segment(1, 2).name
    assert walfetch.fetch_wal(repo, name, dest) is True
    assert dest.read_bytes() == contents[name]
    assert walfetch.fetch_wal(repo, "00000002.history", dest) is True
    assert dest.read_bytes() == contents["00000002.history"]
    assert walfetch.fetch_wal(repo, wal.Segment(1, 9).name, tmp_path / "nothing") is False
    assert walfetch.fetch_wal(repo, "00000003.history", tmp_path / "nothing") is False
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(ConfigError, match="not a pgops repository"):
        walfetch.fetch_wal(LocalRepository(tmp_path / "elsewhere"), name, tmp_path / "nothing")


def test_prefetch_fills_the_spool_and_later_calls_use_it(archive, tmp_path):
    repo, contents = archive
    spool = tmp_path / "spool"
    first = wal.Segment(1, 1).name
    assert walfetch.fetch_wal(repo, first, tmp_path / "a", spool=spool, prefetch=3)
    assert sorted(p.name for p in spool.iterdir()) == [wal.Segment(1, 2).name, wal.Segment(1, 3).name]

    class Unreachable(LocalRepository):
        def list(self, prefix=""):
            raise AssertionError("a spooled segment must not touch the repository")

    second = wal.Segment(1, 2).name
    assert walfetch.fetch_wal(Unreachable(repo.root), second, tmp_path / "b", spool=spool)
    assert (tmp_path / "b").read_bytes() == contents[second]
    assert not (spool / second).exists()


def test_a_corrupt_segment_is_an_integrity_error_not_absence(archive, tmp_path):
    repo, _ = archive
    name = wal.Segment(1, 3).name
    key = next(o.key for o in repo.list("wal/") if name in o.key)
    path = repo.root / key
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor().compress(b"not the segment"))
    with pytest.raises(IntegrityError, match="corrupt"):
        walfetch.fetch_wal(repo, name, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_transient_errors_are_retried_then_raised_never_absent():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("503 SlowDown")
        return True

    assert walfetch.fetch_with_retries(flaky, retry_s=60, sleep=lambda s: None) is True
    assert len(calls) == 3

    def down():
        raise TransientError("connection refused")

    with pytest.raises(TransientError, match="gave up"):
        walfetch.fetch_with_retries(down, retry_s=0, sleep=lambda s: None)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOPS_")}
    return subprocess.run([sys.executable, "-m", "pgops", "wal-fetch", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_cli_exit_codes_follow_the_restore_command_contract(archive, tmp_path):
    repo, contents = archive
    name = wal.Segment(1, 4).name
    ok = run_cli("--repository", str(repo.root), name, "pg_wal_file", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "pg_wal_file").read_bytes() == contents[name]

    missing = run_cli("--repository", str(repo.root), wal.Segment(1, 42).name, "x", cwd=tmp_path)
    assert missing.returncode == 1

    assert run_cli("--repository", str(repo.root), name + ".partial", "x", cwd=tmp_path).returncode == 1

    # a wrong repository path must stop recovery, not end it as "not found"
    wrong = run_cli("--repository", str(tmp_path / "no-such-repo"), name, "x", cwd=tmp_path)
    assert wrong.returncode == 255, wrong.stderr
    assert "not a pgops repository" in wrong.stderr and "stopping recovery" in wrong.stderr


def test_a_segment_the_plan_counted_on_is_required_not_the_end(archive, tmp_path):
    repo, _ = archive
    name = wal.Segment(1, 3).name
    key = next(o.key for o in repo.list("wal/") if name in o.key)
    (repo.root / key).unlink()  # pruned or deleted after the restore was planned
    with pytest.raises(IntegrityError, match="planned with WAL up to"):
        walfetch.fetch_wal(repo, name, tmp_path / "x", expect_until=wal.Segment(1, 5).name)
    # beyond the planned end, absence is the normal end of the archive
    assert walfetch.fetch_wal(repo, wal.Segment(1, 6).name, tmp_path / "x", expect_until=wal.Segment(1, 5).name) is False


def test_cli_defaults_match_the_configuration_defaults():
    from pgops.config import RestoreConfig

    assert (walfetch.DEFAULT_RETRY_S, walfetch.DEFAULT_PREFETCH) == (
        RestoreConfig().wal_fetch_retry_s, RestoreConfig().wal_prefetch)


def test_an_unreadable_wal_directory_is_an_error_not_absence(archive, tmp_path, monkeypatch):
    """Tests run as root, who reads any directory: the refusal is simulated here; the
    integration test test_repository_access.py does it for real as the postgres user."""
    repo, _ = archive
    name = wal.Segment(1, 2).name
    unreadable = str(repo.root / "wal")
    real_scandir = os.scandir

    def scandir(path):
        if str(path).startswith(unreadable):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ConfigError, match=r"wal.* cannot be read by this user"):
        walfetch.fetch_wal(repo, name, tmp_path / "x")
    with pytest.raises(ConfigError, match="cannot be read"):
        repo.list("wal/")
    assert repo.list("backups/") == [], "a listing below another directory does not enter wal/"


def test_unparsable_wal_fetch_arguments_stop_recovery(archive, tmp_path):
    repo, _ = archive
    name = wal.Segment(1, 4).name
    bad = run_cli("--repository", str(repo.root), "--no-such-option", name, "x", cwd=tmp_path)
    assert bad.returncode == 255, bad.stderr
    assert run_cli("--repository", str(repo.root), cwd=tmp_path).returncode == 255


def test_recovery_ends_after_the_stop_segment_even_when_more_is_stored(archive, tmp_path):
    """A restore test recovers exactly to the shipping run it compares with: WAL shipped
    after it (during the drill) is "not found", and never prefetched."""
    repo, _ = archive
    spool = tmp_path / "spool"
    stop = wal.Segment(1, 3).name
    assert walfetch.fetch_wal(repo, wal.Segment(1, 2).name, tmp_path / "a", spool=spool, prefetch=8, stop_after=stop)
    assert sorted(p.name for p in spool.iterdir()) == [stop], "nothing after the stop is prefetched"
    assert walfetch.fetch_wal(repo, wal.Segment(1, 4).name, tmp_path / "b", stop_after=stop) is False
    assert not (tmp_path / "b").exists()
    assert walfetch.fetch_wal(repo, "00000002.history", tmp_path / "c", stop_after=stop) is True
    env = {**os.environ, "PYTHONPATH": str(Path(walfetch.__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-m", "pgops", "wal-fetch", "--repository", str(repo.root), "--stop-after",
                           stop, wal.Segment(1, 5).name, str(tmp_path / "d")], env=env, capture_output=True)
    assert proc.returncode == 1 and not (tmp_path / "d").exists()
