//! The SQL surface: `qbo.backfill`, `qbo.resume` (set-returning, run in a background worker),
//! `CALL qbo.run_backfill` / `CALL qbo.run_resume` (run in the caller's backend, committing page
//! by page), and `qbo.entities`. Everything here is thin: validation, then `executor` or `bgw`.

use crate::bgw::{self, Job};
use crate::executor::{self, raise, Mode, RunError};
use crate::guc::Settings;
use crate::ledger::{self, NewRun};
use crate::store::{self, from_tstz};
use chrono::{DateTime, Utc};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use qbo::entities::{self, Entity};
use qbo::plan::{self, Chunk};
use serde::{Deserialize, Serialize};

/// The parameters of a backfill, as the caller gave them plus the resolved settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub entity: String,
    pub fecha_inicio: DateTime<Utc>,
    pub fecha_fin: DateTime<Utc>,
    pub chunk_size: i32,
    pub page_size: i32,
    pub minor_version: i32,
    pub connection: String,
    pub settings: Settings,
}

/// What validation established.
pub struct Validated {
    pub entity: &'static Entity,
    pub chunks: Vec<Chunk>,
    pub realm_id: String,
    pub environment: String,
}

fn bad(msg: String) -> RunError {
    RunError::new("22023", msg)
}

/// Checks every argument; the error names the bad value and what is allowed. Writes nothing.
pub fn validate(r: &RunRequest) -> Result<Validated, RunError> {
    store::forget_owner();
    let entity = entities::lookup(&r.entity).map_err(bad)?;
    if r.fecha_fin <= r.fecha_inicio {
        return Err(bad(format!(
            "fecha_fin ({}) must be later than fecha_inicio ({}): the window is [fecha_inicio, fecha_fin)",
            r.fecha_fin.to_rfc3339(),
            r.fecha_inicio.to_rfc3339()
        )));
    }
    if r.chunk_size < 1 {
        return Err(bad(format!(
            "chunk_size must be at least 1 day (got {})",
            r.chunk_size
        )));
    }
    if !(1..=1000).contains(&r.page_size) {
        return Err(bad(format!(
            "page_size must be between 1 and 1000 (got {}): QBO returns at most 1000 rows per page",
            r.page_size
        )));
    }
    if !(75..=999).contains(&r.minor_version) {
        return Err(bad(format!(
            "minor_version must be between 75 and 999 (got {}): QBO answers versions below 75 as 75",
            r.minor_version
        )));
    }
    for (name, url) in [
        ("qbo.api_base_url", &r.settings.api_base_url),
        ("qbo.token_url", &r.settings.token_url),
    ] {
        if url.as_deref().is_some_and(qbo::client::url_has_credentials) {
            return Err(bad(format!(
                "{name} holds credentials (user:password@host): every run stores its settings in qbo.runs.settings, which readers can see; use a URL without them"
            )));
        }
    }
    let chunks =
        plan::plan_chunks(r.fecha_inicio, r.fecha_fin, r.chunk_size).map_err(executor::qbo_err)?;
    let conn = match store::load_connection(&r.connection).map_err(|e| RunError::new("XX000", e))? {
        Some(c) => c,
        None => {
            return Err(bad(format!(
                "unknown connection \"{}\": register it with qbo.connect(...) or qbo.connect_from_file(...) (see qbo.connections)",
                r.connection.chars().take(70).collect::<String>()
            )))
        }
    };
    store::check_may_use(&conn.name)?;
    if conn.client_id.is_empty() || conn.client_secret.is_empty() || conn.refresh_token.is_empty() {
        return Err(bad(format!(
            "connection \"{}\" has no credentials: register them with qbo.connect(...)",
            r.connection
        )));
    }
    store::check_existing_raw_table(entity)?;
    Ok(Validated {
        entity,
        chunks,
        realm_id: conn.realm_id,
        environment: conn.environment,
    })
}

/// Creates the run and its chunk plan and takes its liveness lock (the caller commits and executes).
pub fn create_run(r: &RunRequest, v: &Validated, entry_point: &str) -> i64 {
    let run_id = insert_run(r, v, entry_point, "running");
    executor::lock_for_execution(run_id);
    run_id
}

/// Inserts the run and its chunk plan with the given status.
pub fn insert_run(r: &RunRequest, v: &Validated, entry_point: &str, status: &str) -> i64 {
    let settings = serde_json::to_value(&r.settings).unwrap_or_default();
    let _ = store::mark_interrupted();
    ledger::create_run(&NewRun {
        entity: v.entity.name,
        connection: &r.connection,
        realm_id: &v.realm_id,
        environment: &v.environment,
        fecha_inicio: r.fecha_inicio,
        fecha_fin: r.fecha_fin,
        chunk_size: r.chunk_size,
        page_size: r.page_size,
        minor_version: r.minor_version,
        settings,
        entry_point,
        status,
        chunks: &v.chunks,
    })
    .unwrap_or_else(|e| raise(&e.sqlstate, &e.message))
}

/// Checks that a run can be resumed (the caller commits; `execute` does the rest).
pub fn prepare_resume(run_id: i64) -> i64 {
    store::forget_owner();
    if let Err(e) = store::mark_interrupted() {
        raise("XX000", &e);
    }
    let run = ledger::load_run(run_id).unwrap_or_else(|e| raise(&e.sqlstate, &e.message));
    // checked before the run is touched: a role that may not use the connection cannot mark
    // another role's run as failed either
    if let Err(e) = store::check_may_use(&run.connection) {
        raise(&e.sqlstate, &format!("run {run_id}: {}", e.message));
    }
    if run.status == "running" {
        raise(
            "55006",
            &format!("run {run_id} is still running; wait for it, or cancel its session (qbo.runs.pid) and resume it then"),
        );
    }
    executor::lock_for_execution(run_id);
    run_id
}

pub(crate) fn required<T>(v: Option<T>, name: &str, func: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            "22004",
            &format!("{func}: argument {name} must not be NULL"),
        )
    })
}

fn instant(v: TimestampWithTimeZone, name: &str, func: &str) -> DateTime<Utc> {
    if v.is_infinity() || v.is_neg_infinity() {
        raise(
            "22023",
            &format!("{func}: {name} must be a finite timestamp"),
        );
    }
    from_tstz(v).unwrap_or_else(|| raise("22023", &format!("{func}: {name} is out of range")))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn request(
    func: &str,
    entity: Option<&str>,
    fecha_inicio: Option<TimestampWithTimeZone>,
    fecha_fin: Option<TimestampWithTimeZone>,
    chunk_size: Option<i32>,
    page_size: Option<i32>,
    minor_version: Option<i32>,
    connection: Option<&str>,
) -> RunRequest {
    RunRequest {
        entity: required(entity, "entity", func).to_owned(),
        fecha_inicio: instant(
            required(fecha_inicio, "fecha_inicio", func),
            "fecha_inicio",
            func,
        ),
        fecha_fin: instant(required(fecha_fin, "fecha_fin", func), "fecha_fin", func),
        chunk_size: required(chunk_size, "chunk_size", func),
        page_size: required(page_size, "page_size", func),
        minor_version: required(minor_version, "minor_version", func),
        connection: required(connection, "connection", func).to_owned(),
        settings: Settings::current(),
    }
}

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
    TableIterator::new(ledger::volumetry(run_id).unwrap_or_else(|e| raise(&e.sqlstate, &e.message)))
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
        raise(&e.sqlstate, &format!("qbo.backfill: {}", e.message));
    }
    let run_id = bgw::run_in_worker(Job::New(req));
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
    check_resumable(run_id);
    let run_id = bgw::run_in_worker(Job::Resume(run_id));
    volumetry(run_id)
}

/// The run exists (`load_run` says so otherwise) and the caller may use its connection.
fn check_resumable(run_id: i64) {
    let run = ledger::load_run(run_id).unwrap_or_else(|e| raise(&e.sqlstate, &e.message));
    if let Err(e) = store::check_may_use(&run.connection) {
        raise(
            &e.sqlstate,
            &format!("qbo.resume: run {run_id}: {}", e.message),
        );
    }
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

pub(crate) unsafe fn require_nonatomic(fcinfo: pg_sys::FunctionCallInfo, name: &str) {
    let ctx = (*fcinfo).context;
    let nonatomic = !ctx.is_null()
        && (*ctx).type_ == pg_sys::NodeTag::T_CallContext
        && !(*(ctx as *mut pg_sys::CallContext)).atomic;
    if !nonatomic {
        raise(
            "2D000",
            &format!(
                "{name} commits page by page, so it must be run with CALL outside an explicit transaction block (and not from a function or a multi-statement string); inside a transaction use SELECT * FROM {}(...)",
                if name.ends_with("resume") { "qbo.resume" } else { "qbo.backfill" }
            ),
        );
    }
}

pub(crate) unsafe fn arg<T: FromDatum>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<T> {
    pgrx::fcinfo::pg_getarg::<T>(fcinfo, n)
}

/// Emits the function-info record Postgres looks for (`PG_FUNCTION_INFO_V1`).
#[macro_export]
macro_rules! finfo_v1 {
    ($name:ident) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
finfo_v1!(pg_finfo_qbo_run_backfill);
finfo_v1!(pg_finfo_qbo_run_resume);

/// `CALL qbo.run_backfill(...)`: runs the backfill in this backend, committing page by page;
/// returns the run id through its INOUT parameter.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_backfill(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    require_nonatomic(fcinfo, "qbo.run_backfill");
    let f = "qbo.run_backfill";
    let req = request(
        f,
        arg::<&str>(fcinfo, 0),
        arg::<TimestampWithTimeZone>(fcinfo, 1),
        arg::<TimestampWithTimeZone>(fcinfo, 2),
        arg::<i32>(fcinfo, 3),
        arg::<i32>(fcinfo, 4),
        arg::<i32>(fcinfo, 5),
        arg::<&str>(fcinfo, 6),
    );
    let v = validate(&req).unwrap_or_else(|e| raise(&e.sqlstate, &format!("{f}: {}", e.message)));
    pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32);
    let run_id = create_run(&req, &v, "call");
    store::commit();
    crate::say!(
        "run {run_id}: {} [{} → {}) in {} chunks",
        v.entity.name,
        req.fecha_inicio.to_rfc3339(),
        req.fecha_fin.to_rfc3339(),
        v.chunks.len()
    );
    executor::execute(run_id, Mode::Call);
    pg_sys::SPI_finish();
    result_row(fcinfo, run_id)
}

/// `CALL qbo.run_resume(run_id)`: continues a run in this backend, committing page by page.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_resume(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    require_nonatomic(fcinfo, "qbo.run_resume");
    let run_id = required(arg::<i64>(fcinfo, 0), "run_id", "qbo.run_resume");
    pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32);
    prepare_resume(run_id);
    store::commit();
    executor::execute(run_id, Mode::Call);
    pg_sys::SPI_finish();
    pg_sys::Datum::from(0)
}

/// Builds the procedure's output row (its INOUT run_id).
unsafe fn result_row(fcinfo: pg_sys::FunctionCallInfo, run_id: i64) -> pg_sys::Datum {
    let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
    let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc);
    if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || tupdesc.is_null() {
        raise(
            "XX000",
            "qbo.run_backfill: cannot determine its result row type",
        );
    }
    let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
    let mut values = [pg_sys::Datum::from(run_id)];
    let mut nulls = [false];
    let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
    pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
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
    'pg_qbo: continues a failed, cancelled or interrupted run in this session, redoing only what did not complete, with the stored chunk plan and settings.';

CREATE VIEW qbo.entities AS SELECT * FROM qbo._entities();
COMMENT ON VIEW qbo.entities IS 'pg_qbo: every QBO entity qbo.backfill accepts, with its raw table, kind and CDC support.';
COMMENT ON COLUMN qbo.entities.entity IS 'QBO entity name (case-sensitive), the entity argument of qbo.backfill.';
COMMENT ON COLUMN qbo.entities.raw_table IS 'Table the records land in (created on first use).';
COMMENT ON COLUMN qbo.entities.kind IS 'name-list (has Active; inactive rows are fetched too), transaction or other.';
COMMENT ON COLUMN qbo.entities.cdc IS 'Whether QBO''s Change Data Capture supports the entity.';
COMMENT ON FUNCTION qbo._entities() IS 'pg_qbo internal: rows of qbo.entities.';

COMMENT ON FUNCTION qbo.backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: backfills one QBO entity over [fecha_inicio, fecha_fin) in chunk_size-day chunks (page_size 1..1000 rows per request) into raw.qb_<entity>, committing page by page in a background worker; relays progress as NOTICEs and returns one row of volumetry per chunk. Cancel stops the run (status cancelled, completed pages kept; continue with qbo.resume). Needs a free background worker slot; otherwise use CALL qbo.run_backfill.';
-- Entry points are for roles given qbo.grant_operator, not for PUBLIC.
REVOKE EXECUTE ON FUNCTION qbo.backfill(text, timestamptz, timestamptz, int, int, int, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION qbo.resume(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION qbo.schedule_backfill(text, timestamptz, timestamptz, int, int, int, text, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE qbo.run_backfill(text, timestamptz, timestamptz, int, int, int, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE qbo.run_resume(bigint) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE qbo.run_scheduled(bigint) FROM PUBLIC;

COMMENT ON FUNCTION qbo.resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run in a background worker, redoing only what did not complete with the stored plan and settings; returns the volumetry of every chunk of the run.';
"#,
    name = "procedures",
    requires = ["cron"],
    finalize
);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
