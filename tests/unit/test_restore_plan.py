"""The restore planner over made-up catalogs: the right backup, the right target, and a
refusal that names the fix for everything it cannot reach."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup import catalog, wal
from pgops.backup.inventory import Inventory, WalPoint, summarize, wal_reach
from pgops.errors import ConfigError, IntegrityError, NotFound, UnsafeOperation
from pgops.restore.plan import RestoreRequest, plan_restore

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=20)
SEG = wal.DEFAULT_SEGMENT_SIZE


def record(backup_id: str, day: int, seg: int, tli: int = 1) -> catalog.BackupRecord:
    stop = T0 + timedelta(days=day, minutes=5)
    obj = catalog.StoredObject(key=f"backups/{backup_id}/x", size=1, sha256="0" * 64)
    return catalog.BackupRecord(
        id=backup_id, label=f"pgops {backup_id}", system_identifier="1", pg_version="15", server_version_num=150018,
        timeline=tli, start_lsn=wal.format_lsn(seg * SEG + 40), checkpoint_lsn=wal.format_lsn(seg * SEG + 40),
        stop_lsn=wal.format_lsn(seg * SEG + 400), start_wal_segment=wal.Segment(tli, seg).name,
        stop_wal_segment=wal.Segment(tli, seg).name, start_time=stop - timedelta(minutes=5), stop_time=stop,
        raw_size=100, stored_size=10, compression={}, objects={"data": obj, "index": obj, "manifest": obj},
        pgops_version="test")


def inventory(backups: list[catalog.BackupRecord], segments: range | list[int], tli: int = 1,
              hourly_points: bool = True) -> Inventory:
    inv = Inventory([catalog.CatalogEntry(r.id, r, None, (), None) for r in backups])
    for n in segments:
        name = wal.Segment(tli, n).name
        inv.wal_objects[name] = (f"wal/x/{name}-{'0' * 64}.zst", "0" * 64, 1)
    if hourly_points:
        # one shipping point per segment: segment n is complete at day n/24 (T0 + n hours)
        for n in segments:
            inv.points.append(WalPoint(T0 + timedelta(hours=n), (n + 1) * SEG, tli, sentinel=f"s{n}"))
    return inv


def test_latest_takes_the_newest_backup_and_all_wal_after_it():
    inv = inventory([record("a", 1, 24), record("b", 5, 120)], range(24, 200))
    plan = plan_restore(inv, RestoreRequest(latest=True), NOW)
    assert plan.record.id == "b" and plan.kind == "latest"
    assert plan.recovery_settings == {"recovery_target_timeline": "1"}
    assert plan.expected_until == T0 + timedelta(hours=199)


def test_a_target_time_takes_the_newest_backup_consistent_before_it():
    inv = inventory([record("a", 1, 24), record("b", 5, 120)], range(24, 200))
    plan = plan_restore(inv, RestoreRequest(target_time=T0 + timedelta(days=3)), NOW)
    assert plan.record.id == "a"
    assert plan.recovery_settings["recovery_target_time"].startswith("2026-11-04 00:00:00")
    assert plan.recovery_settings["recovery_target_action"] == "promote"
    assert plan_restore(inv, RestoreRequest(target_time=T0 + timedelta(days=6)), NOW).record.id == "b"


def test_a_backup_alone_recovers_to_its_consistent_point():
    inv = inventory([record("a", 1, 24)], range(24, 30))
    plan = plan_restore(inv, RestoreRequest(backup_id="a"), NOW)
    assert plan.kind == "immediate" and plan.recovery_settings["recovery_target"] == "immediate"


def test_target_lsn_inside_the_wal_is_planned():
    inv = inventory([record("a", 1, 24)], range(24, 30))
    plan = plan_restore(inv, RestoreRequest(target_lsn=wal.format_lsn(27 * SEG + 5)), NOW)
    assert plan.recovery_settings["recovery_target_lsn"] == wal.format_lsn(27 * SEG + 5)


@pytest.mark.parametrize("req, error, words", [
    (RestoreRequest(target_time=NOW + timedelta(hours=1)), ConfigError, "in the future"),
    (RestoreRequest(target_time=T0), UnsafeOperation, "before the earliest recoverable point"),
    (RestoreRequest(target_time=T0 + timedelta(days=19)), UnsafeOperation, "after the newest shipped WAL"),
    (RestoreRequest(backup_id="nope"), NotFound, "no such backup"),
    (RestoreRequest(target_lsn="FF/0"), UnsafeOperation, "no backup can reach LSN"),
])
def test_unreachable_targets_are_refused_with_a_reason(req, error, words):
    inv = inventory([record("a", 1, 24)], range(24, 100))
    with pytest.raises(error, match=words):
        plan_restore(inv, req, NOW)


def test_bad_requests_are_config_errors():
    with pytest.raises(ConfigError, match="at most one"):
        RestoreRequest(latest=True, target_lsn="0/1")
    with pytest.raises(ConfigError, match="say what to restore"):
        RestoreRequest()
    with pytest.raises(ConfigError, match="UTC offset"):
        RestoreRequest(target_time=datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="not an LSN"):
        RestoreRequest(target_lsn="zzz")


def test_a_gap_is_named_and_latest_refuses_to_stop_there_silently():
    segments = [n for n in range(24, 100) if n not in (50, 51)]
    inv = inventory([record("a", 1, 24)], segments)
    with pytest.raises(IntegrityError, match=f"gap \\({wal.Segment(1, 50).name}..{wal.Segment(1, 51).name} missing"):
        plan_restore(inv, RestoreRequest(latest=True), NOW)
    # before the gap is still fine; after it is refused, naming the gap
    assert plan_restore(inv, RestoreRequest(target_time=T0 + timedelta(hours=40)), NOW).record.id == "a"
    with pytest.raises(UnsafeOperation, match="gap"):
        plan_restore(inv, RestoreRequest(target_time=T0 + timedelta(hours=70)), NOW)


def test_the_end_of_gap_free_wal_is_one_computation_for_the_catalog_and_the_planner():
    a, b, lost = record("a", 1, 24), record("b", 5, 120), record("c", 10, 300)
    inv = inventory([a, b, lost], [n for n in range(24, 200) if n != 60])
    segs = inv.segments()
    assert wal_reach(a, segs) == (wal.Segment(1, 59), 60 * SEG)
    assert wal_reach(b, segs) == (wal.Segment(1, 199), 200 * SEG)
    assert wal_reach(lost, segs) == (None, wal.parse_lsn(lost.stop_lsn))  # its stop segment is not stored
    view = {x["id"]: x for x in summarize(inv)["backups"]}
    assert [view[r.id]["wal_shipped_until_segment"] for r in (a, b, lost)] == [wal.Segment(1, 59).name,
                                                                               wal.Segment(1, 199).name, None]
    # the planner's LSN window of backup a ends exactly there
    assert plan_restore(inv, RestoreRequest(target_lsn=wal.format_lsn(60 * SEG)), NOW).record.id == "a"
    with pytest.raises(UnsafeOperation, match="no backup can reach LSN"):
        plan_restore(inv, RestoreRequest(target_lsn=wal.format_lsn(60 * SEG + 1)), NOW)


def test_a_repository_with_problems_is_not_trusted():
    inv = inventory([record("a", 1, 24)], range(24, 30))
    inv.problems.append("backup b: backup.json is unreadable")
    with pytest.raises(IntegrityError, match="cannot be trusted"):
        plan_restore(inv, RestoreRequest(latest=True), NOW)


def test_no_backup_at_all():
    with pytest.raises(NotFound, match="no complete backup"):
        plan_restore(inventory([], range(0)), RestoreRequest(latest=True), NOW)


@settings(max_examples=300, deadline=None)
@given(days=st.lists(st.integers(0, 15), min_size=1, max_size=6, unique=True),
       hole=st.one_of(st.none(), st.integers(0, 400)),
       target_h=st.integers(0, 24 * 21))
def test_a_planned_time_target_is_always_covered_by_gap_free_wal(days, hole, target_h):
    """Whatever the catalog, a plan for a time target starts from a backup consistent
    before the target, and every segment from that backup to the target is stored."""
    backups = [record(f"b{d:02d}", d, d * 24 + 1) for d in sorted(days)]
    segments = [n for n in range(0, 400) if n != hole]
    inv = inventory(backups, segments)
    target = T0 + timedelta(hours=target_h)
    try:
        plan = plan_restore(inv, RestoreRequest(target_time=target), NOW)
    except (UnsafeOperation, ConfigError):
        return
    rec = plan.record
    assert rec.stop_time <= target
    first = wal.parse_segment(rec.stop_wal_segment).number
    needed = range(first, int((target - T0).total_seconds() // 3600) + 1)
    assert all(n in segments for n in needed), f"plan from {rec.id} needs a missing segment"
