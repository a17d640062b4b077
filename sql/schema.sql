-- pg_qbo: the hand-written part of the extension script (schema qbo, created by CREATE EXTENSION
-- from the control file). Tables in schema "raw" are NOT created here: they are created on first
-- use by a backfill, outside extension membership, so DROP EXTENSION keeps the data and pg_dump
-- dumps it like any user table.
--
-- Changing it (or any #[pg_extern] / extension_sql! of src/): databases already running a released
-- version get the change only through an update script. Every change to an SQL object therefore
-- also goes into sql/pg_qbo--A--B.sql (A the last released version, B the version in Cargo.toml,
-- bumped if A was released), written idempotently (CREATE OR REPLACE, IF NOT EXISTS, DROP ... IF
-- EXISTS) and fully qualified like this file; cargo pgrx install copies it next to the
-- pg_qbo--B.sql it generates. scripts/upgrade-test.sh checks that updating from the released
-- version gives exactly what CREATE EXTENSION gives; see README.md, "Upgrading".

-------------------------------------------------------------------------------------------------
-- Who may run what: the one list of privileges on pg_qbo's routines
-------------------------------------------------------------------------------------------------
-- Every routine of the extension is revoked from PUBLIC at the end of the extension script,
-- except those listed 'public' here; qbo.grant_operator grants those listed 'operator'; the rest
-- are for superusers (and the extension owner). Signatures are read from the catalog, never
-- written again by hand.
CREATE TABLE qbo._routine_grants (
    routine name PRIMARY KEY,
    grantee text NOT NULL,
    CONSTRAINT grantee_ok CHECK (grantee IN ('public', 'operator'))
);
INSERT INTO qbo._routine_grants (routine, grantee) VALUES
    -- the rows of the qbo.entities view
    ('_entities', 'public'),
    -- the SyncToken of a payload, inlined into the page upsert
    ('_sync_token', 'public'),
    -- marks runs whose process is gone as interrupted (SECURITY DEFINER; changes nothing else)
    ('_mark_interrupted', 'public'),
    -- the entry points of operators
    ('backfill', 'operator'),
    ('resume', 'operator'),
    ('schedule_backfill', 'operator'),
    ('run_backfill', 'operator'),
    ('run_sync', 'operator'),
    ('run_sync_all', 'operator'),
    ('sync', 'operator'),
    ('start_sync', 'operator'),
    ('run_resume', 'operator'),
    ('run_scheduled', 'operator'),
    ('start_backfill', 'operator'),
    ('start_resume', 'operator'),
    ('cancel', 'operator'),
    -- the filter of the qbo.connections view, called for the role reading it
    ('_may_use', 'operator');
REVOKE ALL ON qbo._routine_grants FROM PUBLIC;
COMMENT ON TABLE qbo._routine_grants IS
    'pg_qbo internal: who may run each routine of pg_qbo (public, operator; the others are for superusers). Applied by the extension script and qbo.grant_operator.';

-- The routines of pg_qbo (members of the extension in schema qbo) with their grantee, NULL for
-- superusers only.
CREATE FUNCTION qbo._routines()
RETURNS TABLE (routine pg_catalog.regprocedure, kind "char", grantee text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p.oid::pg_catalog.regprocedure, p.prokind, g.grantee
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_depend d
        ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND d.objid OPERATOR(pg_catalog.=) p.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
      JOIN pg_catalog.pg_extension e
        ON e.oid OPERATOR(pg_catalog.=) d.refobjid AND e.extname OPERATOR(pg_catalog.=) 'pg_qbo'
      LEFT JOIN qbo._routine_grants g ON g.routine OPERATOR(pg_catalog.=) p.proname
     WHERE p.pronamespace OPERATOR(pg_catalog.=) 'qbo'::pg_catalog.regnamespace
$fn$;
COMMENT ON FUNCTION qbo._routines() IS 'pg_qbo internal: every routine of pg_qbo with who may run it (qbo._routine_grants; NULL: superusers).';

-------------------------------------------------------------------------------------------------
-- Connections and secrets
-------------------------------------------------------------------------------------------------
CREATE TABLE qbo._connections (
    name                     text PRIMARY KEY,
    realm_id                 text NOT NULL,
    environment              text NOT NULL,
    client_id                text NOT NULL,
    client_secret            text NOT NULL,
    refresh_token            text NOT NULL,
    access_token             text,
    access_token_expires_at  timestamptz,
    refresh_token_expires_at timestamptz,
    last_refresh_at          timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT connection_name_ok CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    CONSTRAINT realm_id_ok CHECK (realm_id ~ '^[0-9]{1,32}$'),
    CONSTRAINT environment_ok CHECK (environment IN ('production', 'sandbox'))
);
REVOKE ALL ON qbo._connections FROM PUBLIC;
COMMENT ON TABLE qbo._connections IS
    'pg_qbo: registered QuickBooks companies with their OAuth2 secrets. Readable by its owner only; use the view qbo.connections.';

-- Which roles may run backfills of which connection (besides superusers and the extension owner,
-- who may use every connection). A grant to a role covers its members that inherit its rights.
CREATE TABLE qbo._connection_grants (
    connection text NOT NULL REFERENCES qbo._connections (name) ON DELETE CASCADE ON UPDATE CASCADE,
    role_oid   oid NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, role_oid)
);
REVOKE ALL ON qbo._connection_grants FROM PUBLIC;
COMMENT ON TABLE qbo._connection_grants IS
    'pg_qbo internal: roles granted a connection with qbo.grant_connection (see qbo.connection_grants).';

-- Internal: whether role p_role may run backfills of connection p_connection.
CREATE FUNCTION qbo._may_use(p_connection text, p_role oid)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) p_role), false)
        OR p_role OPERATOR(pg_catalog.=) (SELECT e.extowner FROM pg_catalog.pg_extension e
                                           WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo')
        OR EXISTS (SELECT FROM qbo._connection_grants g
                    WHERE g.connection OPERATOR(pg_catalog.=) p_connection
                      AND EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) g.role_oid)
                      AND pg_catalog.pg_has_role(p_role, g.role_oid, 'USAGE'))
$fn$;
COMMENT ON FUNCTION qbo._may_use(text, oid) IS
    'pg_qbo internal: whether a role may run backfills of a connection (superusers and the extension owner always; others when granted with qbo.grant_connection, directly or through a role they inherit from).';

CREATE VIEW qbo.connections WITH (security_barrier) AS
SELECT name, realm_id, environment, access_token_expires_at, refresh_token_expires_at,
       last_refresh_at, created_at, updated_at
FROM qbo._connections c
WHERE qbo._may_use(c.name, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER));
COMMENT ON VIEW qbo.connections IS
    'pg_qbo: the registered QuickBooks companies the current role may run backfills of (never shows a secret).';
COMMENT ON COLUMN qbo.connections.name IS 'Connection name passed as the connection argument of qbo.backfill.';
COMMENT ON COLUMN qbo.connections.realm_id IS 'QuickBooks company id (realmId).';
COMMENT ON COLUMN qbo.connections.environment IS 'production or sandbox: picks Intuit''s API host.';
COMMENT ON COLUMN qbo.connections.access_token_expires_at IS 'When the cached access token expires (NULL: none cached).';
COMMENT ON COLUMN qbo.connections.refresh_token_expires_at IS 'When Intuit says the refresh token expires (rolling, about 100 days).';
COMMENT ON COLUMN qbo.connections.last_refresh_at IS 'Last successful token refresh.';
COMMENT ON COLUMN qbo.connections.created_at IS 'When the connection was first registered.';
COMMENT ON COLUMN qbo.connections.updated_at IS 'Last change of credentials or tokens.';

CREATE FUNCTION qbo.connect(realm_id text, client_id text, client_secret text, refresh_token text,
                            environment text DEFAULT 'production', name text DEFAULT 'default')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF realm_id IS NULL OR client_id IS NULL OR client_secret IS NULL OR refresh_token IS NULL
       OR environment IS NULL OR name IS NULL THEN
        RAISE EXCEPTION 'qbo.connect: every argument is required (got NULL for %)',
            concat_ws(', ',
                CASE WHEN realm_id IS NULL THEN 'realm_id' END,
                CASE WHEN client_id IS NULL THEN 'client_id' END,
                CASE WHEN client_secret IS NULL THEN 'client_secret' END,
                CASE WHEN refresh_token IS NULL THEN 'refresh_token' END,
                CASE WHEN environment IS NULL THEN 'environment' END,
                CASE WHEN name IS NULL THEN 'name' END)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF realm_id !~ '^[0-9]{1,32}$' THEN
        RAISE EXCEPTION 'qbo.connect: invalid realm_id "%": a QuickBooks company id is 1 to 32 digits',
            left(realm_id, 40) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF environment NOT IN ('production', 'sandbox') THEN
        RAISE EXCEPTION 'qbo.connect: invalid environment "%": allowed values are production, sandbox',
            left(environment, 40) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'qbo.connect: invalid connection name "%": use 1 to 63 letters, digits, _ . or -',
            left(name, 70) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(client_id) = 0 OR length(client_secret) = 0 OR length(refresh_token) = 0 THEN
        RAISE EXCEPTION 'qbo.connect: client_id, client_secret and refresh_token must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO qbo._connections AS c (name, realm_id, environment, client_id, client_secret, refresh_token)
    VALUES (connect.name, connect.realm_id, connect.environment, connect.client_id,
            connect.client_secret, connect.refresh_token)
    ON CONFLICT ON CONSTRAINT _connections_pkey DO UPDATE
        SET realm_id = EXCLUDED.realm_id, environment = EXCLUDED.environment,
            client_id = EXCLUDED.client_id, client_secret = EXCLUDED.client_secret,
            refresh_token = EXCLUDED.refresh_token, access_token = NULL,
            access_token_expires_at = NULL, refresh_token_expires_at = NULL, updated_at = now();
    RETURN connect.name;
END
$fn$;
COMMENT ON FUNCTION qbo.connect(text, text, text, text, text, text) IS
    'pg_qbo: registers or updates a QuickBooks company (realm_id, OAuth2 client_id/client_secret, refresh_token, environment production|sandbox, connection name). Returns the connection name. Secrets are stored in a table only its owner can read and are never echoed. Literal secrets in SQL text can reach the server log (log_statement) and client history: prefer qbo.connect_from_file.';

CREATE FUNCTION qbo.connect_from_file(path text, name text DEFAULT 'default')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    doc jsonb;
BEGIN
    IF path IS NULL OR name IS NULL THEN
        RAISE EXCEPTION 'qbo.connect_from_file: path and name are required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        RAISE EXCEPTION 'qbo.connect_from_file: only a superuser may read credential files'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    BEGIN
        doc := pg_read_file(path)::jsonb;
    EXCEPTION WHEN OTHERS THEN
        -- never echo the file's content: it holds secrets
        RAISE EXCEPTION 'qbo.connect_from_file: cannot read "%" as a JSON object with realm_id, client_id, client_secret, refresh_token[, environment]', path
            USING ERRCODE = 'invalid_parameter_value';
    END;
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'qbo.connect_from_file: "%" is not a JSON object', path USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN qbo.connect(doc->>'realm_id', doc->>'client_id', doc->>'client_secret', doc->>'refresh_token',
                       coalesce(doc->>'environment', 'production'), name);
END
$fn$;
COMMENT ON FUNCTION qbo.connect_from_file(text, text) IS
    'pg_qbo: superuser only. Registers a connection from a server-side JSON file {"realm_id","client_id","client_secret","refresh_token","environment"} so secrets never appear in SQL text, the server log or client history.';

-- The backfill code reads credentials and stores refreshed tokens itself, switching to the
-- extension owner for those statements only (no SQL function returns a secret, so no role that
-- merely runs backfills can read one).

-------------------------------------------------------------------------------------------------
-- The run ledger
-------------------------------------------------------------------------------------------------
CREATE TABLE qbo.runs (
    run_id        bigserial PRIMARY KEY,
    entity        text NOT NULL,
    connection    text NOT NULL,
    realm_id      text NOT NULL,
    environment   text NOT NULL,
    fecha_inicio  timestamptz NOT NULL,
    fecha_fin     timestamptz NOT NULL,
    chunk_size    int NOT NULL,
    page_size     int NOT NULL,
    minor_version int NOT NULL,
    settings      jsonb NOT NULL,
    entry_point   text NOT NULL,
    status        text NOT NULL,
    run_by        name NOT NULL DEFAULT current_user,
    pid           int,
    executions    int NOT NULL DEFAULT 0,
    chunks_total  int NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text,
    error_sqlstate text,
    progress      text,
    requests_query bigint NOT NULL DEFAULT 0,
    requests_count bigint NOT NULL DEFAULT 0,
    requests_token bigint NOT NULL DEFAULT 0,
    kind          text NOT NULL DEFAULT 'backfill',
    parent_run_id bigint REFERENCES qbo.runs ON DELETE SET NULL,
    requests_cdc  bigint NOT NULL DEFAULT 0,
    CONSTRAINT kind_ok CHECK (kind IN ('backfill', 'sync')),
    CONSTRAINT status_ok CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    CONSTRAINT entry_point_ok CHECK (entry_point IN ('call', 'function', 'cron', 'detached'))
);
CREATE INDEX runs_status_idx ON qbo.runs (status) WHERE status IN ('running', 'scheduled');
COMMENT ON TABLE qbo.runs IS 'pg_qbo: one row per backfill run, committed as the run goes (watch it live).';
COMMENT ON COLUMN qbo.runs.run_id IS 'Run id: pass it to qbo.resume / qbo.run_resume / qbo.start_resume, or to qbo.cancel.';
COMMENT ON COLUMN qbo.runs.entity IS 'QBO entity (see qbo.entities).';
COMMENT ON COLUMN qbo.runs.connection IS 'Connection name (see qbo.connections).';
COMMENT ON COLUMN qbo.runs.realm_id IS 'QuickBooks company id at the time of the run.';
COMMENT ON COLUMN qbo.runs.environment IS 'production or sandbox.';
COMMENT ON COLUMN qbo.runs.fecha_inicio IS 'Window start (inclusive), on MetaData.LastUpdatedTime.';
COMMENT ON COLUMN qbo.runs.fecha_fin IS 'Window end (exclusive).';
COMMENT ON COLUMN qbo.runs.chunk_size IS 'Days per chunk.';
COMMENT ON COLUMN qbo.runs.page_size IS 'MAXRESULTS asked per page (1..1000).';
COMMENT ON COLUMN qbo.runs.minor_version IS 'QBO minorversion sent with every request.';
COMMENT ON COLUMN qbo.runs.settings IS 'Settings resolved when the run was created (hosts, timeouts, retries, backoff); resume reuses them.';
COMMENT ON COLUMN qbo.runs.entry_point IS 'How the run was started: call (CALL qbo.run_backfill), function (SELECT qbo.backfill, in a background worker of that session), cron (qbo.schedule_backfill) or detached (qbo.start_backfill, in a background worker tied to no session).';
COMMENT ON COLUMN qbo.runs.status IS 'scheduled, running, succeeded, failed, cancelled or interrupted (its backend or worker died).';
COMMENT ON COLUMN qbo.runs.run_by IS 'Role that started the run.';
COMMENT ON COLUMN qbo.runs.pid IS 'Process id of the backend or worker executing the run (last execution).';
COMMENT ON COLUMN qbo.runs.executions IS 'How many times the run was executed (1 + resumes).';
COMMENT ON COLUMN qbo.runs.chunks_total IS 'Number of chunks in the plan (qbo.run_chunks).';
COMMENT ON COLUMN qbo.runs.started_at IS 'When the run was created.';
COMMENT ON COLUMN qbo.runs.updated_at IS 'Last progress committed.';
COMMENT ON COLUMN qbo.runs.finished_at IS 'When the run last stopped (any final status).';
COMMENT ON COLUMN qbo.runs.error IS 'Error text of a failed, cancelled or interrupted run.';
COMMENT ON COLUMN qbo.runs.error_sqlstate IS 'SQLSTATE of that error.';
COMMENT ON COLUMN qbo.runs.progress IS 'What a running run is doing (last page, backing off, waiting for a token), committed at most about once a second.';
COMMENT ON COLUMN qbo.runs.requests_query IS 'Query requests (pages) the run sent to QuickBooks, retries included, over all its executions (counted when admitted, with qbo.api_usage; 0 for runs of pg_qbo before 0.3.0).';
COMMENT ON COLUMN qbo.runs.requests_count IS 'count(*) requests the run sent to QuickBooks (sizing slices and seconds), retries included.';
COMMENT ON COLUMN qbo.runs.requests_token IS 'Token refresh requests the run sent to Intuit''s OAuth2 endpoint, retries included.';
COMMENT ON COLUMN qbo.runs.kind IS 'backfill (qbo.backfill and the other backfill entry points; also the passes a sync runs through the pager, with parent_run_id set) or sync (CALL qbo.run_sync: one row per sync, one qbo.run_chunks row per entity).';
COMMENT ON COLUMN qbo.runs.parent_run_id IS 'For a backfill a sync ran (an entity''s first sync, or its changes read through the pager): the sync''s run id.';
COMMENT ON COLUMN qbo.runs.requests_cdc IS 'Change Data Capture requests the run (a sync) sent, retries included.';

CREATE TABLE qbo.run_chunks (
    run_id       bigint NOT NULL REFERENCES qbo.runs ON DELETE CASCADE,
    chunk        int NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'pending',
    pages        int NOT NULL DEFAULT 0,
    rows         bigint NOT NULL DEFAULT 0,
    inserted     bigint NOT NULL DEFAULT 0,
    updated      bigint NOT NULL DEFAULT 0,
    skipped      bigint NOT NULL DEFAULT 0,
    duration     interval NOT NULL DEFAULT '0',
    attempts     int NOT NULL DEFAULT 0,
    cursor       jsonb,
    started_at   timestamptz,
    finished_at  timestamptz,
    error        text,
    records_expected bigint,
    entity       text,
    route        text,
    deleted      bigint NOT NULL DEFAULT 0,
    requests     bigint NOT NULL DEFAULT 0,
    child_run_id bigint,
    PRIMARY KEY (run_id, chunk),
    CONSTRAINT chunk_status_ok CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted'))
);
COMMENT ON TABLE qbo.run_chunks IS 'pg_qbo: the chunk plan of each run (computed in UTC) with per-chunk volumetry, committed page by page.';
COMMENT ON COLUMN qbo.run_chunks.run_id IS 'Run (qbo.runs).';
COMMENT ON COLUMN qbo.run_chunks.chunk IS 'Chunk number, 1-based.';
COMMENT ON COLUMN qbo.run_chunks.window_start IS 'Chunk start (inclusive).';
COMMENT ON COLUMN qbo.run_chunks.window_end IS 'Chunk end (exclusive).';
COMMENT ON COLUMN qbo.run_chunks.status IS 'pending, running, succeeded, failed, cancelled or interrupted.';
COMMENT ON COLUMN qbo.run_chunks.pages IS 'Query responses that carried records of the chunk (a page spanning chunks counts in each), or empty ones answered while it was the first unfinished chunk; qbo.runs.requests_query counts the requests.';
COMMENT ON COLUMN qbo.run_chunks.rows IS 'Distinct records accepted = inserted + updated + skipped.';
COMMENT ON COLUMN qbo.run_chunks.inserted IS 'Records new to the raw table.';
COMMENT ON COLUMN qbo.run_chunks.updated IS 'Records whose SyncToken was higher than stored, or equal with a different payload.';
COMMENT ON COLUMN qbo.run_chunks.skipped IS 'Records unchanged or older than stored.';
COMMENT ON COLUMN qbo.run_chunks.duration IS 'Time spent on the chunk, summed over executions.';
COMMENT ON COLUMN qbo.run_chunks.attempts IS 'Executions that worked on the chunk.';
COMMENT ON COLUMN qbo.run_chunks.cursor IS 'Paging cursor after the last committed page, saved on the last chunk of the window read (consecutive chunks are read as one window; a resume continues from it).';
COMMENT ON COLUMN qbo.run_chunks.started_at IS 'When work on the chunk first started.';
COMMENT ON COLUMN qbo.run_chunks.finished_at IS 'When the chunk completed.';
COMMENT ON COLUMN qbo.run_chunks.error IS 'Error that stopped the chunk.';
COMMENT ON COLUMN qbo.run_chunks.records_expected IS 'Records QuickBooks counted (count(*)) in the window whose cursor is saved on this chunk, when that window is read by offsets (its chunks finish together at its end): qbo.progress estimates the time left from it.';
COMMENT ON COLUMN qbo.run_chunks.entity IS 'For a sync: the entity of this row (a sync has one row per entity; NULL for a backfill''s chunks).';
COMMENT ON COLUMN qbo.run_chunks.route IS 'For a sync: how the entity''s changes were read: cdc (Change Data Capture), first_sync (its whole history, by a backfill: child_run_id), query (CDC does not serve the entity: one query, of every record for a transaction entity that fits a page, else of those changed since window_start), not_due (CDC does not serve the entity and its watermark is younger than qbo.sync_non_cdc_interval_ms: not read), pager (a backfill over [window_start, window_end): its watermark is older than CDC reaches, or a CDC answer or its query filled the page alone).';
COMMENT ON COLUMN qbo.run_chunks.deleted IS 'For a sync: records marked deleted (raw.*.deleted_at_utc set) from QuickBooks'' tombstones.';
COMMENT ON COLUMN qbo.run_chunks.requests IS 'For a sync: requests spent on the entity: its backfill''s (child_run_id), its queries and deletes hunt, the CDC requests whose first entity (in qbo.entities order) it was, and the sync''s own token refreshes on its first entity read by CDC (else by query, else through the pager), so the rows of a sync add up to its requests_* exactly.';
COMMENT ON COLUMN qbo.run_chunks.child_run_id IS 'For a sync: the backfill run (qbo.runs.kind = backfill, parent_run_id = this run) that read the entity through the pager.';

-- Internal: the Ids of a second being read by STARTPOSITION (a bulk import: a second holding a page
-- or more), written with each page instead of in the chunk's cursor, which would otherwise copy
-- tens of thousands of Ids with every page. Emptied when the chunk completes.
CREATE TABLE qbo._second_ids (
    run_id     bigint NOT NULL REFERENCES qbo.runs ON DELETE CASCADE,
    chunk      int NOT NULL,
    second     timestamptz NOT NULL,
    id         text NOT NULL,
    sync_token bigint NOT NULL,
    seen_try   int NOT NULL,
    PRIMARY KEY (run_id, chunk, second, id)
);
REVOKE ALL ON qbo._second_ids FROM PUBLIC;
COMMENT ON TABLE qbo._second_ids IS
    'pg_qbo internal: Ids taken (highest SyncToken) and last seen (try) in a second read by STARTPOSITION, part of the chunk''s resumable cursor.';

CREATE TABLE qbo.run_pages (
    run_id         bigint NOT NULL REFERENCES qbo.runs ON DELETE CASCADE,
    chunk          int NOT NULL,
    page           int NOT NULL,
    start_position int NOT NULL,
    rows           int NOT NULL,
    inserted       int NOT NULL,
    updated        int NOT NULL,
    skipped        int NOT NULL,
    refetched      int NOT NULL,
    seconds        double precision NOT NULL,
    intuit_tid     text,
    committed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, chunk, page)
);
COMMENT ON TABLE qbo.run_pages IS 'pg_qbo: one row per committed page and chunk it carried records of: the log of a run''s pages (rows, timing, intuit_tid), committed with each page.';
COMMENT ON COLUMN qbo.run_pages.run_id IS 'Run (qbo.runs).';
COMMENT ON COLUMN qbo.run_pages.chunk IS 'Chunk number.';
COMMENT ON COLUMN qbo.run_pages.page IS 'Page number inside the chunk, 1-based.';
COMMENT ON COLUMN qbo.run_pages.start_position IS 'STARTPOSITION of the request.';
COMMENT ON COLUMN qbo.run_pages.rows IS 'Distinct new records accepted from the page whose LastUpdatedTime falls in the chunk.';
COMMENT ON COLUMN qbo.run_pages.inserted IS 'Of which inserted.';
COMMENT ON COLUMN qbo.run_pages.updated IS 'Of which updated.';
COMMENT ON COLUMN qbo.run_pages.skipped IS 'Of which unchanged or stale.';
COMMENT ON COLUMN qbo.run_pages.refetched IS 'Records already taken (at the cursor second, or in the overlap with the page before), dropped before counting.';
COMMENT ON COLUMN qbo.run_pages.seconds IS 'Wall time of the page: fetch (with retries) and upsert.';
COMMENT ON COLUMN qbo.run_pages.intuit_tid IS 'intuit_tid header of the response (Intuit support asks for it).';
COMMENT ON COLUMN qbo.run_pages.committed_at IS 'Commit time.';

-- Where each entity of each company is synced up to: every change QuickBooks made to the entity
-- before the watermark is in raw. Written in the same transaction as the rows it covers.
CREATE TABLE qbo.sync_state (
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
COMMENT ON COLUMN qbo.sync_state.watermark IS 'Every change before it is applied, on QuickBooks'' clock (a CDC or query answer''s time less the request''s round trip and 120 s; for a pass through the pager, its end less 120 s). The next sync reads from here; changes seen again are skipped.';
COMMENT ON COLUMN qbo.sync_state.connection IS 'Connection of the sync that set it.';
COMMENT ON COLUMN qbo.sync_state.run_id IS 'Sync run (qbo.runs) that set it.';
COMMENT ON COLUMN qbo.sync_state.route IS 'How that sync read the entity: cdc, first_sync, query or pager (see qbo.run_chunks.route).';
COMMENT ON COLUMN qbo.sync_state.updated_at IS 'When it was set.';

SELECT pg_catalog.pg_extension_config_dump('qbo.runs', '');
SELECT pg_catalog.pg_extension_config_dump('qbo.runs_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('qbo.run_chunks', '');
SELECT pg_catalog.pg_extension_config_dump('qbo.run_pages', '');

-- Internal: marks runs whose executing backend or worker is gone as interrupted. A live run holds
-- the session advisory lock (1364414287, run_id) in its database; pg_locks is readable by all.
CREATE FUNCTION qbo._mark_interrupted()
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n int;
BEGIN
    WITH dead AS (
        UPDATE qbo.runs r
           SET status = 'interrupted', finished_at = now(), updated_at = now(),
               error = format('run %s was interrupted: its process (pid %s) ended without finishing; resume it with SELECT * FROM qbo.resume(%s) or CALL qbo.run_resume(%s)',
                              r.run_id, r.pid, r.run_id, r.run_id)
         WHERE r.status = 'running'
           AND NOT EXISTS (
                SELECT 1 FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.granted
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid = 1364414287::oid AND l.objid = (r.run_id & 2147483647)::oid AND l.objsubid = 2)
        RETURNING r.run_id)
    UPDATE qbo.run_chunks c SET status = 'interrupted'
      FROM dead WHERE c.run_id = dead.run_id AND c.status = 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION qbo._mark_interrupted() IS
    'pg_qbo internal: marks running runs whose process is gone as interrupted (called by every entry point).';

-- Internal: the per-realm request limiter shared by every session and worker (QBO limits requests
-- per realm, not per connection). Unlogged: the state is transient (a crash empties it, which is
-- right: nothing is in flight after a restart) and costs no WAL. One row per realm is locked
-- (FOR UPDATE) while a process admits requests, so admissions of one realm are serialised.
CREATE UNLOGGED TABLE qbo._api_realms (
    realm_id text PRIMARY KEY
);
CREATE UNLOGGED TABLE qbo._api_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    realm_id      text NOT NULL,
    pid           int NOT NULL,
    backend_start timestamptz,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz
);
CREATE INDEX ON qbo._api_requests (realm_id, started_at);
REVOKE ALL ON qbo._api_realms, qbo._api_requests FROM PUBLIC;
COMMENT ON TABLE qbo._api_requests IS
    'pg_qbo internal: QBO requests admitted in the last minute per realm (finished_at NULL: in flight), the shared state of the rate limiter.';

-- Internal: requests pg_qbo sent, per calendar month (UTC), app (OAuth2 client id: Intuit meters
-- an app's calls per month), realm and kind ('query' pages, 'count' requests, 'token' refreshes;
-- open to kinds to come, such as 'cdc'). Logged: a month's count must survive a crash. Written by
-- qbo._api_admit in the very transaction that admits the requests, and by qbo._api_count for
-- token refreshes; read through qbo.api_usage.
CREATE TABLE qbo._api_usage (
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
-- (after _api_usage: an update from 0.5.0 appends qbo.sync_state to the list, and a fresh install
-- must list the tables in the same order)
SELECT pg_catalog.pg_extension_config_dump('qbo.sync_state', '');

CREATE VIEW qbo.api_usage AS
SELECT u.month, u.client_id, u.realm_id, u.kind, u.requests,
       sum(u.requests) OVER (PARTITION BY u.month, u.client_id)::bigint AS app_month_requests
FROM qbo._api_usage u;
COMMENT ON VIEW qbo.api_usage IS 'pg_qbo: requests pg_qbo sent per calendar month (UTC), app, realm and kind, retries included: what qbo.monthly_request_budget is compared with.';
COMMENT ON COLUMN qbo.api_usage.month IS 'First day of the calendar month (UTC) the requests were sent in.';
COMMENT ON COLUMN qbo.api_usage.client_id IS 'The Intuit app (OAuth2 client id of the connection; not a secret) whose monthly meter the requests count against.';
COMMENT ON COLUMN qbo.api_usage.realm_id IS 'QuickBooks company id.';
COMMENT ON COLUMN qbo.api_usage.kind IS 'query (a page of records), count (a count(*) sizing a slice or a second), cdc (a Change Data Capture request of a sync) or token (a refresh at Intuit''s OAuth2 endpoint).';
COMMENT ON COLUMN qbo.api_usage.requests IS 'Requests sent, counted when admitted (a request admitted then never sent, because its run stopped in that instant, stays counted).';
COMMENT ON COLUMN qbo.api_usage.app_month_requests IS 'The app''s requests of that month, every realm and kind: what qbo.monthly_request_budget is compared with.';

-- Internal: marks requests `p_finished` as finished (their responses were read completely), then
-- admits up to cardinality(p_kinds) new requests for p_realm, of kinds p_kinds in that order
-- (those admitted are the first ones): at most p_per_minute started in any sliding minute (60 s
-- plus a 1 s margin for network delay between here and Intuit's clock), at most p_per_second in
-- any sliding second (1 s plus a 200 ms margin: at 10 a second that still allows 8.3 a second,
-- above the 8.2 a second 500 a minute sustain, so it costs a steady run nothing, and it absorbs
-- the jitter between an admission and the request's arrival, such as a new TLS connection), and at
-- most p_max_in_flight unfinished. With p_budget > 0 the app's requests of the month (UTC) may
-- not pass it: admissions of every realm of app p_client_id are serialised by a transaction
-- advisory lock, and none is admitted once the month's count has reached the budget. The admitted
-- requests are counted in qbo._api_usage and on run p_run_id in this same transaction. Returns
-- the ids admitted and, when none could be, how long to wait; with a budget, month_requests is
-- the app's count of month usage_month (YYYY-MM) after this admission (NULL without one).
-- Requests of processes that are gone (crash, kill) stop counting as in flight. The caller commits.
-- After a restart (p_started: when the server started, the caller passes
-- pg_postmaster_start_time(); NULL: no such pacing) this table may have forgotten the last
-- minute (a crash empties an unlogged table), which QBO still counts: for 61 s after p_started
-- the minute before it is taken as full, its p_per_minute requests spread evenly, so at t seconds
-- after the start at most floor(p_per_minute * t / 61) requests of the realm are admitted in all.
CREATE FUNCTION qbo._api_admit(p_realm text, p_kinds text[], p_per_second int, p_per_minute int,
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

-- Internal: counts one request sent outside the limiter (a token refresh: p_kind 'token') in
-- qbo._api_usage and on run p_run_id. Never refused: a refresh precedes an admission, which
-- enforces the budget.
CREATE FUNCTION qbo._api_count(p_client_id text, p_realm text, p_kind text, p_run_id bigint)
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

-- Internal: marks every request of this process as finished (end of an execution, any outcome).
CREATE FUNCTION qbo._api_release_mine()
RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH r AS (UPDATE qbo._api_requests SET finished_at = clock_timestamp()
                WHERE pid = pg_backend_pid() AND finished_at IS NULL RETURNING 1)
    SELECT count(*)::int FROM r
$fn$;
COMMENT ON FUNCTION qbo._api_release_mine() IS
    'pg_qbo internal: frees the in-flight slots of the calling process (its execution ended).';

-- Internal: a record's SyncToken as a number (-1 when absent or not numeric), for version checks.
-- No SET clause (it would stop the planner from inlining it into the page upsert): every name in
-- it is qualified, and the upsert runs under search_path pg_catalog, pg_temp anyway.
CREATE FUNCTION qbo._sync_token(payload jsonb)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE WHEN (payload OPERATOR(pg_catalog.->>) 'SyncToken') OPERATOR(pg_catalog.~) '^[0-9]{1,18}$'
                THEN (payload OPERATOR(pg_catalog.->>) 'SyncToken')::pg_catalog.int8 ELSE -1 END
$fn$;
COMMENT ON FUNCTION qbo._sync_token(jsonb) IS 'pg_qbo internal: SyncToken of a QBO record as bigint (-1 if missing).';

-- Live progress, for any session (pgAdmin, psql): built only on what runs commit page by page.
-- Liveness comes from the lock, not from qbo.runs.status: a live run holds the session advisory
-- lock (1364414287, run_id & 2147483647, objsubid 2) in its database, and nothing can rewrite
-- qbo.runs while the server is down, so right after a crash and restart a run qbo.runs still calls
-- 'running' shows here as 'interrupted' (qbo.runs itself is corrected by the next pg_qbo call).
-- New columns go at the end: CREATE OR REPLACE VIEW in an update keeps the grants.
CREATE VIEW qbo.progress AS
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
COMMENT ON COLUMN qbo.progress.eta IS 'Estimated time left: from the records read so far against those QuickBooks counted while a window read by offsets is open, else from the chunks done so far; NULL unless the run is alive.';
COMMENT ON COLUMN qbo.progress.state IS 'fetching and upserting, waiting for throttle, backing off, refreshing token, or the final status (interrupted for a run whose process is gone).';
COMMENT ON COLUMN qbo.progress.detail IS 'The last progress note the run committed.';
COMMENT ON COLUMN qbo.progress.started_at IS 'When the run was created.';
COMMENT ON COLUMN qbo.progress.updated_at IS 'Last progress committed.';
COMMENT ON COLUMN qbo.progress.finished_at IS 'When the run stopped.';
COMMENT ON COLUMN qbo.progress.error IS 'Error of a stopped run (for an interrupted one not yet marked in qbo.runs: what happened and how to resume).';
COMMENT ON COLUMN qbo.progress.chunks_running IS 'Chunks being fetched right now (several at once when the window is split).';
COMMENT ON COLUMN qbo.progress.live IS 'Whether a process holds the run''s lock (true only while it is really executing).';

-------------------------------------------------------------------------------------------------
-- Least privilege: helpers a superuser (or the extension owner) runs once per role.
-------------------------------------------------------------------------------------------------
-- Internal: what both grant_* functions give a role: schema usage, SELECT on ledger objects, and
-- SELECT on every table of raw, now and later (raw tables belong to the extension owner, who
-- creates them, and only pg_qbo writes them, as that owner). Write privileges on raw that an
-- earlier pg_qbo granted (operators of 0.1.0 held INSERT and UPDATE) are revoked.
CREATE FUNCTION qbo._grant_common(caller text, role_name name, ledger_objects text)
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
COMMENT ON FUNCTION qbo._grant_common(text, name, text) IS 'pg_qbo internal: the grants qbo.grant_operator and qbo.grant_reader share.';

CREATE FUNCTION qbo.grant_operator(role_name name)
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
COMMENT ON FUNCTION qbo.grant_operator(name) IS
    'pg_qbo: lets a role run backfills and syncs of the connections granted to it with qbo.grant_connection (qbo.backfill, qbo.resume, qbo.start_backfill, qbo.start_resume, qbo.schedule_backfill, CALL qbo.run_*, CALL qbo.run_sync), cancel the runs it started (qbo.cancel), and read raw.*, the ledger and qbo.sync_state; raw.* is written by those backfills only (as the extension owner), never by the role itself. It can never read a secret or token, change qbo.api_base_url/qbo.token_url, or alter the ledger.';

CREATE FUNCTION qbo.grant_connection(connection text, role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r oid := (SELECT x.oid FROM pg_catalog.pg_roles x WHERE x.rolname OPERATOR(pg_catalog.=) role_name);
BEGIN
    IF connection IS NULL OR role_name IS NULL THEN
        RAISE EXCEPTION 'qbo.grant_connection: connection and role_name are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF r IS NULL THEN
        RAISE EXCEPTION 'qbo.grant_connection: role "%" does not exist', role_name USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT EXISTS (SELECT FROM qbo._connections c WHERE c.name OPERATOR(pg_catalog.=) grant_connection.connection) THEN
        RAISE EXCEPTION 'qbo.grant_connection: unknown connection "%" (registered: %)', pg_catalog."left"(connection, 70),
            coalesce((SELECT pg_catalog.string_agg(c.name, ', ' ORDER BY c.name) FROM qbo._connections c), 'none')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO qbo._connection_grants (connection, role_oid) VALUES (grant_connection.connection, r)
    ON CONFLICT DO NOTHING;
END
$fn$;
COMMENT ON FUNCTION qbo.grant_connection(text, name) IS
    'pg_qbo: lets a role (and the roles that inherit its rights) run backfills of one connection; operators need it for every connection they use (superusers and the extension owner may use all). See qbo.connection_grants; undo with qbo.revoke_connection.';

CREATE FUNCTION qbo.revoke_connection(connection text, role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF connection IS NULL OR role_name IS NULL THEN
        RAISE EXCEPTION 'qbo.revoke_connection: connection and role_name are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM qbo._connection_grants g
     WHERE g.connection OPERATOR(pg_catalog.=) revoke_connection.connection
       AND g.role_oid OPERATOR(pg_catalog.=) (SELECT x.oid FROM pg_catalog.pg_roles x WHERE x.rolname OPERATOR(pg_catalog.=) role_name);
END
$fn$;
COMMENT ON FUNCTION qbo.revoke_connection(text, name) IS
    'pg_qbo: takes back qbo.grant_connection; runs already started keep going, new runs and resumes of that role are refused.';

CREATE VIEW qbo.connection_grants AS
SELECT g.connection, g.role_oid::pg_catalog.regrole AS role_name, g.granted_at
FROM qbo._connection_grants g;
REVOKE ALL ON qbo.connection_grants FROM PUBLIC;
COMMENT ON VIEW qbo.connection_grants IS 'pg_qbo: which roles may run backfills of which connection (qbo.grant_connection).';

CREATE FUNCTION qbo.grant_reader(role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM qbo._grant_common('qbo.grant_reader', role_name,
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.entities, qbo.api_usage, qbo.sync_state');
END
$fn$;
COMMENT ON FUNCTION qbo.grant_reader(name) IS
    'pg_qbo: lets a role read raw.* and the run ledger (qbo.runs, run_chunks, run_pages, progress, entities, api_usage, sync_state); nothing else.';
