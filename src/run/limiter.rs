//! The per-realm request limiter, shared by every session and worker of the database.
//!
//! QBO limits each realm (company) to 500 requests a minute and 10 in flight, whoever sends them.
//! PostgreSQL 15 gives an extension shared memory only when it is in `shared_preload_libraries`,
//! and pg_qbo must work with a plain `CREATE EXTENSION`; so the shared state is an unlogged table,
//! `qbo._api_requests`, updated by `qbo._api_admit` under a per-realm row lock (a few hundred
//! transactions a minute at most, a trivial load). Preloading would buy nothing here: the cost of
//! one admission (well under a millisecond) is small next to a QBO request, so pg_qbo does not use
//! shared memory at all.
//!
//! The rules are the emulator's and Intuit's: a request counts against the sliding minute from the
//! moment it is admitted (plus a 1 s margin for network delay), and holds an in-flight slot until
//! its response has been read completely (the network thread reports it; the executor passes the
//! id back with its next admission). 429s stay the exception: a well-paced run never sees one.

use crate::pg::error::PgError;
use crate::pg::spi;
use std::time::Duration;

/// A realm's limiter as seen by one execution.
pub struct Limiter {
    realm: String,
    per_minute: i32,
    max_in_flight: i32,
    /// Finished requests to report with the next admission.
    finished: Vec<i64>,
}

/// What one admission call gave.
#[derive(Debug, Default)]
pub struct Admission {
    /// Request ids admitted (each must be reported finished later).
    pub ids: Vec<i64>,
    /// When nothing was admitted: how long until a slot may be free.
    pub wait: Duration,
}

impl Limiter {
    pub fn new(realm: &str, per_minute: u32, max_in_flight: u32) -> Limiter {
        Limiter {
            realm: realm.to_owned(),
            per_minute: per_minute.clamp(1, i32::MAX as u32) as i32,
            max_in_flight: max_in_flight.clamp(1, i32::MAX as u32) as i32,
            finished: Vec::new(),
        }
    }

    /// Records that the response of request `id` has been read completely.
    pub fn finished(&mut self, id: i64) {
        self.finished.push(id);
    }

    /// True when finished requests wait to be reported.
    pub fn has_finished(&self) -> bool {
        !self.finished.is_empty()
    }

    /// Reports finished requests and asks for up to `want` new ones, in the current transaction
    /// (the caller commits right after: the realm's row lock is held until then).
    pub fn admit(&mut self, want: usize) -> Result<Admission, PgError> {
        let finished = std::mem::take(&mut self.finished);
        let want = want.min(i32::MAX as usize) as i32;
        spi::owner_connect(|c| {
            let row = c
                .update(
                    "SELECT admitted, wait_ms FROM qbo._api_admit($1, $2, $3, $4, $5)",
                    Some(1),
                    &[
                        self.realm.as_str().into(),
                        want.into(),
                        self.per_minute.into(),
                        self.max_in_flight.into(),
                        finished.clone().into(),
                    ],
                )?
                .first();
            let ids = row.get::<Vec<i64>>(1)?.unwrap_or_default();
            let wait = row.get::<i32>(2)?.unwrap_or(0).max(0) as u64;
            Ok(Admission {
                ids,
                wait: Duration::from_millis(wait),
            })
        })
        .map_err(|e| PgError::db("pg_qbo rate limiter", e))
    }
}

/// Frees every in-flight slot of this process (end of an execution, whatever its outcome). The
/// caller commits.
pub fn release_mine() -> Result<(), PgError> {
    spi::owner_exec("SELECT qbo._api_release_mine()", &[])
        .map_err(|e| PgError::db("pg_qbo rate limiter", e))
}
