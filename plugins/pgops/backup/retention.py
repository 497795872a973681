"""Retention pruning: a pure planner, and an executor that only carries the plan out.

``plan_retention(catalog, policy, now)`` decides; ``now`` is passed in (the run's data
interval end), never read here. The rules, in the order they protect data:

1. **Fail closed**: if any catalog entry is unreadable, delete nothing.
2. Keep every complete backup that stopped within ``full_days``, the newest
   ``min_full_backups`` whatever their age, and always the newest one.
3. Point-in-time recovery: keep the newest complete backup that stopped at or before
   ``now - pitr_days`` (the base that restores the start of the window; when there is
   none, the oldest kept one), and every WAL segment from its start segment on, on its
   timeline and all later ones.
4. Keep the WAL from start to stop segment of every kept backup (what makes it
   consistent), on its timeline.
5. Everything else goes: expired backups (data first, ``backup.json`` last), WAL
   outside rules 3-4 (only ever the oldest part of a timeline before the PITR base,
   plus ranges of expired backups), and incomplete backups older than
   ``incomplete_grace_hours`` (younger ones may still be running).

Before WAL is deleted the executor records each timeline's cut-off segment in
``wal/pruned/<timeline>.json``, so ``verify`` can tell a pruned head from a gap.
Re-planning after a plan was applied gives an empty plan.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgops.backup.inventory import PRUNED_DIR
from pgops.errors import UnsafeOperation

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BackupFacts:
    id: str
    status: str  # complete | incomplete | unreadable
    keys: tuple[str, ...]  # every stored key of the backup; the marker (if any) is one of them
    marker: str | None = None  # backup.json key
    timeline: int | None = None
    start_segment: int | None = None
    stop_segment: int | None = None
    stop_time: datetime | None = None
    last_modified: datetime | None = None


@dataclass(frozen=True)
class WalFile:
    timeline: int
    number: int
    key: str


@dataclass(frozen=True)
class Point:
    time: datetime
    key: str


@dataclass(frozen=True)
class Policy:
    full_days: int = 30
    min_full_backups: int = 2
    pitr_days: int = 7
    incomplete_grace_hours: int = 24


@dataclass
class Plan:
    keep_backups: list[str] = field(default_factory=list)
    delete_backups: list[tuple[str, list[str]]] = field(default_factory=list)  # id, keys (marker last)
    delete_incomplete: list[tuple[str, list[str]]] = field(default_factory=list)
    delete_wal: list[str] = field(default_factory=list)
    delete_points: list[str] = field(default_factory=list)
    wal_cutoffs: dict[int, int] = field(default_factory=dict)  # timeline -> first segment kept
    pitr_base: str | None = None
    refused: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.delete_backups or self.delete_incomplete or self.delete_wal or self.delete_points)

    def describe(self) -> str:
        if self.refused:
            return f"nothing will be deleted: {self.refused}"
        lines = [f"keep {len(self.keep_backups)} backup(s): {', '.join(self.keep_backups) or '-'}",
                 f"point-in-time recovery base: {self.pitr_base or '-'}"]
        lines += [f"delete expired backup {bid} ({len(keys)} objects)" for bid, keys in self.delete_backups]
        lines += [f"delete incomplete backup {bid} ({len(keys)} objects)" for bid, keys in self.delete_incomplete]
        lines.append(f"delete {len(self.delete_wal)} WAL file(s) and {len(self.delete_points)} shipping point(s)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "refused": self.refused,
            "keep_backups": self.keep_backups,
            "pitr_base": self.pitr_base,
            "delete_backups": [bid for bid, _ in self.delete_backups],
            "delete_incomplete": [bid for bid, _ in self.delete_incomplete],
            "delete_wal": len(self.delete_wal),
            "delete_points": len(self.delete_points),
        }


def plan_retention(backups: list[BackupFacts], wal_files: list[WalFile], points: list[Point],
                   policy: Policy, now: datetime, problems: list[str] = (),
                   pruned: dict[int, int] | None = None) -> Plan:
    """Decide what to delete. Pure: same input, same plan. ``pruned`` holds the cut-off
    segments already recorded per timeline: a cut-off only ever moves forward (WAL
    deleted once does not come back when the policy or "now" would keep more)."""
    plan = Plan()
    unreadable = [b.id for b in backups if b.status == "unreadable"]
    if unreadable or problems:
        plan.refused = ("unreadable catalog entries: " + ", ".join(unreadable + list(problems))
                        + "; fix or remove them by hand, then prune again")
        return plan

    complete = sorted((b for b in backups if b.status == "complete"), key=lambda b: (b.stop_time, b.id))
    keep: dict[str, BackupFacts] = {}
    full_cutoff = now - timedelta(days=policy.full_days)
    for b in complete:
        if b.stop_time >= full_cutoff:
            keep[b.id] = b
    for b in complete[-policy.min_full_backups:]:
        keep[b.id] = b

    pitr_cutoff = now - timedelta(days=policy.pitr_days)
    base = None
    for b in complete:
        if b.stop_time <= pitr_cutoff:
            base = b
    if base is None and keep:
        base = min(keep.values(), key=lambda b: (b.stop_time, b.id))
    if base is not None:
        keep[base.id] = base
        plan.pitr_base = base.id

    plan.keep_backups = [b.id for b in complete if b.id in keep]
    for b in complete:
        if b.id not in keep:
            plan.delete_backups.append((b.id, _marker_last(b)))

    grace_cutoff = now - timedelta(hours=policy.incomplete_grace_hours)
    for b in backups:
        if b.status == "incomplete" and b.last_modified is not None and b.last_modified < grace_cutoff:
            plan.delete_incomplete.append((b.id, sorted(b.keys)))

    # WAL
    needed: dict[int, set[int]] = {}
    for b in keep.values():
        needed.setdefault(b.timeline, set()).update(range(b.start_segment, b.stop_segment + 1))
    for w in sorted(wal_files, key=lambda w: (w.timeline, w.number)):
        if base is None:
            break  # no complete backup at all: WAL is the only copy of anything; keep it
        if w.timeline > base.timeline:
            continue
        if w.timeline == base.timeline and w.number >= base.start_segment:
            continue
        if w.number in needed.get(w.timeline, ()):
            continue
        plan.delete_wal.append(w.key)
    if base is not None:
        # Per timeline, the first segment from which stored WAL must be gap-free:
        # the base's start on its timeline; nothing on older timelines (only the
        # islands of kept backups stay there).
        newest_on = {}
        for w in wal_files:
            newest_on[w.timeline] = max(newest_on.get(w.timeline, -1), w.number)
        cutoffs = {t: (base.start_segment if t == base.timeline else last + 1)
                   for t, last in newest_on.items() if t <= base.timeline}
        cutoffs.setdefault(base.timeline, base.start_segment)
        recorded = pruned or {}
        plan.wal_cutoffs = {t: c for t, c in cutoffs.items() if c > recorded.get(t, -1)}
        # Shipping points older than the base's stop time can no longer be reached.
        plan.delete_points = sorted(p.key for p in points if p.time < base.stop_time)
    return plan


def _marker_last(b: BackupFacts) -> list[str]:
    keys = sorted(k for k in b.keys if k != b.marker)
    return keys + ([b.marker] if b.marker and b.marker in b.keys else [])


def facts_from_inventory(inv) -> tuple[list[BackupFacts], list[WalFile], list[Point], list[str]]:
    """Turn :class:`pgops.backup.inventory.Inventory` into the planner's plain data."""
    from pgops.backup import catalog, wal

    backups = []
    for e in inv.entries:
        marker = catalog.backup_key(e.backup_id, catalog.MARKER)
        if e.record is not None:
            r = e.record
            backups.append(BackupFacts(
                e.backup_id, "complete", e.keys, marker, r.timeline,
                wal.parse_segment(r.start_wal_segment, inv.segment_size).number,
                wal.parse_segment(r.stop_wal_segment, inv.segment_size).number,
                r.stop_time, e.newest_modified))
        else:
            backups.append(BackupFacts(e.backup_id, "unreadable" if e.problem else "incomplete", e.keys,
                                       marker if marker in e.keys else None, last_modified=e.newest_modified))
    wal_files = []
    for name, (key, _digest, _size) in inv.wal_objects.items():
        seg = wal.parse_segment(name, inv.segment_size)
        wal_files.append(WalFile(seg.timeline, seg.number, key))
    points = [Point(p.time, p.key) for p in inv.points]
    return backups, wal_files, points, list(inv.problems)


def apply_plan(repo, plan: Plan) -> None:
    """Carry a plan out, one idempotent step at a time: cut-off markers, then each
    expired backup with its ``backup.json`` last, then incomplete backups, then WAL
    (oldest first), then unreachable shipping points. Backups go before their WAL, so
    an interrupted prune never leaves a listed backup without the WAL that makes it
    consistent; at worst some WAL is left for the next prune."""
    if plan.refused:
        raise UnsafeOperation(plan.refused)
    for timeline, first_kept in plan.wal_cutoffs.items():
        repo.put_bytes(f"{PRUNED_DIR}{timeline:08X}.json", json.dumps({"first_kept_segment": first_kept}).encode())
    for backup_id, keys in plan.delete_backups:
        data, marker = keys[:-1], keys[-1:]
        repo.delete(data)
        repo.delete(marker)
        log.info("deleted expired backup %s", backup_id)
    for backup_id, keys in plan.delete_incomplete:
        repo.delete(keys)
        log.info("deleted incomplete backup %s", backup_id)
    if plan.delete_wal:
        repo.delete(plan.delete_wal)
        log.info("deleted %d WAL file(s)", len(plan.delete_wal))
    if plan.delete_points:
        repo.delete(plan.delete_points)


def prune(repo, policy: Policy, now: datetime, *, dry_run: bool = False) -> Plan:
    """Scan, plan, log the plan, and (unless ``dry_run``) apply it."""
    from pgops.backup.inventory import scan

    inv = scan(repo)
    backups, wal_files, points, problems = facts_from_inventory(inv)
    plan = plan_retention(backups, wal_files, points, policy, now, problems, inv.pruned)
    for line in plan.describe().splitlines():
        log.info("retention%s: %s", " (dry run)" if dry_run else "", line)
    if plan.refused:
        raise UnsafeOperation(plan.refused)
    if not dry_run:
        apply_plan(repo, plan)
        # Writers killed mid-upload leave temporary files or unfinished multipart
        # uploads that no listing shows; after the grace period they cannot be live.
        for leftover in repo.abort_incomplete(now - timedelta(hours=policy.incomplete_grace_hours)):
            log.info("removed leftover of an interrupted upload: %s", leftover)
    return plan


def policy_from_config(config) -> Policy:
    r = config.retention
    return Policy(r.full_days, r.min_full_backups, r.pitr_days, r.incomplete_grace_hours)
