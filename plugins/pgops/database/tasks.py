"""The task body of ``pgops_db_migrate``: one call, the same code as ``pgops db``."""

from __future__ import annotations

import logging
from typing import Any

from pgops.config import load_config
from pgops.errors import ConfigError

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
    if action == "downgrade" and not revision:
        raise ConfigError("a downgrade needs a revision (core@base, fixia@base, or a revision id): nothing was done")

    def session():
        return connect(config.database.owner_conn_id, config.database, job="migrate", ddl=True, autocommit=False)

    if action == "upgrade":
        versions = migrations.upgrade(config, session, revision)
    elif action == "downgrade":
        versions = migrations.downgrade(config, session, revision)
    else:
        versions = migrations.current(config, session)
    status = migrations.status(config, set(versions))
    log.info("pgops schema after %s: applied %s; expected %s%s", action, ", ".join(status["applied"]) or "nothing",
             ", ".join(status["expected"]), "; behind: " + "; ".join(status["behind"]) if status["behind"] else "")
    return status
