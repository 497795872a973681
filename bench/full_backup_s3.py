"""Full backup to an S3-compatible server: pgops vs an upload floor vs barman-cloud-backup.

moto's S3 server (its own process) on a free loopback port; a PostgreSQL 15 cluster loaded by
``pgbench -i -s SCALE``. In one run, interleaved, ``--runs`` times each (first round
not counted):

* floor:  pg_basebackup -D - -Ft -Xfetch -c fast --compress=client-zstd:level=3,workers=2
          | python uploader (boto3 upload_fileobj from stdin, 64 MiB parts, 4 threads)
* pgops:  ``run_full_backup`` into s3://bucket/pgops (framed zstd level 3, 2 workers),
          Airflow already imported as in a worker
* barman-cloud-backup 3.4 (Debian barman-cli-cloud), ``-J 2``, uncompressed (its default)

Target: pgops <= 1.15 x the floor. Needs root; installs barman-cli-cloud if missing.

    .venv/bin/python bench/full_backup_s3.py --scale 100 --runs 3

``--skip-barman`` times only the floor and pgops (at scale 400, barman-cloud-backup
failed against moto on 2026-11-25; its error was not captured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdb import CHILD_PRELUDE, ROOT, floor_argv, median_table, pgbench_cluster

from pgops.postgres.cluster import as_server_user, free_port

UPLOADER = r"""
import sys, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
s3.upload_fileobj(sys.stdin.buffer, sys.argv[2], sys.argv[3],
                  Config=TransferConfig(multipart_chunksize=64 * 2**20, max_concurrency=4))
"""

CHILD = CHILD_PRELUDE + r"""
from pgops.repository import open_repository
config = parse_config({"repository": {"url": sys.argv[2]}})
repo = open_repository(config.repository)
t = time.perf_counter()
record = run_full_backup(config, repo)
print(json.dumps({"seconds": time.perf_counter() - t, "maxrss_kib": hwm_kib(),
                  "stored": record.stored_size}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-barman", action="store_true", help="time only the floor and pgops")
    args = parser.parse_args()
    if not shutil.which("barman-cloud-backup"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "barman-cli-cloud"], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    # moto in its own process: what it stores must not count against anyone measured here.
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(creds)
    os.environ["AIRFLOW_CONN_PGOPS_S3"] = json.dumps({"conn_type": "aws", "login": "bench", "password": "bench",
                                                      "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}})
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    work = Path(tempfile.mkdtemp(prefix="pgops-s3bench-"))
    try:
        with pgbench_cluster(work, args.scale) as (cluster, password, size):
            results: dict[str, list[float]] = {"floor": [], "pgops": []}
            if not args.skip_barman:
                results["barman-cloud-backup"] = []
            rss = []
            env = {**os.environ, "PGPASSWORD": password}
            for i in range(args.runs + 1):
                t = time.perf_counter()
                bb = subprocess.Popen(floor_argv(cluster), stdout=subprocess.PIPE, env=env)
                up = subprocess.run([sys.executable, "-c", UPLOADER, endpoint, "bench", f"floor/{i}.tar.zst"],
                                    stdin=bb.stdout, env=env, check=True)
                bb.stdout.close()
                assert bb.wait() == 0 and up.returncode == 0
                floor_s = time.perf_counter() - t

                proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "plugins"), f"s3://bench/pgops{i}"],
                                      capture_output=True, text=True, check=True,
                                      env={**os.environ, "PGOPS_HOME": str(ROOT)})
                child = json.loads(proc.stdout.strip().splitlines()[-1])

                t = time.perf_counter()
                if not args.skip_barman:
                    subprocess.run(as_server_user(["env", *[f"{k}={v}" for k, v in creds.items()],
                                                   "barman-cloud-backup", "-J", "2", "--cloud-provider", "aws-s3",
                                                   "--endpoint-url", endpoint, "-h", str(cluster.socket_dir),
                                                   "-p", str(cluster.port), "-U", "postgres",
                                                   f"s3://bench/barman{i}", "bench"]),
                                   check=True, capture_output=True)
                barman_s = time.perf_counter() - t
                if i == 0:
                    continue
                results["floor"].append(floor_s)
                results["pgops"].append(child["seconds"])
                if not args.skip_barman:
                    results["barman-cloud-backup"].append(barman_s)
                rss.append(child["maxrss_kib"])
                print(f"# run {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()),
                      file=sys.stderr, flush=True)
            print(f"\npgbench scale {args.scale}, databases {size}, moto S3 on loopback, "
                  f"{args.runs} runs (medians)\n")
            med = median_table(results)
            print(f"\npgops / floor = {med['pgops'] / med['floor']:.2f} (target <= 1.15)")
            if not args.skip_barman:
                print(f"pgops / barman-cloud-backup = {med['pgops'] / med['barman-cloud-backup']:.2f}")
            print(f"pgops peak RSS: max {max(rss) / 1024:.0f} MiB")
        return 0
    finally:
        moto.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
