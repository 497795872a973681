"""Hourly WAL shipping through a physical replication slot owned by pgops.

Each run:

1. checks the timeline and system identifier against the repository (a promotion is a
   **chain break**; a re-created cluster, or an old primary, a refusal);
2. checks the slot (``backup.slot_name``): missing, or invalidated (``wal_status =
   lost``, WAL it needed was removed), means a gap: the slot is (re)created and the run
   reports a chain break, so a full backup starts a new chain;
3. writes the sentinel (backup/sentinel.py), so WAL was always written since the last
   switch, then ``pg_switch_wal()`` and
   ``pg_receivewal --slot … --endpos=<end of that segment> --no-loop`` into the spool;
4. ships every complete segment (never a ``.partial``) and timeline history file:
   compress, checksum, upload, confirm, then remove it from the spool.

A chain break is written to the repository (``wal/breaks/<time>.json``) before the slot
is touched, and every later run reports it again until a full backup has completed
after it: a failed or retried run cannot lose it. WAL that the spool received but never
shipped (the spool lost with its disk or its worker: the slot had released that WAL on
the server) is a chain break too, found by comparing the spool with the newest stored
segment.

Stored names carry the sha256 of the raw file, as pgBackRest's do:
``wal/<first 16 chars>/<segment>-<sha256>.zst``; on an encrypted repository a keyed
digest of it instead (:func:`~pgops.backup.walnames.name_digest`), so that names tell
nothing about the plaintext. A rerun after a crash at any point
ships exactly what is missing: a segment already stored with the same checksum is
skipped; with a different checksum it is an :class:`IntegrityError`, never overwritten.

The spool is part of the durability chain: the slot lets the server recycle WAL once
pg_receivewal has flushed it to the spool, before it is uploaded. Keep the spool on a
persistent disk of the worker that runs the WAL DAG.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from pgops.backup import catalog, wal
from pgops.backup.compress import Encoder, frame_encoder
from pgops.backup.sentinel import record_sentinel
from pgops.backup.server import server_identity, tool_env
from pgops.backup.walnames import (
    BREAKS_DIR, POINTS_DIR, WAL_PREFIX, digest_matches, name_digest, parse_wal_key, wal_dir, wal_key,
)
from pgops.config import PgopsConfig
from pgops.connections import get_connection
from pgops.errors import IntegrityError, NotFound, TransientError
from pgops.postgres.cluster import find_bindir
from pgops.postgres.sqlfiles import load as load_sql
from pgops.repository.base import Repository

log = logging.getLogger(__name__)

def stored_versions(repo: Repository, name: str) -> list[str]:
    """Keys stored for WAL file ``name`` (normally zero or one)."""
    return [o.key for o in repo.list(f"{wal_dir(name)}{name}-")]


def ship_file(repo: Repository, path: Path, level: int = 3, encode: Encoder | None = None) -> tuple[str, bool]:
    """Store one WAL or history file idempotently; returns (key, uploaded?). ``encode``,
    a :func:`~pgops.backup.compress.frame_encoder` at ``level``, is reused across the
    files of a run when given; without it the file gets an encoder of its own.

    The key carries the repository's :func:`~pgops.backup.walnames.name_digest` of the
    file's sha256 (keyed on an encrypted repository). A file already stored under a name
    that matches it otherwise (a plain sha256, written before repository format 2) is
    already stored too."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    existing = stored_versions(repo, path.name)
    key = wal_key(path.name, name_digest(repo, digest))
    if key in existing:
        return key, False
    for stored in existing:
        try:
            if digest_matches(repo, parse_wal_key(stored)[1], digest):
                return stored, False
        except ValueError:
            continue  # not a WAL key: refused below, as any other different version
    if existing:
        raise IntegrityError(
            f"{path.name} is already in {repo.location} with a different checksum ({existing[0]}), "
            f"local copy has sha256 {digest}: refusing to overwrite. Compare both before removing either."
        )
    repo.put_bytes(key, (encode or frame_encoder(level))(data))
    return key, True


@dataclass
class SlotState:
    exists: bool
    wal_status: str | None = None
    restart_lsn: str | None = None
    retained_bytes: int | None = None


@dataclass
class ShipResult:
    """What a run did and found; ``chain_breaks`` non-empty means a new chain is needed
    (``new_chain_breaks``: those this run found, the rest were recorded by earlier runs)."""

    shipped: list[str] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    switched: bool = False
    end_lsn: str | None = None
    timeline: int | None = None
    slot_retained_bytes: int | None = None
    chain_breaks: list[str] = field(default_factory=list)
    new_chain_breaks: list[str] = field(default_factory=list)  # found by this run (a full backup is asked for)
    sentinel: str | None = None
    sentinel_error: str | None = None  # the sentinel could not be written (WAL shipped all the same)
    sentinel_count_errors: dict[str, str] = field(default_factory=dict)  # counts that could not be taken

    def to_json(self) -> dict:
        return asdict(self)


def _slot_state(conn, slot: str) -> SlotState:
    row = conn.execute(load_sql("backup/slot_state.sql"), {"slot": slot}).fetchone()
    if row is None:
        return SlotState(False)
    return SlotState(True, row[0], row[1], row[2])


def ensure_slot(conn, slot: str, result: ShipResult | None = None, *,
                archive_started: bool | Callable[[], bool] = False,
                record: Callable[[list[str]], object] | None = None) -> SlotState:
    """Create the slot when missing; recreate it when invalidated.

    An invalidated slot always means lost WAL. A missing slot means a gap only when the
    repository already holds backups or WAL (``archive_started``, a callable asked only
    when the slot is missing); on an empty repository it simply starts the archive. Gaps
    go to ``result.chain_breaks``, and to ``record`` before the slot is dropped or
    created, so that a failure after this point cannot lose them.
    """
    # WAL shipping and full backups run side by side and both repair the slot: the
    # advisory lock makes one of them do it while the other waits, then finds it healthy.
    with conn.transaction():
        try:
            conn.execute(load_sql("backup/lock_slot.sql"), {"slot": slot})
        except psycopg.errors.QueryCanceled as exc:
            raise TransientError(f"waited longer than statement_timeout for the other job repairing replication "
                                 f"slot {slot!r}; retry") from exc
        return _ensure_slot_locked(conn, slot, result, archive_started=archive_started, record=record)


def _ensure_slot_locked(conn, slot: str, result: ShipResult | None, *, archive_started: bool | Callable[[], bool],
                        record: Callable[[list[str]], object] | None) -> SlotState:
    breaks: list[str] = []
    state = _slot_state(conn, slot)
    lost = state.exists and state.wal_status == "lost"
    if lost:
        breaks.append(
            f"replication slot {slot!r} was invalidated (wal_status=lost): the server removed WAL it had not "
            "shipped (max_slot_wal_keep_size exceeded?). WAL since the last shipped segment is gone; "
            "the slot is recreated and a new full backup starts a new chain")
    if not state.exists or lost:
        started = archive_started() if callable(archive_started) else archive_started
        if not lost and started:
            breaks.append(
                f"replication slot {slot!r} did not exist: created now. WAL before this point was not shipped "
                "by this slot; a new full backup starts a new chain")
        if breaks and record is not None:
            record(breaks)
        try:
            if lost:
                conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", [slot])
            conn.execute("SELECT pg_catalog.pg_create_physical_replication_slot(%s, true)", [slot])
        except psycopg.errors.ObjectInUse as exc:
            raise TransientError(f"replication slot {slot!r} is in use ({exc.diag.message_primary}): "
                                 "pg_receivewal of another WAL run still holds it; retry") from exc
        if not breaks:
            log.info("created replication slot %s: the WAL archive starts here", slot)
        state = _slot_state(conn, slot)
    if result is not None:
        result.chain_breaks.extend(breaks)
    return state


def archive_started(repo: Repository) -> bool:
    """Whether the repository already holds backups or WAL (a missing slot is then a gap)."""
    return bool(repo.list(catalog.BACKUPS)) or bool(newest_stored(repo))


def record_chain_break(repo: Repository, reasons: list[str], *, job: str, timeline: int | None = None,
                       lsn: str | None = None, acknowledged_by: str | None = None,
                       wal_missing_from: str | None = None, run_id: str | None = None) -> str:
    """Write a chain break to the repository (``wal/breaks/``); returns its key.

    ``timeline`` and ``lsn``: the server's WAL position when the break was found; a
    complete full backup that starts there or later is the new chain. ``acknowledged_by``:
    the full backup that found the break and starts the new chain itself.
    ``wal_missing_from``: the first segment the break may have lost (the one after the
    newest stored), so that ``verify`` can tell this known gap from an unexplained one.
    The WAL it may have lost lies between ``wal_missing_from`` and ``lsn``. ``run_id``:
    the Airflow run that found it (its retries announce it again). Records are kept as
    the audit trail of the archive's history; they are small and rare.
    """
    now = datetime.now(timezone.utc)
    key = f"{BREAKS_DIR}{now:%Y%m%dT%H%M%S%fZ}.json"
    repo.put_bytes(key, json.dumps({"time": now.isoformat(), "job": job, "timeline": timeline, "lsn": lsn,
                                    "reasons": reasons, "acknowledged_by": acknowledged_by,
                                    "wal_missing_from": wal_missing_from, "run_id": run_id}).encode())
    log.error("WAL chain break recorded in %s/%s: %s", repo.location, key, " | ".join(reasons))
    return key


def first_unshipped(newest: dict[int, int], timeline: int | None, segment_size: int) -> str | None:
    """The segment after the newest stored one on ``timeline`` (default: the newest
    timeline with stored WAL): where a chain break's gap begins."""
    if timeline is None:
        timeline = max(newest, default=None)
    if timeline is None or timeline not in newest:
        return None
    return wal.Segment(timeline, newest[timeline] + 1, segment_size).name


@dataclass
class Breaks:
    """The recorded chain breaks: those no complete full backup has followed yet, and
    the WAL every recorded one may have lost."""

    unacknowledged: list[tuple[str, dict]] = field(default_factory=list)
    covered: list[tuple[int, int, int]] = field(default_factory=list)  # (timeline, first, last) maybe lost

    def covers(self, timeline: int, first: int, last: int) -> bool:
        return any(t == timeline and a <= first and last <= b for t, a, b in self.covered)


def read_breaks(repo: Repository, segment_size: int = wal.DEFAULT_SEGMENT_SIZE) -> Breaks:
    """The repository's chain-break records (see :func:`~pgops.backup.inventory.break_acknowledged`).
    An unreadable record counts as not followed: it is reported, never skipped."""
    out = Breaks()
    keys = sorted(o.key for o in repo.list(BREAKS_DIR))
    if not keys:
        return out
    from pgops.backup.inventory import break_acknowledged, gap_covered

    complete = sorted(o.key.split("/")[1] for o in repo.list(catalog.BACKUPS)
                      if o.key.endswith("/" + catalog.MARKER))
    newest = None
    if complete:  # the ids sort by start time; only the newest backup.json is read
        try:
            rec = catalog.BackupRecord.model_validate_json(repo.get_bytes(catalog.backup_key(complete[-1],
                                                                                              catalog.MARKER)))
            newest = (rec.timeline, wal.parse_lsn(rec.start_lsn), rec.start_time)
        except (ValueError, NotFound) as exc:
            log.warning("cannot read the newest backup's backup.json (%s): counting no backup as a new chain", exc)
    for key in keys:
        try:
            record = json.loads(repo.get_bytes(key))
            extent = gap_covered(record, segment_size)
            if extent is not None:
                out.covered.append(extent)
            if break_acknowledged(record, set(complete), newest):
                continue
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            record = {"time": "?", "reasons": [f"the record is unreadable ({exc}): inspect it, and delete it by "
                                                "hand once a full backup has completed"]}
        out.unacknowledged.append((key, record))
    return out


def newest_stored(repo: Repository, segment_size: int = wal.DEFAULT_SEGMENT_SIZE) -> dict[int, int]:
    """The newest stored segment number per timeline."""
    out: dict[int, int] = {}
    for obj in repo.list(WAL_PREFIX):
        name = obj.key.rsplit("/", 1)[-1]
        if wal.is_segment_name(name[:24]) and name[24:25] == "-":
            seg = wal.parse_segment(name[:24], segment_size)
            out[seg.timeline] = max(out.get(seg.timeline, -1), seg.number)
    return out


def with_spool(newest: dict[int, int], spool: Path, segment_size: int) -> dict[int, int]:
    """``newest`` (stored segment per timeline) moved on past the complete segments the
    spool holds in sequence: what will be stored once the spool is shipped."""
    out = dict(newest)
    for path in spool_files(spool):
        if wal.is_segment_name(path.name):
            seg = wal.parse_segment(path.name, segment_size)
            if out.get(seg.timeline) == seg.number - 1:
                out[seg.timeline] = seg.number
    return out


def spool_gap(spool: Path, timeline: int, newest: int | None, segment_size: int) -> tuple[str, int, str] | None:
    """(first missing segment, last missing segment number, message) when the spool's
    segments on ``timeline`` do not carry on from the newest stored one without a hole:
    WAL in between was received (so the slot released it on the server) but its spool
    is gone."""
    numbers = sorted({wal.parse_segment(p.name, segment_size).number for p in spool_files(spool)
                      if wal.is_segment_name(p.name) and int(p.name[:8], 16) == timeline})
    if newest is None:
        return None
    expected = newest + 1
    for n in numbers:
        if n < expected:
            continue  # already stored (a run that died after the upload): shipped again as a no-op
        if n > expected:
            first, last = (wal.Segment(timeline, x, segment_size).name for x in (expected, n - 1))
            return first, n - 1, (f"WAL {first}..{last} was received but never shipped: the spool {spool} no "
                                  "longer has it (a lost disk, or a run on another worker?) and the slot had "
                                  "already released it on the server; a new full backup starts a new chain")
        expected = n + 1
    return None


def receivewal_argv(bindir: Path, conninfo: str, spool: Path, slot: str, endpos: int) -> list[str]:
    return [
        str(bindir / "pg_receivewal"),
        "--dbname", conninfo,
        "--directory", str(spool),
        "--slot", slot,
        "--endpos", wal.format_lsn(endpos),
        "--no-loop",
        "--no-password",
        "--verbose",
    ]


def spool_files(spool: Path) -> list[Path]:
    """Complete segments and history files in the spool, in WAL order (never .partial)."""
    files = [p for p in spool.iterdir() if p.is_file() and (wal.is_segment_name(p.name) or wal.is_history_name(p.name))]
    return sorted(files, key=lambda p: (not wal.is_history_name(p.name), p.name))


def _set_aside_partials(spool: Path, behind: wal.Segment | None = None) -> None:
    """Move unfinished segments out of pg_receivewal's way, aside for inspection (never
    deleted). pg_receivewal resumes from the newest file in the spool, not from the slot.

    After a chain break (``behind`` None) every unfinished segment belongs to the old
    history (another slot, timeline or server). Otherwise only one behind the slot's
    position (``behind``: its segment) is set aside: the slot was recreated after that
    file was written (by a full backup, or by a run that failed before this point), so
    the server need not have the WAL that resuming from it would ask for.
    """
    partials = []
    for p in spool.iterdir():
        if not p.name.endswith(".partial"):
            continue
        name = p.name.removesuffix(".partial")
        if behind is not None and wal.is_segment_name(name):
            seg = wal.parse_segment(name, behind.segment_size)
            if seg.timeline == behind.timeline and seg.number >= behind.number:
                continue
        partials.append(p)
    if not partials:
        return
    aside = spool / f"set-aside-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
    aside.mkdir(exist_ok=True)
    for p in partials:
        p.rename(aside / p.name)
        log.warning("moved the unfinished segment %s aside to %s: %s", p.name, aside,
                    "a chain break" if behind is None else f"it is behind the slot's position ({behind.name})")


def ship_wal(config: PgopsConfig, repo: Repository, *, timeout_s: int = 1800, run_id: str | None = None) -> ShipResult:
    """One WAL shipping run (see the module docstring). ``run_id``: the Airflow run, so
    that a retry announces again a chain break its first attempt recorded."""
    from pgops.postgres.session import connect, conninfo_string

    result = ShipResult()
    slot = config.backup.slot_name
    spool = config.resolve_path(config.backup.spool_dir) / slot
    spool.mkdir(parents=True, exist_ok=True)
    conn_info = get_connection(config.database.backup_conn_id)

    with connect(config.database.backup_conn_id, config.database, job="wal_shipping") as conn:
        sysid, major, version_num, timeline, seg_size = server_identity(conn)
        catalog.check_identity(repo, sysid, major)
        result.timeline = timeline
        newest = newest_stored(repo, seg_size)
        known = set(newest)
        found: list[str] = []  # chain breaks this run finds (those of earlier runs come below)
        if known and timeline > max(known):
            found.append(
                f"timeline switch: the server is on timeline {timeline}, the repository's newest WAL is on "
                f"timeline {max(known)} (a promotion or a point-in-time restore); a new full backup starts a new chain")
        elif known and timeline < max(known):
            raise IntegrityError(
                f"the server is on timeline {timeline} but {repo.location} already holds WAL of timeline "
                f"{max(known)}: is this an old primary? Refusing to ship into the newer history.")
        breaks = read_breaks(repo, seg_size)
        recorded: list[str] = []

        def record(reasons: list[str]) -> None:
            # The gap begins after the newest segment stored or waiting in the spool (which
            # ships first); on the old timeline after a switch.
            position = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text").fetchone()[0]
            recorded.append(record_chain_break(
                repo, found + reasons, job="wal_shipping", timeline=timeline, lsn=position, run_id=run_id,
                wal_missing_from=first_unshipped(with_spool(newest, spool, seg_size),
                                                 max(known) if known else timeline, seg_size)))

        slot_check = ShipResult()
        state = ensure_slot(conn, slot, slot_check, record=record,
                            archive_started=lambda: bool(known) or bool(repo.list(catalog.BACKUPS)))
        found += slot_check.chain_breaks
        if found and not recorded:
            record([])
        result.chain_breaks += found
        result.new_chain_breaks += found
        for key, old in breaks.unacknowledged:
            message = (f"a chain break recorded at {old.get('time')} ({key}) is not yet followed by a complete "
                       f"full backup, so point-in-time recovery has a gap until one completes: "
                       f"{' | '.join(map(str, old.get('reasons') or ['(no reason recorded)']))}")
            result.chain_breaks.append(message)
            if run_id is not None and old.get("run_id") == run_id:
                result.new_chain_breaks.append(message)  # this run's earlier attempt found it: announce again
        # The time is read before the switch: every commit before it has its record
        # before the switch position, so the shipping point never overstates coverage.
        switch_time = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]
        # The sentinel commits after switch_time and before the switch: recovery to
        # switch_time always finds a commit to stop at (see backup/sentinel.py).
        # A sentinel or count that fails is recorded and warned about: WAL still ships.
        sentinel, sentinel_error = record_sentinel(
            conn, "wal_switch", f"wal-{switch_time.astimezone(timezone.utc):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}",
            config.restore_verification.count_tables, count_timeout_ms=config.restore_verification.count_timeout_ms,
            count_max_pages=config.restore_verification.count_max_pages)
        result.sentinel = sentinel.token if sentinel else None
        result.sentinel_error = sentinel_error
        if sentinel is not None:
            result.sentinel_count_errors = dict(sentinel.count_errors)
        switch_lsn = wal.parse_lsn(conn.execute("SELECT pg_catalog.pg_switch_wal()::text").fetchone()[0])
        result.switched = switch_lsn % seg_size != 0
        endpos = -(-switch_lsn // seg_size) * seg_size  # the end of the switched segment
        result.end_lsn = wal.format_lsn(endpos)
        if result.switched:
            # pg_receivewal stops only once the server sent WAL past --endpos; a restore
            # point is one small record in the new segment that gets it there at once
            # (instead of waiting for the next background WAL write), and doubles as a
            # named recovery target.
            conn.execute("SELECT pg_catalog.pg_create_restore_point(%s)",
                         [f"pgops-wal-{switch_time.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"])

    received_to = wal.parse_lsn(state.restart_lsn) if state.restart_lsn else 0
    _set_aside_partials(spool, None if found else wal.segment_of(timeline, received_to, seg_size))
    encode = frame_encoder(config.backup.compression_level)  # one for the run, freed after it

    def ship_spool() -> None:
        """Check the spool carries on from the archive, then ship every complete file."""
        gap = None if found else spool_gap(spool, timeline, newest.get(timeline), seg_size)
        if gap and breaks.covers(timeline, wal.parse_segment(gap[0], seg_size).number, gap[1]):
            # A recorded break already covers this lost WAL (say, the full backup that
            # recreated the slot): reported above while no full backup has followed it.
            log.warning("%s (already recorded as a chain break)", gap[2])
        elif gap:
            record_chain_break(repo, [gap[2]], job="wal_shipping", timeline=timeline, lsn=result.end_lsn,
                               wal_missing_from=gap[0], run_id=run_id)
            breaks.covered.append((timeline, wal.parse_segment(gap[0], seg_size).number, gap[1]))
            result.chain_breaks.insert(0, gap[2])
            result.new_chain_breaks.append(gap[2])
        for path in spool_files(spool):
            key, uploaded = ship_file(repo, path, config.backup.compression_level, encode)
            (result.shipped if uploaded else result.already_stored).append(path.name)
            path.unlink()  # only after the repository confirmed the object
            log.info("%s %s", "shipped" if uploaded else "already stored", key)
            if wal.is_segment_name(path.name):
                seg = wal.parse_segment(path.name, seg_size)
                newest[seg.timeline] = max(newest.get(seg.timeline, -1), seg.number)

    # What an earlier run received and did not ship goes first: pg_receivewal resumes
    # after the newest complete segment in the spool, which the server may have removed
    # by now if the slot was recreated meanwhile.
    ship_spool()
    bindir = find_bindir(int(major))
    if endpos > received_to:
        argv = receivewal_argv(bindir, conninfo_string(conn_info, "pgops:wal_shipping"), spool, slot, endpos)
        env = tool_env(conn_info, config)
        log.info("receiving WAL up to %s into %s", result.end_lsn, spool)
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"pg_receivewal did not reach {result.end_lsn} within {timeout_s}s") from exc
        for line in proc.stderr.splitlines():
            log.info("pg_receivewal: %s", line)
        if proc.returncode != 0:
            raise TransientError(f"pg_receivewal exited with status {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    ship_spool()

    with connect(config.database.backup_conn_id, config.database, job="wal_shipping") as conn:
        # Everything up to endpos is now confirmed in the repository: release it on the
        # server. (pg_receivewal's own feedback may not have reached the slot yet.)
        if endpos > received_to:
            conn.execute(load_sql("backup/advance_slot.sql"), {"slot": slot, "lsn": result.end_lsn})
        state = _slot_state(conn, slot)
    result.slot_retained_bytes = state.retained_bytes
    point = {"time": switch_time.astimezone(timezone.utc).isoformat(), "lsn": result.end_lsn,
             "timeline": timeline, "shipped": result.shipped, "sentinel": result.sentinel,
             "sentinel_facts": sentinel.to_json() if sentinel else None, "sentinel_error": sentinel_error}
    repo.put_bytes(f"{POINTS_DIR}{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{endpos:016X}.json",
                   json.dumps(point).encode())
    log.info("WAL shipping: %d shipped, %d already stored, up to %s on timeline %d; slot %s retains %s bytes",
             len(result.shipped), len(result.already_stored), result.end_lsn, timeline, slot, result.slot_retained_bytes)
    return result
