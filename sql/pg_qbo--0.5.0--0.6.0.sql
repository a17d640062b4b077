-- pg_qbo 0.5.0 -> 0.6.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.6.0 build is installed).
--
-- 0.6.0 is what CREATE EXTENSION pg_qbo creates at 0.6.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.5.0 install (or an older
-- one, after the earlier scripts) to exactly that (scripts/upgrade-test.sh compares an updated
-- database with a fresh 0.6.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (one section below per item, in this order):
--   * syncs: CALL qbo.run_sync keeps raw.* current through Change Data Capture. A sync is a run
--     (qbo.runs.kind = 'sync') with one qbo.run_chunks row per entity; the backfills it runs
--     point to it (parent_run_id); watermarks live in the new table qbo.sync_state; CDC requests
--     are counted in qbo.api_usage (kind cdc) and qbo.runs.requests_cdc.
--   * raw tables gain last_updated_utc and deleted_at_utc: not here (raw.* is not part of the
--     extension) but on each table's first use by 0.6.0, under a lock_timeout (README, "Keeping
--     raw current").

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.6.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- Syncs
-------------------------------------------------------------------------------------------------
-- New columns come last, as in a fresh install.
ALTER TABLE qbo.runs ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'backfill';
ALTER TABLE qbo.runs ADD COLUMN IF NOT EXISTS parent_run_id bigint REFERENCES qbo.runs ON DELETE SET NULL;
ALTER TABLE qbo.runs ADD COLUMN IF NOT EXISTS requests_cdc bigint NOT NULL DEFAULT 0;
ALTER TABLE qbo.runs DROP CONSTRAINT IF EXISTS kind_ok;
ALTER TABLE qbo.runs ADD CONSTRAINT kind_ok CHECK (kind IN ('backfill', 'sync'));
COMMENT ON COLUMN qbo.runs.kind IS 'backfill (qbo.backfill and the other backfill entry points; also the passes a sync runs through the pager, with parent_run_id set) or sync (CALL qbo.run_sync: one row per sync, one qbo.run_chunks row per entity).';
COMMENT ON COLUMN qbo.runs.parent_run_id IS 'For a backfill a sync ran (an entity''s first sync, or its changes read through the pager): the sync''s run id.';
COMMENT ON COLUMN qbo.runs.requests_cdc IS 'Change Data Capture requests the run (a sync) sent, retries included.';

ALTER TABLE qbo.run_chunks ADD COLUMN IF NOT EXISTS entity text;
ALTER TABLE qbo.run_chunks ADD COLUMN IF NOT EXISTS route text;
ALTER TABLE qbo.run_chunks ADD COLUMN IF NOT EXISTS deleted bigint NOT NULL DEFAULT 0;
ALTER TABLE qbo.run_chunks ADD COLUMN IF NOT EXISTS requests bigint NOT NULL DEFAULT 0;
ALTER TABLE qbo.run_chunks ADD COLUMN IF NOT EXISTS child_run_id bigint;
COMMENT ON COLUMN qbo.run_chunks.entity IS 'For a sync: the entity of this row (a sync has one row per entity; NULL for a backfill''s chunks).';
COMMENT ON COLUMN qbo.run_chunks.route IS 'For a sync: how the entity''s changes were read: cdc (Change Data Capture), first_sync (its whole history, by a backfill: child_run_id), pager (a backfill over [window_start, window_end): CDC does not serve the entity, its watermark is older than CDC reaches, or a CDC answer reached the 1000-object cap).';
COMMENT ON COLUMN qbo.run_chunks.deleted IS 'For a sync: records marked deleted (raw.*.deleted_at_utc set) from QuickBooks'' tombstones.';
COMMENT ON COLUMN qbo.run_chunks.requests IS 'For a sync: requests spent on the entity: its backfill''s (child_run_id) and the CDC requests whose first entity (in qbo.entities order) it was, so the rows of a sync add up to its requests_* exactly.';
COMMENT ON COLUMN qbo.run_chunks.child_run_id IS 'For a sync: the backfill run (qbo.runs.kind = backfill, parent_run_id = this run) that read the entity through the pager.';

CREATE TABLE IF NOT EXISTS qbo.sync_state (
    realm_id   text NOT NULL,
    entity     text NOT NULL,
    watermark  timestamptz NOT NULL,
    connection text NOT NULL,
    run_id     bigint,
    route      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, entity)
);
COMMENT ON TABLE qbo.sync_state IS 'pg_qbo: how far each entity of each company is synced (CALL qbo.run_sync): every change QuickBooks made to it before watermark is in raw.*. Committed with the rows it covers; delete a row to make the next sync read that entity''s whole history again.';
COMMENT ON COLUMN qbo.sync_state.realm_id IS 'QuickBooks company id (raw.* rows are per realm, so watermarks are too: two connections to one company share them).';
COMMENT ON COLUMN qbo.sync_state.entity IS 'QBO entity.';
COMMENT ON COLUMN qbo.sync_state.watermark IS 'Every change before it is applied, on QuickBooks'' clock (a CDC answer''s time less the request''s round trip and 120 s; for a pass through the pager, its end less 120 s). The next sync reads from here; changes seen again are skipped.';
COMMENT ON COLUMN qbo.sync_state.connection IS 'Connection of the sync that set it.';
COMMENT ON COLUMN qbo.sync_state.run_id IS 'Sync run (qbo.runs) that set it.';
COMMENT ON COLUMN qbo.sync_state.route IS 'How that sync read the entity: cdc, first_sync or pager (see qbo.run_chunks.route).';
COMMENT ON COLUMN qbo.sync_state.updated_at IS 'When it was set.';


SELECT pg_catalog.pg_extension_config_dump('qbo.sync_state', '');

COMMENT ON COLUMN qbo.api_usage.kind IS 'query (a page of records), count (a count(*) sizing a slice or a second), cdc (a Change Data Capture request of a sync) or token (a refresh at Intuit''s OAuth2 endpoint).';

-- CDC requests counted on the run (requests_cdc)
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
               SET requests_query = r.requests_query + k.q, requests_count = r.requests_count + k.c,
                   requests_cdc = r.requests_cdc + k.d
              FROM (SELECT count(*) FILTER (WHERE x.kind = 'query') AS q,
                           count(*) FILTER (WHERE x.kind = 'count') AS c,
                           count(*) FILTER (WHERE x.kind = 'cdc') AS d
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

INSERT INTO qbo._routine_grants (routine, grantee) VALUES
    ('run_sync', 'operator'),
    ('run_sync_all', 'operator'),
    ('sync', 'operator'),
    ('start_sync', 'operator')
ON CONFLICT (routine) DO UPDATE SET grantee = EXCLUDED.grantee;

CREATE OR REPLACE FUNCTION qbo.grant_operator(role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    PERFORM qbo._grant_common('qbo.grant_operator', role_name,
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.connections, qbo.entities, qbo.api_usage, qbo.sync_state');
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
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.entities, qbo.api_usage, qbo.sync_state');
END
$fn$;
COMMENT ON FUNCTION qbo.grant_operator(name) IS
    'pg_qbo: lets a role run backfills and syncs of the connections granted to it with qbo.grant_connection (qbo.backfill, qbo.resume, qbo.start_backfill, qbo.start_resume, qbo.schedule_backfill, CALL qbo.run_*, CALL qbo.run_sync), cancel the runs it started (qbo.cancel), and read raw.*, the ledger and qbo.sync_state; raw.* is written by those backfills only (as the extension owner), never by the role itself. It can never read a secret or token, change qbo.api_base_url/qbo.token_url, or alter the ledger.';
COMMENT ON FUNCTION qbo.grant_reader(name) IS
    'pg_qbo: lets a role read raw.* and the run ledger (qbo.runs, run_chunks, run_pages, progress, entities, api_usage, sync_state); nothing else.';

-- as `cargo pgrx schema` prints them (src/sql_api/sync.rs)
CREATE OR REPLACE FUNCTION qbo."start_sync"(
	"entities" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"connection" TEXT DEFAULT 'default', /* Option < & str > */
	"minor_version" INT DEFAULT 75 /* Option < i32 > */
) RETURNS bigint /* Option < i64 > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_sync_wrapper';

CREATE OR REPLACE FUNCTION qbo."sync"(
	"entities" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"connection" TEXT DEFAULT 'default', /* Option < & str > */
	"minor_version" INT DEFAULT 75 /* Option < i32 > */
) RETURNS TABLE (
	"entity" TEXT,  /* String */
	"since" timestamp with time zone,  /* TimestampWithTimeZone */
	"until" timestamp with time zone,  /* TimestampWithTimeZone */
	"requests" bigint,  /* i64 */
	"changed" bigint,  /* i64 */
	"inserted" bigint,  /* i64 */
	"updated" bigint,  /* i64 */
	"deleted" bigint,  /* i64 */
	"skipped" bigint,  /* i64 */
	"duration" interval,  /* Interval */
	"route" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sync_rows_wrapper';

-- as the extension_sql! block of src/sql_api/sync.rs has them
CREATE OR REPLACE PROCEDURE qbo.run_sync(entities text[] DEFAULT NULL, connection text DEFAULT 'default',
                                         minor_version int DEFAULT 75, INOUT run_id bigint DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_sync';
COMMENT ON PROCEDURE qbo.run_sync(text[], text, int, bigint) IS
    'pg_qbo: brings raw.* up to date with QuickBooks for the entities asked (NULL: every entity of qbo.entities) of one connection, in this session, committing as it goes. An entity never synced reads its whole history (a backfill from 2000-01-01); then Change Data Capture reads what changed since its watermark (qbo.sync_state), all CDC entities in one request when their changes fit QuickBooks'' 1000-object cap, deletions marking raw.*.deleted_at_utc; entities CDC does not serve, or whose watermark is older than its 30 days, are read through the pager. Returns the sync''s run id (NULL when a sync of the same company was already running: a NOTICE says so and nothing is done). Must be CALLed outside a transaction block; one NOTICE per entity (route, window, changed, inserted, updated, deleted, skipped, requests); qbo.runs (kind sync) and qbo.run_chunks (one row per entity) hold the same.';

CREATE OR REPLACE PROCEDURE qbo.run_sync_all(entities text[] DEFAULT NULL, minor_version int DEFAULT 75)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_sync_all';
COMMENT ON PROCEDURE qbo.run_sync_all(text[], int) IS
    'pg_qbo: CALL qbo.run_sync for every connection the calling role may use (qbo.connections), one after the other, in this session: the one line a pg_cron job needs to keep every company current. A sync that fails does not stop the others; the call then ends with an ERROR naming each failed sync (each is in qbo.runs). A company whose sync is already running is skipped with a NOTICE.';

COMMENT ON FUNCTION qbo.sync(text[], text, int) IS
    'pg_qbo: the sync of CALL qbo.run_sync (same arguments, same work, same NOTICEs) run in a background worker of this session, returning one row per entity: entity, since, until (the window it read, until = the new watermark), requests (a CDC request counted on the first entity it asked for, so the rows add up to the sync''s total), changed (= inserted + updated + deleted + skipped; records read, for an entity read through the pager), inserted, updated, deleted, skipped, duration, route (cdc, first_sync, pager). No rows, and a NOTICE, when a sync of the company was already running. Needs a free pg_qbo worker slot (qbo.max_workers); CALL qbo.run_sync needs none.';
COMMENT ON FUNCTION qbo.start_sync(text[], text, int) IS
    'pg_qbo: starts the sync of CALL qbo.run_sync in a background worker tied to no session and returns its run id once the run is committed (NULL, and a NOTICE, when a sync of the company was already running). Follow it in qbo.progress and qbo.run_chunks; stop it with qbo.cancel(run_id).';

-- PUBLIC may not run them (as the end of the extension script makes it for every routine
-- qbo._routine_grants does not list as 'public')
REVOKE ALL ON PROCEDURE qbo.run_sync(pg_catalog.text[], pg_catalog.text, pg_catalog.int4, pg_catalog.int8) FROM PUBLIC;
REVOKE ALL ON PROCEDURE qbo.run_sync_all(pg_catalog.text[], pg_catalog.int4) FROM PUBLIC;
REVOKE ALL ON FUNCTION qbo.sync(pg_catalog.text[], pg_catalog.text, pg_catalog.int4) FROM PUBLIC;
REVOKE ALL ON FUNCTION qbo.start_sync(pg_catalog.text[], pg_catalog.text, pg_catalog.int4) FROM PUBLIC;

-- Operators and readers made before this update get what qbo.grant_operator / qbo.grant_reader
-- give now: the new routines to the roles that may run qbo.run_backfill, SELECT on qbo.sync_state to
-- the roles that may read qbo.runs. PostgreSQL records a GRANT made by an extension script as the
-- object's initial privileges (pg_init_privs), which a fresh install does not have (it grants
-- roles later, outside its script): those rows are put back to what the REVOKE and CREATE above
-- recorded.
DO $sync_grants$
DECLARE
    ext_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e
                       WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo');
    new_routines pg_catalog.regprocedure[] := ARRAY[
        'qbo.run_sync(pg_catalog.text[], pg_catalog.text, pg_catalog.int4, pg_catalog.int8)',
        'qbo.run_sync_all(pg_catalog.text[], pg_catalog.int4)',
        'qbo.sync(pg_catalog.text[], pg_catalog.text, pg_catalog.int4)',
        'qbo.start_sync(pg_catalog.text[], pg_catalog.text, pg_catalog.int4)']::pg_catalog.regprocedure[];
    table_oid oid := 'qbo.sync_state'::pg_catalog.regclass::pg_catalog.oid;
    recorded pg_catalog.pg_init_privs[] := ARRAY(
        SELECT p FROM pg_catalog.pg_init_privs p
         WHERE (p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                AND p.objoid OPERATOR(pg_catalog.=) ANY (new_routines::pg_catalog.oid[]))
            OR (p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                AND p.objoid OPERATOR(pg_catalog.=) table_oid));
    r record;
    f pg_catalog.regprocedure;
BEGIN
    FOR r IN
        SELECT DISTINCT g.rolname
          FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
          JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
         WHERE p.oid OPERATOR(pg_catalog.=) 'qbo.run_backfill(pg_catalog.text, pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.int8)'::pg_catalog.regprocedure
           AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) ext_owner
         ORDER BY g.rolname
    LOOP
        FOREACH f IN ARRAY new_routines LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %I', f, r.rolname);
        END LOOP;
    END LOOP;
    FOR r IN
        SELECT DISTINCT g.rolname
          FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
          JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
         WHERE c.oid OPERATOR(pg_catalog.=) 'qbo.runs'::pg_catalog.regclass
           AND a.privilege_type OPERATOR(pg_catalog.=) 'SELECT'
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
         ORDER BY g.rolname
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON qbo.sync_state TO %I', r.rolname);
    END LOOP;
    DELETE FROM pg_catalog.pg_init_privs p
     WHERE (p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
            AND p.objoid OPERATOR(pg_catalog.=) ANY (new_routines::pg_catalog.oid[]))
        OR (p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            AND p.objoid OPERATOR(pg_catalog.=) table_oid);
    INSERT INTO pg_catalog.pg_init_privs SELECT * FROM pg_catalog.unnest(recorded);
END
$sync_grants$;
