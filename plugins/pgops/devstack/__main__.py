"""``python -m pgops.devstack up|down|destroy``."""

# Guarded: Airflow's plugin manager imports every module under plugins/.
if __name__ == "__main__":
    from pgops.devstack.stack import main

    raise SystemExit(main())
