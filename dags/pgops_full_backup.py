"""
### pgops_full_backup: the daily full backup

`pg_basebackup` over the replication protocol (as `pgops_backup`), streamed as framed
zstd straight into the repository (`repository.url`), nothing staged on local disk.
`backup.json` is written last: a backup without it does not exist. The Asset
`x-pgops://fixia/full-backup` is emitted with the backup id, sizes, duration and WAL range
in its extra, so restore verification can be scheduled on it.

**Schedule**: `backup.full_schedule` (UTC), and also whenever WAL shipping reports a
broken chain (Asset `x-pgops://fixia/wal-chain-break`). Runs in the one-slot pool
`pgops_backup` with WAL shipping and pruning; one run at a time.

**Backfills and runs for past intervals** do nothing and say so in the log: a backup is
always of the database as it is now.

**When it fails**: `ConfigError` / `UnsafeOperation` / `IntegrityError` fail at once
(bad setting, a repository of another cluster, a stream without its manifest);
`TransientError` (server or storage unreachable, pg_basebackup died) is retried. A
failed run leaves no listed backup: objects without `backup.json` are incomplete and
are removed by pruning after `retention.incomplete_grace_hours`.

**By hand**, Airflow down: `set -a; . var/secrets/pgops.env; set +a; pgops backup full`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from pgops.config import load_config
from pgops.orchestration import BACKUP_POOL, FULL_BACKUP_ASSET, START_DATE, TAG, WAL_CHAIN_BREAK_ASSET, default_args

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
    tags=[TAG, "backup"],
    doc_md=__doc__,
    default_args=default_args(retries=2, execution_timeout=timedelta(hours=6), pool=BACKUP_POOL),
)
def pgops_full_backup():
    @task(outlets=[FULL_BACKUP])
    def full_backup(**context) -> dict:
        from pgops.backup import tasks

        return tasks.full_backup(context, FULL_BACKUP)

    full_backup()


pgops_full_backup()
