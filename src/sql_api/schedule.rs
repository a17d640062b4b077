//! `qbo.schedule_backfill` and `CALL qbo.run_scheduled` (see [`crate::run::cron`]).

use crate::pg::error::raise;
use crate::pg::time::{from_tstz, tstz};
use crate::run::cron;
use crate::sql_api::args;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// `qbo.schedule_backfill(...)`: a one-time pg_cron job that runs the backfill once at `run_at`.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn schedule_backfill(
    entity: Option<&str>,
    fecha_inicio: Option<TimestampWithTimeZone>,
    fecha_fin: Option<TimestampWithTimeZone>,
    chunk_size: default!(Option<i32>, 7),
    page_size: default!(Option<i32>, 1000),
    minor_version: default!(Option<i32>, 75),
    connection: default!(Option<&str>, "'default'"),
    run_at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(run_id, i64),
        name!(runs_at, TimestampWithTimeZone),
    ),
> {
    let f = "qbo.schedule_backfill";
    let req = args::request(
        f,
        entity,
        fecha_inicio,
        fecha_fin,
        chunk_size,
        page_size,
        minor_version,
        connection,
    );
    let run_at = args::required(run_at, "run_at", f);
    let at = from_tstz(run_at).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{f}: run_at must be a finite timestamp"),
        )
    });
    let (job_id, run_id, minute) = cron::schedule(f, &req, at);
    TableIterator::once((job_id, run_id, tstz(minute)))
}

crate::finfo_v1!(pg_finfo_qbo_run_scheduled);

/// `CALL qbo.run_scheduled(run_id)`: the command of a pg_cron job made by `qbo.schedule_backfill`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn qbo_run_scheduled(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: `fcinfo` is the live FunctionCallInfo Postgres passed to this C entry point (the
    // `LANGUAGE c` procedure qbo.run_scheduled below, whose only argument is run_id bigint).
    let run_id = unsafe { args::run_id_of_call(fcinfo, "qbo.run_scheduled") };
    // SAFETY: run_id_of_call raised unless this is a non-atomic CALL, run_scheduled's requirement.
    unsafe { cron::run_scheduled(run_id) };
    pg_sys::Datum::from(0)
}

extension_sql!(
    r#"
CREATE PROCEDURE qbo.run_scheduled(run_id bigint)
LANGUAGE c AS 'MODULE_PATHNAME', 'qbo_run_scheduled';
COMMENT ON PROCEDURE qbo.run_scheduled(bigint) IS
    'pg_qbo: the command of a pg_cron job made by qbo.schedule_backfill: moves its own job to a schedule that never fires and commits, has it removed once this session ends, then runs the scheduled run (only if it is still scheduled) in this session.';
COMMENT ON FUNCTION qbo.schedule_backfill(text, timestamptz, timestamptz, int, int, int, text, timestamptz) IS
    'pg_qbo: schedules a one-time backfill with pg_cron at the first whole minute (GMT) at or after run_at and at least 5 s from now (run_at at most 12 months ahead: pg_cron schedules have no year); returns the pg_cron job id, the run id (status scheduled until it starts) and the minute. The job can never fire again once it starts and is removed from cron.job after it ends, whether the backfill succeeds or fails. statement_timeout bounds the whole CALL.';
"#,
    name = "cron",
    requires = [schedule_backfill]
);
