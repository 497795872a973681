"""Full backups from a real PostgreSQL 15 into both repository backends."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import zstandard

from pgops.backup import catalog
from pgops.backup.basebackup import run_full_backup
from pgops.backup.frames import FrameIndex, decompress_frame
from pgops.config import PgopsConfig
from pgops.errors import UnsafeOperation
from pgops.postgres.cluster import as_server_user, chown_to_server_user, find_bindir
from pgops.repository.local import LocalRepository


def extract(repo, record: catalog.BackupRecord, target: Path) -> None:
    """Rebuild the data directory from the stored frames (checking each) with GNU tar."""
    index = FrameIndex.from_json(json.loads(repo.get_bytes(record.objects["index"].key)))
    tar = subprocess.Popen(["tar", "-x", "-C", str(target)], stdin=subprocess.PIPE)
    for frame in index.frames:
        stored = repo.get_bytes(record.objects["data"].key, frame.stored_offset, frame.stored_size)
        tar.stdin.write(decompress_frame(stored, frame.sha256, frame.raw_size))
    tar.stdin.close()
    assert tar.wait() == 0


def test_full_backup_passes_pg_verifybackup(fixia_conns, tmp_path):
    repo = LocalRepository(tmp_path / "repo")
    record = run_full_backup(PgopsConfig(), repo)

    stored = {o.key for o in repo.list(catalog.backup_prefix(record.id))}
    assert stored == {o.key for o in record.objects.values()} | {catalog.backup_key(record.id, "backup.json")}
    for obj in record.objects.values():
        assert repo.sha256(obj.key) == obj.sha256
    assert record.raw_size > 250 * 2**20 and record.stored_size < record.raw_size / 2
    with fixia_conns.superuser() as conn:
        sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    assert record.system_identifier == sysid and record.pg_version == "15" and record.timeline == 1

    # The whole stored object is an ordinary zstd file too.
    whole = zstandard.ZstdDecompressor().stream_reader(repo.root.joinpath(record.objects["data"].key).open("rb"))
    assert whole.read(512)[:12] == b"backup_label"

    target = Path(tempfile.mkdtemp(prefix="pgops-verify-"))
    try:
        extract(repo, record, target)
        chown_to_server_user(target)
        proc = subprocess.run(as_server_user([str(find_bindir() / "pg_verifybackup"), str(target)]),
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "backup successfully verified" in proc.stdout
    finally:
        shutil.rmtree(target, ignore_errors=True)

    (entry,) = catalog.read_catalog(repo)
    assert entry.record == record


def test_repository_of_another_cluster_is_refused(fixia_conns, tmp_path):
    repo = LocalRepository(tmp_path / "repo")
    repo.put_bytes(catalog.IDENTITY_KEY, json.dumps(
        {"format": 1, "system_identifier": "42", "pg_version": "15"}).encode())
    with pytest.raises(UnsafeOperation, match="belongs to the cluster with system identifier 42"):
        run_full_backup(PgopsConfig(), repo)
    assert repo.list(catalog.BACKUPS) == []


def test_full_backup_then_wal_shipping_is_one_gap_free_chain(tmp_path, monkeypatch):
    """The backup creates the slot before it starts, so the WAL from its start on is
    kept and the first WAL run continues the chain without a break."""
    from pgops.backup import wal
    from pgops.backup.walnames import WAL_PREFIX, parse_wal_key
    from pgops.backup.walship import ship_wal
    from pgops.config import parse_config

    from .servers import make_fixia, start_cluster

    cluster = start_cluster()
    try:
        server = make_fixia(cluster, scale=None)
        for key, value in server.airflow_conn_env().items():
            monkeypatch.setenv(key, value)
        config = parse_config({"repository": {"url": str(tmp_path / "repo")},
                               "backup": {"spool_dir": str(tmp_path / "spool")}})
        repo = LocalRepository(tmp_path / "repo")
        record = run_full_backup(config, repo)
        with server.superuser() as conn:
            conn.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 300000) g")
        result = ship_wal(config, repo)
        assert result.chain_breaks == []
        numbers = sorted(wal.parse_segment(parse_wal_key(o.key)[0]).number
                         for o in repo.list(WAL_PREFIX) if "/points/" not in o.key)
        start = wal.parse_segment(record.start_wal_segment).number
        assert numbers[0] <= start
        assert numbers == list(range(numbers[0], numbers[-1] + 1))
    finally:
        cluster.destroy()


def test_encrypted_full_backup_verifies_and_needs_its_key(fixia_conns, tmp_path, monkeypatch):
    import base64
    import os

    from pgops.backup.verify import verify
    from pgops.config import parse_config
    from pgops.errors import ConfigError
    from pgops.repository import open_repository

    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_ENCRYPTION", json.dumps({"conn_type": "generic", "password": key}))
    config = parse_config({"repository": {"url": str(tmp_path / "repo")}, "encryption": {"enabled": True}})
    repo = open_repository(config.repository, config.encryption)
    record = run_full_backup(config, repo)
    assert record.encryption_key_id == repo.key_id
    raw = (tmp_path / "repo" / record.objects["data"].key).read_bytes()
    assert b"backup_label" not in raw[:4096] and raw.startswith(b"PGOPSENC")
    assert verify(repo, full=True).problems == []

    target = Path(tempfile.mkdtemp(prefix="pgops-verify-"))
    try:
        extract(repo, record, target)
        assert (target / "PG_VERSION").read_text().strip() == "15"
    finally:
        shutil.rmtree(target, ignore_errors=True)

    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_ENCRYPTION", json.dumps(
        {"conn_type": "generic", "password": base64.b64encode(os.urandom(32)).decode()}))
    wrong = open_repository(config.repository, config.encryption)
    with pytest.raises(ConfigError, match="wrong key"):
        wrong.get_bytes(record.objects["data"].key, 0, 10)
    monkeypatch.delenv("AIRFLOW_CONN_PGOPS_ENCRYPTION")
    with pytest.raises(ConfigError, match="pgops_encryption"):
        open_repository(config.repository, config.encryption)
