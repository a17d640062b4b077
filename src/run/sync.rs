//! Executes a sync (`CALL qbo.run_sync`): brings every entity asked for up to date with
//! QuickBooks, one watermark per (realm, entity) in `qbo.sync_state`.
//!
//! # What a sync does
//! - Each entity is routed by [`qbo::cdc::route`]:
//!   - **first sync** (no watermark): its whole history, from [`history_start`], is read by a
//!     backfill run (`qbo.runs.parent_run_id` = the sync), in [`FIRST_SYNC_CHUNK_DAYS`]-day
//!     chunks. Earlier backfills do not seed watermarks: a backfill proves nothing about the
//!     time outside its window (records already in raw are skipped, at the cost of reading them);
//!   - **cdc**: every such entity in one Change Data Capture call from the earliest of their
//!     watermarks ([`qbo::cdc::CdcRound`]); an answer at the 1000-object cap is applied and its
//!     entities asked again in halves, and an entity that fills an answer alone goes on through
//!     the pager from its watermark;
//!   - **query** (CDC does not serve the entity: TaxCode, TaxRate, TimeActivity): read at most
//!     once per `qbo.sync_non_cdc_interval_ms` (default 12 h; a sync sooner leaves it as it is,
//!     route **not_due**), with one query ([`qbo::poll`]): a transaction entity that fits a page
//!     is read whole, its deletes found at once (each confirmed by `Id IN (...)`); any other is
//!     read from its watermark, a transaction's deletes then found by the hunt below. The
//!     watermark comes from the answer's `time`, as after CDC. An answer that fills its page
//!     is applied and the pager takes over;
//!   - **pager** (the watermark is older than CDC reaches, or the entity filled a CDC answer or
//!     its query's page alone): a backfill run over [watermark, now), then, for a
//!     transaction (name lists are never deleted), the deletes hunt ([`qbo::deletes`]): live
//!     local counts against QuickBooks' `count(*)` by window of `LastUpdatedTime`, narrowed where
//!     they differ, each candidate confirmed by `Id IN (...)` before it is tombstoned.
//! - CDC entities go first (one request in the steady state), then the backfills, one at a time.
//! - Every CDC answer is written in one transaction: its records (the page upsert), its
//!   tombstones (`deleted_at_utc`), the counters of each entity row, and the new watermark of
//!   every entity it settles. A crash or cancel leaves each entity either before or after the
//!   answer, never half; changes seen again are skipped by their SyncToken.
//! - A backfill's watermark (its end less [`qbo::cdc::WATERMARK_MARGIN`]) is committed after it
//!   succeeded. One that failed is resumed by the next sync (only what it had not done), and the
//!   span after its end follows with the sync after that.
//!
//! Requests: a CDC request is counted on the sync (`qbo.runs.requests_cdc`), and in the report on
//! the first entity it asked for; a query or hunt request on its entity; the sync's own token
//! refreshes on its first entity read by CDC (else by a query, else through the pager); a
//! backfill's requests on the backfill run, and in the report on its entity. The report's
//! `requests` add up to the sync's total exactly.

use crate::pg::error::PgError;
use crate::pg::guc::{Budget, Settings};
use crate::pg::interrupts::{check_interrupts, held, Mode};
use crate::pg::time::session_ts;
use crate::pg::xact;
use crate::run::executor;
use crate::run::limiter::{Account, Kind, Limiter};
use crate::run::notices::{self, Backoff, BackoffGate};
use crate::run::request::{self, Resume, RunRequest};
use crate::run::tokens::TokenCache;
use crate::store::connections::{self, Connection};
use crate::store::ledger::{self, RunRow};
use crate::store::syncs::{self, Applied, EntityRow, NewSync};
use crate::store::{locks, raw};
use chrono::{DateTime, TimeDelta, Utc};
use pgrx::prelude::*;
use qbo::cdc::{CdcAnswer, CdcCall, CdcRound, Route, Settled, WATERMARK_MARGIN};
use qbo::client::HttpConfig;
use qbo::deletes::{DeleteHunt, HuntKind, HuntRequest, Need};
use qbo::dispatch::{Dispatcher, Request, Retry};
use qbo::entities::{self, Entity, ENTITIES};
use qbo::net::{Answer, Fetched, Idle, Job, JobKind, Net};
use qbo::runtime;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where an entity's first sync starts reading: 2000-01-01 UTC, before QuickBooks Online existed,
/// so every `MetaData.LastUpdatedTime` is after it.
pub fn history_start() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Days per chunk of a first sync's backfill (its volumetry is per year).
pub const FIRST_SYNC_CHUNK_DAYS: i32 = 366;
/// Days per chunk of a backfill reading an entity's changes since its watermark.
pub const PAGER_CHUNK_DAYS: i32 = 7;

/// What a sync was asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// `None`: every entity pg_qbo knows.
    pub entities: Option<Vec<String>>,
    pub connection: String,
    pub minor_version: i32,
    pub settings: Settings,
}

fn bad(msg: String) -> PgError {
    PgError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg)
}

/// The entities of a request, each once, in catalog order; an unknown name is refused with the
/// list of names allowed.
pub fn entities_of(names: Option<&[String]>) -> Result<Vec<&'static Entity>, PgError> {
    let Some(names) = names else {
        return Ok(ENTITIES.iter().collect());
    };
    if names.is_empty() {
        return Err(bad(
            "entities must not be an empty array: name at least one entity (see qbo.entities), or pass NULL for every entity".into(),
        ));
    }
    let mut out: Vec<&'static Entity> = Vec::new();
    for n in names {
        let e = entities::lookup(n).map_err(bad)?;
        if !out.iter().any(|x| x.name == e.name) {
            out.push(e);
        }
    }
    out.sort_by_key(|e| ENTITIES.iter().position(|x| x.name == e.name));
    Ok(out)
}

/// Checks a request; writes nothing. Returns the entities and the connection.
pub fn validate(r: &SyncRequest) -> Result<(Vec<&'static Entity>, Connection), PgError> {
    crate::pg::spi::forget_owner();
    let list = entities_of(r.entities.as_deref())?;
    request::check_version_and_hosts(r.minor_version, &r.settings)?;
    let conn = connections::require_connection(&r.connection)?;
    connections::check_may_use(&conn.name)?;
    if conn.client_id.is_empty() || conn.client_secret.is_empty() || conn.refresh_token.is_empty() {
        return Err(bad(format!(
            "connection \"{}\" has no credentials: register them with qbo.connect(...)",
            r.connection
        )));
    }
    for e in &list {
        raw::check_existing_raw_table(e)?;
    }
    Ok((list, conn))
}

/// What [`start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The sync run, created (to execute).
    Created(i64),
    /// A sync of the same company is running: nothing was written; the NOTICE to give.
    Busy(String),
}

/// The NOTICE of a call that finds a sync of realm `realm` running.
fn busy_notice(func: &str, realm: &str) -> Result<String, PgError> {
    let which = syncs::running_sync(realm)?
        .map(|id| format!(" (run {id}, see qbo.progress)"))
        .unwrap_or_default();
    Ok(format!(
        "{func}: a sync of realm {realm} is already running{which}; this call syncs nothing and returns (the running sync reads every change up to its end)"
    ))
}

/// Whether a sync of the company of request `r` is running now (its NOTICE), checked before a
/// worker is started for it (the worker checks again, atomically, when it creates its run).
/// Validates the request first (its errors raised as `func`'s).
pub fn busy(r: &SyncRequest, func: &str) -> Result<Option<String>, PgError> {
    let (_, conn) = validate(r).map_err(|e| e.prefixed(func))?;
    if locks::try_lock_sync(&conn.realm_id)? {
        locks::unlock_sync(&conn.realm_id)?;
        return Ok(None);
    }
    busy_notice(func, &conn.realm_id).map(Some)
}

/// Creates the sync run (its liveness lock and the realm's sync lock taken; the caller commits,
/// then [`execute`]), unless a sync of the same company is running ([`Started::Busy`]: nothing
/// was written; overlapping pg_cron firings are harmless).
pub fn start(r: &SyncRequest, entry_point: &str, func: &str) -> Result<Started, PgError> {
    let (list, conn) = validate(r).map_err(|e| e.prefixed(func))?;
    ledger::mark_interrupted()?;
    if !locks::try_lock_sync(&conn.realm_id)? {
        return busy_notice(func, &conn.realm_id).map(Started::Busy);
    }
    // the realm's sync lock is a session lock: an error from here on must let it go
    match create(r, entry_point, &list, &conn) {
        Ok(id) => Ok(Started::Created(id)),
        Err(e) => {
            let _ = locks::unlock_sync(&conn.realm_id);
            Err(e)
        }
    }
}

fn create(
    r: &SyncRequest,
    entry_point: &str,
    list: &[&'static Entity],
    conn: &Connection,
) -> Result<i64, PgError> {
    let marks = syncs::watermarks(&conn.realm_id)?;
    let start = history_start();
    let entities: Vec<(&'static Entity, DateTime<Utc>)> = list
        .iter()
        .map(|e| (*e, marks.get(e.name).copied().unwrap_or(start)))
        .collect();
    let label = match &r.entities {
        None => "*".to_owned(),
        Some(_) => list.iter().map(|e| e.name).collect::<Vec<_>>().join(","),
    };
    let settings = serde_json::to_value(&r.settings)
        .map_err(|e| PgError::internal(format!("the sync's settings cannot be stored: {e}")))?;
    let run_id = syncs::create_sync(&NewSync {
        label: &label,
        connection: &conn.name,
        realm_id: &conn.realm_id,
        environment: &conn.environment,
        minor_version: r.minor_version,
        settings,
        entry_point,
        entities: &entities,
        until: qbo::query::ceil_second(Utc::now()),
    })?;
    if !locks::try_lock_run(run_id)? {
        return Err(PgError::internal(format!(
            "run {run_id} is locked by another process"
        )));
    }
    Ok(run_id)
}

/// Executes sync `run_id` (created by [`start`]); releases the realm's sync lock however it ends.
/// Requires a non-atomic SPI connection. Raises the error that stopped it, the run marked.
pub fn execute(run_id: i64, mode: Mode) {
    let token_locked: Mutex<Option<String>> = Mutex::new(None);
    let realm: Mutex<Option<String>> = Mutex::new(None);
    let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        run(run_id, mode, &token_locked, &realm)
    }))
    .catch_others(|caught| Err(PgError::from(&caught)))
    .execute();
    let release = |realm: &Mutex<Option<String>>| {
        xact::attempt(|| {
            if let Some(r) = realm.lock().ok().and_then(|mut g| g.take()) {
                if let Err(e) = locks::unlock_sync(&r) {
                    held(|| {
                        warning!(
                            "sync run {run_id}: could not release the sync lock of realm {r}: {e}"
                        )
                    });
                }
            }
            xact::commit();
        });
    };
    match outcome {
        Ok(()) => {
            xact::commit();
            if let Err(e) = locks::unlock_run(run_id) {
                held(|| {
                    warning!("sync run {run_id} succeeded; its liveness lock could not be released (it goes with the session): {e}")
                });
            }
            xact::commit();
            release(&realm);
        }
        Err(e) => {
            let code = e.code;
            let message = if e.is(PgSqlErrorCode::ERRCODE_QUERY_CANCELED)
                || executor::names_run(&e.message, run_id)
            {
                e.message
            } else {
                format!(
                    "sync run {run_id}: {}; CALL qbo.run_sync(...) again continues from the watermarks committed",
                    e.message
                )
            };
            let e = PgError::new(code, message);
            let recorded = executor::after_error(run_id, &token_locked, &e);
            // the realm's sync lock goes after the run's outcome is recorded
            if realm.lock().map(|g| g.is_none()).unwrap_or(true) {
                // run() failed before it knew the realm: take it from the ledger
                if let Ok(r) = ledger::load_run(run_id) {
                    if let Ok(mut g) = realm.lock() {
                        *g = Some(r.realm_id);
                    }
                }
            }
            release(&realm);
            if recorded {
                e.raise();
            }
            PgError::new(code, format!("{} (the sync could not be marked in qbo.runs: is pg_qbo still installed in this database?)", e.message)).raise();
        }
    }
}

/// Whether `e`, the answer to a CDC request, is QuickBooks refusing its `changedSince` as older
/// than CDC serves (a 400 naming changedSince: Intuit's text is "Operation cdc with changedSince
/// date ... which is older than fixed days is not supported").
fn cdc_too_old(kind: &JobKind, e: &qbo::error::QboError) -> bool {
    if !matches!(kind, JobKind::Cdc(_)) || e.http_status() != Some(400) {
        return false;
    }
    let text = e.to_string();
    text.contains("changedSince") && (text.contains("older than") || text.contains("30 days"))
}

/// The NOTICE of one entity of a finished sync: `sync run N: Invoice (cdc) [since, until): 12
/// changed: 3 inserted, 7 updated, 2 deleted, 0 skipped; 1 request(s), 0.012 s`.
pub fn entity_line(run_id: i64, r: &syncs::ReportRow) -> String {
    format!(
        "sync run {run_id}: {} ({}) [{}, {}): {} changed: {} inserted, {} updated, {} deleted, {} skipped; {} request(s), {:.3} s",
        r.entity,
        r.route.as_deref().unwrap_or("not started"),
        crate::pg::time::from_tstz(r.since).map_or_else(String::new, session_ts),
        crate::pg::time::from_tstz(r.until).map_or_else(String::new, session_ts),
        r.changed,
        r.inserted,
        r.updated,
        r.deleted,
        r.skipped,
        r.requests,
        r.seconds
    )
}

/// The last NOTICE of a sync that succeeded.
pub fn summary_line(run_id: i64) -> Result<String, PgError> {
    let n = syncs::report(run_id)?.len();
    let total = syncs::total_requests(run_id)?;
    Ok(format!(
        "sync run {run_id} succeeded: {n} entit{} synced with {total} request(s)",
        if n == 1 { "y" } else { "ies" },
    ))
}

/// The network side of a sync, made when its first CDC call is due.
struct Wire<'a> {
    rt: tokio::runtime::Runtime,
    net: Net,
    limiter: Limiter,
    tokens: TokenCache<'a>,
    rng: rand::rngs::StdRng,
    backoff_notices: BackoffGate,
    retries: u64,
}

/// An entity to read through the pager: from when, on which route (`first_sync`, `pager`).
type PagerPass = (&'static Entity, DateTime<Utc>, &'static str);

/// What is left of an entity after [`SyncExec::poll_pass`].
enum PollLeft {
    /// Nothing: its watermark moved (or it was not due).
    Done,
    /// Its deletes, by the hunt over everything up to this instant.
    Hunt(DateTime<Utc>),
    /// The answer filled its page: the pager reads its changes since its watermark.
    Pager,
}

struct SyncExec<'a> {
    run: RunRow,
    settings: Settings,
    mode: Mode,
    conn: Connection,
    token_locked: &'a Mutex<Option<String>>,
    wire: Option<Wire<'a>>,
    /// Entity rows by entity name.
    rows: HashMap<&'static str, EntityRow>,
    /// CDC calls made (numbers them in `raw.*.page_number`).
    calls: i32,
    /// QuickBooks' clock less this machine's, as the last CDC answer showed it (its `time` less
    /// the moment it was received: never more than the real difference).
    qbo_ahead: Option<TimeDelta>,
    /// QuickBooks refused the last CDC call for a `changedSince` older than it serves.
    cdc_refused_as_too_old: bool,
}

fn run(
    run_id: i64,
    mode: Mode,
    token_locked: &Mutex<Option<String>>,
    realm_slot: &Mutex<Option<String>>,
) -> Result<(), PgError> {
    let run = ledger::load_run(run_id)?;
    if let Ok(mut g) = realm_slot.lock() {
        *g = Some(run.realm_id.clone());
    }
    let settings: Settings = serde_json::from_value(run.settings.clone())
        .map_err(|e| PgError::internal(format!("stored settings unreadable: {e}")))?;
    let conn = connections::require_connection(&run.connection)?;
    connections::check_may_use(&conn.name)?;
    if conn.realm_id != run.realm_id {
        return Err(PgError::invalid(format!(
            "connection \"{}\" now points to realm {} but the sync was made for realm {}",
            run.connection, conn.realm_id, run.realm_id
        )));
    }
    let mut rows = HashMap::new();
    let mut order: Vec<&'static Entity> = Vec::new();
    for r in syncs::entity_rows(run_id)? {
        let e = entities::lookup(&r.entity).map_err(PgError::invalid)?;
        raw::ensure_raw_table(e)?;
        order.push(e);
        rows.insert(e.name, r);
    }
    ledger::start_execution(run_id)?;
    xact::commit();
    let mut ex = SyncExec {
        run,
        settings,
        mode,
        conn,
        token_locked,
        wire: None,
        rows,
        calls: 0,
        qbo_ahead: None,
        cdc_refused_as_too_old: false,
    };
    let now = Utc::now();
    let marks = syncs::watermarks(&ex.run.realm_id)?;
    let mut cdc: Vec<(&'static Entity, DateTime<Utc>)> = Vec::new();
    let mut pager: Vec<PagerPass> = Vec::new();
    let mut polls: Vec<(&'static Entity, DateTime<Utc>)> = Vec::new();
    for e in &order {
        let mark = marks.get(e.name).copied();
        match qbo::cdc::route(e, mark, now) {
            Route::FirstSync => pager.push((e, history_start(), "first_sync")),
            Route::Cdc => cdc.push((e, mark.expect("routed by its watermark"))),
            Route::Unsupported => polls.push((e, mark.expect("routed by its watermark"))),
            Route::TooOld => {
                let w = mark.expect("routed by its watermark");
                ex.say(format!(
                    "the watermark of {} ({}) is older than Change Data Capture reaches (30 days, less an hour for clock differences): its changes since then are read through the pager",
                    e.name,
                    session_ts(w)
                ));
                pager.push((e, w, "pager"));
            }
        }
    }
    if !cdc.is_empty() {
        for capped in ex.cdc_pass(&cdc)? {
            pager.push(capped);
        }
        // the CDC requests' in-flight slots are freed now, not after the backfills below
        ex.release_slots()?;
    }
    // after the CDC calls, which tell QuickBooks' clock (what "due" is measured on)
    for (e, since) in polls {
        match ex.poll_pass(e, since)? {
            PollLeft::Done => {}
            PollLeft::Hunt(to) => {
                ex.hunt_pass(e, to)?;
                ex.release_slots()?;
            }
            PollLeft::Pager => pager.push((e, since, "pager")),
        }
    }
    for (e, since, route) in pager {
        let end = ex.pager_pass(e, since, route)?;
        // deletes the pager cannot see: found by comparing counts (name lists are never deleted)
        // over everything raw holds of the entity, up to the pass's end (a record updated within
        // the watermark's margin by the pass before, and deleted since, lies just before it)
        if route == "pager" && !e.has_active {
            ex.hunt_pass(e, end)?;
            ex.release_slots()?;
        }
    }
    ex.release_slots()?;
    syncs::attribute_tokens(run_id)?;
    ledger::finish_run_ok(run_id)?;
    xact::commit();
    if mode == Mode::Call {
        for r in syncs::report(run_id)? {
            crate::say!("{}", entity_line(run_id, &r));
        }
        let line = summary_line(run_id)?;
        crate::say!("{line}");
    }
    Ok(())
}

impl<'a> SyncExec<'a> {
    fn say(&self, what: String) {
        let line = format!("sync run {}: {what}", self.run.run_id);
        if self.mode == Mode::Call {
            crate::say!("{line}");
        } else {
            held(|| log!("pg_qbo: {line}"));
        }
    }

    /// Reports the sync's finished requests to the realm's limiter (their in-flight slots are
    /// free for the backfills that come next).
    fn release_slots(&mut self) -> Result<(), PgError> {
        if let Some(w) = self.wire.as_mut() {
            if w.limiter.has_finished() {
                w.limiter.admit(&[])?;
                xact::commit();
            }
        }
        Ok(())
    }

    fn wire(&mut self) -> Result<&mut Wire<'a>, PgError> {
        if self.wire.is_none() {
            let budget = qbo::budget::MemoryBudget::new(
                self.settings.max_buffer_mb,
                self.settings.max_in_flight,
            );
            let http = HttpConfig {
                connect_timeout: Duration::from_millis(self.settings.connect_timeout_ms),
                request_timeout: Duration::from_millis(self.settings.http_timeout_ms),
                max_response_bytes: budget.response_cap(),
                jsonb_payloads: raw::database_is_utf8(),
                ..HttpConfig::default()
            };
            let account = Account {
                client_id: self.conn.client_id.clone(),
                connection: self.conn.name.clone(),
                run_id: self.run.run_id,
                budget: Budget::current(),
            };
            let conn = connections::require_connection(&self.conn.name)?;
            self.wire = Some(Wire {
                rt: runtime::new_runtime().map_err(PgError::internal)?,
                net: Net::start(http)?,
                limiter: Limiter::new(&self.run.realm_id, &self.settings, account),
                tokens: TokenCache::new(conn, self.run.run_id, &self.settings, self.token_locked)?,
                rng: rand::rngs::StdRng::from_os_rng(),
                backoff_notices: BackoffGate::default(),
                retries: 0,
            });
        }
        Ok(self.wire.as_mut().expect("made above"))
    }

    /// The CDC calls of the entities routed there; returns the entities a capped answer left to
    /// the pager, with where to read from.
    fn cdc_pass(
        &mut self,
        cdc: &[(&'static Entity, DateTime<Utc>)],
    ) -> Result<Vec<PagerPass>, PgError> {
        let run_id = self.run.run_id;
        for (e, since) in cdc {
            let chunk = self.rows[e.name].chunk;
            syncs::start_entity(run_id, chunk, "cdc", *since)?;
        }
        xact::commit();
        let mut round = CdcRound::new(cdc).map_err(PgError::from)?;
        let mut left = Vec::new();
        while !round.is_done() {
            let calls = round.ready().map_err(PgError::from)?;
            if calls.is_empty() {
                return Err(PgError::internal("a CDC round with nothing to ask"));
            }
            for call in calls {
                self.cdc_refused_as_too_old = false;
                let (answer, round_trip) = match self.fetch_cdc(&call) {
                    Ok(a) => a,
                    // QuickBooks' clock says the start is older than CDC serves, though this
                    // machine's did not (a clock running behind): its entities go through the
                    // pager from their watermarks
                    Err(e) if self.cdc_refused_as_too_old => {
                        let names: Vec<&str> = call.entities().map(|e| e.name).collect();
                        self.say(format!(
                            "QuickBooks refused a Change Data Capture request for {} as reaching further back than it serves ({}): they are read through the pager",
                            names.join(", "),
                            e.message
                        ));
                        // the refused request is counted on the call's first entity, as an
                        // answered one is
                        if let Some(first) = call.entities().next() {
                            syncs::add_applied(
                                self.run.run_id,
                                self.rows[first.name].chunk,
                                &Applied {
                                    requests: 1,
                                    ..Applied::default()
                                },
                            )?;
                            xact::commit();
                        }
                        let marks = syncs::watermarks(&self.run.realm_id)?;
                        for entity in call.entities() {
                            let since = marks.get(entity.name).copied().unwrap_or(call.since());
                            left.push((entity, since, "pager"));
                        }
                        round.abandon(&call);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.qbo_ahead = Some(answer.time - Utc::now());
                let settled = round
                    .accept(&call, &answer, round_trip)
                    .map_err(PgError::from)?;
                if answer.capped() {
                    let names: Vec<&str> = call.entities().map(|e| e.name).collect();
                    self.say(format!(
                        "a Change Data Capture answer held {} objects, QuickBooks' cap: {} may be missing changes and {}",
                        answer.objects(),
                        names.join(", "),
                        if names.len() > 1 { "are asked again in halves" } else { "goes on through the pager" }
                    ));
                }
                self.apply(&call, answer, &settled)?;
                for s in settled {
                    if let Settled::Capped { entity, since } = s {
                        left.push((entity, since, "pager"));
                    }
                }
            }
        }
        Ok(left)
    }

    /// Sends one CDC call (admitted by the realm's limiter, with a valid token, retried as a
    /// query is) and returns its answer with the round trip.
    fn fetch_cdc(&mut self, call: &CdcCall) -> Result<(CdcAnswer, TimeDelta), PgError> {
        let names: Vec<&str> = call.entities().map(|e| e.name).collect();
        let first_chunk = call
            .entities()
            .next()
            .map_or(1, |e| self.rows[e.name].chunk);
        let what = format!("a Change Data Capture request ({})", names.join(", "));
        match self.fetch(
            JobKind::Cdc(call.clone()),
            Kind::Cdc,
            String::new(),
            &what,
            first_chunk,
        )? {
            (Fetched::Cdc(answer), rtt) => Ok((answer, rtt)),
            _ => Err(PgError::internal(
                "a query answer to a Change Data Capture request",
            )),
        }
    }

    /// Sends one request (admitted by the realm's limiter as `kind`, with a valid token, retried
    /// as every request is: backoffs, throttling, a fresh token after a 401) and returns its
    /// answer with the round trip. `what` names it in NOTICEs and errors; `chunk` is the entity
    /// row its backoff notes name.
    fn fetch(
        &mut self,
        job_kind: JobKind,
        kind: Kind,
        query: String,
        what: &str,
        first_chunk: i32,
    ) -> Result<(Fetched, TimeDelta), PgError> {
        let run_id = self.run.run_id;
        let mode = self.mode;
        let base = self.settings.api_base(&self.run.environment);
        let realm = self.run.realm_id.clone();
        let minor_version = self.run.minor_version as u32;
        let policy = self.settings.retry_policy();
        let chunks_total = self.run.chunks_total;
        let w = self.wire()?;
        let mut d: Dispatcher<()> = Dispatcher::new(policy, 1, false);
        let mut wants = vec![Request::new(())];
        loop {
            check_interrupts(mode);
            let now = Instant::now();
            if wants.is_empty() && d.in_flight() == 0 {
                wants = d.take_due(now, d.room(0, now));
            }
            if !wants.is_empty() || w.limiter.has_finished() {
                if !wants.is_empty() {
                    // a valid token before the admission (a refresh commits)
                    w.tokens.access_token(&w.rt, mode)?;
                }
                let kinds = vec![kind; wants.len()];
                let adm = w.limiter.admit(&kinds)?;
                xact::commit();
                if let Some(text) = &adm.warning {
                    held(|| warning!("{text}"));
                }
                for (id, want, admission) in d.admit(
                    std::mem::take(&mut wants),
                    adm.ids,
                    adm.wait,
                    Instant::now(),
                ) {
                    let token = match w.tokens.access_token(&w.rt, mode) {
                        Ok(t) => t,
                        Err(e) => {
                            w.limiter.finished(admission);
                            return Err(e);
                        }
                    };
                    w.net.submit(Job {
                        id,
                        kind: job_kind.clone(),
                        base_url: base.clone(),
                        realm: realm.clone(),
                        minor_version,
                        access_token: token.clone(),
                        query: query.clone(),
                    })?;
                    d.sent(id, want, token, admission, Instant::now());
                }
            }
            let timeout = d
                .timeout(Instant::now(), runtime::POLL)
                .max(Duration::from_millis(1));
            match w.net.wait(timeout) {
                Ok(Answer::Read { id, latency }) => {
                    if let Some(admission) = d.read(id, latency) {
                        w.limiter.finished(admission);
                    }
                }
                Ok(Answer::Done(done)) => {
                    let Some(f) = d.answered(done.id) else {
                        continue;
                    };
                    if !f.read {
                        w.limiter.finished(f.admission);
                    }
                    match done.result {
                        Ok(answer) => {
                            d.delivered(f.sent);
                            let rtt =
                                TimeDelta::from_std(f.sent.elapsed()).unwrap_or(TimeDelta::zero());
                            return Ok((answer, rtt));
                        }
                        Err(e) => match d.failed(f, e, Instant::now(), &mut w.rng) {
                            Ok(Retry::Reauthorize { reject }) => {
                                if let Some(token) = reject {
                                    w.tokens.reject(&token)?;
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
                                w.retries += 1;
                                let b = Backoff {
                                    chunk: first_chunk,
                                    chunks_total,
                                    start_position: 0,
                                    cause: error.short(),
                                    seconds: delay.as_secs_f64(),
                                    retry,
                                    max,
                                    run_retries: w.retries,
                                    throttle_ms: throttle.map(|d| d.as_millis() as u64),
                                };
                                ledger::set_progress(run_id, &notices::backoff_note(&b))?;
                                xact::commit();
                                if mode == Mode::Call {
                                    if let Some(unreported) =
                                        w.backoff_notices.offer(b.run_retries, Instant::now())
                                    {
                                        let others = if unreported > 0 {
                                            format!("; {unreported} other retries not reported")
                                        } else {
                                            String::new()
                                        };
                                        let attempt = if max > 0 {
                                            format!("attempt {} of {}", retry + 1, max + 1)
                                        } else {
                                            format!("throttled, wait {retry}")
                                        };
                                        crate::say!(
                                            "sync run {run_id}: {} on {what}; retrying in {:.2} s ({attempt}{others})",
                                            b.cause,
                                            b.seconds
                                        );
                                    }
                                }
                            }
                            Err((_, e)) => {
                                if cdc_too_old(&job_kind, &e) {
                                    self.cdc_refused_as_too_old = true;
                                }
                                return Err(PgError::from(e).prefixed(what));
                            }
                        },
                    }
                }
                Err(Idle::Timeout) => {}
                Err(Idle::Gone) => {
                    return Err(PgError::internal("the network thread stopped unexpectedly"))
                }
            }
        }
    }

    /// Writes one CDC answer in one transaction: records, tombstones, the counters of its
    /// entities, and the watermarks it settles.
    fn apply(
        &mut self,
        call: &CdcCall,
        answer: CdcAnswer,
        settled: &[Settled],
    ) -> Result<(), PgError> {
        let run_id = self.run.run_id;
        self.calls += 1;
        let t0 = Instant::now();
        let first = call.entities().next().map(|e| e.name);
        let request_payload = serde_json::json!({
            "cdc": call.path_and_query(self.run.minor_version as u32),
            "changed_since": call.since(),
            "minor_version": self.run.minor_version,
            "environment": self.run.environment,
            "intuit_tid": answer.intuit_tid,
        })
        .to_string();
        let n = answer.changes.len().max(1) as f64;
        for ch in answer.changes {
            let entity = ch.entity;
            let row = self.rows.get(entity.name).ok_or_else(|| {
                PgError::internal(format!(
                    "a CDC answer for {} which this sync did not ask",
                    entity.name
                ))
            })?;
            let chunk = row.chunk;
            // one version per Id (the highest SyncToken), as a page upsert wants them
            let mut records = ch.records;
            records.sort_by(|a, b| a.id.cmp(&b.id).then(b.sync_token.cmp(&a.sync_token)));
            records.dedup_by(|a, b| a.id == b.id);
            let mut tombs = ch.deleted;
            tombs.sort_by(|a, b| a.id.cmp(&b.id).then(b.deleted_at.cmp(&a.deleted_at)));
            tombs.dedup_by(|a, b| a.id == b.id);
            let changed = (records.len() + tombs.len()) as i64;
            let counts = if records.is_empty() {
                raw::UpsertCounts::default()
            } else {
                raw::upsert_page(
                    entity,
                    &self.run.realm_id,
                    executor::to_page_rows(records),
                    call.since(),
                    answer.time,
                    self.calls,
                    qbo::cdc::MAX_OBJECTS as i32,
                    &request_payload,
                )?
            };
            let deleted = if tombs.is_empty() {
                0
            } else {
                let ids: Vec<String> = tombs.iter().map(|t| t.id.clone()).collect();
                let at: Vec<DateTime<Utc>> = tombs.iter().map(|t| t.deleted_at).collect();
                raw::apply_tombstones(entity, &self.run.realm_id, &ids, &at)?
            };
            syncs::add_applied(
                run_id,
                chunk,
                &Applied {
                    changed,
                    inserted: counts.inserted,
                    updated: counts.updated,
                    deleted,
                    requests: i64::from(first == Some(entity.name)),
                    pages: 1,
                    seconds: t0.elapsed().as_secs_f64() / n,
                },
            )?;
        }
        for s in settled {
            if let Settled::Complete { entity, watermark } = s {
                let chunk = self.rows[entity.name].chunk;
                syncs::set_watermark(
                    &self.run.realm_id,
                    entity.name,
                    *watermark,
                    &self.run.connection,
                    run_id,
                    "cdc",
                )?;
                syncs::finish_entity(run_id, chunk, *watermark)?;
            }
        }
        xact::commit();
        Ok(())
    }

    /// Reads an entity through a backfill run from `since` to now (or resumes the one an earlier
    /// sync left unfinished from there), then moves its watermark to the backfill's end less
    /// [`WATERMARK_MARGIN`]. Returns the backfill's end.
    fn pager_pass(
        &mut self,
        entity: &'static Entity,
        since: DateTime<Utc>,
        route: &'static str,
    ) -> Result<DateTime<Utc>, PgError> {
        let run_id = self.run.run_id;
        let chunk = self.rows[entity.name].chunk;
        syncs::start_entity(run_id, chunk, route, since)?;
        xact::commit();
        let (child, end) = match syncs::unfinished_child(&self.run.realm_id, entity.name, since)? {
            Some((child, end)) => {
                self.say(format!(
                    "{}: resuming run {child}, which an earlier sync left unfinished over [{}, {})",
                    entity.name,
                    session_ts(since),
                    session_ts(end)
                ));
                if request::prepare_resume(child) == Resume::AlreadySucceeded {
                    return Err(PgError::internal(format!(
                        "run {child} succeeded meanwhile"
                    )));
                }
                (child, end)
            }
            None => {
                // up to now, on this machine's clock or QuickBooks' if that is behind (as a CDC
                // answer of this sync showed): never past QuickBooks' present, or records it
                // stamps later before that end would fall behind the watermark
                let here = qbo::query::ceil_second(Utc::now());
                // (a difference under 2 s is the answer's own round trip, not the clocks')
                let end = match self.qbo_ahead {
                    Some(d) if d < -TimeDelta::seconds(2) => {
                        qbo::query::ceil_second(Utc::now() + d).min(here)
                    }
                    _ => here,
                };
                if end <= since {
                    self.say(format!(
                        "{}: nothing to read yet: its watermark ({}) is not behind QuickBooks' clock",
                        entity.name,
                        session_ts(since)
                    ));
                    syncs::finish_entity(run_id, chunk, since)?;
                    xact::commit();
                    return Ok(since);
                }
                let req = RunRequest {
                    entity: entity.name.to_owned(),
                    fecha_inicio: since,
                    fecha_fin: end,
                    chunk_size: if route == "first_sync" {
                        FIRST_SYNC_CHUNK_DAYS
                    } else {
                        PAGER_CHUNK_DAYS
                    },
                    page_size: 1000,
                    minor_version: self.run.minor_version,
                    connection: self.run.connection.clone(),
                    settings: self.settings.clone(),
                };
                let v = request::validate(&req)?;
                let child = request::create_run(&req, &v, &self.run.entry_point);
                self.say(format!(
                    "{}: reading [{}, {}) through the pager as run {child}{}",
                    entity.name,
                    session_ts(since),
                    session_ts(end),
                    if route == "first_sync" {
                        " (its first sync: its whole history)"
                    } else {
                        ""
                    }
                ));
                (child, end)
            }
        };
        syncs::link_child(run_id, chunk, child)?;
        xact::commit();
        executor::execute_result(child, self.mode)
            .map_err(|e| e.prefixed(format!("{} (backfill run {child})", entity.name)))?;
        let watermark = end - WATERMARK_MARGIN;
        syncs::take_child_totals(run_id, chunk, child)?;
        syncs::set_watermark(
            &self.run.realm_id,
            entity.name,
            watermark,
            &self.run.connection,
            run_id,
            route,
        )?;
        syncs::finish_entity(run_id, chunk, watermark)?;
        xact::commit();
        Ok(end)
    }

    /// Reads an entity CDC does not serve, watermark `since`, with one query when it is due
    /// ([`qbo::poll`]): whole (a transaction small enough: its deletes found at once, each
    /// confirmed by `Id IN (...)`) or from its watermark. A complete answer moves the watermark
    /// from QuickBooks' clock in the transaction that writes it (or its last confirmation's);
    /// an answer that filled its page is written and the pager takes over.
    fn poll_pass(
        &mut self,
        entity: &'static Entity,
        since: DateTime<Utc>,
    ) -> Result<PollLeft, PgError> {
        let run_id = self.run.run_id;
        let chunk = self.rows[entity.name].chunk;
        let realm = self.run.realm_id.clone();
        let every_ms = self.settings.sync_non_cdc_interval_ms;
        let every = TimeDelta::milliseconds(every_ms.min(i64::MAX as u64) as i64);
        let qbo_now = Utc::now() + self.qbo_ahead.unwrap_or_default();
        if !qbo::poll::due(since, qbo_now, every) {
            syncs::start_entity(run_id, chunk, "not_due", since)?;
            syncs::finish_entity(run_id, chunk, since)?;
            xact::commit();
            self.say(format!(
                "{}: not due: Change Data Capture does not serve it, so it is read at most every {} (qbo.sync_non_cdc_interval_ms) and its watermark ({}) is younger; next read from {}",
                entity.name,
                qbo::poll::interval_text(every_ms),
                session_ts(since),
                session_ts(qbo::poll::due_at(since, every))
            ));
            return Ok(PollLeft::Done);
        }
        let live = syncs::live_count(entity, &realm, history_start(), DateTime::<Utc>::MAX_UTC)?;
        let plan = qbo::poll::Plan::new(entity, since, live);
        syncs::start_entity(run_id, chunk, "query", since)?;
        xact::commit();
        let what = match plan.read {
            qbo::poll::Read::Whole => format!("a query of every {} record", entity.name),
            qbo::poll::Read::Since(_) => {
                format!(
                    "a query of the {} records changed since its watermark",
                    entity.name
                )
            }
        };
        let t0 = Instant::now();
        let (answer, round_trip) =
            self.fetch(JobKind::Page, Kind::Query, plan.query.clone(), &what, chunk)?;
        let Fetched::Page(page) = answer else {
            return Err(PgError::internal(format!(
                "an answer of another kind to {what}"
            )));
        };
        let Some(time) = page.time else {
            return Err(PgError::from(qbo::error::QboError::BadResponse(format!(
                "QuickBooks answered {what} without its time (intuit_tid {}): the watermark is set from QuickBooks' clock",
                page.intuit_tid.as_deref().unwrap_or("absent")
            ))));
        };
        self.qbo_ahead = Some(time - Utc::now());
        let records = page.entity_records;
        let window = (
            match plan.read {
                qbo::poll::Read::Whole => history_start(),
                qbo::poll::Read::Since(w) => w,
            },
            time,
        );
        let full = plan.full(records.len());
        let watermark = plan.watermark(time, round_trip);
        let candidates = match plan.read {
            // a local record written after the answer was computed is not judged by it
            qbo::poll::Read::Whole if !full => qbo::poll::missing(
                syncs::live_ids(entity, &realm, history_start(), time)?,
                &records,
            ),
            _ => Vec::new(),
        };
        let confirmations = qbo::poll::confirmations(entity, &candidates);
        let last = confirmations.len();
        self.write_answer(
            entity,
            chunk,
            &plan.query,
            "sync query",
            window,
            records,
            Vec::new(),
            t0,
            (!full && last == 0).then_some(watermark),
        )?;
        if full {
            self.say(format!(
                "{}: {what} filled its page ({} records): the rest is read through the pager",
                entity.name,
                qbo::query::MAX_PAGE
            ));
            return Ok(PollLeft::Pager);
        }
        for (i, (query, asked)) in confirmations.into_iter().enumerate() {
            let t0 = Instant::now();
            let what = format!("a query of {} by Id confirming deletes", entity.name);
            let (answer, _) =
                self.fetch(JobKind::Page, Kind::Query, query.clone(), &what, chunk)?;
            let Fetched::Page(page) = answer else {
                return Err(PgError::internal(format!(
                    "an answer of another kind to {what}"
                )));
            };
            let c = qbo::deletes::confirm(asked, page.entity_records).map_err(PgError::from)?;
            let (up, gone) = (c.upsert, c.tombstone);
            self.write_answer(
                entity,
                chunk,
                &query,
                "deletes confirmation",
                (history_start(), time),
                up,
                gone,
                t0,
                (i + 1 == last).then_some(watermark),
            )?;
        }
        if plan.needs_hunt() {
            let to = qbo::query::floor_second(time - round_trip.max(TimeDelta::zero()));
            return Ok(PollLeft::Hunt(to));
        }
        Ok(PollLeft::Done)
    }

    /// Finds the records of `entity` QuickBooks deleted before `to` that raw still has live,
    /// where CDC could not say (see [`qbo::deletes`]): after its changes up to `to` were
    /// applied, a window of `LastUpdatedTime` whose live local count differs from QuickBooks'
    /// `count(*)` is cut in two until reading it pays, read, and each local Id the read did not
    /// return confirmed with `Id IN (...)`: gone, it is tombstoned (`deleted_at_utc` = when it
    /// was found); back, it moved (updated since) and is upserted. Every answer is written in a
    /// transaction of its own; the requests are counted on the entity.
    fn hunt_pass(&mut self, entity: &'static Entity, to: DateTime<Utc>) -> Result<(), PgError> {
        let chunk = self.rows[entity.name].chunk;
        let realm = self.run.realm_id.clone();
        let mut hunt = DeleteHunt::new(entity, history_start(), to, 1000).map_err(PgError::from)?;
        loop {
            for need in hunt.needs() {
                match need {
                    Need::LocalCount { window, from, to } => {
                        let n = syncs::live_count(entity, &realm, from, to)?;
                        hunt.set_local_count(window, n).map_err(PgError::from)?;
                    }
                    Need::LocalIds { window, from, to } => {
                        let ids = syncs::live_ids(entity, &realm, from, to)?;
                        hunt.set_local_ids(window, ids).map_err(PgError::from)?;
                    }
                }
            }
            let requests = hunt.ready();
            if requests.is_empty() {
                if hunt.is_done() {
                    break;
                }
                if hunt.needs().is_empty() {
                    return Err(PgError::internal(format!(
                        "the deletes hunt of {} has nothing to ask and is not done",
                        entity.name
                    )));
                }
                continue;
            }
            for r in requests {
                let (job, kind, what) = match r.kind {
                    HuntKind::Count { .. } => (
                        JobKind::Count,
                        Kind::Count,
                        format!("a count(*) of {} looking for deletes", entity.name),
                    ),
                    HuntKind::Page { position, .. } => (
                        JobKind::Page,
                        Kind::Query,
                        format!(
                            "a page of {} at start position {position} looking for deletes",
                            entity.name
                        ),
                    ),
                    HuntKind::Confirm { .. } => (
                        JobKind::Page,
                        Kind::Query,
                        format!("a query of {} by Id confirming deletes", entity.name),
                    ),
                };
                let t0 = Instant::now();
                let (answer, _) = self.fetch(job, kind, r.query.clone(), &what, chunk)?;
                let (records, tombstones) = match (&r.kind, answer) {
                    (HuntKind::Count { .. }, Fetched::Count(n)) => {
                        hunt.accept_count(&r, n).map_err(PgError::from)?;
                        (Vec::new(), Vec::new())
                    }
                    (HuntKind::Page { .. }, Fetched::Page(p)) => (
                        hunt.accept_page(&r, p.entity_records)
                            .map_err(PgError::from)?,
                        Vec::new(),
                    ),
                    (HuntKind::Confirm { .. }, Fetched::Page(p)) => {
                        let c = hunt
                            .accept_confirm(&r, p.entity_records)
                            .map_err(PgError::from)?;
                        (c.upsert, c.tombstone)
                    }
                    _ => {
                        return Err(PgError::internal(format!(
                            "an answer of another kind to {what}"
                        )))
                    }
                };
                self.write_hunted(entity, chunk, &r, records, tombstones, t0)?;
            }
        }
        let st = hunt.stats();
        self.say(format!(
            "{}: deletes looked for without Change Data Capture over [{}, {}): {} count(s), {} page(s), {} confirmation(s); {} deleted, {} updated since the pass through the pager",
            entity.name,
            session_ts(history_start()),
            session_ts(to),
            st.counts,
            st.pages,
            st.confirms,
            st.deleted,
            st.moved
        ));
        Ok(())
    }

    /// Writes what one answer of a deletes hunt gave, with the entity's counters, in one
    /// transaction.
    fn write_hunted(
        &mut self,
        entity: &'static Entity,
        chunk: i32,
        req: &HuntRequest,
        records: Vec<qbo::pager::RawRecord>,
        tombstones: Vec<String>,
        t0: Instant,
    ) -> Result<(), PgError> {
        self.write_answer(
            entity,
            chunk,
            &req.query,
            "deletes hunt",
            (req.from, req.to),
            records,
            tombstones,
            t0,
            None,
        )
    }

    /// Writes what one query answer gave (records upserted, Ids tombstoned as found now), the
    /// entity's counters (one request) and, when given, its new watermark, in one transaction.
    #[allow(clippy::too_many_arguments)]
    fn write_answer(
        &mut self,
        entity: &'static Entity,
        chunk: i32,
        query: &str,
        purpose: &str,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        mut records: Vec<qbo::pager::RawRecord>,
        tombstones: Vec<String>,
        t0: Instant,
        watermark: Option<DateTime<Utc>>,
    ) -> Result<(), PgError> {
        records.sort_by(|a, b| a.id.cmp(&b.id).then(b.sync_token.cmp(&a.sync_token)));
        records.dedup_by(|a, b| a.id == b.id);
        let n_records = records.len() as i64;
        let counts = if records.is_empty() {
            raw::UpsertCounts::default()
        } else {
            let request_payload = serde_json::json!({
                "query": query,
                "page_size": 1000,
                "minor_version": self.run.minor_version,
                "environment": self.run.environment,
                "purpose": purpose,
            })
            .to_string();
            raw::upsert_page(
                entity,
                &self.run.realm_id,
                executor::to_page_rows(records),
                from,
                to,
                0,
                1000,
                &request_payload,
            )?
        };
        let deleted = if tombstones.is_empty() {
            0
        } else {
            let found = qbo::query::floor_second(Utc::now());
            let at = vec![found; tombstones.len()];
            raw::apply_tombstones(entity, &self.run.realm_id, &tombstones, &at)?
        };
        syncs::add_applied(
            self.run.run_id,
            chunk,
            &Applied {
                changed: n_records + tombstones.len() as i64,
                inserted: counts.inserted,
                updated: counts.updated,
                deleted,
                requests: 1,
                pages: i32::from(n_records > 0 || !tombstones.is_empty()),
                seconds: t0.elapsed().as_secs_f64(),
            },
        )?;
        if let Some(w) = watermark {
            syncs::set_watermark(
                &self.run.realm_id,
                entity.name,
                w,
                &self.run.connection,
                self.run.run_id,
                "query",
            )?;
            syncs::finish_entity(self.run.run_id, chunk, w)?;
        }
        xact::commit();
        Ok(())
    }
}
