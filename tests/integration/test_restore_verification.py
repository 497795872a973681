"""The restore-verification DAG end to end (dag.test()): a real backup chain restored
into a scratch server, checked, evidence stored, scratch server gone; a failing check
makes the run red and still cleans up."""

from __future__ import annotations

import json
import os
import shutil
import time
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
            time.sleep(1.5)  # time targets between the two runs' sentinels (see the target_time drill)
        yield server, config, repo, base
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def drill_with_newest_point_edited(repo, edit):
    """Run the drill DAG with the newest shipping run's point file changed by ``edit``
    (restored afterwards)."""
    newest = max(o.key for o in repo.list(POINTS_DIR))
    original = repo.get_bytes(newest)
    point = json.loads(original)
    edit(point)
    (repo.root / newest).write_text(json.dumps(point))
    try:
        return load_dag("pgops_restore_verification").test()
    finally:
        (repo.root / newest).write_bytes(original)


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
    assert evidence["verdict"] == "passed" and evidence["format"] == 2
    verdicts = {c["name"]: c["verdict"] for c in evidence["checks"]}
    assert verdicts == {"recovery_target": "passed", "pg_amcheck": "passed", "sentinel": "passed",
                        "relations": "passed", "row_counts": "passed"}
    assert {c["name"] for c in evidence["checks"] if c["core"]} == {"recovery_target", "pg_amcheck", "sentinel",
                                                                      "relations"}
    newest_point = json.loads(repo.get_bytes(max(o.key for o in repo.list(POINTS_DIR))))
    assert evidence["expected_sentinel"] == newest_point["sentinel"], "latest: the newest shipping run's sentinel"
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
    assert any(e.get("verdict") == "passed" and e.get("backup_id") == evidence["backup_id"] for e in extras)


def test_a_failed_check_makes_the_run_red_and_still_cleans_up(verified_chain, airflow_db):
    _, config, repo, base = verified_chain
    before = set(evidence_objects(repo))

    def miscount(point: dict) -> None:  # the recorded count disagrees with the data: the check must catch it
        point["sentinel_facts"]["counts"]["public.probe"] += 1

    run = drill_with_newest_point_edited(repo, miscount)
    assert run.state == "failed"
    assert states(run) == {"prepare_scratch": "success", "verify_restore": "failed", "cleanup_scratch": "success"}
    assert list((base / "scratch").iterdir()) == []
    (json_key,) = [k for k in set(evidence_objects(repo)) - before if k.endswith(".json")]
    evidence = json.loads(repo.get_bytes(json_key))
    assert evidence["verdict"] == "failed"
    failed = [c for c in evidence["checks"] if c["verdict"] == "failed"]
    assert [c["name"] for c in failed] == ["row_counts"] and "public.probe: 3 restored, 4 recorded" in failed[0]["detail"]


def test_a_target_time_that_is_no_date_time_is_refused_before_a_run_exists(verified_chain, airflow_db):
    """The param's JSON schema (format date-time) is checked by the trigger form and the
    API: no run, no download."""
    from airflow.sdk.exceptions import ParamValidationError

    _, config, repo, base = verified_chain
    before = set(evidence_objects(repo))
    with pytest.raises(ParamValidationError, match="is not a 'date-time'"):
        load_dag("pgops_restore_verification").test(run_conf={"target_time": "yesterday"})
    assert set(evidence_objects(repo)) == before


@pytest.mark.parametrize("conf, words", [
    ({"target_tme": "2026-11-25T03:00:00+00:00"}, "unknown param(s) 'target_tme'"),
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


def newest_evidence(repo, before: set[str]) -> dict:
    (json_key,) = [k for k in set(evidence_objects(repo)) - before if k.endswith(".json")]
    return json.loads(repo.get_bytes(json_key))


def test_a_target_time_drill_checks_the_newest_sentinel_before_the_target(verified_chain, airflow_db):
    _, config, repo, base = verified_chain
    points = sorted((json.loads(repo.get_bytes(o.key)) for o in repo.list(POINTS_DIR)), key=lambda p: p["time"])
    first, second = points[-2:]
    # After the first shipping run's sentinel committed (more than the second the check
    # allows for its commit), before the second run began.
    target = datetime.fromisoformat(second["time"]) - timedelta(milliseconds=100)
    assert datetime.fromisoformat(first["sentinel_facts"]["written_at"]) < target - timedelta(seconds=1)
    before = set(evidence_objects(repo))
    run = load_dag("pgops_restore_verification").test(run_conf={"target_time": target.isoformat()})
    assert run.state == "success", states(run)
    evidence = newest_evidence(repo, before)
    assert evidence["expected_sentinel"] == first["sentinel"]
    verdicts = {c["name"]: c["verdict"] for c in evidence["checks"]}
    assert verdicts == {"recovery_target": "passed", "pg_amcheck": "passed", "sentinel": "passed",
                        "relations": "passed", "row_counts": "not_applicable"}


def test_a_drill_whose_core_check_cannot_run_is_red(verified_chain, airflow_db):
    """The newest shipping run recorded no sentinel (it could not be written): the
    sentinel check cannot run, and a core check that cannot run fails the drill."""
    _, config, repo, base = verified_chain
    before = set(evidence_objects(repo))
    run = drill_with_newest_point_edited(repo, lambda point: point.update(
        sentinel=None, sentinel_facts=None,
        sentinel_error="the sentinel wal-x could not be written: ConfigError: relation does not exist"))
    assert run.state == "failed"
    evidence = newest_evidence(repo, before)
    assert evidence["verdict"] == "failed"
    checks = {c["name"]: c for c in evidence["checks"]}
    assert checks["sentinel"]["verdict"] == "failed" and "could not be written" in checks["sentinel"]["detail"]
    assert checks["relations"]["verdict"] == "failed"
    assert checks["pg_amcheck"]["verdict"] == "passed"
    assert list((base / "scratch").iterdir()) == []


def test_clean_up_stops_a_scratch_server_whose_files_are_already_gone():
    """A clean-up killed half-way removed the files of a scratch server that still runs
    (with a copy of production data): the next clean-up finds it by its command line and
    stops it."""
    from pgops.postgres.cluster import LocalCluster, free_port
    from pgops.restore.verification import _alive, clean_scratch

    root = shared_tempdir("pgops-scratch-")
    cluster = LocalCluster(root / "verify-20260101T000000Z-abcdef", free_port())
    try:
        cluster.initdb()
        cluster.configure({}, [])
        cluster.start()
        pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        shutil.rmtree(cluster.base)
        assert _alive(pid), "the server runs on without its files"
        removed = clean_scratch(root)
        assert not _alive(pid)
        assert any("files were already gone" in r for r in removed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
