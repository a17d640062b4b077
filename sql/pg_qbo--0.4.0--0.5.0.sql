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
--     saves where it goes on in the chunk's cursor. Its chunks finish together at its end, so
--     qbo.run_chunks gains records_expected (the window's count) and qbo.progress estimates the
--     time left from the records read against it.

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.5.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- Offsets in Id order
-------------------------------------------------------------------------------------------------
-- qbo.run_chunks.cursor (jsonb) gains an "offsets" member in the slices that a window reads by
-- offsets; a cursor saved by 0.4.0 (a time cursor's state) resumes as before. The new column comes
-- last, as in a fresh install; the view keeps its columns (CREATE OR REPLACE keeps its grants).
ALTER TABLE qbo.run_chunks ADD COLUMN IF NOT EXISTS records_expected bigint;
COMMENT ON COLUMN qbo.run_chunks.records_expected IS 'Records QuickBooks counted (count(*)) in the window whose cursor is saved on this chunk, when that window is read by offsets (its chunks finish together at its end): qbo.progress estimates the time left from it.';

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
       CASE WHEN live.held AND t.expected > 0 AND t.rows > 0
            THEN (now() - r.started_at) / t.rows * greatest(t.expected + t.rows_done - t.rows, 0)
            WHEN live.held AND t.done > 0
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
           coalesce(sum(c.skipped), 0)::bigint AS skipped,
           coalesce(sum(c.records_expected) FILTER (WHERE c.status <> 'succeeded'), 0)::bigint AS expected,
           coalesce(sum(c.rows) FILTER (WHERE c.status = 'succeeded'), 0)::bigint AS rows_done
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

COMMENT ON COLUMN qbo.progress.eta IS 'Estimated time left: from the records read so far against those QuickBooks counted while a window read by offsets is open, else from the chunks done so far; NULL unless the run is alive.';
