"""Time how long each DAG file takes to import, as the DAG processor sees it.

Each measurement runs in a fresh interpreter that has already imported ``airflow.sdk``
(the DAG processor has it loaded), then times executing one DAG file. Reports the
median of ``--runs`` runs per file and flags files over the 0.3 s target (Airflow's
parse timeout is 30 s; staying two orders of magnitude below it keeps parsing cheap).

    .venv/bin/python bench/dag_import_times.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3

PROBE = r"""
import json, sys, time, importlib.util
sys.path.insert(0, sys.argv[2])
import airflow.sdk  # already loaded in the DAG processor
from airflow.sdk import dag, task  # resolve the lazy attributes outside the timing
path = sys.argv[1]
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dagfile", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(time.perf_counter() - start))
"""


def measure(path: Path, runs: int) -> list[float]:
    env = {**os.environ, "PGOPS_HOME": str(ROOT), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, str(path), str(ROOT / "plugins")],
            capture_output=True, text=True, env=env, check=True,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    worst = 0.0
    print("| DAG file | median import (s) | min | max | runs |")
    print("|---|---|---|---|---|")
    for path in sorted((ROOT / "dags").glob("*.py")):
        times = measure(path, args.runs)
        med = statistics.median(times)
        worst = max(worst, med)
        flag = "" if med <= TARGET_S else "  OVER TARGET"
        print(f"| {path.name} | {med:.3f} | {min(times):.3f} | {max(times):.3f} | {args.runs} |{flag}")
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
