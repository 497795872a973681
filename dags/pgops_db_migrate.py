"""
### pgops_db_migrate: pgops' own database objects, migrated on request

Runs pgops' migrations (Alembic, version table `pgops.alembic_version`) as the owner
role (connection `database.owner_conn_id`, role `setup.owner_role`): the same code as
`pgops db upgrade|downgrade|current`. Manual runs only: it has no schedule and refuses
backfills.

**Params.** `action`: `upgrade` (default: to the head of every line in `setup.lines`, or
to `revision`), `downgrade` (to `revision`, required: `core@base`, `fixia@base` or a
revision id), or `current` (report only). Unknown params are refused.

**What it locks.** Each migration runs in its own transaction with `lock_timeout`
(`database.lock_timeout_s`); its SQL file's `-- locks:` header says what it locks and for
how long on a large table (read them in `include/sql/migrations/`). A lock timeout is a
transient failure, retried once after a minute; if it fails again, find the blocking
session (`pg_stat_activity`, `pg_locks`), then clear the task. A concurrent index build
(`-- transaction: none`) has no statement_timeout; the others have
`database.statement_timeout_s`.

**When it fails.** A migration whose files changed after it was applied is refused,
naming it (restore the files; a change goes into a new migration). A line not in
`setup.lines` is refused. A database without schema `pgops` needs `pgops db setup`
first (docs/setup.md).

**By hand, with Airflow down**: `pgops db upgrade` (same connection), or `pgops db upgrade
--sql` for the SQL a DBA would run.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from pgops.config import load_config
from pgops.orchestration import START_DATE, TAG, default_args

load_config()  # fail the parse, naming the key, when the configuration is invalid


@dag(
    dag_id="pgops_db_migrate",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    allowed_run_types=("manual",),
    tags=[TAG, "setup"],
    doc_md=__doc__,
    # A retry only after a transient error (server unreachable): each migration is its own
    # transaction, so a rerun starts where the last one committed.
    default_args=default_args(retries=1, execution_timeout=timedelta(hours=2)),
    params={
        "action": Param("upgrade", type="string", enum=["upgrade", "downgrade", "current"],
                        values_display={"upgrade": "upgrade (to the configured heads, or to revision)",
                                        "downgrade": "downgrade (to revision)", "current": "current (report only)"},
                        description="What to do."),
        "revision": Param(None, type=["null", "string"],
                          description="Target revision: core@head, core@base, fixia_0001, ... (upgrade: default the "
                                      "head of every configured line; downgrade: required)."),
    },
)
def pgops_db_migrate():
    @task
    def migrate(**context) -> dict:
        from pgops.database import tasks

        return tasks.migrate(context)

    migrate()


pgops_db_migrate()
