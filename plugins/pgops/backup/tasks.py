"""Task entry points of the backup DAGs: each DAG task body is one call here.

They re-validate the configuration at task start, refuse backfills and stale runs
(:func:`pgops.orchestration.is_stale_run`), and return small JSON-able summaries for
XCom and Asset events.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from pgops.backup import catalog
from pgops.config import load_config
from pgops.errors import UnsafeOperation
from pgops.orchestration import check_params, is_stale_run, skip

log = logging.getLogger(__name__)


def _guard(context: dict[str, Any], max_lag: timedelta) -> str | None:
    """Why this run must do nothing (a backfill, a stale run), or None. Refuses params
    the DAG does not declare first: a typo must never run with the defaults."""
    check_params(context)
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    return is_stale_run(str(run_type.value if hasattr(run_type, "value") else run_type) if run_type else None,
                        context.get("data_interval_end"), datetime.now(timezone.utc), max_lag)


def full_backup(context: dict[str, Any], asset: Any = None) -> dict[str, Any]:
    """Take a full backup; attach its summary to the Asset event when given."""
    from pgops.backup.basebackup import run_full_backup
    from pgops.repository import open_repository

    config = load_config()
    reason = _guard(context, timedelta(days=1))
    if not reason and (context.get("params") or {}).get("dry_run"):
        reason = "dry run: no backup is taken; prune logs what it would delete"
    if reason:
        skip(reason)
    record = run_full_backup(config, open_repository(config.repository, config.encryption))
    summary = backup_summary(config, record)
    if asset is not None and "outlet_events" in context:
        context["outlet_events"][asset].extra = summary
    return summary


def backup_summary(config, record) -> dict[str, Any]:
    """What a full backup reports (XCom, Asset extra, log): its identity, sizes, WAL range,
    and the sha256 of its metadata document and of every stored object, so that an
    auditor can tie the run to the bytes in the repository."""
    summary = {
        "backup_id": record.id,
        "repository": config.repository.url,
        "raw_size": record.raw_size,
        "stored_size": record.stored_size,
        "duration_s": round((record.stop_time - record.start_time).total_seconds(), 3),
        "timeline": record.timeline,
        "start_lsn": record.start_lsn,
        "stop_lsn": record.stop_lsn,
        "start_wal_segment": record.start_wal_segment,
        "stop_wal_segment": record.stop_wal_segment,
        "stop_time": record.stop_time.isoformat(),
        # backup.json exactly as written (before encryption, if the repository encrypts)
        "metadata": {"key": catalog.backup_key(record.id, catalog.MARKER),
                     "sha256": hashlib.sha256(record.to_json()).hexdigest()},
        "objects": {role: {"key": obj.key, "size": obj.size, "sha256": obj.sha256}
                    for role, obj in sorted(record.objects.items())},
    }
    log.info("full backup %s: %s sha256 %s; %s", record.id, summary["metadata"]["key"], summary["metadata"]["sha256"],
             "; ".join(f"{o['key']} sha256 {o['sha256']}" for o in summary["objects"].values()))
    return summary


def ship_wal(context: dict[str, Any]) -> dict[str, Any]:
    from pgops.backup.walship import ship_wal as run
    from pgops.repository import open_repository

    config = load_config()
    reason = _guard(context, timedelta(hours=3))
    if reason:
        skip(f"{reason}; WAL is shipped by the current run")
    return run(config, open_repository(config.repository, config.encryption), run_id=context.get("run_id")).to_json()


def announce_chain_break(result: dict[str, Any]) -> list[str]:
    """Succeed, emitting the chain-break Asset event (which starts a full backup), only
    when this run found a new chain break; otherwise skip. Breaks recorded by earlier
    runs already asked for their backup: asking again would queue one more each hour."""
    if not result.get("new_chain_breaks"):
        skip("no new WAL chain break: no full backup is asked for")
    for problem in result["new_chain_breaks"]:
        log.error("new WAL chain break: %s", problem)
    return result["new_chain_breaks"]


def fail_on_chain_break(result: dict[str, Any]) -> None:
    """Fail (no retry) while any recorded chain break has no full backup after it; skip
    when the chain is intact."""
    problems = (result or {}).get("chain_breaks") or []
    if not problems:
        skip("WAL chain intact")
    raise UnsafeOperation(
        "the WAL chain is broken, point-in-time recovery has a gap until the next full backup "
        "(one was requested):\n  " + "\n  ".join(problems))


def run_time(context: dict[str, Any]) -> datetime:
    """The run's "now": its data interval end, else the time the run was due
    (``run_after``). Never the wall clock: a rerun of the same run plans the same."""
    now = context.get("data_interval_end")
    if now is None:
        now = getattr(context.get("dag_run"), "run_after", None)
    if now is None:
        raise UnsafeOperation("the run has neither a data interval end nor a run_after time: "
                              "refusing to prune against the wall clock")
    return now


def prune(context: dict[str, Any]) -> dict[str, Any]:
    """Retention pruning after a full backup. ``now`` is the run's data interval end;
    the ``dry_run`` param logs the plan and deletes nothing. Backfills and stale runs do
    nothing, as the backup does: retention judged from a past "now" keeps too much and
    could only move the WAL cut-off backwards."""
    from pgops.backup.retention import policy_from_config, prune as run
    from pgops.repository import open_repository

    config = load_config()
    reason = _guard(context, timedelta(days=1))
    if reason:
        skip(reason)
    now = run_time(context)
    dry_run = bool((context.get("params") or {}).get("dry_run", False))
    plan = run(open_repository(config.repository, config.encryption), policy_from_config(config), now, dry_run=dry_run)
    return {**plan.to_json(), "dry_run": dry_run, "now": now.isoformat()}


def verify(context: dict[str, Any]) -> dict[str, Any]:
    """The repository re-checked after pruning: ``backup.verify_sample`` random objects and
    segments re-read against their sha256, WAL continuity, sizes. Problems fail the task
    (IntegrityError, no retry), each named in the log."""
    from pgops.backup.verify import verify as run
    from pgops.errors import IntegrityError
    from pgops.repository import open_repository

    config = load_config()
    reason = _guard(context, timedelta(days=1))
    if reason:
        skip(f"{reason}; the current run verifies")
    report = run(open_repository(config.repository, config.encryption), sample=config.backup.verify_sample)
    if report.problems:
        raise IntegrityError(f"{len(report.problems)} problem(s) in the repository:\n  " + "\n  ".join(report.problems))
    for item in report.checked:
        what = f"sha256 {item['sha256']}" if "sha256" in item else f"name digest {item['digest']}"
        log.info("verify: re-read %s: %s matches", item["key"], what)
    log.info("verify: %d backup object(s) and %d WAL file(s) re-read, continuity checked: no problems",
             report.checked_objects, report.checked_segments)
    return {"problems": 0, "checked_objects": report.checked_objects, "checked_segments": report.checked_segments,
            "checked": report.checked}
