"""An encrypted repository written in format 1 (encryption container version 1, WAL
names with the plain sha256), as pgops wrote it before format 2: today's pgops verifies
it, ships WAL on into it (version 2 objects, keyed names) and restores across both."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil

import zstandard

from pgops.backup.basebackup import run_full_backup
from pgops.backup.verify import verify
from pgops.backup.walnames import IDENTITY_KEY, parse_wal_key
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.repository import open_repository
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore
from tests.encryption_v1 import V1Writer

from .servers import make_fixia, start_cluster
from .test_restore import labels, shared_tempdir, stop, write_probe


def test_a_format_1_encrypted_repository_is_verified_shipped_into_and_restored(monkeypatch):
    base = shared_tempdir("pgops-enc-upgrade-")
    cluster = start_cluster()
    target = base / "restored"
    try:
        server = make_fixia(cluster, scale=None)
        for name, value in server.airflow_conn_env().items():
            monkeypatch.setenv(name, value)
        key = os.urandom(32)
        monkeypatch.setenv("AIRFLOW_CONN_PGOPS_ENCRYPTION", json.dumps(
            {"conn_type": "generic", "password": base64.b64encode(key).decode()}))
        config = parse_config({"repository": {"url": str(base / "repo")}, "encryption": {"enabled": True},
                               "backup": {"spool_dir": str(base / "spool")}})
        with server.superuser() as conn:
            conn.execute("CREATE TABLE public.probe (id bigserial PRIMARY KEY, label text NOT NULL)")

        old = V1Writer(LocalRepository(base / "repo"), key)
        write_probe(server, "T1")
        run_full_backup(config, old)
        identity = json.loads(old.get_bytes(IDENTITY_KEY))
        old.put_bytes(IDENTITY_KEY, json.dumps({**identity, "format": 1}).encode())  # as format 1 wrote it
        write_probe(server, "T2")
        ship_wal(config, old)
        old_wal = {o.key for o in old.list("wal/") if o.key.endswith(".zst")}
        assert old_wal and all(p.read_bytes()[8] == 1 for p in (base / "repo").rglob("*") if p.is_file())

        repo = open_repository(config.repository, config.encryption)
        write_probe(server, "T3")
        ship_wal(config, repo)
        new_wal = {o.key for o in repo.list("wal/") if o.key.endswith(".zst")} - old_wal
        assert new_wal
        for stored in new_wal:
            assert (base / "repo" / stored).read_bytes()[8] == 2
            segment = zstandard.ZstdDecompressor().decompress(repo.get_bytes(stored), max_output_size=2**25)
            assert parse_wal_key(stored)[1] != hashlib.sha256(segment).hexdigest()
        report = verify(repo, full=True)
        assert report.problems == [] and report.checked_segments == len(old_wal | new_wal)

        (base / "repo").chmod(0o755)
        result = run_restore(config, repo, RestoreRequest(latest=True), target, start=True)
        assert labels(target, result.port) == ["T1", "T2", "T3"]
    finally:
        stop(target)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
