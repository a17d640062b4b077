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
-- The same view as sql/schema.sql; its two new columns come last, so CREATE OR REPLACE keeps the
-- view's grants (operators and readers were granted SELECT on it).
CREATE OR REPLACE VIEW qbo.progress AS
SELECT r.run_id, r.entity, r.connection, r.realm_id,
       CASE WHEN r.status = 'running' AND NOT live.held THEN 'interrupted' ELSE r.status END AS status,
       coalesce(cur.chunk, CASE WHEN t.done = r.chunks_total THEN r.chunks_total ELSE t.done + 1 END) AS chunk,
       r.chunks_total,
       t.done AS chunks_done,
       t.pages, t.rows, t.inserted, t.updated, t.skipped,
       (t.rows / nullif(extract(epoch FROM coalesce(r.finished_at,
                                                    CASE WHEN live.held THEN now() ELSE r.updated_at END)
                                           - r.started_at), 0))::numeric(12, 1) AS rows_per_second,
       CASE WHEN live.held AND t.done > 0
            THEN (now() - r.started_at) / t.done * (r.chunks_total - t.done) END AS eta,
       CASE WHEN r.status <> 'running' THEN r.status
            WHEN NOT live.held THEN 'interrupted'
            WHEN r.progress LIKE '%backing off%' AND r.progress LIKE '%HTTP 429%' THEN 'waiting for throttle'
            WHEN r.progress LIKE '%backing off%' THEN 'backing off'
            WHEN r.progress LIKE '%token%' THEN 'refreshing token'
            ELSE 'fetching and upserting' END AS state,
       r.progress AS detail,
       r.started_at, r.updated_at, r.finished_at,
       CASE WHEN r.status = 'running' AND NOT live.held
            THEN pg_catalog.format('run %s was interrupted: its process (pid %s) is gone; resume it with SELECT * FROM qbo.resume(%s) or CALL qbo.run_resume(%s)',
                                   r.run_id, r.pid, r.run_id, r.run_id)
            ELSE r.error END AS error,
       t.running AS chunks_running,
       live.held AS live
FROM qbo.runs r
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE c.status = 'succeeded')::int AS done,
           count(*) FILTER (WHERE c.status = 'running')::int AS running,
           coalesce(sum(c.pages), 0)::bigint AS pages, coalesce(sum(c.rows), 0)::bigint AS rows,
           coalesce(sum(c.inserted), 0)::bigint AS inserted, coalesce(sum(c.updated), 0)::bigint AS updated,
           coalesce(sum(c.skipped), 0)::bigint AS skipped
      FROM qbo.run_chunks c WHERE c.run_id = r.run_id) t
CROSS JOIN LATERAL (
    SELECT r.status = 'running' AND EXISTS (
               SELECT 1 FROM pg_catalog.pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted
                  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname = pg_catalog.current_database())
                  AND l.classid = 1364414287::oid AND l.objid = (r.run_id & 2147483647)::oid
                  AND l.objsubid = 2) AS held) live
LEFT JOIN LATERAL (
    SELECT min(c.chunk) AS chunk FROM qbo.run_chunks c WHERE c.run_id = r.run_id AND c.status = 'running') cur ON true;
COMMENT ON VIEW qbo.progress IS 'pg_qbo: live progress of every run (chunks done, running and total, pages and rows so far, rows/s, ETA, state), from what runs commit page by page; whether a run is alive comes from the lock its process holds, so it is right even just after a crash.';
COMMENT ON COLUMN qbo.progress.run_id IS 'Run id.';
COMMENT ON COLUMN qbo.progress.entity IS 'QBO entity.';
COMMENT ON COLUMN qbo.progress.connection IS 'Connection name.';
COMMENT ON COLUMN qbo.progress.realm_id IS 'QuickBooks company id.';
COMMENT ON COLUMN qbo.progress.status IS 'Run status as qbo.runs has it, except that a run qbo.runs still calls running whose process is gone (crash, restart, terminated) is interrupted here at once.';
COMMENT ON COLUMN qbo.progress.chunk IS 'Lowest-numbered chunk being worked on (chunks run concurrently: see chunks_running), or the next or last one.';
COMMENT ON COLUMN qbo.progress.chunks_total IS 'Chunks in the plan.';
COMMENT ON COLUMN qbo.progress.chunks_done IS 'Chunks completed.';
COMMENT ON COLUMN qbo.progress.pages IS 'Pages committed so far.';
COMMENT ON COLUMN qbo.progress.rows IS 'Records accepted so far.';
COMMENT ON COLUMN qbo.progress.inserted IS 'Of which inserted.';
COMMENT ON COLUMN qbo.progress.updated IS 'Of which updated.';
COMMENT ON COLUMN qbo.progress.skipped IS 'Of which unchanged or stale.';
COMMENT ON COLUMN qbo.progress.rows_per_second IS 'Records per second from the run''s start to now (to its end, or its last commit if its process is gone).';
COMMENT ON COLUMN qbo.progress.eta IS 'Estimated time left (from the chunks done so far); NULL unless the run is alive.';
COMMENT ON COLUMN qbo.progress.state IS 'fetching and upserting, waiting for throttle, backing off, refreshing token, or the final status (interrupted for a run whose process is gone).';
COMMENT ON COLUMN qbo.progress.detail IS 'The last progress note the run committed.';
COMMENT ON COLUMN qbo.progress.started_at IS 'When the run was created.';
COMMENT ON COLUMN qbo.progress.updated_at IS 'Last progress committed.';
COMMENT ON COLUMN qbo.progress.finished_at IS 'When the run stopped.';
COMMENT ON COLUMN qbo.progress.error IS 'Error of a stopped run (for an interrupted one not yet marked in qbo.runs: what happened and how to resume).';
COMMENT ON COLUMN qbo.progress.chunks_running IS 'Chunks being fetched right now (several at once when the window is split).';
COMMENT ON COLUMN qbo.progress.live IS 'Whether a process holds the run''s lock (true only while it is really executing).';

-------------------------------------------------------------------------------------------------
-- Detached runs
-------------------------------------------------------------------------------------------------

-------------------------------------------------------------------------------------------------
-- Progress messages and volumetry
-------------------------------------------------------------------------------------------------
