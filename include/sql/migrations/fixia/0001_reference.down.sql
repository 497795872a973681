-- fixia 0001, undone: nothing to undo (the migration only checks).
-- locks: none.

-- step: nothing
SELECT 1
