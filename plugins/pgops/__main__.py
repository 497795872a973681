"""``python -m pgops``: the same as the ``pgops`` command (used in restore_command)."""

# Guarded: Airflow's plugin manager imports every module under plugins/.
if __name__ == "__main__":
    from pgops.cli import main

    raise SystemExit(main())
