"""Backups under fire: S3 faults during the upload, and the worker killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from pgops.backup import catalog, wal
from pgops.backup.basebackup import run_full_backup
from pgops.backup.inventory import scan, summarize
from pgops.backup.verify import verify
from pgops.backup.walnames import WAL_PREFIX, parse_wal_key
from pgops.config import parse_config
from pgops.errors import TransientError
from pgops.repository import open_repository
from pgops.repository.local import LocalRepository

from .faultproxy import FaultProxy, Rule
from .servers import make_fixia, start_cluster


@pytest.fixture
def s3_repo_config(s3_endpoint, monkeypatch):
    """A repository in a fresh bucket, reached through a fault-injecting proxy."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    proxy = FaultProxy(s3_endpoint)
    url = proxy.start()
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_S3", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": url, "region_name": "us-east-1"}}))
    config = parse_config({"repository": {"url": f"s3://{bucket}/fixia", "part_size_mib": 5}})
    yield config, proxy, bucket
    proxy.stop()


def parts_of(n):
    return lambda method, path: method == "PUT" and f"partNumber={n}&" in path + "&"


def test_full_backup_to_s3_survives_transient_faults(fixia_conns, s3_repo_config):
    config, proxy, _ = s3_repo_config
    proxy.rules += [Rule(parts_of(2), ("status", 500, "InternalError"), times=2),
                    Rule(parts_of(3), ("reset",), times=1),
                    Rule(parts_of(4), ("status", 503, "SlowDown"), times=2)]
    repo = open_repository(config.repository)
    record = run_full_backup(config, repo)
    assert all(rule.hits == rule.times for rule in proxy.rules)
    assert record.objects["data"].size > 15 * 2**20  # several parts
    assert verify(repo, full=True).problems == []


def test_a_failing_s3_never_commits_a_partial_backup(fixia_conns, s3_repo_config):
    config, proxy, bucket = s3_repo_config
    proxy.rules.append(Rule(parts_of(3), ("status", 503, "SlowDown"), times=1000))
    repo = open_repository(config.repository)
    with pytest.raises(TransientError, match="SlowDown"):
        run_full_backup(config, repo)
    view = summarize(scan(repo))
    assert [b["status"] for b in view["backups"]] in ([], ["incomplete"])
    assert not [o for o in repo.list("backups/") if o.key.endswith("backup.json")]
    client = boto3.client("s3", endpoint_url=proxy.upstream, region_name="us-east-1")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "parts left behind"


def pgops_cli(args, env, config_file):
    return subprocess.Popen([sys.executable, "-m", "pgops", "-v", "--config", str(config_file), *args],
                            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "plugins")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_killed_mid_upload_then_rerun(fixia_conns, tmp_path):
    repo_dir = tmp_path / "repo"
    config_file = tmp_path / "pgops.yaml"
    config_file.write_text(yaml.safe_dump({"repository": {"url": str(repo_dir)},
                                           "backup": {"spool_dir": str(tmp_path / "spool")}}))
    env = dict(os.environ)
    proc = pgops_cli(["backup", "full"], env, config_file)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tmp = [p for p in repo_dir.rglob(".tmp.data.tar.zst.*") if p.stat().st_size > 2 * 2**20]
        if tmp:
            break
        time.sleep(0.05)
    assert tmp, "the upload never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pg_basebackup
    proc.wait()
    repo = LocalRepository(repo_dir)
    assert [b["status"] for b in summarize(scan(repo))["backups"]] == []  # a temp file is no backup
    rerun = pgops_cli(["backup", "full"], env, config_file)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    (entry,) = [e for e in catalog.read_catalog(repo) if e.record]
    assert json.loads(out)["backup_id"] == entry.backup_id
    assert verify(repo, full=True).problems == []


def test_killed_mid_upload_to_s3_then_rerun_and_prune(fixia_conns, s3_repo_config, tmp_path):
    """A worker killed with a multipart upload in flight cannot abort it: the upload is
    left behind, invisible to listings, and nothing is committed. The rerun takes a whole
    backup; the next prune after the grace period aborts the orphaned upload."""
    from datetime import timedelta

    from pgops.backup.retention import Policy, prune

    config, proxy, bucket = s3_repo_config
    proxy.rules.append(Rule(parts_of(3), ("delay", 20), times=1))  # part 3 hangs: the kill lands mid-upload
    config_file = tmp_path / "pgops.yaml"
    config_file.write_text(yaml.safe_dump({"repository": {"url": config.repository.url, "part_size_mib": 5}}))
    proc = pgops_cli(["backup", "full"], dict(os.environ), config_file)
    deadline = time.monotonic() + 120
    while proxy.rules[0].hits == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proxy.rules[0].hits == 1, "the upload never reached part 3"
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pg_basebackup
    assert proc.wait() == -signal.SIGKILL
    client = boto3.client("s3", endpoint_url=proxy.upstream, region_name="us-east-1")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []), "the killed upload is left behind"
    repo = open_repository(config.repository)
    assert not [o for o in repo.list("backups/") if o.key.endswith("backup.json")], "nothing committed"

    rerun = pgops_cli(["backup", "full"], dict(os.environ), config_file)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    (entry,) = [e for e in catalog.read_catalog(repo) if e.record]
    assert json.loads(out)["backup_id"] == entry.backup_id, "stdout is the result alone, logs go to stderr"
    prune(repo, Policy(full_days=30, min_full_backups=2, pitr_days=7, incomplete_grace_hours=1),
          entry.record.stop_time + timedelta(hours=2))
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "orphaned parts stay billed"
    assert [b["status"] for b in summarize(scan(repo))["backups"]] == ["complete"]
    assert verify(repo, full=True).problems == []


def test_killed_mid_wal_ship_then_rerun(tmp_path):
    cluster = start_cluster()
    try:
        server = make_fixia(cluster, scale=None)
        env = {**os.environ, **server.airflow_conn_env()}
        config_file = tmp_path / "pgops.yaml"
        config_file.write_text(yaml.safe_dump({"repository": {"url": str(tmp_path / "repo")},
                                               "backup": {"spool_dir": str(tmp_path / "spool")}}))
        first = pgops_cli(["backup", "wal"], env, config_file)
        assert first.wait(timeout=120) == 0
        with server.superuser() as conn:
            conn.execute("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g")
        proc = pgops_cli(["backup", "wal"], env, config_file)
        killed = False
        for line in proc.stderr:  # kill right after the first segment is confirmed
            if "shipped wal/" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
        assert proc.wait() == -signal.SIGKILL and killed, "the run must be killed mid-way, not finish"
        spooled = [p for p in (tmp_path / "spool" / "pgops").iterdir() if not p.name.endswith(".partial")]
        assert spooled, "the kill must leave received segments unshipped in the spool"
        rerun = pgops_cli(["backup", "wal"], env, config_file)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        repo = LocalRepository(tmp_path / "repo")
        numbers = sorted(wal.parse_segment(parse_wal_key(o.key)[0]).number
                         for o in repo.list(WAL_PREFIX) if "/points/" not in o.key)
        assert numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) >= 5
        assert not [p for p in (tmp_path / "spool" / "pgops").iterdir() if not p.name.endswith(".partial")]
        assert verify(repo, full=True).problems == []
    finally:
        cluster.destroy()


def test_an_unreachable_repository_fails_before_any_work(fixia_conns, monkeypatch):
    from pgops.postgres.cluster import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_S3", json.dumps({
        "conn_type": "aws", "extra": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": "us-east-1"}}))
    config = parse_config({"repository": {"url": "s3://nowhere/fixia"}, "backup": {"slot_name": "pgops_unreachable"}})
    with pytest.raises(TransientError, match="nowhere"):
        run_full_backup(config, open_repository(config.repository))
    with fixia_conns.superuser() as conn:
        slots = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgops_unreachable'").fetchone()[0]
        backups = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'").fetchone()[0]
    assert slots == 0 and backups == 0
