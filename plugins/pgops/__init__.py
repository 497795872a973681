"""pgops: operations for the Fixia PostgreSQL database, driven by Airflow 3.

All logic lives in this package; the DAG files under ``dags/`` only declare. Heavy
dependencies (psycopg, boto3, Airflow itself) are imported inside the functions that
need them, so importing ``pgops`` stays cheap at DAG parse time.
"""

__version__ = "0.1.0"
