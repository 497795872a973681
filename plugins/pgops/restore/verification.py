"""The restore test: restore into a scratch server, check it, keep the evidence, clean up.

:func:`verify_restore` runs the four steps of the restore-verification DAG:

1. **setup**: :func:`pgops.restore.run.run_restore` into ``<scratch_dir>/<run>/data``, with
   a scratch configuration: no TCP listener (``listen_addresses = ''``), a private socket
   directory, ``archive_mode = off`` (a restored copy must never archive into anyone's
   archive), and a ``pg_hba.conf`` that admits only local connections (run_restore's default);
2. **checks** (each timed, each with a verdict):
   ``recovery_target`` (promoted; last replayed commit not after a time target),
   ``pg_amcheck`` (heap and B-tree of every relation in every database),
   ``sentinel`` (the newest sentinel row the restore must contain is there; none
   written after a time target is), ``relations`` and ``row_counts`` (match what was
   recorded with that sentinel, for restores to the latest point, where the restored
   state is the sentinel's);
3. **evidence**: RTO (download and extract, pg_verifybackup, recovery, checks), achieved
   RPO, sizes and every check, as JSON and as a readable report, stored in the
   repository next to the backup (``backups/<id>/verification/<time>.json`` and ``.md``);
4. **teardown**: the scratch server is stopped and its files removed in every case.

A failed check leaves the evidence stored and then fails: :class:`IntegrityError`
after teardown, so cleanup can never turn a failed verification green.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pgops.backup import catalog, wal
from pgops.backup.inventory import Inventory, scan, summarize
from pgops.backup.sentinel import Sentinel, snapshot_facts
from pgops.config import PgopsConfig
from pgops.errors import IntegrityError, PgopsError
from pgops.postgres.cluster import SERVER_USER, as_server_user, chown_to_server_user, find_bindir, free_port
from pgops.postgres.session import connect_params
from pgops.postgres.sqlfiles import steps
from pgops.repository.base import Repository
from pgops.restore.plan import RestorePlan, RestoreRequest

log = logging.getLogger(__name__)

EVIDENCE_FORMAT = 1


@dataclass
class Check:
    name: str
    verdict: str  # pass | fail | skipped
    detail: str
    seconds: float = 0.0


@dataclass
class Evidence:
    format: int
    started_at: str
    request: str
    verdict: str = "fail"
    backup_id: str | None = None
    plan: str | None = None
    recovery_settings: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    rto_s: float | None = None
    rpo: dict[str, object] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    finished_at: str | None = None
    stored_at: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The short form for the Asset event and the log."""
        return {"verdict": self.verdict, "backup_id": self.backup_id, "rto_s": self.rto_s, "rpo": self.rpo,
                "failed_checks": [c.name for c in self.checks if c.verdict == "fail"], "evidence": self.stored_at,
                "error": self.error}

    def report(self) -> str:
        lines = [f"# Restore verification {self.started_at}: {self.verdict.upper()}", "",
                 f"- request: {self.request}", f"- backup: {self.backup_id}", f"- plan: {self.plan}",
                 f"- RTO: {self.rto_s} s ({', '.join(f'{k} {v} s' for k, v in self.timings_s.items())})",
                 f"- RPO: {json.dumps(self.rpo, default=str)}",
                 f"- sizes: {json.dumps(self.sizes)}"]
        if self.error:
            lines.append(f"- error: {self.error}")
        lines += ["", "| check | verdict | seconds | detail |", "|---|---|---|---|"]
        lines += [f"| {c.name} | {c.verdict} | {c.seconds:.2f} | {c.detail.replace('|', '/')} |" for c in self.checks]
        return "\n".join(lines) + "\n"


# -- pure: what the restored data must contain ---------------------------------------------
def expected_sentinel(inv: Inventory, plan: RestorePlan) -> tuple[Sentinel | None, bool]:
    """The newest sentinel the restore must contain, and whether the restored state is
    exactly the one recorded with it (so counts and relations can be compared)."""
    rec = plan.record
    view = {b["id"]: b for b in summarize(inv)["backups"]}
    item = view.get(rec.id, {})
    until = item.get("wal_shipped_until_segment")
    wal_end = wal.parse_segment(until, inv.segment_size).end_lsn if until else wal.parse_lsn(rec.stop_lsn)
    candidates = []
    for point in inv.points:
        if not point.sentinel_facts or point.timeline != rec.timeline or point.lsn > wal_end:
            continue
        candidates.append((point, Sentinel.from_json(point.sentinel_facts)))
    if plan.kind == "latest":
        token = item.get("recoverable_until_sentinel")
        found = [s for _, s in candidates if s.token == token]
        return (found[0], True) if found else (None, False)
    if plan.kind == "time":
        limit = datetime.fromisoformat(plan.recovery_settings["recovery_target_time"])
    elif plan.kind == "immediate":
        limit = rec.start_time
    else:
        return None, False
    before = [s for _, s in candidates if s.written_at < limit]
    if rec.sentinel:  # committed before this backup started: always in a restore of it
        before.append(Sentinel.from_json(rec.sentinel))
    return (max(before, key=lambda s: s.written_at), False) if before else (None, False)


# -- the run ---------------------------------------------------------------------------------
def _timed(checks: list[Check], name: str, fn) -> Check:
    t0 = time.monotonic()
    try:
        verdict, detail = fn()
    except PgopsError as exc:
        verdict, detail = "fail", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a check that cannot run is a failed check, never a pass
        verdict, detail = "fail", f"could not run: {type(exc).__name__}: {exc}"
    check = Check(name, verdict, detail, round(time.monotonic() - t0, 3))
    checks.append(check)
    log.info("check %s: %s (%s) in %.1fs", name, verdict.upper(), detail, check.seconds)
    return check


def clean_scratch(scratch_root: Path) -> list[str]:
    """Stop and remove every scratch server under ``scratch_root`` (leftovers of a killed run)."""
    removed = []
    if not scratch_root.exists():
        return removed
    bindir = find_bindir()
    for run_dir in sorted(p for p in scratch_root.iterdir() if p.is_dir() and p.name.startswith("verify-")):
        datadir = run_dir / "data"
        if (datadir / "postmaster.pid").exists():
            subprocess.run(as_server_user([str(bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "immediate",
                                           "-w", "-t", "60"]), capture_output=True, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(str(run_dir))
    return removed


def verify_restore(config: PgopsConfig, repo: Repository, request: RestoreRequest, *,
                   now: datetime | None = None) -> Evidence:
    """Run the restore test; returns the evidence (stored already). Raises IntegrityError
    (after storing the evidence and tearing down) when any check failed."""
    from pgops.restore.run import run_restore

    started = now or datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    evidence = Evidence(EVIDENCE_FORMAT, started.isoformat(), request.describe())
    scratch_root = config.resolve_path(config.restore_verification.scratch_dir)
    for leftover in clean_scratch(scratch_root):
        log.warning("removed a leftover scratch server: %s", leftover)
    run_dir = scratch_root / f"verify-{stamp}-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True, mode=0o755)
    run_dir.chmod(0o755)
    socket_dir = run_dir / "run"
    socket_dir.mkdir(mode=0o700)
    chown_to_server_user(socket_dir)
    datadir = run_dir / "data"
    port = free_port()
    planned: dict[str, RestorePlan] = {}
    t0 = time.monotonic()
    inv: Inventory | None = None
    try:
        inv = scan(repo)
        result = run_restore(
            config, repo, request, datadir, start=True, port=port, socket_dir=socket_dir, now=started,
            server_settings={"archive_mode": "off", "logging_collector": "off"},
            on_planned=lambda p: planned.setdefault("plan", p), inventory=inv)
        plan = planned["plan"]
        evidence.backup_id, evidence.plan = result.backup_id, result.plan
        evidence.recovery_settings = plan.recovery_settings
        evidence.sizes = {"raw": result.raw_size, "stored": result.stored_size, "files": result.files}
        evidence.timings_s.update({k: v for k, v in result.timings_s.items() if k != "total"})
        evidence.checks += run_checks(config, inv, plan, result.recovery, socket_dir, port, evidence)
        evidence.timings_s["checks"] = round(sum(c.seconds for c in evidence.checks), 3)
    except PgopsError as exc:
        evidence.error = f"{type(exc).__name__}: {exc}"
        if "plan" in planned:
            evidence.backup_id = planned["plan"].record.id
    finally:
        t_down = time.monotonic()
        clean_scratch(scratch_root)
        evidence.timings_s["teardown"] = round(time.monotonic() - t_down, 3)
    evidence.rto_s = round(t_down - t0, 3)
    evidence.verdict = "pass" if evidence.error is None and evidence.checks and all(
        c.verdict != "fail" for c in evidence.checks) else "fail"
    evidence.finished_at = datetime.now(timezone.utc).isoformat()
    if evidence.backup_id:
        store_evidence(repo, evidence, stamp)
    log.info("restore verification %s:\n%s", evidence.verdict.upper(), evidence.report())
    if evidence.verdict != "pass":
        failed = [c.name for c in evidence.checks if c.verdict == "fail"]
        raise IntegrityError(f"restore verification failed: {evidence.error or 'checks failed: ' + ', '.join(failed)}"
                             f" (evidence: {', '.join(evidence.stored_at) or 'not stored: no backup was chosen'})")
    return evidence


def store_evidence(repo: Repository, evidence: Evidence, stamp: str) -> None:
    base = catalog.backup_key(evidence.backup_id, f"verification/{stamp}")
    evidence.stored_at = [f"{base}.json", f"{base}.md"]
    repo.put_bytes(f"{base}.md", evidence.report().encode())
    repo.put_bytes(f"{base}.json", json.dumps(evidence.to_json(), indent=2, default=str).encode())


def _sentinel_database(config: PgopsConfig) -> str:
    """The database the backup jobs write their sentinel into: the backup connection's."""
    from pgops.connections import get_connection

    return get_connection(config.database.backup_conn_id).schema or "postgres"


def run_checks(config: PgopsConfig, inv: Inventory, plan: RestorePlan, recovery: dict[str, str], socket_dir: Path,
               port: int, evidence: Evidence) -> list[Check]:
    sql = dict(steps("restore/checks.sql"))
    checks: list[Check] = []
    params = {"host": str(socket_dir), "port": port, "user": SERVER_USER}

    def recovery_target():
        with connect_params({**params, "dbname": "postgres"}, application_name="pgops:restore_test",
                            statement_timeout_s=60) as conn:
            in_recovery, lsn, last_commit = conn.execute(sql["recovery_state"]).fetchone()
        evidence.rpo["last_replayed_lsn"] = lsn
        evidence.rpo["last_replayed_commit"] = last_commit.isoformat() if last_commit else None
        evidence.rpo["promised_until"] = plan.expected_until.isoformat()
        if last_commit is not None:
            evidence.rpo["achieved_rpo_s"] = round(max((plan.expected_until - last_commit).total_seconds(), 0), 3)
        if in_recovery:
            return "fail", "the server is still in recovery"
        if plan.kind == "time":
            target = datetime.fromisoformat(plan.recovery_settings["recovery_target_time"])
            if last_commit is None or last_commit > target:
                return "fail", f"last replayed commit {last_commit} is not at or before the target {target}"
            return "pass", f"stopped {recovery.get('stopped_at', '?')}; last commit {last_commit}, target {target}"
        if plan.kind == "lsn" and wal.parse_lsn(lsn) < wal.parse_lsn(plan.recovery_settings["recovery_target_lsn"]):
            return "fail", f"replayed to {lsn}, short of {plan.recovery_settings['recovery_target_lsn']}"
        return "pass", f"promoted after replaying to {lsn} ({recovery.get('wal_files_restored', '0')} WAL files " \
                       f"from the archive); last commit {last_commit}"

    def amcheck():
        bindir = find_bindir(int(plan.record.pg_version))
        argv = [str(bindir / "pg_amcheck"), "--host", str(socket_dir), "--port", str(port), "--username",
                SERVER_USER, "--all", "--install-missing", "--jobs", "2"]
        proc = subprocess.run(as_server_user(argv), capture_output=True, text=True, check=False,
                              env={**os.environ, "PGCONNECT_TIMEOUT": "30"})
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            return "fail", f"pg_amcheck exit {proc.returncode}: {out[-1500:]}"
        return "pass", "heap and B-tree checks of every relation in every database: no corruption"

    sentinel, exact = expected_sentinel(inv, plan)
    dbname = _sentinel_database(config)

    def sentinel_check():
        if sentinel is None:
            return "skipped", "no sentinel was recorded before this restore point (no WAL shipped after the backup?)"
        with connect_params({**params, "dbname": dbname}, application_name="pgops:restore_test",
                            statement_timeout_s=60) as conn:
            row = conn.execute(sql["sentinel"], {"token": sentinel.token}).fetchone()
            if row is None:
                return "fail", f"sentinel {sentinel.token} (written {sentinel.written_at.isoformat()}) is missing"
            if plan.kind == "time":
                target = datetime.fromisoformat(plan.recovery_settings["recovery_target_time"])
                later = conn.execute(sql["sentinels_after"], {"target": target}).fetchone()[0]
                if later:
                    return "fail", f"{later} sentinel(s) written after the target {target} were replayed"
        return "pass", f"sentinel {sentinel.token} present"

    def restored_facts():
        with connect_params({**params, "dbname": dbname}, application_name="pgops:restore_test",
                            statement_timeout_s=600, autocommit=False) as conn:
            return snapshot_facts(conn, list(sentinel.counts))

    facts: dict[str, object] = {}

    def relations_check():
        if sentinel is None or not exact:
            return "skipped", "compared only for restores to the latest point (the sentinel's own state)"
        counts, relations = restored_facts()
        facts["counts"] = counts
        want = {tuple(r) for r in sentinel.relations}
        got = {tuple(r) for r in relations}
        if want != got:
            missing = sorted(want - got)[:10]
            extra = sorted(got - want)[:10]
            return "fail", f"relations differ: missing {missing}, unexpected {extra}"
        return "pass", f"{len(got)} tables, indexes and materialized views as recorded"

    def counts_check():
        if sentinel is None or not exact:
            return "skipped", "compared only for restores to the latest point (the sentinel's own state)"
        counts = facts.get("counts") or restored_facts()[0]
        tolerance = config.restore_verification.count_tolerance_pct
        bad = []
        for table, want in sentinel.counts.items():
            got = counts.get(table)
            if got is None or abs(got - want) > want * tolerance / 100:
                bad.append(f"{table}: {got} restored, {want} recorded")
        if bad:
            return "fail", "; ".join(bad)
        return "pass", ", ".join(f"{t} {n}" for t, n in counts.items()) or "no tables configured"

    _timed(checks, "recovery_target", recovery_target)
    _timed(checks, "pg_amcheck", amcheck)
    _timed(checks, "sentinel", sentinel_check)
    _timed(checks, "relations", relations_check)
    _timed(checks, "row_counts", counts_check)
    return checks
