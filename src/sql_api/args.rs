//! Reading an entry point's arguments into a [`RunRequest`]: NULL and infinite values are refused
//! with the argument's name.

use crate::pg::error::raise;
use crate::pg::fmgr;
use crate::pg::guc::Settings;
use crate::pg::time::from_tstz;
use crate::run::request::RunRequest;
use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::{pg_sys, PgSqlErrorCode};

pub(crate) fn required<T>(v: Option<T>, name: &str, func: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: argument {name} must not be NULL"),
        )
    })
}

/// The `run_id` of `CALL name(run_id bigint)`, after checking the call is non-atomic (it commits).
///
/// # Safety
/// `fcinfo` is the live FunctionCallInfo of a `LANGUAGE c` procedure whose first argument is a
/// bigint.
pub(crate) unsafe fn run_id_of_call(fcinfo: pg_sys::FunctionCallInfo, name: &str) -> i64 {
    // SAFETY: `fcinfo` is live (the caller's obligation).
    unsafe { fmgr::require_nonatomic(fcinfo, name) };
    // SAFETY: as above; index 0 exists and is a bigint (the caller's obligation), read as i64.
    required(unsafe { fmgr::arg::<i64>(fcinfo, 0) }, "run_id", name)
}

fn instant(v: TimestampWithTimeZone, name: &str, func: &str) -> DateTime<Utc> {
    if v.is_infinity() || v.is_neg_infinity() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: {name} must be a finite timestamp"),
        );
    }
    from_tstz(v).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: {name} is out of range"),
        )
    })
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
