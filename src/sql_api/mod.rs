//! The SQL surface, and nothing else: each function parses its arguments, then hands over to
//! [`crate::run`]. Privileges of every entry point are in `sql/schema.sql` and in the
//! `extension_sql!` blocks here.
//!
//! - [`backfill`]: `qbo.backfill`, `qbo.resume` (set-returning, run in a background worker),
//!   `CALL qbo.run_backfill` / `CALL qbo.run_resume` (run in the caller's backend, committing page
//!   by page), and `qbo.entities`.
//! - [`detached`]: `qbo.start_backfill`, `qbo.start_resume` (a run in a background worker tied
//!   to no session) and `qbo.cancel` (stops a run by its id).
//! - [`schedule`]: `qbo.schedule_backfill` and the procedure its pg_cron job calls.
//! - [`sync`]: `CALL qbo.run_sync` (keeps raw.* current through Change Data Capture).
//! - [`citus`]: `qbo.distribute_raw_tables()` (Citus distribution of existing raw tables).
//! - [`args`]: reading the arguments (NULLs, infinite timestamps) into a run request.

pub mod args;
pub mod backfill;
pub mod citus;
pub mod detached;
pub mod schedule;
pub mod sync;

pgrx::extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("tests.rs");
}
