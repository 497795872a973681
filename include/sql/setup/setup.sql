-- The statements `pgops db setup` and `pgops db teardown` are planned from
-- (plugins/pgops/database/setup.py). {placeholders} are identifiers composed with
-- psycopg.sql.Identifier, or keyword lists and function signatures from fixed lists in
-- that module; {comment} is a literal. Nothing here revokes from PUBLIC or changes the
-- owner of an object pgops did not create.

-- step: create_role
CREATE ROLE {role} {attributes}

-- step: alter_role
ALTER ROLE {role} {attributes}

-- step: comment_role
COMMENT ON ROLE {role} IS {comment}

-- step: grant_pg_monitor
GRANT pg_monitor TO {role}

-- step: grant_connect
GRANT CONNECT ON DATABASE {database} TO {role}

-- step: create_schema
CREATE SCHEMA pgops AUTHORIZATION {role}

-- step: grant_function
GRANT EXECUTE ON FUNCTION {function} TO {role}

-- step: grant_schema_usage
GRANT USAGE ON SCHEMA {schema} TO {role}

-- step: grant_select
GRANT SELECT ON TABLE {table} TO {role}

-- step: drop_schema
DROP SCHEMA pgops CASCADE

-- step: drop_owned
DROP OWNED BY {role}

-- step: drop_role
DROP ROLE {role}
