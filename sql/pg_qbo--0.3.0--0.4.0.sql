-- pg_qbo 0.3.0 -> 0.4.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.4.0 build is installed).
--
-- 0.4.0 is what CREATE EXTENSION pg_qbo creates at 0.4.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.3.0 install (or an older
-- one, after the earlier scripts) to exactly that: the same objects, bodies, comments, ownership,
-- privileges and extension membership (scripts/upgrade-test.sh compares an updated database with a
-- fresh 0.4.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (one section below per item, in this order):
--   * fewer requests: consecutive chunks are read as one window and a window by offsets; the
--     comments of qbo.run_chunks.pages and .cursor and of qbo.run_pages say what that changes.

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.4.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- Fewer requests
-------------------------------------------------------------------------------------------------
-- No table changes: a page may now carry records of several chunks (one qbo.run_pages row in
-- each), and a window's cursor is saved on its last chunk. A 0.3.0 cursor (a chunk's own) still
-- resumes, as a window of that one chunk.
COMMENT ON COLUMN qbo.run_chunks.pages IS 'Query responses that carried records of the chunk (a page spanning chunks counts in each), or empty ones answered while it was the first unfinished chunk; qbo.runs.requests_query counts the requests.';
COMMENT ON COLUMN qbo.run_chunks.cursor IS 'Paging cursor after the last committed page, saved on the last chunk of the window read (consecutive chunks are read as one window; a resume continues from it).';
COMMENT ON TABLE qbo.run_pages IS 'pg_qbo: one row per committed page and chunk it carried records of: the log of a run''s pages (rows, timing, intuit_tid), committed with each page.';
COMMENT ON COLUMN qbo.run_pages.rows IS 'Distinct new records accepted from the page whose LastUpdatedTime falls in the chunk.';
COMMENT ON COLUMN qbo.run_pages.refetched IS 'Records already taken (at the cursor second, or in the overlap with the page before), dropped before counting.';
