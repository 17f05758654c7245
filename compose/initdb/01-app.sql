-- The app role and database (migrator.lab.sandbox.create_app_database), on source and target.
-- Generated from migrator's code by tests/test_compose.py; do not edit.
-- Sandbox-only password, the same as in compose/pgbouncer/userlist.txt.
CREATE ROLE "app" LOGIN PASSWORD 'app-compose-only';
CREATE DATABASE "app";
\connect app
GRANT USAGE ON SCHEMA public TO "app";
