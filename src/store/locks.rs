//! Advisory locks: a run's liveness lock (a dead executor is detectable), the lock serialising
//! token refreshes of a realm, and the class of the lock serialising writes of one (realm, entity).

use crate::pg::error::{raise, PgError};
use crate::pg::spi::{exec, one, optional};
use pgrx::PgSqlErrorCode;

/// Advisory lock class of a live run: `pg_advisory_lock(RUN_LOCK_CLASS, run_id)`.
pub const RUN_LOCK_CLASS: i32 = 1_364_414_287;
/// Advisory lock class serialising token refreshes of one realm.
pub const TOKEN_LOCK_CLASS: i32 = 1_364_414_288;
/// Advisory lock class serialising writes of one (realm, entity).
pub const WRITE_LOCK_CLASS: i32 = 1_364_414_289;
// 1_364_414_290: the transaction lock `qbo._api_admit` takes on an app (hashtext of its client id)
// while it checks and counts the monthly request budget (sql/schema.sql).

pub fn lock_key(class: i32, key: &str) -> String {
    format!("{class}:{key}")
}

/// Takes the session lock serialising token refreshes of one realm (waits; cancellable).
pub fn lock_token(realm: &str) -> Result<(), PgError> {
    exec(
        "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))",
        &[TOKEN_LOCK_CLASS.into(), realm.into()],
    )
    .map_err(|e| PgError::db("pg_qbo advisory lock", e))
}

/// Releases [`lock_token`].
pub fn unlock_token(realm: &str) -> Result<(), PgError> {
    exec(
        "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
        &[TOKEN_LOCK_CLASS.into(), realm.into()],
    )
    .map_err(|e| PgError::db("pg_qbo advisory lock", e))
}

/// Takes the liveness lock of a run without waiting. `false`: another process executes it.
pub fn try_lock_run(run_id: i64) -> Result<bool, PgError> {
    one::<bool>(
        "SELECT pg_catalog.pg_try_advisory_lock($1, ($2 OPERATOR(pg_catalog.&) 2147483647)::pg_catalog.int4)",
        &[RUN_LOCK_CLASS.into(), run_id.into()],
    )
    .map(|v| v.unwrap_or(false))
    .map_err(|e| PgError::db("pg_qbo advisory lock", e))
}

/// Releases the liveness lock of a run.
pub fn unlock_run(run_id: i64) -> Result<(), PgError> {
    exec(
        "SELECT pg_catalog.pg_advisory_unlock($1, ($2 OPERATOR(pg_catalog.&) 2147483647)::pg_catalog.int4)",
        &[RUN_LOCK_CLASS.into(), run_id.into()],
    )
    .map_err(|e| PgError::db("pg_qbo advisory lock", e))
}

/// The process holding the liveness lock of run `run_id` in this database: the backend or worker
/// executing it (`None`: no live process does). Read from `pg_locks`, never from
/// `qbo.runs.pid`, which a run keeps after it stopped (and the system may since have given that
/// pid to another process).
pub fn run_lock_holder(run_id: i64) -> Result<Option<i32>, PgError> {
    optional(one::<i32>(
        "SELECT l.pid FROM pg_catalog.pg_locks l
          WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
            AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                                    WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
            AND l.classid OPERATOR(pg_catalog.=) $1::pg_catalog.oid
            AND l.objid OPERATOR(pg_catalog.=) ($2 OPERATOR(pg_catalog.&) 2147483647)::pg_catalog.oid
            AND l.objsubid OPERATOR(pg_catalog.=) 2
          LIMIT 1",
        &[RUN_LOCK_CLASS.into(), run_id.into()],
    ))
    .map_err(|e| PgError::db("pg_qbo advisory lock (pg_locks)", e))
}

/// Takes the liveness lock of a run being created or reopened, in that same transaction; an error
/// if another process holds it.
pub fn lock_for_execution(run_id: i64) {
    match try_lock_run(run_id) {
        Ok(true) => {}
        Ok(false) => raise(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("run {run_id} is already being executed by another session; wait for it, or stop it with SELECT qbo.cancel({run_id})"),
        ),
        Err(e) => e.raise(),
    }
}
