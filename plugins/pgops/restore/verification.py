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
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pgops.backup import catalog, wal
from pgops.backup.inventory import Inventory, scan, wal_reach
from pgops.backup.sentinel import Facts, Sentinel, snapshot_facts
from pgops.config import PgopsConfig
from pgops.errors import IntegrityError, PgopsError, TransientError
from pgops.postgres.cluster import SERVER_USER, as_server_user, chown_to_server_user, find_bindir, free_port
from pgops.postgres.session import connect_params
from pgops.postgres.sqlfiles import steps
from pgops.repository.base import Repository
from pgops.restore.plan import RestorePlan, RestoreRequest

log = logging.getLogger(__name__)

#: 2: check verdicts are passed / failed / not_applicable, each check says whether it is core
EVIDENCE_FORMAT = 2
PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "not_applicable"
#: A green verdict needs every one of these passed; none of them is ever "not applicable".
CORE_CHECKS = ("recovery_target", "pg_amcheck", "sentinel", "relations")


@dataclass
class Check:
    name: str
    verdict: str  # passed | failed | not_applicable (with the reason in detail)
    detail: str
    seconds: float = 0.0
    core: bool = False


@dataclass
class Evidence:
    format: int
    started_at: str
    request: str
    verdict: str = FAILED
    backup_id: str | None = None
    plan: str | None = None
    recovery_settings: dict[str, str] = field(default_factory=dict)
    expected_sentinel: str | None = None
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
                "failed_checks": [c.name for c in self.checks if c.verdict == FAILED], "evidence": self.stored_at,
                "error": self.error}

    def report(self) -> str:
        lines = [f"# Restore verification {self.started_at}: {self.verdict.upper()}", "",
                 f"- request: {self.request}", f"- backup: {self.backup_id}", f"- plan: {self.plan}",
                 f"- RTO: {self.rto_s} s ({', '.join(f'{k} {v} s' for k, v in self.timings_s.items())})",
                 f"- RPO: {json.dumps(self.rpo, default=str)}",
                 f"- sizes: {json.dumps(self.sizes)}"]
        if self.error:
            lines.append(f"- error: {self.error}")
        lines += ["", "| check | core | verdict | seconds | detail |", "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {'yes' if c.core else 'no'} | {c.verdict} | {c.seconds:.2f} | "
                  f"{c.detail.replace('|', '/')} |" for c in self.checks]
        return "\n".join(lines) + "\n"


# -- pure: what the restored data must contain ---------------------------------------------
@dataclass(frozen=True)
class Expected:
    """The newest sentinel a restore must contain; whether the restored state is exactly
    the one recorded with it (so row counts can be compared); and, when there is none,
    why (the sentinel check then fails, saying so)."""

    sentinel: Sentinel | None
    exact: bool = False
    missing_because: str | None = None


def stop_after(inv: Inventory, plan: RestorePlan) -> str | None:
    """Where a drill of the latest point ends recovery: the last segment of the newest
    shipping run it compares with (:func:`expected_sentinel`), so that WAL a run ships
    during the drill, or whose point file it had not written yet when the repository was
    scanned, cannot carry the restored state past that run's sentinel. None otherwise."""
    if plan.kind != "latest":
        return None
    newest = _newest_point(inv, plan)
    return wal.segment_of(newest.timeline, newest.lsn - 1, inv.segment_size).name if newest else None


def _points_after(inv: Inventory, rec) -> list:
    """The shipping runs after backup ``rec`` that its gap-free WAL reaches."""
    _, wal_end = wal_reach(rec, inv.segments(), inv.segment_size)
    return [p for p in inv.points if p.timeline == rec.timeline and p.lsn <= wal_end and p.time > rec.stop_time]


def _newest_point(inv: Inventory, plan: RestorePlan):
    """The newest shipping run the backup's gap-free WAL reaches, after the backup."""
    return max(_points_after(inv, plan.record), key=lambda p: (p.lsn, p.time), default=None)


def expected_sentinel(inv: Inventory, plan: RestorePlan) -> Expected:
    """What the restore of ``plan`` must contain (pure, over the catalog).

    * ``latest``: the sentinel of the newest shipping run the backup's WAL reaches, whose
      state the restore is (exact); with no WAL shipped after the backup yet (a drill
      of the backup alone), the backup's own sentinel;
    * ``time`` / ``lsn``: the newest sentinel committed before the target: a shipping
      run's, else the backup's own, which every restore of it contains;
    * ``immediate``: the backup's own sentinel.
    """
    rec = plan.record
    own = Sentinel.from_json(rec.sentinel) if rec.sentinel else None
    own_missing = rec.sentinel_error or "the backup recorded no sentinel"
    points = _points_after(inv, rec)
    if plan.kind == "latest":
        newest = _newest_point(inv, plan)
        if newest is None:
            return Expected(own, False, None if own else own_missing)
        if not newest.sentinel_facts:
            return Expected(None, False, newest.sentinel_error or f"the shipping run {newest.key} recorded no sentinel")
        return Expected(Sentinel.from_json(newest.sentinel_facts), True)
    if plan.kind == "immediate":
        return Expected(own, False, None if own else own_missing)
    if plan.kind == "time":
        # A sentinel commits just after its written_at: one written in the last second
        # before the target may commit after it, so it is not required.
        limit = datetime.fromisoformat(plan.recovery_settings["recovery_target_time"]) - timedelta(seconds=1)
        before = [p for p in points if p.sentinel_facts and Sentinel.from_json(p.sentinel_facts).written_at < limit]
    elif plan.kind == "lsn":
        limit_lsn = wal.parse_lsn(plan.recovery_settings["recovery_target_lsn"])
        before = [p for p in points if p.lsn <= limit_lsn]
    else:
        return Expected(None, False, f"no sentinel is known for a {plan.kind} target")
    written = [p for p in before if p.sentinel_facts]
    if written:
        newest = max(written, key=lambda p: (p.lsn, p.time))
        return Expected(Sentinel.from_json(newest.sentinel_facts), False)
    return Expected(own, False, None if own else own_missing)


# -- the run ---------------------------------------------------------------------------------
def _timed(checks: list[Check], name: str, fn) -> Check:
    """Run one check and record its verdict. A check that raises has failed (it could not
    run, which is never a pass), and a core check is never "not applicable": one that
    could not be applied has failed, with the reason."""
    t0 = time.monotonic()
    try:
        verdict, detail = fn()
    except PgopsError as exc:
        verdict, detail = FAILED, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a check that cannot run is a failed check, never a pass
        verdict, detail = FAILED, f"could not run: {type(exc).__name__}: {exc}"
    core = name in CORE_CHECKS
    if verdict not in (PASSED, FAILED, NOT_APPLICABLE):
        verdict, detail = FAILED, f"unknown verdict {verdict!r}: {detail}"
    if core and verdict == NOT_APPLICABLE:
        verdict, detail = FAILED, f"a core check could not be applied: {detail}"
    check = Check(name, verdict, detail, round(time.monotonic() - t0, 3), core)
    checks.append(check)
    log.info("check %s%s: %s (%s) in %.1fs", name, " (core)" if core else "", verdict.upper(), detail,
             check.seconds)
    return check


def verdict_of(checks: list[Check], error: str | None) -> str:
    """Passed only when nothing went wrong, every core check ran and passed, and no
    other check failed (a not-applicable one, with its reason, is no failure)."""
    by_name = {c.name: c for c in checks}
    core_passed = all(name in by_name and by_name[name].verdict == PASSED for name in CORE_CHECKS)
    return PASSED if error is None and core_passed and all(c.verdict != FAILED for c in checks) else FAILED


def scratch_postmasters(scratch_root: Path) -> dict[int, Path]:
    """Postmasters running a data directory under ``scratch_root`` (pid → data directory),
    found in /proc: also those whose files are already gone (a clean-up that was killed
    half-way), which no pid file names any more."""
    roots = {str(scratch_root), str(scratch_root.resolve())}
    found: dict[int, Path] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        args = [a.decode("utf-8", "replace") for a in argv if a]
        if not args or Path(args[0]).name not in ("postgres", "postmaster") or "-D" not in args[:-1]:
            continue
        datadir = args[args.index("-D") + 1]
        if any(datadir == root or datadir.startswith(root + "/") for root in roots):
            found[int(proc.name)] = Path(datadir)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return ""


def clean_scratch(scratch_root: Path, *, wait_s: float = 30.0) -> list[str]:
    """Stop and remove every scratch server under ``scratch_root`` (leftovers of a killed
    run). Every postmaster running there is stopped, by ``pg_ctl stop -m immediate``,
    else by SIGKILL (its children exit with it), also one whose directory is gone; a
    server that will not stop is a :class:`TransientError`, and its files stay (a copy of
    production data is never left running unaccounted for)."""
    import signal

    removed: list[str] = []
    if not scratch_root.exists():
        return removed
    bindir = find_bindir()
    run_dirs = sorted(p for p in scratch_root.iterdir() if p.is_dir() and p.name.startswith("verify-"))
    for run_dir in run_dirs:
        datadir = run_dir / "data"
        if (datadir / "postmaster.pid").exists():
            subprocess.run(as_server_user([str(bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "immediate",
                                           "-w", "-t", "60"]), capture_output=True, check=False)
    running = scratch_postmasters(scratch_root)
    for pid, datadir in running.items():
        log.warning("scratch server %s (pid %d) still runs: killing it", datadir, pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    while any(_alive(pid) for pid in running) and time.monotonic() < deadline:
        time.sleep(0.2)
    still = {pid: d for pid, d in running.items() if _alive(pid)}
    if still:
        raise TransientError("scratch server(s) would not stop: " + ", ".join(
            f"pid {pid} on {d}" for pid, d in still.items()) + "; their files are kept")
    for run_dir in run_dirs:
        try:
            shutil.rmtree(run_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TransientError(f"cannot remove the scratch directory {run_dir}: {exc}") from exc
        removed.append(str(run_dir))
    for pid, datadir in running.items():
        if not any(str(datadir).startswith(str(d.resolve())) for d in run_dirs):
            removed.append(f"{datadir} (pid {pid}, its files were already gone)")
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
            on_planned=lambda p: stop_after(inv, planned.setdefault("plan", p)), inventory=inv)
        plan = planned["plan"]
        evidence.backup_id, evidence.plan = result.backup_id, result.plan
        evidence.recovery_settings = plan.recovery_settings
        evidence.sizes = {"raw": result.raw_size, "stored": result.stored_size, "files": result.files}
        evidence.timings_s.update({k: v for k, v in result.timings_s.items() if k != "total"})
        evidence.checks += run_checks(config, inv, plan, result.recovery, socket_dir, port, evidence)
        evidence.timings_s["checks"] = round(sum(c.seconds for c in evidence.checks), 3)
    except Exception as exc:  # noqa: BLE001 - any failure is evidence too, stored before it fails the run
        evidence.error = f"{type(exc).__name__}: {exc}" if isinstance(exc, PgopsError) else \
            f"unexpected {type(exc).__name__}: {exc}"
        if "plan" in planned:
            evidence.backup_id = planned["plan"].record.id
    finally:
        t_down = time.monotonic()
        clean_scratch(scratch_root)
        evidence.timings_s["teardown"] = round(time.monotonic() - t_down, 3)
    evidence.rto_s = round(t_down - t0, 3)
    evidence.verdict = verdict_of(evidence.checks, evidence.error)
    evidence.finished_at = datetime.now(timezone.utc).isoformat()
    if evidence.backup_id:
        store_evidence(repo, evidence, stamp)
    log.info("restore verification %s:\n%s", evidence.verdict.upper(), evidence.report())
    if evidence.verdict != PASSED:
        failed = [c.name for c in evidence.checks if c.verdict == FAILED]
        failed += [f"{name} (did not run)" for name in CORE_CHECKS if name not in {c.name for c in evidence.checks}]
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
    """Every check of the restored server, in order; core checks first. See
    :data:`CORE_CHECKS` and :func:`verdict_of` for what makes the verdict."""
    sql = dict(steps("restore/checks.sql"))
    checks: list[Check] = []
    params = {"host": str(socket_dir), "port": port, "user": SERVER_USER}
    rec = plan.record

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
            return FAILED, "the server is still in recovery"
        replayed = wal.parse_lsn(lsn)
        if replayed < wal.parse_lsn(rec.stop_lsn):
            return FAILED, f"replayed to {lsn}, short of the backup's own consistent point {rec.stop_lsn}"
        if plan.kind == "time":
            target = datetime.fromisoformat(plan.recovery_settings["recovery_target_time"])
            if last_commit is None or last_commit > target:
                return FAILED, f"last replayed commit {last_commit} is not at or before the target {target}"
            return PASSED, f"stopped {recovery.get('stopped_at', '?')}; last commit {last_commit}, target {target}"
        if plan.kind == "lsn" and replayed < wal.parse_lsn(plan.recovery_settings["recovery_target_lsn"]):
            return FAILED, f"replayed to {lsn}, short of {plan.recovery_settings['recovery_target_lsn']}"
        until = stop_after(inv, plan) or plan.wal_until_segment
        if plan.kind == "latest" and until:
            last = wal.parse_segment(until, inv.segment_size)
            if replayed < last.start_lsn:
                return FAILED, (f"replayed to {lsn}, short of the last shipped segment {last.name}: recovery "
                                "stopped before the end of the archive")
        return PASSED, f"promoted after replaying to {lsn} ({recovery.get('wal_files_restored', '0')} WAL files " \
                       f"from the archive); last commit {last_commit}"

    def amcheck():
        bindir = find_bindir(int(rec.pg_version))
        argv = [str(bindir / "pg_amcheck"), "--host", str(socket_dir), "--port", str(port), "--username",
                SERVER_USER, "--all", "--install-missing", "--jobs", "2"]
        proc = subprocess.run(as_server_user(argv), capture_output=True, text=True, check=False,
                              env={**os.environ, "PGCONNECT_TIMEOUT": "30"})
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            return FAILED, f"pg_amcheck exit {proc.returncode}: {out[-1500:]}"
        return PASSED, "heap and B-tree checks of every relation in every database: no corruption"

    expected = expected_sentinel(inv, plan)
    sentinel = expected.sentinel
    dbname = _sentinel_database(config)
    evidence.expected_sentinel = sentinel.token if sentinel else None

    def sentinel_check():
        if sentinel is None:
            return FAILED, f"no sentinel to look for: {expected.missing_because}"
        with connect_params({**params, "dbname": dbname}, application_name="pgops:restore_test",
                            statement_timeout_s=60) as conn:
            row = conn.execute(sql["sentinel"], {"token": sentinel.token}).fetchone()
            if row is None:
                return FAILED, f"sentinel {sentinel.token} (written {sentinel.written_at.isoformat()}) is missing"
            if plan.kind == "time":
                target = datetime.fromisoformat(plan.recovery_settings["recovery_target_time"])
                later = conn.execute(sql["sentinels_after"], {"target": target}).fetchone()[0]
                if later:
                    return FAILED, f"{later} sentinel(s) written after the target {target} were replayed"
        return PASSED, f"sentinel {sentinel.token} ({sentinel.kind}, written {sentinel.written_at.isoformat()}) present"

    facts: dict[str, Facts] = {}

    def restored_facts() -> Facts:
        """The restored copy's relations and counts (the same block samples as recorded)."""
        if "restored" not in facts:
            with connect_params({**params, "dbname": dbname}, application_name="pgops:restore_test",
                                statement_timeout_s=600, autocommit=False) as conn:
                facts["restored"] = snapshot_facts(conn, list(sentinel.counts), samples=sentinel.count_samples)
        return facts["restored"]

    def relations_check():
        if sentinel is None:
            return FAILED, f"nothing to compare with: {expected.missing_because}"
        got = {tuple(r) for r in restored_facts().relations}
        want = {tuple(r) for r in sentinel.relations}
        if want != got:
            missing = sorted(want - got)[:10]
            extra = sorted(got - want)[:10]
            hint = "" if expected.exact else (f" (or DDL ran between the sentinel written "
                                              f"{sentinel.written_at.isoformat()} and the restore point)")
            return FAILED, f"relations differ from those recorded with {sentinel.token}: missing {missing}, " \
                           f"unexpected {extra}{hint}"
        return PASSED, f"{len(got)} tables, indexes and materialized views as recorded with {sentinel.token}"

    def counts_check():
        if sentinel is None:
            return FAILED, f"nothing to compare with: {expected.missing_because}"
        if sentinel.count_errors:
            return FAILED, "row counts were not recorded with " + sentinel.token + ": " + "; ".join(
                f"{table}: {why}" for table, why in sorted(sentinel.count_errors.items()))
        if not sentinel.counts:
            return NOT_APPLICABLE, "restore_verification.count_tables is empty"
        if not expected.exact:
            return NOT_APPLICABLE, (f"rows change between the sentinel {sentinel.token} and this restore point "
                                    "(counts are compared for restores to the latest point, whose state is the "
                                    "sentinel's)")
        restored = restored_facts()
        counts = restored.counts
        tolerance = config.restore_verification.count_tolerance_pct
        bad = []
        for table, want in sentinel.counts.items():
            got = counts.get(table)
            if got is None or abs(got - want) > want * tolerance / 100:
                why = restored.count_errors.get(table, "")
                bad.append(f"{table}: {got} restored, {want} recorded" + (f" ({why})" if why else ""))
        if bad:
            return FAILED, "; ".join(bad)
        return PASSED, ", ".join(
            f"{t} {n}" + (f" (in the {sentinel.count_samples[t]}% block sample recorded)" if t in sentinel.count_samples
                          else "") for t, n in counts.items())

    _timed(checks, "recovery_target", recovery_target)
    _timed(checks, "pg_amcheck", amcheck)
    _timed(checks, "sentinel", sentinel_check)
    _timed(checks, "relations", relations_check)
    _timed(checks, "row_counts", counts_check)
    return checks
