//! Executes a run: the one code path behind `CALL qbo.run_backfill`, `CALL qbo.run_resume`, and the
//! background worker of `qbo.backfill` / `qbo.resume`.
//!
//! # Execution model
//! The caller has opened a *non-atomic* SPI connection (a procedure called by `CALL` outside a
//! transaction block, or a background worker), so we can COMMIT as we go:
//! - the run row and its chunk plan exist before execution starts (created by `ledger::create_run`);
//! - execution takes the run's liveness lock (a session advisory lock) so a dead executor is
//!   detectable, marks the run `running` and commits;
//! - each page is one transaction: its rows, the chunk's counters and paging cursor, and a
//!   `qbo.run_pages` row commit together, so a resume continues exactly after the last committed
//!   page and nothing done is ever lost;
//! - a token received from Intuit is stored and committed in its own transaction before it is
//!   used (a rotated refresh token is never lost with a rolled-back page);
//! - any error (including a cancel or `statement_timeout`) is caught, the failed page's
//!   transaction rolled back, the run marked `failed` or `cancelled` with the error text, committed,
//!   and the error re-raised. A process that dies outright (crash, `pg_terminate_backend`) leaves
//!   its run `running` without its lock: the next entry point marks it `interrupted`.

use crate::pg::error::PgError;
use crate::pg::guc::{Budget, Settings};
use crate::pg::interrupts::{check_interrupts, held, Mode};
use crate::pg::time::session_ts;
use crate::pg::xact::{self, attempt, recover};
use crate::run::limiter::{self, Account, Kind, Limiter};
use crate::run::notices::{self, Backoff, BackoffGate, ProgressClock};
use crate::run::tokens::TokenCache;
use crate::store::connections;
use crate::store::ledger::{self, ChunkRow, RunRow};
use crate::store::locks;
use crate::store::raw::{self, PageRows};
use chrono::{DateTime, Utc};
use pgrx::prelude::*;
use qbo::client::HttpConfig;
use qbo::dispatch::{Dispatcher, Request, Retry};
use qbo::entities::{self, Entity};
use qbo::error::QboError;
use qbo::net::{Answer, Fetched as NetFetched, Idle, Job, JobKind, Net};
use qbo::pager::RequestKind;
use qbo::runtime;
use qbo::slices::{ChunkSlices, SliceRequest};
use rand::SeedableRng;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Executes (or continues) run `run_id`. Requires a non-atomic SPI connection. On error the run is
/// marked and the error re-raised; returns normally only when the run succeeded.
pub fn execute(run_id: i64, mode: Mode) {
    if let Err(e) = execute_result(run_id, mode) {
        e.raise();
    }
}

/// [`execute`], returning the error it would raise (the run already marked, its locks released):
/// a sync runs its backfills with it and stops with their error.
pub fn execute_result(run_id: i64, mode: Mode) -> Result<(), PgError> {
    // The caller took the run's liveness lock in the transaction that created or reopened it
    // (see `lock_new_run` / `request::prepare_resume`), so the run is never `running` unlocked.
    let token_locked: Mutex<Option<String>> = Mutex::new(None);
    // Err(e): an error returned by the run; a caught ERROR (cancel, statement_timeout, SPI
    // failure) is turned into one too, so both take the same way out below.
    let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        run(run_id, mode, &token_locked)
    }))
    .catch_others(|caught| Err(PgError::from(&caught)))
    .execute();
    match outcome {
        Ok(()) => {
            // the outcome is committed before the lock goes: a run seen without its lock is a dead
            // one (qbo.progress, qbo._mark_interrupted), never one about to commit `succeeded`
            xact::commit();
            if let Err(e) = locks::unlock_run(run_id) {
                held(|| {
                    warning!("run {run_id} succeeded; its liveness lock could not be released (it goes with the session): {e}")
                });
            }
            xact::commit();
            Ok(())
        }
        Err(e) => {
            // undo the page in flight, record why the run stopped, and raise it (without pgrx's
            // backtrace detail: the message and SQLSTATE are what a DBA needs). Every error names
            // the run, also one Postgres raised (54001, 22003, 42P01, ...); a cancel keeps
            // Postgres' own words.
            let code = e.code;
            let message =
                if e.is(PgSqlErrorCode::ERRCODE_QUERY_CANCELED) || names_run(&e.message, run_id) {
                    e.message
                } else {
                    format!("run {run_id}: {}{}", e.message, next_step(code, run_id))
                };
            let e = PgError::new(code, message);
            let e = if after_error(run_id, &token_locked, &e) {
                e
            } else {
                PgError::new(code, format!("{} (the run could not be marked in qbo.runs: is pg_qbo still installed in this database?)", e.message))
            };
            Err(e)
        }
    }
}

/// What to do after a run stopped with `code`, as the tail of its message: resume it, unless
/// a memory limit (54000) stopped it, which a resume (same settings, same page size) meets again;
/// that error's own text says to start a new run.
pub(crate) fn next_step(code: PgSqlErrorCode, run_id: i64) -> String {
    if code == PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED {
        String::new()
    } else {
        format!("; resume with SELECT * FROM qbo.resume({run_id}) or CALL qbo.run_resume({run_id})")
    }
}

/// Whether `msg` names run `run_id` (`run 12`, not `run 123`).
pub fn names_run(msg: &str, run_id: i64) -> bool {
    let needle = format!("run {run_id}");
    msg.match_indices(&needle).any(|(i, _)| {
        !msg[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Undoes the page in flight and records why the run stopped. Each step may fail in turn (the
/// extension dropped during the run takes the ledger and the limiter with it): a failed step is
/// rolled back and the others still run. Returns whether the run's outcome was recorded.
pub(crate) fn after_error(run_id: i64, token_locked: &Mutex<Option<String>>, e: &PgError) -> bool {
    recover();
    attempt(|| {
        if let Err(e) = limiter::release_mine() {
            held(|| warning!("run {run_id}: could not free its rate-limiter slots: {e}"));
        }
        xact::commit();
    });
    let status = if e.is(PgSqlErrorCode::ERRCODE_QUERY_CANCELED) {
        "cancelled"
    } else {
        "failed"
    };
    let mut recorded = false;
    attempt(|| {
        match ledger::finish_run_with_error(run_id, status, &e.sqlstate(), &e.message) {
            Ok(()) => recorded = true,
            Err(e) => held(|| {
                warning!(
                    "run {run_id}: could not record that it {status}: {}",
                    e.message
                )
            }),
        }
        xact::commit();
    });
    attempt(|| {
        // Released before the run's outcome is raised; should a release fail, the lock goes
        // with the session (never later than the end of this CALL or worker).
        if let Some(realm) = token_locked.lock().ok().and_then(|mut g| g.take()) {
            if let Err(e) = locks::unlock_token(&realm) {
                held(|| {
                    warning!("run {run_id}: could not release the token lock of realm {realm}: {e}")
                });
            }
        }
        if let Err(e) = locks::unlock_run(run_id) {
            held(|| warning!("run {run_id}: could not release its liveness lock: {e}"));
        }
        xact::commit();
    });
    recorded
}

/// Everything one execution needs.
struct Exec<'a> {
    run: RunRow,
    entity: &'static Entity,
    settings: Settings,
    mode: Mode,
    rt: tokio::runtime::Runtime,
    /// The network thread: requests in flight while this thread writes.
    net: Net,
    /// Responses it may hold read and not yet parsed (see `Dispatcher::read_ahead`).
    read_ahead: usize,
    /// The realm's shared request limiter.
    limiter: Limiter,
    /// The Ids the pagers of this run may hold together (`qbo.max_buffer_mb`).
    ids: qbo::budget::IdBudget,
    tokens: TokenCache<'a>,
    /// Jitter of the backoffs.
    rng: rand::rngs::StdRng,
    /// Last commit of `qbo.runs.progress` (rate-limited to about once a second).
    progress_at: Option<Instant>,
    /// Retries of this execution so far (numbers the backoff notes, see `notices::Backoff`).
    run_retries: u64,
    /// Which backoffs a `CALL` reports as NOTICEs (the relay of a worker keeps its own).
    backoff_notices: BackoffGate,
    /// When a `CALL` prints the run's totals next.
    clock: ProgressClock,
    /// When this execution started (whole second): a window reaching past it is read only up to
    /// it, so a run never chases records that keep being updated after it began (the next run
    /// picks those up).
    as_of: DateTime<Utc>,
}

fn run(run_id: i64, mode: Mode, token_locked: &Mutex<Option<String>>) -> Result<(), PgError> {
    let run = ledger::load_run(run_id)?;
    let entity = entities::lookup(&run.entity)
        .map_err(|m| PgError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, m))?;
    let settings: Settings = serde_json::from_value(run.settings.clone())
        .map_err(|e| PgError::internal(format!("run {run_id}: stored settings unreadable: {e}")))?;
    let conn = connections::require_connection(&run.connection)?;
    // a resume, a scheduled run or a worker runs as the role that asked for it: it must still
    // be allowed to use the connection
    connections::check_may_use(&conn.name)?;
    if conn.realm_id != run.realm_id {
        return Err(PgError::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "run {run_id}: connection \"{}\" now points to realm {} but the run was made for realm {}; start a new run",
                run.connection, conn.realm_id, run.realm_id
            ),
        ));
    }
    raw::ensure_raw_table(entity)?;
    ledger::start_execution(run_id)?;
    xact::commit();
    let rows_before = ledger::run_progress(run_id)?.rows;
    let clock = ProgressClock::new(settings.progress_interval(), rows_before, Instant::now());

    let rt = runtime::new_runtime().map_err(PgError::internal)?;
    let budget = qbo::budget::MemoryBudget::new(settings.max_buffer_mb, settings.max_in_flight);
    let http = HttpConfig {
        connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        request_timeout: Duration::from_millis(settings.http_timeout_ms),
        max_response_bytes: budget.response_cap(),
        jsonb_payloads: raw::database_is_utf8(),
        ..HttpConfig::default()
    };
    let net = Net::start(http)?;
    // the monthly budget is read anew by every execution (never stored with the run): a run
    // refused at the budget resumes once it was raised
    let account = Account {
        client_id: conn.client_id.clone(),
        connection: conn.name.clone(),
        run_id,
        budget: Budget::current(),
    };
    let limiter = Limiter::new(&run.realm_id, &settings, account);
    let tokens = TokenCache::new(conn, run_id, &settings, token_locked)?;
    let mut ex = Exec {
        run,
        entity,
        settings,
        mode,
        rt,
        net,
        read_ahead: qbo::net::DEFAULT_READ_AHEAD,
        limiter,
        ids: budget.ids(),
        tokens,
        rng: rand::rngs::StdRng::from_os_rng(),
        progress_at: None,
        run_retries: 0,
        backoff_notices: BackoffGate::default(),
        clock,
        // the end of the current second: everything QBO stamped up to now is inside
        as_of: chrono::DurationRound::duration_trunc(Utc::now(), chrono::Duration::seconds(1))
            .unwrap_or_else(|_| Utc::now())
            + chrono::Duration::seconds(1),
    };
    let chunks = ledger::pending_chunks(run_id)?;
    ex.run_chunks(chunks)?;
    ex.limiter.admit(&[])?;
    ledger::finish_run_ok(run_id)?;
    if mode == Mode::Call {
        let t = ledger::totals(run_id)?;
        crate::say!("{}", notices::succeeded(&t));
    }
    Ok(())
}

/// A window being read: consecutive chunks fetched together (chunks are units of reporting, not
/// of requests).
/// Every record is written with, and counted in, the chunk its `LastUpdatedTime` falls in; a
/// chunk is finished once everything before its end is written (an empty one costs nothing).
/// The window's cursor is saved on its last chunk (the key: the last to finish), with the first
/// chunk and the start of the window, so a resume takes the same chunks up again.
struct OpenWindow {
    /// The group's chunks not yet finished, in order; the last is the key.
    rows: Vec<ChunkRow>,
    /// The key chunk (the last): requests, the saved cursor and the Id table of a second go by it.
    key: i32,
    /// First chunk and start of the window (a resume: the group's first chunks may be finished).
    first: i32,
    start: DateTime<Utc>,
    slices: ChunkSlices,
    /// Pages committed so far, per chunk (the next page's number is one more).
    page_no: std::collections::HashMap<i32, i32>,
    /// Chunks marked running.
    started: std::collections::HashSet<i32>,
    /// Since when this execution's time on the group has not been added to a chunk's duration.
    mark: Instant,
}

impl OpenWindow {
    /// The first chunk not yet finished (what progress and errors name).
    fn current(&self) -> i32 {
        self.rows.first().map_or(self.key, |r| r.chunk)
    }

    /// Where a record of `second` is counted: the chunk whose window holds it (the first
    /// unfinished one if none does, which a window read from a cursor never gives).
    fn chunk_of(&self, t: DateTime<Utc>) -> usize {
        let i = self
            .rows
            .partition_point(|r| qbo::query::ceil_second(r.window_end) <= t);
        i.min(self.rows.len().saturating_sub(1))
    }

    /// The cursor to save on the key chunk.
    fn saved(&self) -> serde_json::Value {
        let mut v = self.slices.saved();
        if let Some(m) = v.as_object_mut() {
            m.insert("group_from".into(), self.first.into());
            m.insert(
                "group_start".into(),
                serde_json::to_value(self.start).unwrap_or_default(),
            );
        }
        v
    }
}

/// The first chunk of the group whose cursor this is (see [`OpenWindow`]), with the window's
/// start; `None` for a chunk's own cursor (saved by 0.3.0 and before).
fn group_of(cursor: Option<&serde_json::Value>) -> Option<(i32, DateTime<Utc>)> {
    let c = cursor?;
    let from = i32::try_from(c.get("group_from")?.as_i64()?).ok()?;
    let start = serde_json::from_value(c.get("group_start")?.clone()).ok()?;
    Some((from, start))
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `count(*)` of a slice, to decide whether to cut it.
    SliceCount,
    /// A count asked by the slice's pager (a second in second mode).
    PagerCount,
    /// A page asked by the slice's pager.
    Page,
}

/// What a request is: the driver's part of a [`Request`] (the dispatcher keeps its retries).
struct Want {
    chunk: i32,
    slice: u32,
    purpose: Purpose,
    query: String,
    start_position: u32,
    /// Which request of its pager's step this is (see `Pager::ready`).
    part: u32,
}

/// A fetched page waiting to be written.
struct Fetched {
    chunk: i32,
    slice: u32,
    records: Vec<qbo::pager::RawRecord>,
    refetched: u64,
    /// The slice's pager state once this page is written.
    state: Option<qbo::pager::PagerState>,
    /// Rows for the Id table of the second being read, if any.
    second_ids: Option<qbo::pager::SecondIds>,
    query: String,
    start_position: u32,
    intuit_tid: Option<String>,
    fetch_seconds: f64,
}

impl Fetched {
    /// What an answer gives to write: its records (an accepted page, or pages a count released),
    /// with the request they answer.
    fn new(
        want: Want,
        accepted: qbo::pager::Accepted,
        state: Option<qbo::pager::PagerState>,
        intuit_tid: Option<String>,
        fetch_seconds: f64,
    ) -> Fetched {
        Fetched {
            chunk: want.chunk,
            slice: want.slice,
            records: accepted.records,
            refetched: accepted.refetched,
            state,
            second_ids: accepted.second_ids,
            query: want.query,
            start_position: want.start_position,
            intuit_tid,
            fetch_seconds,
        }
    }
}

impl Exec<'_> {
    /// Fetches and writes every pending chunk: up to `max_in_flight` requests on the network
    /// thread (admitted by the realm's shared limiter) while this thread writes the pages that
    /// have arrived, one transaction each. Pages are written in the order they arrive, each with
    /// its slice's pager state as it was right after that page was taken in; a slice's window
    /// pages arrive in order (one at a time), the pages of a second-mode pass in any order (each
    /// takes only Ids not taken before), and slices are disjoint, so the rows written and the
    /// counts are the same whatever the interleaving.
    fn run_chunks(&mut self, chunks: Vec<ChunkRow>) -> Result<(), PgError> {
        let max_flight = self.settings.max_in_flight.max(1) as usize;
        let split = max_flight > 1;
        // slices kept open: four times what may be in flight, so counting and cutting run ahead
        // of paging and the chains of pages of later chunks start early enough not to trail at
        // the end; the sequential pager keeps one chunk at a time (a retry is its next request)
        let open_ahead = if split { 4 * max_flight } else { 1 };
        let mut pending: std::collections::VecDeque<ChunkRow> = chunks.into();
        let mut open: Vec<OpenWindow> = Vec::new();
        let mut requests: Dispatcher<Want> = Dispatcher::new(
            self.settings.retry_policy(),
            self.settings.max_in_flight,
            split,
        );
        let mut fetched: std::collections::VecDeque<Fetched> = Default::default();
        let mut last_mark = Instant::now();
        // the monthly budget refused a request: nothing more is sent, the requests in flight are
        // answered and every page fetched is written (paid for), then the run fails with it
        let mut refused: Option<PgError> = None;
        loop {
            check_interrupts(self.mode);
            while let Some(a) = self.net.try_next() {
                self.on_answer(a, &mut requests, &mut open, &mut fetched)?;
            }
            // open groups of chunks while fewer slices than requests allowed are open
            while !pending.is_empty()
                && open.iter().map(|o| o.slices.open_slices()).sum::<usize>() < open_ahead
            {
                let rows = next_group(&mut pending);
                if let Some(o) = self.open_window(rows, split)? {
                    open.push(o);
                }
            }
            // finish the chunks whose windows are written, and complete groups
            let mut i = 0;
            while i < open.len() {
                self.finish_written_chunks(&mut open[i])?;
                if open[i].slices.is_done() {
                    let o = open.remove(i);
                    self.finish_open_window(o)?;
                } else {
                    i += 1;
                }
            }
            if open.is_empty() && pending.is_empty() {
                debug_assert!(requests.is_idle() && fetched.is_empty());
                break;
            }
            if refused.is_some() && requests.in_flight() == 0 && fetched.is_empty() {
                return Err(refused.take().expect("refused"));
            }
            // answers that came in while a page was written are taken now, so the requests they
            // make room for go out before the next page is written, not after every page waiting
            // (a window read by offsets gets its pages back nearly together)
            while let Some(a) = self.answer(Duration::ZERO)? {
                self.on_answer(a, &mut requests, &mut open, &mut fetched)?;
            }
            // what to send: due retries first, then every open slice's next request, as much as
            // the dispatcher allows (in flight, pages waiting to be written, the limiter's wait)
            let now = Instant::now();
            // pages held by windows read by offsets (until the pages ahead of them are in) take
            // memory like pages waiting to be written (see Dispatcher::room_holding)
            let held_pages: usize = open.iter().map(|o| o.slices.held_pages()).sum();
            let room = if refused.is_some() {
                0
            } else {
                requests.room_holding(fetched.len(), held_pages, now)
            };
            let mut wants = requests.take_due(now, room);
            if wants.len() < room {
                // most urgent first (see ChunkSlices::priority)
                let mut candidates: Vec<(u64, usize, u32, SliceRequest)> = Vec::new();
                for (k, o) in open.iter_mut().enumerate() {
                    o.slices.set_live_edge(live_edge());
                    let reqs = o
                        .slices
                        .wanted(room - wants.len())
                        .map_err(|e| self.context(o.current(), 0, e))?;
                    for (slice, req) in reqs {
                        candidates.push((o.slices.priority(slice), k, slice, req));
                    }
                }
                candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                candidates.truncate(room - wants.len());
                for (_, k, slice, req) in candidates {
                    let o = &mut open[k];
                    o.slices.issue(slice, &req)?;
                    let (purpose, query, start_position, part) = match req {
                        SliceRequest::Count { query } => (Purpose::SliceCount, query, 0, 0),
                        SliceRequest::Pager(r) => match r.kind {
                            RequestKind::SecondCount => (Purpose::PagerCount, r.query, 0, r.part),
                            _ => (Purpose::Page, r.query, r.start_position, r.part),
                        },
                    };
                    wants.push(Request::new(Want {
                        chunk: o.key,
                        slice,
                        purpose,
                        query,
                        start_position,
                        part,
                    }));
                }
            }
            if !wants.is_empty() || self.limiter.has_finished() {
                if let Some(w) = wants.first().map(|w| &w.item) {
                    // a valid token before the admission: nothing may hold admitted requests back
                    // (a late burst would break the per-second window at Intuit's end)
                    let (key, start_position) = (w.chunk, w.start_position);
                    let chunk = open
                        .iter()
                        .find(|o| o.key == key)
                        .map_or(key, |o| o.current());
                    self.tokens
                        .access_token(&self.rt, self.mode)
                        .map_err(|e| self.context(chunk, start_position, e))?;
                }
                let kinds: Vec<Kind> = wants
                    .iter()
                    .map(|w| match w.item.purpose {
                        Purpose::Page => Kind::Query,
                        Purpose::SliceCount | Purpose::PagerCount => Kind::Count,
                    })
                    .collect();
                match self.limiter.admit(&kinds) {
                    Ok(adm) => {
                        xact::commit();
                        if let Some(w) = &adm.warning {
                            held(|| warning!("{w}"));
                        }
                        for (id, want, admission) in
                            requests.admit(wants, adm.ids, adm.wait, Instant::now())
                        {
                            self.dispatch(id, want, admission, &mut requests)?;
                        }
                    }
                    Err(e) if e.is(PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED) => {
                        xact::commit();
                        refused = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(page) = fetched.pop_front() {
                let touch = last_mark.elapsed() >= Duration::from_secs(1);
                self.write_page(page, &mut open, touch)?;
                if touch {
                    last_mark = Instant::now();
                }
                continue;
            }
            // nothing to write: wait for an answer, a backoff or the limiter, polling for a cancel
            let timeout = requests.timeout(Instant::now(), runtime::POLL);
            if requests.in_flight() == 0 && timeout.is_zero() {
                continue;
            }
            if let Some(a) = self.answer(timeout.max(Duration::from_millis(1)))? {
                self.on_answer(a, &mut requests, &mut open, &mut fetched)?;
            }
        }
        Ok(())
    }

    /// The next report of the network thread, waiting at most `timeout` (`None`: none came).
    fn answer(&self, timeout: Duration) -> Result<Option<Answer>, PgError> {
        match self.net.wait(timeout) {
            Ok(done) => Ok(Some(done)),
            Err(Idle::Timeout) => Ok(None),
            Err(Idle::Gone) => Err(PgError::internal("the network thread stopped unexpectedly")),
        }
    }

    /// Starts a group of chunks (see [`OpenWindow`]); `None` when it lies wholly after this
    /// execution began (its chunks finished at once). Chunks starting after that are finished at
    /// once too: nothing can be there yet.
    fn open_window(
        &mut self,
        mut rows: Vec<ChunkRow>,
        split: bool,
    ) -> Result<Option<OpenWindow>, PgError> {
        let run_id = self.run.run_id;
        let key_row = rows.last().expect("a group has a chunk").clone();
        let (first, start) =
            group_of(key_row.cursor.as_ref()).unwrap_or((rows[0].chunk, rows[0].window_start));
        while rows.len() > 1 && rows.last().is_some_and(|r| r.window_start >= self.as_of) {
            let r = rows.pop().expect("checked");
            self.finish_empty_chunk(r.chunk)?;
        }
        let end = rows.last().expect("kept").window_end.min(self.as_of);
        if end <= start || rows[0].window_start >= self.as_of {
            for r in rows {
                self.finish_empty_chunk(r.chunk)?;
            }
            return Ok(None);
        }
        // the key is the last chunk kept: a cursor saved on a later one (cut off by as_of) moves
        // with it
        let key = rows.last().expect("kept").chunk;
        ledger::start_chunk(run_id, rows[0].chunk)?;
        xact::commit();
        let plan_chunk = qbo::plan::Chunk {
            index: key as u32,
            start,
            end,
        };
        // A database error reading the saved Ids keeps its own SQLSTATE and cause; a saved cursor
        // the core cannot use is an internal error of this run.
        enum Opening {
            Db(PgError),
            Cursor(QboError),
        }
        impl From<QboError> for Opening {
            fn from(e: QboError) -> Self {
                Opening::Cursor(e)
            }
        }
        let saved_on = key_row.chunk;
        let mut read_ids =
            |second| ledger::read_second_ids(run_id, saved_on, second).map_err(Opening::Db);
        let mut slices = ChunkSlices::new(
            self.entity.name,
            self.entity.has_active,
            plan_chunk,
            self.run.page_size as u32,
            split,
            key_row.cursor.as_ref(),
            &mut read_ids,
        )
        .map_err(|e| match e {
            Opening::Db(e) => e.prefixed(format!("run {run_id} chunk {saved_on}")),
            Opening::Cursor(e) => PgError::internal(format!("run {run_id} chunk {saved_on}: {e}")),
        })?;
        slices.set_live_edge(live_edge());
        slices.set_id_budget(&self.ids);
        // a window read by offsets issues its pages as far ahead as may be read and waiting at
        // once: the next round goes out while the last one is parsed and taken in order
        let max = self.settings.max_in_flight.max(1);
        slices.set_lookahead(max + qbo::dispatch::slack(max, max > 1));
        let page_no = rows.iter().map(|r| (r.chunk, r.pages)).collect();
        let started = std::iter::once(rows[0].chunk).collect();
        Ok(Some(OpenWindow {
            rows,
            key,
            first,
            start,
            slices,
            page_no,
            started,
            mark: Instant::now(),
        }))
    }

    /// Finishes a chunk nothing was fetched for (it lies after this execution began).
    fn finish_empty_chunk(&mut self, chunk: i32) -> Result<(), PgError> {
        ledger::start_chunk(self.run.run_id, chunk)?;
        let c = ledger::finish_chunk(self.run.run_id, chunk, 0.0)?;
        xact::commit();
        if self.mode == Mode::Call {
            crate::say!("{}", notices::chunk_done(&c, &session_ts));
        }
        Ok(())
    }

    /// Finishes every chunk of the group (but the key, which holds the cursor until the group is
    /// done) whose window is written to its end.
    fn finish_written_chunks(&mut self, o: &mut OpenWindow) -> Result<(), PgError> {
        let until = o.slices.committed_until();
        let mut finished = false;
        while o.rows.len() > 1 && qbo::query::ceil_second(o.rows[0].window_end) <= until {
            let row = o.rows.remove(0);
            self.finish_chunk_of(o, row.chunk)?;
            finished = true;
        }
        // the chunk the group is now in is being worked on (an attempt of it, even if its first
        // request fails)
        let current = o.current();
        if finished && o.started.insert(current) {
            ledger::start_chunk(self.run.run_id, current)?;
            xact::commit();
        }
        Ok(())
    }

    /// Marks one chunk of a group succeeded, with the time since the group's mark.
    fn finish_chunk_of(&mut self, o: &mut OpenWindow, chunk: i32) -> Result<(), PgError> {
        let run_id = self.run.run_id;
        if o.started.insert(chunk) {
            ledger::start_chunk(run_id, chunk)?;
        }
        let c = ledger::finish_chunk(run_id, chunk, o.mark.elapsed().as_secs_f64())?;
        o.mark = Instant::now();
        xact::commit();
        if self.mode == Mode::Call {
            crate::say!("{}", notices::chunk_done(&c, &session_ts));
        }
        Ok(())
    }

    fn finish_open_window(&mut self, mut o: OpenWindow) -> Result<(), PgError> {
        let run_id = self.run.run_id;
        let left = o.slices.live_seconds_left();
        if left > 0 {
            let note = format!(
                "run {run_id} chunk {}/{}: {left} second(s) near now were still receiving records while read; records written into them after this run asked arrive with the next run",
                o.current(), self.run.chunks_total
            );
            if self.mode == Mode::Call {
                crate::say!("{note}");
            }
            ledger::set_progress(run_id, &note)?;
        }
        for row in std::mem::take(&mut o.rows) {
            self.finish_chunk_of(&mut o, row.chunk)?;
        }
        Ok(())
    }

    /// Sends an admitted request to the network thread with a valid access token.
    fn dispatch(
        &mut self,
        id: u64,
        want: Request<Want>,
        admission: i64,
        requests: &mut Dispatcher<Want>,
    ) -> Result<(), PgError> {
        let token = match self.tokens.access_token(&self.rt, self.mode) {
            Ok(t) => t,
            Err(e) => {
                self.limiter.finished(admission);
                return Err(self.context(want.item.chunk, want.item.start_position, e));
            }
        };
        let job = Job {
            id,
            kind: if want.item.purpose == Purpose::Page {
                JobKind::Page
            } else {
                JobKind::Count
            },
            base_url: self.base(),
            realm: self.run.realm_id.clone(),
            minor_version: self.run.minor_version as u32,
            access_token: token.clone(),
            query: want.item.query.clone(),
        };
        self.net.submit(job)?;
        requests.sent(id, want, token, admission, Instant::now());
        Ok(())
    }

    /// Handles one report of the network thread: a response read frees its request's slot in
    /// the limiter at once (the next request may go while it is parsed), an outcome is taken in.
    fn on_answer(
        &mut self,
        answer: Answer,
        requests: &mut Dispatcher<Want>,
        open: &mut [OpenWindow],
        fetched: &mut std::collections::VecDeque<Fetched>,
    ) -> Result<(), PgError> {
        match answer {
            Answer::Read { id, latency } => {
                if let Some(admission) = requests.read(id, latency) {
                    self.limiter.finished(admission);
                }
                let ahead = requests.read_ahead();
                if ahead != self.read_ahead {
                    self.net.set_read_ahead(ahead);
                    self.read_ahead = ahead;
                }
                Ok(())
            }
            Answer::Done(done) => self.on_done(done, requests, open, fetched),
        }
    }

    /// Handles the outcome of one request.
    fn on_done(
        &mut self,
        done: qbo::net::Done,
        requests: &mut Dispatcher<Want>,
        open: &mut [OpenWindow],
        fetched: &mut std::collections::VecDeque<Fetched>,
    ) -> Result<(), PgError> {
        let Some(f) = requests.answered(done.id) else {
            return Ok(());
        };
        if done.result.is_ok() {
            // an answer that was not throttled ends a throttling episode it probed
            requests.delivered(f.sent);
        }
        // the response has been read completely, or never will be: its in-flight slot is free
        // (unless that was said when it was read)
        if !f.read {
            self.limiter.finished(f.admission);
        }
        let want = &f.request.item;
        let Some(o) = open.iter_mut().find(|o| o.key == want.chunk) else {
            return Err(PgError::internal(format!(
                "answer for chunk {} which is not open",
                want.chunk
            )));
        };
        match done.result {
            Ok(NetFetched::Cdc(_)) => {
                return Err(PgError::internal(format!(
                    "run {}: a Change Data Capture answer to a backfill's request",
                    self.run.run_id
                )))
            }
            Ok(NetFetched::Count(n)) => {
                if want.purpose == Purpose::SliceCount {
                    o.slices.accept_slice_count(want.slice, n, live_edge())?;
                    if o.slices.reads_by_offsets(want.slice) {
                        let n = i64::try_from(n).unwrap_or(i64::MAX);
                        ledger::set_records_expected(self.run.run_id, o.key, n)?;
                    }
                } else {
                    o.slices
                        .pager_mut(want.slice)
                        .and_then(|p| p.accept_count_part(want.part, n))
                        .map_err(|e| self.context(want.chunk, 0, e))?;
                    o.slices.count_fed(want.slice)?;
                }
            }
            Ok(NetFetched::Page(page)) => {
                // the request is done with: its query text moves into the page's record
                let (want, sent) = (f.request.item, f.sent);
                let tid = page.intuit_tid.clone();
                let shown = o.current();
                let start_position = want.start_position;
                let accepted = o
                    .slices
                    .pager_mut(want.slice)
                    .and_then(|p| {
                        p.set_live_edge(live_edge());
                        p.accept_part(want.part, page.entity_records)
                    })
                    .map_err(|e| self.context(shown, start_position, e))?;
                let state = o.slices.page_fetched(want.slice, accepted.records.len())?;
                let secs = sent.elapsed().as_secs_f64();
                fetched.push_back(Fetched::new(want, accepted, state, tid, secs));
            }
            // what happens to a failed request is the dispatcher's decision (see qbo::dispatch)
            Err(e) => {
                let (chunk, start_position) = (o.current(), want.start_position);
                let window = o
                    .rows
                    .first()
                    .map_or((o.start, o.start), |r| (r.window_start, r.window_end));
                match requests.failed(f, e, Instant::now(), &mut self.rng) {
                    Ok(Retry::Reauthorize { reject }) => {
                        if let Some(token) = reject {
                            self.tokens
                                .reject(&token)
                                .map_err(|e| self.context(chunk, start_position, e))?;
                            xact::commit();
                        }
                    }
                    Ok(Retry::Backoff {
                        delay,
                        retry,
                        max,
                        error,
                        throttle,
                    }) => {
                        self.run_retries += 1;
                        let b = Backoff {
                            chunk,
                            chunks_total: self.run.chunks_total,
                            start_position,
                            cause: error.short(),
                            seconds: delay.as_secs_f64(),
                            retry,
                            max,
                            run_retries: self.run_retries,
                            throttle_ms: throttle.map(|d| d.as_millis() as u64),
                        };
                        // the note qbo.progress shows, and the relay of a worker reports from
                        self.progress(&notices::backoff_note(&b))?;
                        if self.mode == Mode::Call {
                            if let Some(unreported) =
                                self.backoff_notices.offer(b.run_retries, Instant::now())
                            {
                                crate::say!(
                                    "{}",
                                    notices::backoff(
                                        self.run.run_id,
                                        &b,
                                        window.0,
                                        window.1,
                                        unreported,
                                        &session_ts
                                    )
                                );
                            }
                        }
                    }
                    Err((_, e)) => return Err(self.context(chunk, start_position, e)),
                }
            }
        }
        Ok(())
    }

    /// Writes one fetched page: its rows, the chunk's counters and cursor and a `qbo.run_pages`
    /// row, in one transaction.
    fn write_page(
        &mut self,
        page: Fetched,
        open: &mut [OpenWindow],
        touch_run: bool,
    ) -> Result<(), PgError> {
        let run_id = self.run.run_id;
        let t0 = Instant::now();
        let Some(o) = open.iter_mut().find(|o| o.key == page.chunk) else {
            return Err(PgError::internal(format!(
                "page for chunk {} which is not open",
                page.chunk
            )));
        };
        // each record goes with the chunk its LastUpdatedTime falls in (a page may span several
        // chunks; one without records is counted in the first unfinished chunk)
        let mut parts: Vec<(usize, Vec<qbo::pager::RawRecord>)> = Vec::new();
        for r in page.records {
            let i = o.chunk_of(r.last_updated);
            match parts.iter_mut().find(|(k, _)| *k == i) {
                Some((_, v)) => v.push(r),
                None => parts.push((i, vec![r])),
            }
        }
        if parts.is_empty() {
            parts.push((0, Vec::new()));
        }
        parts.sort_by_key(|(i, _)| *i);
        let request_payload = serde_json::json!({
            "query": page.query,
            "start_position": page.start_position,
            "page_size": self.run.page_size,
            "minor_version": self.run.minor_version,
            "environment": self.run.environment,
        })
        .to_string();
        if let Some(ids) = &page.second_ids {
            ledger::write_second_ids(run_id, o.key, ids)?;
        }
        o.slices.page_written(page.slice, page.state)?;
        // a qbo.run_pages row in each chunk the page carried records of: the first one takes the
        // page's re-fetched records and fetch time, and the time since the last page is shared
        // by rows (so each chunk's duration is its part of the window's time)
        let mut shown = (0, 0);
        let elapsed = o.mark.elapsed().as_secs_f64();
        o.mark = Instant::now();
        let total_rows: usize = parts.iter().map(|(_, r)| r.len()).sum();
        for (n, (i, records)) in parts.into_iter().enumerate() {
            let share = if total_rows == 0 {
                1.0
            } else {
                records.len() as f64 / total_rows as f64
            };
            let row = &o.rows[i];
            let chunk = row.chunk;
            if o.started.insert(chunk) {
                ledger::start_chunk(run_id, chunk)?;
            }
            let page_no = {
                let p = o.page_no.entry(chunk).or_insert(0);
                *p += 1;
                *p
            };
            let rows = to_page_rows(records);
            let n_rows = rows.ids.len() as i64;
            let counts = raw::upsert_page(
                self.entity,
                &self.run.realm_id,
                rows,
                row.window_start,
                row.window_end,
                page_no,
                self.run.page_size,
                &request_payload,
            )?;
            let first = n == 0;
            let chunk_seconds = elapsed * share;
            let (refetched, seconds) = if first {
                shown = (chunk, page_no);
                (
                    page.refetched as i64,
                    page.fetch_seconds + t0.elapsed().as_secs_f64(),
                )
            } else {
                (0, 0.0)
            };
            ledger::page_done(
                run_id,
                &ledger::PageDone {
                    chunk,
                    page: page_no,
                    start_position: page.start_position as i32,
                    rows: n_rows,
                    inserted: counts.inserted,
                    updated: counts.updated,
                    refetched,
                    seconds,
                    chunk_seconds,
                    intuit_tid: page.intuit_tid.clone(),
                },
            )?;
        }
        ledger::save_cursor(
            run_id,
            o.key,
            &o.saved(),
            shown,
            // at most about once a second, and never over a fresh note (a backoff)
            touch_run
                && self
                    .progress_at
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1)),
        )?;
        xact::commit();

        if self.mode == Mode::Call && self.clock.due(Instant::now()) {
            let p = ledger::run_progress(run_id)?;
            crate::say!("{}", self.clock.line(&p, Instant::now()));
        }
        Ok(())
    }

    /// Commits a progress note, at most about once a second. Only called between pages, when the
    /// current transaction holds nothing else.
    fn progress(&mut self, what: &str) -> Result<(), PgError> {
        if self
            .progress_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        ledger::set_progress(self.run.run_id, what)?;
        xact::commit();
        self.progress_at = Some(Instant::now());
        Ok(())
    }

    fn base(&self) -> String {
        self.settings.api_base(&self.run.environment)
    }

    /// The error with the run, entity, chunk and start position it happened at, and what to do.
    fn context(&self, chunk: i32, start_position: u32, e: impl Into<PgError>) -> PgError {
        let e: PgError = e.into();
        let id = self.run.run_id;
        PgError::new(
            e.code,
            format!(
                "run {id} ({} chunk {}/{}, start position {start_position}): {}{}",
                self.entity.name,
                chunk,
                self.run.chunks_total,
                e.message,
                next_step(e.code, id),
            ),
        )
    }
}

/// The next group of pending chunks read as one window (see [`OpenWindow`]): the first pending
/// chunk and the chunks after it without a cursor of their own, through the one holding the
/// group's saved cursor if a resumed group goes on there; a chunk with a cursor saved by 0.3.0 or
/// before (no group) is a group alone.
fn next_group(pending: &mut std::collections::VecDeque<ChunkRow>) -> Vec<ChunkRow> {
    let first = pending.pop_front().expect("not empty");
    let mut rows = vec![first];
    loop {
        let last = rows.last().expect("one");
        if last.cursor.is_some() {
            break;
        }
        let Some(next) = pending.front() else { break };
        let joins = next.window_start == last.window_end
            && match &next.cursor {
                None => true,
                // a resumed group whose first chunks are these
                Some(c) => group_of(Some(c)).is_some_and(|(from, _)| from <= rows[0].chunk),
            };
        if !joins {
            break;
        }
        rows.push(pending.pop_front().expect("peeked"));
    }
    rows
}

pub(crate) fn to_page_rows(records: Vec<qbo::pager::RawRecord>) -> PageRows {
    let mut rows = PageRows {
        ids: Vec::with_capacity(records.len()),
        payloads: Vec::with_capacity(records.len()),
        sync_tokens: Vec::with_capacity(records.len()),
        last_updated: Vec::with_capacity(records.len()),
    };
    let mut records = records;
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for r in records {
        rows.payloads.push(r.payload);
        rows.ids.push(r.id);
        rows.sync_tokens.push(r.sync_token);
        rows.last_updated.push(r.last_updated);
    }
    rows
}

/// Seconds at or after this may still be receiving records in QBO: now, less two minutes for clock
/// skew between QBO and this server.
fn live_edge() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds(120)
}

#[cfg(test)]
mod tests {
    use super::names_run;

    #[test]
    fn a_message_names_a_run_by_its_whole_number() {
        assert!(names_run(
            "run 12 (Invoice chunk 1/2, start position 1): x",
            12
        ));
        assert!(names_run("resume run 12", 12));
        assert!(!names_run("run 123 failed", 12));
        assert!(!names_run("relation \"qbo.run_chunks\" does not exist", 12));
    }
}
