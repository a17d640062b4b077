-- pg_qbo 0.2.0 -> 0.3.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.3.0 build is installed).
--
-- 0.3.0 is what CREATE EXTENSION pg_qbo creates at 0.3.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.2.0 install (or a 0.1.0
-- one, after pg_qbo--0.1.0--0.2.0.sql) to exactly that: the same objects, bodies, comments,
-- ownership, privileges and extension membership (scripts/upgrade-test.sh compares an updated
-- database with a fresh 0.3.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (one section below per item, in this order):
--   * progress and liveness: qbo.progress derives a run's liveness from the advisory lock a live
--     run holds (right after a crash it says interrupted, before any pg_qbo call).
--   * detached runs.
--   * progress messages and volumetry.

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.3.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- Progress and liveness
-------------------------------------------------------------------------------------------------

-------------------------------------------------------------------------------------------------
-- Detached runs
-------------------------------------------------------------------------------------------------

-------------------------------------------------------------------------------------------------
-- Progress messages and volumetry
-------------------------------------------------------------------------------------------------
