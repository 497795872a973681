"""WAL shipping beside a long full backup, and bookkeeping that never blocks WAL.

* A full backup throttled with ``backup.max_rate`` outlasts several WAL runs; WAL ships
  during it, the server recycles WAL meanwhile (no wal_keep_size, small max_wal_size),
  the backup still completes (its temporary slot holds its WAL), and a point-in-time
  restore to a moment inside the backup window has exactly the rows committed before it.
* A sentinel count that fails (a dropped table, a lock the count would wait for) or a
  sentinel that cannot be written is recorded and warned about; WAL still ships; the
  restore test names it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import datetime, timezone

import pytest

from pgops.backup.basebackup import run_full_backup
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.postgres.cluster import FIXIA_SERVER_SETTINGS, chown_to_server_user, free_port
from pgops.postgres.session import connect_params
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore
from pgops.restore.verification import verify_restore

from .servers import make_fixia, start_cluster
from .test_restore import shared_tempdir, stop, write_probe

RECYCLING = {**FIXIA_SERVER_SETTINGS, "max_wal_size": "32MB", "min_wal_size": "32MB", "wal_keep_size": "0"}


@pytest.fixture
def env():
    """A Fixia server that really removes WAL no slot holds, a probe table, its job
    connections in the environment, a local repository; all undone afterwards."""
    saved = dict(os.environ)
    base = shared_tempdir("pgops-beside-")
    cluster = start_cluster(settings=RECYCLING)
    try:
        server = make_fixia(cluster, scale=None)
        os.environ.update(server.airflow_conn_env())
        with server.superuser() as conn:
            conn.execute("CREATE TABLE public.probe (id bigserial PRIMARY KEY, label text NOT NULL)")
            conn.execute("CREATE TABLE public.churn (id bigserial PRIMARY KEY, pad text)")
            conn.execute("GRANT SELECT ON public.probe TO pgops_backup")
        raw = {"repository": {"url": str(base / "repo")},
               "backup": {"spool_dir": str(base / "spool"), "slot_name": "pgops_beside"},
               "restore_verification": {"scratch_dir": str(base / "scratch"),
                                        "count_tables": ["public.probe", "fixia.users"],
                                        "count_timeout_ms": 500}}
        yield server, raw, parse_config(raw), LocalRepository(base / "repo"), base
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for child in base.glob("restored-*"):
            stop(child)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def next_second() -> None:
    """Backup ids have a resolution of one second: wait for the next one."""
    time.sleep(1.05 - time.time() % 1)


def churn(server, mib: int) -> None:
    with server.superuser() as conn:
        conn.execute("INSERT INTO public.churn (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, %s) g",
                     [mib * 1024])
        conn.execute("CHECKPOINT")


def test_wal_ships_during_a_long_full_backup_and_restores_inside_its_window(env):
    server, raw, config, repo, base = env
    write_probe(server, "before-A")
    first = run_full_backup(config, repo)  # the backup a restore inside the next one's window starts from
    ship_wal(config, repo)

    # A counted table that is gone: its count fails in the backup's own session, which
    # must not end the WAL hold (a session's temporary slot goes at any error in it).
    slow = parse_config({**raw, "backup": {**raw["backup"], "max_rate": "6M"},
                         "restore_verification": {**raw["restore_verification"],
                                                  "count_tables": ["public.probe", "public.gone"]}})
    next_second()  # a new backup id
    outcome: dict = {}

    def backup() -> None:
        try:
            outcome["record"] = run_full_backup(slow, repo)
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            outcome["error"] = exc

    thread = threading.Thread(target=backup)
    thread.start()
    try:
        time.sleep(2)
        assert thread.is_alive(), f"the throttled backup must outlast the WAL runs: {outcome}"
        write_probe(server, "inside-1")
        churn(server, 40)  # more than max_wal_size, recycled by the checkpoints unless a slot holds them
        during = [ship_wal(config, repo)]
        inside = write_probe(server, "inside-2")
        time.sleep(0.5)
        target = datetime.now(timezone.utc)
        time.sleep(0.5)
        write_probe(server, "after-target")
        churn(server, 40)
        during.append(ship_wal(config, repo))
        assert thread.is_alive(), "WAL runs finished while the full backup was still running"
    finally:
        thread.join(timeout=600)
    assert "error" not in outcome, f"the full backup failed beside WAL shipping: {outcome.get('error')!r}"
    second = outcome["record"]
    assert second.start_time < inside < target < second.stop_time, "the target lies inside the second backup"
    assert all(r.shipped for r in during), "every WAL run during the backup shipped WAL"
    assert all(r.chain_breaks == [] for r in during)
    assert "public.gone does not exist" in second.sentinel["count_errors"]["public.gone"]
    with server.superuser() as conn:
        left = conn.execute("SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE temporary").fetchone()[0]
    assert left == 0, "the backup's temporary slot is gone with its session"

    ship_wal(config, repo)  # the WAL up to now, so the target is restorable
    restored = base / "restored-inside"
    socket_dir = shared_tempdir("pgops-beside-sock-")
    socket_dir.chmod(0o700)
    chown_to_server_user(socket_dir)
    result = run_restore(config, repo, RestoreRequest(target_time=target), restored, start=True,
                         port=free_port(), socket_dir=socket_dir)
    try:
        assert result.backup_id == first.id, "a moment inside a backup's window restores from the one before"
        with connect_params({"host": str(socket_dir), "port": result.port, "user": "postgres", "dbname": "fixia"},
                            application_name="pgops:test", statement_timeout_s=30) as conn:
            labels = [r[0] for r in conn.execute("SELECT label FROM public.probe ORDER BY id")]
        assert labels == ["before-A", "inside-1", "inside-2"]
    finally:
        stop(restored)
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_the_backup_alone_drill_checks_the_backups_own_sentinel(env):
    """restore_verification.on_full_backup: a drill right after a backup, before any WAL
    was shipped for it, finds the backup's own sentinel and compares relations."""
    server, raw, config, repo, base = env
    write_probe(server, "one")
    record = run_full_backup(config, repo)
    evidence = verify_restore(config, repo, RestoreRequest(latest=True))
    assert evidence.verdict == "passed"
    assert evidence.expected_sentinel == f"backup-{record.id}"
    verdicts = {c.name: c.verdict for c in evidence.checks}
    assert verdicts == {"recovery_target": "passed", "pg_amcheck": "passed", "sentinel": "passed",
                        "relations": "passed", "row_counts": "not_applicable"}


def test_a_dropped_counted_table_never_stops_wal_and_fails_the_drills_count_check(env, caplog):
    server, raw, config, repo, base = env
    write_probe(server, "one")
    run_full_backup(config, repo)
    with server.superuser() as conn:
        conn.execute("DROP TABLE public.probe")
    result = ship_wal(config, repo)
    assert result.shipped, "WAL still ships"
    assert result.sentinel and result.sentinel_error is None, "the sentinel is written without the count"
    assert "public.probe does not exist" in result.sentinel_count_errors["public.probe"]
    assert any("public.probe does not exist" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)

    from pgops.errors import IntegrityError

    with pytest.raises(IntegrityError, match="row_counts"):
        verify_restore(config, repo, RestoreRequest(latest=True))
    evidence = _newest_evidence(repo)
    checks = {c["name"]: c for c in evidence["checks"]}
    assert checks["row_counts"]["verdict"] == "failed"
    assert "public.probe does not exist" in checks["row_counts"]["detail"]
    assert {n for n, c in checks.items() if c["verdict"] == "passed"} == {"recovery_target", "pg_amcheck",
                                                                            "sentinel", "relations"}


def test_a_count_that_must_wait_for_a_lock_is_bounded_and_recorded(env):
    server, raw, config, repo, base = env
    run_full_backup(config, repo)
    with server.superuser() as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE public.probe IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        result = ship_wal(config, repo)
        elapsed = time.monotonic() - t0
        locker.execute("ROLLBACK")
    assert result.shipped and result.sentinel
    assert "took longer than 500 ms" in result.sentinel_count_errors["public.probe"]
    assert "fixia.users" not in result.sentinel_count_errors, "one slow table does not spoil the others"
    assert elapsed < 60


def test_a_sentinel_that_cannot_be_written_never_stops_wal(env):
    server, raw, config, repo, base = env
    run_full_backup(config, repo)
    with server.superuser() as conn:
        conn.execute("ALTER TABLE pgops.backup_sentinel RENAME TO backup_sentinel_away")
    try:
        result = ship_wal(config, repo)
        next_second()
        record = run_full_backup(config, repo)
    finally:
        with server.superuser() as conn:
            conn.execute("ALTER TABLE pgops.backup_sentinel_away RENAME TO backup_sentinel")
    assert result.shipped and result.sentinel is None
    assert "could not be written" in result.sentinel_error
    assert record.sentinel is None and "could not be written" in record.sentinel_error, "backups still run"


def _newest_evidence(repo) -> dict:
    import json

    keys = sorted(o.key for o in repo.list("backups/") if "/verification/" in o.key and o.key.endswith(".json"))
    return json.loads(repo.get_bytes(keys[-1]))


def test_wal_shipping_and_a_full_backup_repair_the_slot_one_at_a_time(env):
    """Both jobs create the slot when it is missing. The advisory lock lets one do it
    (recording the chain break) while the other waits and then finds the slot healthy:
    neither fails on a slot the other just created."""
    from pgops.backup.walship import _slot_state, ensure_slot
    from pgops.postgres.session import connect

    server, raw, config, repo, base = env
    errors: list[BaseException] = []
    recorded: list[list[str]] = []

    def repair(delay: float) -> None:
        def record(reasons: list[str]) -> None:
            recorded.append(reasons)
            time.sleep(delay)  # the other job arrives while this one is between check and create

        try:
            with connect(config.database.backup_conn_id, config.database, job="test") as conn:
                ensure_slot(conn, "pgops_race", archive_started=True, record=record)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=repair, args=(1.5,)), threading.Thread(target=repair, args=(0,))]
    threads[0].start()
    time.sleep(0.5)
    threads[1].start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(recorded) == 1, "one chain break, recorded once"
    with connect(config.database.backup_conn_id, config.database, job="test") as conn:
        assert _slot_state(conn, "pgops_race").exists


def test_a_large_table_is_counted_over_the_same_block_sample_on_both_sides(env):
    """Past count_max_pages a table is counted over a fixed sample of its blocks, and the
    restore test counts the same blocks of the restored copy: cheap, and still exact."""
    server, raw, config, repo, base = env
    sampled = parse_config({**raw, "restore_verification": {**raw["restore_verification"], "count_max_pages": 20,
                                                            "count_tables": ["public.churn", "public.probe"]}})
    with server.superuser() as conn:
        conn.execute("GRANT SELECT ON public.churn TO pgops_backup")
    churn(server, 8)  # about 1,000 blocks
    run_full_backup(sampled, repo)
    result = ship_wal(sampled, repo)
    assert result.sentinel and result.sentinel_count_errors == {}
    point = _newest_point(repo)
    facts = point["sentinel_facts"]
    assert set(facts["count_samples"]) == {"public.churn"}, "only the large table is sampled"
    with server.superuser() as conn:
        total = conn.execute("SELECT count(*) FROM public.churn").fetchone()[0]
    assert 0 < facts["counts"]["public.churn"] < total / 10, "the sample reads a small part of the table"
    evidence = verify_restore(sampled, repo, RestoreRequest(latest=True))
    row_counts = next(c for c in evidence.checks if c.name == "row_counts")
    assert row_counts.verdict == "passed" and "block sample" in row_counts.detail, row_counts


def _newest_point(repo) -> dict:
    import json

    from pgops.backup.walnames import POINTS_DIR

    return json.loads(repo.get_bytes(max(o.key for o in repo.list(POINTS_DIR))))


def test_a_drill_recovers_exactly_to_the_run_it_compares_with(env):
    """WAL stored after the newest point file (a run that shipped but has not written its
    point yet, or shipped during the drill) must not carry the restored state past the
    sentinel whose counts the drill compares: recovery stops after that run's WAL."""
    server, raw, config, repo, base = env
    write_probe(server, "one")
    run_full_backup(config, repo)
    first = ship_wal(config, repo)
    write_probe(server, "late")  # only in the WAL of the run whose point file is "not written yet"
    ship_wal(config, repo)
    newest = max(o.key for o in repo.list("wal/points/"))
    (repo.root / newest).unlink()
    evidence = verify_restore(config, repo, RestoreRequest(latest=True))
    assert evidence.expected_sentinel == first.sentinel
    verdicts = {c.name: (c.verdict, c.detail) for c in evidence.checks}
    assert verdicts["row_counts"][0] == "passed", verdicts["row_counts"]
    assert "public.probe 1" in verdicts["row_counts"][1]
    assert evidence.verdict == "passed"
