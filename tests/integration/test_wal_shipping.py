"""WAL shipping against a real PostgreSQL 15 cluster of its own."""

from __future__ import annotations

import shutil

import pytest

from pgops.backup import wal
from pgops.backup.basebackup import run_full_backup
from pgops.backup.inventory import scan, summarize
from pgops.backup.verify import verify
from pgops.backup.walnames import BREAKS_DIR, WAL_PREFIX, parse_wal_key
from pgops.backup.walship import ship_wal
from pgops.config import parse_config
from pgops.errors import IntegrityError
from pgops.repository.local import LocalRepository

from .servers import make_fixia, start_cluster


def churn_server(monkeypatch, settings=None):
    """A Fixia server (its connections in the environment) with a table to write WAL into."""
    cluster = start_cluster(settings=settings)
    try:
        srv = make_fixia(cluster, scale=None)
        for key, value in srv.airflow_conn_env().items():
            monkeypatch.setenv(key, value)
        with srv.superuser() as conn:
            conn.execute("CREATE TABLE public.churn (id bigserial PRIMARY KEY, pad text)")
        yield srv
    finally:
        cluster.destroy()


@pytest.fixture
def server(monkeypatch):
    yield from churn_server(monkeypatch)


@pytest.fixture
def config(tmp_path):
    return parse_config({"repository": {"url": str(tmp_path / "repo")},
                         "backup": {"spool_dir": str(tmp_path / "spool"), "slot_name": "pgops_test"}})


def write_wal(server, mib: int) -> None:
    with server.superuser() as conn:
        conn.execute("INSERT INTO public.churn (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, %s) g",
                     [mib * 1024])


def stored_segments(repo) -> list[wal.Segment]:
    names = [parse_wal_key(o.key)[0] for o in repo.list(WAL_PREFIX) if "/history/" not in o.key
             and not o.key.startswith(("wal/points/", "wal/breaks/"))]
    return sorted(wal.parse_segment(n) for n in names)


def test_shipping_is_gap_free_idempotent_and_reports_a_new_slot(server, config):
    repo = LocalRepository(config.repository.local_path())
    first = ship_wal(config, repo)
    assert first.chain_breaks == [], "an empty repository has no chain to break"
    assert len(first.shipped) == 1

    write_wal(server, 40)
    second = ship_wal(config, repo)
    assert second.chain_breaks == []
    assert len(second.shipped) >= 3
    segs = stored_segments(repo)
    assert [s.number for s in segs] == list(range(segs[0].number, segs[-1].number + 1)), "gap in shipped WAL"
    assert second.slot_retained_bytes is not None and second.slot_retained_bytes < 16 * 2**20

    spool = config.resolve_path(config.backup.spool_dir) / "pgops_test"
    assert [p.name for p in spool.iterdir() if not p.name.endswith(".partial")] == []

    third = ship_wal(config, repo)  # nothing written since: nothing new, nothing duplicated
    assert third.shipped == [] or len(third.shipped) == 1
    assert len(stored_segments(repo)) == len(set(stored_segments(repo)))


def test_rerun_after_crash_ships_only_what_is_missing(server, config):
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    write_wal(server, 20)
    ship_wal(config, repo)
    spool = config.resolve_path(config.backup.spool_dir) / "pgops_test"
    # A crash after the upload but before the spool file was removed: the file is back.
    last = stored_segments(repo)[-1]
    import zstandard

    (key,) = [o.key for o in repo.list(f"wal/{last.name[:16]}/{last.name}-")]
    (spool / last.name).write_bytes(zstandard.ZstdDecompressor().decompress(repo.get_bytes(key)))
    before = len(stored_segments(repo))
    result = ship_wal(config, repo)
    assert last.name in result.already_stored
    assert not (spool / last.name).exists()
    assert len(stored_segments(repo)) >= before


def test_a_different_segment_under_a_stored_name_is_refused(server, config):
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    spool = config.resolve_path(config.backup.spool_dir) / "pgops_test"
    first = stored_segments(repo)[0]
    (spool / first.name).write_bytes(b"\0" * 16 * 2**20)
    objects_before = repo.list(WAL_PREFIX)
    with pytest.raises(IntegrityError, match="different checksum"):
        ship_wal(config, repo)
    assert [o.key for o in repo.list(f"wal/{first.name[:16]}/{first.name}-")] == \
           [o.key for o in objects_before if f"/{first.name}-" in o.key]
    assert (spool / first.name).exists(), "the conflicting file is kept for inspection"


def test_a_dropped_slot_is_a_chain_break_reported_until_a_full_backup(server, config):
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    with server.superuser() as conn:
        conn.execute("SELECT pg_drop_replication_slot('pgops_test')")
    write_wal(server, 20)
    result = ship_wal(config, repo)
    assert any("did not exist" in b for b in result.chain_breaks)
    (record,) = repo.list(BREAKS_DIR)

    # The slot is healthy again, but the gap is not closed: a retry or the next run says so.
    again = ship_wal(config, repo)
    assert len(again.chain_breaks) == 1 and record.key in again.chain_breaks[0], again.chain_breaks
    assert "did not exist" in again.chain_breaks[0]
    assert [b["acknowledged"] for b in summarize(scan(repo))["chain_breaks"]] == [False]

    run_full_backup(config, repo)  # the new chain
    assert ship_wal(config, repo).chain_breaks == []
    assert [b["acknowledged"] for b in summarize(scan(repo))["chain_breaks"]] == [True]
    assert verify(repo).problems == []


def test_a_full_backup_that_recreates_the_slot_records_the_break(server, config, monkeypatch):
    """The full backup recreates a dropped slot; if it then fails, WAL shipping keeps
    reporting the break; once a backup completes, it is closed."""
    from pgops.backup import basebackup
    from pgops.errors import TransientError

    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    with server.superuser() as conn:
        conn.execute("SELECT pg_drop_replication_slot('pgops_test')")
    with monkeypatch.context() as m:
        m.setattr(basebackup, "with_buffered_stdout", lambda argv: ["false"])  # pg_basebackup fails
        with pytest.raises(TransientError):
            run_full_backup(config, repo)
    (record,) = repo.list(BREAKS_DIR)
    result = ship_wal(config, repo)
    assert len(result.chain_breaks) == 1 and record.key in result.chain_breaks[0]
    run_full_backup(config, repo)
    assert ship_wal(config, repo).chain_breaks == []


def test_wal_lost_with_the_spool_is_a_chain_break(server, config):
    """A run received WAL (so the slot released it on the server), then its spool was
    lost: the next run must not carry on as if the archive were whole."""
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    newest = stored_segments(repo)[-1]
    write_wal(server, 40)
    with server.superuser() as conn:  # what pg_receivewal's feedback does once WAL is in the spool
        lsn = conn.execute("SELECT pg_switch_wal()").fetchone()[0]
        conn.execute("SELECT pg_replication_slot_advance('pgops_test', %s::pg_lsn)", [str(lsn)])
    spool = config.resolve_path(config.backup.spool_dir) / "pgops_test"
    shutil.rmtree(spool)  # and then the spool went (pg_receivewal resumes from it when it is there)
    result = ship_wal(config, repo)
    (gap,) = result.chain_breaks
    assert f"WAL {newest.next().name}.." in gap and "never shipped" in gap
    assert len(repo.list(BREAKS_DIR)) == 1
    assert any(f"WAL gap {newest.next().name}" in p for p in verify(repo).problems)

    run_full_backup(config, repo)  # a new chain: the gap is now a known, recorded break
    assert verify(repo).problems == []
    view = summarize(scan(repo))
    assert view["wal"][0]["gaps"] and [b["acknowledged"] for b in view["chain_breaks"]] == [True]


def test_wal_of_another_cluster_is_refused_before_anything_ships(server, config, monkeypatch):
    """A re-created cluster (new system identifier) behind the same connection must not
    mix its WAL into the old cluster's archive: refused, naming both identifiers."""
    from pgops.errors import UnsafeOperation

    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    before = sorted(o.key for o in repo.list())
    other = start_cluster()
    try:
        srv = make_fixia(other, scale=None)
        for key, value in srv.airflow_conn_env().items():
            monkeypatch.setenv(key, value)
        with pytest.raises(UnsafeOperation, match="system identifier"):
            ship_wal(config, repo)
        assert sorted(o.key for o in repo.list()) == before
        with srv.superuser() as conn:
            slots = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0]
        assert slots == 0, "nothing is created on the other cluster either"
    finally:
        other.destroy()


@pytest.fixture
def lossy_server(monkeypatch):
    """A server that really removes WAL no slot holds: small max_wal_size, no wal_keep_size."""
    from pgops.postgres.cluster import FIXIA_SERVER_SETTINGS

    yield from churn_server(monkeypatch, {**FIXIA_SERVER_SETTINGS, "max_wal_size": "32MB", "min_wal_size": "32MB",
                                          "wal_keep_size": "0"})


def lose_wal(server) -> None:
    """The slot goes and the server recycles the WAL it held."""
    with server.superuser() as conn:
        conn.execute("SELECT pg_drop_replication_slot('pgops_test')")
    for _ in range(3):
        write_wal(server, 40)
        with server.superuser() as conn:
            conn.execute("CHECKPOINT")


@pytest.mark.parametrize("spool_lost_too", [False, True])
def test_a_full_backup_that_repairs_a_lost_slot_leaves_shipping_working(lossy_server, config, spool_lost_too):
    """The full backup recreates the slot after WAL was really lost. The next WAL runs
    must neither get stuck on the spool's stale unfinished segment (the server no longer
    has its WAL) nor record the known gap a second time; verify knows the gap."""
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    write_wal(lossy_server, 20)
    ship_wal(config, repo)
    lose_wal(lossy_server)
    if spool_lost_too:
        shutil.rmtree(config.resolve_path(config.backup.spool_dir) / "pgops_test")
    run_full_backup(config, repo)
    (record,) = repo.list(BREAKS_DIR)
    for _ in range(2):
        assert ship_wal(config, repo).chain_breaks == []
    assert [o.key for o in repo.list(BREAKS_DIR)] == [record.key]
    view = summarize(scan(repo))
    assert view["wal"][0]["gaps"], "the gap is real and listed"
    assert [b["acknowledged"] for b in view["chain_breaks"]] == [True]
    assert verify(repo).problems == []


def test_a_run_that_recreated_a_lost_slot_and_died_is_not_stuck(lossy_server, config, monkeypatch):
    """A WAL run recreates a lost slot (recording the break), then dies before shipping.
    Its retry must not resume from the stale unfinished segment, and must still report
    the break until a full backup follows."""
    from pgops.backup import walship

    repo = LocalRepository(config.repository.local_path())
    run_full_backup(config, repo)
    ship_wal(config, repo)
    lose_wal(lossy_server)
    with monkeypatch.context() as m:
        m.setattr(walship, "record_sentinel", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("worker died")))
        with pytest.raises(RuntimeError, match="worker died"):
            ship_wal(config, repo, run_id="scheduled__1")
    (record,) = repo.list(BREAKS_DIR)
    retry = ship_wal(config, repo, run_id="scheduled__1")
    assert len(retry.chain_breaks) == 1 and record.key in retry.chain_breaks[0], retry.chain_breaks
    assert retry.shipped, "shipping carries on from the new slot"
    # The Asset was never emitted by the attempt that died: its retry announces the break;
    # a later run reports it but does not ask for another backup.
    assert retry.new_chain_breaks == retry.chain_breaks
    later = ship_wal(config, repo, run_id="scheduled__2")
    assert later.chain_breaks and later.new_chain_breaks == []
    run_full_backup(config, repo)
    assert ship_wal(config, repo).chain_breaks == []
    assert verify(repo).problems == []


def fail_uploads(monkeypatch, config, repo) -> None:
    """A run during a repository outage: received WAL stays in the spool."""
    from pgops.backup import walship
    from pgops.errors import TransientError

    def down(*args, **kwargs):
        raise TransientError("S3 down")

    with monkeypatch.context() as m:
        m.setattr(walship, "ship_file", down)
        with pytest.raises(TransientError):
            walship.ship_wal(config, repo)


def test_complete_leftovers_behind_a_recreated_slot_are_shipped_first(lossy_server, config, monkeypatch):
    """A run received WAL but could not upload it; then the slot was lost and recreated.
    pg_receivewal resumes after the newest complete segment in the spool, which the
    server no longer has: the leftovers ship first, so the run is not stuck."""
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    write_wal(lossy_server, 40)
    fail_uploads(monkeypatch, config, repo)
    spool = config.resolve_path(config.backup.spool_dir) / "pgops_test"
    leftovers = sorted(p.name for p in spool.iterdir() if wal.is_segment_name(p.name))
    assert leftovers
    lose_wal(lossy_server)
    result = ship_wal(config, repo)
    assert set(leftovers) <= set(result.shipped)
    assert any("did not exist" in b for b in result.new_chain_breaks)
    run_full_backup(config, repo)
    assert ship_wal(config, repo).chain_breaks == []
    assert verify(repo).problems == []


def test_a_later_loss_is_not_hidden_behind_an_old_break(lossy_server, config, monkeypatch):
    """A recorded, acknowledged break covers only the WAL lost before it. WAL lost later
    from the same segment on (an outage, then the spool's disk) is a new break."""
    repo = LocalRepository(config.repository.local_path())
    ship_wal(config, repo)
    write_wal(lossy_server, 20)
    ship_wal(config, repo)
    lose_wal(lossy_server)
    spool = config.resolve_path(config.backup.spool_dir) / "pgops_test"
    shutil.rmtree(spool)
    run_full_backup(config, repo)  # records the break and starts a new chain
    write_wal(lossy_server, 40)
    fail_uploads(monkeypatch, config, repo)
    received = max(wal.parse_segment(p.name) for p in spool.iterdir() if wal.is_segment_name(p.name))
    with lossy_server.superuser() as conn:  # pg_receivewal's feedback over the hour
        conn.execute("SELECT pg_replication_slot_advance('pgops_test', %s::pg_lsn)",
                     [wal.format_lsn(received.end_lsn)])
    shutil.rmtree(spool)  # and the worker's disk is lost
    write_wal(lossy_server, 20)
    result = ship_wal(config, repo)
    assert any("never shipped" in b for b in result.new_chain_breaks), result.chain_breaks
    assert len(repo.list(BREAKS_DIR)) == 2
    assert any("WAL gap" in p for p in verify(repo).problems)

