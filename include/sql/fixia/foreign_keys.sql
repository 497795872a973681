-- Single-column foreign keys of schema fixia: (constraint, child table, child column,
-- parent table, parent column), for the set-based reference check after a bulk load.
SELECT con.conname,
       child.relname  AS child_table,
       ca.attname     AS child_column,
       parent.relname AS parent_table,
       pa.attname     AS parent_column
FROM pg_catalog.pg_constraint con
JOIN pg_catalog.pg_class child ON child.oid = con.conrelid
JOIN pg_catalog.pg_class parent ON parent.oid = con.confrelid
JOIN pg_catalog.pg_namespace n ON n.oid = child.relnamespace
JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = con.conkey[1]
JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = con.confkey[1]
WHERE con.contype = 'f' AND n.nspname = 'fixia' AND cardinality(con.conkey) = 1
ORDER BY 2, 1
