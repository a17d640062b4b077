//! pg_qbo's tables: the raw tables records land in, the run ledger, the connections with their
//! secrets, and the advisory locks that serialise work on them. Values always travel as SPI
//! parameters; the only identifiers spliced into SQL text are raw table names taken from the static
//! entity catalog (`qbo::entities`).
//!
//! - [`raw`]: `raw.qb_<entity>` tables: creation, shape and trust checks, the page upsert.
//! - [`ledger`]: `qbo.runs`, `qbo.run_chunks`, `qbo.run_pages`.
//! - [`connections`]: `qbo._connections` (credentials, tokens) and who may use them.
//! - [`syncs`]: syncs (`qbo.runs` of kind sync, one `qbo.run_chunks` row per entity) and their
//!   watermarks (`qbo.sync_state`).
//! - [`locks`]: advisory locks (a run's liveness, token refreshes, writes of one realm and entity).

pub mod connections;
pub mod ledger;
pub mod locks;
pub mod raw;
pub mod syncs;

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("tests.rs");
}
