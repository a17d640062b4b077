//! Postgres glue: everything the rest of the extension needs from the server that is not a query
//! of pg_qbo's own tables. Nothing here knows what a run or a QBO entity is.
//!
//! - [`error`]: the error type of the extension and the one place errors are raised.
//! - [`interrupts`]: query cancel and termination checks, NOTICEs that cannot be interrupted.
//! - [`spi`]: SQL through SPI with a pinned `search_path`, as the caller or as the extension owner.
//! - [`xact`]: commits and rollbacks of a non-atomic (procedure or worker) SPI connection.
//! - [`fmgr`]: hand-written C entry points (procedures pgrx cannot declare).
//! - [`guc`]: the `qbo.*` settings.
//! - [`time`]: timestamptz <-> chrono.

pub mod error;
pub mod fmgr;
pub mod guc;
pub mod interrupts;
pub mod spi;
pub mod time;
pub mod xact;

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("tests.rs");
}
