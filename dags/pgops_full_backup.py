"""
### pgops_full_backup: the daily full backup

`pg_basebackup` over the replication protocol (as `pgops_backup`), streamed as framed
zstd straight into the repository (`repository.url`), nothing staged on local disk.
`backup.json` is written last: a backup without it does not exist. The Asset
`x-pgops://fixia/full-backup` is emitted with the backup id, sizes, duration and WAL range
in its extra, so restore verification can be scheduled on it. The result (XCom, Asset
extra and log) carries the sha256 of `backup.json` and of every stored object, so a run
can be tied to the bytes in the repository.

**Schedule**: `backup.full_schedule` (UTC), and also whenever WAL shipping reports a
broken chain (Asset `x-pgops://fixia/wal-chain-break`). Runs in the one-slot pool
`pgops_backup` (with pruning and verification); WAL shipping has its own pool and keeps
shipping during the backup, whose own temporary replication slot keeps its WAL on the
server until it has it all (one replication slot more than WAL shipping needs). One run
at a time.

**Retention** (`prune`, after each backup, never after a failed one): full backups
kept `retention.full_days` with at least `retention.min_full_backups`, WAL for
point-in-time recovery kept `retention.pitr_days`; incomplete backups older than
`retention.incomplete_grace_hours` removed. "Now" is the run's data interval end.
Nothing is deleted when any catalog entry is unreadable (the task fails naming it).
Trigger with `{"dry_run": true}` to log the plan and delete nothing (no backup is taken
in a dry run either).

**Verification** (`verify`, after pruning): `backup.verify_sample` backup objects and as
many WAL segments, chosen at random, re-read and checked against their sha256; WAL
continuity from each backup on (gaps, timelines, WAL lost at the end); every object's
size. Any problem fails the task, naming each (`pgops backups verify` shows the same).

**Backfills** are not allowed (`allowed_run_types`: the UI offers none, the API refuses
them). **Manual runs for past intervals** do nothing and say so in the task log (the
tasks skip): a backup is always of the database as it is now, and retention judged from
a past "now" would keep the wrong things. A dry run says so in its log too. **Unknown
params** (`{"dryrun": true}`) fail the run before anything is done.

**Verification result**: the `verify` task's XCom lists every object it re-read, with the
sha256 it matched.

**When it fails**: `ConfigError` / `UnsafeOperation` / `IntegrityError` fail at once
(bad setting, a repository of another cluster, a stream without its manifest);
`TransientError` (server or storage unreachable, pg_basebackup died) is retried. A
failed run leaves no listed backup: objects without `backup.json` are incomplete and
are removed by pruning after `retention.incomplete_grace_hours`.

**By hand**, Airflow down: `set -a; . var/secrets/pgops.env; set +a; pgops backup full`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, dag, task

from pgops.config import load_config
from pgops.orchestration import (
    ALLOWED_RUN_TYPES, BACKUP_POOL, FULL_BACKUP_ASSET, START_DATE, TAG, WAL_CHAIN_BREAK_ASSET, default_args,
)

CONFIG = load_config()
FULL_BACKUP = Asset(FULL_BACKUP_ASSET)
WAL_CHAIN_BREAK = Asset(WAL_CHAIN_BREAK_ASSET)


@dag(
    dag_id="pgops_full_backup",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CONFIG.backup.full_schedule, timezone="UTC"),
        assets=WAL_CHAIN_BREAK,
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    allowed_run_types=ALLOWED_RUN_TYPES,
    tags=[TAG, "backup"],
    doc_md=__doc__,
    default_args=default_args(retries=2, execution_timeout=timedelta(hours=6), pool=BACKUP_POOL),
    params={"dry_run": Param(False, type="boolean",
                             description="Take no backup; prune logs what retention would delete and deletes nothing.")},
)
def pgops_full_backup():
    @task(outlets=[FULL_BACKUP])
    def full_backup(**context) -> dict:
        from pgops.backup import tasks

        return tasks.full_backup(context, FULL_BACKUP)

    # Prune also after a skipped backup (it then decides for itself), never after a failed one.
    @task(trigger_rule=TriggerRule.NONE_FAILED, execution_timeout=timedelta(hours=1))
    def prune(**context) -> dict:
        from pgops.backup import tasks

        return tasks.prune(context)

    @task(execution_timeout=timedelta(hours=2))
    def verify(**context) -> dict:
        from pgops.backup import tasks

        return tasks.verify(context)

    full_backup() >> prune() >> verify()


pgops_full_backup()
