"""Which backup to restore, and how far to recover: a pure function of the catalog.

:func:`plan_restore` takes the repository's inventory (:func:`pgops.backup.inventory.scan`),
the request and ``now``, and returns a :class:`RestorePlan` or raises with a message that
says what to do instead. It never reads the repository or the clock itself, so every
refusal can be tested over made-up catalogs, and the restore refuses before it downloads
a single byte.

Targets (one of them):

* ``latest``: the newest complete backup and every shipped WAL segment after it;
* ``target_time``: the newest backup that was consistent at or before that time and
  whose gap-free WAL reaches it;
* ``target_lsn``: the same by WAL position;
* ``backup_id`` alone: that backup, recovered only to its own consistent point
  (``recovery_target = 'immediate'``). With a target too, it forces the base backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pgops.backup import wal
from pgops.backup.catalog import BackupRecord
from pgops.backup.inventory import Inventory, summarize, wal_reach
from pgops.errors import ConfigError, IntegrityError, NotFound, UnsafeOperation


@dataclass(frozen=True)
class RestoreRequest:
    backup_id: str | None = None
    target_time: datetime | None = None
    target_lsn: str | None = None
    latest: bool = False

    def __post_init__(self) -> None:
        targets = sum(x is not None and x is not False for x in (self.target_time, self.target_lsn)) + self.latest
        if targets > 1:
            raise ConfigError("give at most one of --target-time, --target-lsn, --latest")
        if targets == 0 and self.backup_id is None:
            raise ConfigError("say what to restore: --latest, --target-time TS, --target-lsn LSN or --backup-id ID")
        if self.target_time is not None and self.target_time.tzinfo is None:
            raise ConfigError(f"target time {self.target_time.isoformat()} needs a UTC offset, "
                              "e.g. 2026-11-25T03:00:00+00:00")
        if self.target_lsn is not None:
            try:
                wal.parse_lsn(self.target_lsn)
            except ValueError as exc:
                raise ConfigError(f"--target-lsn: {exc} (write it as 0/3000028)") from exc

    def describe(self) -> str:
        if self.latest:
            what = "the newest restorable point"
        elif self.target_time is not None:
            what = f"time {self.target_time.isoformat()}"
        elif self.target_lsn is not None:
            what = f"LSN {self.target_lsn}"
        else:
            what = "its consistent point"
        return f"backup {self.backup_id} to {what}" if self.backup_id else what


@dataclass(frozen=True)
class RestorePlan:
    """What the executor does: restore ``record`` and recover with ``recovery_settings``."""

    record: BackupRecord
    kind: str  # latest | time | lsn | immediate
    recovery_settings: dict[str, str]
    #: the newest point the catalog promises (for the evidence and for RPO)
    expected_until: datetime
    #: WAL segments expected to be replayed after the backup's own
    wal_segments: int
    #: the last segment of the gap-free WAL after the backup: wal-fetch treats any
    #: segment up to it as required (missing = stop recovery, never "end of archive")
    wal_until_segment: str | None = None

    def describe(self) -> str:
        target = ", ".join(f"{k} = {v!r}" for k, v in self.recovery_settings.items())
        return (f"restore backup {self.record.id} (timeline {self.record.timeline}, recoverable from "
                f"{self.record.stop_time.isoformat()}), then recover: {target}; "
                f"about {self.wal_segments} WAL segment(s) to fetch")


def plan_restore(inv: Inventory, request: RestoreRequest, now: datetime) -> RestorePlan:
    """Choose the backup and the recovery target; raise, naming the fix, when it cannot be done."""
    if inv.problems:
        shown = "; ".join(inv.problems[:5])
        raise IntegrityError(f"the repository has problems, so its catalog cannot be trusted for a restore: {shown}"
                             " (run `pgops backups verify` and fix them first)")
    view = summarize(inv)
    records = {e.backup_id: e.record for e in inv.entries if e.record is not None}
    windows = {b["id"]: b for b in view["backups"] if b["status"] == "complete"}
    if not records:
        raise NotFound("the repository holds no complete backup: nothing to restore")
    segs = inv.segments()
    size = inv.segment_size

    reach = {rec.id: wal_reach(rec, segs, size) for rec in records.values()}

    def wal_end(rec: BackupRecord) -> int:
        """First LSN after the gap-free WAL that follows ``rec``."""
        return reach[rec.id][1]

    def gap_after(rec: BackupRecord) -> str | None:
        """The first missing stretch after ``rec``'s gap-free WAL, when later segments exist."""
        numbers = segs.get(rec.timeline, set())
        end = wal.segment_of(rec.timeline, wal_end(rec) - 1, size).number
        later = [n for n in numbers if n > end]
        if not later:
            return None
        resume = min(later)
        return (f"{wal.Segment(rec.timeline, end + 1, size).name}..{wal.Segment(rec.timeline, resume - 1, size).name}"
                " missing")

    def settings(kind: str, rec: BackupRecord, value: str | None = None) -> dict[str, str]:
        out = {"recovery_target_timeline": str(rec.timeline)}
        if kind == "time":
            out["recovery_target_time"] = value or ""
        elif kind == "lsn":
            out["recovery_target_lsn"] = value or ""
        elif kind == "immediate":
            out["recovery_target"] = "immediate"
        if kind != "latest":
            out["recovery_target_action"] = "promote"
        return out

    def n_segments(rec: BackupRecord, until_lsn: int) -> int:
        first = wal.segment_of(rec.timeline, max(wal.parse_lsn(rec.stop_lsn) - 1, 0), size).number
        last = wal.segment_of(rec.timeline, max(until_lsn - 1, 0), size).number
        return max(last - first, 0)

    chosen = None
    if request.backup_id is not None:
        chosen = records.get(request.backup_id)
        if chosen is None:
            known = ", ".join(sorted(records)[-5:]) or "none"
            state = next((b["status"] for b in view["backups"] if b["id"] == request.backup_id), None)
            why = f"it is {state} (no backup.json)" if state else "no such backup"
            raise NotFound(f"backup {request.backup_id!r} cannot be restored: {why}. "
                           f"Newest complete backups: {known} (see `pgops backups list`)")

    if request.latest:
        rec = chosen or max(records.values(), key=lambda r: (r.stop_time, r.id))
        gap = gap_after(rec)
        if gap:
            until = windows[rec.id]["recoverable_until"]
            raise IntegrityError(
                f"the WAL after backup {rec.id} has a gap ({gap}): recovery to the latest point would stop "
                f"at the gap without saying so. Restore with --target-time {until} (the newest point before "
                "the gap) if that is acceptable, after `pgops backups verify` names the missing segments")
        until = datetime.fromisoformat(windows[rec.id]["recoverable_until"])
        return RestorePlan(rec, "latest", settings("latest", rec), until, n_segments(rec, wal_end(rec)),
                           windows[rec.id]["wal_shipped_until_segment"])

    if request.target_time is not None:
        target = request.target_time
        if target > now:
            raise ConfigError(f"target time {target.isoformat()} is in the future (now is {now.isoformat()})")
        candidates = [chosen] if chosen else list(records.values())
        fits = [r for r in candidates
                if r.stop_time <= target <= datetime.fromisoformat(windows[r.id]["recoverable_until"])]
        if not fits:
            _refuse_window(target.isoformat(), candidates, windows, gap_after, "time")
        rec = max(fits, key=lambda r: (r.stop_time, r.id))
        return RestorePlan(rec, "time", settings("time", rec, _pg_time(target)), target,
                           n_segments(rec, wal_end(rec)), windows[rec.id]["wal_shipped_until_segment"])

    if request.target_lsn is not None:
        lsn = wal.parse_lsn(request.target_lsn)
        candidates = [chosen] if chosen else list(records.values())
        fits = [r for r in candidates if wal.parse_lsn(r.stop_lsn) <= lsn <= wal_end(r)]
        if not fits:
            _refuse_window(request.target_lsn, candidates, windows, gap_after, "lsn")
        rec = max(fits, key=lambda r: (wal.parse_lsn(r.stop_lsn), r.id))
        return RestorePlan(rec, "lsn", settings("lsn", rec, wal.format_lsn(lsn)), rec.stop_time,
                           n_segments(rec, lsn + 1), windows[rec.id]["wal_shipped_until_segment"])

    assert chosen is not None
    return RestorePlan(chosen, "immediate", settings("immediate", chosen), chosen.stop_time, 0)


def _pg_time(ts: datetime) -> str:
    """A timestamp PostgreSQL parses the same everywhere: ISO with an explicit offset."""
    return ts.isoformat(sep=" ")


def _refuse_window(target: str, candidates: list[BackupRecord], windows: dict, gap_after, kind: str) -> None:
    spans = sorted((datetime.fromisoformat(windows[r.id]["recoverable_from"]),
                    datetime.fromisoformat(windows[r.id]["recoverable_until"]), r) for r in candidates)
    earliest, latest = spans[0][0], max(s[1] for s in spans)
    if kind == "time":
        value = datetime.fromisoformat(target)
        if value < earliest:
            raise UnsafeOperation(f"target time {target} is before the earliest recoverable point {earliest.isoformat()} "
                                  "(when the oldest backup's upload finished): no backup can reach it")
        newest = max(spans, key=lambda s: s[1])[2]
        gap = gap_after(newest)
        hint = f"; the WAL after backup {newest.id} has a gap ({gap})" if gap else \
            " (run the WAL shipping DAG or `pgops backup wal` to ship newer WAL)"
        if value > latest:
            raise UnsafeOperation(f"target time {target} is after the newest shipped WAL ({latest.isoformat()}){hint}")
        raise UnsafeOperation(f"no backup's gap-free WAL reaches {target}; restorable windows: "
                              + ", ".join(f"{a.isoformat()}..{b.isoformat()}" for a, b, _ in spans))
    raise UnsafeOperation(f"no backup can reach LSN {target}: it must lie between a backup's stop LSN and the end "
                          "of the gap-free WAL after it; see `pgops backups list`")
