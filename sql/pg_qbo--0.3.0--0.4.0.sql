-- pg_qbo 0.3.0 -> 0.4.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.4.0 build is installed).
--
-- 0.4.0 is what CREATE EXTENSION pg_qbo creates at 0.4.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.3.0 install (or an older
-- one, after the earlier scripts) to exactly that: the same objects, bodies, comments, ownership,
-- privileges and extension membership (scripts/upgrade-test.sh compares an updated database with a
-- fresh 0.4.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (one section below per item, in this order):
-- - Many companies at once (issue 15 item 5): the setting qbo.max_workers caps pg_qbo's background
--   workers; the comments of qbo.backfill and qbo.start_backfill say so.

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.4.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Many companies at once (issue 15 item 5): qbo.max_workers (a setting: nothing to create); the
-- comments of the two starting functions name it.
COMMENT ON FUNCTION qbo.backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: backfills one QBO entity over [fecha_inicio, fecha_fin) in chunk_size-day chunks (page_size 1..1000 rows per request) into raw.qb_<entity>, committing page by page in a background worker; relays progress as NOTICEs (each chunk as it completes, the run''s totals every qbo.progress_interval_ms, retries after a backoff) and returns one row of volumetry per chunk (duration: time spent on the chunk, rounded to milliseconds). Cancel stops the run (status cancelled, completed pages kept; continue with qbo.resume). Needs a free pg_qbo worker slot (qbo.max_workers) and background worker slot (max_worker_processes), else fails at once (53400); CALL qbo.run_backfill needs neither.';
COMMENT ON FUNCTION qbo.start_backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: starts a backfill (the arguments of qbo.backfill) in a background worker tied to no session and returns its run id as soon as the run is committed: closing the session, or losing the connection, does not stop it. No NOTICEs: follow it in qbo.progress, qbo.runs and qbo.run_chunks; stop it with qbo.cancel(run_id). It keeps the qbo.* settings of this session (stored in qbo.runs.settings), never its statement_timeout. Needs a free pg_qbo worker slot (qbo.max_workers) and background worker slot (max_worker_processes), else fails at once (53400); CALL qbo.run_backfill needs neither.';
