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
    /// In a background worker of its own (`qbo.start_backfill` / `qbo.start_resume`), tied to no
    /// session: nobody listens, so no NOTICE is sent (progress is in the ledger and
    /// `qbo.progress`), and only a cancel or termination of the worker itself stops it.
    Detached,
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

/// Runs `f` with interrupts held (see [`held`]) and a pending cancel or termination set aside
/// until `f` returns or unwinds: for work that must complete once begun (storing the tokens
/// Intuit just rotated). Holding alone is not enough: a regular expression (the CHECK constraints
/// of `qbo._connections`, evaluated by every UPDATE of a row) gives up with "operation cancelled"
/// whenever a cancel or termination is pending, held or not. What was pending, or arrived
/// meanwhile, is pending again afterwards and served at the next interrupt check.
pub fn deferred<R>(f: impl FnOnce() -> R) -> R {
    struct Restore {
        cancel: i32,
        die: i32,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: plain flags of this backend process, on its own thread; a signal handler
            // only ever sets them to 1, so OR-ing keeps what it set meanwhile.
            unsafe {
                pg_sys::QueryCancelPending |= self.cancel;
                pg_sys::ProcDiePending |= self.die;
                if pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 {
                    pg_sys::InterruptPending = 1;
                }
            }
        }
    }
    held(|| {
        // SAFETY: as above; the flags are restored by `Restore` whether `f` returns or unwinds
        // (interrupts stay held until `held` ends, after it)
        let _restore = unsafe {
            let r = Restore {
                cancel: pg_sys::QueryCancelPending,
                die: pg_sys::ProcDiePending,
            };
            pg_sys::QueryCancelPending = 0;
            pg_sys::ProcDiePending = 0;
            r
        };
        f()
    })
}

/// `notice!` with interrupts held (see [`held`]).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::pg::interrupts::held(|| pgrx::notice!($($t)*)) };
}

/// The interrupt check run at least every 50 ms while waiting: query cancel, statement_timeout,
/// termination; and in the worker of a session ([`Mode::Worker`], not [`Mode::Detached`]), the
/// disappearance of that session.
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

/// Waits up to `ms` milliseconds (or until this process's latch is set), then serves a pending
/// query cancel, statement_timeout or termination: the step of a polling wait.
pub fn pause(ms: i64) {
    // SAFETY: on the backend's own thread; MyLatch is this process's own latch, set at process
    // start and valid for its whole life, which only its owner may wait on and reset. With
    // WL_EXIT_ON_PM_DEATH the process exits if the postmaster dies, so the returned events need
    // no checking.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms.max(1) as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pg_sys::check_for_interrupts!();
}

/// Sends SIGINT (a query cancel, as `pg_cancel_backend` does, to the process group like it) to
/// the server process `pid`, if it is still a backend or background worker of this cluster at
/// this instant. No permission check: the caller decides who may cancel what. Returns whether the
/// signal was sent.
pub fn send_cancel(pid: i32) -> bool {
    // SAFETY: on the backend's own thread, attached to shared memory; BackendPidGetProc takes
    // ProcArrayLock itself, and the PGPROC pointer it returns is only compared with null, never
    // dereferenced.
    if pid <= 0 || unsafe { pg_sys::BackendPidGetProc(pid).is_null() } {
        return false;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours. Every server process
    // leads its own process group (postmaster children call setsid), which is what
    // pg_signal_backend signals; a plain kill of the pid is the fallback should it not.
    unsafe { libc::kill(-pid, libc::SIGINT) == 0 || libc::kill(pid, libc::SIGINT) == 0 }
}
