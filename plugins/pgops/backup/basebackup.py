"""The daily full backup: pg_basebackup streamed straight into the repository.

``pg_basebackup -D - -Ft -X fetch`` writes one tar stream (data files, the WAL needed
to make them consistent, and ``backup_manifest`` at the end) to its stdout. pgops reads
it in 4 MiB pieces, watches the tar headers go by (:mod:`.tarscan`), compresses the
pieces into zstd frames on ``compression_workers`` threads (:mod:`.frames`) and streams
the frames to the repository. Nothing is staged on local disk; memory is bounded by a
few pieces. Only when pg_basebackup has exited 0, the stream ended with a manifest and
every object is stored does pgops write ``backup.json``: the commit marker.

Runs from the Airflow worker over the replication protocol, as the backup role;
nothing is installed on the database host.
"""

from __future__ import annotations

import collections
import json
import logging
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pgops import __version__
from pgops.backup import catalog, wal
from pgops.backup.frames import FRAME_RAW_SIZE, FrameCompressor, enlarge_pipe, read_full
from pgops.backup.server import ServerIdentity, hold_intact, hold_slot_name, hold_wal, server_identity, tool_env
from pgops.backup.tarscan import TarScanner
from pgops.config import PgopsConfig
from pgops.connections import ConnectionInfo, get_connection
from pgops.errors import IntegrityError, TransientError, UnsafeOperation
from pgops.postgres.cluster import find_bindir
from pgops.postgres.tablespaces import basebackup_refusal, refuse_tablespaces
from pgops.postgres.session import conninfo_string
from pgops.repository.base import Repository

if TYPE_CHECKING:
    from pgops.backup.sentinel import Sentinel

log = logging.getLogger(__name__)

WATCHED = frozenset({"backup_label", "backup_manifest", "PG_VERSION", "global/pg_control"})
PROGRESS_EVERY_S = 10.0


def basebackup_argv(
    bindir: Path,
    conn: ConnectionInfo,
    *,
    label: str,
    checkpoint: str,
    max_rate: str | None,
) -> list[str]:
    """The exact pg_basebackup command line. The password never appears in it (it goes
    in PGPASSWORD); ``--no-password`` makes a missing one fail instead of prompting."""
    argv = [
        str(bindir / "pg_basebackup"),
        "--dbname", conninfo_string(conn, "pgops:full_backup"),
        "--pgdata", "-",
        "--format", "tar",
        "--wal-method", "fetch",
        "--checkpoint", checkpoint,
        "--label", label,
        "--no-password",
        "--verbose",
    ]
    if max_rate:
        argv += ["--max-rate", max_rate]
    return argv


def with_buffered_stdout(argv: list[str]) -> list[str]:
    """``argv`` run with a 1 MiB stdout buffer, through coreutils' ``stdbuf`` when it is
    installed (``argv`` unchanged otherwise).

    pg_basebackup writes its tar stream with stdio in 16 KiB writes: 100,000 pipe writes
    and as many reader wake-ups for 1.5 GB. Writes of 1 MiB (the pipe's size) cut the CPU
    both ends of the pipe spend on it by about 40% (measured: 1.0 s less per 1.5 GB on
    2 vCPUs). ``stdbuf`` execs the program, so its pid and exit status are unchanged.
    """
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "--output=1M", *argv] if stdbuf else argv


def parse_backup_label(text: str) -> dict[str, str]:
    """``backup_label`` as key → value (``START WAL LOCATION`` → ``0/2000028 (file ...)``)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class StreamFacts:
    """What the tar stream said about the backup."""

    start_lsn: int
    checkpoint_lsn: int
    stop_lsn: int
    timeline: int
    pg_version: str
    system_identifier: str
    manifest: bytes


def facts_from_stream(captured: dict[str, bytes]) -> StreamFacts:
    """Read the backup's identity from the members the scanner kept; fail closed."""
    missing = sorted(WATCHED - captured.keys())
    if missing:
        raise IntegrityError(f"pg_basebackup's stream lacks {', '.join(missing)}: the backup is incomplete")
    label = parse_backup_label(captured["backup_label"].decode())
    try:
        manifest = json.loads(captured["backup_manifest"])
        ranges = manifest["WAL-Ranges"]
        start_lsn = wal.parse_lsn(label["START WAL LOCATION"].split()[0])
        checkpoint_lsn = wal.parse_lsn(label["CHECKPOINT LOCATION"])
        timeline = int(label["START TIMELINE"])
        stop_lsn = wal.parse_lsn(ranges[-1]["End-LSN"])
    except (KeyError, IndexError, ValueError) as exc:
        raise IntegrityError(f"cannot read backup_label/backup_manifest from the stream: {exc}") from exc
    if len(ranges) != 1 or ranges[0]["Timeline"] != timeline:
        raise UnsafeOperation(f"the backup spans timelines {[r['Timeline'] for r in ranges]} (a promotion during "
                              "the backup); it is discarded, run it again")
    system_identifier = str(struct.unpack("<Q", captured["global/pg_control"][:8])[0])
    return StreamFacts(start_lsn, checkpoint_lsn, stop_lsn, timeline,
                       captured["PG_VERSION"].decode().strip(), system_identifier, captured["backup_manifest"])


class _Stderr:
    """Collect pg_basebackup's stderr in a thread: log each line, keep the last ones."""

    def __init__(self, stream) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.lines.append(line)
                log.info("pg_basebackup: %s", line)

    def tail(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


def prepare(config: PgopsConfig, repo: Repository, conn, backup_id: str
            ) -> tuple[ServerIdentity, Path, tuple[Sentinel | None, str | None]]:
    """Checks and set-up before any work, in one session (``conn``, as the backup role;
    the WAL hold has a session of its own, see :func:`run_full_backup`): the server's identity, the repository reachable and holding this
    system's backups, the matching pg_basebackup, pgops' replication slot (created before
    the backup starts, so every WAL segment from the backup's start on is kept for WAL
    shipping: the backup starts a gap-free chain), no objects yet under this backup's id,
    and last the sentinel row committed just before the
    backup starts (every restore of this backup must contain it, see backup/sentinel.py;
    when it cannot be written, the backup goes on and records why)."""
    from pgops.backup.sentinel import record_sentinel
    from pgops.backup.walship import archive_started, ensure_slot, first_unshipped, newest_stored, record_chain_break

    def record(reasons: list[str]) -> None:
        position = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text").fetchone()[0]
        record_chain_break(repo, reasons, job="full_backup", timeline=server.timeline, lsn=position,
                           acknowledged_by=backup_id,
                           wal_missing_from=first_unshipped(newest_stored(repo, server.segment_size), None,
                                                            server.segment_size))
        log.warning("full backup %s starts a new WAL chain: the WAL since the last shipped segment is lost; "
                    "point-in-time recovery has a gap until this backup completes", backup_id)

    server = server_identity(conn)
    refuse_tablespaces(conn)  # pg_basebackup -D - cannot carry them: a ConfigError, never a retry
    catalog.check_identity(repo, server.system_identifier, server.major)  # reachable and ours, before any work
    bindir = find_bindir(int(server.major))
    ensure_slot(conn, config.backup.slot_name, archive_started=lambda: archive_started(repo), record=record)
    if repo.list(catalog.backup_prefix(backup_id)):
        raise UnsafeOperation(f"backup {backup_id} already has objects in {repo.location}; refusing to overwrite")
    sentinel = record_sentinel(conn, "full_backup", f"backup-{backup_id}", config.restore_verification.count_tables,
                               count_timeout_ms=config.restore_verification.count_timeout_ms,
                               count_max_pages=config.restore_verification.count_max_pages)
    return server, bindir, sentinel


def new_backup_id(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def run_full_backup(
    config: PgopsConfig,
    repo: Repository,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> catalog.BackupRecord:
    """Take one full backup into ``repo``; returns its committed metadata."""
    from pgops.postgres.session import connect

    started = clock()
    backup_id = new_backup_id(started)
    hold = hold_slot_name(config.backup.slot_name, backup_id)
    # A session of its own holds the backup's WAL on the server until the backup has it
    # all: it runs nothing but the temporary slot, which any error in it would drop.
    with connect(config.database.backup_conn_id, config.database, job="full_backup:wal_hold") as hold_session:
        with connect(config.database.backup_conn_id, config.database, job="full_backup") as session:
            server, bindir, sentinel = prepare(config, repo, session, backup_id)
        hold_wal(hold_session, hold)
        return _take_backup(config, repo, clock, started, backup_id, server, bindir, sentinel,
                            hold_ok=lambda: hold_intact(hold_session, hold))


def _take_backup(config: PgopsConfig, repo: Repository, clock: Callable[[], datetime], started: datetime,
                 backup_id: str, server: ServerIdentity, bindir: Path,
                 sentinel: tuple[Sentinel | None, str | None], hold_ok: Callable[[], bool]) -> catalog.BackupRecord:
    """Run pg_basebackup into ``repo`` and commit the backup (see :func:`run_full_backup`).
    ``hold_ok`` says whether the WAL hold still stands (checked before the start and
    after a failure, so that a lost hold is named)."""
    sysid, version_num = server.system_identifier, server.version_num
    conn = get_connection(config.database.backup_conn_id)
    label = f"pgops {backup_id}"
    argv = basebackup_argv(bindir, conn, label=label, checkpoint=config.backup.checkpoint,
                           max_rate=config.backup.max_rate)
    env = tool_env(conn, config)
    log.info("full backup %s of %s:%s starting (checkpoint=%s, zstd level %d on %d workers) into %s",
             backup_id, conn.host, conn.port, config.backup.checkpoint, config.backup.compression_level,
             config.backup.compression_workers, repo.location)
    if not hold_ok():
        raise TransientError(f"the temporary replication slot holding backup {backup_id}'s WAL is gone before "
                             "pg_basebackup started (its session ended?); retry")
    t0 = time.monotonic()
    proc = subprocess.Popen(with_buffered_stdout(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            stdin=subprocess.DEVNULL, bufsize=0)
    enlarge_pipe(proc.stdout)
    stderr = _Stderr(proc.stderr)
    scanner = TarScanner(WATCHED)
    compressor = FrameCompressor(config.backup.compression_level, config.backup.compression_workers)

    progress = {"read": 0, "reported": time.monotonic()}

    def read_into(buffer: memoryview) -> int:
        """Fill ``buffer`` with the next piece of the stream (called by the compression
        workers, in turn); at its end, 0 once pg_basebackup has exited 0 after a complete
        tar stream."""
        size = read_full(proc.stdout, buffer)
        if size:
            scanner.feed(buffer[:size])
            progress["read"] += size
            now = time.monotonic()
            if now - progress["reported"] >= PROGRESS_EVERY_S:
                progress["reported"] = now
                read_mib, elapsed = progress["read"] / 2**20, now - t0
                log.info("full backup %s: %.0f MiB read in %.0fs (%.1f MiB/s)",
                         backup_id, read_mib, elapsed, read_mib / max(elapsed, 1e-9))
            return size
        rc = proc.wait()
        if rc != 0:
            tail = stderr.tail()
            if not hold_ok():
                tail += ("\n(the temporary replication slot that held the backup's WAL was lost meanwhile: its "
                         "session ended, or max_slot_wal_keep_size invalidated it)")
            raise basebackup_refusal(tail) or TransientError(f"pg_basebackup exited with status {rc}:\n{tail}")
        if not scanner.ended:
            raise IntegrityError("pg_basebackup's tar stream ended without its end-of-archive marker")
        return 0

    data_key = catalog.backup_key(backup_id, "data.tar.zst")
    try:
        data = repo.put_stream(data_key, compressor.frames_into(read_into))
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    facts = facts_from_stream(scanner.captured)
    if facts.system_identifier != sysid:
        raise UnsafeOperation(f"the backup came from system {facts.system_identifier}, expected {sysid}")

    import zstandard

    index = repo.put_bytes(catalog.backup_key(backup_id, "data.index.json"),
                           json.dumps(compressor.index.to_json()).encode())
    manifest = repo.put_bytes(catalog.backup_key(backup_id, "backup_manifest.zst"),
                              zstandard.ZstdCompressor(level=3).compress(facts.manifest))
    stopped = clock()
    record = catalog.BackupRecord(
        id=backup_id,
        label=label,
        system_identifier=sysid,
        pg_version=facts.pg_version,
        server_version_num=version_num,
        timeline=facts.timeline,
        start_lsn=wal.format_lsn(facts.start_lsn),
        checkpoint_lsn=wal.format_lsn(facts.checkpoint_lsn),
        stop_lsn=wal.format_lsn(facts.stop_lsn),
        start_wal_segment=wal.segment_of(facts.timeline, facts.start_lsn).name,
        stop_wal_segment=wal.segment_of(facts.timeline, max(facts.stop_lsn - 1, facts.start_lsn)).name,
        start_time=started,
        stop_time=stopped,
        raw_size=compressor.index.raw_size,
        stored_size=data.size + index.size + manifest.size,
        compression={"algorithm": "zstd", "level": config.backup.compression_level,
                     "frame_raw_size": FRAME_RAW_SIZE, "frames": len(compressor.index.frames)},
        objects={
            "data": catalog.StoredObject(key=data.key, size=data.size, sha256=data.sha256),
            "index": catalog.StoredObject(key=index.key, size=index.size, sha256=index.sha256),
            "manifest": catalog.StoredObject(key=manifest.key, size=manifest.size, sha256=manifest.sha256),
        },
        encryption_key_id=getattr(repo, "key_id", None),
        pgops_version=__version__,
        sentinel=sentinel[0].to_json() if sentinel[0] else None,
        sentinel_error=sentinel[1],
    )
    repo.put_bytes(catalog.backup_key(backup_id, catalog.MARKER), record.to_json())  # the commit marker, last
    elapsed = time.monotonic() - t0
    log.info("full backup %s committed: %.1f MiB raw, %.1f MiB stored (%.1fx), %.1fs, WAL %s..%s on timeline %d",
             backup_id, record.raw_size / 2**20, record.stored_size / 2**20,
             record.raw_size / max(record.stored_size, 1), elapsed, record.start_lsn, record.stop_lsn, record.timeline)
    return record
