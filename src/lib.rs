//! pg_qbo: backfill QuickBooks Online data into PostgreSQL from inside the database.
//!
//! Two crates, two layers. Everything that does not need Postgres (the QBO client, OAuth, paging,
//! planning, retry, the network thread, jsonb encoding) is the `qbo` crate (`crates/qbo`), which
//! has no pgrx in its dependency tree. This crate is the extension, in four folders, each
//! depending only on those listed after it:
//! - [`sql_api`]: the SQL surface only (`qbo.backfill`, `qbo.resume`, `CALL qbo.run_backfill`,
//!   `CALL qbo.run_resume`, `qbo.start_backfill`, `qbo.start_resume`, `qbo.cancel`,
//!   `qbo.schedule_backfill`, `qbo.entities`); argument parsing, then [`run`].
//! - [`run`]: one run: its request and validation, the executor (one code path for every entry
//!   point), tokens, the shared per-realm limiter, the background worker (of a session, or
//!   detached), cancelling a run by its id, the pg_cron job, the text of progress messages.
//! - [`store`]: pg_qbo's tables: raw tables and their upsert, the run ledger, connections,
//!   advisory locks.
//! - [`pg`]: Postgres glue that knows nothing of runs: errors, interrupts, SPI with a pinned
//!   `search_path`, transactions, fmgr entry points, settings, time conversion.
//!
//! `sql/schema.sql` holds the hand-written SQL objects (tables, views, SECURITY DEFINER helpers,
//! privileges); the `extension_sql!` blocks in [`sql_api`] hold those of the procedures.

::pgrx::pg_module_magic!(name, version);

mod pg;
mod run;
mod sql_api;
mod store;

/// Registers the settings when the library is loaded.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx captures a Rust backtrace for every Postgres error it carries across Rust code and
    // puts it in the error's DETAIL when the server runs with RUST_BACKTRACE set: a wall of
    // frames in a DBA's client instead of the message (and a capture per caught error). Errors
    // are reported by their message and SQLSTATE; set RUST_LIB_BACKTRACE=1 in the server's
    // environment to get backtraces back. No other thread exists yet in this process.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    pg::guc::init();
}

/// Helpers of the in-database tests.
#[cfg(any(test, feature = "pg_test"))]
#[path = "../pgrx-tests/support.rs"]
mod testing;

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("../pgrx-tests/suite.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
