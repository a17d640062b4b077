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
--   * detached runs: qbo.start_backfill / qbo.start_resume (a run in a background worker tied to
--     no session) and qbo.cancel (stops a run by its id), granted to operators; qbo.runs.entry_point
--     may be 'detached'.
--   * progress messages and volumetry: qbo.backfill / qbo.resume / qbo.run_resume say in their
--     comments that durations are in milliseconds and add up every attempt and that a run that
--     already succeeded is not resumed; qbo._grant_common creates schema raw only when missing
--     (no "already exists, skipping" NOTICE); qbo.run_pages is no longer relayed page by page.
--   * request limits and the monthly budget: qbo.max_requests_per_second in the limiter
--     (qbo._api_admit), requests counted per month, app, realm and kind (qbo._api_usage, view
--     qbo.api_usage, granted to operators and readers) and per run (qbo.runs.requests_*), and
--     qbo.monthly_request_budget.

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
ALTER TABLE qbo.runs DROP CONSTRAINT IF EXISTS entry_point_ok;
ALTER TABLE qbo.runs ADD CONSTRAINT entry_point_ok CHECK (entry_point IN ('call', 'function', 'cron', 'detached'));
COMMENT ON COLUMN qbo.runs.entry_point IS 'How the run was started: call (CALL qbo.run_backfill), function (SELECT qbo.backfill, in a background worker of that session), cron (qbo.schedule_backfill) or detached (qbo.start_backfill, in a background worker tied to no session).';
COMMENT ON COLUMN qbo.runs.run_id IS 'Run id: pass it to qbo.resume / qbo.run_resume / qbo.start_resume, or to qbo.cancel.';

INSERT INTO qbo._routine_grants (routine, grantee) VALUES
    ('start_backfill', 'operator'),
    ('start_resume', 'operator'),
    ('cancel', 'operator')
ON CONFLICT (routine) DO UPDATE SET grantee = EXCLUDED.grantee;

-- as `cargo pgrx schema` prints them (src/sql_api/detached.rs)
CREATE OR REPLACE FUNCTION qbo."start_backfill"(
	"entity" TEXT, /* Option < & str > */
	"fecha_inicio" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"fecha_fin" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"chunk_size" INT DEFAULT 7, /* Option < i32 > */
	"page_size" INT DEFAULT 1000, /* Option < i32 > */
	"minor_version" INT DEFAULT 75, /* Option < i32 > */
	"connection" TEXT DEFAULT 'default' /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_backfill_wrapper';

CREATE OR REPLACE FUNCTION qbo."start_resume"(
	"run_id" bigint /* Option < i64 > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_resume_wrapper';

CREATE OR REPLACE FUNCTION qbo."cancel"(
	"run_id" bigint /* Option < i64 > */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cancel_wrapper';

COMMENT ON FUNCTION qbo.start_backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: starts a backfill (the arguments of qbo.backfill) in a background worker tied to no session and returns its run id as soon as the run is committed: closing the session, or losing the connection, does not stop it. No NOTICEs: follow it in qbo.progress, qbo.runs and qbo.run_chunks; stop it with qbo.cancel(run_id). It keeps the qbo.* settings of this session (stored in qbo.runs.settings), never its statement_timeout. Needs a free background worker slot; otherwise use CALL qbo.run_backfill.';
COMMENT ON FUNCTION qbo.start_resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run (as qbo.resume: only what did not complete, with the stored plan and settings) in a background worker tied to no session; returns the run id as soon as the run is reopened. Stop it with qbo.cancel(run_id).';
COMMENT ON FUNCTION qbo.cancel(bigint) IS
    'pg_qbo: cancels a running run, whatever started it: a query cancel to the process executing it (the holder of its lock in pg_locks), which rolls back the page in flight and marks the run cancelled (completed pages stay; continue it with qbo.start_resume or qbo.resume). Waits until that process has let go of the run (at most 30 s) and returns the run''s status. Only the role that started the run (qbo.runs.run_by) or a superuser may. For a run that is not running: a NOTICE, and its status.';

-- PUBLIC may not run them (as the end of the 0.3.0 extension script makes it for every routine
-- qbo._routine_grants does not list as 'public')
REVOKE ALL ON FUNCTION qbo.start_backfill(pg_catalog.text, pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.text) FROM PUBLIC;
REVOKE ALL ON FUNCTION qbo.start_resume(pg_catalog.int8) FROM PUBLIC;
REVOKE ALL ON FUNCTION qbo.cancel(pg_catalog.int8) FROM PUBLIC;

COMMENT ON FUNCTION qbo.grant_operator(name) IS
    'pg_qbo: lets a role run backfills of the connections granted to it with qbo.grant_connection (qbo.backfill, qbo.resume, qbo.start_backfill, qbo.start_resume, qbo.schedule_backfill, CALL qbo.run_*), cancel the runs it started (qbo.cancel), and read raw.* and the ledger; raw.* is written by those backfills only (as the extension owner), never by the role itself. It can never read a secret or token, change qbo.api_base_url/qbo.token_url, or alter the ledger.';

-- Operators made before this update (the roles that may run qbo.backfill, as qbo.grant_operator
-- made them) get the new routines, as qbo.grant_operator gives them now. PostgreSQL records a
-- GRANT made by an extension script as the routine's initial privileges (pg_init_privs), which a
-- fresh install does not have (it grants operators later, outside its script): the rows of the
-- new routines are put back to what the REVOKE above recorded.
DO $detached$
DECLARE
    ext_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e
                       WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo');
    new_routines pg_catalog.regprocedure[] := ARRAY[
        'qbo.start_backfill(pg_catalog.text, pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.text)',
        'qbo.start_resume(pg_catalog.int8)',
        'qbo.cancel(pg_catalog.int8)']::pg_catalog.regprocedure[];
    recorded pg_catalog.pg_init_privs[] := ARRAY(
        SELECT p FROM pg_catalog.pg_init_privs p
         WHERE p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND p.objoid OPERATOR(pg_catalog.=) ANY (new_routines::pg_catalog.oid[]));
    r record;
    f pg_catalog.regprocedure;
BEGIN
    FOR r IN
        SELECT DISTINCT g.rolname
          FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
          JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
         WHERE p.oid OPERATOR(pg_catalog.=) 'qbo.backfill(pg_catalog.text, pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.text)'::pg_catalog.regprocedure
           AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) ext_owner
         ORDER BY g.rolname
    LOOP
        FOREACH f IN ARRAY new_routines LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %I', f, r.rolname);
        END LOOP;
    END LOOP;
    DELETE FROM pg_catalog.pg_init_privs p
     WHERE p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND p.objoid OPERATOR(pg_catalog.=) ANY (new_routines::pg_catalog.oid[]);
    INSERT INTO pg_catalog.pg_init_privs SELECT * FROM pg_catalog.unnest(recorded);
END
$detached$;

-------------------------------------------------------------------------------------------------
-- Progress messages and volumetry
-------------------------------------------------------------------------------------------------
-- Granting creates schema raw only when it is missing: CREATE SCHEMA IF NOT EXISTS printed
-- `schema "raw" already exists, skipping` at every grant after the first.
CREATE OR REPLACE FUNCTION qbo._grant_common(caller text, role_name name, ledger_objects text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owner name := (SELECT r.rolname FROM pg_catalog.pg_extension e
                     JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) e.extowner
                    WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo');
    raw_owner name := (SELECT r.rolname FROM pg_catalog.pg_namespace n
                         JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
                        WHERE n.nspname OPERATOR(pg_catalog.=) 'raw');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) role_name) THEN
        RAISE EXCEPTION '%: role "%" does not exist', caller, role_name USING ERRCODE = 'undefined_object';
    END IF;
    IF raw_owner IS NOT NULL AND raw_owner OPERATOR(pg_catalog.<>) owner THEN
        RAISE EXCEPTION '%: schema raw is owned by role "%", not by pg_qbo''s owner "%"; review it, then ALTER SCHEMA raw OWNER TO "%" (or rename it) and call % again',
            caller, raw_owner, owner, owner, caller USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA qbo TO %I', role_name);
    EXECUTE pg_catalog.format('GRANT SELECT ON %s TO %I', ledger_objects, role_name);
    -- created only when missing (CREATE SCHEMA IF NOT EXISTS would say so in a NOTICE each time)
    IF raw_owner IS NULL THEN
        EXECUTE pg_catalog.format('CREATE SCHEMA raw AUTHORIZATION %I', owner);
    END IF;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA raw TO %I', role_name);
    EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA raw FROM %I', role_name);
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA raw REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES FROM %I', owner, role_name);
    EXECUTE pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA raw TO %I', role_name);
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA raw GRANT SELECT ON TABLES TO %I', owner, role_name);
END
$fn$;

COMMENT ON TABLE qbo.run_pages IS 'pg_qbo: one row per committed page: the log of a run''s pages (rows, timing, intuit_tid), committed with each page.';

COMMENT ON PROCEDURE qbo.run_resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run in this session, redoing only what did not complete, with the stored chunk plan and settings. A run that already succeeded is left as it is (a NOTICE says so; nothing is executed).';

COMMENT ON FUNCTION qbo.backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: backfills one QBO entity over [fecha_inicio, fecha_fin) in chunk_size-day chunks (page_size 1..1000 rows per request) into raw.qb_<entity>, committing page by page in a background worker; relays progress as NOTICEs (each chunk as it completes, the run''s totals every qbo.progress_interval_ms, retries after a backoff) and returns one row of volumetry per chunk (duration: time spent on the chunk, rounded to milliseconds). Cancel stops the run (status cancelled, completed pages kept; continue with qbo.resume). Needs a free background worker slot; otherwise use CALL qbo.run_backfill.';

COMMENT ON FUNCTION qbo.resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run in a background worker, redoing only what did not complete with the stored plan and settings; returns the volumetry of every chunk of the run, a chunk''s duration being the sum over every execution that worked on it (rounded to milliseconds). A run that already succeeded is left as it is (a NOTICE says so; no worker is started) and its volumetry returned.';

-------------------------------------------------------------------------------------------------
-- Request limits and the monthly budget
-------------------------------------------------------------------------------------------------
-- Intuit's 10 requests a second per realm joins the limiter (qbo.max_requests_per_second), and
-- every request pg_qbo sends is counted per month, app, realm and kind (qbo._api_usage, read
-- through qbo.api_usage; qbo.monthly_request_budget refuses requests past a budget). Runs count
-- their own requests in three new columns, added last as in a fresh install.
ALTER TABLE qbo.runs ADD COLUMN IF NOT EXISTS requests_query bigint NOT NULL DEFAULT 0;
ALTER TABLE qbo.runs ADD COLUMN IF NOT EXISTS requests_count bigint NOT NULL DEFAULT 0;
ALTER TABLE qbo.runs ADD COLUMN IF NOT EXISTS requests_token bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN qbo.runs.requests_query IS 'Query requests (pages) the run sent to QuickBooks, retries included, over all its executions (counted when admitted, with qbo.api_usage; 0 for runs of pg_qbo before 0.3.0).';
COMMENT ON COLUMN qbo.runs.requests_count IS 'count(*) requests the run sent to QuickBooks (sizing slices and seconds), retries included.';
COMMENT ON COLUMN qbo.runs.requests_token IS 'Token refresh requests the run sent to Intuit''s OAuth2 endpoint, retries included.';

CREATE TABLE IF NOT EXISTS qbo._api_usage (
    month     date NOT NULL,
    client_id text NOT NULL,
    realm_id  text NOT NULL,
    kind      text NOT NULL,
    requests  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (month, client_id, realm_id, kind),
    CONSTRAINT month_ok CHECK (extract(day FROM month) = 1),
    CONSTRAINT kind_ok CHECK (kind ~ '^[a-z][a-z_]{0,31}$')
);
REVOKE ALL ON qbo._api_usage FROM PUBLIC;
COMMENT ON TABLE qbo._api_usage IS
    'pg_qbo internal: requests sent to QuickBooks and Intuit per calendar month (UTC), app (client id), realm and kind; read it through qbo.api_usage.';
SELECT pg_catalog.pg_extension_config_dump('qbo._api_usage', '');

CREATE OR REPLACE VIEW qbo.api_usage AS
SELECT u.month, u.client_id, u.realm_id, u.kind, u.requests,
       sum(u.requests) OVER (PARTITION BY u.month, u.client_id)::bigint AS app_month_requests
FROM qbo._api_usage u;
COMMENT ON VIEW qbo.api_usage IS 'pg_qbo: requests pg_qbo sent per calendar month (UTC), app, realm and kind, retries included: what qbo.monthly_request_budget is compared with.';
COMMENT ON COLUMN qbo.api_usage.month IS 'First day of the calendar month (UTC) the requests were sent in.';
COMMENT ON COLUMN qbo.api_usage.client_id IS 'The Intuit app (OAuth2 client id of the connection; not a secret) whose monthly meter the requests count against.';
COMMENT ON COLUMN qbo.api_usage.realm_id IS 'QuickBooks company id.';
COMMENT ON COLUMN qbo.api_usage.kind IS 'query (a page of records), count (a count(*) sizing a slice or a second) or token (a refresh at Intuit''s OAuth2 endpoint).';
COMMENT ON COLUMN qbo.api_usage.requests IS 'Requests sent, counted when admitted (a request admitted then never sent, because its run stopped in that instant, stays counted).';
COMMENT ON COLUMN qbo.api_usage.app_month_requests IS 'The app''s requests of that month, every realm and kind: what qbo.monthly_request_budget is compared with.';

-- the limiter takes the kinds of the requests, the per-second limit and what the budget needs
DROP FUNCTION IF EXISTS qbo._api_admit(pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.int8[]);
CREATE OR REPLACE FUNCTION qbo._api_admit(p_realm text, p_kinds text[], p_per_second int, p_per_minute int,
                               p_max_in_flight int, p_finished bigint[], p_client_id text,
                               p_run_id bigint, p_budget bigint,
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
    n := least(want, p_per_minute - in_window, p_per_second - in_second, p_max_in_flight - in_flight);
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
    wait_ms := greatest(coalesce(wait_min, 0), coalesce(wait_sec, 0));
    IF wait_ms = 0 THEN
        wait_ms := 20;
    END IF;
END
$fn$;
COMMENT ON FUNCTION qbo._api_admit(text, text[], int, int, int, bigint[], text, bigint, bigint) IS
    'pg_qbo internal: the shared per-realm rate limiter (sliding second and minute, requests in flight) and the monthly count of requests (qbo.api_usage, the run''s requests_* columns); see qbo.max_requests_per_second, qbo.max_requests_per_minute, qbo.max_in_flight and qbo.monthly_request_budget.';
REVOKE ALL ON FUNCTION qbo._api_admit(pg_catalog.text, pg_catalog.text[], pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.int8[], pg_catalog.text, pg_catalog.int8, pg_catalog.int8) FROM PUBLIC;

CREATE OR REPLACE FUNCTION qbo._api_count(p_client_id text, p_realm text, p_kind text, p_run_id bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO qbo._api_usage AS u (month, client_id, realm_id, kind, requests)
    VALUES (date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date, p_client_id, p_realm, p_kind, 1)
    ON CONFLICT (month, client_id, realm_id, kind) DO UPDATE SET requests = u.requests + 1;
    IF p_run_id IS NOT NULL AND p_kind = 'token' THEN
        UPDATE qbo.runs r SET requests_token = r.requests_token + 1 WHERE r.run_id = p_run_id;
    END IF;
END
$fn$;
COMMENT ON FUNCTION qbo._api_count(text, text, text, bigint) IS
    'pg_qbo internal: counts one token refresh (or another request sent outside the rate limiter) in qbo.api_usage and on its run.';
REVOKE ALL ON FUNCTION qbo._api_count(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int8) FROM PUBLIC;

-- operators and readers read qbo.api_usage: granted by qbo.grant_operator / qbo.grant_reader from
-- now on, and here to the roles they were run for (those that read qbo.progress)
CREATE OR REPLACE FUNCTION qbo.grant_operator(role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    PERFORM qbo._grant_common('qbo.grant_operator', role_name,
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.connections, qbo.entities, qbo.api_usage');
    FOR f IN SELECT r.routine FROM qbo._routines() r WHERE r.grantee OPERATOR(pg_catalog.=) 'operator' LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %I', f, role_name);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION qbo.grant_reader(role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM qbo._grant_common('qbo.grant_reader', role_name,
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.entities, qbo.api_usage');
END
$fn$;
COMMENT ON FUNCTION qbo.grant_reader(name) IS
    'pg_qbo: lets a role read raw.* and the run ledger (qbo.runs, run_chunks, run_pages, progress, entities, api_usage); nothing else.';

DO $usage_grants$
DECLARE
    -- pg_init_privs of the view as its creation left it: the grants below are about roles, not
    -- about what CREATE EXTENSION creates, and a fresh install records none (see 0.1.0--0.2.0)
    created pg_catalog.pg_init_privs[] := ARRAY(
        SELECT p FROM pg_catalog.pg_init_privs p
         WHERE p.objoid OPERATOR(pg_catalog.=) 'qbo.api_usage'::pg_catalog.regclass
           AND p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass);
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT g.rolname
          FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
          JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
         WHERE c.oid OPERATOR(pg_catalog.=) 'qbo.progress'::pg_catalog.regclass
           AND a.privilege_type OPERATOR(pg_catalog.=) 'SELECT'
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
         ORDER BY g.rolname
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON qbo.api_usage TO %I', r.rolname);
    END LOOP;
    DELETE FROM pg_catalog.pg_init_privs p
     WHERE p.objoid OPERATOR(pg_catalog.=) 'qbo.api_usage'::pg_catalog.regclass
       AND p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass;
    INSERT INTO pg_catalog.pg_init_privs SELECT c.* FROM pg_catalog.unnest(created) c;
END
$usage_grants$;
