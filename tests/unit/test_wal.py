from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgops.backup.wal import (
    Segment, find_gaps, format_lsn, history_timeline, is_history_name, parse_history, parse_lsn,
    parse_segment, segment_of, segments_between,
)


def test_known_values():
    assert parse_lsn("0/3000028") == 0x3000028
    assert format_lsn(0x1_0000_0000 + 0x28) == "1/28"
    seg = segment_of(1, parse_lsn("0/3000028"))
    assert seg.name == "000000010000000000000003"
    assert parse_segment("0000000200000001000000FF").number == 0x1FF
    assert parse_segment("000000010000000000000003", 64 * 1024 * 1024).start_lsn == 3 * 64 * 1024 * 1024


@pytest.mark.parametrize("bad", ["", "0/", "x/1", "123456789/0", "0/0/0"])
def test_bad_lsns(bad):
    with pytest.raises(ValueError):
        parse_lsn(bad)


@pytest.mark.parametrize("bad", ["00000001000000000000000", "000000010000000000000100", "00000001000000000000000g"])
def test_bad_segment_names(bad):
    with pytest.raises(ValueError):
        parse_segment(bad)


@given(st.integers(0, (1 << 64) - 1))
def test_lsn_roundtrip(lsn):
    assert parse_lsn(format_lsn(lsn)) == lsn


@given(st.integers(1, 0xFFFFFFFF), st.sampled_from([1 << 20, 16 << 20, 1 << 30]), st.data())
def test_segment_roundtrip_and_order(tli, size, data):
    number = data.draw(st.integers(0, (1 << 64) // size - 2))
    seg = Segment(tli, number, size)
    assert parse_segment(seg.name, size) == seg
    assert seg.next().name > seg.name  # names sort in WAL order within a timeline
    assert segment_of(tli, seg.start_lsn, size) == seg
    assert segment_of(tli, seg.end_lsn - 1, size) == seg


def test_history_files():
    assert is_history_name("00000002.history") and history_timeline("0000000A.history") == 10
    text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n"
    entries = parse_history(text)
    assert [(e.timeline, format_lsn(e.switch_lsn)) for e in entries] == [(1, "0/3000158"), (2, "0/5000000")]


def test_gaps():
    assert find_gaps({1, 2, 5, 6, 9}, 1, 10) == [(3, 4), (7, 8), (10, 10)]
    assert find_gaps(set(range(5)), 0, 4) == []
    assert [s.number for s in segments_between(Segment(1, 3), Segment(1, 5))] == [3, 4, 5]
