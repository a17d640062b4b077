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
--   * progress messages and volumetry: qbo.backfill / qbo.resume / qbo.run_resume say in their
--     comments that durations are in milliseconds and add up every attempt and that a run that
--     already succeeded is not resumed; qbo._grant_common creates schema raw only when missing
--     (no "already exists, skipping" NOTICE); qbo.run_pages is no longer relayed page by page.

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
