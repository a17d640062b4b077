//! The raw tables (`raw.qb_<entity>`): created on first use (tables of pg_qbo 0.5.0 and before
//! gain the columns of 0.6.0 then), checked for shape and trust before every write, written one
//! page per statement by an upsert that keeps the newest SyncToken, and marked deleted by the
//! tombstones of `qbo.sync` (a deleted record keeps its last payload).

use crate::pg::error::PgError;
use crate::pg::spi::{as_owner, extension_owner, lock_timeout, owner_exec, quiet};
use crate::pg::time::tstz;
use crate::store::locks::{lock_key, WRITE_LOCK_CLASS};
use chrono::{DateTime, Utc};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiResult;
use qbo::entities::Entity;
use qbo::pager::Payload;

/// Raw table columns and the primary key every raw table must have.
const RAW_COLUMNS: &[(&str, &str)] = &[
    ("realm_id", "text"),
    ("id", "text"),
    ("payload", "jsonb"),
    ("ingested_at_utc", "timestamp with time zone"),
    ("extract_window_start_utc", "timestamp with time zone"),
    ("extract_window_end_utc", "timestamp with time zone"),
    ("page_number", "integer"),
    ("page_size", "integer"),
    ("request_payload", "jsonb"),
    ("last_updated_utc", "timestamp with time zone"),
    ("deleted_at_utc", "timestamp with time zone"),
];

/// The columns pg_qbo 0.6.0 added ([`RAW_COLUMNS`]' last two): a table made by 0.5.0 or before
/// lacks them and gains them on first use ([`add_sync_columns`]).
const SYNC_COLUMNS: [&str; 2] = ["last_updated_utc", "deleted_at_utc"];

/// How long adding [`SYNC_COLUMNS`] to an existing table waits for a lock another session holds
/// (an `ALTER TABLE` queued behind a reader also queues every later reader of the table behind it).
const ADD_COLUMNS_LOCK_TIMEOUT: &std::ffi::CStr = c"5s";
/// [`ADD_COLUMNS_LOCK_TIMEOUT`] in a message.
const ADD_COLUMNS_LOCK_WAIT: &str = "5 s";

/// The comments of [`SYNC_COLUMNS`] (a new table's, and those an existing one gains).
fn sync_column_comments(t: &str) -> String {
    format!(
        "COMMENT ON COLUMN raw.{t}.last_updated_utc IS 'MetaData.LastUpdatedTime of this version: when QBO last changed the record.';
         COMMENT ON COLUMN raw.{t}.deleted_at_utc IS 'NULL while the record exists in QBO; once qbo.sync learns it was deleted (a Change Data Capture tombstone, or its deletes hunt), when it was deleted. The payload stays the last version seen before. A later version revives the row (NULL again).';"
    )
}

/// Creates schema `raw` and the entity's table on first use (outside extension membership, so the
/// data outlives `DROP EXTENSION`), or checks that an existing table has the expected shape and
/// can be trusted ([`check_raw_trust`]); a trusted table of pg_qbo 0.5.0 or before then gains the
/// columns of 0.6.0 ([`add_sync_columns`]). Everything runs as the extension owner, whom `raw` and
/// its tables belong to, in the caller's transaction (the caller commits). An `Err` of
/// SQLSTATE 55P03 (another session holds a lock on the table) comes from an ERROR caught midway:
/// the caller rolls back, as after any ERROR.
pub fn ensure_raw_table(entity: &Entity) -> Result<(), PgError> {
    let t = entity.table;
    let internal = |e: pgrx::spi::Error| {
        PgError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("pg_qbo raw table: {e}"),
        )
    };
    // Two runs creating the same table at once would collide in the catalog: serialise the DDL.
    owner_exec(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext('pg_qbo raw ddl'))",
        &[WRITE_LOCK_CLASS.into()],
    )
    .map_err(internal)?;
    let schema_exists = check_raw_schema()?;
    if !schema_exists || !raw_table_exists(t).map_err(internal)? {
        // lz4 compresses a page of 1.5-2 KB payloads several times faster than the default pglz
        // (pglz took a quarter of the backend's CPU on a first load); used when the server has it
        let lz4: bool = as_owner(|| {
            Spi::get_one::<bool>(
                "SELECT coalesce('lz4' OPERATOR(pg_catalog.=) ANY (s.enumvals), false)
                   FROM pg_catalog.pg_settings s WHERE s.name OPERATOR(pg_catalog.=) 'default_toast_compression'",
            )
        })
        .map_err(internal)?
        .unwrap_or(false);
        let compression = if lz4 { " COMPRESSION lz4" } else { "" };
        let owner = pgrx::spi::quote_identifier(owner_name().map_err(internal)?);
        let schema = if schema_exists {
            String::new()
        } else {
            format!(
                "CREATE SCHEMA raw AUTHORIZATION {owner};
                 COMMENT ON SCHEMA raw IS 'pg_qbo: QuickBooks Online records as extracted (one table per entity). Not part of the extension: DROP EXTENSION keeps it.';"
            )
        };
        // the schema and the table are created by the owner for the owner: nothing in them was
        // made by anyone else (check_raw_schema refused a schema someone else made first)
        let ddl = format!(
            "{schema}
             CREATE TABLE raw.{t} (
                 realm_id pg_catalog.text NOT NULL,
                 id pg_catalog.text NOT NULL,
                 payload pg_catalog.jsonb{compression} NOT NULL,
                 ingested_at_utc pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
                 extract_window_start_utc pg_catalog.timestamptz NOT NULL,
                 extract_window_end_utc pg_catalog.timestamptz NOT NULL,
                 page_number pg_catalog.int4,
                 page_size pg_catalog.int4,
                 request_payload pg_catalog.jsonb{compression},
                 last_updated_utc pg_catalog.timestamptz,
                 deleted_at_utc pg_catalog.timestamptz,
                 PRIMARY KEY (realm_id, id));
             CREATE INDEX {t}_ingested_idx ON raw.{t} (ingested_at_utc);
             CREATE INDEX {t}_window_start_idx ON raw.{t} (extract_window_start_utc);
             CREATE INDEX {t}_window_end_idx ON raw.{t} (extract_window_end_utc);
             CREATE INDEX {t}_last_updated_idx ON raw.{t} (realm_id, last_updated_utc);
             COMMENT ON TABLE raw.{t} IS 'pg_qbo: QBO {name} records, one row per (realm_id, id), latest version seen. Written by pg_qbo only (as the extension owner).';
             COMMENT ON COLUMN raw.{t}.realm_id IS 'QuickBooks company id.';
             COMMENT ON COLUMN raw.{t}.id IS 'QBO Id (unique within realm and entity).';
             COMMENT ON COLUMN raw.{t}.payload IS 'The record exactly as QBO sent it.';
             COMMENT ON COLUMN raw.{t}.ingested_at_utc IS 'When this version was written.';
             COMMENT ON COLUMN raw.{t}.extract_window_start_utc IS 'Start of the chunk that fetched this version.';
             COMMENT ON COLUMN raw.{t}.extract_window_end_utc IS 'End (exclusive) of that chunk.';
             COMMENT ON COLUMN raw.{t}.page_number IS 'Page of the chunk that fetched this version.';
             COMMENT ON COLUMN raw.{t}.page_size IS 'MAXRESULTS of that request.';
             COMMENT ON COLUMN raw.{t}.request_payload IS 'The request: query, start position, page size, minor version, environment (never a token).';
             {sync_comments}",
            name = entity.name,
            sync_comments = sync_column_comments(t),
        );
        // quiet: the caller's NOTICEs are the run's progress, not what this DDL may say
        as_owner(|| quiet(|| Spi::run(&ddl))).map_err(internal)?;
        if crate::pg::guc::citus_distribute_raw_tables() && citus_installed()? {
            distribute(entity)?;
        }
    }
    let shape = check_raw_shape(entity)?;
    check_raw_trust(entity)?;
    if shape == RawShape::Before060 {
        // only now: no DDL or UPDATE runs as the owner on a table the trust check refused
        add_sync_columns(entity)?;
        if check_raw_shape(entity)? != RawShape::Current {
            return Err(PgError::internal(format!(
                "pg_qbo raw table: raw.{t} still lacks columns {} after adding them",
                SYNC_COLUMNS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Adds [`SYNC_COLUMNS`] to a raw table of pg_qbo 0.5.0 or before that [`check_raw_trust`]
/// accepted, as the owner and in the caller's transaction: the columns, `last_updated_utc` of the
/// rows already there (from their payloads), its index and the comments. Waits at most
/// [`ADD_COLUMNS_LOCK_TIMEOUT`] for a lock on the table (a long report reading it): then an error
/// of SQLSTATE 55P03 that says to run again, from an ERROR caught midway (the caller rolls back).
/// Rewrites every row of the table once (the UPDATE), holding it locked until the caller commits.
fn add_sync_columns(entity: &Entity) -> Result<(), PgError> {
    let t = entity.table;
    let sql = format!(
        "ALTER TABLE raw.{t} ADD COLUMN IF NOT EXISTS last_updated_utc pg_catalog.timestamptz,
                             ADD COLUMN IF NOT EXISTS deleted_at_utc pg_catalog.timestamptz;
         UPDATE raw.{t}
            SET last_updated_utc = (payload OPERATOR(pg_catalog.->) 'MetaData' OPERATOR(pg_catalog.->>) 'LastUpdatedTime')::pg_catalog.timestamptz;
         CREATE INDEX IF NOT EXISTS {t}_last_updated_idx ON raw.{t} (realm_id, last_updated_utc);
         {}",
        sync_column_comments(t)
    );
    as_owner(|| {
        PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
            // quiet: the caller's NOTICEs are the run's progress, not what this DDL may say
            lock_timeout(ADD_COLUMNS_LOCK_TIMEOUT, || quiet(|| Spi::run(&sql)))
                .map_err(|e| PgError::internal(format!("pg_qbo raw table: adding columns {} to raw.{t}: {e}", SYNC_COLUMNS.join(", "))))
        }))
        .catch_when(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, |_| {
            Err(PgError::new(
                PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                format!(
                    "pg_qbo could not add columns to raw.{t}: pg_qbo 0.6.0 adds columns last_updated_utc and deleted_at_utc to existing raw tables on first use, and another session holds a lock on raw.{t} (waited {ADD_COLUMNS_LOCK_WAIT}). Nothing was changed. Run again once that session is done (pg_locks shows who holds it)"
                ),
            ))
        })
        .execute()
    })
}

/// The extension owner's role name.
fn owner_name() -> SpiResult<String> {
    let owner = extension_owner();
    as_owner(|| {
        Spi::get_one_with_args::<String>(
            "SELECT r.rolname::pg_catalog.text FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) $1",
            &[owner.into()],
        )
    })
    .map(|n| n.unwrap_or_default())
}

/// The owner's name for a message (its OID should the name not be readable).
fn owner_label() -> String {
    owner_name().unwrap_or_else(|e| format!("(oid {}: {e})", extension_owner().to_u32()))
}

fn raw_table_exists(t: &str) -> SpiResult<bool> {
    as_owner(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c
                              JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                             WHERE n.nspname OPERATOR(pg_catalog.=) 'raw' AND c.relname OPERATOR(pg_catalog.=) $1)",
            &[t.into()],
        )
    })
    .map(|v| v.unwrap_or(false))
}

/// Checks the shape of the entity's raw table, and that it can be trusted, if it already exists
/// (reads only). A table of pg_qbo 0.5.0 or before passes: it gains the columns of 0.6.0 when a
/// run executes ([`ensure_raw_table`]).
pub fn check_existing_raw_table(entity: &Entity) -> Result<(), PgError> {
    let internal = |e: pgrx::spi::Error| {
        PgError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("pg_qbo raw table: {e}"),
        )
    };
    if check_raw_schema()? && raw_table_exists(entity.table).map_err(internal)? {
        check_raw_shape(entity)?;
        check_raw_trust(entity)
    } else {
        Ok(())
    }
}

/// Schema `raw`, when it exists, must belong to the extension owner: a schema's owner may drop,
/// rename or replace anything in it, so pg_qbo would otherwise write (as its owner) into tables
/// another role controls. `Ok(false)`: there is no schema `raw` yet.
fn check_raw_schema() -> Result<bool, PgError> {
    let owner = extension_owner();
    // one row whether or not the schema exists (NULLs when it does not)
    let found = as_owner(|| {
        Spi::get_two_with_args::<bool, String>(
            "SELECT n.nspowner OPERATOR(pg_catalog.=) $1, pg_catalog.pg_get_userbyid(n.nspowner)::pg_catalog.text
               FROM (VALUES (1)) AS one (x)
               LEFT JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) 'raw'",
            &[owner.into()],
        )
    });
    match found {
        Ok((Some(false), Some(who))) => Err(PgError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "schema raw is owned by role \"{who}\", not by pg_qbo's owner \"{}\": pg_qbo writes raw tables as its owner and trusts nothing another role controls. Review what is in raw, then ALTER SCHEMA raw OWNER TO \"{0}\" (and ALTER TABLE ... OWNER TO \"{0}\" for its raw.qb_* tables) as a superuser, or rename it and let pg_qbo create a new one",
                owner_label()
            ),
        )),
        Ok((owned, _)) => Ok(owned.is_some()),
        Err(e) => Err(PgError::db("pg_qbo raw schema", e)),
    }
}

/// Whether pg_qbo may write `raw.<table>` as its owner. The table must be a plain table owned by
/// the extension owner, with no rules, no role but trusted ones holding TRIGGER on it, and every
/// function that an INSERT or UPDATE of it can run (triggers, defaults, generated columns,
/// constraints, index expressions and predicates, operator classes of its indexes, policies,
/// domains of its columns, operators any of them use: whatever `pg_depend` reaches from them)
/// owned by a superuser or the extension owner. A DBA's own audit trigger (owned by a superuser)
/// or an extension's internal triggers pass; a function planted by another role does not, since
/// it would run with the owner's rights. Reads the catalogs only.
pub fn check_raw_trust(entity: &Entity) -> Result<(), PgError> {
    let t = entity.table;
    let owner = extension_owner();
    let problems: Vec<String> = as_owner(|| {
        Spi::get_one_with_args::<Vec<String>>(RAW_TRUST_SQL, &[t.into(), owner.into()])
    })
    .map_err(|e| PgError::db("pg_qbo raw table trust check", e))?
    .unwrap_or_default();
    if problems.is_empty() {
        return Ok(());
    }
    Err(PgError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "pg_qbo will not write raw.{t}: it writes raw tables as its owner \"{}\", and {}. Nothing was written. Remove what another role attached (or, after reviewing it, have a superuser take ownership of it), then run again",
            owner_label(),
            problems.join("; ")
        ),
    ))
}

/// The problems [`check_raw_trust`] reports for raw table `$1` and extension owner `$2` (an empty
/// array when there are none). Runs under [`SAFE_SEARCH_PATH`]; everything is qualified anyway.
const RAW_TRUST_SQL: &str = "
WITH RECURSIVE
tbl AS (
    SELECT c.oid, c.relowner, c.relkind, c.relhasrules, c.relacl
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE n.nspname OPERATOR(pg_catalog.=) 'raw' AND c.relname OPERATOR(pg_catalog.=) $1),
trusted AS (
    SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper OR r.oid OPERATOR(pg_catalog.=) $2),
-- Walked from the table through the catalogs' indexes, one level at a time: cost grows with
-- what the table reaches, not with the size of pg_depend.
reached (classid, objid, via) AS (
    -- what is attached to the table: each can run code when a row is inserted or updated
    SELECT a.classid, a.objid, pg_catalog.pg_describe_object(a.classid, a.objid, 0)
      FROM tbl CROSS JOIN LATERAL (
        SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass::pg_catalog.oid, d.oid FROM pg_catalog.pg_attrdef d
         WHERE d.adrelid OPERATOR(pg_catalog.=) tbl.oid
        UNION ALL
        SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass::pg_catalog.oid, k.oid FROM pg_catalog.pg_constraint k
         WHERE k.conrelid OPERATOR(pg_catalog.=) tbl.oid
        UNION ALL
        SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, i.indexrelid FROM pg_catalog.pg_index i
         WHERE i.indrelid OPERATOR(pg_catalog.=) tbl.oid
        UNION ALL
        SELECT 'pg_catalog.pg_trigger'::pg_catalog.regclass::pg_catalog.oid, g.oid FROM pg_catalog.pg_trigger g
         WHERE g.tgrelid OPERATOR(pg_catalog.=) tbl.oid
        UNION ALL
        SELECT 'pg_catalog.pg_policy'::pg_catalog.regclass::pg_catalog.oid, p.oid FROM pg_catalog.pg_policy p
         WHERE p.polrelid OPERATOR(pg_catalog.=) tbl.oid
        UNION ALL
        SELECT 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid, t.atttypid FROM pg_catalog.pg_attribute t
         WHERE t.attrelid OPERATOR(pg_catalog.=) tbl.oid AND t.attnum OPERATOR(pg_catalog.>) 0
           AND NOT t.attisdropped) AS a (classid, objid)
    UNION
    SELECT e.classid, e.objid, r.via
      FROM reached r CROSS JOIN LATERAL (
        -- whatever the object references: functions of a trigger, default, constraint, index
        -- or policy, the function of an operator, a type's functions and base type, an index's
        -- operator classes and their families, functions and types a function's body uses
        SELECT d.refclassid, d.refobjid FROM pg_catalog.pg_depend d
         WHERE d.classid OPERATOR(pg_catalog.=) r.classid AND d.objid OPERATOR(pg_catalog.=) r.objid
           AND d.deptype OPERATOR(pg_catalog.<>) 'e'
        UNION ALL
        -- a domain runs its constraints
        SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass::pg_catalog.oid, k.oid FROM pg_catalog.pg_constraint k
         WHERE r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid AND k.contypid OPERATOR(pg_catalog.=) r.objid
        UNION ALL
        -- an index runs the support functions and operators of its operator families
        SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, ap.amproc FROM pg_catalog.pg_amproc ap
         WHERE r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_opfamily'::pg_catalog.regclass::pg_catalog.oid AND ap.amprocfamily OPERATOR(pg_catalog.=) r.objid
        UNION ALL
        SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass::pg_catalog.oid, ao.amopopr FROM pg_catalog.pg_amop ao
         WHERE r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_opfamily'::pg_catalog.regclass::pg_catalog.oid AND ao.amopfamily OPERATOR(pg_catalog.=) r.objid
      ) AS e (classid, objid)
     -- what is attached to the table depends on it in turn: never walk back into it
     WHERE NOT (e.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid
                AND e.objid OPERATOR(pg_catalog.=) ANY (SELECT tbl.oid FROM tbl))),
owned (what, via, owner) AS (
    -- each object once, named with the first thing attached to the table that reaches it
    SELECT DISTINCT ON (1) pg_catalog.pg_describe_object(r.classid, r.objid, 0), r.via,
           coalesce(f.proowner, o.oprowner, y.typowner, m.opfowner)
      FROM reached r
      LEFT JOIN pg_catalog.pg_proc f
             ON r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid
            AND f.oid OPERATOR(pg_catalog.=) r.objid
      LEFT JOIN pg_catalog.pg_operator o
             ON r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass::pg_catalog.oid
            AND o.oid OPERATOR(pg_catalog.=) r.objid
      LEFT JOIN pg_catalog.pg_type y
             ON r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid
            AND y.oid OPERATOR(pg_catalog.=) r.objid
      LEFT JOIN pg_catalog.pg_opfamily m
             ON r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_opfamily'::pg_catalog.regclass::pg_catalog.oid
            AND m.oid OPERATOR(pg_catalog.=) r.objid
     ORDER BY 1, 2),
problems (ord, line) AS (
    SELECT 1, pg_catalog.format('raw.%I is owned by role %I, not by pg_qbo''s owner (ALTER TABLE raw.%I OWNER TO %I after reviewing it)',
                                $1, pg_catalog.pg_get_userbyid(tbl.relowner), $1, pg_catalog.pg_get_userbyid($2))
      FROM tbl WHERE tbl.relowner OPERATOR(pg_catalog.<>) $2
    UNION ALL
    SELECT 2, pg_catalog.format('raw.%I is not a plain table (relkind %s)', $1, tbl.relkind)
      FROM tbl WHERE tbl.relkind OPERATOR(pg_catalog.<>) 'r'
    UNION ALL
    SELECT 3, pg_catalog.format('raw.%I has rules (DROP RULE ... ON raw.%I)', $1, $1)
      FROM tbl WHERE tbl.relhasrules
    UNION ALL
    SELECT 4, pg_catalog.format('role %s may create triggers on raw.%I (REVOKE TRIGGER ON raw.%I FROM %s)',
                                x.who, $1, $1, x.who)
      FROM (SELECT DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS who
              FROM tbl, pg_catalog.aclexplode(tbl.relacl) a
             WHERE a.privilege_type OPERATOR(pg_catalog.=) 'TRIGGER'
               AND a.grantee OPERATOR(pg_catalog.<>) ALL (SELECT t.oid FROM trusted t)) x
    UNION ALL
    SELECT 5, pg_catalog.format('%s (reached from %s) is owned by role %I, which is neither a superuser nor pg_qbo''s owner',
                                w.what,
                                CASE WHEN w.via IS NULL OR w.via OPERATOR(pg_catalog.=) w.what
                                     THEN pg_catalog.format('the table raw.%I', $1) ELSE w.via END,
                                pg_catalog.pg_get_userbyid(w.owner))
      FROM owned w
     WHERE w.owner IS NOT NULL AND w.owner OPERATOR(pg_catalog.<>) ALL (SELECT t.oid FROM trusted t))
SELECT pg_catalog.array_agg(p.line ORDER BY p.ord, p.line) FILTER (WHERE p.line IS NOT NULL) FROM problems p";

/// What [`check_raw_shape`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawShape {
    /// Every column of [`RAW_COLUMNS`] and the primary key.
    Current,
    /// The shape of pg_qbo 0.5.0 and before: the same without [`SYNC_COLUMNS`] (neither column
    /// there, under any type), which [`ensure_raw_table`] adds.
    Before060,
}

/// The shape of the entity's raw table: [`RawShape`], or an error for any other shape.
fn check_raw_shape(entity: &Entity) -> Result<RawShape, PgError> {
    let t = entity.table;
    let (cols, pk): (Option<Vec<String>>, Option<Vec<String>>) = as_owner(|| {
        Spi::get_two_with_args(
            "SELECT (SELECT pg_catalog.array_agg(a.attname OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)
                                                 pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                       FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0
                        AND NOT a.attisdropped),
                    (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.ord)
                       FROM pg_catalog.pg_index i
                       CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, ord)
                       JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                                     AND a.attnum OPERATOR(pg_catalog.=) k.attnum
                      WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisprimary)
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE n.nspname OPERATOR(pg_catalog.=) 'raw' AND c.relname OPERATOR(pg_catalog.=) $1",
            &[t.into()],
        )
    })
    .map_err(|e| PgError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("pg_qbo raw table: {e}")))?;
    let cols = cols.unwrap_or_default();
    let pk = pk.unwrap_or_default();
    let missing: Vec<&(&str, &str)> = RAW_COLUMNS
        .iter()
        .filter(|(n, ty)| !cols.iter().any(|c| c == &format!("{n} {ty}")))
        .collect();
    if pk == ["realm_id", "id"] {
        if missing.is_empty() {
            return Ok(RawShape::Current);
        }
        // both columns of 0.6.0 missing, and no column of their names under another type (each
        // entry of `cols` is "name type")
        let named = |n: &str| {
            cols.iter()
                .any(|c| c.split_once(' ').is_some_and(|(a, _)| a == n))
        };
        if missing.iter().map(|(n, _)| *n).eq(SYNC_COLUMNS)
            && !SYNC_COLUMNS.iter().any(|n| named(n))
        {
            return Ok(RawShape::Before060);
        }
    }
    let missing: Vec<String> = missing.iter().map(|(n, ty)| format!("{n} {ty}")).collect();
    Err(PgError::new(PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE, format!(
        "table raw.{t} already exists with another shape (primary key ({}); missing or different columns: {}); pg_qbo needs primary key (realm_id, id) and columns {}. Rename the old table (ALTER TABLE raw.{t} RENAME TO {t}_old) and run the backfill again, then copy what you need from the old table",
        pk.join(", "),
        if missing.is_empty() { "none".to_owned() } else { missing.join(", ") },
        RAW_COLUMNS.iter().map(|(n, ty)| format!("{n} {ty}")).collect::<Vec<_>>().join(", ")
    )))
}

/// One page's records, ready for the upsert: one entry per record in each, in the same order.
pub struct PageRows {
    pub ids: Vec<String>,
    pub payloads: Vec<Payload>,
    pub sync_tokens: Vec<i64>,
    /// Each record's `MetaData.LastUpdatedTime`.
    pub last_updated: Vec<DateTime<Utc>>,
}

/// Whether the current database's encoding is UTF-8 (the network thread then writes records
/// as jsonb bytes, whose strings are UTF-8).
pub fn database_is_utf8() -> bool {
    // SAFETY: on the backend's own thread, connected to a database (this runs only under an SQL
    // entry point or in a connected worker): GetDatabaseEncoding reads the encoding the backend
    // set when it connected.
    unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 }
}

/// The jsonb datum of a JSON text, from PostgreSQL's own `jsonb_in` (raises its error).
pub fn jsonb_in(text: &str) -> Result<pg_sys::Datum, PgError> {
    let c = std::ffi::CString::new(text)
        .map_err(|_| PgError::internal("a record's JSON text contains a NUL byte"))?;
    // jsonb_in copies what it keeps: the CString may go once it returns
    // SAFETY: on the backend's own thread, in a transaction; `c` is NUL-terminated and alive for
    // the call, and jsonb_in only reads it (the `*mut` is C's `char *`, nothing writes through
    // it). F_JSONB_IN is jsonb's input function, called with jsonb's own type oid and typmod -1;
    // a bad text raises an ERROR, which pgrx's guard turns into a Rust panic. The result is a
    // fresh jsonb varlena palloc'd in the current memory context.
    Ok(unsafe {
        pg_sys::OidInputFunctionCall(
            pg_sys::Oid::from(pg_sys::F_JSONB_IN),
            c.as_ptr().cast_mut(),
            pg_sys::JSONBOID,
            -1,
        )
    })
}

/// The page's payloads as one `jsonb[]` (in the current memory context): bytes the network
/// thread already wrote are copied in as they are, texts go through `jsonb_in`.
fn jsonb_array(payloads: &[Payload]) -> Result<pg_sys::Datum, PgError> {
    let mut datums: Vec<pg_sys::Datum> = Vec::with_capacity(payloads.len());
    for p in payloads {
        datums.push(match p {
            // a complete, uncompressed varlena with a 4-byte header: construct_array reads it
            // in place (VARSIZE, then a copy into the array)
            Payload::Jsonb(b) => pg_sys::Datum::from(b.as_ptr()),
            Payload::Text(t) => jsonb_in(t.get())?,
        });
    }
    let n = i32::try_from(datums.len()).map_err(|_| PgError::internal("page too large"))?;
    // SAFETY: on the backend's own thread, in a transaction. `datums` holds `n` pointers to
    // complete, uncompressed jsonb varlenas: jsonb_in's results in the current memory context,
    // or the network thread's bytes (4-byte header, written by qbo::jsonb::encode, whose output
    // the pgrx tests compare byte for byte with jsonb_in's) in `payloads`, borrowed for this
    // whole function; their boxes come from malloc (the global allocator), whose blocks are
    // aligned for the 4-byte header reads, though `Box<[u8]>` as a type promises only 1. The
    // element arguments are jsonb's: typlen -1 (varlena), not by value, int alignment.
    // construct_array copies every element into a new array in the current memory context and
    // keeps no pointer to `datums` or to the boxes.
    let arr = unsafe {
        pg_sys::construct_array(
            datums.as_mut_ptr(),
            n,
            pg_sys::JSONBOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        )
    };
    Ok(pg_sys::Datum::from(arr))
}

/// Counts of one page's upsert.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpsertCounts {
    pub inserted: i64,
    pub updated: i64,
}

/// Writes one page in one statement. Ids must be distinct and sorted (the executor sorts them by
/// their bytes and rows go in in that order; an ORDER BY, a collation-aware sort of every page's
/// Ids, was 5% of a load's CPU), so concurrent runs take row locks in one order. Runs on one
/// (realm, entity) are serialised by a transaction advisory lock, which makes the "unchanged"
/// pre-filter exact. A row is written when it is new, has a higher SyncToken, or the same
/// SyncToken with a different payload; stale and unchanged rows are not touched (a re-run writes
/// nothing). A row marked deleted ([`apply_tombstones`]) is written only by a version whose
/// LastUpdatedTime is later than its deletion, which revives it (counted as updated): a late page
/// holding the version from before the deletion never does.
#[allow(clippy::too_many_arguments)]
pub fn upsert_page(
    entity: &Entity,
    realm: &str,
    rows: PageRows,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    page_number: i32,
    page_size: i32,
    request_payload: &str,
) -> Result<UpsertCounts, PgError> {
    if rows.ids.is_empty() {
        return Ok(UpsertCounts::default());
    }
    // Citus would carry a page to the shard, back, and to the shard again with upsert_sql
    let distributed = citus_statements(entity.table)?;
    // everything is built inside the SPI connection: its memory context (the page's arrays,
    // a megabyte or two) is freed when the connection closes, after each page. It runs as the
    // extension owner (roles that run backfills hold no write privilege on raw tables), on a
    // table `check_raw_trust` accepted when the execution started.
    as_owner(|| {
        Spi::connect_mut(|c| -> Result<UpsertCounts, PgError> {
            let spi = |e: pgrx::spi::SpiError| {
                PgError::db(&format!("pg_qbo upsert into raw.{}", entity.table), e)
            };
            lock_writes(c, realm, entity).map_err(spi)?;
            let payloads = jsonb_array(&rows.payloads)?;
            let last_updated: Vec<_> = rows.last_updated.into_iter().map(tstz).collect();
            let plan = if distributed {
                kept_plan(
                    c,
                    &UPSERT_DIST_PLANS,
                    entity.table,
                    "upsert into",
                    upsert_sql_distributed,
                    &UPSERT_TYPES,
                )?
            } else {
                kept_plan(
                    c,
                    &UPSERT_PLANS,
                    entity.table,
                    "upsert into",
                    upsert_sql,
                    &UPSERT_TYPES,
                )?
            };
            let row = c
                .update(
                    plan,
                    Some(1),
                    &[
                        rows.ids.into(),
                        // SAFETY: `payloads` is the jsonb[] that jsonb_array just built (an
                        // array of JSONBOID elements, so of type JSONBARRAYOID) in this SPI
                        // connection's memory context, which outlives the statement
                        unsafe { DatumWithOid::new(payloads, pg_sys::JSONBARRAYOID) },
                        rows.sync_tokens.into(),
                        realm.into(),
                        tstz(window_start).into(),
                        tstz(window_end).into(),
                        page_number.into(),
                        page_size.into(),
                        request_payload.into(),
                        last_updated.into(),
                    ],
                )
                .map_err(spi)?
                .first();
            let (ins, upd) = row.get_two::<i64, i64>().map_err(spi)?;
            Ok(UpsertCounts {
                inserted: ins.unwrap_or(0),
                updated: upd.unwrap_or(0),
            })
        })
    })
}

/// Takes the transaction advisory lock serialising writes of (realm, entity): the page upsert and
/// the tombstones.
fn lock_writes(c: &mut pgrx::spi::SpiClient<'_>, realm: &str, entity: &Entity) -> SpiResult<()> {
    c.update(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))",
        None,
        &[
            WRITE_LOCK_CLASS.into(),
            lock_key(WRITE_LOCK_CLASS, &format!("{realm}/{}", entity.name)).into(),
        ],
    )
    .map(|_| ())
}

/// Statements prepared once per backend and raw table.
type KeptPlans = std::cell::RefCell<
    std::collections::HashMap<&'static str, &'static pgrx::spi::OwnedPreparedStatement>,
>;

thread_local! {
    /// The page upsert of each raw table, prepared once per backend (planning its CTEs on every
    /// page was about 4 % of a load). Kept plans are revalidated by the plan cache when the
    /// table or a function changes, and the permissions of whoever runs them (the extension
    /// owner) are checked at every execution. Prepared and always run under
    /// [`SAFE_SEARCH_PATH`], so the cache never replans for a path either. Never freed: a plan
    /// freed during backend exit could raise.
    static UPSERT_PLANS: KeptPlans = KeptPlans::default();
    /// The tombstone update of each raw table ([`apply_tombstones`]), kept as [`UPSERT_PLANS`].
    static TOMBSTONE_PLANS: KeptPlans = KeptPlans::default();
    /// The same for a raw table Citus distributes ([`tombstone_sql_distributed`]).
    static TOMBSTONE_DIST_PLANS: KeptPlans = KeptPlans::default();
    /// The page upsert of a raw table Citus distributes ([`upsert_sql_distributed`]).
    static UPSERT_DIST_PLANS: KeptPlans = KeptPlans::default();
}

/// Parameter types of [`upsert_sql`].
const UPSERT_TYPES: [pg_sys::Oid; 10] = [
    pg_sys::TEXTARRAYOID,
    pg_sys::JSONBARRAYOID,
    pg_sys::INT8ARRAYOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT4OID,
    pg_sys::INT4OID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZARRAYOID,
];

/// Parameter types of [`tombstone_sql`].
const TOMBSTONE_TYPES: [pg_sys::Oid; 3] = [
    pg_sys::TEXTARRAYOID,
    pg_sys::TIMESTAMPTZARRAYOID,
    pg_sys::TEXTOID,
];

/// The statement `sql(table)` of `table` kept in `plans` (see [`UPSERT_PLANS`]), prepared on first
/// use with parameter types `types`; `what` names it in an error (`upsert into`).
fn kept_plan(
    c: &pgrx::spi::SpiClient<'_>,
    plans: &'static std::thread::LocalKey<KeptPlans>,
    table: &'static str,
    what: &str,
    sql: fn(&str) -> String,
    types: &[pg_sys::Oid],
) -> Result<&'static pgrx::spi::OwnedPreparedStatement, PgError> {
    if let Some(p) = plans.with(|m| m.borrow().get(table).copied()) {
        return Ok(p);
    }
    use pgrx::PgOid;
    let types: Vec<PgOid> = types.iter().copied().map(PgOid::from).collect();
    let sql = sql(table);
    let plan = c
        .prepare_mut(sql.as_str(), &types)
        .map_err(|e| PgError::db(&format!("pg_qbo {what} raw.{table}"), e))?
        .keep();
    let plan: &'static pgrx::spi::OwnedPreparedStatement = Box::leak(Box::new(plan));
    plans.with(|m| m.borrow_mut().insert(table, plan));
    Ok(plan)
}

/// The upsert of one page into `raw.<table>`: `$1` Ids, `$2` payloads (jsonb), `$3` SyncTokens,
/// `$4` realm, `$5`/`$6` window, `$7` page number, `$8` page size, `$9` request payload, `$10`
/// LastUpdatedTimes; returns (inserted, updated). A live row (`deleted_at_utc` NULL) is written
/// when the incoming SyncToken is higher, or equal with another payload; a row marked deleted only
/// by a version last updated after its deletion, which clears `deleted_at_utc` (a revival).
pub fn upsert_sql(t: &str) -> String {
    format!(
        "WITH incoming AS (
             -- set-returning functions in the select list run in lockstep (the arrays have one
             -- length) and stream their rows; unnest(a, b, c) in FROM copied every row of the
             -- page into a tuplestore first (about 5 % of a load's samples)
             SELECT pg_catalog.unnest($1::pg_catalog.text[]) AS id,
                    pg_catalog.unnest($2::pg_catalog.jsonb[]) AS payload,
                    pg_catalog.unnest($3::pg_catalog.int8[]) AS sync,
                    pg_catalog.unnest($10::pg_catalog.timestamptz[]) AS last_updated),
         changed AS (
             -- a scalar subquery, not a join: always one primary-key probe per incoming row,
             -- whatever the table's statistics say (a join planned on a freshly truncated or
             -- never-analyzed table hashed the whole table for every page). LIMIT 1 states what
             -- the key guarantees: without statistics the planner guessed more rows per probe
             -- the bigger the table grew, until the statement cost enough to be JIT-compiled
             -- (and inlined, optimized) on every page, most of a 1M-record load's CPU.
             -- The same rule as the ON CONFLICT's WHERE below.
             SELECT n.* FROM incoming n
              WHERE (SELECT CASE WHEN cur.deleted_at_utc IS NOT NULL
                                 THEN n.last_updated OPERATOR(pg_catalog.>) cur.deleted_at_utc
                                 ELSE NOT (qbo._sync_token(cur.payload) OPERATOR(pg_catalog.>) n.sync
                                           OR (qbo._sync_token(cur.payload) OPERATOR(pg_catalog.=) n.sync
                                               AND cur.payload OPERATOR(pg_catalog.=) n.payload)) END
                       FROM raw.{t} cur
                      WHERE cur.realm_id OPERATOR(pg_catalog.=) $4 AND cur.id OPERATOR(pg_catalog.=) n.id
                      LIMIT 1) IS NOT FALSE),
         written AS (
             INSERT INTO raw.{t} AS r (realm_id, id, payload, ingested_at_utc, extract_window_start_utc,
                                      extract_window_end_utc, page_number, page_size, request_payload,
                                      last_updated_utc)
             SELECT $4, c.id, c.payload, pg_catalog.now(), $5, $6, $7, $8, $9::pg_catalog.jsonb, c.last_updated
               FROM changed c
             ON CONFLICT (realm_id, id) DO UPDATE
                SET payload = EXCLUDED.payload, ingested_at_utc = EXCLUDED.ingested_at_utc,
                    extract_window_start_utc = EXCLUDED.extract_window_start_utc,
                    extract_window_end_utc = EXCLUDED.extract_window_end_utc,
                    page_number = EXCLUDED.page_number, page_size = EXCLUDED.page_size,
                    request_payload = EXCLUDED.request_payload,
                    last_updated_utc = EXCLUDED.last_updated_utc, deleted_at_utc = NULL
              -- a row marked deleted: only a version last updated after the deletion (the
              -- tombstone wins a tie, as in apply_tombstones); a live one: the SyncToken rule
              WHERE CASE WHEN r.deleted_at_utc IS NOT NULL
                         THEN EXCLUDED.last_updated_utc OPERATOR(pg_catalog.>) r.deleted_at_utc
                         ELSE qbo._sync_token(EXCLUDED.payload) OPERATOR(pg_catalog.>) qbo._sync_token(r.payload)
                              OR (qbo._sync_token(EXCLUDED.payload) OPERATOR(pg_catalog.=) qbo._sync_token(r.payload)
                                  AND NOT (EXCLUDED.payload OPERATOR(pg_catalog.=) r.payload)) END
             RETURNING (r.xmax OPERATOR(pg_catalog.=) 0) AS inserted)
         SELECT pg_catalog.count(*) FILTER (WHERE w.inserted), pg_catalog.count(*) FILTER (WHERE NOT w.inserted)
           FROM written w"
    )
}

/// [`upsert_sql`] for a raw table Citus distributes: the same parameters, rule and result, in one
/// `INSERT ... ON CONFLICT ... WHERE` of every incoming record. On a distributed table Citus runs
/// [`upsert_sql`]'s probe of the changed records on the shard, pulls them back to the coordinator
/// and sends them to the shard again (`EXPLAIN`: "pull to coordinator"); here the page goes to the
/// shard once, the rule applied there by the conflict's `WHERE` (`qbo._sync_token` exists on the
/// workers: Citus creates pg_qbo there too). A record the rule keeps out is not written either way.
pub fn upsert_sql_distributed(t: &str) -> String {
    format!(
        "WITH written AS (
             INSERT INTO raw.{t} AS r (realm_id, id, payload, ingested_at_utc, extract_window_start_utc,
                                      extract_window_end_utc, page_number, page_size, request_payload,
                                      last_updated_utc)
             SELECT $4, n.id, n.payload, pg_catalog.now(), $5, $6, $7, $8, $9::pg_catalog.jsonb, n.last_updated
               FROM (SELECT pg_catalog.unnest($1::pg_catalog.text[]) AS id,
                            pg_catalog.unnest($2::pg_catalog.jsonb[]) AS payload,
                            pg_catalog.unnest($3::pg_catalog.int8[]) AS sync,
                            pg_catalog.unnest($10::pg_catalog.timestamptz[]) AS last_updated) n
             ON CONFLICT (realm_id, id) DO UPDATE
                SET payload = EXCLUDED.payload, ingested_at_utc = EXCLUDED.ingested_at_utc,
                    extract_window_start_utc = EXCLUDED.extract_window_start_utc,
                    extract_window_end_utc = EXCLUDED.extract_window_end_utc,
                    page_number = EXCLUDED.page_number, page_size = EXCLUDED.page_size,
                    request_payload = EXCLUDED.request_payload,
                    last_updated_utc = EXCLUDED.last_updated_utc, deleted_at_utc = NULL
              WHERE CASE WHEN r.deleted_at_utc IS NOT NULL
                         THEN EXCLUDED.last_updated_utc OPERATOR(pg_catalog.>) r.deleted_at_utc
                         ELSE qbo._sync_token(EXCLUDED.payload) OPERATOR(pg_catalog.>) qbo._sync_token(r.payload)
                              OR (qbo._sync_token(EXCLUDED.payload) OPERATOR(pg_catalog.=) qbo._sync_token(r.payload)
                                  AND NOT (EXCLUDED.payload OPERATOR(pg_catalog.=) r.payload)) END
             RETURNING (r.xmax OPERATOR(pg_catalog.=) 0) AS inserted)
         SELECT pg_catalog.count(*) FILTER (WHERE w.inserted), pg_catalog.count(*) FILTER (WHERE NOT w.inserted)
           FROM written w"
    )
}

/// Marks the rows of `ids` in `raw.<entity>` of `realm` deleted, each at its time in `deleted_at`
/// (same order; for an Id given twice the latest time counts), in one statement as the owner,
/// under the lock [`upsert_page`] takes. A row is marked only if it exists, is not marked already,
/// and its version was last updated at or before the deletion (the newer of the live version and
/// the tombstone wins, as in the upsert); it keeps its payload. A tombstone of an Id the table
/// does not hold writes nothing: raw holds only records pg_qbo has seen live (one created and
/// deleted between two syncs leaves no row). Returns the number of rows marked.
pub fn apply_tombstones(
    entity: &Entity,
    realm: &str,
    ids: &[String],
    deleted_at: &[DateTime<Utc>],
) -> Result<i64, PgError> {
    if ids.len() != deleted_at.len() {
        return Err(PgError::internal(format!(
            "pg_qbo tombstones of raw.{}: {} Ids but {} deletion times",
            entity.table,
            ids.len(),
            deleted_at.len()
        )));
    }
    // sorted by their bytes, one per Id with its latest time: rows are probed, and locked, in
    // the order of the page upsert
    let mut tombs: Vec<(&str, DateTime<Utc>)> = ids
        .iter()
        .map(String::as_str)
        .zip(deleted_at.iter().copied())
        .collect();
    tombs.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    tombs.dedup_by(|later, first| later.0 == first.0);
    if tombs.is_empty() {
        return Ok(0);
    }
    let (ids, times): (Vec<&str>, Vec<_>) =
        tombs.into_iter().map(|(id, at)| (id, tstz(at))).unzip();
    // Citus cannot plan the update by ctid on a distributed table
    let distributed = citus_statements(entity.table)?;
    // as the owner, on a table `check_raw_trust` accepted when the execution started
    as_owner(|| {
        Spi::connect_mut(|c| -> Result<i64, PgError> {
            let spi = |e: pgrx::spi::SpiError| {
                PgError::db(&format!("pg_qbo tombstones of raw.{}", entity.table), e)
            };
            lock_writes(c, realm, entity).map_err(spi)?;
            let plan = if distributed {
                kept_plan(
                    c,
                    &TOMBSTONE_DIST_PLANS,
                    entity.table,
                    "tombstones of",
                    tombstone_sql_distributed,
                    &TOMBSTONE_TYPES,
                )?
            } else {
                kept_plan(
                    c,
                    &TOMBSTONE_PLANS,
                    entity.table,
                    "tombstones of",
                    tombstone_sql,
                    &TOMBSTONE_TYPES,
                )?
            };
            let marked = c
                .update(plan, Some(1), &[ids.into(), times.into(), realm.into()])
                .map_err(spi)?
                .first()
                .get_one::<i64>()
                .map_err(spi)?;
            Ok(marked.unwrap_or(0))
        })
    })
}

/// Whether `raw.<entity>` exists (schema and table).
pub fn raw_table_is_there(entity: &Entity) -> Result<bool, PgError> {
    let internal = |e: pgrx::spi::Error| PgError::internal(format!("pg_qbo raw table: {e}"));
    Ok(check_raw_schema()? && raw_table_exists(entity.table).map_err(internal)?)
}

/// The rows of `raw.<entity>`.
pub fn row_count(entity: &Entity) -> Result<i64, PgError> {
    let t = entity.table;
    as_owner(|| Spi::get_one::<i64>(&format!("SELECT pg_catalog.count(*) FROM raw.{t}")))
        .map(|n| n.unwrap_or(0))
        .map_err(|e| PgError::db(&format!("pg_qbo: rows of raw.{t}"), e))
}

/// Whether the Citus extension is installed in this database.
pub fn citus_installed() -> Result<bool, PgError> {
    as_owner(|| {
        Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus')",
        )
    })
    .map(|b| b.unwrap_or(false))
    .map_err(|e| PgError::db("pg_qbo: is Citus installed", e))
}

/// Refuses to run on a Citus worker: pg_qbo's runs belong on the coordinator, where the
/// connections, the ledger, the per-company limiter and the write locks are (Citus creates pg_qbo
/// on the workers too, with empty tables of its own). Nothing to check where Citus is not
/// installed, or is older than `citus_is_coordinator()` (Citus 11).
pub fn refuse_citus_worker() -> Result<(), PgError> {
    let worker = as_owner(|| {
        let has = Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regproc('pg_catalog.citus_is_coordinator') IS NOT NULL",
        )?
        .unwrap_or(false);
        if !has {
            return Ok(false);
        }
        // a node with workers registered and not the coordinator: a worker of a cluster
        Spi::get_one::<bool>(
            "SELECT NOT pg_catalog.citus_is_coordinator()
                AND EXISTS (SELECT FROM pg_catalog.pg_dist_node n WHERE n.noderole OPERATOR(pg_catalog.=) 'primary')",
        )
        .map(|b| b.unwrap_or(false))
    })
    .map_err(|e| PgError::db("pg_qbo: is this a Citus worker", e))?;
    if worker {
        return Err(PgError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "pg_qbo runs on the Citus coordinator only: this node is a worker of a Citus cluster (connections, the run ledger and the per-company request limiter live on the coordinator); run it there",
        ));
    }
    Ok(())
}

/// Distributes `raw.<entity>` with Citus by `realm_id`, co-located with the raw tables already
/// distributed (the first of them by name; Citus' default group of text-distributed tables when
/// there is none), as the owner, in the caller's transaction; Citus moves the rows a local table
/// holds into the shards and pg_qbo then empties the local copy. Returns the rows moved. The
/// caller holds the raw DDL lock and checked the table's trust.
pub fn distribute(entity: &Entity) -> Result<i64, PgError> {
    let t = entity.table;
    let tables: Vec<String> = qbo::entities::ENTITIES
        .iter()
        .filter(|e| e.table != t)
        .map(|e| e.table.to_owned())
        .collect();
    let err = |e: pgrx::spi::Error| {
        PgError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("pg_qbo could not distribute raw.{t} with Citus: {e}"),
        )
    };
    as_owner(|| {
        let rows = Spi::get_one::<i64>(&format!("SELECT pg_catalog.count(*) FROM raw.{t}"))?
            .unwrap_or(0);
        let colocate = Spi::get_one_with_args::<String>(
            "SELECT coalesce((SELECT 'raw.' OPERATOR(pg_catalog.||) c.relname::pg_catalog.text
                                FROM pg_catalog.pg_dist_partition p
                                JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.logicalrelid
                               WHERE c.relnamespace OPERATOR(pg_catalog.=) 'raw'::pg_catalog.regnamespace
                                 AND c.relname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.name[])
                               ORDER BY c.relname LIMIT 1), 'default')",
            &[tables.into()],
        )?
        .unwrap_or_else(|| "default".to_owned());
        quiet(|| {
            Spi::run_with_args(
                "SELECT pg_catalog.create_distributed_table($1::pg_catalog.regclass, 'realm_id', colocate_with => $2)",
                &[format!("raw.{t}").into(), colocate.into()],
            )?;
            if rows > 0 {
                Spi::run_with_args(
                    "SELECT pg_catalog.truncate_local_data_after_distributing_table($1::pg_catalog.regclass)",
                    &[format!("raw.{t}").into()],
                )?;
            }
            Ok(rows)
        })
    })
    .map_err(err)
}

#[cfg(any(test, feature = "pg_test"))]
thread_local! {
    /// Tests: the statements for distributed tables on a local one (they are plain SQL), to show
    /// they keep the rule of the local ones.
    pub static FORCE_CITUS_STATEMENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the writes of `raw.<table>` use the statements written for Citus (the table is
/// distributed).
fn citus_statements(t: &str) -> Result<bool, PgError> {
    #[cfg(any(test, feature = "pg_test"))]
    if FORCE_CITUS_STATEMENTS.with(|f| f.get()) {
        return Ok(true);
    }
    is_distributed(t)
}

/// Whether Citus distributes `raw.<table>` (false where Citus is not installed).
pub fn is_distributed(t: &str) -> Result<bool, PgError> {
    as_owner(|| {
        let citus = Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
        )?
        .unwrap_or(false);
        if !citus {
            return Ok(false);
        }
        Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                             WHERE p.logicalrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))",
            &[format!("raw.{t}").into()],
        )
        .map(|b| b.unwrap_or(false))
    })
    .map_err(|e| PgError::db(&format!("pg_qbo: is raw.{t} distributed by Citus"), e))
}

/// [`tombstone_sql`] for a raw table Citus distributes: one `UPDATE ... FROM` the tombstones,
/// on the realm (the distribution column: the statement goes to that realm's shard alone) and the
/// key, with the same rule; Citus cannot plan the update by `ctid` of [`tombstone_sql`].
pub fn tombstone_sql_distributed(t: &str) -> String {
    format!(
        "WITH tombstone AS (
             SELECT pg_catalog.unnest($1::pg_catalog.text[]) AS id,
                    pg_catalog.unnest($2::pg_catalog.timestamptz[]) AS deleted_at),
         marked AS (
             UPDATE raw.{t} AS r SET deleted_at_utc = d.deleted_at
               FROM tombstone d
              WHERE r.realm_id OPERATOR(pg_catalog.=) $3 AND r.id OPERATOR(pg_catalog.=) d.id
                AND r.deleted_at_utc IS NULL
                AND (r.last_updated_utc IS NULL OR r.last_updated_utc OPERATOR(pg_catalog.<=) d.deleted_at)
             RETURNING 1)
         SELECT pg_catalog.count(*) FROM marked"
    )
}

/// The tombstones of `raw.<table>` ([`apply_tombstones`]): `$1` Ids (distinct, sorted), `$2` their
/// deletion times, `$3` realm; returns the number of rows marked.
pub fn tombstone_sql(t: &str) -> String {
    format!(
        "WITH tombstone AS (
             -- streamed in the arrays' order (see upsert_sql)
             SELECT pg_catalog.unnest($1::pg_catalog.text[]) AS id,
                    pg_catalog.unnest($2::pg_catalog.timestamptz[]) AS deleted_at),
         target AS MATERIALIZED (
             -- each row to mark found by a scalar subquery, one primary-key probe per tombstone,
             -- on the key alone and with LIMIT 1, as in upsert_sql (joined to the table on its
             -- key, the tombstones were hashed against a scan of the realm's every row of a
             -- never-analyzed table; conditions on other columns in the probe made it a bitmap
             -- scan whose guessed rows grow with the table). NULL: nothing to mark. Materialized:
             -- a small tuplestore of (time, ctid), which the update joins on a plain column.
             SELECT d.deleted_at,
                    (SELECT CASE WHEN cur.deleted_at_utc IS NULL
                                      AND (cur.last_updated_utc IS NULL
                                           OR cur.last_updated_utc OPERATOR(pg_catalog.<=) d.deleted_at)
                                 THEN cur.ctid END
                       FROM raw.{t} cur
                      WHERE cur.realm_id OPERATOR(pg_catalog.=) $3 AND cur.id OPERATOR(pg_catalog.=) d.id
                      LIMIT 1) AS row_tid
               FROM tombstone d),
         marked AS (
             -- then each row by its ctid (a TID scan), and by nothing else: a condition on the
             -- table here (its realm, its key) gave the planner a selectivity to guess, and the
             -- hash join back. A row changed since its probe has another ctid: not marked.
             UPDATE raw.{t} AS r SET deleted_at_utc = g.deleted_at
               FROM target g
              WHERE r.ctid OPERATOR(pg_catalog.=) g.row_tid
             RETURNING 1)
         SELECT pg_catalog.count(*) FROM marked"
    )
}
