"""Shared test set-up: an isolated Airflow home, before anything imports Airflow.

Tests never touch the developer's ``var/`` stack: Airflow gets a temporary home with a
fresh SQLite database, and integration fixtures start their own PostgreSQL and S3.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_airflow_home = tempfile.mkdtemp(prefix="pgops-test-airflow-")
os.environ["AIRFLOW_HOME"] = _airflow_home
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["PGOPS_HOME"] = str(ROOT)
os.environ.pop("PGOPS_CONFIG", None)
os.environ.pop("PGOPS_USE_DEFAULTS", None)
for key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
    del os.environ[key]
