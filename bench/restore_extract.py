"""A restore's download-and-extract phase alone, in processes with and without Airflow
imported (and, with --baseline, another checkout's pgops beside this one's).

``run_restore(start=False, verify_backup=False)`` of one backup of an existing local
repository into a scratch directory, ``--runs`` times per variant, interleaved, each in a
fresh process. It isolates what the whole-restore benchmark (``restore.py``, whose
processes import Airflow first, as a worker does) cannot: what a process's own state
costs the extraction, and what a code change costs it.

Besides the wall time it reports, per variant, the process's CPU time during the restore
(user + system, all its threads) and the part of the wall time spent creating files and
directories. A process state that slowed the code (an audit hook, a per-file log call,
tracing) would show in the CPU time; the file system's own cost shows in the creating
time. The target is removed right before each run, as back-to-back restores remove the
previous copy: on a journal-less ext4 (this project's machines) every create then skips,
one by one, the inodes deleted in the last minutes, and that, not the process, dominates
and swings the wall time. ``--scratch /dev/shm`` (a tmpfs) takes the file system out.

    .venv/bin/python bench/restore_extract.py --repository var/repository --runs 5
    .venv/bin/python bench/restore_extract.py --repository var/repository --runs 8 --scratch /dev/shm
    .venv/bin/python bench/restore_extract.py --repository /tmp/r --baseline /tmp/old/plugins
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[5] == "1":
    import airflow.sdk  # noqa: F401 - as in a worker
from pathlib import Path
from pgops.config import parse_config
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore
config = parse_config({"repository": {"url": sys.argv[2]}})
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
t, c = time.perf_counter(), cpu()
result = run_restore(config, LocalRepository(Path(sys.argv[2])), RestoreRequest(backup_id=sys.argv[3]),
                     Path(sys.argv[4]), start=False, verify_backup=False)
print(json.dumps({"seconds": time.perf_counter() - t, "download_extract": result.timings_s["download_extract"],
                  "cpu_s": cpu() - c, "create_files_s": getattr(result, "create_files_s", None)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="a local pgops repository (read only)")
    parser.add_argument("--backup-id", help="default: the newest complete backup")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="PLUGINS", help="another checkout's plugins/ directory to compare")
    parser.add_argument("--scratch", metavar="DIR", help="where the restores are written (default: the temp "
                        "directory); /dev/shm leaves the file system out")
    args = parser.parse_args()
    repo = Path(args.repository).resolve()
    backup_id = args.backup_id or sorted(p.parent.name for p in repo.glob("backups/*/backup.json"))[-1]
    variants = {"this, plain": (str(ROOT / "plugins"), "0"), "this, Airflow imported": (str(ROOT / "plugins"), "1")}
    if args.baseline:
        variants["baseline, plain"] = (args.baseline, "0")
        variants["baseline, Airflow imported"] = (args.baseline, "1")
    results: dict[str, list[dict]] = {name: [] for name in variants}
    work = Path(tempfile.mkdtemp(prefix="pgops-bench-extract-", dir=args.scratch))
    work.chmod(0o755)  # the restore checks that the postgres OS user can reach its target
    try:
        for _ in range(args.runs):
            for name, (plugins, airflow) in variants.items():
                target = work / "target"
                shutil.rmtree(target, ignore_errors=True)
                proc = subprocess.run([sys.executable, "-c", CHILD, plugins, str(repo), backup_id, str(target), airflow],
                                      capture_output=True, text=True, check=True)
                results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"backup {backup_id} of {repo} into {work.parent}, {args.runs} runs (medians), download_extract only\n")
    print("| variant | median (s) | CPU (s) | creating files (s) | runs (s) |\n|---|---|---|---|---|")
    for name, runs in results.items():
        wall = [r["download_extract"] for r in runs]
        creating = [r["create_files_s"] for r in runs if r["create_files_s"] is not None]
        print(f"| {name} | {statistics.median(wall):.2f} | {statistics.median(r['cpu_s'] for r in runs):.2f} | "
              f"{f'{statistics.median(creating):.2f}' if creating else '-'} | {' '.join(f'{v:.2f}' for v in wall)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
