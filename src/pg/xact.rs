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
    unsafe { pg_sys::SPI_commit() }
    ensure_outer_snapshot();
}

/// Rolls the current transaction back and starts a new one (after a caught error).
pub fn rollback() {
    // SPI_rollback insists that every active snapshot belongs to a portal: pop ours and any a
    // failed statement left behind, down to the portal's own (none in a background worker).
    OWN_SNAPSHOT.with(|f| f.set(false));
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
    unsafe {
        while !pg_sys::SPI_inside_nonatomic_context() {
            if pg_sys::SPI_finish() < 0 {
                break;
            }
        }
    }
    rollback();
}
