//! Hand-written fmgr entry points: pgrx declares functions, not procedures that COMMIT, so the
//! `CALL` entry points are plain C functions; these are their helpers.

use crate::pg::error::raise;
use pgrx::prelude::*;

/// Raises unless this C entry point was called by a non-atomic `CALL` (one that may commit).
///
/// # Safety
/// `fcinfo` must be the live `FunctionCallInfo` Postgres passed to the calling C entry point.
pub(crate) unsafe fn require_nonatomic(fcinfo: pg_sys::FunctionCallInfo, name: &str) {
    // SAFETY: the caller guarantees `fcinfo` is the live FunctionCallInfo of this call.
    let ctx = unsafe { (*fcinfo).context };
    // SAFETY: fmgr sets `context` to null or to a valid Node for the duration of the call (for a
    // procedure, the CallContext ExecuteCallStmt made); its tag is read only when it is non-null,
    // and it is read as a CallContext only when the tag says it is one.
    let nonatomic = !ctx.is_null()
        && unsafe {
            (*ctx).type_ == pg_sys::NodeTag::T_CallContext
                && !(*(ctx as *mut pg_sys::CallContext)).atomic
        };
    if !nonatomic {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION,
            format!(
                "{name} commits page by page, so it must be run with CALL outside an explicit transaction block (and not from a function or a multi-statement string){}",
                if name.ends_with("resume") {
                    "; inside a transaction use SELECT * FROM qbo.resume(...)"
                } else if name.ends_with("sync") {
                    ""
                } else {
                    "; inside a transaction use SELECT * FROM qbo.backfill(...)"
                }
            ),
        );
    }
}

/// Argument `n` of a C entry point (`None` for SQL NULL).
///
/// # Safety
/// `fcinfo` must be the live `FunctionCallInfo` Postgres passed to the calling C entry point,
/// `n` less than its `nargs`, and `T` the Rust type of argument `n`'s SQL type as the SQL
/// declaration of the procedure gives it (`&str` for `text`, `i64` for `bigint`, ...). A borrowed
/// `T` (`&str`) points into the argument's datum or its detoasted copy in the current memory
/// context: it must not be kept past the call, nor past a commit.
pub(crate) unsafe fn arg<T: FromDatum>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<T> {
    // SAFETY: exactly pg_getarg's own requirements, passed on to our caller (see `# Safety`).
    unsafe { pgrx::fcinfo::pg_getarg::<T>(fcinfo, n) }
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

/// Builds the procedure's output row (its INOUT run_id).
///
/// # Safety
/// `fcinfo` must be the live `FunctionCallInfo` of a call of a procedure whose only output
/// parameter is one `bigint` (`qbo.run_backfill`'s INOUT run_id), and the current memory context
/// must live until Postgres has read the returned row: the context the procedure was called in
/// (after `SPI_finish`, which switches back to it).
pub unsafe fn result_row(fcinfo: pg_sys::FunctionCallInfo, run_id: i64) -> pg_sys::Datum {
    // SAFETY: passed on from the caller (see `# Safety`).
    unsafe { result_row_opt(fcinfo, Some(run_id)) }
}

/// [`result_row`], with a NULL run_id for `None`.
///
/// # Safety
/// As [`result_row`].
pub unsafe fn result_row_opt(
    fcinfo: pg_sys::FunctionCallInfo,
    run_id: Option<i64>,
) -> pg_sys::Datum {
    let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
    // SAFETY: `fcinfo` is the live FunctionCallInfo of this call (caller's guarantee), whose
    // flinfo/fn_expr get_call_result_type reads; the result type oid is not asked for (null is
    // allowed) and `tupdesc` is a local out-parameter.
    let class = unsafe { pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc) };
    if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || tupdesc.is_null() {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "pg_qbo procedure: cannot determine its result row type",
        );
    }
    // SAFETY: `tupdesc` is the non-null descriptor of a composite result that
    // get_call_result_type just returned (checked above; `raise` does not return).
    let tupdesc = unsafe { pg_sys::BlessTupleDesc(tupdesc) };
    let mut values = [pg_sys::Datum::from(run_id.unwrap_or(0))];
    let mut nulls = [run_id.is_none()];
    // SAFETY: `tupdesc` is the blessed descriptor of the procedure's output row, which has one
    // column (the caller's guarantee: the bigint run_id), so heap_form_tuple reads one element of
    // each of the local one-element `values` and `nulls` arrays; a bigint is passed by value.
    let tuple =
        unsafe { pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr()) };
    // SAFETY: heap_form_tuple returns a valid tuple palloc'd in the current memory context (it
    // raises rather than return null), whose `t_data` header carries the blessed row type.
    unsafe { pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data) }
}
