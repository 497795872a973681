"""What the repository holds, and what it can restore.

:func:`scan` reads the repository once (listings, every ``backup.json``, the WAL
"points" written by each shipping run); :func:`summarize` is pure and turns that into
the catalog ``pgops backups list`` prints: each backup with its status, sizes, WAL
range, and the window of time it can restore to; and the chains of backups joined by
gap-free WAL. The JSON form is documented in ``docs/catalog.md`` and stable: fields
are only ever added.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from pgops.backup import catalog, wal
from pgops.backup.walnames import BREAKS_DIR, POINTS_DIR, WAL_PREFIX, parse_wal_key
from pgops.repository.base import ObjectInfo, Repository

PRUNED_DIR = "wal/pruned/"

log = logging.getLogger(__name__)

CATALOG_FORMAT = 1


@dataclass(frozen=True)
class WalPoint:
    """A shipping run's record: every commit before ``time`` is in WAL before ``lsn``."""

    time: datetime
    lsn: int
    timeline: int
    key: str = ""
    sentinel: str | None = None  # token of the sentinel row committed just after ``time``
    sentinel_facts: dict | None = field(default=None, compare=False)  # see backup/sentinel.py
    sentinel_error: str | None = field(default=None, compare=False)  # why no sentinel was written


def break_acknowledged(record: dict, complete_ids: set[str], newest: tuple[int, int, datetime] | None) -> bool:
    """Whether a recorded WAL chain break (``wal/breaks/``) is followed by a new chain.

    ``newest`` is the newest complete backup's (timeline, start LSN, start time). The
    break is followed when the complete backup that found it is ``acknowledged_by``, or
    when the newest backup started at or after the server's WAL position recorded with
    the break (``timeline``, ``lsn``), on that timeline or a later one: no clock is
    compared. A record without a position falls back to the start time.
    """
    if record.get("acknowledged_by") in complete_ids:
        return True
    if newest is None:
        return False
    timeline, start_lsn, start_time = newest
    if record.get("lsn") and record.get("timeline"):
        return (timeline, start_lsn) >= (int(record["timeline"]), wal.parse_lsn(record["lsn"]))
    return start_time > datetime.fromisoformat(record["time"])


def gap_covered(record: dict, segment_size: int = wal.DEFAULT_SEGMENT_SIZE) -> tuple[int, int, int] | None:
    """The WAL a chain-break record says may be lost: (timeline, first, last segment
    number). It starts at ``wal_missing_from`` and ends before the server's WAL position
    when the break was recorded (``lsn``), so WAL lost later is not covered. None for a
    record without both."""
    first = record.get("wal_missing_from")
    if not first or not record.get("lsn"):
        return None
    seg = wal.parse_segment(first, segment_size)
    return seg.timeline, seg.number, wal.segment_of(1, wal.parse_lsn(record["lsn"]), segment_size).number


def newest_backup(records) -> tuple[int, int, datetime] | None:
    """(timeline, start LSN, start time) of the newest of these complete backups."""
    newest = max(records, key=lambda r: r.start_time, default=None)
    return None if newest is None else (newest.timeline, wal.parse_lsn(newest.start_lsn), newest.start_time)


@dataclass
class Inventory:
    entries: list[catalog.CatalogEntry]
    wal_objects: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # name -> (key, digest, size)
    history_objects: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    points: list[WalPoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pruned: dict[int, int] = field(default_factory=dict)  # timeline -> first segment that must be gap-free
    breaks: list[dict] = field(default_factory=list)  # recorded WAL chain breaks, each with its "key"
    histories: dict[int, list[wal.HistoryEntry]] = field(default_factory=dict)  # timeline -> its history file
    segment_size: int = wal.DEFAULT_SEGMENT_SIZE

    def segments(self) -> dict[int, set[int]]:
        """Stored segment numbers per timeline."""
        out: dict[int, set[int]] = {}
        for name in self.wal_objects:
            seg = wal.parse_segment(name, self.segment_size)
            out.setdefault(seg.timeline, set()).add(seg.number)
        return out


def scan(repo: Repository) -> Inventory:
    """Read the repository's state. Unreadable things are recorded as problems, never skipped silently."""
    inv = Inventory(catalog.read_catalog(repo))
    for entry in inv.entries:
        if entry.problem:
            inv.problems.append(f"backup {entry.backup_id}: {entry.problem}")
    # The shipping runs' records first, the WAL after: a run writes its record only once
    # its segments are stored, so every record listed here describes WAL the second
    # listing sees, even while WAL shipping runs beside this scan (records written
    # meanwhile are left for the next scan).
    points = repo.list(POINTS_DIR)
    objects: list[ObjectInfo] = points + [o for o in repo.list(WAL_PREFIX) if not o.key.startswith(POINTS_DIR)]
    for obj in objects:
        if obj.key.startswith(PRUNED_DIR):
            try:
                inv.pruned[int(obj.key[len(PRUNED_DIR):].removesuffix(".json"), 16)] = int(
                    json.loads(repo.get_bytes(obj.key))["first_kept_segment"])
            except (ValueError, KeyError, TypeError) as exc:
                inv.problems.append(f"{obj.key} is unreadable: {exc}")
            continue
        if obj.key.startswith(BREAKS_DIR):
            try:
                record = json.loads(repo.get_bytes(obj.key))
                datetime.fromisoformat(record["time"])
                if record.get("lsn"):
                    wal.parse_lsn(record["lsn"])
                if record.get("timeline") is not None:
                    int(record["timeline"])
                inv.breaks.append({**record, "key": obj.key})
            except (ValueError, KeyError, TypeError) as exc:
                inv.problems.append(f"{obj.key} is unreadable: {exc}")
            continue
        if obj.key.startswith(POINTS_DIR):
            try:
                data = json.loads(repo.get_bytes(obj.key))
                inv.points.append(WalPoint(datetime.fromisoformat(data["time"]), wal.parse_lsn(data["lsn"]),
                                           int(data["timeline"]), obj.key, data.get("sentinel"),
                                           data.get("sentinel_facts"), data.get("sentinel_error")))
            except (ValueError, KeyError, TypeError) as exc:
                inv.problems.append(f"{obj.key} is unreadable: {exc}")
            continue
        try:
            name, digest = parse_wal_key(obj.key)
        except ValueError:
            inv.problems.append(f"unexpected object in the WAL archive: {obj.key}")
            continue
        target = inv.history_objects if wal.is_history_name(name) else inv.wal_objects
        if name in target:
            inv.problems.append(f"{name} is stored twice: {target[name][0]} and {obj.key}")
        target[name] = (obj.key, digest, obj.size)
    inv.points.sort(key=lambda p: (p.lsn, p.time))
    import zstandard

    for name, (key, _digest, _size) in sorted(inv.history_objects.items()):
        try:
            text = zstandard.ZstdDecompressor().decompress(repo.get_bytes(key), max_output_size=2**20).decode()
            inv.histories[wal.history_timeline(name)] = wal.parse_history(text)
        except (ValueError, UnicodeDecodeError, zstandard.ZstdError) as exc:
            inv.problems.append(f"{key} is unreadable: {exc}")
    return inv


def break_states(inv: Inventory) -> list[tuple[dict, bool]]:
    """Each recorded chain break, oldest first, with whether a complete full backup has
    followed it (see :func:`break_acknowledged`)."""
    complete = [e.record for e in inv.entries if e.record is not None]
    newest = newest_backup(complete)
    ids = {r.id for r in complete}
    return [(b, break_acknowledged(b, ids, newest)) for b in sorted(inv.breaks, key=lambda b: b["key"])]


def explained_gaps(inv: Inventory) -> list[tuple[int, int, int]]:
    """The WAL that recorded chain breaks say may be lost, (timeline, first, last
    segment number), for breaks a complete full backup has followed (the break is known
    and a new chain exists). See :func:`gap_covered`."""
    extents = (gap_covered(b, inv.segment_size) for b, followed in break_states(inv) if followed)
    return [extent for extent in extents if extent is not None]


def wal_reach(rec: catalog.BackupRecord, segs: dict[int, set[int]],
              segment_size: int = wal.DEFAULT_SEGMENT_SIZE) -> tuple[wal.Segment | None, int]:
    """How far ``rec`` can be rolled forward through the stored WAL ``segs``
    (:meth:`Inventory.segments`): the last segment of the gap-free run from its stop
    segment on (None when that segment is not stored), and the first LSN after the WAL
    recovery can replay: that segment's end, else the backup's stop LSN (the backup
    carries its own WAL from start to stop, ``-X fetch``).

    The one place this is computed: ``backups list`` (``wal_shipped_until_segment``,
    ``recoverable_until``), the restore planner and the restore test all use it.
    """
    numbers = segs.get(rec.timeline, set())
    end = wal.parse_segment(rec.stop_wal_segment, segment_size).number
    if end not in numbers:
        return None, wal.parse_lsn(rec.stop_lsn)
    while end + 1 in numbers:
        end += 1
    last = wal.Segment(rec.timeline, end, segment_size)
    return last, last.end_lsn


def summarize(inv: Inventory) -> dict:
    """The catalog as a JSON-able dict (see docs/catalog.md)."""
    segs = inv.segments()
    size = inv.segment_size
    backups = []
    for entry in inv.entries:
        item: dict = {"id": entry.backup_id}
        rec = entry.record
        if rec is None:
            item["status"] = "unreadable" if entry.problem else "incomplete"
            if entry.problem:
                item["problem"] = entry.problem
            item["objects"] = len(entry.keys)
            item["last_modified"] = entry.newest_modified.isoformat() if entry.newest_modified else None
            backups.append(item)
            continue
        last, wal_until_lsn = wal_reach(rec, segs, size)
        latest, latest_sentinel = rec.stop_time, None
        for point in inv.points:
            if point.timeline == rec.timeline and point.lsn <= wal_until_lsn and point.time > latest:
                latest, latest_sentinel = point.time, point.sentinel
        item.update({
            "status": rec.status,
            "label": rec.label,
            "timeline": rec.timeline,
            "start_time": rec.start_time.isoformat(),
            "stop_time": rec.stop_time.isoformat(),
            "start_lsn": rec.start_lsn,
            "stop_lsn": rec.stop_lsn,
            "start_wal_segment": rec.start_wal_segment,
            "stop_wal_segment": rec.stop_wal_segment,
            "wal_shipped_until_segment": last.name if last is not None else None,
            "raw_size": rec.raw_size,
            "stored_size": rec.stored_size,
            "pg_version": rec.pg_version,
            "system_identifier": rec.system_identifier,
            "recoverable_from": rec.stop_time.isoformat(),
            "recoverable_until": latest.isoformat(),
            "recoverable_until_sentinel": latest_sentinel,
        })
        backups.append(item)
    chains = _chains([b for b in backups if b["status"] == "complete"], size)
    wal_summary = []
    for tli, numbers in sorted(segs.items()):
        runs = _runs(sorted(numbers))
        # Below the pruning cut-off only the WAL of kept backups is left, on purpose.
        gap_from = max(runs[0][0], inv.pruned.get(tli, 0))
        wal_summary.append({
            "timeline": tli,
            "segments": len(numbers),
            "first": wal.Segment(tli, runs[0][0], size).name,
            "last": wal.Segment(tli, runs[-1][1], size).name,
            "gaps": [[wal.Segment(tli, a, size).name, wal.Segment(tli, b, size).name]
                     for a, b in wal.find_gaps(numbers, gap_from, runs[-1][1])],
        })
    breaks = [{"time": b["time"], "job": b.get("job"), "reasons": b.get("reasons", []),
               "wal_missing_from": b.get("wal_missing_from"), "acknowledged": followed}
              for b, followed in break_states(inv)]
    return {"format": CATALOG_FORMAT, "backups": backups, "chains": chains, "wal": wal_summary,
            "chain_breaks": breaks, "problems": list(inv.problems)}


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _chains(complete: list[dict], size: int) -> list[dict]:
    """Backups whose restorable windows join up, on one timeline, form a chain."""
    chains: list[dict] = []
    for b in sorted(complete, key=lambda x: (x["timeline"], x["stop_time"])):
        last = chains[-1] if chains else None
        if last and last["timeline"] == b["timeline"] and b["recoverable_from"] <= last["recoverable_until"]:
            last["backups"].append(b["id"])
            last["recoverable_until"] = max(last["recoverable_until"], b["recoverable_until"])
        else:
            chains.append({"timeline": b["timeline"], "backups": [b["id"]],
                           "recoverable_from": b["recoverable_from"], "recoverable_until": b["recoverable_until"]})
    return chains


def render_table(view: dict) -> str:
    """The human form of ``pgops backups list``."""
    lines = [f"{'backup':<18} {'status':<11} {'stored':>10} {'raw':>10}  {'WAL':<35} recoverable"]
    for b in view["backups"]:
        if b["status"] != "complete":
            lines.append(f"{b['id']:<18} {b['status']:<11} {'':>10} {'':>10}  {'':<35} -"
                         + (f"  ({b['problem']})" if b.get("problem") else ""))
            continue
        wal_range = f"{b['start_lsn']}..{b['wal_shipped_until_segment'] or b['stop_lsn']}"
        lines.append(f"{b['id']:<18} {b['status']:<11} {_mib(b['stored_size']):>10} {_mib(b['raw_size']):>10}  "
                     f"{wal_range:<35} {b['recoverable_from'][:19]} .. {b['recoverable_until'][:19]}")
    for c in view["chains"]:
        lines.append(f"chain on timeline {c['timeline']}: {len(c['backups'])} backup(s), restorable "
                     f"{c['recoverable_from'][:19]} .. {c['recoverable_until'][:19]}")
    for w in view["wal"]:
        gaps = f", GAPS: {w['gaps']}" if w["gaps"] else ""
        lines.append(f"WAL timeline {w['timeline']}: {w['segments']} segments {w['first']}..{w['last']}{gaps}")
    for b in view.get("chain_breaks", []):
        state = "a full backup has started a new chain since" if b["acknowledged"] else "NO FULL BACKUP SINCE"
        lines.append(f"WAL chain break at {b['time'][:19]} ({state}): {' | '.join(b['reasons'])}")
    for p in view["problems"]:
        lines.append(f"PROBLEM: {p}")
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
