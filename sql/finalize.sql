-- triggers: runs last in CREATE EXTENSION, once every SQL and Rust function exists.

-- Grants: the API is for roles the database owner chooses; nothing for PUBLIC.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA triggers FROM PUBLIC;
