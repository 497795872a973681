"""Retention invariants, proven over thousands of random catalogs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup.retention import BackupFacts, Plan, Point, Policy, WalFile, plan_retention

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)


@st.composite
def catalogs(draw):
    """Backups spread over 90 days with WAL segments growing with time, on timeline 1
    and sometimes a later timeline 2; some incomplete, rarely an unreadable one."""
    n = draw(st.integers(0, 25))
    ages = sorted(draw(st.lists(st.floats(0.01, 90), min_size=n, max_size=n)), reverse=True)
    switch_age = draw(st.one_of(st.none(), st.floats(0, 90)))
    backups = []
    for i, age in enumerate(ages):
        stop = NOW - timedelta(days=age)
        seg = int((90 - age) * 24)  # a segment an hour
        tli = 2 if switch_age is not None and age < switch_age else 1
        status = draw(st.sampled_from(["complete"] * 8 + ["incomplete"]))
        bid = f"b{i:03d}"
        keys = (f"backups/{bid}/data", f"backups/{bid}/index")
        if status == "complete":
            backups.append(BackupFacts(bid, "complete", keys + (f"backups/{bid}/backup.json",),
                                       f"backups/{bid}/backup.json", tli, seg, seg + draw(st.integers(0, 3)),
                                       stop, stop))
        else:
            backups.append(BackupFacts(bid, "incomplete", keys, None, last_modified=stop))
    if draw(st.integers(0, 30)) == 0:
        backups.append(BackupFacts("bad", "unreadable", ("backups/bad/backup.json",)))
    first = draw(st.integers(0, 90 * 24))
    last = 90 * 24 + 3
    wal = []
    for number in range(first, last + 1, draw(st.sampled_from([1, 1, 1, 7]))):
        age = 90 - number / 24
        tli = 2 if switch_age is not None and age < switch_age else 1
        wal.append(WalFile(tli, number, f"wal/{tli}/{number}"))
    points = [Point(NOW - timedelta(hours=h), f"wal/points/{h}") for h in range(0, 90 * 24, 24)]
    policy = Policy(full_days=draw(st.integers(1, 40)), min_full_backups=draw(st.integers(1, 5)),
                    pitr_days=0, incomplete_grace_hours=draw(st.integers(1, 72)))
    policy = Policy(policy.full_days, policy.min_full_backups, draw(st.integers(0, policy.full_days)),
                    policy.incomplete_grace_hours)
    return backups, wal, points, policy


def segment_at(t: datetime) -> int:
    """The segment being written at ``t`` in the catalogs above (one an hour)."""
    return int((90 - (NOW - t) / timedelta(days=1)) * 24)


def reachable(backups: list[BackupFacts], numbers: set[int], t: datetime) -> bool:
    """Whether some backup that stopped by ``t`` rolls forward to ``t`` through the WAL
    ``numbers`` (a backup carries its own WAL up to its stop segment)."""
    return any(b.stop_time <= t and all(n in numbers for n in range(b.stop_segment + 1, segment_at(t) + 1))
               for b in backups)


def deleted_ids(plan: Plan) -> set[str]:
    return {bid for bid, _ in plan.delete_backups} | {bid for bid, _ in plan.delete_incomplete}


def apply(backups, wal, points, plan):
    gone = deleted_ids(plan)
    wal_gone = set(plan.delete_wal)
    pts_gone = set(plan.delete_points)
    return ([b for b in backups if b.id not in gone], [w for w in wal if w.key not in wal_gone],
            [p for p in points if p.key not in pts_gone])


@settings(max_examples=2000, deadline=None)
@given(catalogs())
def test_retention_invariants(cat):
    backups, wal, points, policy = cat
    plan = plan_retention(backups, wal, points, policy, NOW)
    complete = sorted((b for b in backups if b.status == "complete"), key=lambda b: (b.stop_time, b.id))
    gone = deleted_ids(plan)
    wal_gone = set(plan.delete_wal)

    # Fail closed: an unreadable entry means nothing is deleted.
    if any(b.status == "unreadable" for b in backups):
        assert plan.refused and plan.empty
        return

    if complete:
        # Never the newest valid backup; at least min_full_backups kept; all young ones kept.
        assert complete[-1].id not in gone
        kept = [b for b in complete if b.id not in gone]
        assert len(kept) >= min(policy.min_full_backups, len(complete))
        for b in complete:
            if b.stop_time >= NOW - timedelta(days=policy.full_days):
                assert b.id not in gone
        # WAL that makes every kept backup consistent stays.
        for b in kept:
            for w in wal:
                if w.timeline == b.timeline and b.start_segment <= w.number <= b.stop_segment:
                    assert w.key not in wal_gone
        # The PITR window stays restorable, judged without the planner's notion of a base:
        # every moment in it that some backup plus gap-free WAL could reach before the
        # prune, some kept backup plus kept WAL still reaches.
        cutoff = NOW - timedelta(days=policy.pitr_days)
        kept_numbers = {w.number for w in wal if w.key not in wal_gone}
        all_numbers = {w.number for w in wal}
        moments = {cutoff + (NOW - cutoff) * k / 8 for k in range(9)} | {b.stop_time for b in complete
                                                                          if b.stop_time >= cutoff}
        for t in moments:
            if reachable(complete, all_numbers, t):
                assert reachable(kept, kept_numbers, t), f"{t} was restorable and no longer is"
    else:
        assert not wal_gone, "without a complete backup, WAL is kept"

    # Incomplete backups within the grace period may still be running.
    for b in backups:
        if b.status == "incomplete" and b.last_modified >= NOW - timedelta(hours=policy.incomplete_grace_hours):
            assert b.id not in gone

    # backup.json is the last key deleted for each backup.
    for _, keys in plan.delete_backups:
        assert keys[-1].endswith("backup.json") and all(not k.endswith("backup.json") for k in keys[:-1])

    # Applying the plan and planning again deletes nothing more.
    again = plan_retention(*apply(backups, wal, points, plan), policy, NOW)
    assert again.empty, again.describe()


def daily_backups(days: int) -> tuple[list[BackupFacts], list[WalFile]]:
    """A backup a day (d00 the newest, an hour old), 96 segments apart, and all their WAL."""
    backups = []
    for day in range(days):
        stop = NOW - timedelta(days=day, hours=1)
        seg = 10_000 - day * 96
        backups.append(BackupFacts(f"d{day:02d}", "complete", (f"backups/d{day:02d}/backup.json",),
                                   f"backups/d{day:02d}/backup.json", 1, seg, seg + 1, stop, stop))
    return backups, [WalFile(1, n, f"wal/{n}") for n in range(10_000 - (days - 1) * 96, 10_002)]


def test_the_default_policy_on_a_month_of_daily_backups():
    backups, wal = daily_backups(45)
    plan = plan_retention(backups, wal, [], Policy(), NOW)
    kept = set(plan.keep_backups)
    assert kept == {f"d{d:02d}" for d in range(30)}  # stopped within 30 days (day 29: 29d 1h ago)
    assert plan.pitr_base == "d07"  # newest at or before now - 7 days
    assert min(w.number for w in wal if w.key not in set(plan.delete_wal)) == 10_000 - 29 * 96


def test_the_wal_cutoff_only_moves_forward():
    """A past "now" (or a longer policy) keeps more backups, but WAL already deleted does
    not come back: the recorded cut-off is never lowered, so verify does not start
    reporting the islands below it as gaps."""
    backups, wal = daily_backups(20)
    now_plan = plan_retention(backups, wal, [], Policy(), NOW)
    assert now_plan.wal_cutoffs == {1: 10_000 - 7 * 96}  # the PITR base d07's start
    assert plan_retention(backups, wal, [], Policy(), NOW, pruned=now_plan.wal_cutoffs).wal_cutoffs == {}
    earlier = plan_retention(backups, wal, [], Policy(), NOW - timedelta(days=5), pruned=now_plan.wal_cutoffs)
    assert earlier.pitr_base == "d12" and earlier.wal_cutoffs == {}
    later = plan_retention(backups, wal, [], Policy(), NOW + timedelta(days=2), pruned=now_plan.wal_cutoffs)
    assert later.wal_cutoffs == {1: 10_000 - 5 * 96}
