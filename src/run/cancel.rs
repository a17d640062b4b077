//! Cancelling a run by its id (`qbo.cancel`), whatever started it: `CALL qbo.run_backfill` /
//! `run_resume`, `qbo.backfill` / `qbo.resume`, a pg_cron job, or `qbo.start_backfill` /
//! `start_resume`.
//!
//! The run is stopped the way a cancel of its statement stops it: SIGINT (a query cancel) to the
//! process executing it, whose executor rolls back the page in flight, marks the run `cancelled`
//! and lets go of it. That process is the one holding the run's liveness lock in `pg_locks`
//! ([`locks::run_lock_holder`]), never `qbo.runs.pid` alone: a run keeps its last pid after it
//! stopped, and the system may since have given that pid to another process.
//!
//! Who may: the role that started the run (`qbo.runs.run_by`) or a superuser, checked here and
//! nowhere else. `pg_cancel_backend` is not used because its rule is about processes, not runs:
//! it lets a caller signal any backend whose *session* role it has the privileges of (or any
//! backend with `pg_signal_backend`), and refuses a superuser's backend to non-superusers. A run's
//! process is not always logged in as `run_by` (a `CALL` after `SET ROLE` runs as the session's
//! login role, a superuser's session may run a run for another role), so that rule would both
//! refuse the run's owner and allow roles that merely share a session role. Checking `run_by`
//! and signalling the lock holder directly gives exactly the rule above.

use crate::pg::error::{raise, PgError};
use crate::pg::interrupts::{self, held};
use crate::pg::spi;
use crate::run::cron;
use crate::store::{ledger, locks};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long [`cancel`] waits for the run's process to let go of the run once signalled.
pub const WAIT: Duration = Duration::from_secs(30);

/// Cancels run `run_id`; `func` names the entry point in messages. Returns the run's status once
/// its process has let go of it (`cancelled`, or `succeeded`/`failed` should it have ended
/// first), or the status of a run that was not running (after a NOTICE: nothing to cancel).
pub fn cancel(run_id: i64, func: &str) -> String {
    // SAFETY: XactIsoLevel is a plain int of this backend, read on its own thread (SQL entry
    // points run only there) inside the transaction it describes.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            format!("{func} needs READ COMMITTED (it reads the outcome the run commits once cancelled); run it outside a REPEATABLE READ or SERIALIZABLE transaction"),
        );
    }
    spi::forget_owner();
    // a run whose process is gone is `interrupted`, not running
    ledger::mark_interrupted().unwrap_or_else(|e| e.raise());
    let (status, run_by) = ledger::status_and_owner(run_id).unwrap_or_else(|e| e.raise());
    let me = spi::one::<String>("SELECT CURRENT_USER::pg_catalog.text", &[])
        .unwrap_or_else(|e| PgError::db("pg_qbo current role", e).raise())
        .unwrap_or_default();
    // SAFETY: on the backend's own thread, inside the caller's transaction: superuser() looks
    // the current user up in the catalog cache.
    let superuser = unsafe { pg_sys::superuser() };
    if run_by != me && !superuser {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "{func}: run {run_id} was started by role \"{run_by}\"; only \"{run_by}\" or a superuser may cancel it"
            ),
        );
    }
    // the process executing the run is the one holding its lock, whatever the status read a
    // moment ago (the run may have just ended, or be starting)
    let Some(pid) = locks::run_lock_holder(run_id).unwrap_or_else(|e| e.raise()) else {
        let status = if status == "running" {
            // it stopped between the two reads (or its process just died): say what it is now
            ledger::mark_interrupted().unwrap_or_else(|e| e.raise());
            ledger::status_and_owner(run_id)
                .unwrap_or_else(|e| e.raise())
                .0
        } else {
            status
        };
        return nothing_to_cancel(run_id, status);
    };
    // a process that ended since the lookup is simply not signalled: the wait below sees the
    // lock gone at once
    interrupts::send_cancel(pid);
    let t0 = Instant::now();
    loop {
        match locks::run_lock_holder(run_id).unwrap_or_else(|e| e.raise()) {
            Some(p) if p == pid => {}
            // released (or already taken again by a resume): the outcome is committed
            _ => break,
        }
        if t0.elapsed() >= WAIT {
            let (status, _) = ledger::status_and_owner(run_id).unwrap_or_else(|e| e.raise());
            held(|| {
                warning!(
                    "run {run_id}: its process (pid {pid}) was sent a cancel but still executes the run after {} s (status {status}); it stops at its next cancel check: see qbo.runs and pg_stat_activity",
                    WAIT.as_secs()
                )
            });
            return status;
        }
        interrupts::pause(20);
    }
    let (status, _) = ledger::status_and_owner(run_id).unwrap_or_else(|e| e.raise());
    status
}

/// The NOTICE for a run that is not running; returns its status.
fn nothing_to_cancel(run_id: i64, status: String) -> String {
    if status == "scheduled" {
        let job = cron::job_name(run_id);
        crate::say!(
            "run {run_id} is not running (status scheduled): there is nothing to cancel; to keep its pg_cron job from starting it, remove the job with SELECT cron.unschedule('{job}')"
        );
    } else {
        crate::say!("run {run_id} is not running (status {status}): there is nothing to cancel");
    }
    status
}
