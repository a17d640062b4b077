//! `qbo.distribute_raw_tables()`: Citus distribution of the raw tables made before Citus was
//! installed (or with `qbo.citus_distribute_raw_tables` off). New raw tables are distributed when
//! they are created ([`crate::store::raw::ensure_raw_table`]).

use crate::pg::error::PgError;
use crate::pg::spi::owner_exec;
use crate::store::locks::WRITE_LOCK_CLASS;
use crate::store::raw;
use pgrx::prelude::*;
use qbo::entities::ENTITIES;

/// Distributes every raw table of pg_qbo's catalog that exists and is still local, by
/// `realm_id`, co-located, moving its rows into the shards, in one transaction (an error leaves
/// every table as it was). For superusers (the privileges of `sql/schema.sql`: no grant); runs as
/// the extension owner, under the raw DDL lock, and only on tables [`raw::check_raw_trust`]
/// accepts. Returns one row per raw table that exists: its rows, and `distributed` or `already
/// distributed`.
#[pg_extern(volatile, parallel_unsafe)]
fn distribute_raw_tables() -> TableIterator<
    'static,
    (
        name!(raw_table, String),
        name!(rows, i64),
        name!(action, String),
    ),
> {
    let out = run().unwrap_or_else(|e| e.raise());
    TableIterator::new(out)
}

fn run() -> Result<Vec<(String, i64, String)>, PgError> {
    crate::pg::spi::forget_owner();
    if !raw::citus_installed()? {
        return Err(PgError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "qbo.distribute_raw_tables: Citus is not installed in this database: CREATE EXTENSION citus first (README, \"Scaling out\")",
        ));
    }
    owner_exec(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext('pg_qbo raw ddl'))",
        &[WRITE_LOCK_CLASS.into()],
    )
    .map_err(|e| PgError::db("qbo.distribute_raw_tables: the raw DDL lock", e))?;
    let mut out = Vec::new();
    for e in ENTITIES {
        if !raw::raw_table_is_there(e)? {
            continue;
        }
        raw::check_raw_trust(e)?;
        let name = format!("raw.{}", e.table);
        if raw::is_distributed(e.table)? {
            let rows = raw::row_count(e)?;
            out.push((name, rows, "already distributed".to_owned()));
        } else {
            let rows = raw::distribute(e)?;
            out.push((name, rows, "distributed".to_owned()));
        }
    }
    Ok(out)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION qbo.distribute_raw_tables() IS
    'pg_qbo: where Citus is installed in this database (CREATE EXTENSION citus, workers added), distributes every raw table pg_qbo made that is still local, by realm_id and co-located with each other, moving its rows into the shards, in one transaction; returns one row per raw table (raw_table, rows, action: distributed or already distributed). New raw tables are created distributed already (qbo.citus_distribute_raw_tables, on by default). Superusers only: it runs as the extension owner, takes the raw DDL lock, and refuses a raw table another role attached something to. Blocks writes to each table while its rows move: run it between runs. The ledger, connections and limiter stay on the coordinator.';
"#,
    name = "citus_functions",
    requires = ["schema", distribute_raw_tables],
);
