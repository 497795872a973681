"""Restores: plan (pure), fetch and extract, wal-fetch, the run that ties them."""
