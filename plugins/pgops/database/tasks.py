"""The task body of ``pgops_db_migrate``: one call, the same code as ``pgops db``."""

from __future__ import annotations

import logging
from typing import Any

from pgops.config import load_config

log = logging.getLogger(__name__)


def migrate(context: dict[str, Any]) -> dict[str, Any]:
    """Run the action the run's params ask for, as the owner role's connection
    (``database.owner_conn_id``); returns the migration status after it."""
    from pgops.database import migrations
    from pgops.orchestration import check_params
    from pgops.postgres.session import connect

    params = check_params(context)
    action, revision = params["action"], params.get("revision")
    config = load_config()

    def session():
        return connect(config.database.owner_conn_id, config.database, job="migrate", ddl=True, autocommit=False)

    status = migrations.run_action(config, session, action, revision)
    log.info("pgops schema after %s: applied %s; expected %s%s", action, ", ".join(status["applied"]) or "nothing",
             ", ".join(status["expected"]), "; behind: " + "; ".join(status["behind"]) if status["behind"] else "")
    return status
