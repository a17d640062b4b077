-- pg_qbo 0.1.0 -> 0.2.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.2.0 build is installed).
--
-- 0.2.0 is what CREATE EXTENSION pg_qbo creates at 0.2.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.1.0 install to exactly
-- that: the same objects, bodies, comments, ownership, privileges and extension membership
-- (scripts/upgrade-test.sh compares an updated database with a fresh 0.2.0 one).
--
-- What changes:
--   * connection grants: table qbo._connection_grants, qbo._may_use, qbo.grant_connection,
--     qbo.revoke_connection, view qbo.connection_grants; qbo.connections becomes a
--     security_barrier view that shows only the connections the current role may use.
--   * qbo._grant_common / grant_operator / grant_reader: operators read raw.* only, and
--     grant_operator grants EXECUTE on qbo._may_use (qbo.connections calls it).
--   * qbo._sync_token fully qualified; new comments of qbo.grant_operator, qbo.connections,
--     qbo.schedule_backfill.
--   * privileges in one place: table qbo._routine_grants and qbo._routines(); PUBLIC may run only
--     the routines listed 'public', and qbo.grant_operator grants those listed 'operator'.
--   * the privilege fix: 0.1.0's qbo.grant_operator gave operators INSERT and UPDATE on every raw
--     table, now and later (ALTER DEFAULT PRIVILEGES FOR ROLE <extension owner> IN SCHEMA raw,
--     which is 0.1.0's only record of who was made an operator). Those write privileges are
--     revoked, as 0.2.0's qbo._grant_common revokes them; SELECT stays. Roles allowed to run
--     qbo.backfill get EXECUTE on qbo._may_use, as 0.2.0's qbo.grant_operator gives it.
--     Operators then need qbo.grant_connection for each connection they use (0.1.0 let every
--     operator use every connection).
-- No table of 0.1.0 changes: raw.*, the ledger and qbo._connections (with its secrets) are kept.
--
-- Idempotent: it also updates a database created by a pre-release build that already carried
-- 0.2.0's objects under the version 0.1.0 (commit e024112), to the same state. Note PostgreSQL's
-- rule that CREATE ... IF NOT EXISTS in an extension script fails on an existing object that is not
-- a member of the extension (it is never adopted).
--
-- Every GRANT and REVOKE an extension script makes is recorded by PostgreSQL as the object's
-- initial privileges (pg_init_privs), which pg_dump omits because CREATE EXTENSION is expected to
-- recreate them; that holds even for raw.* tables, which are not members. The privilege fix is
-- about roles, not about what CREATE EXTENSION creates, so this script puts pg_init_privs back to
-- what it would be had the fix been made outside the script (a dump then keeps the operators'
-- privileges): rows that existed before keep their values, rows of objects this script creates keep
-- what their creation recorded, rows the fix added are removed.

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.2.0'" to load this file. \quit

CREATE TEMPORARY TABLE pg_temp.pg_qbo_init_privs_before AS
SELECT p.objoid, p.classoid, p.objsubid, p.privtype, p.initprivs FROM pg_catalog.pg_init_privs p;

-------------------------------------------------------------------------------------------------
-- Who may run what (new in 0.2.0): the one list of privileges on pg_qbo's routines
-------------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS qbo._routine_grants (
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
    ('run_resume', 'operator'),
    ('run_scheduled', 'operator'),
    -- the filter of the qbo.connections view, called for the role reading it
    ('_may_use', 'operator')
ON CONFLICT (routine) DO UPDATE SET grantee = EXCLUDED.grantee;
REVOKE ALL ON qbo._routine_grants FROM PUBLIC;
COMMENT ON TABLE qbo._routine_grants IS
    'pg_qbo internal: who may run each routine of pg_qbo (public, operator; the others are for superusers). Applied by the extension script and qbo.grant_operator.';

-- The routines of pg_qbo (members of the extension in schema qbo) with their grantee, NULL for
-- superusers only.
CREATE OR REPLACE FUNCTION qbo._routines()
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
-- Connection grants (new in 0.2.0)
-------------------------------------------------------------------------------------------------

-- Which roles may run backfills of which connection (besides superusers and the extension owner,
-- who may use every connection). A grant to a role covers its members that inherit its rights.
CREATE TABLE IF NOT EXISTS qbo._connection_grants (
    connection text NOT NULL REFERENCES qbo._connections (name) ON DELETE CASCADE ON UPDATE CASCADE,
    role_oid   oid NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, role_oid)
);
REVOKE ALL ON qbo._connection_grants FROM PUBLIC;
COMMENT ON TABLE qbo._connection_grants IS
    'pg_qbo internal: roles granted a connection with qbo.grant_connection (see qbo.connection_grants).';

-- Internal: whether role p_role may run backfills of connection p_connection.
CREATE OR REPLACE FUNCTION qbo._may_use(p_connection text, p_role oid)
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

CREATE OR REPLACE VIEW qbo.connections WITH (security_barrier) AS
SELECT name, realm_id, environment, access_token_expires_at, refresh_token_expires_at,
       last_refresh_at, created_at, updated_at
FROM qbo._connections c
WHERE qbo._may_use(c.name, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER));
COMMENT ON VIEW qbo.connections IS
    'pg_qbo: the registered QuickBooks companies the current role may run backfills of (never shows a secret).';

-- Internal: a record's SyncToken as a number (-1 when absent or not numeric), for version checks.
-- No SET clause (it would stop the planner from inlining it into the page upsert): every name in
-- it is qualified, and the upsert runs under search_path pg_catalog, pg_temp anyway.
CREATE OR REPLACE FUNCTION qbo._sync_token(payload jsonb)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE WHEN (payload OPERATOR(pg_catalog.->>) 'SyncToken') OPERATOR(pg_catalog.~) '^[0-9]{1,18}$'
                THEN (payload OPERATOR(pg_catalog.->>) 'SyncToken')::pg_catalog.int8 ELSE -1 END
$fn$;
COMMENT ON FUNCTION qbo._sync_token(jsonb) IS 'pg_qbo internal: SyncToken of a QBO record as bigint (-1 if missing).';

-------------------------------------------------------------------------------------------------
-- Grant helpers: _grant_common lost its raw_privileges argument (operators read raw.* only)
-------------------------------------------------------------------------------------------------
DROP FUNCTION IF EXISTS qbo._grant_common(text, name, text, text);

-- Internal: what both grant_* functions give a role: schema usage, SELECT on ledger objects, and
-- SELECT on every table of raw, now and later (raw tables belong to the extension owner, who
-- creates them, and only pg_qbo writes them, as that owner). Write privileges on raw that an
-- earlier pg_qbo granted (operators of 0.1.0 held INSERT and UPDATE) are revoked.
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
    EXECUTE pg_catalog.format('CREATE SCHEMA IF NOT EXISTS raw AUTHORIZATION %I', owner);
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA raw TO %I', role_name);
    EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA raw FROM %I', role_name);
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA raw REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES FROM %I', owner, role_name);
    EXECUTE pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA raw TO %I', role_name);
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA raw GRANT SELECT ON TABLES TO %I', owner, role_name);
END
$fn$;
COMMENT ON FUNCTION qbo._grant_common(text, name, text) IS 'pg_qbo internal: the grants qbo.grant_operator and qbo.grant_reader share.';

CREATE OR REPLACE FUNCTION qbo.grant_operator(role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    PERFORM qbo._grant_common('qbo.grant_operator', role_name,
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.connections, qbo.entities');
    FOR f IN SELECT r.routine FROM qbo._routines() r WHERE r.grantee OPERATOR(pg_catalog.=) 'operator' LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %I', f, role_name);
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION qbo.grant_operator(name) IS
    'pg_qbo: lets a role run backfills (qbo.backfill, qbo.resume, qbo.schedule_backfill, CALL qbo.run_*) of the connections granted to it with qbo.grant_connection, and read raw.* and the ledger; raw.* is written by those backfills only (as the extension owner), never by the role itself. It can never read a secret or token, change qbo.api_base_url/qbo.token_url, or alter the ledger.';

CREATE OR REPLACE FUNCTION qbo.grant_connection(connection text, role_name name)
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

CREATE OR REPLACE FUNCTION qbo.revoke_connection(connection text, role_name name)
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

CREATE OR REPLACE VIEW qbo.connection_grants AS
SELECT g.connection, g.role_oid::pg_catalog.regrole AS role_name, g.granted_at
FROM qbo._connection_grants g;
REVOKE ALL ON qbo.connection_grants FROM PUBLIC;
COMMENT ON VIEW qbo.connection_grants IS 'pg_qbo: which roles may run backfills of which connection (qbo.grant_connection).';

CREATE OR REPLACE FUNCTION qbo.grant_reader(role_name name)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM qbo._grant_common('qbo.grant_reader', role_name,
        'qbo.runs, qbo.run_chunks, qbo.run_pages, qbo.progress, qbo.entities');
END
$fn$;
COMMENT ON FUNCTION qbo.grant_reader(name) IS
    'pg_qbo: lets a role read raw.* and the run ledger (qbo.runs, run_chunks, run_pages, progress, entities); nothing else.';

COMMENT ON FUNCTION qbo.schedule_backfill(text, timestamptz, timestamptz, int, int, int, text, timestamptz) IS
    'pg_qbo: schedules a one-time backfill with pg_cron at the first whole minute (GMT) at or after run_at and at least 5 s from now (run_at at most 12 months ahead: pg_cron schedules have no year); returns the pg_cron job id, the run id (status scheduled until it starts) and the minute. The job can never fire again once it starts and is removed from cron.job after it ends, whether the backfill succeeds or fails. statement_timeout bounds the whole CALL.';

-------------------------------------------------------------------------------------------------
-- Raw tables 0.1.0 created (not members of the extension) carry 0.2.0's comment, as if 0.2.0 had
-- created them: the comment says who writes them. A comment a DBA changed is left alone.
-------------------------------------------------------------------------------------------------
DO $comments$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.relname, d.description
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
          JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) c.oid
           AND d.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.objsubid OPERATOR(pg_catalog.=) 0
         WHERE n.nspname OPERATOR(pg_catalog.=) 'raw'
           AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND c.relowner OPERATOR(pg_catalog.=) (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                   WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo')
           AND d.description OPERATOR(pg_catalog.~) '^pg_qbo: QBO [A-Za-z]+ records, one row per \(realm_id, id\), latest version seen\.$'
         ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON TABLE raw.%I IS %L', t.relname,
                                  t.description OPERATOR(pg_catalog.||) ' Written by pg_qbo only (as the extension owner).');
    END LOOP;
END
$comments$;

-------------------------------------------------------------------------------------------------
-- PUBLIC may run only the routines qbo._routine_grants lists as 'public' (as at the end of the
-- 0.2.0 extension script)
-------------------------------------------------------------------------------------------------
DO $privileges$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    FOR f IN SELECT r.routine FROM qbo._routines() r WHERE r.grantee IS DISTINCT FROM 'public' LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
    END LOOP;
END
$privileges$;

-------------------------------------------------------------------------------------------------
-- The privilege fix: operators of 0.1.0 keep reading raw.*, no longer write it
-------------------------------------------------------------------------------------------------
DO $fix$
DECLARE
    ext_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e
                       WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo');
    raw_schema oid := (SELECT n.oid FROM pg_catalog.pg_namespace n
                        WHERE n.nspname OPERATOR(pg_catalog.=) 'raw');
    -- pg_init_privs after the objects above were made, before the fix touches any privilege
    created pg_catalog.pg_init_privs[] := ARRAY(SELECT p FROM pg_catalog.pg_init_privs p);
    r record;
BEGIN
    -- 0.1.0's operators: the roles its qbo.grant_operator gave write privileges on raw tables, now
    -- and later: ALTER DEFAULT PRIVILEGES FOR ROLE <extension owner> IN SCHEMA raw GRANT SELECT,
    -- INSERT, UPDATE is 0.1.0's record of them (qbo.grant_reader gave SELECT only). They lose
    -- every write privilege on raw.*, now and later, as 0.2.0's qbo._grant_common takes them away.
    -- Privileges a DBA gave other roles on raw tables are left alone.
    IF raw_schema IS NOT NULL THEN
        FOR r IN
            SELECT DISTINCT g.rolname
              FROM pg_catalog.pg_default_acl d CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a
              JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
             WHERE d.defaclrole OPERATOR(pg_catalog.=) ext_owner
               AND d.defaclnamespace OPERATOR(pg_catalog.=) raw_schema
               AND d.defaclobjtype OPERATOR(pg_catalog.=) 'r'
               AND a.privilege_type OPERATOR(pg_catalog.<>) 'SELECT'
               AND a.grantee OPERATOR(pg_catalog.<>) ext_owner
             ORDER BY g.rolname
        LOOP
            -- a WARNING: CREATE/ALTER EXTENSION show nothing below WARNING from their scripts
            RAISE WARNING 'pg_qbo 0.2.0: role "%" loses the write privileges pg_qbo 0.1.0 gave it on raw.* (it keeps SELECT)', r.rolname;
            EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA raw FROM %I', r.rolname);
            EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA raw REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES FROM %I',
                                      (SELECT o.rolname FROM pg_catalog.pg_roles o WHERE o.oid OPERATOR(pg_catalog.=) ext_owner), r.rolname);
        END LOOP;
    END IF;

    -- Operators (roles granted qbo.backfill) read qbo.connections, which calls qbo._may_use.
    FOR r IN
        SELECT DISTINCT g.rolname
          FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
          JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
         WHERE p.oid OPERATOR(pg_catalog.=) 'qbo.backfill(pg_catalog.text, pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.text)'::pg_catalog.regprocedure
           AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) ext_owner
         ORDER BY g.rolname
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION qbo._may_use(pg_catalog.text, pg_catalog.oid) TO %I', r.rolname);
        IF NOT EXISTS (SELECT FROM qbo._connection_grants g
                        WHERE g.role_oid OPERATOR(pg_catalog.=) (SELECT x.oid FROM pg_catalog.pg_roles x
                                                                  WHERE x.rolname OPERATOR(pg_catalog.=) r.rolname)) THEN
            RAISE WARNING 'pg_qbo 0.2.0: operator "%" may run backfills only of the connections granted to it, none yet', r.rolname
                USING HINT = pg_catalog.format('A superuser grants each connection it uses: SELECT qbo.grant_connection(''<connection>'', %L);', r.rolname);
        END IF;
    END LOOP;

    -- pg_init_privs as if the fix had been made outside an extension script (see the top).
    DELETE FROM pg_catalog.pg_init_privs p
     WHERE NOT EXISTS (SELECT FROM pg_temp.pg_qbo_init_privs_before b
                        WHERE b.objoid OPERATOR(pg_catalog.=) p.objoid AND b.classoid OPERATOR(pg_catalog.=) p.classoid
                          AND b.objsubid OPERATOR(pg_catalog.=) p.objsubid)
       AND NOT EXISTS (SELECT FROM pg_catalog.unnest(created) c
                        WHERE c.objoid OPERATOR(pg_catalog.=) p.objoid AND c.classoid OPERATOR(pg_catalog.=) p.classoid
                          AND c.objsubid OPERATOR(pg_catalog.=) p.objsubid);
    UPDATE pg_catalog.pg_init_privs p SET privtype = k.privtype, initprivs = k.initprivs
      FROM (SELECT b.objoid, b.classoid, b.objsubid, b.privtype, b.initprivs FROM pg_temp.pg_qbo_init_privs_before b
            UNION ALL
            SELECT c.objoid, c.classoid, c.objsubid, c.privtype, c.initprivs FROM pg_catalog.unnest(created) c
             WHERE NOT EXISTS (SELECT FROM pg_temp.pg_qbo_init_privs_before b
                                WHERE b.objoid OPERATOR(pg_catalog.=) c.objoid AND b.classoid OPERATOR(pg_catalog.=) c.classoid
                                  AND b.objsubid OPERATOR(pg_catalog.=) c.objsubid)) k
     WHERE k.objoid OPERATOR(pg_catalog.=) p.objoid AND k.classoid OPERATOR(pg_catalog.=) p.classoid
       AND k.objsubid OPERATOR(pg_catalog.=) p.objsubid;
END
$fix$;

DROP TABLE pg_temp.pg_qbo_init_privs_before;
