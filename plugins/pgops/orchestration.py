"""What every pgops DAG shares: default task arguments and the retry policy.

DAG files import this module at parse time, so it imports nothing heavy: the Airflow
retry-policy classes are small and come from ``airflow.sdk``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

OWNER = "pgops"
TAG = "pgops"
# A fixed past date: the schedule, not start_date, decides when runs happen; catchup
# is off everywhere, so this never creates historic runs.
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Full backups, pruning and verification take the one slot of this pool: they read and
# change the catalog as a whole (prune deletes what verify re-reads).
BACKUP_POOL = "pgops_backup"
# WAL shipping has a pool of its own, so that it keeps its schedule while a full backup
# runs (hours on a large database). What the two share is made safe on its own: the
# slot's repair is serialized by an advisory lock, each full backup holds the WAL it
# needs with a temporary slot of its own, and catalog readers list the shipping runs'
# records before the WAL they describe (see docs/backups.md, "Concurrency").
WAL_POOL = "pgops_wal"

# Run types the backup and restore DAGs accept: no backfills. A backup is always of the
# database as it is now, so a backfill could only make green runs that took nothing.
ALLOWED_RUN_TYPES = ("scheduled", "manual", "asset_triggered")


def retry_policy() -> Any:
    """Map the pgops exception hierarchy onto Airflow retries.

    Config errors, safety refusals and integrity failures fail the task at once
    (retrying cannot fix them and could hide them); transient errors retry with the
    task's back-off; anything unexpected falls back to the task's retry count.
    """
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=[
                    "pgops.errors.ConfigError",
                    "pgops.errors.UnsafeOperation",
                    "pgops.errors.IntegrityError",
                ],
                action=RetryAction.FAIL,
                reason="pgops refused or found bad config/data: retrying cannot help",
            ),
            RetryRule(
                exception="pgops.errors.TransientError",
                action=RetryAction.RETRY,
                reason="transient failure: retrying",
            ),
        ]
    )


def skip(reason: str) -> None:
    """Skip the task, saying why in its log first (Airflow itself logs only "Skipping
    task."), so a run that did nothing is never a silent green."""
    import logging

    from airflow.sdk.exceptions import AirflowSkipException

    logging.getLogger("pgops").warning("skipping: %s", reason)
    raise AirflowSkipException(reason)


def check_params(context: dict[str, Any]) -> dict[str, Any]:
    """The run's params, after refusing any the DAG does not declare.

    Airflow merges a trigger's conf into the params as it is, so a typo (``dryrun`` for
    ``dry_run``) would silently run with the defaults: a real backup and a real prune.
    """
    from pgops.errors import ConfigError

    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    dag = context.get("dag") or getattr(context.get("task"), "dag", None)
    declared = set(getattr(dag, "params", None) or {})
    unknown = sorted(set(conf) - declared)
    if unknown:
        raise ConfigError(f"unknown param(s) {', '.join(map(repr, unknown))} in the run's conf; this DAG takes "
                          f"{', '.join(map(repr, sorted(declared))) or 'no params'}: nothing was done")
    return dict(context.get("params") or {})


def default_args(
    *, retries: int = 2, execution_timeout: timedelta = timedelta(hours=1), **extra: Any
) -> dict[str, Any]:
    """Task defaults for a pgops DAG: owner, bounded retries with back-off, a timeout."""
    return {
        "owner": OWNER,
        "retries": retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=15),
        "execution_timeout": execution_timeout,
        "retry_policy": retry_policy(),
        **extra,
    }


def is_stale_run(run_type: str | None, data_interval_end: datetime | None, now: datetime,
                 max_lag: timedelta) -> str | None:
    """Why a run must not take a backup now, or None when it should.

    A backup is always of the database as it is now: a backfill, or a manual run for an
    interval that ended long ago, would store today's data under a historic label. Such
    runs do nothing and say why. ``now`` is the wall clock here on purpose: the question
    is whether the run is about the present.
    """
    if run_type == "backfill":
        return "this is a backfill run: backups cannot be taken for the past, so it does nothing"
    if data_interval_end is not None and now - data_interval_end > max_lag:
        return (f"the run's interval ended at {data_interval_end.isoformat()}, more than {max_lag} ago: "
                "a backup taken now would not be of that interval, so it does nothing")
    return None


# Asset URIs. The "x-" scheme marks them as custom, so Airflow does not load every
# provider's URI normalizers while parsing a DAG file (~0.2-0.5 s otherwise).
FULL_BACKUP_ASSET = "x-pgops://fixia/full-backup"
WAL_CHAIN_BREAK_ASSET = "x-pgops://fixia/wal-chain-break"
RESTORE_VERIFIED_ASSET = "x-pgops://fixia/restore-verified"
