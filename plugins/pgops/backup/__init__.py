"""Full backups, WAL shipping, the catalog and retention."""
