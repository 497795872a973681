"""Point-in-time restores from a real backup chain: a full backup, WAL shipped after it,
restored into new directories and started by ``run_restore`` as the CLI does."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pgops.backup import catalog
from pgops.backup.basebackup import run_full_backup
from pgops.backup.inventory import scan, summarize
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.errors import ConfigError, IntegrityError, NotFound, TransientError, UnsafeOperation
from pgops.postgres.session import connect_params
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore

from .servers import make_fixia, start_cluster


def shared_tempdir(prefix: str) -> Path:
    """A temporary directory the postgres OS user can enter (restore_command runs as it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def write_probe(server, label: str) -> datetime:
    with server.superuser() as conn:
        conn.execute("INSERT INTO public.probe (label) VALUES (%s)", [label])
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def labels(target: Path, port: int) -> list[str]:
    """The probe rows of a restored server (its socket is in its data directory)."""
    with connect_params({"host": str(target), "port": port, "user": "postgres", "dbname": "fixia"},
                        application_name="pgops:test", statement_timeout_s=30) as conn:
        return [r[0] for r in conn.execute("SELECT label FROM public.probe ORDER BY id")]


class Chain:
    """T1 written, full backup, T2 written and shipped, T3 written and shipped."""

    def __init__(self, server, config, repo, times, base):
        self.server, self.config, self.repo, self.times, self.base = server, config, repo, times, base

    def restore(self, request: RestoreRequest, name: str, **kw):
        target = self.base / name
        result = run_restore(self.config, self.repo, request, target, start=True, **kw)
        return target, result

    def labels(self, target: Path, port: int) -> list[str]:
        return labels(target, port)


@pytest.fixture(scope="module")
def chain():
    import os

    base = shared_tempdir("pgops-restore-")
    cluster = start_cluster()
    saved = dict(os.environ)
    try:
        server = make_fixia(cluster, scale=None)
        os.environ.update(server.airflow_conn_env())
        config = parse_config({"repository": {"url": str(base / "repo")},
                               "backup": {"spool_dir": str(base / "spool")}})
        repo = LocalRepository(base / "repo")
        with server.superuser() as conn:
            conn.execute("CREATE TABLE public.probe (id bigserial PRIMARY KEY, label text NOT NULL)")
            # Settings a restored copy inherits through postgresql.auto.conf (the source
            # itself is never restarted, so it does not archive): --archive-mode's subject.
            conn.execute("ALTER SYSTEM SET archive_mode = on")
            conn.execute("ALTER SYSTEM SET archive_command = 'true'")
        times = {"T1": write_probe(server, "T1")}
        run_full_backup(config, repo)
        times["T2"] = write_probe(server, "T2")
        time.sleep(0.2)
        times["after_T2"] = datetime.now(timezone.utc)
        time.sleep(0.2)
        ship_wal(config, repo)
        times["T3"] = write_probe(server, "T3")
        ship_wal(config, repo)
        yield Chain(server, config, repo, times, base)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.destroy()
        for child in base.glob("restored-*"):
            stop(child)
        shutil.rmtree(base, ignore_errors=True)


def stop(target: Path) -> None:
    from pgops.postgres.cluster import as_server_user, find_bindir
    import subprocess

    subprocess.run(as_server_user([str(find_bindir() / "pg_ctl"), "stop", "-D", str(target), "-m", "immediate"]),
                   capture_output=True, check=False)


def test_restore_to_a_time_has_exactly_the_data_before_it(chain):
    target, result = chain.restore(RestoreRequest(target_time=chain.times["after_T2"]), "restored-t2")
    try:
        assert chain.labels(target, result.port) == ["T1", "T2"]
        assert result.started and result.recovery["stopped_at"].startswith("commit of transaction")
        assert int(result.recovery["wal_files_restored"]) >= 1
        assert {"download_extract", "verifybackup", "recovery"} <= result.timings_s.keys()
        assert not (target / "recovery.signal").exists()
        assert not (target / "pg_wal" / "pgops-prefetch").exists()
    finally:
        stop(target)


def test_restore_latest_has_everything_shipped(chain):
    target, result = chain.restore(RestoreRequest(latest=True), "restored-latest")
    try:
        assert chain.labels(target, result.port) == ["T1", "T2", "T3"]
        view = summarize(scan(chain.repo))
        newest = view["backups"][-1]["recoverable_until_sentinel"]
        with connect_params({"host": str(target), "port": result.port, "user": "postgres", "dbname": "fixia"},
                            application_name="pgops:test", statement_timeout_s=30) as conn:
            tokens = [r[0] for r in conn.execute("SELECT token FROM pgops.backup_sentinel")]
            archive_mode = conn.execute("SHOW archive_mode").fetchone()[0]
        assert newest in tokens, "the newest shipping point's sentinel must be in the restored data"
        assert archive_mode == "on", "the source's settings are preserved by default (--archive-mode preserve)"
    finally:
        stop(target)


def test_restore_of_a_backup_alone_stops_at_its_consistent_point(chain):
    backup_id = catalog.read_catalog(chain.repo)[0].backup_id
    target, result = chain.restore(RestoreRequest(backup_id=backup_id), "restored-immediate")
    try:
        assert chain.labels(target, result.port) == ["T1"]
        with connect_params({"host": str(target), "port": result.port, "user": "postgres", "dbname": "fixia"},
                            application_name="pgops:test", statement_timeout_s=30) as conn:
            kinds = {r[0] for r in conn.execute("SELECT kind || ':' || token FROM pgops.backup_sentinel")}
        assert kinds == {f"full_backup:backup-{backup_id}"}, "the backup's own sentinel, and nothing shipped later"
    finally:
        stop(target)


@pytest.mark.parametrize("request_kw, error, words", [
    ({"target_time": datetime.now(timezone.utc) + timedelta(days=1)}, ConfigError, "in the future"),
    ({"target_time": datetime(2020, 1, 1, tzinfo=timezone.utc)}, UnsafeOperation, "before the earliest"),
    ({"backup_id": "20990101T000000Z"}, NotFound, "no such backup"),
    ({"target_lsn": "FF/0"}, UnsafeOperation, "no backup can reach LSN"),
])
def test_unreachable_targets_are_refused_before_any_download(chain, request_kw, error, words):
    target = chain.base / "restored-refused"
    with pytest.raises(error, match=words):
        run_restore(chain.config, chain.repo, RestoreRequest(**request_kw), target)
    assert not target.exists(), "nothing may be written for a refused restore"


def test_a_non_empty_target_is_refused(chain):
    target = chain.base / "restored-occupied"
    target.mkdir()
    (target / "precious").write_text("keep me")
    with pytest.raises(UnsafeOperation, match="not empty"):
        run_restore(chain.config, chain.repo, RestoreRequest(latest=True), target)
    assert (target / "precious").read_text() == "keep me"


def test_a_corrupt_frame_is_named_and_the_partial_restore_removed(chain, tmp_path):
    repo_copy = shared_tempdir("pgops-restore-corrupt-")
    try:
        shutil.copytree(chain.repo.root, repo_copy / "repo")
        repo = LocalRepository(repo_copy / "repo")
        record = catalog.read_catalog(repo)[0].record
        data = repo.root / record.objects["data"].key
        index = json.loads((repo.root / record.objects["index"].key).read_text())
        offset = index["frames"][len(index["frames"]) // 2][1]
        with data.open("r+b") as f:
            f.seek(offset + 100)
            byte = f.read(1)
            f.seek(offset + 100)
            f.write(bytes([byte[0] ^ 0xFF]))
        config = parse_config({"repository": {"url": str(repo_copy / "repo")}})
        target = repo_copy / "restored"
        with pytest.raises(IntegrityError, match=rf"data\.tar\.zst is corrupt: frame {len(index['frames']) // 2} "):
            run_restore(config, repo, RestoreRequest(latest=True), target)
        assert not target.exists()
    finally:
        shutil.rmtree(repo_copy, ignore_errors=True)


def test_a_failed_flush_of_the_restored_files_fails_the_restore_and_removes_them(chain, monkeypatch):
    import errno

    from pgops.restore import run as restore_run

    def failing_syncfs(path):
        raise OSError(errno.EIO, f"syncfs of the file system holding {path} failed: Input/output error")

    monkeypatch.setattr(restore_run, "syncfs", failing_syncfs)
    target = chain.base / "restored-unflushed"
    with pytest.raises(TransientError, match="flushing the restored files to disk failed: .*Input/output error"):
        run_restore(chain.config, chain.repo, RestoreRequest(latest=True), target)
    assert not target.exists()


def test_a_missing_wal_segment_is_named_as_a_gap(chain):
    repo_copy = shared_tempdir("pgops-restore-gap-")
    try:
        shutil.copytree(chain.repo.root, repo_copy / "repo")
        repo = LocalRepository(repo_copy / "repo")
        view = summarize(scan(repo))
        backup = view["backups"][-1]
        segments = sorted(o.key for o in repo.list("wal/0") if o.key.split("/")[-1][:24] > backup["stop_wal_segment"])
        assert len(segments) >= 2, "the chain needs WAL after the backup's stop segment"
        (repo.root / segments[0]).unlink()
        config = parse_config({"repository": {"url": str(repo_copy / "repo")}})
        missing = segments[0].split("/")[-1][:24]
        with pytest.raises(IntegrityError, match=f"gap \\({missing}"):
            run_restore(config, repo, RestoreRequest(latest=True), repo_copy / "restored")
        with pytest.raises(UnsafeOperation, match="gap"):
            run_restore(config, repo, RestoreRequest(target_time=chain.times["after_T2"]), repo_copy / "restored")
    finally:
        shutil.rmtree(repo_copy, ignore_errors=True)


def test_the_cli_restores_and_starts_with_airflow_down(chain):
    """`pgops restore` as the on-call engineer runs it: a subprocess, no Airflow services."""
    import subprocess
    import sys

    import yaml

    config_file = chain.base / "cli.yaml"
    config_file.write_text(yaml.safe_dump({"repository": {"url": str(chain.repo.root)}}))
    target = chain.base / "restored-cli"
    proc = subprocess.run([sys.executable, "-m", "pgops", "--config", str(config_file), "restore", "--to", str(target),
                           "--latest", "--start", "--archive-mode", "off"], capture_output=True, text=True, timeout=600)
    try:
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert chain.labels(target, result["port"]) == ["T1", "T2", "T3"]
        with connect_params({"host": str(target), "port": result["port"], "user": "postgres", "dbname": "fixia"},
                            application_name="pgops:test", statement_timeout_s=30) as conn:
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
        assert "extracted" in proc.stderr and "recovery finished" in proc.stderr, "progress goes to stderr"
        assert f"Unix socket only; connect as root or the postgres OS user with: psql -h {target} -p " \
            f"{result['port']} -U postgres" in proc.stderr
    finally:
        stop(target)
    refused = subprocess.run([sys.executable, "-m", "pgops", "--config", str(config_file), "restore", "--to",
                              str(target), "--latest"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 3 and "not empty" in refused.stderr


def test_a_segment_lost_after_planning_stops_recovery_instead_of_ending_it(chain):
    """The catalog was whole when the restore was planned; then a segment vanished. wal-fetch
    must stop recovery (FATAL), not report the end of the archive and promote early."""
    from pgops.postgres.cluster import find_bindir, free_port
    from pgops.restore.run import start_and_wait

    repo_copy = shared_tempdir("pgops-restore-lost-")
    try:
        shutil.copytree(chain.repo.root, repo_copy / "repo")
        repo = LocalRepository(repo_copy / "repo")
        config = parse_config({"repository": {"url": str(repo_copy / "repo")}})
        target = repo_copy / "restored"
        result = run_restore(config, repo, RestoreRequest(latest=True), target, port=free_port(), socket_dir=target)
        stop_segment = catalog.read_catalog(repo)[-1].record.stop_wal_segment
        after = sorted(o.key for o in repo.list("wal/0") if o.key.split("/")[-1][:24] > stop_segment)
        (repo.root / after[0]).unlink()
        with pytest.raises(IntegrityError, match="stopped during recovery"):
            start_and_wait(find_bindir(), target, target / "log" / "pgops-restore.log", timeout_s=300)
        log_text = (target / "log" / "pgops-restore.log").read_text()
        assert "selected new timeline ID" not in log_text and (target / "recovery.signal").exists()
        assert result.backup_id
    finally:
        stop(repo_copy / "restored")
        shutil.rmtree(repo_copy, ignore_errors=True)


def reachable_over_tcp(port: int, user: str, password: str | None) -> bool:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password or "", dbname="fixia",
                             connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@pytest.mark.parametrize("network", ["local", "localhost", "source"])
def test_a_restored_server_is_off_the_network_unless_asked(chain, network):
    """Before: a restored copy of the data kept the source's listen_addresses and
    pg_hba.conf, so it was reachable from wherever the source was."""
    kw = {} if network == "local" else {"network": network}  # local: the default
    target, result = chain.restore(RestoreRequest(latest=True), f"restored-net-{network}", **kw)
    try:
        with connect_params({"host": str(target), "port": result.port, "user": "postgres", "dbname": "fixia"},
                            application_name="pgops:test", statement_timeout_s=30) as conn:
            listen = conn.execute("SHOW listen_addresses").fetchone()[0]
            rules = conn.execute("SELECT type, address FROM pg_catalog.pg_hba_file_rules "
                                 "ORDER BY line_number").fetchall()
            hba_file = conn.execute("SHOW hba_file").fetchone()[0]
        monitor = chain.server.passwords["pgops_monitor"]
        if network == "source":
            assert listen == "127.0.0.1" and ("host", "127.0.0.1") in rules
            assert reachable_over_tcp(result.port, "pgops_monitor", monitor)
            return
        if network == "local":
            assert listen == "" and {r[0] for r in rules} == {"local"}
            assert not reachable_over_tcp(result.port, "pgops_monitor", monitor)
        else:
            assert listen == "localhost"
            assert set(rules) == {("local", None), ("host", "127.0.0.1"), ("host", "::1")}
            assert reachable_over_tcp(result.port, "pgops_monitor", monitor), "loopback with the role's password"
        assert hba_file == str(target / "pg_hba.conf"), "named explicitly: the source's may live elsewhere"
        assert not reachable_over_tcp(result.port, "postgres", None)
        assert result.socket_dir == str(target) and result.network == network
    finally:
        stop(target)
