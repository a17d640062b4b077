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

use crate::entities::{self, Entity};
use crate::error::QboError;
use crate::guc::Settings;
use crate::ledger::{self, ChunkRow, RunRow};
use crate::pager::{Pager, PagerState, RequestKind};
use crate::qbo::{HttpConfig, Page, QboClient};
use crate::retry::RetryPolicy;
use crate::runtime;
use crate::store::{self, Connection, PageRows};
use crate::tokens::TokenCache;
use chrono::{DateTime, Utc};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use rand::SeedableRng;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the caller's backend (`CALL`): progress goes out as NOTICEs directly.
    Call,
    /// In a background worker started by `leader_pid` (`qbo.backfill` / `qbo.resume`): the leader
    /// relays progress from `qbo.run_pages`; the worker stops if the leader goes away.
    Worker { leader_pid: i32 },
}

/// An error that ends a run, with the SQLSTATE it is raised with.
#[derive(Debug, Clone)]
pub struct RunError {
    pub sqlstate: String,
    pub message: String,
}

impl RunError {
    pub fn new(sqlstate: &str, message: impl Into<String>) -> Self {
        RunError {
            sqlstate: sqlstate.to_owned(),
            message: message.into(),
        }
    }
    fn internal(message: impl Into<String>) -> Self {
        RunError::new("XX000", message)
    }
}

/// Raises a Postgres ERROR with the given SQLSTATE.
pub fn raise(sqlstate: &str, message: &str) -> ! {
    let code = sqlstate_code(sqlstate);
    pgrx::pg_sys::panic::ErrorReport::new(code, message.to_owned(), "").report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}

/// Maps the SQLSTATEs pg_qbo raises to pgrx's codes.
pub fn sqlstate_code(s: &str) -> PgSqlErrorCode {
    let b = s.as_bytes();
    if b.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    // MAKE_SQLSTATE: six bits per character, first character lowest.
    let packed = b.iter().enumerate().fold(0i32, |acc, (i, c)| {
        acc | ((((*c as i32) - ('0' as i32)) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

/// The 5-character text of a SQLSTATE.
pub fn unpack_sqlstate(code: PgSqlErrorCode) -> String {
    let v = code as isize as i32;
    (0..5)
        .map(|i| (((v >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// Executes (or continues) run `run_id`. Requires a non-atomic SPI connection. On error the run is
/// marked and the error re-raised; returns normally only when the run succeeded.
pub fn execute(run_id: i64, mode: Mode) {
    // The caller took the run's liveness lock in the transaction that created or reopened it
    // (see `lock_new_run` / `api::prepare_resume`), so the run is never `running` unlocked.
    let token_locked: Mutex<Option<String>> = Mutex::new(None);
    // Err(e): an error returned by the run; a caught ERROR (cancel, statement_timeout, SPI
    // failure) is turned into one too, so both take the same way out below.
    let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        run(run_id, mode, &token_locked)
    }))
    .catch_others(|caught| {
        let (sqlstate, message) = describe(&caught);
        Err(RunError { sqlstate, message })
    })
    .execute();
    match outcome {
        Ok(()) => {
            let _ = store::unlock_run(run_id);
            store::commit();
        }
        Err(e) => {
            // undo the page in flight, record why the run stopped, and raise it (without pgrx's
            // backtrace detail: the message and SQLSTATE are what a DBA needs)
            after_error(run_id, &token_locked, &e.sqlstate, &e.message);
            raise(&e.sqlstate, &e.message);
        }
    }
}

/// Takes the liveness lock of a run being created or reopened, in that same transaction; an error
/// if another process holds it.
pub fn lock_for_execution(run_id: i64) {
    match store::try_lock_run(run_id) {
        Ok(true) => {}
        Ok(false) => raise(
            "55006",
            &format!("run {run_id} is already being executed by another session; wait for it or cancel it (see qbo.runs.pid)"),
        ),
        Err(e) => raise("XX000", &e),
    }
}

/// SQLSTATE and message of a caught ERROR.
pub fn describe(caught: &CaughtError) -> (String, String) {
    match caught {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            (unpack_sqlstate(r.sql_error_code()), r.message().to_owned())
        }
        CaughtError::RustPanic { ereport, .. } => {
            ("XX000".to_owned(), ereport.message().to_owned())
        }
    }
}

fn after_error(run_id: i64, token_locked: &Mutex<Option<String>>, sqlstate: &str, message: &str) {
    unsafe {
        // Pop SPI connections left by the unwound code down to our non-atomic one.
        while !pg_sys::SPI_inside_nonatomic_context() {
            if pg_sys::SPI_finish() < 0 {
                break;
            }
        }
    }
    store::rollback();
    let status = if sqlstate == "57014" {
        "cancelled"
    } else {
        "failed"
    };
    let _ = ledger::finish_run_with_error(run_id, status, sqlstate, message);
    if let Some(realm) = token_locked.lock().ok().and_then(|mut g| g.take()) {
        let _ = store::unlock_token(&realm);
    }
    let _ = store::unlock_run(run_id);
    store::commit();
}

/// Everything one execution needs.
struct Exec<'a> {
    run: RunRow,
    entity: &'static Entity,
    settings: Settings,
    mode: Mode,
    rt: tokio::runtime::Runtime,
    client: QboClient,
    tokens: TokenCache<'a>,
    policy: RetryPolicy,
    rng: rand::rngs::StdRng,
    /// Last commit of `qbo.runs.progress` (rate-limited to about once a second).
    progress_at: Option<Instant>,
    /// When this execution started (whole second): a window reaching past it is read only up to
    /// it, so a run never chases records that keep being updated after it began (the next run
    /// picks those up).
    as_of: DateTime<Utc>,
}

fn run(run_id: i64, mode: Mode, token_locked: &Mutex<Option<String>>) -> Result<(), RunError> {
    let run = ledger::load_run(run_id)?;
    let entity = entities::lookup(&run.entity).map_err(|m| RunError::new("22023", m))?;
    let settings: Settings = serde_json::from_value(run.settings.clone()).map_err(|e| {
        RunError::internal(format!("run {run_id}: stored settings unreadable: {e}"))
    })?;
    let conn = load_connection(&run.connection)?;
    if conn.realm_id != run.realm_id {
        return Err(RunError::new(
            "22023",
            format!(
                "run {run_id}: connection \"{}\" now points to realm {} but the run was made for realm {}; start a new run",
                run.connection, conn.realm_id, run.realm_id
            ),
        ));
    }
    store::ensure_raw_table(entity).map_err(|m| RunError::new("42P07", m))?;
    ledger::start_execution(run_id)?;
    store::commit();

    let rt = runtime::new_runtime().map_err(RunError::internal)?;
    let http = HttpConfig {
        connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        request_timeout: Duration::from_millis(settings.http_timeout_ms),
        ..HttpConfig::default()
    };
    let client = QboClient::new(http).map_err(qbo_err)?;
    let policy = RetryPolicy {
        max_retries: settings.max_retries,
        base: Duration::from_millis(settings.backoff_base_ms),
        cap: Duration::from_millis(settings.backoff_cap_ms),
        retry_after_cap: Duration::from_millis(settings.retry_after_cap_ms),
    };
    let tokens = TokenCache::new(conn, &settings, token_locked).map_err(qbo_err)?;
    let mut ex = Exec {
        run,
        entity,
        settings,
        mode,
        rt,
        client,
        tokens,
        policy,
        rng: rand::rngs::StdRng::from_os_rng(),
        progress_at: None,
        // the end of the current second: everything QBO stamped up to now is inside
        as_of: chrono::DurationRound::duration_trunc(Utc::now(), chrono::Duration::seconds(1))
            .unwrap_or_else(|_| Utc::now())
            + chrono::Duration::seconds(1),
    };
    let chunks = ledger::pending_chunks(run_id)?;
    for chunk in chunks {
        ex.run_chunk(chunk)?;
    }
    ledger::finish_run_ok(run_id)?;
    if mode == Mode::Call {
        let t = ledger::totals(run_id)?;
        notice!("{}", t);
    }
    Ok(())
}

fn load_connection(name: &str) -> Result<Connection, RunError> {
    match store::load_connection(name).map_err(RunError::internal)? {
        Some(c) => Ok(c),
        None => Err(RunError::new(
            "22023",
            format!("unknown connection \"{name}\": register it with qbo.connect(...) or qbo.connect_from_file(...) (see qbo.connections)"),
        )),
    }
}

/// Converts a core error to a run error (its text never holds a secret).
pub fn qbo_err(e: QboError) -> RunError {
    RunError::new(e.sqlstate(), e.to_string())
}

/// The interrupt check run at least every 50 ms while waiting: query cancel, statement_timeout,
/// termination; and in a worker, the disappearance of the session that started it.
pub fn check_interrupts(mode: Mode) {
    pg_sys::check_for_interrupts!();
    if let Mode::Worker { leader_pid } = mode {
        let gone = unsafe { pg_sys::BackendPidGetProc(leader_pid).is_null() };
        if gone {
            raise(
                "57014",
                "canceling statement because the session that started it ended",
            );
        }
    }
}

impl Exec<'_> {
    fn run_chunk(&mut self, chunk: ChunkRow) -> Result<(), RunError> {
        let run_id = self.run.run_id;
        ledger::start_chunk(run_id, chunk.chunk)?;
        store::commit();
        let end = chunk.window_end.min(self.as_of);
        if end <= chunk.window_start {
            // the whole chunk lies after this execution began: nothing can be there yet
            let c = ledger::finish_chunk(run_id, chunk.chunk)?;
            store::commit();
            if self.mode == Mode::Call {
                notice!("{c}");
            }
            return Ok(());
        }
        let plan_chunk = crate::plan::Chunk {
            index: chunk.chunk as u32,
            start: chunk.window_start,
            end,
        };
        let page_size = self.run.page_size as u32;
        let mut pager = match &chunk.cursor {
            Some(v) => {
                let state: PagerState = serde_json::from_value(v.clone()).map_err(|e| {
                    RunError::internal(format!(
                        "run {run_id} chunk {}: stored cursor unreadable: {e}",
                        chunk.chunk
                    ))
                })?;
                Pager::resume(
                    self.entity.name,
                    self.entity.has_active,
                    plan_chunk,
                    page_size,
                    state,
                )
            }
            None => Pager::new(
                self.entity.name,
                self.entity.has_active,
                plan_chunk,
                page_size,
            ),
        }
        .map_err(qbo_err)?;
        let mut page_no = chunk.pages;
        let mut last_mark = Instant::now();
        pager.set_live_edge(live_edge());
        while let Some(req) = pager
            .next_request()
            .map_err(|e| self.context(chunk.chunk, 0, e))?
        {
            let query = req.query.clone();
            let start_position = req.start_position;
            match req.kind {
                RequestKind::SecondCount => {
                    let mode = self.mode;
                    let n = self.with_retries(chunk.chunk, 0, |ex, token| {
                        let base = ex.base();
                        let fut = ex.client.count(
                            &base,
                            &ex.run.realm_id,
                            ex.run.minor_version as u32,
                            token,
                            &query,
                        );
                        runtime::block_on_interruptible(&ex.rt, fut, &mut || check_interrupts(mode))
                    })?;
                    pager.accept_count(n).map_err(qbo_err)?;
                }
                RequestKind::Window | RequestKind::SecondPage => {
                    let t0 = Instant::now();
                    let mode = self.mode;
                    let page: Page =
                        self.with_retries(chunk.chunk, start_position, |ex, token| {
                            let base = ex.base();
                            let fut = ex.client.query(
                                &base,
                                &ex.run.realm_id,
                                ex.run.minor_version as u32,
                                token,
                                &query,
                            );
                            runtime::block_on_interruptible(&ex.rt, fut, &mut || {
                                check_interrupts(mode)
                            })
                        })?;
                    let tid = page.intuit_tid.clone();
                    pager.set_live_edge(live_edge());
                    let accepted = pager
                        .accept(page.entity_records)
                        .map_err(|e| self.context(chunk.chunk, start_position, e))?;
                    page_no += 1;
                    let rows = to_page_rows(accepted.records);
                    let n_rows = rows.ids.len() as i64;
                    let request_payload = serde_json::json!({
                        "query": query,
                        "start_position": start_position,
                        "page_size": self.run.page_size,
                        "minor_version": self.run.minor_version,
                        "environment": self.run.environment,
                    })
                    .to_string();
                    let counts = store::upsert_page(
                        self.entity,
                        &self.run.realm_id,
                        rows,
                        chunk.window_start,
                        chunk.window_end,
                        page_no,
                        self.run.page_size,
                        &request_payload,
                    )
                    .map_err(RunError::internal)?;
                    let secs = t0.elapsed().as_secs_f64();
                    let cursor = serde_json::to_value(pager.state())
                        .map_err(|e| RunError::internal(format!("cannot save the cursor: {e}")))?;
                    ledger::page_done(
                        run_id,
                        &ledger::PageDone {
                            chunk: chunk.chunk,
                            page: page_no,
                            start_position: start_position as i32,
                            rows: n_rows,
                            inserted: counts.inserted,
                            updated: counts.updated,
                            refetched: accepted.refetched as i64,
                            seconds: secs,
                            intuit_tid: tid,
                            cursor,
                            touch_run: last_mark.elapsed() >= Duration::from_secs(1)
                                || self.progress_at.is_some(),
                        },
                    )?;
                    store::commit();
                    if last_mark.elapsed() >= Duration::from_secs(1) || self.progress_at.is_some() {
                        last_mark = Instant::now();
                        self.progress_at = None;
                    }
                    if self.mode == Mode::Call {
                        notice!(
                            "{}",
                            page_notice(
                                run_id,
                                chunk.chunk,
                                self.run.chunks_total,
                                chunk.window_start,
                                chunk.window_end,
                                page_no,
                                n_rows,
                                secs,
                                start_position as i64
                            )
                        );
                    }
                }
            }
        }
        let left = pager.stats().live_seconds_left;
        if left > 0 {
            let note = format!(
                "run {run_id} chunk {}/{}: {left} second(s) near now were still receiving records while read; records written into them after this run asked arrive with the next run",
                chunk.chunk, self.run.chunks_total
            );
            if self.mode == Mode::Call {
                notice!("{note}");
            }
            ledger::set_progress(run_id, &note)?;
        }
        let c = ledger::finish_chunk(run_id, chunk.chunk)?;
        store::commit();
        if self.mode == Mode::Call {
            notice!("{}", c);
        }
        Ok(())
    }

    /// Commits a progress note, at most about once a second. Only called between pages, when the
    /// current transaction holds nothing else.
    fn progress(&mut self, what: &str) -> Result<(), RunError> {
        if self
            .progress_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        ledger::set_progress(self.run.run_id, what)?;
        store::commit();
        self.progress_at = Some(Instant::now());
        Ok(())
    }

    fn base(&self) -> String {
        self.settings.api_base(&self.run.environment)
    }

    /// Runs one request with a valid access token, refreshing it when missing/expired and once on
    /// a 401, and retrying retryable failures with exponential backoff and full jitter (honouring
    /// Retry-After), sleeping interruptibly. The final error names run, entity, chunk, start
    /// position, status, fault and intuit_tid.
    fn with_retries<T>(
        &mut self,
        chunk: i32,
        start_position: u32,
        mut attempt_fn: impl FnMut(&mut Self, &str) -> Result<T, QboError>,
    ) -> Result<T, RunError> {
        let mode = self.mode;
        let mut retries = 0u32;
        let mut refreshed_after_401 = false;
        loop {
            let token = self
                .tokens
                .access_token(&self.rt, mode)
                .map_err(|e| self.context(chunk, start_position, e))?;
            match attempt_fn(self, &token) {
                Ok(v) => return Ok(v),
                Err(QboError::Unauthorized { .. }) if !refreshed_after_401 => {
                    refreshed_after_401 = true;
                    self.tokens
                        .reject(&token)
                        .map_err(|e| self.context(chunk, start_position, e))?;
                }
                Err(e) if e.is_retryable() && retries < self.policy.max_retries => {
                    let delay = self.policy.backoff(retries, e.retry_after(), &mut self.rng);
                    retries += 1;
                    self.progress(&format!(
                        "chunk {chunk}/{} start {start_position}: backing off {:.1} s after {} (retry {retries}/{})",
                        self.run.chunks_total,
                        delay.as_secs_f64(),
                        e.short(),
                        self.policy.max_retries
                    ))?;
                    if mode == Mode::Call {
                        notice!(
                            "run {} chunk {}: {} (start={}); retry {}/{} in {:.1} s",
                            self.run.run_id,
                            chunk,
                            e,
                            start_position,
                            retries,
                            self.policy.max_retries,
                            delay.as_secs_f64()
                        );
                    }
                    runtime::sleep_interruptible(&self.rt, delay, &mut || check_interrupts(mode));
                }
                Err(e) if e.is_retryable() => {
                    let e = QboError::RetriesExhausted {
                        attempts: retries + 1,
                        last: Box::new(e),
                    };
                    return Err(self.context(chunk, start_position, e));
                }
                Err(e) => return Err(self.context(chunk, start_position, e)),
            }
        }
    }

    fn context(&self, chunk: i32, start_position: u32, e: QboError) -> RunError {
        RunError::new(
            e.sqlstate(),
            format!(
                "run {} ({} chunk {}/{}, start position {}): {}; resume with SELECT * FROM qbo.resume({}) or CALL qbo.run_resume({})",
                self.run.run_id,
                self.entity.name,
                chunk,
                self.run.chunks_total,
                start_position,
                e,
                self.run.run_id,
                self.run.run_id
            ),
        )
    }
}

fn to_page_rows(records: Vec<crate::pager::RawRecord>) -> PageRows {
    let mut rows = PageRows {
        ids: Vec::with_capacity(records.len()),
        payloads: Vec::with_capacity(records.len()),
        sync_tokens: Vec::with_capacity(records.len()),
    };
    let mut records = records;
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for r in records {
        rows.payloads
            .push(crate::jsonb::storable(r.json.get()).into_owned());
        rows.ids.push(r.id);
        rows.sync_tokens.push(r.sync_token);
    }
    rows
}

/// Seconds at or after this may still be receiving records in QBO: now, less two minutes for clock
/// skew between QBO and this server.
fn live_edge() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds(120)
}

/// `2025-01-15` for a UTC midnight, the full instant otherwise.
pub fn short_ts(t: DateTime<Utc>) -> String {
    if t.time() == chrono::NaiveTime::MIN {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// The per-page NOTICE: `run 42 chunk 3/37 [2025-01-15 → 2025-01-22): page 1: 1000 rows in 0.48 s (start=1)`.
#[allow(clippy::too_many_arguments)]
pub fn page_notice(
    run_id: i64,
    chunk: i32,
    total: i32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    page: i32,
    rows: i64,
    secs: f64,
    start_position: i64,
) -> String {
    format!(
        "run {run_id} chunk {chunk}/{total} [{} → {}): page {page}: {rows} rows in {secs:.2} s (start={start_position})",
        short_ts(start),
        short_ts(end)
    )
}
