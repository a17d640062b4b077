//! Driving async HTTP from a Postgres backend.
//!
//! A tokio current-thread runtime runs on the backend's own thread (no worker threads), so no
//! Postgres API is ever called from another thread. Postgres does not reach us while we are inside
//! `block_on`, so every wait is raced against a 50 ms ticker whose arm calls the caller's
//! interrupt check (`CHECK_FOR_INTERRUPTS` and friends): a cancel then unwinds out of `block_on`
//! as an ERROR, dropping (aborting) the request or the sleep.

use std::future::Future;
use std::time::Duration;

/// How often waits poll for a cancel.
pub const POLL: Duration = Duration::from_millis(50);

/// Builds the runtime used by one run.
pub fn new_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))
}

/// Runs `fut` to completion, calling `check` at least every [`POLL`]. `check` may raise a
/// Postgres ERROR (a Rust panic under pgrx): the future is then dropped as the panic unwinds.
pub fn block_on_interruptible<F: Future>(
    rt: &tokio::runtime::Runtime,
    fut: F,
    check: &mut dyn FnMut(),
) -> F::Output {
    check();
    rt.block_on(async {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                _ = tick.tick() => check(),
            }
        }
    })
}

/// Sleeps `d`, interruptibly.
pub fn sleep_interruptible(rt: &tokio::runtime::Runtime, d: Duration, check: &mut dyn FnMut()) {
    // the timer is created inside the runtime (on first poll), not here
    block_on_interruptible(rt, async move { tokio::time::sleep(d).await }, check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_runs_while_waiting_and_result_comes_back() {
        let rt = new_runtime().unwrap();
        let mut calls = 0;
        let out = block_on_interruptible(
            &rt,
            async {
                tokio::time::sleep(Duration::from_millis(220)).await;
                7
            },
            &mut || calls += 1,
        );
        assert_eq!(out, 7);
        assert!(calls >= 4, "check called {calls} times in 220 ms");
    }

    #[test]
    fn a_panicking_check_aborts_the_wait() {
        let rt = new_runtime().unwrap();
        let started = std::time::Instant::now();
        let mut n = 0;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sleep_interruptible(&rt, Duration::from_secs(30), &mut || {
                n += 1;
                if n > 3 {
                    panic!("cancel");
                }
            })
        }));
        assert!(r.is_err());
        let took = started.elapsed();
        println!("cancel observed after {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
