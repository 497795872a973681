"""${message}"""

from pgops.database.migrations import sql_migration

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

upgrade, downgrade = sql_migration(revision, "LINE/NNNN_name", __file__)
