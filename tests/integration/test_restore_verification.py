"""The restore-verification DAG end to end (dag.test()): a real backup chain restored
into a scratch server, checked, evidence stored, scratch server gone; a failing check
makes the run red and still cleans up."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from pgops.backup import catalog
from pgops.backup.basebackup import run_full_backup
from pgops.backup.walnames import POINTS_DIR
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.repository.local import LocalRepository

from .servers import make_fixia, start_cluster
from .test_backup_dags import load_dag, states
from .test_restore import shared_tempdir, write_probe


@pytest.fixture(scope="module")
def verified_chain():
    saved = dict(os.environ)
    base = shared_tempdir("pgops-verify-")
    cluster = start_cluster()
    try:
        server = make_fixia(cluster, scale=None)
        os.environ.update(server.airflow_conn_env())
        raw = {"repository": {"url": str(base / "repo")},
               "backup": {"spool_dir": str(base / "spool")},
               "restore_verification": {"scratch_dir": str(base / "scratch"),
                                        "count_tables": ["public.probe", "fixia.users"]}}
        (base / "pgops.yaml").write_text(yaml.safe_dump(raw))
        os.environ["PGOPS_CONFIG"] = str(base / "pgops.yaml")
        config = parse_config(raw)
        repo = LocalRepository(base / "repo")
        with server.superuser() as conn:
            conn.execute("CREATE TABLE public.probe (id bigserial PRIMARY KEY, label text NOT NULL)")
            conn.execute("CREATE INDEX probe_label ON public.probe (label)")
            conn.execute("GRANT SELECT ON public.probe TO pgops_backup")
        write_probe(server, "T1")
        run_full_backup(config, repo)
        for label in ("T2", "T3"):
            write_probe(server, label)
            ship_wal(config, repo)
        yield server, config, repo, base
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def evidence_objects(repo) -> list[str]:
    return [o.key for o in repo.list(catalog.BACKUPS) if "/verification/" in o.key]


def test_verification_passes_stores_evidence_and_leaves_nothing_behind(verified_chain, airflow_db):
    _, config, repo, base = verified_chain
    run = load_dag("pgops_restore_verification").test()
    assert run.state == "success", states(run)
    assert states(run) == {"prepare_scratch": "success", "verify_restore": "success", "cleanup_scratch": "success"}
    assert list((base / "scratch").iterdir()) == [], "the scratch server must be gone"

    (json_key,) = [k for k in evidence_objects(repo) if k.endswith(".json")]
    evidence = json.loads(repo.get_bytes(json_key))
    assert evidence["verdict"] == "pass"
    verdicts = {c["name"]: c["verdict"] for c in evidence["checks"]}
    assert verdicts == {"recovery_target": "pass", "pg_amcheck": "pass", "sentinel": "pass",
                        "relations": "pass", "row_counts": "pass"}
    counts = next(c for c in evidence["checks"] if c["name"] == "row_counts")["detail"]
    assert "public.probe 3" in counts
    assert {"download_extract", "verifybackup", "recovery", "checks", "teardown"} <= evidence["timings_s"].keys()
    assert evidence["rto_s"] > 0 and evidence["rpo"]["last_replayed_commit"]
    assert repo.get_bytes(json_key.replace(".json", ".md")).decode().startswith("# Restore verification")
    from pgops.backup.verify import verify

    assert verify(repo, full=True).problems == [], "evidence objects are part of the backup, not strays"

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pgops.orchestration import RESTORE_VERIFIED_ASSET

    with create_session() as session:
        extras = session.scalars(select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.uri == RESTORE_VERIFIED_ASSET)).all()
    assert any(e.get("verdict") == "pass" and e.get("backup_id") == evidence["backup_id"] for e in extras)


def test_a_failed_check_makes_the_run_red_and_still_cleans_up(verified_chain, airflow_db):
    _, config, repo, base = verified_chain
    # The newest shipping point's recorded count disagrees with the data: the check must catch it.
    newest = max((o.key for o in repo.list(POINTS_DIR)))
    point = json.loads(repo.get_bytes(newest))
    point["sentinel_facts"]["counts"]["public.probe"] += 1
    original = repo.get_bytes(newest)
    (repo.root / newest).write_text(json.dumps(point))
    before = set(evidence_objects(repo))
    try:
        run = load_dag("pgops_restore_verification").test()
    finally:
        (repo.root / newest).write_bytes(original)
    assert run.state == "failed"
    assert states(run) == {"prepare_scratch": "success", "verify_restore": "failed", "cleanup_scratch": "success"}
    assert list((base / "scratch").iterdir()) == []
    (json_key,) = [k for k in set(evidence_objects(repo)) - before if k.endswith(".json")]
    evidence = json.loads(repo.get_bytes(json_key))
    assert evidence["verdict"] == "fail"
    failed = [c for c in evidence["checks"] if c["verdict"] == "fail"]
    assert [c["name"] for c in failed] == ["row_counts"] and "public.probe: 3 restored, 4 recorded" in failed[0]["detail"]


@pytest.mark.parametrize("conf, words", [
    ({"target_time": "yesterday"}, "not an ISO timestamp"),
    ({"target_time": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()}, "in the future"),
    ({"backup_id": "20990101T000000Z"}, "no such backup"),
])
def test_bad_params_fail_at_once_without_a_download(verified_chain, airflow_db, conf, words, capfd):
    _, config, repo, base = verified_chain
    before = set(evidence_objects(repo))
    run = load_dag("pgops_restore_verification").test(run_conf=conf)
    assert run.state == "failed"
    assert states(run)["verify_restore"] in ("failed", "upstream_failed")
    captured = capfd.readouterr()
    assert words in captured.out + captured.err
    assert set(evidence_objects(repo)) == before
    assert list((base / "scratch").iterdir()) == []
