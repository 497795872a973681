from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pgops.orchestration import is_stale_run

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def test_backfills_never_take_backups():
    assert "backfill" in is_stale_run("backfill", NOW, NOW, timedelta(days=1))


def test_runs_for_old_intervals_do_nothing_and_say_why():
    reason = is_stale_run("manual", NOW - timedelta(days=3), NOW, timedelta(days=1))
    assert reason and "ended at 2026-11-22" in reason


def test_current_scheduled_and_manual_runs_proceed():
    assert is_stale_run("scheduled", NOW - timedelta(hours=2), NOW, timedelta(days=1)) is None
    assert is_stale_run("manual", NOW, NOW, timedelta(days=1)) is None
    assert is_stale_run("asset_triggered", None, NOW, timedelta(days=1)) is None
