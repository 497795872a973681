"""Task entry points of the restore-verification DAG."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from pgops.config import load_config
from pgops.errors import ConfigError
from pgops.orchestration import check_params, skip

log = logging.getLogger(__name__)


def request_from_params(params: dict[str, Any]):
    """The restore the run tests: a backup id and/or a target time, default the newest
    backup plus all WAL after it. Bad values are a ConfigError before any download."""
    from pgops.restore.plan import RestoreRequest

    backup_id = (params.get("backup_id") or "").strip() or None
    text = (params.get("target_time") or "").strip() or None
    target = None
    if text is not None:
        try:
            target = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"param target_time {text!r} is not an ISO timestamp (2026-11-25T03:00:00+00:00)") from exc
        if target.tzinfo is None:
            raise ConfigError(f"param target_time {text!r} needs a UTC offset, e.g. 2026-11-25T03:00:00+00:00")
    if backup_id is not None and not backup_id.replace("T", "").replace("Z", "").isdigit():
        raise ConfigError(f"param backup_id {backup_id!r} is not a backup id like 20261125T020000Z")
    return RestoreRequest(backup_id=backup_id, target_time=target, latest=target is None)


def verify_restore(context: dict[str, Any], asset: Any = None) -> dict[str, Any]:
    from pgops.backup.tasks import _guard
    from pgops.repository import open_repository
    from pgops.restore.verification import verify_restore as run

    config = load_config()
    reason = _guard(context, timedelta(days=2))  # refuses unknown params first
    request = request_from_params(context.get("params") or {})
    if reason:
        skip(f"{reason}; a restore test is about the backups that exist now")
    evidence = run(config, open_repository(config.repository, config.encryption), request,
                   now=datetime.now(timezone.utc))
    summary = evidence.summary()
    if asset is not None and "outlet_events" in context:
        context["outlet_events"][asset].extra = summary
    return summary


def prepare_scratch(context: dict[str, Any]) -> dict[str, Any]:
    """Setup: remove leftovers of a killed run; check the scratch directory and binaries."""
    import shutil

    from pgops.postgres.cluster import find_bindir
    from pgops.restore.verification import clean_scratch

    config = load_config()
    request_from_params(check_params(context))  # bad or unknown params fail here, before anything else
    root = config.resolve_path(config.restore_verification.scratch_dir)
    for path in clean_scratch(root):
        log.warning("removed a leftover scratch server: %s", path)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    bindir = find_bindir()
    free = shutil.disk_usage(root).free
    log.info("scratch directory %s: %.1f GiB free; PostgreSQL binaries in %s", root, free / 2**30, bindir)
    return {"scratch_dir": str(root), "free_bytes": free, "bindir": str(bindir)}


def cleanup_scratch(context: dict[str, Any]) -> list[str]:
    """Teardown: stop and remove any scratch server left on this worker."""
    from pgops.restore.verification import clean_scratch

    config = load_config()
    removed = clean_scratch(config.resolve_path(config.restore_verification.scratch_dir))
    for path in removed:
        log.warning("teardown removed a scratch server: %s", path)
    return removed
