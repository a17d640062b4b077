//! The one error type at the Postgres boundary, and the one place an ERROR is raised.
//!
//! [`PgError`] carries a typed SQLSTATE (pgrx's [`PgSqlErrorCode`]) and the message a DBA reads.
//! Every error of the extension becomes one: the core's [`QboError`] through `From` (it keeps the
//! SQLSTATE the core chose: 28000 for refused credentials, 08000 for QBO or the network failing,
//! 08P01 for answers QBO should not have sent, 54000 for a memory limit...), a failed statement on
//! pg_qbo's own tables through [`PgError::db`] (an internal error, XX000, naming the table it was
//! about and the real cause: never a QBO-side SQLSTATE), and an ERROR Postgres raised and pgrx
//! caught through `From<&CaughtError>` (its own SQLSTATE and words). [`PgError::raise`] reports
//! it; nothing else in the crate calls `ereport`.
//!
//! SQLSTATEs travel as text only where they leave the process: the ledger's `error_sqlstate`
//! column and the worker's shared segment ([`PgError::sqlstate`], [`PgError::from_sqlstate`]).

use std::fmt;

use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use qbo::error::QboError;

/// An error on its way to Postgres: a typed SQLSTATE and the message.
#[derive(Debug, Clone)]
pub struct PgError {
    pub code: PgSqlErrorCode,
    pub message: String,
}

impl PgError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        PgError {
            code,
            message: message.into(),
        }
    }

    /// An internal error (XX000): a broken invariant of pg_qbo itself.
    pub fn internal(message: impl Into<String>) -> Self {
        PgError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message)
    }

    /// A bad argument (22023); the message names the value and what is allowed.
    pub fn invalid(message: impl Into<String>) -> Self {
        PgError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// A statement on pg_qbo's own tables that SPI could not run or whose result it could not
    /// read (e.g. a column whose type was changed by hand): an internal error naming `what`
    /// (`"pg_qbo ledger"`, `"pg_qbo token store"`, ...) and the cause.
    pub fn db(what: &str, e: pgrx::spi::Error) -> Self {
        PgError::internal(format!("{what}: {e}"))
    }

    /// An error whose SQLSTATE was stored as text (the ledger, the worker's segment); an
    /// unreadable one is internal.
    pub fn from_sqlstate(sqlstate: &str, message: impl Into<String>) -> Self {
        PgError::new(sqlstate_code(sqlstate), message)
    }

    /// The 5-character SQLSTATE, for the ledger.
    pub fn sqlstate(&self) -> String {
        unpack_sqlstate(self.code)
    }

    pub fn is(&self, code: PgSqlErrorCode) -> bool {
        self.code == code
    }

    /// The same error with `prefix: ` before its message (the entry point or run it concerns).
    pub fn prefixed(self, prefix: impl fmt::Display) -> Self {
        PgError {
            message: format!("{prefix}: {}", self.message),
            ..self
        }
    }

    /// Raises it as a Postgres ERROR (without pgrx's backtrace detail: the message and SQLSTATE
    /// are what a DBA needs).
    pub fn raise(self) -> ! {
        ErrorReport::new(self.code, self.message, "").report(PgLogLevel::ERROR);
        unreachable!("ERROR returned")
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A core error keeps its SQLSTATE; its text never holds a secret (the core masks it).
impl From<QboError> for PgError {
    fn from(e: QboError) -> Self {
        PgError::from_sqlstate(e.sqlstate(), e.to_string())
    }
}

/// An SPI failure with no better context (prefer [`PgError::db`], which names the table).
impl From<pgrx::spi::Error> for PgError {
    fn from(e: pgrx::spi::Error) -> Self {
        PgError::db("pg_qbo", e)
    }
}

/// An ERROR caught by `PgTryBuilder` keeps Postgres' SQLSTATE and words; a Rust panic is internal.
impl From<&CaughtError> for PgError {
    fn from(caught: &CaughtError) -> Self {
        match caught {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
                PgError::new(r.sql_error_code(), r.message())
            }
            CaughtError::RustPanic { ereport, .. } => PgError::internal(ereport.message()),
        }
    }
}

/// Raises a Postgres ERROR with this SQLSTATE and message ([`PgError::raise`]).
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    PgError::new(code, message).raise()
}

/// The code of a 5-character SQLSTATE (anything else is internal).
fn sqlstate_code(s: &str) -> PgSqlErrorCode {
    let b = s.as_bytes();
    if b.len() != 5
        || !b
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    // MAKE_SQLSTATE: six bits per character, first character lowest.
    let packed = b.iter().enumerate().fold(0i32, |acc, (i, c)| {
        acc | ((((*c as i32) - ('0' as i32)) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

/// The 5-character text of a SQLSTATE.
fn unpack_sqlstate(code: PgSqlErrorCode) -> String {
    let v = code as isize as i32;
    (0..5)
        .map(|i| (((v >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_round_trip() {
        for (text, code) in [
            ("22023", PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE),
            ("42501", PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE),
            ("57014", PgSqlErrorCode::ERRCODE_QUERY_CANCELED),
            ("08P01", PgSqlErrorCode::ERRCODE_PROTOCOL_VIOLATION),
            ("XX000", PgSqlErrorCode::ERRCODE_INTERNAL_ERROR),
            ("54000", PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED),
        ] {
            let e = PgError::from_sqlstate(text, "m");
            assert_eq!(e.code, code, "{text}");
            assert_eq!(e.sqlstate(), text);
        }
        // unreadable text is internal, never a guess
        assert!(PgError::from_sqlstate("", "m").is(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR));
        assert!(PgError::from_sqlstate("2202", "m").is(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR));
        assert!(PgError::from_sqlstate("x2023", "m").is(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR));
    }

    #[test]
    fn a_core_error_keeps_its_sqlstate_and_text() {
        let e = PgError::from(QboError::Network("connection reset".into()));
        assert_eq!(e.sqlstate(), "08006");
        assert_eq!(
            e.message,
            QboError::Network("connection reset".into()).to_string()
        );
        let e = PgError::from(QboError::BadResponse("truncated".into()));
        assert_eq!(e.sqlstate(), "08P01");
    }

    #[test]
    fn a_failed_statement_is_internal_and_names_what_failed() {
        let e = PgError::db("pg_qbo token store", pgrx::spi::Error::InvalidPosition);
        assert!(e.is(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR));
        assert!(
            e.message.starts_with("pg_qbo token store: "),
            "{}",
            e.message
        );
        let e = PgError::invalid("x").prefixed("qbo.backfill");
        assert_eq!(e.message, "qbo.backfill: x");
        assert_eq!(e.sqlstate(), "22023");
    }
}
