//! Helpers shared by the in-database tests (compiled for `cargo pgrx test` only).

use pgrx::prelude::*;

/// The message of the ERROR `sql` raises (`"no error"` if it raises none).
pub fn error_of(sql: &str) -> String {
    PgTryBuilder::new(|| {
        Spi::run(sql).expect("statement");
        String::from("no error")
    })
    .catch_others(|e| match e {
        pgrx::pg_sys::panic::CaughtError::PostgresError(r)
        | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_owned(),
        pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
    })
    .execute()
}

/// Registers connection `default` (realm 123145, sandbox) with made-up credentials.
pub fn with_connection() {
    Spi::run("SELECT qbo.connect('123145', 'cid', 'csecret', 'rtoken', 'sandbox', 'default')")
        .expect("connect");
}
