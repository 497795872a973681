"""core 0001: the sentinel table, the migration checksums, and what each role may read in schema pgops."""

from pgops.database.migrations import sql_migration

revision = "core_0001"
down_revision = None
branch_labels = ("core",)
depends_on = None

upgrade, downgrade = sql_migration(revision, "core/0001_schema", __file__)
