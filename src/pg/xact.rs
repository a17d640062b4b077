//! Transactions of a non-atomic SPI connection (a procedure called by `CALL`, or a background
//! worker): commit, roll back, and the outer snapshot a worker needs; cleanup after a caught error.

use pgrx::prelude::*;

thread_local! {
    /// Whether we pushed the active snapshot of the current transaction ourselves.
    static OWN_SNAPSHOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Outside a portal (a background worker) SPI needs an outer active snapshot, which a procedure
/// gets from its portal: push one for the current transaction. A no-op inside a portal.
pub fn ensure_outer_snapshot() {
    // SAFETY: on the backend's own thread, inside a transaction (every caller runs after
    // StartTransactionCommand or SPI_commit/SPI_rollback, which start the next one), as
    // GetTransactionSnapshot requires; ActivePortal is a backend global read only for null.
    // PushActiveSnapshot copies the static snapshot GetTransactionSnapshot returns, and the flag
    // makes release_outer_snapshot pop it before the transaction ends.
    unsafe {
        if pg_sys::ActivePortal.is_null() && !pg_sys::ActiveSnapshotSet() {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            OWN_SNAPSHOT.with(|f| f.set(true));
        }
    }
}

/// Pops the snapshot [`ensure_outer_snapshot`] pushed (before a commit: a transaction must end
/// with no active snapshot of ours).
pub fn release_outer_snapshot() {
    if OWN_SNAPSHOT.with(|f| f.replace(false)) {
        // SAFETY: on the backend's own thread, in the transaction whose snapshot
        // ensure_outer_snapshot pushed (the flag was set then); it is popped only if a snapshot
        // is still active, so the pop never underflows the stack.
        unsafe {
            if pg_sys::ActiveSnapshotSet() {
                pg_sys::PopActiveSnapshot();
            }
        }
    }
}

/// Commits the current transaction of a non-atomic SPI connection and starts a new one.
pub fn commit() {
    release_outer_snapshot();
    // SAFETY: on the backend's own thread; SPI_commit itself raises (invalid transaction
    // termination) unless the current SPI connection is non-atomic, which is this module's
    // contract, and none of our snapshots is active any more (popped just above).
    unsafe { pg_sys::SPI_commit() }
    ensure_outer_snapshot();
}

/// Rolls the current transaction back and starts a new one (after a caught error).
pub fn rollback() {
    // SPI_rollback insists that every active snapshot belongs to a portal: pop ours and any a
    // failed statement left behind, down to the portal's own (none in a background worker).
    OWN_SNAPSHOT.with(|f| f.set(false));
    // SAFETY: on the backend's own thread, in a transaction. A non-null ActivePortal is the
    // portal Postgres is running (the CALL's), valid while it runs; the active-snapshot stack is
    // popped only while it is non-empty. SPI_rollback raises unless the current SPI connection
    // is non-atomic (this module's contract) and starts the next transaction.
    unsafe {
        let portal_snapshot = if pg_sys::ActivePortal.is_null() {
            std::ptr::null_mut()
        } else {
            (*pg_sys::ActivePortal).portalSnapshot
        };
        while pg_sys::ActiveSnapshotSet() && pg_sys::GetActiveSnapshot() != portal_snapshot {
            pg_sys::PopActiveSnapshot();
        }
        pg_sys::SPI_rollback()
    }
    ensure_outer_snapshot();
}

/// Runs one cleanup step after an error; an ERROR it raises is caught, its transaction rolled
/// back, and `false` returned (the cleanup goes on: the run's own error is the one to report).
pub fn attempt(step: impl FnOnce()) -> bool {
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        step();
        true
    }))
    .catch_others(|_| {
        recover();
        false
    })
    .execute()
}

/// Pops SPI connections left by unwound code down to our non-atomic one, and rolls the current
/// transaction back.
pub fn recover() {
    // SAFETY: on the backend's own thread. SPI_finish closes the innermost SPI connection, one
    // that code unwound by the caught error left open (pgrx's own connections close themselves
    // while unwinding); it returns a negative code when no connection is left, which ends the
    // loop, so it never pops past the bottom of the stack.
    unsafe {
        while !pg_sys::SPI_inside_nonatomic_context() {
            if pg_sys::SPI_finish() < 0 {
                break;
            }
        }
    }
    rollback();
}

/// Runs `f` in a non-atomic SPI connection of the current `CALL`, so that it may commit as it
/// goes ([`commit`]); the connection is closed when `f` returns, or by the transaction's abort if
/// an ERROR leaves `f`.
///
/// # Safety
/// The current call must be a non-atomic `CALL` (see `pg::fmgr::require_nonatomic`), and `f`
/// must close every SPI connection it opens (pgrx's do, and `recover` pops the rest).
pub unsafe fn in_call<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: on the backend's own thread, in a non-atomic CALL (the caller's obligation), the
    // one context where an SPI connection may be opened non-atomic and commit.
    unsafe { pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32) };
    let out = f();
    // SAFETY: closes the connection opened above, again the current one (`f` closed its own).
    unsafe { pg_sys::SPI_finish() };
    out
}
