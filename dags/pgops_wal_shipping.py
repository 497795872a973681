"""
### pgops_wal_shipping: hourly WAL shipping

Through the physical replication slot `backup.slot_name` (created by pgops): commits a
sentinel row (so there is always WAL to switch), switches WAL, receives it with
`pg_receivewal` into the spool
(`backup.spool_dir`, keep it on a persistent disk), and ships every complete segment
and timeline history file to the repository, checksummed, before removing it from
the spool. A rerun after a crash ships exactly what is missing.

**Chain breaks fail the run loudly**: a missing or invalidated slot (`wal_status =
lost`, raise `max_slot_wal_keep_size` or ship more often), a timeline switch, or WAL
received but lost with its spool means point-in-time recovery has a gap. The break is
written to the repository (`wal/breaks/`) as soon as it is found (before the slot is
touched), then
`announce_chain_break` emits the Asset `x-pgops://fixia/wal-chain-break`, which starts a
full backup (a new chain), and `fail_on_chain_break` turns the run red with the reason.
Every run stays red, naming the break, until a full backup has completed after it
(WAL is still shipped meanwhile; the Asset is emitted only by the run that found the
break, and by its retries, so later red runs do not queue more backups). `pgops backups list` shows each
recorded break.

**Other failures**: a segment already stored with a different checksum
(`IntegrityError`) is never overwritten: compare the two copies. A repository of
another cluster is refused. Unreachable server or storage is retried.

**Monitoring**: the result (XCom) has `slot_retained_bytes`, the WAL the slot keeps on
the server; past `max_slot_wal_keep_size` (8GB in the local stack) the server
invalidates the slot rather than fill its disk.

**Sentinel and counts never stop shipping**: a counted table that is gone, unreadable
or slower than `restore_verification.count_timeout_ms` to count, or a sentinel row that
cannot be written, is logged as a warning and recorded (`sentinel_count_errors`,
`sentinel_error` in the result and the point file); WAL ships all the same, and a
restore test that checks that run's sentinel fails naming it.

**Where it runs**: the pool `pgops_wal` (one slot, its own: WAL keeps shipping while a
full backup runs), on the queue `workers.stateful_queue`, whose worker keeps the spool on
its disk. Backfills are not allowed (`allowed_run_types`); a manual run for an interval
long past does nothing and says why in its log. Unknown params fail the run at once.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, TriggerRule, dag, task

from pgops.config import load_config
from pgops.orchestration import ALLOWED_RUN_TYPES, START_DATE, TAG, WAL_CHAIN_BREAK_ASSET, WAL_POOL, default_args

CONFIG = load_config()
WAL_CHAIN_BREAK = Asset(WAL_CHAIN_BREAK_ASSET)


@dag(
    dag_id="pgops_wal_shipping",
    schedule=CONFIG.backup.wal_schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    allowed_run_types=ALLOWED_RUN_TYPES,
    tags=[TAG, "backup"],
    doc_md=__doc__,
    default_args=default_args(retries=3, execution_timeout=timedelta(minutes=45), pool=WAL_POOL),
)
def pgops_wal_shipping():
    # The spool is on this worker's disk: the task runs where it is (workers.stateful_queue).
    @task(queue=CONFIG.workers.stateful_queue)
    def ship_wal(**context) -> dict:
        from pgops.backup import tasks

        return tasks.ship_wal(context)

    @task(outlets=[WAL_CHAIN_BREAK])
    def announce_chain_break(result: dict) -> list:
        from pgops.backup import tasks

        return tasks.announce_chain_break(result)

    # Also after a skipped announcement (a break of an earlier run keeps the run red),
    # but not when shipping itself was skipped (a stale or backfill run).
    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def fail_on_chain_break(result: dict) -> None:
        from pgops.backup import tasks

        tasks.fail_on_chain_break(result)

    shipped = ship_wal()
    announce_chain_break(shipped) >> fail_on_chain_break(shipped)


pgops_wal_shipping()
