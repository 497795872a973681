"""pgops' own objects in the database: set-up of its roles and schema, its migrations."""
