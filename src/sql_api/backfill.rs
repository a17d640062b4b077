//! `qbo.backfill`, `qbo.resume`, `CALL qbo.run_backfill`, `CALL qbo.run_resume`, `qbo.entities`.

use crate::pg::fmgr::{arg, require_nonatomic, result_row};
use crate::pg::interrupts::Mode;
use crate::pg::time::session_ts;
use crate::pg::xact;
use crate::run::request::{check_resumable, create_run, prepare_resume, validate, Resume};
use crate::run::worker::{self, Job};
use crate::run::{executor, notices};
use crate::sql_api::args::{request, required, run_id_of_call};
use crate::store::ledger;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use qbo::entities;

type Volumetry = TableIterator<
    'static,
    (
        name!(chunk, i32),
        name!(window_start, TimestampWithTimeZone),
        name!(window_end, TimestampWithTimeZone),
        name!(pages, i32),
        name!(rows, i64),
        name!(inserted, i64),
        name!(updated, i64),
        name!(skipped, i64),
        name!(duration, Interval),
    ),
>;

fn volumetry(run_id: i64) -> Volumetry {
    TableIterator::new(ledger::volumetry(run_id).unwrap_or_else(|e| e.raise()))
}

/// `SELECT * FROM qbo.backfill(...)`: runs the backfill in a background worker and returns one row
/// of volumetry per chunk.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)] // pgrx reads the spelled-out type
fn backfill(
    entity: Option<&str>,
    fecha_inicio: Option<TimestampWithTimeZone>,
    fecha_fin: Option<TimestampWithTimeZone>,
    chunk_size: default!(Option<i32>, 7),
    page_size: default!(Option<i32>, 1000),
    minor_version: default!(Option<i32>, 75),
    connection: default!(Option<&str>, "'default'"),
) -> TableIterator<
    'static,
    (
        name!(chunk, i32),
        name!(window_start, TimestampWithTimeZone),
        name!(window_end, TimestampWithTimeZone),
        name!(pages, i32),
        name!(rows, i64),
        name!(inserted, i64),
        name!(updated, i64),
        name!(skipped, i64),
        name!(duration, Interval),
    ),
> {
    let req = request(
        "qbo.backfill",
        entity,
        fecha_inicio,
        fecha_fin,
        chunk_size,
        page_size,
        minor_version,
        connection,
    );
    if let Err(e) = validate(&req) {
        e.prefixed("qbo.backfill").raise();
    }
    let run_id = worker::run_in_worker(Job::New(Box::new(req)));
    volumetry(run_id)
}

/// `SELECT * FROM qbo.resume(run_id)`: continues a run in a background worker, redoing only what
/// did not complete, with the run's stored plan and settings.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // pgrx reads the spelled-out type
fn resume(
    run_id: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(chunk, i32),
        name!(window_start, TimestampWithTimeZone),
        name!(window_end, TimestampWithTimeZone),
        name!(pages, i32),
        name!(rows, i64),
        name!(inserted, i64),
        name!(updated, i64),
        name!(skipped, i64),
        name!(duration, Interval),
    ),
> {
    let run_id = required(run_id, "run_id", "qbo.resume");
    if check_resumable(run_id, "qbo.resume") == Resume::AlreadySucceeded {
        return volumetry(run_id);
    }
    let run_id = worker::run_in_worker(Job::Resume(run_id));
    volumetry(run_id)
}

/// Rows of `qbo.entities`.
#[pg_extern(immutable, parallel_safe)]
fn _entities() -> TableIterator<
    'static,
    (
        name!(entity, String),
        name!(raw_table, String),
        name!(kind, String),
        name!(cdc, bool),
    ),
> {
    TableIterator::new(entities::ENTITIES.iter().map(|e| {
        (
            e.name.to_owned(),
            format!("raw.{}", e.table),
            e.kind.as_str().to_owned(),
            e.cdc,
        )
    }))
}

crate::finfo_v1!(pg_finfo_qbo_run_backfill);
crate::finfo_v1!(pg_finfo_qbo_run_resume);

/// `CALL qbo.run_backfill(...)`: runs the backfill in this backend, committing page by page;
/// returns the run id through its INOUT parameter.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_backfill(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: `fcinfo` is the live FunctionCallInfo Postgres passed to this C entry point (the
    // `LANGUAGE c` procedure qbo.run_backfill below), valid for the whole call.
    unsafe { require_nonatomic(fcinfo, "qbo.run_backfill") };
    let f = "qbo.run_backfill";
    // SAFETY: `fcinfo` as above; qbo.run_backfill is declared below as (entity text,
    // fecha_inicio timestamptz, fecha_fin timestamptz, chunk_size int, page_size int,
    // minor_version int, connection text, INOUT run_id bigint): each index is below its 8
    // arguments and each Rust type is that of the SQL type at that index. The two `&str` borrow
    // the call's argument datums; `request` copies them into Strings before any commit.
    let (entity, fecha_inicio, fecha_fin, chunk_size, page_size, minor_version, connection) = unsafe {
        (
            arg::<&str>(fcinfo, 0),
            arg::<TimestampWithTimeZone>(fcinfo, 1),
            arg::<TimestampWithTimeZone>(fcinfo, 2),
            arg::<i32>(fcinfo, 3),
            arg::<i32>(fcinfo, 4),
            arg::<i32>(fcinfo, 5),
            arg::<&str>(fcinfo, 6),
        )
    };
    let req = request(
        f,
        entity,
        fecha_inicio,
        fecha_fin,
        chunk_size,
        page_size,
        minor_version,
        connection,
    );
    let v = validate(&req).unwrap_or_else(|e| e.prefixed(f).raise());
    // SAFETY: require_nonatomic above raised unless this is a non-atomic CALL.
    let run_id = unsafe {
        xact::in_call(|| {
            let run_id = create_run(&req, &v, "call");
            xact::commit();
            crate::say!(
                "{}",
                notices::opening(
                    run_id,
                    v.entity.name,
                    req.fecha_inicio,
                    req.fecha_fin,
                    v.chunks.len() as i64,
                    &session_ts
                )
            );
            executor::execute(run_id, Mode::Call);
            run_id
        })
    };
    // SAFETY: `fcinfo` as above; qbo.run_backfill's only output parameter is INOUT run_id
    // bigint, and SPI_finish has switched back to the memory context this procedure was called
    // in, which Postgres reads the returned row from.
    unsafe { result_row(fcinfo, run_id) }
}

/// `CALL qbo.run_resume(run_id)`: continues a run in this backend, committing page by page.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_resume(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: `fcinfo` is the live FunctionCallInfo Postgres passed to this C entry point (the
    // `LANGUAGE c` procedure qbo.run_resume below, whose only argument is run_id bigint).
    let run_id = unsafe { run_id_of_call(fcinfo, "qbo.run_resume") };
    // SAFETY: run_id_of_call raised unless this is a non-atomic CALL.
    unsafe {
        xact::in_call(|| {
            if prepare_resume(run_id) == Resume::Execute {
                xact::commit();
                executor::execute(run_id, Mode::Call);
            }
        })
    };
    pg_sys::Datum::from(0)
}

extension_sql!(
    r#"
CREATE PROCEDURE qbo.run_backfill(entity text, fecha_inicio timestamptz, fecha_fin timestamptz,
                                  chunk_size int DEFAULT 7, page_size int DEFAULT 1000,
                                  minor_version int DEFAULT 75, connection text DEFAULT 'default',
                                  INOUT run_id bigint DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_backfill';
COMMENT ON PROCEDURE qbo.run_backfill(text, timestamptz, timestamptz, int, int, int, text, bigint) IS
    'pg_qbo: backfills one QBO entity over [fecha_inicio, fecha_fin) in chunk_size-day chunks, in this session, committing page by page (resumable, nothing done is lost). Returns the run id. Must be CALLed outside a transaction block; progress as NOTICEs and in qbo.runs / qbo.run_chunks.';

CREATE PROCEDURE qbo.run_resume(run_id bigint)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_resume';
COMMENT ON PROCEDURE qbo.run_resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run in this session, redoing only what did not complete, with the stored chunk plan and settings. A run that already succeeded is left as it is (a NOTICE says so; nothing is executed).';

CREATE VIEW qbo.entities AS SELECT * FROM qbo._entities();
COMMENT ON VIEW qbo.entities IS 'pg_qbo: every QBO entity qbo.backfill accepts, with its raw table, kind and CDC support.';
COMMENT ON COLUMN qbo.entities.entity IS 'QBO entity name (case-sensitive), the entity argument of qbo.backfill.';
COMMENT ON COLUMN qbo.entities.raw_table IS 'Table the records land in (created on first use).';
COMMENT ON COLUMN qbo.entities.kind IS 'name-list (has Active; inactive rows are fetched too), transaction or other.';
COMMENT ON COLUMN qbo.entities.cdc IS 'Whether QBO''s Change Data Capture supports the entity.';
COMMENT ON FUNCTION qbo._entities() IS 'pg_qbo internal: rows of qbo.entities.';

COMMENT ON FUNCTION qbo.backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: backfills one QBO entity over [fecha_inicio, fecha_fin) in chunk_size-day chunks (page_size 1..1000 rows per request) into raw.qb_<entity>, committing page by page in a background worker; relays progress as NOTICEs (each chunk as it completes, the run''s totals every qbo.progress_interval_ms, retries after a backoff) and returns one row of volumetry per chunk (duration: time spent on the chunk, rounded to milliseconds). Cancel stops the run (status cancelled, completed pages kept; continue with qbo.resume). Needs a free pg_qbo worker slot (qbo.max_workers) and background worker slot (max_worker_processes), else fails at once (53400); CALL qbo.run_backfill needs neither.';
-- Last of the script, once every routine exists: PUBLIC may run only the routines
-- qbo._routine_grants (sql/schema.sql) lists as 'public'; operators get theirs from
-- qbo.grant_operator.
DO $privileges$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    FOR f IN SELECT r.routine FROM qbo._routines() r WHERE r.grantee IS DISTINCT FROM 'public' LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
    END LOOP;
END
$privileges$;

COMMENT ON FUNCTION qbo.resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run in a background worker, redoing only what did not complete with the stored plan and settings; returns the volumetry of every chunk of the run, a chunk''s duration being the sum over every execution that worked on it (rounded to milliseconds). A run that already succeeded is left as it is (a NOTICE says so; no worker is started) and its volumetry returned.';
"#,
    name = "procedures",
    requires = ["cron"],
    finalize
);
