"""A promotion (new timeline) seen by WAL shipping: history file shipped, chain break reported."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


from pgops.backup.basebackup import run_full_backup
from pgops.backup.inventory import scan, summarize
from pgops.backup.verify import verify
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.postgres.cluster import LocalCluster, as_server_user, chown_to_server_user, free_port
from pgops.repository.local import LocalRepository

from .servers import make_fixia, start_cluster


def test_promotion_is_a_chain_break_and_its_history_is_shipped(tmp_path, monkeypatch):
    primary = start_cluster()
    standby = LocalCluster(Path(tempfile.mkdtemp(prefix="pgops-test-standby-")), free_port())
    try:
        server = make_fixia(primary, scale=None)
        for key, value in server.airflow_conn_env().items():
            monkeypatch.setenv(key, value)
        config = parse_config({"repository": {"url": str(tmp_path / "repo")},
                               "backup": {"spool_dir": str(tmp_path / "spool")}})
        repo = LocalRepository(tmp_path / "repo")
        run_full_backup(config, repo)
        ship_wal(config, repo)

        # A streaming standby of the primary, then promoted: timeline 2, same system.
        for sub in ("data", "run", "log"):
            (standby.base / sub).mkdir(parents=True, exist_ok=True)
        chown_to_server_user(standby.base)
        (standby.base / "data").chmod(0o700)
        subprocess.run(as_server_user([str(primary.bindir / "pg_basebackup"), "-d",
                                       f"host=127.0.0.1 port={primary.port} user=pgops_backup "
                                       f"password={server.passwords['pgops_backup']}",
                                       "-D", str(standby.datadir), "-X", "stream", "-R", "-c", "fast"]),
                       check=True, capture_output=True)
        standby.configure({"wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
                           "hot_standby": True}, ["host all all 127.0.0.1/32 scram-sha-256",
                                                  "host replication all 127.0.0.1/32 scram-sha-256"])
        standby.start()
        primary.stop()
        subprocess.run(as_server_user([str(standby.bindir / "pg_ctl"), "promote", "-w", "-D", str(standby.datadir)]),
                       check=True, capture_output=True)
        for key, value in server.airflow_conn_env().items():
            monkeypatch.setenv(key, value.replace(f'"port": {primary.port}', f'"port": {standby.port}'))

        result = ship_wal(config, repo)
        assert any("timeline switch" in b for b in result.chain_breaks), result.chain_breaks
        inv = scan(repo)
        assert "00000002.history" in inv.history_objects
        assert 2 in inv.segments() or result.timeline == 2

        # Timeline 1's last WAL (the standby's backup, the primary's shutdown) was never
        # shipped: recovery from the timeline 1 backup cannot follow onto timeline 2.
        problems = verify(repo).problems
        assert any("of timeline 1, up to its switch to timeline 2" in p for p in problems), problems

        run_full_backup(config, repo)  # the new chain: the recorded gap is known from here on
        again = ship_wal(config, repo)
        assert again.chain_breaks == []
        assert verify(repo, full=True).problems == []
        (chain_break,) = summarize(scan(repo))["chain_breaks"]
        assert chain_break["acknowledged"] and "timeline switch" in chain_break["reasons"][0]
    finally:
        standby.destroy()
        primary.destroy()
