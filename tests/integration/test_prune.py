"""Retention pruning on a repository filled by real backups and WAL shipping."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

import pytest

from pgops.backup import catalog
from pgops.backup.basebackup import run_full_backup
from pgops.backup.inventory import scan, summarize
from pgops.backup.retention import Policy, prune
from pgops.backup.verify import verify
from pgops.backup.walship import ship_wal
from pgops.errors import UnsafeOperation
from pgops.repository.local import LocalRepository

from .servers import fixia_with_local_repo


@pytest.fixture(scope="module")
def two_backups(tmp_path_factory):
    """backup A, WAL, backup B, WAL: A is older than B."""
    with fixia_with_local_repo(tmp_path_factory.mktemp("prune")) as (server, config, repo):
        records = []
        for i in range(2):
            records.append(run_full_backup(config, repo))
            with server.superuser() as conn:
                conn.execute(f"CREATE TABLE t{i} AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
            ship_wal(config, repo)
            time.sleep(1.1)  # distinct backup ids (second resolution)
        yield repo, records


@pytest.fixture
def repo(two_backups, tmp_path):
    src, _ = two_backups
    shutil.copytree(src.root, tmp_path / "r")
    return LocalRepository(tmp_path / "r")


POLICY = Policy(full_days=1, min_full_backups=1, pitr_days=0, incomplete_grace_hours=1)


def later(records, days=3):
    return records[-1].stop_time + timedelta(days=days)


def test_dry_run_deletes_nothing(two_backups, repo):
    _, records = two_backups
    before = repo.list()
    plan = prune(repo, POLICY, later(records), dry_run=True)
    assert [bid for bid, _ in plan.delete_backups] == [records[0].id]
    assert repo.list() == before


def test_prune_removes_the_expired_backup_and_old_wal_and_the_rest_verifies(two_backups, repo):
    _, (old, new) = two_backups
    plan = prune(repo, POLICY, later((old, new)))
    assert plan.keep_backups == [new.id] and plan.delete_wal
    assert repo.list(catalog.backup_prefix(old.id)) == []
    assert verify(repo, full=True).problems == []
    view = summarize(scan(repo))
    assert [b["id"] for b in view["backups"]] == [new.id]
    assert prune(repo, POLICY, later((old, new))).empty  # nothing more to do


def test_the_kept_older_backup_is_an_island_not_a_gap(two_backups, repo):
    """Both backups kept, no PITR window: the WAL between A's end and B's start goes,
    leaving A's own WAL as an island. Neither list nor verify calls that a gap, and a
    later prune from an earlier "now" does not move the cut-off back."""
    _, (old, new) = two_backups
    keep_both = Policy(full_days=1, min_full_backups=2, pitr_days=0, incomplete_grace_hours=1)
    plan = prune(repo, keep_both, later((old, new)))
    assert plan.keep_backups == [old.id, new.id] and plan.delete_wal
    view = summarize(scan(repo))
    assert view["wal"][0]["gaps"] == [] and view["problems"] == []
    assert verify(repo, full=True).problems == []
    again = prune(repo, Policy(full_days=30, min_full_backups=2, pitr_days=30, incomplete_grace_hours=1),
                  old.stop_time + timedelta(minutes=1))
    assert again.empty and again.wal_cutoffs == {}
    assert verify(repo).problems == [] and summarize(scan(repo))["wal"][0]["gaps"] == []


def test_an_interrupted_prune_is_finished_by_the_next_one(two_backups, repo):
    _, (old, new) = two_backups
    # As if the prune died after deleting the data but before backup.json.
    repo.delete([old.objects["data"].key, old.objects["index"].key])
    prune(repo, POLICY, later((old, new)))
    assert repo.list(catalog.backup_prefix(old.id)) == []


def test_an_unreadable_entry_stops_pruning(two_backups, repo):
    _, (old, new) = two_backups
    (repo.root / catalog.backup_key(old.id, catalog.MARKER)).write_text("garbage")
    before = repo.list()
    with pytest.raises(UnsafeOperation, match=f"unreadable catalog entries.*{old.id}"):
        prune(repo, POLICY, later((old, new)))
    assert repo.list() == before


def test_old_incomplete_backups_are_removed_young_ones_kept(two_backups, repo):
    _, records = two_backups
    repo.put_bytes("backups/20990101T000000Z/data.tar.zst", b"partial")
    plan = prune(repo, Policy(full_days=30, min_full_backups=2, pitr_days=7, incomplete_grace_hours=24),
                 later(records, days=0))
    assert plan.delete_incomplete == []  # just written: may still be running
    plan = prune(repo, Policy(full_days=30, min_full_backups=2, pitr_days=7, incomplete_grace_hours=24),
                 later(records, days=2))
    assert [bid for bid, _ in plan.delete_incomplete] == ["20990101T000000Z"]
    assert not repo.exists("backups/20990101T000000Z/data.tar.zst")
