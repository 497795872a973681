"""Pure WAL and LSN arithmetic (the model: Barman's ``xlog.py``).

An LSN is a 64-bit byte position in the WAL stream, written ``X/Y`` (high and low 32
bits in hex). WAL is cut into segments (16 MiB by default); a segment file is named
``TTTTTTTTXXXXXXXXYYYYYYYY``: timeline, then the segment number split into "log"
(high part) and "seg" (low part), with ``0x100000000 // segment_size`` segments per log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")


def parse_lsn(text: str) -> int:
    """``"0/3000028"`` → 50331688. Raises ValueError on anything else."""
    match = _LSN.match(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segments_per_log(segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return 0x100000000 // segment_size


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment file: timeline and absolute segment number."""

    timeline: int
    number: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    @property
    def name(self) -> str:
        per_log = segments_per_log(self.segment_size)
        return f"{self.timeline:08X}{self.number // per_log:08X}{self.number % per_log:08X}"

    @property
    def start_lsn(self) -> int:
        return self.number * self.segment_size

    @property
    def end_lsn(self) -> int:
        """First LSN after this segment."""
        return (self.number + 1) * self.segment_size

    def next(self) -> Segment:
        return Segment(self.timeline, self.number + 1, self.segment_size)

    def __str__(self) -> str:
        return self.name


def segment_of(timeline: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment holding ``lsn`` on ``timeline``."""
    return Segment(timeline, lsn // segment_size, segment_size)


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    per_log = segments_per_log(segment_size)
    log, seg = int(match.group(2), 16), int(match.group(3), 16)
    if seg >= per_log:
        raise ValueError(f"segment part {seg:X} of {name} is impossible with {segment_size}-byte segments")
    return Segment(int(match.group(1), 16), log * per_log + seg, segment_size)


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def is_history_name(name: str) -> bool:
    return bool(_HISTORY.match(name))


def history_timeline(name: str) -> int:
    match = _HISTORY.match(name)
    if not match:
        raise ValueError(f"not a timeline history file name: {name!r}")
    return int(match.group(1), 16)


@dataclass(frozen=True)
class HistoryEntry:
    """A line of a timeline history file: ``timeline`` ended at ``switch_lsn``."""

    timeline: int
    switch_lsn: int
    reason: str


def parse_history(text: str) -> list[HistoryEntry]:
    """Parse a ``.history`` file: ``<parent tli>\\t<switch LSN>\\t<reason>`` per line."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split(None, 2)
        if len(parts) < 2:
            raise ValueError(f"bad timeline history line: {line!r}")
        entries.append(HistoryEntry(int(parts[0]), parse_lsn(parts[1]), parts[2].strip() if len(parts) > 2 else ""))
    return entries


def segments_between(first: Segment, last: Segment) -> list[Segment]:
    """Every segment from ``first`` to ``last`` inclusive, on ``first``'s timeline."""
    if last.number < first.number:
        return []
    return [Segment(first.timeline, n, first.segment_size) for n in range(first.number, last.number + 1)]


def find_gaps(present: set[int], first: int, last: int) -> list[tuple[int, int]]:
    """Missing runs ``(from, to)`` of segment numbers in ``first..last`` inclusive."""
    gaps = []
    run_start = None
    for n in range(first, last + 1):
        if n not in present:
            if run_start is None:
                run_start = n
        elif run_start is not None:
            gaps.append((run_start, n - 1))
            run_start = None
    if run_start is not None:
        gaps.append((run_start, last))
    return gaps
