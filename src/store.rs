//! Everything that touches SQL: raw tables, the page upsert, the run ledger, connections and
//! tokens. Values always travel as SPI parameters; the only identifiers spliced into SQL text are
//! raw table names taken from the static entity catalog (`crate::entities`).

use crate::entities::Entity;
use crate::pager::Payload;
use chrono::{DateTime, Utc};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiResult;

/// Advisory lock class of a live run: `pg_advisory_lock(RUN_LOCK_CLASS, run_id)`.
pub const RUN_LOCK_CLASS: i32 = 1_364_414_287;
/// Advisory lock class serialising token refreshes of one realm.
pub const TOKEN_LOCK_CLASS: i32 = 1_364_414_288;
/// Advisory lock class serialising writes of one (realm, entity).
pub const WRITE_LOCK_CLASS: i32 = 1_364_414_289;

/// Converts a chrono instant to a Postgres timestamptz.
pub fn tstz(t: DateTime<Utc>) -> TimestampWithTimeZone {
    // microseconds since 2000-01-01, Postgres' epoch
    let pg_epoch_offset_us: i64 = 946_684_800_000_000;
    let us = t.timestamp_micros() - pg_epoch_offset_us;
    // Every instant chrono represents in the range we use converts; out of range saturates.
    TimestampWithTimeZone::try_from(us).unwrap_or_else(|_| {
        TimestampWithTimeZone::try_from(0i64).expect("the Postgres epoch is a valid timestamptz")
    })
}

/// Converts a Postgres timestamptz to a chrono instant (infinite values are rejected by callers).
pub fn from_tstz(t: TimestampWithTimeZone) -> Option<DateTime<Utc>> {
    let us: i64 = t.into_inner();
    DateTime::<Utc>::from_timestamp_micros(us + 946_684_800_000_000)
}

fn lock_key(class: i32, key: &str) -> String {
    format!("{class}:{key}")
}

/// The role that owns the extension (its tables hold the secrets and the ledger).
fn extension_owner() -> pg_sys::Oid {
    thread_local! {
        static OWNER: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
    }
    if let Some(o) = OWNER.with(|c| c.get()) {
        return o;
    }
    let o = Spi::get_one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_qbo'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| unsafe { pg_sys::GetUserId() });
    OWNER.with(|c| c.set(Some(o)));
    o
}

/// Runs `f` as the extension's owner, like a SECURITY DEFINER function but reachable only from
/// this code: credentials, tokens, the ledger and raw-table DDL are touched this way, so the roles
/// that run or read backfills need no privilege on them (and cannot read a secret or forge a run's
/// settings). Restricted-operation mode: no user-defined code can take advantage of the switch.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = extension_owner();
    let (mut uid, mut ctx) = (pg_sys::InvalidOid, 0i32);
    unsafe { pg_sys::GetUserIdAndSecContext(&mut uid, &mut ctx) };
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            owner,
            ctx | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION)
                as i32,
        )
    };
    PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .finally(|| unsafe { pg_sys::SetUserIdAndSecContext(uid, ctx) })
        .execute()
}

/// [`Spi::connect_mut`] as the extension's owner.
pub fn owner_spi<R>(f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> SpiResult<R>) -> SpiResult<R> {
    as_owner(|| Spi::connect_mut(f))
}

/// [`exec`] as the extension's owner.
pub fn owner_exec(sql: &str, args: &[DatumWithOid]) -> SpiResult<()> {
    as_owner(|| exec(sql, args))
}

/// Runs `sql` with parameters, returning nothing.
pub fn exec(sql: &str, args: &[DatumWithOid]) -> SpiResult<()> {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ()))
}

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
];

/// Creates schema `raw` and the entity's table on first use (outside extension membership, so the
/// data outlives `DROP EXTENSION`), or checks that an existing table has the expected shape.
pub fn ensure_raw_table(entity: &Entity) -> Result<(), String> {
    let t = entity.table;
    // Two runs creating the same table at once would collide in the catalog: serialise the DDL.
    exec(
        "SELECT pg_advisory_xact_lock($1, hashtext('pg_qbo raw ddl'))",
        &[WRITE_LOCK_CLASS.into()],
    )
    .map_err(|e| e.to_string())?;
    let exists: bool = Spi::get_one_with_args(
        "SELECT to_regclass(format('raw.%I', $1::text)) IS NOT NULL",
        &[t.into()],
    )
    .map_err(|e| e.to_string())?
    .unwrap_or(false);
    if !exists {
        // lz4 compresses a page of 1.5-2 KB payloads several times faster than the default pglz
        // (pglz took a quarter of the backend's CPU on a first load); used when the server has it
        let lz4: bool = Spi::get_one(
            "SELECT coalesce('lz4' = ANY (enumvals), false) FROM pg_catalog.pg_settings WHERE name = 'default_toast_compression'",
        )
        .map_err(|e| e.to_string())?
        .unwrap_or(false);
        let compression = if lz4 { " COMPRESSION lz4" } else { "" };
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS raw;
             COMMENT ON SCHEMA raw IS 'pg_qbo: QuickBooks Online records as extracted (one table per entity). Not part of the extension: DROP EXTENSION keeps it.';
             CREATE TABLE IF NOT EXISTS raw.{t} (
                 realm_id text NOT NULL,
                 id text NOT NULL,
                 payload jsonb{compression} NOT NULL,
                 ingested_at_utc timestamptz NOT NULL DEFAULT now(),
                 extract_window_start_utc timestamptz NOT NULL,
                 extract_window_end_utc timestamptz NOT NULL,
                 page_number int,
                 page_size int,
                 request_payload jsonb{compression},
                 PRIMARY KEY (realm_id, id));
             CREATE INDEX IF NOT EXISTS {t}_ingested_idx ON raw.{t} (ingested_at_utc);
             CREATE INDEX IF NOT EXISTS {t}_window_start_idx ON raw.{t} (extract_window_start_utc);
             CREATE INDEX IF NOT EXISTS {t}_window_end_idx ON raw.{t} (extract_window_end_utc);
             COMMENT ON TABLE raw.{t} IS 'pg_qbo: QBO {name} records, one row per (realm_id, id), latest version seen.';
             COMMENT ON COLUMN raw.{t}.realm_id IS 'QuickBooks company id.';
             COMMENT ON COLUMN raw.{t}.id IS 'QBO Id (unique within realm and entity).';
             COMMENT ON COLUMN raw.{t}.payload IS 'The record exactly as QBO sent it.';
             COMMENT ON COLUMN raw.{t}.ingested_at_utc IS 'When this version was written.';
             COMMENT ON COLUMN raw.{t}.extract_window_start_utc IS 'Start of the chunk that fetched this version.';
             COMMENT ON COLUMN raw.{t}.extract_window_end_utc IS 'End (exclusive) of that chunk.';
             COMMENT ON COLUMN raw.{t}.page_number IS 'Page of the chunk that fetched this version.';
             COMMENT ON COLUMN raw.{t}.page_size IS 'MAXRESULTS of that request.';
             COMMENT ON COLUMN raw.{t}.request_payload IS 'The request: query, start position, page size, minor version, environment (never a token).';",
            name = entity.name
        );
        as_owner(|| Spi::run(&ddl)).map_err(|e| e.to_string())?;
    }
    check_raw_shape(entity)
}

/// Checks the shape of the entity's raw table if it already exists (reads only).
pub fn check_existing_raw_table(entity: &Entity) -> Result<(), String> {
    let exists: bool = Spi::get_one_with_args(
        "SELECT to_regclass(format('raw.%I', $1::text)) IS NOT NULL",
        &[entity.table.into()],
    )
    .map_err(|e| e.to_string())?
    .unwrap_or(false);
    if exists {
        check_raw_shape(entity)
    } else {
        Ok(())
    }
}

fn check_raw_shape(entity: &Entity) -> Result<(), String> {
    let t = entity.table;
    let (cols, pk): (Option<Vec<String>>, Option<Vec<String>>) = Spi::get_two_with_args(
        "SELECT (SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                   FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                (SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'raw' AND c.relname = $1",
        &[t.into()],
    )
    .map_err(|e| e.to_string())?;
    let cols = cols.unwrap_or_default();
    let pk = pk.unwrap_or_default();
    let missing: Vec<String> = RAW_COLUMNS
        .iter()
        .filter(|(n, ty)| !cols.iter().any(|c| c == &format!("{n} {ty}")))
        .map(|(n, ty)| format!("{n} {ty}"))
        .collect();
    if missing.is_empty() && pk == ["realm_id", "id"] {
        return Ok(());
    }
    Err(format!(
        "table raw.{t} already exists with another shape (primary key ({}); missing or different columns: {}); pg_qbo needs primary key (realm_id, id) and columns {}. Rename the old table (ALTER TABLE raw.{t} RENAME TO {t}_old) and run the backfill again, then copy what you need from the old table",
        pk.join(", "),
        if missing.is_empty() { "none".to_owned() } else { missing.join(", ") },
        RAW_COLUMNS.iter().map(|(n, ty)| format!("{n} {ty}")).collect::<Vec<_>>().join(", ")
    ))
}

/// One page's records, ready for the upsert.
pub struct PageRows {
    pub ids: Vec<String>,
    pub payloads: Vec<Payload>,
    pub sync_tokens: Vec<i64>,
}

/// Whether the current database's encoding is UTF-8 (the network thread then writes records
/// as jsonb bytes, whose strings are UTF-8).
pub fn database_is_utf8() -> bool {
    unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 }
}

/// The jsonb datum of a JSON text, from PostgreSQL's own `jsonb_in` (raises its error).
pub fn jsonb_in(text: &str) -> Result<pg_sys::Datum, String> {
    let c = std::ffi::CString::new(text)
        .map_err(|_| "a record's JSON text contains a NUL byte".to_owned())?;
    // jsonb_in copies what it keeps: the CString may go once it returns
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
fn jsonb_array(payloads: &[Payload]) -> Result<pg_sys::Datum, String> {
    let mut datums: Vec<pg_sys::Datum> = Vec::with_capacity(payloads.len());
    for p in payloads {
        datums.push(match p {
            // a complete, uncompressed varlena with a 4-byte header: construct_array reads it
            // in place (VARSIZE, then a copy into the array)
            Payload::Jsonb(b) => pg_sys::Datum::from(b.as_ptr()),
            Payload::Text(t) => jsonb_in(t.get())?,
        });
    }
    let n = i32::try_from(datums.len()).map_err(|_| "page too large".to_owned())?;
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
/// pre-filter exact. A row is written when
/// it is new, has a higher SyncToken, or the same SyncToken with a different payload; stale and
/// unchanged rows are not touched (a re-run writes nothing).
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
) -> Result<UpsertCounts, String> {
    if rows.ids.is_empty() {
        return Ok(UpsertCounts::default());
    }
    // everything is built inside the SPI connection: its memory context (the page's arrays,
    // a megabyte or two) is freed when the connection closes, after each page
    Spi::connect_mut(|c| -> Result<UpsertCounts, String> {
        let spi = |e: pgrx::spi::SpiError| e.to_string();
        c.update(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            None,
            &[
                WRITE_LOCK_CLASS.into(),
                lock_key(WRITE_LOCK_CLASS, &format!("{realm}/{}", entity.name)).into(),
            ],
        )
        .map_err(spi)?;
        let payloads = jsonb_array(&rows.payloads)?;
        let row = c
            .update(
                upsert_plan(c, entity.table)?,
                Some(1),
                &[
                    rows.ids.into(),
                    // SAFETY: a jsonb[] datum built just above, alive for this statement
                    unsafe { DatumWithOid::new(payloads, pg_sys::JSONBARRAYOID) },
                    rows.sync_tokens.into(),
                    realm.into(),
                    tstz(window_start).into(),
                    tstz(window_end).into(),
                    page_number.into(),
                    page_size.into(),
                    request_payload.into(),
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
}

thread_local! {
    /// The page upsert of each raw table, prepared once per backend (planning its CTEs on every
    /// page was about 4 % of a load). Kept plans are revalidated by the plan cache when the
    /// table or a function changes, and the permissions of whoever runs them are checked at
    /// every execution. Never freed: a plan freed during backend exit could raise.
    static UPSERT_PLANS: std::cell::RefCell<std::collections::HashMap<&'static str, &'static pgrx::spi::OwnedPreparedStatement>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The prepared upsert of `table` (see [`UPSERT_PLANS`]).
fn upsert_plan(
    c: &pgrx::spi::SpiClient<'_>,
    table: &'static str,
) -> Result<&'static pgrx::spi::OwnedPreparedStatement, String> {
    if let Some(p) = UPSERT_PLANS.with(|m| m.borrow().get(table).copied()) {
        return Ok(p);
    }
    use pgrx::PgOid;
    let types = [
        pg_sys::TEXTARRAYOID,
        pg_sys::JSONBARRAYOID,
        pg_sys::INT8ARRAYOID,
        pg_sys::TEXTOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT4OID,
        pg_sys::INT4OID,
        pg_sys::TEXTOID,
    ]
    .map(PgOid::from);
    let sql = upsert_sql(table);
    let plan = c
        .prepare_mut(sql.as_str(), &types)
        .map_err(|e| e.to_string())?
        .keep();
    let plan: &'static pgrx::spi::OwnedPreparedStatement = Box::leak(Box::new(plan));
    UPSERT_PLANS.with(|m| m.borrow_mut().insert(table, plan));
    Ok(plan)
}

/// The upsert of one page into `raw.<table>`: `$1` Ids, `$2` payloads (jsonb), `$3` SyncTokens,
/// `$4` realm, `$5`/`$6` window, `$7` page number, `$8` page size, `$9` request payload; returns
/// (inserted, updated).
pub fn upsert_sql(t: &str) -> String {
    format!(
        "WITH incoming AS (
             -- set-returning functions in the select list run in lockstep (the arrays have one
             -- length) and stream their rows; unnest(a, b, c) in FROM copied every row of the
             -- page into a tuplestore first (about 5 % of a load's samples)
             SELECT unnest($1::text[]) AS id, unnest($2::jsonb[]) AS payload,
                    unnest($3::int8[]) AS sync),
         changed AS (
             -- a scalar subquery, not a join: always one primary-key probe per incoming row,
             -- whatever the table's statistics say (a join planned on a freshly truncated or
             -- never-analyzed table hashed the whole table for every page). LIMIT 1 states what
             -- the key guarantees: without statistics the planner guessed more rows per probe
             -- the bigger the table grew, until the statement cost enough to be JIT-compiled
             -- (and inlined, optimized) on every page, most of a 1M-record load's CPU
             SELECT n.* FROM incoming n
              WHERE (SELECT NOT (qbo._sync_token(cur.payload) > n.sync
                                 OR (qbo._sync_token(cur.payload) = n.sync AND cur.payload = n.payload))
                       FROM raw.{t} cur WHERE cur.realm_id = $4 AND cur.id = n.id LIMIT 1) IS NOT FALSE),
         written AS (
             INSERT INTO raw.{t} AS r (realm_id, id, payload, ingested_at_utc, extract_window_start_utc,
                                      extract_window_end_utc, page_number, page_size, request_payload)
             SELECT $4, c.id, c.payload, now(), $5, $6, $7, $8, $9::jsonb FROM changed c
             ON CONFLICT (realm_id, id) DO UPDATE
                SET payload = EXCLUDED.payload, ingested_at_utc = EXCLUDED.ingested_at_utc,
                    extract_window_start_utc = EXCLUDED.extract_window_start_utc,
                    extract_window_end_utc = EXCLUDED.extract_window_end_utc,
                    page_number = EXCLUDED.page_number, page_size = EXCLUDED.page_size,
                    request_payload = EXCLUDED.request_payload
              WHERE qbo._sync_token(EXCLUDED.payload) > qbo._sync_token(r.payload)
                 OR (qbo._sync_token(EXCLUDED.payload) = qbo._sync_token(r.payload)
                     AND EXCLUDED.payload IS DISTINCT FROM r.payload)
             RETURNING (xmax = 0) AS inserted)
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    )
}

/// A registered connection with its secrets (never Debug-printed).
pub struct Connection {
    pub name: String,
    pub realm_id: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub access_token: Option<String>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
}

/// Reads a connection with its secrets, as the extension owner. `Ok(None)` if it does not exist.
pub fn load_connection(name: &str) -> Result<Option<Connection>, String> {
    owner_spi(|c| -> SpiResult<Option<Connection>> {
        let t = c.update(
            "SELECT realm_id, environment, client_id, client_secret, refresh_token, access_token, access_token_expires_at
               FROM qbo._connections WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(Connection {
            name: name.to_owned(),
            realm_id: r.get::<String>(1)?.unwrap_or_default(),
            environment: r.get::<String>(2)?.unwrap_or_default(),
            client_id: r.get::<String>(3)?.unwrap_or_default(),
            client_secret: r.get::<String>(4)?.unwrap_or_default(),
            refresh_token: r.get::<String>(5)?.unwrap_or_default(),
            access_token: r.get::<String>(6)?,
            access_token_expires_at: r.get::<TimestampWithTimeZone>(7)?.and_then(from_tstz),
        }))
    })
    .map_err(|e| e.to_string())
}

/// Stores tokens just received from Intuit (the caller commits at once).
pub fn store_tokens(
    conn: &str,
    access: &str,
    access_expires: DateTime<Utc>,
    refresh: Option<&str>,
    refresh_expires: Option<DateTime<Utc>>,
) -> Result<(), String> {
    owner_exec(
        "UPDATE qbo._connections
            SET access_token = $2, access_token_expires_at = $3,
                refresh_token = coalesce($4, refresh_token),
                refresh_token_expires_at = coalesce($5, refresh_token_expires_at),
                last_refresh_at = now(), updated_at = now()
          WHERE name = $1",
        &[
            conn.into(),
            access.into(),
            tstz(access_expires).into(),
            refresh.into(),
            refresh_expires.map(tstz).into(),
        ],
    )
    .map_err(|e| e.to_string())
}

/// Forgets an access token QBO rejected.
pub fn forget_access_token(conn: &str, rejected: &str) -> Result<(), String> {
    owner_exec(
        "UPDATE qbo._connections SET access_token = NULL, access_token_expires_at = NULL
          WHERE name = $1 AND access_token = $2",
        &[conn.into(), rejected.into()],
    )
    .map_err(|e| e.to_string())
}

/// Takes the session lock serialising token refreshes of one realm (waits; cancellable).
pub fn lock_token(realm: &str) -> Result<(), String> {
    exec(
        "SELECT pg_advisory_lock($1, hashtext($2))",
        &[TOKEN_LOCK_CLASS.into(), realm.into()],
    )
    .map_err(|e| e.to_string())
}

/// Releases [`lock_token`].
pub fn unlock_token(realm: &str) -> Result<(), String> {
    exec(
        "SELECT pg_advisory_unlock($1, hashtext($2))",
        &[TOKEN_LOCK_CLASS.into(), realm.into()],
    )
    .map_err(|e| e.to_string())
}

/// Takes the liveness lock of a run without waiting. `false`: another process executes it.
pub fn try_lock_run(run_id: i64) -> Result<bool, String> {
    Spi::get_one_with_args::<bool>(
        "SELECT pg_try_advisory_lock($1, ($2 & 2147483647)::int)",
        &[RUN_LOCK_CLASS.into(), run_id.into()],
    )
    .map(|v| v.unwrap_or(false))
    .map_err(|e| e.to_string())
}

/// Releases the liveness lock of a run.
pub fn unlock_run(run_id: i64) -> Result<(), String> {
    exec(
        "SELECT pg_advisory_unlock($1, ($2 & 2147483647)::int)",
        &[RUN_LOCK_CLASS.into(), run_id.into()],
    )
    .map_err(|e| e.to_string())
}

/// Marks runs whose process is gone as interrupted.
pub fn mark_interrupted() -> Result<(), String> {
    owner_exec("SELECT qbo._mark_interrupted()", &[]).map_err(|e| e.to_string())
}

thread_local! {
    /// Whether we pushed the active snapshot of the current transaction ourselves.
    static OWN_SNAPSHOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Outside a portal (a background worker) SPI needs an outer active snapshot, which a procedure
/// gets from its portal: push one for the current transaction. A no-op inside a portal.
pub fn ensure_outer_snapshot() {
    unsafe {
        if pg_sys::ActivePortal.is_null() && !pg_sys::ActiveSnapshotSet() {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            OWN_SNAPSHOT.with(|f| f.set(true));
        }
    }
}

/// Pops the snapshot [`ensure_outer_snapshot`] pushed (before a commit: a transaction must end
/// with no active snapshot of ours).
pub fn release_outer_snapshot() {
    if OWN_SNAPSHOT.with(|f| f.replace(false)) {
        unsafe {
            if pg_sys::ActiveSnapshotSet() {
                pg_sys::PopActiveSnapshot();
            }
        }
    }
}

/// Commits the current transaction of a non-atomic SPI connection and starts a new one.
pub fn commit() {
    release_outer_snapshot();
    unsafe { pg_sys::SPI_commit() }
    ensure_outer_snapshot();
}

/// Rolls the current transaction back and starts a new one (after a caught error).
pub fn rollback() {
    // SPI_rollback insists that every active snapshot belongs to a portal: pop ours and any a
    // failed statement left behind, down to the portal's own (none in a background worker).
    OWN_SNAPSHOT.with(|f| f.set(false));
    unsafe {
        let portal_snapshot = if pg_sys::ActivePortal.is_null() {
            std::ptr::null_mut()
        } else {
            (*pg_sys::ActivePortal).portalSnapshot
        };
        while pg_sys::ActiveSnapshotSet() && pg_sys::GetActiveSnapshot() != portal_snapshot {
            pg_sys::PopActiveSnapshot();
        }
        pg_sys::SPI_rollback()
    }
    ensure_outer_snapshot();
}

// STUB: the real one lands in main
/// Stores a rotated refresh token alone (the access token is untouched), for a token response
/// that carried no usable access token. The real function runs, as the extension owner:
/// `UPDATE qbo._connections SET refresh_token = $2,
///  refresh_token_expires_at = coalesce($3, refresh_token_expires_at),
///  last_refresh_at = now(), updated_at = now() WHERE name = $1`.
pub fn store_refresh_token(
    conn: &str,
    refresh: &str,
    refresh_expires: Option<DateTime<Utc>>,
) -> Result<(), String> {
    let _ = (conn, refresh, refresh_expires);
    Err("store_refresh_token is not available in this build (stub)".to_string())
}
