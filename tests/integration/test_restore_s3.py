"""Restores from an encrypted S3 repository through a fault-injecting proxy: recovery's
restore_command (``pgops wal-fetch``, run by the server as the postgres OS user) rides
out transient S3 errors, and a lasting outage stops recovery instead of ending it early."""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid

import boto3
import pytest

from pgops.backup.basebackup import run_full_backup
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.errors import IntegrityError
from pgops.postgres.cluster import find_bindir, free_port
from pgops.repository import open_repository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore

from .faultproxy import FaultProxy, Rule
from .servers import make_fixia, start_cluster
from .test_restore import labels, shared_tempdir, stop, write_probe


def wal_reads(method: str, path: str) -> bool:
    """GETs of stored WAL segments (not listings, not backup objects)."""
    return method == "GET" and "/wal/" in path and ".zst" in path


def wal_listings(method: str, path: str) -> bool:
    return method == "GET" and "list-type=2" in path and "prefix=fixia%2Fwal%2F" in path


@pytest.fixture(scope="module")
def s3_chain(s3_endpoint):
    saved = dict(os.environ)
    base = shared_tempdir("pgops-restore-s3-")
    cluster = start_cluster()
    proxy = FaultProxy(s3_endpoint)
    try:
        url = proxy.start()
        server = make_fixia(cluster, scale=None)
        bucket = f"r-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        os.environ.update(server.airflow_conn_env())
        os.environ["AIRFLOW_CONN_PGOPS_S3"] = json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": url, "region_name": "us-east-1"}})
        os.environ["AIRFLOW_CONN_PGOPS_ENCRYPTION"] = json.dumps({
            "conn_type": "generic", "password": base64.b64encode(os.urandom(32)).decode()})
        config = parse_config({"repository": {"url": f"s3://{bucket}/fixia", "part_size_mib": 5},
                               "encryption": {"enabled": True},
                               "backup": {"spool_dir": str(base / "spool")},
                               "restore": {"wal_fetch_retry_s": 3, "wal_prefetch": 2}})
        repo = open_repository(config.repository, config.encryption)
        with server.superuser() as conn:
            conn.execute("CREATE TABLE public.probe (id bigserial PRIMARY KEY, label text NOT NULL)")
        write_probe(server, "T1")
        run_full_backup(config, repo)
        write_probe(server, "T2")
        ship_wal(config, repo)
        write_probe(server, "T3")
        ship_wal(config, repo)
        yield config, repo, proxy, base
    finally:
        os.environ.clear()
        os.environ.update(saved)
        proxy.stop()
        cluster.destroy()
        for child in base.glob("restored-*"):
            stop(child)
        shutil.rmtree(base, ignore_errors=True)


def test_recovery_rides_out_transient_s3_errors(s3_chain):
    config, repo, proxy, base = s3_chain
    proxy.rules[:] = [Rule(wal_reads, ("status", 503, "SlowDown"), times=3),
                      Rule(wal_reads, ("reset",), times=1),
                      Rule(wal_listings, ("status", 500, "InternalError"), times=2)]
    target = base / "restored-flaky"
    result = run_restore(config, repo, RestoreRequest(latest=True), target, start=True)
    try:
        assert all(rule.hits == rule.times for rule in proxy.rules), [(r.action, r.hits) for r in proxy.rules]
        assert labels(target, result.port) == ["T1", "T2", "T3"]
    finally:
        stop(target)


def test_a_lasting_outage_stops_recovery_instead_of_ending_it(s3_chain):
    config, repo, proxy, base = s3_chain
    proxy.rules[:] = []
    target = base / "restored-outage"
    # The backup and its own WAL download fine; then S3 goes away for good.
    restored = run_restore(config, repo, RestoreRequest(latest=True), target, port=free_port(), socket_dir=target)
    proxy.rules[:] = [Rule(wal_listings, ("status", 503, "SlowDown"), times=10_000),
                      Rule(wal_reads, ("status", 503, "SlowDown"), times=10_000)]
    from pgops.restore.run import start_and_wait

    with pytest.raises(IntegrityError, match="stopped during recovery.*FATAL"):
        start_and_wait(find_bindir(), target, target / "log" / "pgops-restore.log", timeout_s=300)
    assert (target / "recovery.signal").exists(), "recovery must not have ended and promoted"
    log_text = (target / "log" / "pgops-restore.log").read_text()
    assert "selected new timeline ID" not in log_text and "archive recovery complete" not in log_text
    assert "exit code 255" in log_text

    # S3 is back: starting the server again finishes the recovery, losing nothing.
    proxy.rules[:] = []
    facts = start_and_wait(find_bindir(), target, target / "log" / "pgops-restore.log", timeout_s=300)
    try:
        assert facts["new_timeline"] == "2"
        assert labels(target, restored.port) == ["T1", "T2", "T3"]
    finally:
        stop(target)
    assert restored.backup_id
