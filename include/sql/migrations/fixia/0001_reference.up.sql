-- fixia 0001: the root of the fixia line. It only checks that this database holds the
-- Fixia reference schema, so that the line's later migrations (materialized views,
-- search) fail here, naming what is missing, on a database that is not Fixia's.
-- locks: none (reads the catalog only).

-- step: check
DO $$
DECLARE
    missing text;
BEGIN
    -- By name in the catalog: to_regclass would need USAGE on schema fixia, which the
    -- owner role has no reason to hold.
    SELECT pg_catalog.string_agg('fixia.' || t, ', ') INTO missing
    FROM pg_catalog.unnest(ARRAY['users', 'professional_profiles', 'services', 'projects', 'jobs', 'reviews',
                                 'payments']) AS t
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'fixia' AND c.relname = t);
    IF missing IS NOT NULL THEN
        -- (no format placeholder: the offline --sql output would double it)
        RAISE EXCEPTION USING MESSAGE = 'the fixia migration line needs the Fixia reference schema; missing: '
                                        || missing,
                              HINT = 'on a database that is not Fixia''s, set setup.lines to [core]';
    END IF;
END
$$
