//! Hand-written fmgr entry points: pgrx declares functions, not procedures that COMMIT, so the
//! `CALL` entry points are plain C functions; these are their helpers.

use crate::pg::error::raise;
use pgrx::prelude::*;

pub(crate) unsafe fn require_nonatomic(fcinfo: pg_sys::FunctionCallInfo, name: &str) {
    let ctx = (*fcinfo).context;
    let nonatomic = !ctx.is_null()
        && (*ctx).type_ == pg_sys::NodeTag::T_CallContext
        && !(*(ctx as *mut pg_sys::CallContext)).atomic;
    if !nonatomic {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION,
            format!(
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

/// Builds the procedure's output row (its INOUT run_id).
pub unsafe fn result_row(fcinfo: pg_sys::FunctionCallInfo, run_id: i64) -> pg_sys::Datum {
    let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
    let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc);
    if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || tupdesc.is_null() {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "qbo.run_backfill: cannot determine its result row type",
        );
    }
    let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
    let mut values = [pg_sys::Datum::from(run_id)];
    let mut nulls = [false];
    let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
    pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
}
