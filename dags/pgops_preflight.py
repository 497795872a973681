"""
### pgops_preflight: is the Fixia database ready for pgops?

Checks, as the monitoring role, what every other pgops job relies on:
`wal_level` replica, enough WAL senders and replication slots, a bounded
`max_slot_wal_keep_size`, data checksums, `pg_stat_statements` preloaded and created,
and the job roles (backup has REPLICATION, monitor is in `pg_monitor`, none is a
superuser).

**When it fails** the log names each problem (`error: <check>: <what>`). These are
configuration problems: the task fails at once, without retries. Fix the server
setting or role named, then clear the task. A connection failure (server down) is
retried twice.

**Run it by hand**: trigger the DAG, or from a shell with Airflow down:
`pgops preflight` (same connections, see the README).
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
    def check_database() -> list[str]:
        from pgops.config import load_config
        from pgops.monitoring import preflight

        return [str(finding) for finding in preflight.run(load_config())]

    check_database()


pgops_preflight()
