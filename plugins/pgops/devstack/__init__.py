"""The local stack: a Fixia database seeded with synthetic data, a local repository and
Airflow standalone, brought up by ``make up``. Test fixtures reuse :mod:`.seed`."""
