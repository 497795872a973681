"""
### pgops_restore_verification: the monthly restore test, with evidence

Proves that the newest backup restores, how long it takes (RTO) and how much data it
would lose (RPO), and keeps the proof for auditors.

1. **setup**: `pgops restore` into `restore_verification.scratch_dir` on this worker and
   start a throwaway PostgreSQL: no TCP listener, a private socket, `archive_mode = off`,
   local superuser only;
2. **checks**, each `passed`, `failed` or `not_applicable` with its reason. The four
   *core* checks must all pass for a green run, and are never "not applicable" (one
   that cannot run has failed): `recovery_target` (promoted, replayed to the target or
   to the end of the shipped WAL); `pg_amcheck` (heap and B-tree, every relation in
   every database); `sentinel` (the newest sentinel row the backup jobs wrote before the
   restore point is present, and for a time target none written after it; a drill of a
   backup with no WAL after it yet looks for the backup's own sentinel); `relations`
   (the list of tables, indexes and materialized views recorded with that sentinel).
   `row_counts` compares the counts of `restore_verification.count_tables` for restores
   to the latest point (the sentinel's own state; otherwise not applicable, saying why),
   and fails when a count could not be recorded (a dropped table, a timeout);
3. **evidence**: `backups/<id>/verification/<time>.json` and `.md` in the repository,
   this task's log, and the Asset `x-pgops://fixia/restore-verified` event extra
   (verdict, RTO, RPO, failed checks);
4. **teardown**: the scratch server is stopped and removed in every case (also by the
   `cleanup_scratch` teardown task, in case the worker was killed). A failed check
   fails the run; cleanup never turns it green.

Tasks: `prepare_scratch` (setup: removes leftovers, checks the binaries and free disk)
>> `verify_restore` >> `cleanup_scratch` (teardown).

**Schedule**: `restore_verification.schedule` (UTC, monthly by default); also after every
full backup (Asset `x-pgops://fixia/full-backup`) when `restore_verification.on_full_backup`.

**Params** (manual trigger): `backup_id` (restore this backup and all WAL after it) and/or
`target_time` (ISO 8601 with offset: restore to that time); both empty: the newest backup
plus all WAL after it. Values the catalog cannot satisfy fail at once, before any
download, saying why (`pgops backups list` shows the restorable windows).

**When it fails**: read the `.md` report (or the log): each check has its verdict and
detail. `IntegrityError` = the backup did not restore correctly: treat as an incident
(run `pgops backups verify --full`, take a new full backup). `TransientError` (storage
unreachable, the scratch server would not start) is retried.

**Needs** on the worker: PostgreSQL binaries of the backup's major version, free disk for
one full restore in `scratch_dir`, and the postgres OS user. All three tasks run on the
queue `workers.stateful_queue`, so they share that worker's scratch server; its clean-up
also stops a scratch server whose files are already gone. Backfills are not allowed.
`target_time` is checked as a date-time by the trigger form; unknown params fail the run.

**By hand**, Airflow down: `pgops restore --to /scratch/dir --latest --start`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from pgops.config import load_config
from pgops.orchestration import ALLOWED_RUN_TYPES, FULL_BACKUP_ASSET, RESTORE_VERIFIED_ASSET, START_DATE, TAG, default_args

CONFIG = load_config()
RESTORE_VERIFIED = Asset(RESTORE_VERIFIED_ASSET)
CRON = CronTriggerTimetable(CONFIG.restore_verification.schedule, timezone="UTC")


@dag(
    dag_id="pgops_restore_verification",
    schedule=AssetOrTimeSchedule(timetable=CRON, assets=Asset(FULL_BACKUP_ASSET))
    if CONFIG.restore_verification.on_full_backup else CRON,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    allowed_run_types=ALLOWED_RUN_TYPES,
    tags=[TAG, "restore"],
    doc_md=__doc__,
    # The scratch server lives on the worker's disk: every task runs where it is.
    default_args=default_args(retries=1, execution_timeout=timedelta(hours=12),
                              queue=CONFIG.workers.stateful_queue),
    params={
        "backup_id": Param(None, type=["null", "string"], description="Restore this backup (default: the newest)."),
        "target_time": Param(None, type=["null", "string"], format="date-time",
                             description="Recover to this time, ISO 8601 with offset, e.g. 2026-11-25T03:00:00+00:00 "
                                         "(default: all shipped WAL)."),
    },
)
def pgops_restore_verification():
    @task(execution_timeout=timedelta(minutes=10))
    def prepare_scratch(**context) -> dict:
        from pgops.restore import tasks

        return tasks.prepare_scratch(context)

    @task(outlets=[RESTORE_VERIFIED])
    def verify_restore(**context) -> dict:
        from pgops.restore import tasks

        return tasks.verify_restore(context, RESTORE_VERIFIED)

    @task(execution_timeout=timedelta(minutes=10))
    def cleanup_scratch(**context) -> list:
        from pgops.restore import tasks

        return tasks.cleanup_scratch(context)

    # Setup and teardown: cleanup runs whatever verify_restore did, and its success never
    # decides the run's state (a failed verification stays red).
    prepare = prepare_scratch()
    prepare >> verify_restore() >> cleanup_scratch().as_teardown(setups=prepare)


pgops_restore_verification()
