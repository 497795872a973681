"""``pgops backups verify``: re-read what is stored and prove it is whole.

* every complete backup has each object its ``backup.json`` lists, with that size and
  (re-read) sha256; its frame index adds up to the stored data;
* every WAL segment decompresses to the digest in its name (its sha256, or a keyed
  digest of it on an encrypted repository: ``walnames.name_digest``);
* WAL is gap-free from each backup's stop segment to the newest segment on its
  timeline, and every timeline after the first has its history file;
* the stored WAL still reaches the newest point each shipping run recorded (WAL lost
  at the end of the archive leaves no gap between stored segments to see);
* at a timeline switch, the parent timeline's WAL reaches the switch point;
* nothing in the repository is unreadable or unexpected.

A gap that a recorded chain break (``wal/breaks/``) explains is not a problem once a
complete full backup has followed the break: it is known, and a new chain exists
(``backups list`` still shows it under ``gaps`` and ``chain_breaks``).

``--full`` re-reads every object; ``--sample N`` re-reads N backup objects and N WAL
segments chosen at random (always all metadata); the default re-reads metadata only.
Each problem names the object. The function returns the problems; the CLI exits
non-zero when there is any.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field

from pgops.backup import wal
from pgops.backup.frames import FrameIndex
from pgops.backup.inventory import Inventory, explained_gaps, scan
from pgops.backup.walnames import digest_matches, name_digest
from pgops.errors import NotFound, PgopsError
from pgops.repository.base import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    problems: list[str]
    checked_objects: int
    checked_segments: int
    #: every object re-read and checked (for the audit trail): a backup object with the
    #: sha256 it matched, a WAL file with the digest its name carries
    checked: list[dict] = field(default_factory=list)


def _wal_sha(repo: Repository, key: str) -> str:
    import zstandard

    digest = hashlib.sha256()
    reader = zstandard.ZstdDecompressor().stream_reader(_Chunks(repo.get_stream(key)))
    while chunk := reader.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _wal_digest(repo: Repository, key: str, named: str) -> str:
    """The digest ``key``'s name should carry for the file it holds now: ``named`` when
    that matches the re-read file, otherwise what the repository would name it."""
    sha = _wal_sha(repo, key)
    return named if digest_matches(repo, named, sha) else name_digest(repo, sha)


class _Chunks:
    """A file-like ``read`` over an iterator of byte chunks."""

    def __init__(self, chunks) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def verify(repo: Repository, *, full: bool = False, sample: int = 0, seed: int | None = None) -> VerifyReport:
    inv: Inventory = scan(repo)
    problems = list(inv.problems)
    rng = random.Random(seed)
    checked_objects = checked_segments = 0
    checked: list[dict] = []
    listed = {o.key: o.size for o in repo.list("backups/")}

    data_objects: list[tuple[str, str, int]] = []
    for entry in inv.entries:
        rec = entry.record
        if rec is None:
            continue
        for role, obj in rec.objects.items():
            if obj.key not in listed:
                problems.append(f"backup {rec.id}: {role} object {obj.key} is missing")
            elif listed[obj.key] != obj.size:
                problems.append(f"backup {rec.id}: {obj.key} has {listed[obj.key]} bytes, backup.json says {obj.size}")
            else:
                data_objects.append((rec.id, obj.key, obj.size))
        index_obj = rec.objects.get("index")
        if index_obj and index_obj.key in listed:
            try:
                index = FrameIndex.from_json(json.loads(repo.get_bytes(index_obj.key)))
                if index.stored_size != rec.objects["data"].size:
                    problems.append(f"backup {rec.id}: frame index covers {index.stored_size} bytes, "
                                    f"data object has {rec.objects['data'].size}")
            except (ValueError, KeyError, TypeError, PgopsError) as exc:
                problems.append(f"backup {rec.id}: frame index {index_obj.key} is unreadable: {exc}")

    to_hash = data_objects if full else rng.sample(data_objects, min(sample, len(data_objects)))
    sha_of = {obj.key: obj.sha256 for e in inv.entries if e.record for obj in e.record.objects.values()}
    for backup_id, key, _size in to_hash:
        try:
            actual = repo.sha256(key)
        except NotFound:
            problems.append(f"backup {backup_id}: {key} vanished while verifying")
            continue
        checked_objects += 1
        checked.append({"key": key, "sha256": actual, "ok": actual == sha_of[key]})
        if actual != sha_of[key]:
            problems.append(f"backup {backup_id}: {key} is corrupt: sha256 {actual}, expected {sha_of[key]}")

    segments = sorted(inv.wal_objects.items())
    to_check = segments if full else rng.sample(segments, min(sample, len(segments)))
    if full or sample:
        to_check += sorted(inv.history_objects.items())
    for name, (key, digest, _size) in to_check:
        try:
            actual = _wal_digest(repo, key, digest)
        except NotFound:
            problems.append(f"WAL {name}: {key} vanished while verifying")
            continue
        except Exception as exc:  # a corrupt zstd stream raises zstandard.ZstdError
            problems.append(f"WAL {name}: {key} cannot be decompressed: {exc}")
            continue
        checked_segments += 1
        # WAL: the digest its name carries (its sha256; keyed on an encrypted repository)
        checked.append({"key": key, "digest": actual, "ok": actual == digest})
        if actual != digest:
            problems.append(f"WAL {name}: {key} is corrupt: sha256 {actual}, expected {digest}")

    problems += continuity_problems(inv)
    for problem in problems:
        log.error("verify: %s", problem)
    return VerifyReport(problems, checked_objects, checked_segments, checked)


def continuity_problems(inv: Inventory) -> list[str]:
    """WAL gaps and missing timeline history files.

    On each timeline the stored WAL must be one gap-free run (retention only ever removes
    the oldest segments), and it must reach back to the stop segment of the newest
    backup on that timeline, so that backup can be rolled forward. Older backups whose
    leading WAL was pruned stay restorable to their own end; ``backups list`` shows that.
    """
    problems = []
    segs = inv.segments()
    size = inv.segment_size
    explained = explained_gaps(inv)
    for tli, numbers in sorted(segs.items()):
        # Below a pruning cut-off only the islands of kept backups remain (checked below).
        first = max(min(numbers), inv.pruned.get(tli, 0))
        if first > max(numbers):
            continue
        for a, b in wal.find_gaps(numbers, first, max(numbers)):
            if any(t == tli and lo <= a and b <= hi for t, lo, hi in explained):
                log.info("verify: WAL gap %s..%s on timeline %d is a recorded chain break, followed by a new chain",
                         wal.Segment(tli, a, size).name, wal.Segment(tli, b, size).name, tli)
                continue
            problems.append(f"WAL gap {wal.Segment(tli, a, size).name}..{wal.Segment(tli, b, size).name} "
                            f"on timeline {tli}: point-in-time recovery across it is impossible")
    for entry in inv.entries:
        rec = entry.record
        if rec is None or rec.timeline not in segs:
            continue
        start = wal.parse_segment(rec.start_wal_segment, size).number
        stop = wal.parse_segment(rec.stop_wal_segment, size).number
        if start < inv.pruned.get(rec.timeline, 0):
            for a, b in wal.find_gaps(segs[rec.timeline], start, stop):
                problems.append(f"backup {rec.id}: WAL {wal.Segment(rec.timeline, a, size).name}.."
                                f"{wal.Segment(rec.timeline, b, size).name} that makes it consistent is missing")
    newest: dict[int, object] = {}
    for entry in inv.entries:
        if entry.record is not None:
            newest[entry.record.timeline] = entry.record
    for tli, rec in sorted(newest.items()):
        numbers = segs.get(tli, set())
        stop = wal.parse_segment(rec.stop_wal_segment, size).number
        if numbers and min(numbers) > stop:
            first = wal.Segment(tli, stop, size).name
            last = wal.Segment(tli, min(numbers) - 1, size).name
            problems.append(f"WAL gap {first}..{last} on timeline {tli} right after the newest backup {rec.id}: "
                            "it cannot be rolled forward")
    # Each shipping run recorded how far it shipped: the stored WAL must still reach the
    # newest such point on each timeline (segments deleted or lost at the end of the
    # archive leave no gap between stored segments to see).
    newest_point: dict[int, int] = {}
    for point in inv.points:
        newest_point[point.timeline] = max(newest_point.get(point.timeline, 0), point.lsn)
    for tli, lsn in sorted(newest_point.items()):
        if lsn <= inv.pruned.get(tli, 0) * size:
            continue  # that timeline's WAL was pruned past the point
        needed = wal.segment_of(tli, lsn - 1, size).number
        have = max(segs.get(tli, set()), default=None)
        if have is None or have < needed:
            first = wal.Segment(tli, have + 1 if have is not None else needed, size).name
            problems.append(f"WAL {first}..{wal.Segment(tli, needed, size).name} on timeline {tli} is missing: "
                            f"shipping recorded WAL up to {wal.format_lsn(lsn)} as stored")
    # A timeline switch: recovery from a backup on the parent timeline follows onto the
    # child only if the parent's WAL reaches the switch point (the child's first segment
    # holds the rest).
    for tli, entries in sorted(inv.histories.items()):
        if not entries:
            continue
        parent, switch_lsn = entries[-1].timeline, entries[-1].switch_lsn
        numbers = segs.get(parent)
        needed = wal.segment_of(parent, switch_lsn, size).number - 1
        if not numbers or inv.pruned.get(parent, 0) > max(numbers) or max(numbers) >= needed:
            continue  # nothing of the parent kept for point-in-time recovery, or all there
        first = wal.Segment(parent, max(numbers) + 1, size).name
        if any(t == parent and lo <= max(numbers) + 1 and needed <= hi for t, lo, hi in explained):
            continue
        problems.append(f"WAL {first}..{wal.Segment(parent, needed, size).name} of timeline {parent}, up to its "
                        f"switch to timeline {tli} at {wal.format_lsn(switch_lsn)}, is missing: recovery from "
                        f"backups on timeline {parent} cannot follow onto timeline {tli}")
    for tli in sorted(segs):
        if tli > 1 and f"{tli:08X}.history" not in inv.history_objects:
            problems.append(f"timeline {tli} has WAL but no {tli:08X}.history file")
    return problems
