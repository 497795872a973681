"""fixia 0001: the root of the fixia line; checks that this is the Fixia reference schema."""

from pgops.database.migrations import sql_migration

revision = "fixia_0001"
down_revision = None
branch_labels = ("fixia",)
depends_on = "core_0001"

upgrade, downgrade = sql_migration(revision, "fixia/0001_reference", __file__)
