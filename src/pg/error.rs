//! Errors that reach Postgres: [`RunError`] carries a SQLSTATE and a message; [`raise`] turns one
//! into a Postgres ERROR.

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use qbo::error::QboError;

/// An error that ends a run, with the SQLSTATE it is raised with.
#[derive(Debug, Clone)]
pub struct RunError {
    pub sqlstate: String,
    pub message: String,
}

impl RunError {
    pub fn new(sqlstate: &str, message: impl Into<String>) -> Self {
        RunError {
            sqlstate: sqlstate.to_owned(),
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        RunError::new("XX000", message)
    }
}

/// Raises a Postgres ERROR with the given SQLSTATE.
pub fn raise(sqlstate: &str, message: &str) -> ! {
    let code = sqlstate_code(sqlstate);
    pgrx::pg_sys::panic::ErrorReport::new(code, message.to_owned(), "").report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}

/// Maps the SQLSTATEs pg_qbo raises to pgrx's codes.
pub fn sqlstate_code(s: &str) -> PgSqlErrorCode {
    let b = s.as_bytes();
    if b.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    // MAKE_SQLSTATE: six bits per character, first character lowest.
    let packed = b.iter().enumerate().fold(0i32, |acc, (i, c)| {
        acc | ((((*c as i32) - ('0' as i32)) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

/// The 5-character text of a SQLSTATE.
pub fn unpack_sqlstate(code: PgSqlErrorCode) -> String {
    let v = code as isize as i32;
    (0..5)
        .map(|i| (((v >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// SQLSTATE and message of a caught ERROR.
pub fn describe(caught: &CaughtError) -> (String, String) {
    match caught {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            (unpack_sqlstate(r.sql_error_code()), r.message().to_owned())
        }
        CaughtError::RustPanic { ereport, .. } => {
            ("XX000".to_owned(), ereport.message().to_owned())
        }
    }
}

/// Converts a core error to a run error (its text never holds a secret).
pub fn qbo_err(e: QboError) -> RunError {
    RunError::new(e.sqlstate(), e.to_string())
}
