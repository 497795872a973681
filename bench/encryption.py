"""What client-side encryption costs: full backup (and restore) with and without it.

On one PostgreSQL 15 cluster loaded with ``pgbench -i -s SCALE`` (scale 100 is about
1.5 GB), ``--runs`` rounds after one uncounted warm-up round; in each round, in
alternating order, one process per variant (Airflow already imported, as in a worker):

* plain:     ``run_full_backup`` into a new local repository (zstd level 3, 2 workers);
             then "read": every frame of the backup fetched by ranged reads, checked
             and decompressed in-process as a restore does, written nowhere (the
             repository's read cost alone); then ``run_restore(..., start=True)`` of
             it to its consistent point;
* encrypted: the same with ``encryption.enabled`` (AES-256-GCM chunks under per-object
             keys, ``plugins/pgops/repository/encrypted.py``).

Both open the repository through ``open_repository``, as the DAGs do. The restore time
leaves out pg_verifybackup (as ``bench/restore.py`` does); ``--no-restore`` measures
backups only. Prints a Markdown table of medians, the ratios encrypted / plain and the
median of the per-round ratios. Needs root (PostgreSQL runs as the postgres OS user);
everything lives under --workdir and is removed after.

    .venv/bin/python bench/encryption.py --scale 100 --runs 3
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchdb import CHILD_PRELUDE, ROOT, median_table, pgbench_cluster
from full_backup import sh
from restore import stop

CHILD = CHILD_PRELUDE + r"""
from pathlib import Path
from pgops.repository import open_repository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore
repo_dir, target, encrypted, restore = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1"
config = parse_config({"repository": {"url": str(repo_dir)}, "encryption": {"enabled": encrypted},
                       "backup": {"compression_level": 3, "compression_workers": 2}})
repo = open_repository(config.repository, config.encryption)
t = time.perf_counter()
record = run_full_backup(config, repo)
out = {"backup": time.perf_counter() - t, "stored": record.stored_size}
from pgops.restore.fetch import frame_index, raw_pieces
t = time.perf_counter()
for _piece in raw_pieces(repo, record, frame_index(repo, record), workers=config.restore.workers):
    pass
out["read"] = time.perf_counter() - t
if restore:
    repo_dir.chmod(0o755)  # wal-fetch runs as the postgres OS user
    t = time.perf_counter()
    result = run_restore(config, repo, RestoreRequest(backup_id=record.id), target, start=True)
    out["restore"] = time.perf_counter() - t - result.timings_s.get("verifybackup", 0)
out["maxrss_kib"] = hwm_kib()
print(json.dumps(out))
"""

VARIANTS = ("plain", "encrypted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-restore", action="store_true")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pgops-bench-enc-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    os.environ["AIRFLOW_CONN_PGOPS_ENCRYPTION"] = json.dumps(
        {"conn_type": "generic", "password": base64.b64encode(os.urandom(32)).decode()})
    try:
        with pgbench_cluster(work, args.scale) as (_cluster, _password, size):
            return run_rounds(args, work, size)
    finally:
        for child in work.glob("restore-*"):
            stop(child)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run_variant(work: Path, variant: str, restore: bool) -> dict:
    repo, target = work / f"repo-{variant}", work / f"restore-{variant}"
    shutil.rmtree(repo, ignore_errors=True)
    try:
        proc = sh([sys.executable, "-c", CHILD, str(ROOT / "plugins"), str(repo), str(target),
                   "1" if variant == "encrypted" else "0", "1" if restore else "0"],
                  capture_output=True, text=True, env={**os.environ, "PGOPS_HOME": str(ROOT)})
    except subprocess.CalledProcessError as exc:
        print(exc.stderr[-4000:], file=sys.stderr)
        raise
    if restore:
        stop(target)
        shutil.rmtree(target)
    shutil.rmtree(repo)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_rounds(args, work: Path, size: str) -> int:
    phases = ("backup", "read") if args.no_restore else ("backup", "read", "restore")
    results: dict[str, list[float]] = {f"{p} {v}": [] for p in phases for v in VARIANTS}
    stored: dict[str, int] = {}
    rss: list[int] = []
    for i in range(args.runs + 1):  # the first round warms the cache and is not counted
        order = VARIANTS if i % 2 else VARIANTS[::-1]
        children = {v: run_variant(work, v, not args.no_restore) for v in order}
        if i == 0:
            continue
        for variant, child in children.items():
            for phase in phases:
                results[f"{phase} {variant}"].append(child[phase])
            stored[f"backup {variant}"] = child["stored"]
            rss.append(child["maxrss_kib"])
        print(f"# run {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()), file=sys.stderr,
              flush=True)

    print(f"\npgbench scale {args.scale}, databases {size}, {args.runs} runs (medians), warm cache\n")
    med = median_table(results, stored)
    print()
    for phase in phases:
        paired = statistics.median(e / p for e, p in zip(results[f"{phase} encrypted"], results[f"{phase} plain"],
                                                         strict=True))
        print(f"{phase}: encrypted / plain = {med[f'{phase} encrypted'] / med[f'{phase} plain']:.2f}; "
              f"median of the per-round ratios {paired:.2f}")
    print(f"peak RSS of a variant's process (backup, read, restore): max {max(rss) / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
