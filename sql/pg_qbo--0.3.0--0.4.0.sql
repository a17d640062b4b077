-- pg_qbo 0.3.0 -> 0.4.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.4.0 build is installed).
--
-- 0.4.0 is what CREATE EXTENSION pg_qbo creates at 0.4.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.3.0 install (or an older
-- one, after the earlier scripts) to exactly that: the same objects, bodies, comments, ownership,
-- privileges and extension membership (scripts/upgrade-test.sh compares an updated database with a
-- fresh 0.4.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (one section below per item, in this order):

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.4.0'" to load this file. \quit
