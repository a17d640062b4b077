//! `CALL qbo.run_sync(...)`: keeps raw.* current with QuickBooks (see [`crate::run::sync`]).

use crate::pg::error::raise;
use crate::pg::error::PgError;
use crate::pg::fmgr::{arg, require_nonatomic, result_row_opt};
use crate::pg::guc::Settings;
use crate::pg::interrupts::Mode;
use crate::pg::xact;
use crate::run::sync::{self, Started, SyncRequest};
use crate::run::worker::{self, Job};
use crate::sql_api::args::required;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

crate::finfo_v1!(pg_finfo_qbo_run_sync);

/// `CALL qbo.run_sync(entities, connection, minor_version)`: syncs in this backend, committing
/// as it goes; returns the sync's run id through its INOUT parameter (NULL when another sync of
/// the company was running and this call did nothing).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_sync(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let f = "qbo.run_sync";
    // SAFETY: `fcinfo` is the live FunctionCallInfo Postgres passed to this C entry point (the
    // `LANGUAGE c` procedure qbo.run_sync below), valid for the whole call.
    unsafe { require_nonatomic(fcinfo, f) };
    // SAFETY: `fcinfo` as above; qbo.run_sync is declared below as (entities text[],
    // connection text, minor_version int, INOUT run_id bigint): each index is below its 4
    // arguments and each Rust type is that of the SQL type at that index; the values are copied
    // into owned Strings here, before any commit.
    let (entities, connection, minor_version) = unsafe {
        (
            arg::<Vec<Option<String>>>(fcinfo, 0),
            arg::<&str>(fcinfo, 1),
            arg::<i32>(fcinfo, 2),
        )
    };
    let req = sync_request(f, entities, connection, minor_version);
    // SAFETY: require_nonatomic above raised unless this is a non-atomic CALL.
    let run_id = unsafe { xact::in_call(|| sync_here(&req, f)) };
    // SAFETY: `fcinfo` as above; qbo.run_sync's only output parameter is INOUT run_id bigint,
    // and SPI_finish has switched back to the memory context this procedure was called in, which
    // Postgres reads the returned row from.
    unsafe { result_row_opt(fcinfo, run_id) }
}

/// Creates and executes a sync in this backend (a non-atomic CALL); `None`: a sync of the company
/// was running (a NOTICE said so).
fn sync_here(req: &SyncRequest, f: &str) -> Option<i64> {
    match sync::start(req, "call", f).unwrap_or_else(|e| e.raise()) {
        Started::Created(run_id) => {
            xact::commit();
            sync::execute(run_id, Mode::Call);
            Some(run_id)
        }
        Started::Busy(notice) => {
            crate::say!("{notice}");
            None
        }
    }
}

/// The entities argument: `None` for NULL (every entity); a NULL element is refused.
fn entity_list(list: Option<Vec<Option<String>>>, f: &str) -> Option<Vec<String>> {
    list.map(|list| {
        list.into_iter()
            .map(|e| {
                e.unwrap_or_else(|| {
                    raise(
                        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                        format!("{f}: entities must not hold a NULL (pass NULL itself for every entity)"),
                    )
                })
            })
            .collect()
    })
}

/// The request of a sync entry point's arguments (NULLs refused by name).
fn sync_request(
    f: &str,
    entities: Option<Vec<Option<String>>>,
    connection: Option<&str>,
    minor_version: Option<i32>,
) -> SyncRequest {
    SyncRequest {
        entities: entity_list(entities, f),
        connection: required(connection, "connection", f).to_owned(),
        minor_version: required(minor_version, "minor_version", f),
        settings: Settings::current(),
    }
}

crate::finfo_v1!(pg_finfo_qbo_run_sync_all);

/// `CALL qbo.run_sync_all(entities, minor_version)`: a sync of every connection the caller may
/// use, one after the other, in this backend. A connection whose sync fails does not stop the
/// others: the call raises at the end, naming every failed sync.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_sync_all(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let f = "qbo.run_sync_all";
    // SAFETY: `fcinfo` is the live FunctionCallInfo Postgres passed to this C entry point (the
    // `LANGUAGE c` procedure qbo.run_sync_all below), valid for the whole call.
    unsafe { require_nonatomic(fcinfo, f) };
    // SAFETY: `fcinfo` as above; qbo.run_sync_all is declared below as (entities text[],
    // minor_version int): each index is below its 2 arguments and each Rust type is that of the
    // SQL type at that index; the values are owned.
    let (entities, minor_version) =
        unsafe { (arg::<Vec<Option<String>>>(fcinfo, 0), arg::<i32>(fcinfo, 1)) };
    let entities = entity_list(entities, f);
    let minor_version = required(minor_version, "minor_version", f);
    let settings = Settings::current();
    // SAFETY: require_nonatomic above raised unless this is a non-atomic CALL.
    unsafe {
        xact::in_call(|| {
            let names =
                crate::store::connections::usable_connections().unwrap_or_else(|e| e.raise());
            if names.is_empty() {
                crate::say!("{f}: no connection this role may use is registered (see qbo.connections); nothing to sync");
            }
            let mut failed: Vec<String> = Vec::new();
            for name in names {
                let req = SyncRequest {
                    entities: entities.clone(),
                    connection: name.clone(),
                    minor_version,
                    settings: settings.clone(),
                };
                let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
                    sync_here(&req, f);
                    Ok::<(), PgError>(())
                }))
                .catch_others(|caught| Err(PgError::from(&caught)))
                .execute();
                if let Err(e) = outcome {
                    if e.is(PgSqlErrorCode::ERRCODE_QUERY_CANCELED)
                        || e.is(PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN)
                    {
                        e.raise();
                    }
                    xact::recover();
                    crate::say!(
                        "{f}: the sync of connection \"{name}\" failed: {}",
                        e.message
                    );
                    failed.push(format!("\"{name}\" ({})", e.message));
                }
            }
            if !failed.is_empty() {
                raise(
                    PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                    format!(
                        "{f}: {} sync(s) failed, the others succeeded: {}",
                        failed.len(),
                        failed.join("; ")
                    ),
                );
            }
        })
    };
    pg_sys::Datum::from(0)
}

type SyncRows = TableIterator<
    'static,
    (
        name!(entity, String),
        name!(since, TimestampWithTimeZone),
        name!(until, TimestampWithTimeZone),
        name!(requests, i64),
        name!(changed, i64),
        name!(inserted, i64),
        name!(updated, i64),
        name!(deleted, i64),
        name!(skipped, i64),
        name!(duration, Interval),
        name!(route, Option<String>),
    ),
>;

fn rows_of(run_id: Option<i64>) -> SyncRows {
    let rows = match run_id {
        Some(id) => crate::store::syncs::report(id).unwrap_or_else(|e| e.raise()),
        None => Vec::new(),
    };
    TableIterator::new(rows.into_iter().map(|r| {
        (
            r.entity,
            r.since,
            r.until,
            r.requests,
            r.changed,
            r.inserted,
            r.updated,
            r.deleted,
            r.skipped,
            Interval::from_micros((r.seconds * 1000.0).round() as i64 * 1000),
            r.route,
        )
    }))
}

/// `SELECT * FROM qbo.sync(...)`: the sync of `CALL qbo.run_sync`, run in a background worker of
/// this session, returning one row per entity.
#[pg_extern(name = "sync", volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // pgrx reads the spelled-out type
fn sync_rows(
    entities: default!(Option<Vec<Option<String>>>, "NULL"),
    connection: default!(Option<&str>, "'default'"),
    minor_version: default!(Option<i32>, 75),
) -> TableIterator<
    'static,
    (
        name!(entity, String),
        name!(since, TimestampWithTimeZone),
        name!(until, TimestampWithTimeZone),
        name!(requests, i64),
        name!(changed, i64),
        name!(inserted, i64),
        name!(updated, i64),
        name!(deleted, i64),
        name!(skipped, i64),
        name!(duration, Interval),
        name!(route, Option<String>),
    ),
> {
    let f = "qbo.sync";
    let req = sync_request(f, entities, connection, minor_version);
    if let Some(notice) = sync::busy(&req, f).unwrap_or_else(|e| e.raise()) {
        crate::say!("{notice}");
        return rows_of(None);
    }
    let run_id = worker::run_in_worker(Job::Sync(Box::new(req)));
    rows_of(Some(run_id))
}

/// `SELECT qbo.start_sync(...)`: the sync in a background worker tied to no session; returns its
/// run id once the run is committed (NULL when a sync of the company is running).
#[pg_extern(volatile, parallel_unsafe)]
fn start_sync(
    entities: default!(Option<Vec<Option<String>>>, "NULL"),
    connection: default!(Option<&str>, "'default'"),
    minor_version: default!(Option<i32>, 75),
) -> Option<i64> {
    let f = "qbo.start_sync";
    let req = sync_request(f, entities, connection, minor_version);
    if let Some(notice) = sync::busy(&req, f).unwrap_or_else(|e| e.raise()) {
        crate::say!("{notice}");
        return None;
    }
    let started = worker::start_detached(Job::Sync(Box::new(req)));
    crate::say!(
        "sync run {} started in a background worker (pid {}); follow it in qbo.progress and qbo.run_chunks, stop it with SELECT qbo.cancel({})",
        started.run_id,
        started.pid,
        started.run_id
    );
    Some(started.run_id)
}

extension_sql!(
    r#"
CREATE PROCEDURE qbo.run_sync(entities text[] DEFAULT NULL, connection text DEFAULT 'default',
                              minor_version int DEFAULT 75, INOUT run_id bigint DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_sync';
COMMENT ON PROCEDURE qbo.run_sync(text[], text, int, bigint) IS
    'pg_qbo: brings raw.* up to date with QuickBooks for the entities asked (NULL: every entity of qbo.entities) of one connection, in this session, committing as it goes. An entity never synced reads its whole history (a backfill from 2000-01-01); then Change Data Capture reads what changed since its watermark (qbo.sync_state), all CDC entities in one request when their changes fit QuickBooks'' 1000-object cap, deletions marking raw.*.deleted_at_utc; entities CDC does not serve (TaxCode, TaxRate, TimeActivity) are read with one query at most every qbo.sync_non_cdc_interval_ms (default 12 h), and those whose watermark is older than CDC''s 30 days through the pager. Returns the sync''s run id (NULL when a sync of the same company was already running: a NOTICE says so and nothing is done). Must be CALLed outside a transaction block; one NOTICE per entity (route, window, changed, inserted, updated, deleted, skipped, requests); qbo.runs (kind sync) and qbo.run_chunks (one row per entity) hold the same.';

CREATE PROCEDURE qbo.run_sync_all(entities text[] DEFAULT NULL, minor_version int DEFAULT 75)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_sync_all';
COMMENT ON PROCEDURE qbo.run_sync_all(text[], int) IS
    'pg_qbo: CALL qbo.run_sync for every connection the calling role may use (qbo.connections), one after the other, in this session: the one line a pg_cron job needs to keep every company current. A sync that fails does not stop the others; the call then ends with an ERROR naming each failed sync (each is in qbo.runs). A company whose sync is already running is skipped with a NOTICE.';

COMMENT ON FUNCTION qbo.sync(text[], text, int) IS
    'pg_qbo: the sync of CALL qbo.run_sync (same arguments, same work, same NOTICEs) run in a background worker of this session, returning one row per entity: entity, since, until (the window it read, until = the new watermark), requests (a CDC request counted on the first entity it asked for, so the rows add up to the sync''s total), changed (= inserted + updated + deleted + skipped; records read, for an entity read through the pager), inserted, updated, deleted, skipped, duration, route (cdc, first_sync, query, not_due, pager). No rows, and a NOTICE, when a sync of the company was already running. Needs a free pg_qbo worker slot (qbo.max_workers); CALL qbo.run_sync needs none.';
COMMENT ON FUNCTION qbo.start_sync(text[], text, int) IS
    'pg_qbo: starts the sync of CALL qbo.run_sync in a background worker tied to no session and returns its run id once the run is committed (NULL, and a NOTICE, when a sync of the company was already running). Follow it in qbo.progress and qbo.run_chunks; stop it with qbo.cancel(run_id).';
"#,
    name = "sync_procedures",
    requires = ["schema", sync_rows, start_sync],
);
