"""
### pgops_preflight: does every pgops job have what it needs on this database?

One task, `check_database`, runs `pgops preflight` (`pgops.monitoring.preflight.check`):
checks per job, each `passed`, `failed`, `warning` or `not applicable` (with the
reason), and for every failure and warning the exact fix. A check that could not run
has failed, never passed. The facts are read as the monitoring role; each job's
connection also logs in once, the backup one over the replication protocol too.
Nothing is changed.

| job | what is checked |
|---|---|
| backup | its connection logs in as `setup.backup_role`; a replication connection works (`IDENTIFY_SYSTEM`, its `pg_hba.conf` line); `wal_level` replica or logical; `max_wal_senders` and `max_replication_slots` at least 2; `max_slot_wal_keep_size` bounded (unbounded **fails**); data checksums (warning); no tablespaces; the role (LOGIN, REPLICATION, not a superuser); EXECUTE on `pg_switch_wal()` and `pg_create_restore_point(text)`; SELECT, INSERT, DELETE on `pgops.backup_sentinel`; SELECT on each `restore_verification.count_tables` table (a missing table is a warning); the migration level (`setup.lines` at their heads) and unchanged applied migrations |
| restore_verification | `pg_ctl`, `pg_verifybackup`, `pg_amcheck` of the server's major version on this worker; `restore_verification.scratch_dir` writable or creatable; the sentinel table |
| monitoring | its connection; the role is in `pg_monitor`, not a superuser; `pg_stat_statements` preloaded and created (a warning only, until query monitoring exists; never a backup problem) |
| maintenance | its connection; the role logs in, is not a superuser, has USAGE on schema `pgops`; partitions and materialized views: not applicable until those jobs exist |
| migrations | the owner connection (a warning when not defined: a DBA may run migrations); the owner role is not a superuser and owns schema `pgops` |

**When it fails** the log holds the whole table (job | check | verdict | detail / fix)
and the error lists each failure with its fix: an `ALTER SYSTEM` or `GRANT` to run, a
`pg_hba.conf` line to add (then `SELECT pg_reload_conf();`), `pgops db setup` or
`pgops db upgrade` to run, or a configuration key to change. These are configuration
problems: the task fails at once, without retries. Apply the fixes, then clear the task.
When the only failures are that PostgreSQL could not be reached, the task is retried.

Settings marked "restart" (`wal_level`, `max_wal_senders`, `max_replication_slots`,
`shared_preload_libraries`) need a PostgreSQL restart; `max_slot_wal_keep_size` and
`pg_hba.conf` only a reload. Enabling data checksums (`pg_checksums --enable`) needs
the server stopped for as long as it takes to rewrite every data file.

**Run it by hand**: trigger the DAG, or from a shell with Airflow down (same
connections, see the README): `pgops preflight` (the table; exit 2 when any check
failed) or `pgops preflight --json` (a list of `{job, check, verdict, message, fix}`).
The task's return value (XCom) is that JSON.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from pgops.config import load_config
from pgops.orchestration import START_DATE, TAG, default_args

load_config()  # fail the parse, naming the key, when the configuration is invalid


@dag(
    dag_id="pgops_preflight",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=[TAG, "monitoring"],
    doc_md=__doc__,
    default_args=default_args(execution_timeout=timedelta(minutes=5)),
)
def pgops_preflight():
    @task
    def check_database() -> list[dict]:
        from pgops.config import load_config
        from pgops.monitoring import preflight

        return preflight.check(load_config())

    check_database()


pgops_preflight()
