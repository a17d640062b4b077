//! The per-realm request limiter, shared by every session and worker of the database, and the
//! monthly count of requests.
//!
//! QBO limits each realm (company) to 500 requests a minute, 10 a second and 10 in flight, whoever
//! sends them.
//! PostgreSQL 15 gives an extension shared memory only when it is in `shared_preload_libraries`,
//! and pg_qbo must work with a plain `CREATE EXTENSION`; so the shared state is an unlogged table,
//! `qbo._api_requests`, updated by `qbo._api_admit` under a per-realm row lock (a few hundred
//! transactions a minute at most, a trivial load). Preloading would buy nothing here: the cost of
//! one admission (well under a millisecond) is small next to a QBO request, so pg_qbo does not use
//! shared memory at all.
//!
//! The rules are the emulator's and Intuit's: a request counts against the sliding minute and the
//! sliding second from the moment it is admitted (plus margins for network delay: 1 s and 200 ms),
//! and holds an in-flight slot until its response has been read completely (the network thread
//! reports it; the executor passes the id back with its next admission). 429s stay the
//! exception: a well-paced run never sees one.
//!
//! A crash empties the unlogged table, but not QBO's memory of the last minute: so for 61 s after
//! the server started, `qbo._api_admit` takes the minute before the start as full (its requests
//! spread evenly) and admits at most `floor(per_minute * t / 61)` requests of a realm `t` seconds
//! after the start. A run that meets throttling all the same (another app filled the realm's
//! minute) rides it out: see `qbo::dispatch` and `qbo.throttle_wait_ms`.
//!
//! Intuit also meters an app's calls per calendar month. The admission that lets requests go
//! counts them, in the same transaction, in the logged table `qbo._api_usage` (per month, app,
//! realm and kind) and on the run (`qbo.runs.requests_*`), so a request sent is counted exactly
//! once: the count commits with the admission or not at all, and nothing is sent before that
//! commit. A request admitted and then never sent (its run stopped in that instant) stays counted:
//! the count errs towards the budget, by at most one admission. With `qbo.monthly_request_budget`
//! set, the admission refuses once the app's count of the month has reached it.

use crate::pg::error::PgError;
use crate::pg::guc::{Budget, Settings};
use crate::pg::spi;
use pgrx::PgSqlErrorCode;
use std::time::Duration;

/// What a request admitted by the limiter is, as counted in `qbo._api_usage.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A page of records.
    Query,
    /// A `count(*)`.
    Count,
    /// A Change Data Capture request (a sync).
    Cdc,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Query => "query",
            Kind::Count => "count",
            Kind::Cdc => "cdc",
        }
    }
}

/// Where a run's requests are counted, and the budget they may not pass.
pub struct Account {
    /// The app (OAuth2 client id) whose monthly count the requests go to.
    pub client_id: String,
    /// The connection the run uses (named in messages; the client id is not).
    pub connection: String,
    /// The run the requests are counted on.
    pub run_id: i64,
    pub budget: Budget,
}

/// A realm's limiter as seen by one execution.
pub struct Limiter {
    realm: String,
    per_second: i32,
    per_minute: i32,
    max_in_flight: i32,
    account: Account,
    /// Whether this execution has warned that the budget is nearly used.
    warned: bool,
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
    /// The WARNING to give once the month's count passes `qbo.monthly_request_warn_percent` of
    /// the budget (once per execution).
    pub warning: Option<String>,
}

impl Limiter {
    pub fn new(realm: &str, settings: &Settings, account: Account) -> Limiter {
        let clamp = |n: u32| n.clamp(1, i32::MAX as u32) as i32;
        Limiter {
            realm: realm.to_owned(),
            per_second: clamp(settings.max_requests_per_second),
            per_minute: clamp(settings.max_requests_per_minute),
            max_in_flight: clamp(settings.max_in_flight),
            account,
            warned: false,
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

    /// Reports finished requests and asks for new ones, of these kinds in this order (those
    /// admitted are the first ones), in the current transaction (the caller commits right after:
    /// the realm's row lock is held until then). An error when the app's monthly budget is used
    /// up (53400, nothing admitted).
    pub fn admit(&mut self, kinds: &[Kind]) -> Result<Admission, PgError> {
        let finished = std::mem::take(&mut self.finished);
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let a = &self.account;
        let (ids, wait, used, month) = spi::owner_connect(|c| {
            let row = c
                .update(
                    "SELECT admitted, wait_ms, month_requests, usage_month FROM qbo._api_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, pg_catalog.pg_postmaster_start_time())",
                    Some(1),
                    &[
                        self.realm.as_str().into(),
                        kinds.clone().into(),
                        self.per_second.into(),
                        self.per_minute.into(),
                        self.max_in_flight.into(),
                        finished.clone().into(),
                        a.client_id.as_str().into(),
                        a.run_id.into(),
                        a.budget.requests.into(),
                    ],
                )?
                .first();
            let ids = row.get::<Vec<i64>>(1)?.unwrap_or_default();
            let wait = row.get::<i32>(2)?.unwrap_or(0).max(0) as u64;
            Ok((ids, wait, row.get::<i64>(3)?, row.get::<String>(4)?))
        })
        .map_err(|e| PgError::db("pg_qbo rate limiter", e))?;
        let mut adm = Admission {
            ids,
            wait: Duration::from_millis(wait),
            warning: None,
        };
        let (Some(used), Some(month)) = (used, month) else {
            return Ok(adm);
        };
        let budget = a.budget.requests;
        let whose = format!("the app of connection \"{}\"", a.connection);
        if adm.ids.is_empty() && !kinds.is_empty() && used >= budget {
            return Err(PgError::new(
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                format!(
                    "monthly request budget used up: {whose} has sent {used} requests to QuickBooks in {month} (UTC) and qbo.monthly_request_budget = {budget}; a superuser may raise qbo.monthly_request_budget, or wait for {}",
                    next_month(&month)
                ),
            ));
        }
        if !self.warned && budget > 0 && used * 100 >= budget * a.budget.warn_percent {
            self.warned = true;
            adm.warning = Some(format!(
                "run {}: {whose} has sent {used} requests to QuickBooks in {month} (UTC), {}% of qbo.monthly_request_budget = {budget}; past it new requests are refused (see qbo.api_usage)",
                a.run_id,
                used * 100 / budget,
            ));
        }
        Ok(adm)
    }
}

/// The month after `month` (`YYYY-MM`), as `YYYY-MM`.
fn next_month(month: &str) -> String {
    let parsed = month
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?)));
    match parsed {
        Some((y, 12)) => format!("{}-01", y + 1),
        Some((y, m)) => format!("{y}-{:02}", m + 1),
        None => "next month".to_owned(),
    }
}

/// Counts one token refresh sent for run `run_id` (in the current transaction; the caller
/// commits).
pub fn count_token(client_id: &str, realm: &str, run_id: i64) -> Result<(), PgError> {
    spi::owner_exec(
        "SELECT qbo._api_count($1, $2, 'token', $3)",
        &[client_id.into(), realm.into(), run_id.into()],
    )
    .map_err(|e| PgError::db("pg_qbo rate limiter", e))
}

/// Frees every in-flight slot of this process (end of an execution, whatever its outcome). The
/// caller commits.
pub fn release_mine() -> Result<(), PgError> {
    spi::owner_exec("SELECT qbo._api_release_mine()", &[])
        .map_err(|e| PgError::db("pg_qbo rate limiter", e))
}

#[cfg(test)]
mod tests {
    use super::next_month;

    #[test]
    fn the_month_after() {
        assert_eq!(next_month("2025-12"), "2026-01");
        assert_eq!(next_month("2025-01"), "2025-02");
        assert_eq!(next_month("2025-09"), "2025-10");
    }
}
