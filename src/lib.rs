//! pg_qbo: backfill QuickBooks Online data into PostgreSQL from inside the database.
//!
//! Plain-Rust modules (tested without Postgres): `entities` (catalog), `plan` (chunk planner),
//! `query` (QBO query text), `pager` (time-cursor paging of one chunk), `fault` (error bodies),
//! `retry` (backoff policy), `qbo` (HTTP client), `oauth` (token refresh), `error`, `jsonb`, `jsonb_encode` (records to jsonb's binary format),
//! `runtime` (interruptible async inside a backend), `budget` (the memory bound of a run).
//! Postgres-facing modules: `guc` (settings), `store` (raw tables, upserts, tokens),
//! `ledger` (qbo.runs / run_chunks / run_pages), `tokens` (token cache and refresh),
//! `executor` (one run, one code path), `bgw` (the background worker of the SRF entry points),
//! `cron` (one-time pg_cron backfills),
//! `api` (the SQL surface).

::pgrx::pg_module_magic!(name, version);

mod api;
mod bgw;
mod cron;
mod executor;
mod guc;
mod ledger;
mod limiter;
mod store;
mod tokens;

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
    guc::init();
}

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
