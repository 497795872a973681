"""backups list / verify against a repository filled by real backups and WAL shipping."""

from __future__ import annotations

import json

import pytest

from pgops.backup.basebackup import run_full_backup
from pgops.backup.inventory import scan, summarize
from pgops.backup.verify import verify
from pgops.backup.walnames import WAL_PREFIX
from pgops.backup.walship import ship_wal
from pgops.cli import main
from pgops.repository.local import LocalRepository

from .servers import fixia_with_local_repo


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """One backup, then three WAL shipping runs with writes in between."""
    tmp = tmp_path_factory.mktemp("catalog")
    with fixia_with_local_repo(tmp) as (server, config, repo):
        record = run_full_backup(config, repo)
        for i in range(3):
            with server.superuser() as conn:
                conn.execute(f"CREATE TABLE t{i} AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
            ship_wal(config, repo)
        yield repo, record, config, tmp


def copy_repo(filled, tmp_path) -> LocalRepository:
    import shutil

    repo, *_ = filled
    shutil.copytree(repo.root, tmp_path / "copy")
    return LocalRepository(tmp_path / "copy")


def test_list_shows_the_backup_and_its_window(filled):
    repo, record, _, _ = filled
    view = summarize(scan(repo))
    (b,) = view["backups"]
    assert b["id"] == record.id and b["status"] == "complete"
    assert b["recoverable_from"] == record.stop_time.isoformat()
    assert b["recoverable_until"] > b["recoverable_from"]
    assert view["chains"] == [{"timeline": 1, "backups": [record.id], "recoverable_from": b["recoverable_from"],
                               "recoverable_until": b["recoverable_until"]}]
    assert view["wal"][0]["gaps"] == [] and view["problems"] == []


def test_list_cli_json_is_the_documented_form(filled, capsys, monkeypatch, tmp_path):
    repo, *_ = filled
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"repository:\n  url: {repo.root}\n")
    assert main(["--config", str(cfg), "backups", "list", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert set(view) == {"format", "backups", "chains", "wal", "chain_breaks", "problems"} and view["format"] == 1
    assert main(["--config", str(cfg), "backups", "list"]) == 0
    assert "chain on timeline 1" in capsys.readouterr().out


def test_a_clean_repository_verifies(filled):
    repo, *_ = filled
    report = verify(repo, full=True)
    assert report.problems == []
    assert report.checked_objects == 3 and report.checked_segments >= 3
    # What it re-read, named for the audit trail: every object and WAL file, each checked.
    assert len(report.checked) == report.checked_objects + report.checked_segments
    backups = [c for c in report.checked if c["key"].startswith("backups/")]
    assert {c["key"].rsplit("/", 1)[1] for c in backups} == {"data.tar.zst", "data.index.json", "backup_manifest.zst"}
    assert all(c["ok"] and len(c.get("sha256") or c.get("digest")) == 64 for c in report.checked)


def test_verify_names_a_corrupted_backup_object(filled, tmp_path):
    repo = copy_repo(filled, tmp_path)
    _, record, _, _ = filled
    path = repo.root / record.objects["data"].key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = verify(repo, full=True).problems
    assert any(record.objects["data"].key in p and "corrupt" in p for p in problems)


def test_verify_names_a_deleted_wal_segment(filled, tmp_path, capsys):
    repo = copy_repo(filled, tmp_path)
    keys = sorted(o.key for o in repo.list(WAL_PREFIX) if "/points/" not in o.key)
    victim = keys[len(keys) // 2]
    repo.delete([victim])
    name = victim.rsplit("/", 1)[-1][:24]
    problems = verify(repo).problems
    assert any(f"WAL gap {name}..{name}" in p for p in problems)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"repository:\n  url: {repo.root}\n")
    assert main(["--config", str(cfg), "backups", "verify"]) == 4
    assert name in capsys.readouterr().out


def test_verify_names_wal_lost_at_the_end_of_the_archive(filled, tmp_path):
    """The newest segments gone leave no gap between stored ones; the shipping runs'
    records of how far they shipped still show the loss."""
    repo = copy_repo(filled, tmp_path)
    segments = sorted(o.key for o in repo.list(WAL_PREFIX) if "/points/" not in o.key and ".history" not in o.key)
    lost = segments[-2:]
    repo.delete(lost)
    names = [key.rsplit("/", 1)[-1][:24] for key in lost]
    problems = verify(repo).problems
    assert any(f"WAL {names[0]}..{names[1]} on timeline 1 is missing" in p for p in problems), problems
    assert verify(filled[0]).problems == []


def test_verify_names_a_corrupted_wal_segment(filled, tmp_path):
    repo = copy_repo(filled, tmp_path)
    key = sorted(o.key for o in repo.list(WAL_PREFIX) if "/points/" not in o.key)[0]
    import zstandard

    (repo.root / key).write_bytes(zstandard.ZstdCompressor().compress(b"\0" * 16 * 2**20))
    problems = verify(repo, sample=1000).problems
    assert any(key in p and "corrupt" in p for p in problems)


def test_unreadable_backup_json_is_a_problem(filled, tmp_path):
    repo = copy_repo(filled, tmp_path)
    _, record, _, _ = filled
    (repo.root / f"backups/{record.id}/backup.json").write_text("{ not json")
    view = summarize(scan(repo))
    assert view["backups"][0]["status"] == "unreadable"
    assert any("unreadable" in p for p in verify(repo).problems)
