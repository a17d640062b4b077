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
--   * riding out throttling: qbo._api_admit paces the first 61 s after a restart as if the minute
--     before had been full (new last argument p_started); qbo.throttle_wait_ms is in the library.
--   * many companies at once: the setting qbo.max_workers caps pg_qbo's background workers; the
--     comments of qbo.backfill and qbo.start_backfill say so.

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

-------------------------------------------------------------------------------------------------
-- Riding out throttling
-------------------------------------------------------------------------------------------------
-- qbo._api_admit takes the server's start time (p_started, last, DEFAULT NULL) and paces the first
-- 61 s after it as if the minute before had been full: a crash empties the limiter's unlogged
-- table, not QBO's memory of the last minute. The old signature goes (its 9-argument calls now
-- reach the new one through the default). The rest of this item (qbo.throttle_wait_ms, a run
-- riding out a full window of 429s) is in the library.
DROP FUNCTION IF EXISTS qbo._api_admit(pg_catalog.text, pg_catalog.text[], pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.int8[], pg_catalog.text, pg_catalog.int8, pg_catalog.int8);
CREATE OR REPLACE FUNCTION qbo._api_admit(p_realm text, p_kinds text[], p_per_second int, p_per_minute int,
                               p_max_in_flight int, p_finished bigint[], p_client_id text,
                               p_run_id bigint, p_budget bigint, p_started timestamptz DEFAULT NULL,
                               OUT admitted bigint[], OUT wait_ms int, OUT month_requests bigint,
                               OUT usage_month text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    now_ts    timestamptz;
    win_start timestamptz;
    sec_start timestamptz;
    this_month date;
    in_window int;
    in_second int;
    in_flight int;
    freed     int;
    want      int;
    n         int;
    wait_min  int := 0;
    wait_sec  int := 0;
    wait_pace int := 0;
    since     numeric;
    phantom   int := 0;
BEGIN
    admitted := '{}';
    wait_ms := 0;
    IF cardinality(p_finished) > 0 THEN
        UPDATE qbo._api_requests SET finished_at = clock_timestamp()
         WHERE id = ANY (p_finished) AND finished_at IS NULL;
    END IF;
    want := coalesce(cardinality(p_kinds), 0);
    IF want <= 0 THEN
        RETURN;
    END IF;
    INSERT INTO qbo._api_realms VALUES (p_realm) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM qbo._api_realms WHERE realm_id = p_realm FOR UPDATE;
    IF p_budget > 0 THEN
        -- one app, many realms: their admissions take turns, so the budget is never overshot
        PERFORM pg_advisory_xact_lock(1364414290, hashtext(p_client_id));
    END IF;
    now_ts := clock_timestamp();
    this_month := date_trunc('month', now_ts AT TIME ZONE 'UTC')::date;
    IF p_budget > 0 THEN
        usage_month := to_char(this_month, 'YYYY-MM');
    END IF;
    win_start := now_ts - interval '61 seconds';
    sec_start := now_ts - interval '1.2 seconds';
    IF p_budget > 0 THEN
        SELECT coalesce(sum(u.requests), 0)::bigint INTO month_requests
          FROM qbo._api_usage u
         WHERE u.month = this_month AND u.client_id = p_client_id;
        IF month_requests >= p_budget THEN
            -- refused: the caller raises the error
            RETURN;
        END IF;
    END IF;
    DELETE FROM qbo._api_requests
     WHERE realm_id = p_realm AND started_at < win_start AND finished_at IS NOT NULL;
    SELECT count(*) FILTER (WHERE started_at >= win_start), count(*) FILTER (WHERE started_at >= sec_start),
           count(*) FILTER (WHERE finished_at IS NULL)
      INTO in_window, in_second, in_flight
      FROM qbo._api_requests WHERE realm_id = p_realm;
    IF in_flight >= p_max_in_flight THEN
        UPDATE qbo._api_requests r SET finished_at = now_ts
         WHERE r.realm_id = p_realm AND r.finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                            WHERE a.pid = r.pid
                              AND (a.backend_start IS NULL OR r.backend_start IS NULL
                                   OR a.backend_start = r.backend_start));
        GET DIAGNOSTICS freed = ROW_COUNT;
        in_flight := in_flight - freed;
    END IF;
    -- the first 61 s after a restart: the part of the minute before it still in the window,
    -- taken as full (p_per_minute requests spread evenly over it)
    IF p_started IS NOT NULL AND now_ts < p_started + interval '61 seconds' THEN
        since := greatest(extract(epoch FROM (now_ts - p_started)), 0);
        phantom := ceil(p_per_minute * (61 - since) / 61)::int;
    END IF;
    n := least(want, p_per_minute - in_window - phantom, p_per_second - in_second, p_max_in_flight - in_flight);
    IF p_budget > 0 THEN
        n := least(n, p_budget - month_requests);
    END IF;
    IF n > 0 THEN
        WITH ins AS (
            INSERT INTO qbo._api_requests (realm_id, pid, backend_start, started_at)
            SELECT p_realm, pg_backend_pid(),
                   (SELECT a.backend_start FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()), now_ts
              FROM generate_series(1, n)
            RETURNING id)
        SELECT array_agg(id ORDER BY id) INTO admitted FROM ins;
        INSERT INTO qbo._api_usage AS u (month, client_id, realm_id, kind, requests)
        SELECT this_month, p_client_id, p_realm, k.kind, count(*)
          FROM unnest(p_kinds[1:n]) AS k(kind)
         GROUP BY k.kind
        ON CONFLICT (month, client_id, realm_id, kind) DO UPDATE SET requests = u.requests + excluded.requests;
        IF p_run_id IS NOT NULL THEN
            UPDATE qbo.runs r
               SET requests_query = r.requests_query + k.q, requests_count = r.requests_count + k.c
              FROM (SELECT count(*) FILTER (WHERE x.kind = 'query') AS q,
                           count(*) FILTER (WHERE x.kind = 'count') AS c
                      FROM unnest(p_kinds[1:n]) AS x(kind)) k
             WHERE r.run_id = p_run_id;
        END IF;
        IF p_budget > 0 THEN
            month_requests := month_requests + n;
        END IF;
        RETURN;
    END IF;
    -- nothing admitted: wait for the first window that makes room (each frees its oldest
    -- admissions one by one), or look again shortly when every slot is in flight
    IF in_window >= p_per_minute THEN
        SELECT greatest(1, ceil(extract(epoch FROM (q.started_at + interval '61 seconds' - now_ts)) * 1000))::int
          INTO wait_min
          FROM qbo._api_requests q
         WHERE q.realm_id = p_realm AND q.started_at >= win_start
         ORDER BY q.started_at
        OFFSET greatest(in_window - p_per_minute, 0) LIMIT 1;
    END IF;
    IF in_second >= p_per_second THEN
        SELECT greatest(1, ceil(extract(epoch FROM (q.started_at + interval '1.2 seconds' - now_ts)) * 1000))::int
          INTO wait_sec
          FROM qbo._api_requests q
         WHERE q.realm_id = p_realm AND q.started_at >= sec_start
         ORDER BY q.started_at
        OFFSET greatest(in_second - p_per_second, 0) LIMIT 1;
    END IF;
    IF phantom > 0 AND in_window + phantom >= p_per_minute THEN
        -- the paced minute makes room for one more when its part still in the window is at most
        -- p_per_minute - in_window - 1, at since = 61 * (1 - (p_per_minute - in_window - 1) / p_per_minute)
        wait_pace := greatest(1, ceil((61 * (1 - greatest(p_per_minute - in_window - 1, 0)::numeric / p_per_minute)
                                       - since) * 1000))::int;
    END IF;
    wait_ms := greatest(coalesce(wait_min, 0), coalesce(wait_sec, 0), wait_pace);
    IF wait_ms = 0 THEN
        wait_ms := 20;
    END IF;
END
$fn$;
COMMENT ON FUNCTION qbo._api_admit(text, text[], int, int, int, bigint[], text, bigint, bigint, timestamptz) IS
    'pg_qbo internal: the shared per-realm rate limiter (sliding second and minute, requests in flight; the first 61 s after the server started paced as if the minute before had been full) and the monthly count of requests (qbo.api_usage, the run''s requests_* columns); see qbo.max_requests_per_second, qbo.max_requests_per_minute, qbo.max_in_flight and qbo.monthly_request_budget.';
REVOKE ALL ON FUNCTION qbo._api_admit(pg_catalog.text, pg_catalog.text[], pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.int8[], pg_catalog.text, pg_catalog.int8, pg_catalog.int8, pg_catalog.timestamptz) FROM PUBLIC;


-------------------------------------------------------------------------------------------------
-- Many companies at once
-------------------------------------------------------------------------------------------------
-- qbo.max_workers is a setting (nothing to create); the comments of the two starting functions
-- name it.
COMMENT ON FUNCTION qbo.backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: backfills one QBO entity over [fecha_inicio, fecha_fin) in chunk_size-day chunks (page_size 1..1000 rows per request) into raw.qb_<entity>, committing page by page in a background worker; relays progress as NOTICEs (each chunk as it completes, the run''s totals every qbo.progress_interval_ms, retries after a backoff) and returns one row of volumetry per chunk (duration: time spent on the chunk, rounded to milliseconds). Cancel stops the run (status cancelled, completed pages kept; continue with qbo.resume). Needs a free pg_qbo worker slot (qbo.max_workers) and background worker slot (max_worker_processes), else fails at once (53400); CALL qbo.run_backfill needs neither.';
COMMENT ON FUNCTION qbo.start_backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: starts a backfill (the arguments of qbo.backfill) in a background worker tied to no session and returns its run id as soon as the run is committed: closing the session, or losing the connection, does not stop it. No NOTICEs: follow it in qbo.progress, qbo.runs and qbo.run_chunks; stop it with qbo.cancel(run_id). It keeps the qbo.* settings of this session (stored in qbo.runs.settings), never its statement_timeout. Needs a free pg_qbo worker slot (qbo.max_workers) and background worker slot (max_worker_processes), else fails at once (53400); CALL qbo.run_backfill needs neither.';
