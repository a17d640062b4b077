-- pg_qbo 0.4.0 -> 0.5.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.5.0 build is installed).
--
-- 0.5.0 is what CREATE EXTENSION pg_qbo creates at 0.5.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.4.0 install (or an older
-- one, after the earlier scripts) to exactly that (scripts/upgrade-test.sh compares an updated
-- database with a fresh 0.5.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (one section below per item, in this order):
--   * offsets in Id order: a window read by offsets orders its pages by Id (no ties, so a bulk
--     second is no special case), proves each page by the Ids it shares with the one before, and
--     saves where it goes on in the chunk's cursor. Library only: no SQL object changes.

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.5.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- Offsets in Id order
-------------------------------------------------------------------------------------------------
-- Nothing to change: qbo.run_chunks.cursor (jsonb) gains an "offsets" member in the slices that
-- a window reads by offsets; a cursor saved by 0.4.0 (a time cursor's state) resumes as before.
