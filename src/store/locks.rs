//! Advisory locks: a run's liveness lock (a dead executor is detectable), the lock serialising
//! token refreshes of a realm, the class of the lock serialising writes of one (realm, entity), and
//! the server-wide slots of pg_qbo's background workers (`qbo.max_workers`).

use crate::pg::error::{raise, PgError};
use crate::pg::spi::{exec, one, optional};
use pgrx::PgSqlErrorCode;

/// Advisory lock class of a live run: `pg_advisory_lock(RUN_LOCK_CLASS, run_id)`.
pub const RUN_LOCK_CLASS: i32 = 1_364_414_287;
/// Advisory lock class serialising token refreshes of one realm.
pub const TOKEN_LOCK_CLASS: i32 = 1_364_414_288;
/// Advisory lock class serialising writes of one (realm, entity).
pub const WRITE_LOCK_CLASS: i32 = 1_364_414_289;
/// Advisory lock class of the pg_qbo worker slots (`qbo.max_workers`), taken in database 0 (see
/// [`claim_worker_slot`]).
pub const WORKER_SLOT_CLASS: i32 = 1_364_414_291;
/// Advisory lock class of a realm's sync (session lock, held while the sync executes): a second
/// sync of the realm finds it taken and returns at once.
pub const SYNC_LOCK_CLASS: i32 = 1_364_414_292;
// 1_364_414_290: the transaction lock `qbo._api_admit` takes on an app (hashtext of its client id)
// while it checks and counts the monthly request budget (sql/schema.sql).

/// Claims one of the `cap` pg_qbo worker slots for the rest of this process, without waiting:
/// the first free one of the session-level advisory locks (WORKER_SLOT_CLASS, 0 .. cap - 1) in
/// database 0, so that the count spans every database of the server. Taking a lock is atomic, so
/// two workers starting at once never get the same slot; the lock goes when the process ends,
/// however it ends (a crash resets the lock table with the rest of shared memory). `None`: all
/// `cap` slots are held. Called by a worker on its own thread, connected to its database.
pub fn claim_worker_slot(cap: i32) -> Option<i32> {
    use pgrx::pg_sys;
    (0..cap.max(0)).find(|&slot| {
        let tag = pg_sys::LOCKTAG {
            locktag_field1: 0, // database 0: one count for the whole server
            locktag_field2: WORKER_SLOT_CLASS as u32,
            locktag_field3: slot as u32,
            locktag_field4: 2, // the (int4, int4) form of pg_advisory_lock, as pg_locks shows it
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        };
        // SAFETY: on the process's own thread, connected to a database (MyProc is set): what
        // pg_try_advisory_lock does, with a tag that lives across the call. sessionLock = true:
        // held until the process exits, whatever its transactions do; dontWait = true:
        // LOCKACQUIRE_NOT_AVAIL instead of waiting.
        let got = unsafe { pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as i32, true, true) };
        got != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    })
}

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

/// Takes the sync lock of realm `realm` without waiting. `false`: a sync of the realm is running.
pub fn try_lock_sync(realm: &str) -> Result<bool, PgError> {
    one::<bool>(
        "SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2))",
        &[SYNC_LOCK_CLASS.into(), realm.into()],
    )
    .map(|v| v.unwrap_or(false))
    .map_err(|e| PgError::db("pg_qbo advisory lock", e))
}

/// Releases [`try_lock_sync`].
pub fn unlock_sync(realm: &str) -> Result<(), PgError> {
    exec(
        "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
        &[SYNC_LOCK_CLASS.into(), realm.into()],
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
