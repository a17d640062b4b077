//! Interrupts: where a run executes ([`Mode`]), the cancel check its waits call, and NOTICEs sent
//! with interrupts held.

use crate::pg::error::raise;
use pgrx::prelude::*;

/// Where the run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the caller's backend (`CALL`): progress goes out as NOTICEs directly.
    Call,
    /// In a background worker started by `leader_pid` (`qbo.backfill` / `qbo.resume`): the leader
    /// relays progress from the ledger; the worker stops if the leader goes away.
    Worker { leader_pid: i32 },
}

/// Runs `f` (an `ereport` below ERROR) with interrupts held. Postgres checks for interrupts at the
/// end of every such report, and a cancel raised there would jump straight past Rust's unwinding
/// (and past the run's error handling, leaving it `running`); held, the cancel stays pending for
/// the next [`check_interrupts`].
pub fn held<R>(f: impl FnOnce() -> R) -> R {
    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            // SAFETY: InterruptHoldoffCount is a plain counter of this backend process, touched
            // only from its own thread (where `held` runs, as every caller of pgrx's ereport
            // must) and by no signal handler; this is RESUME_INTERRUPTS, undoing the increment
            // below. A Postgres ERROR raised inside `f` has errfinish reset the counter to 0
            // before it unwinds to here: then there is nothing left to undo, and going below 0
            // would wrap (interrupts held for good: no cancel would ever be served) or, in a
            // debug build, panic during unwinding (an abort of the backend).
            unsafe {
                pg_sys::InterruptHoldoffCount = pg_sys::InterruptHoldoffCount.saturating_sub(1)
            };
        }
    }
    // SAFETY: as above, on the backend's own thread: HOLD_INTERRUPTS, undone by `Resume`'s drop
    // whether `f` returns or unwinds.
    unsafe { pg_sys::InterruptHoldoffCount += 1 };
    let _resume = Resume;
    f()
}

/// `notice!` with interrupts held (see [`held`]).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::pg::interrupts::held(|| pgrx::notice!($($t)*)) };
}

/// The interrupt check run at least every 50 ms while waiting: query cancel, statement_timeout,
/// termination; and in a worker, the disappearance of the session that started it.
pub fn check_interrupts(mode: Mode) {
    pg_sys::check_for_interrupts!();
    if let Mode::Worker { leader_pid } = mode {
        // SAFETY: a background worker attached to shared memory, on its own thread;
        // BackendPidGetProc takes ProcArrayLock itself, and the PGPROC pointer it returns is
        // only compared with null, never dereferenced (the slot may be reused at once).
        let gone = unsafe { pg_sys::BackendPidGetProc(leader_pid).is_null() };
        if gone {
            raise(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                "canceling statement because the session that started it ended",
            );
        }
    }
}
