"""A restore's download-and-extract phase alone, in processes with and without Airflow
imported (and, with --baseline, another checkout's pgops beside this one's).

``run_restore(start=False, verify_backup=False)`` of one backup of an existing local
repository into a scratch directory, ``--runs`` times per variant, interleaved, each in a
fresh process. It isolates what the whole-restore benchmark (``restore.py``, whose
processes import Airflow first, as a worker does) cannot: what a process's own state
costs the extraction, and what a code change costs it.

    .venv/bin/python bench/restore_extract.py --repository var/repository --runs 5
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
import json, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[5] == "1":
    import airflow.sdk  # noqa: F401 - as in a worker
from pathlib import Path
from pgops.config import parse_config
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore
config = parse_config({"repository": {"url": sys.argv[2]}})
t = time.perf_counter()
result = run_restore(config, LocalRepository(Path(sys.argv[2])), RestoreRequest(backup_id=sys.argv[3]),
                     Path(sys.argv[4]), start=False, verify_backup=False)
print(json.dumps({"seconds": time.perf_counter() - t, "download_extract": result.timings_s["download_extract"]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="a local pgops repository (read only)")
    parser.add_argument("--backup-id", help="default: the newest complete backup")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="PLUGINS", help="another checkout's plugins/ directory to compare")
    args = parser.parse_args()
    repo = Path(args.repository).resolve()
    backup_id = args.backup_id or sorted(p.parent.name for p in repo.glob("backups/*/backup.json"))[-1]
    variants = {"this, plain": (str(ROOT / "plugins"), "0"), "this, Airflow imported": (str(ROOT / "plugins"), "1")}
    if args.baseline:
        variants["baseline, plain"] = (args.baseline, "0")
        variants["baseline, Airflow imported"] = (args.baseline, "1")
    results: dict[str, list[float]] = {name: [] for name in variants}
    work = Path(tempfile.mkdtemp(prefix="pgops-bench-extract-"))
    work.chmod(0o755)  # the restore checks that the postgres OS user can reach its target
    try:
        for _ in range(args.runs):
            for name, (plugins, airflow) in variants.items():
                target = work / "target"
                shutil.rmtree(target, ignore_errors=True)
                proc = subprocess.run([sys.executable, "-c", CHILD, plugins, str(repo), backup_id, str(target), airflow],
                                      capture_output=True, text=True, check=True)
                results[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["download_extract"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"backup {backup_id} of {repo}, {args.runs} runs (medians), download_extract only\n")
    print("| variant | median (s) | runs (s) |\n|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {' '.join(f'{v:.2f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
