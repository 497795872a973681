"""The pure parts of chain-break handling: when the spool has a hole, when a recorded
break is followed by a new chain, which unfinished segments are set aside."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pgops.backup import wal
from pgops.backup.inventory import break_acknowledged
from pgops.backup.walship import _set_aside_partials, spool_gap

SIZE = wal.DEFAULT_SEGMENT_SIZE
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def seg(n: int, tli: int = 1) -> str:
    return wal.Segment(tli, n, SIZE).name


def spool_with(tmp_path, *names: str):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_a_spool_that_carries_on_from_the_archive_has_no_gap(tmp_path):
    assert spool_gap(spool_with(tmp_path, seg(11), seg(12), seg(13) + ".partial"), 1, 10, SIZE) is None
    assert spool_gap(spool_with(tmp_path), 1, 10, SIZE) is None  # nothing received
    assert spool_gap(spool_with(tmp_path, seg(3)), 1, None, SIZE) is None  # nothing stored yet


def test_leftovers_already_stored_do_not_hide_a_hole(tmp_path):
    # 10 was shipped by a run that died before removing it; 11..14 went with the spool.
    first, last, message = spool_gap(spool_with(tmp_path, seg(10), seg(15), seg(16)), 1, 10, SIZE)
    assert (first, last) == (seg(11), 14) and f"{seg(11)}..{seg(14)}" in message


def test_other_timelines_and_history_files_are_not_counted(tmp_path):
    spool = spool_with(tmp_path, seg(20, tli=2), "00000002.history", seg(11))
    assert spool_gap(spool, 1, 10, SIZE) is None


def test_a_break_is_followed_by_a_backup_from_its_wal_position_on():
    record = {"time": T0.isoformat(), "timeline": 1, "lsn": "0/5000000"}
    at = wal.parse_lsn("0/5000000")
    assert break_acknowledged(record, set(), (1, at, T0 - timedelta(hours=1)))  # clocks are not compared
    assert not break_acknowledged(record, set(), (1, at - 1, T0 + timedelta(hours=1)))
    assert break_acknowledged(record, set(), (2, 0, T0))  # a later timeline
    assert not break_acknowledged(record, set(), None)


def test_a_break_found_by_a_full_backup_is_followed_once_that_backup_is_complete():
    record = {"time": T0.isoformat(), "timeline": 1, "lsn": "0/5000000", "acknowledged_by": "20261125T115959Z"}
    assert break_acknowledged(record, {"20261125T115959Z"}, (1, 0, T0 - timedelta(seconds=1)))
    assert not break_acknowledged(record, {"20261124T010000Z"}, (1, 0, T0 - timedelta(days=1)))


def test_a_record_without_a_position_falls_back_to_the_start_time():
    record = {"time": T0.isoformat()}
    assert break_acknowledged(record, set(), (1, 0, T0 + timedelta(seconds=1)))
    assert not break_acknowledged(record, set(), (1, 0, T0))


def test_only_unfinished_segments_behind_the_slot_are_set_aside(tmp_path):
    spool = spool_with(tmp_path, seg(4) + ".partial", seg(9) + ".partial", seg(7, tli=2) + ".partial", seg(5))
    _set_aside_partials(spool, behind=wal.Segment(1, 9, SIZE))
    left = sorted(p.name for p in spool.iterdir() if p.is_file())
    assert left == [seg(5), seg(9) + ".partial"]  # complete segments still ship; 9 is where the slot is
    (aside,) = [p for p in spool.iterdir() if p.is_dir()]
    assert sorted(p.name for p in aside.iterdir()) == [seg(4) + ".partial", seg(7, tli=2) + ".partial"]
    _set_aside_partials(spool)  # a chain break: every unfinished segment goes
    assert [p.name for p in spool.iterdir() if p.is_file()] == [seg(5)]


def test_a_break_covers_only_the_wal_before_its_recorded_position():
    from pgops.backup.inventory import gap_covered

    record = {"time": T0.isoformat(), "timeline": 1, "lsn": "0/C000100", "wal_missing_from": seg(4)}
    assert gap_covered(record) == (1, 4, 12)  # a later, longer loss from 4 on is not covered
    assert gap_covered({"time": T0.isoformat(), "wal_missing_from": seg(4)}) is None
