"""``pgops wal-fetch %f %p``: PostgreSQL's restore_command, against the pgops repository.

The contract (PostgreSQL docs, "Recovering Using a Continuous Archive Backup"):

* exit 0 once the file is complete at ``%p``;
* a non-zero exit at or below 125 means "no such file": recovery takes that as the end
  of the archive, ends, and promotes. pgops answers so (exit 1) **only** when the
  repository was read and really has no such file;
* an exit above 125 makes recovery stop with a FATAL error instead. pgops uses 255 for
  everything else: a network or S3 failure that outlasted the retries, a checksum
  mismatch, a missing key or a bad setting. A transient error at the end of the
  archive therefore never cuts recovery short silently: the server stops, the log says
  why, and starting it again resumes recovery where it was.

Each file is decompressed (and decrypted) and its sha256 checked against the digest in
its stored name (``walnames.name_digest``) before it is handed over, through a temporary
file and a rename.

Prefetch: asked for a segment, the command also fetches the next ``prefetch - 1``
segments that the repository holds into a spool directory (in parallel), and a later
call finds its file there, verified, and only moves it into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pgops.backup import wal
from pgops.backup.walnames import HISTORY_DIR, IDENTITY_KEY, digest_matches, parse_wal_key, wal_dir
from pgops.errors import ConfigError, IntegrityError, NotFound, TransientError
from pgops.repository.base import Repository

log = logging.getLogger(__name__)

FOUND, NOT_FOUND, ABORT = 0, 1, 255
DEFAULT_RETRY_S = 300  # as restore.wal_fetch_retry_s
DEFAULT_PREFETCH = 8  # as restore.wal_prefetch


def is_wal_request(name: str) -> bool:
    return wal.is_segment_name(name) or wal.is_history_name(name)


def take_prefetched(name: str, dest: Path, spool: Path | None) -> bool:
    """Move an already verified prefetched file into place (the fast path: no repository access)."""
    if spool is None:
        return False
    src = spool / name
    try:
        os.replace(src, dest)
    except FileNotFoundError:
        return False
    except OSError:  # another file system: copy, then drop the spooled one
        tmp = dest.with_name(dest.name + ".pgops-tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dest)
        src.unlink(missing_ok=True)
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.pgops-tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _fetch_one(repo: Repository, key: str) -> bytes:
    import zstandard

    name, digest = parse_wal_key(key)
    stored = repo.get_bytes(key)
    try:
        raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=256 * 2**20)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{repo.location}/{key} does not decompress: {exc}") from exc
    if not digest_matches(repo, digest, hashlib.sha256(raw).hexdigest()):
        raise IntegrityError(f"{repo.location}/{key} is corrupt: the sha256 of {name} does not match its stored name")
    return raw


def _listing(repo: Repository, name: str) -> dict[str, str]:
    """Stored WAL keys near ``name``: its directory (one listing), name → key."""
    prefix = HISTORY_DIR if wal.is_history_name(name) else wal_dir(name)
    keys: dict[str, str] = {}
    for obj in repo.list(prefix):
        try:
            stored_name, _ = parse_wal_key(obj.key)
        except ValueError:
            continue
        if stored_name in keys:
            raise IntegrityError(f"{stored_name} is stored twice ({keys[stored_name]} and {obj.key}): "
                                 "refusing to guess; run `pgops backups verify`")
        keys[stored_name] = obj.key
    return keys


def _after(name: str, ref: str | None, segment_size: int) -> int | None:
    """How many segments ``name`` lies after segment ``ref`` (negative: before), or None
    when either is missing, not a segment, or they are on different timelines."""
    if not ref or not wal.is_segment_name(name):
        return None
    seg, last = wal.parse_segment(name, segment_size), wal.parse_segment(ref, segment_size)
    return seg.number - last.number if seg.timeline == last.timeline else None


def beyond(name: str, stop_after: str | None, segment_size: int = wal.DEFAULT_SEGMENT_SIZE) -> bool:
    """Whether ``name`` is a segment after ``stop_after`` on its timeline."""
    after = _after(name, stop_after, segment_size)
    return after is not None and after > 0


def fetch_wal(repo: Repository, name: str, dest: Path, *, spool: Path | None = None, prefetch: int = 8,
              segment_size: int = wal.DEFAULT_SEGMENT_SIZE, expect_until: str | None = None,
              stop_after: str | None = None) -> bool:
    """Put WAL file ``name`` at ``dest``; False when the repository has no such file.

    ``expect_until`` (the restore plan's last gap-free segment): a segment up to it on
    its timeline was in the repository when the restore was planned, so its absence now
    (pruned meanwhile, deleted, damaged) is an error, never the end of the archive.
    ``stop_after``: recovery ends after this segment, as if the archive ended there (the
    restore test recovers exactly to the shipping run whose sentinel it compares with,
    whatever WAL is shipped meanwhile).
    """
    if beyond(name, stop_after, segment_size):
        log.info("wal-fetch: %s is after %s, where this recovery stops", name, stop_after)
        return False
    if take_prefetched(name, dest, spool):
        log.info("wal-fetch: %s from the prefetch spool", name)
        return True
    keys = _listing(repo, name)
    key = keys.get(name)
    if key is None:
        # "Not found" ends recovery, so it must mean this repository lacks the file, not
        # that the URL points at nothing (a typo, an unmounted disk, a wrong bucket).
        if not repo.exists(IDENTITY_KEY):
            raise ConfigError(f"{repo.location} is not a pgops repository (no {IDENTITY_KEY}): check --repository")
        after = _after(name, expect_until, segment_size)
        if after is not None and after <= 0:
            raise IntegrityError(f"{name} is missing from {repo.location}, but the restore was planned with "
                                 f"WAL up to {expect_until}: it disappeared (pruned or deleted?). Stopping "
                                 "recovery rather than ending it at a gap")
        log.info("wal-fetch: %s is not in %s", name, repo.location)
        return False
    ahead: list[tuple[str, str]] = []
    if spool is not None and wal.is_segment_name(name) and prefetch > 1:
        seg = wal.parse_segment(name, segment_size)
        for _ in range(prefetch - 1):
            seg = seg.next()
            if beyond(seg.name, stop_after, segment_size):
                break
            if seg.name in keys and not (spool / seg.name).exists():
                ahead.append((seg.name, keys[seg.name]))
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not ahead:
        _write_atomically(dest, _fetch_one(repo, key))
        log.info("wal-fetch: %s restored from %s", name, key)
        return True
    with ThreadPoolExecutor(max_workers=min(len(ahead) + 1, 4), thread_name_prefix="wal-fetch") as pool:
        wanted = pool.submit(_fetch_one, repo, key)
        spooled = [(n, pool.submit(_fetch_one, repo, k)) for n, k in ahead]
        _write_atomically(dest, wanted.result())
        for ahead_name, fut in spooled:
            try:
                _write_atomically(spool / ahead_name, fut.result())
            except Exception as exc:  # a prefetch failure only costs a later, direct fetch
                log.warning("wal-fetch: prefetching %s failed (%s); it will be fetched when asked for", ahead_name, exc)
    log.info("wal-fetch: %s restored from %s (+%d prefetched)", name, key, len(ahead))
    return True


def fetch_with_retries(attempt: Callable[[], bool], retry_s: float, sleep=time.sleep) -> bool:
    """Run ``attempt`` until it answers, retrying transient errors for up to ``retry_s`` seconds.

    NotFound from a read after the listing found the key is a race with pruning or a
    damaged repository, not the end of the archive: it is raised, never answered as
    "not found".
    """
    deadline = time.monotonic() + retry_s
    delay = 1.0
    while True:
        try:
            return attempt()
        except NotFound as exc:
            raise IntegrityError(f"listed but unreadable: {exc}") from exc
        except TransientError as exc:
            if time.monotonic() + delay > deadline:
                raise TransientError(f"gave up after {retry_s:.0f}s of retries: {exc}") from exc
            log.warning("wal-fetch: %s; retrying in %.0fs", exc, delay)
            sleep(delay)
            delay = min(delay * 2, 30.0)
