//! The background worker behind `SELECT * FROM qbo.backfill(...)` and `qbo.resume(...)`.
//!
//! A function cannot COMMIT, so the set-returning entry points hand the run to a dynamic
//! background worker (no `shared_preload_libraries` needed) and wait for it:
//! - the leader validates everything first (bad input fails in the caller, nothing written), then
//!   writes a [`Spec`] (JSON: parameters, resolved settings, its pid, database and role) into a
//!   dynamic shared memory segment and starts the worker; a session's `SET` does not reach a
//!   worker, hence the explicit settings;
//! - the worker connects to the same database as the caller's role, creates the run (or prepares
//!   the resume), publishes the run id in the segment, and executes it with
//!   [`executor::execute`] in a non-atomic SPI connection: the very code path of `CALL`;
//! - the leader relays the run's progress from the ledger as NOTICEs, the very lines a `CALL`
//!   prints, in the caller's `TimeZone` ([`Relay`]), and returns the volumetry when the worker
//!   stops (or raises the run's error, which names the run id);
//! - a cancel, `statement_timeout` or termination of the leader sends the worker SIGINT (its own
//!   query cancel): the worker rolls back the page in flight and marks the run `cancelled`. If the
//!   leader dies without that, the worker notices within 50 ms that its leader is gone and cancels
//!   itself the same way.
//!
//! `qbo.start_backfill` / `qbo.start_resume` start the same worker *detached* ([`start_detached`]):
//! the caller waits only until the worker has created (or reopened) the run and committed it, and
//! returns its id. That worker has no `bgw_notify_pid` and watches no leader ([`Mode::Detached`]):
//! the caller's session may end at once; a cancel of the worker itself (`qbo.cancel`) stops it.
//!
//! Every worker first claims one of the `qbo.max_workers` slots of the server (the starting
//! session's value, in the [`Spec`]; [`locks::claim_worker_slot`]: a session advisory lock held
//! until the worker exits), before it writes anything; with none free it fails before a run exists,
//! and its starter raises that 53400 ([`no_free_slot`]) at once. The postmaster's own refusal
//! (`max_worker_processes` exhausted) is a different 53400, raised by [`start_worker`].
//!
//! Every worker turns off the session timeouts its role and database may carry
//! ([`guc::disable_session_timeouts`]) and names its run in `pg_stat_activity.application_name`.

use crate::pg::error::{raise, PgError};
use crate::pg::guc::{self, Settings};
use crate::pg::interrupts::{self, held, Mode};
use crate::pg::spi;
use crate::pg::time::session_ts;
use crate::pg::xact;
use crate::run::notices::{self, BackoffGate, ProgressClock};
use crate::run::request::{self, Resume};
use crate::run::{executor, sync};
use crate::store::syncs;
use crate::store::{ledger, locks};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker,
};
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// What the worker must do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Create a run with these parameters, then execute it.
    New(Box<request::RunRequest>),
    /// Continue an existing run.
    Resume(i64),
    /// Create a sync run with these parameters, then execute it (see [`crate::run::sync`]).
    Sync(Box<crate::run::sync::SyncRequest>),
}

impl Job {
    /// What continues the run of this job after it was stopped, for run `run_id`.
    fn continue_with(&self, run_id: i64, resume: &str) -> String {
        match self {
            Job::Sync(_) => {
                "CALL qbo.run_sync(...) or SELECT * FROM qbo.sync(...) again: it goes on from the watermarks committed".to_owned()
            }
            _ => format!("{resume}({run_id})"),
        }
    }
}

/// Everything the worker needs, handed over explicitly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub job: Job,
    /// The session that started the worker (for a detached worker, only for the record).
    pub leader_pid: i32,
    /// Started by `qbo.start_backfill` / `qbo.start_resume`: tied to no session.
    pub detached: bool,
    pub database_oid: u32,
    pub role_oid: u32,
    /// `qbo.max_workers` of the session that started the worker: the slots it may claim.
    #[serde(default = "default_max_workers")]
    pub max_workers: i32,
}

fn default_max_workers() -> i32 {
    guc::DEFAULT_MAX_WORKERS
}

/// The 53400 of a start refused by `qbo.max_workers` (`cap` slots, all held).
pub fn no_free_slot(cap: i32) -> PgError {
    let what = if cap == 0 {
        "qbo.max_workers = 0: this server lets pg_qbo start no background worker; have a superuser raise qbo.max_workers".to_owned()
    } else {
        format!("all {cap} pg_qbo background workers that qbo.max_workers = {cap} allows are running; wait for a run to end (qbo.progress), have a superuser raise qbo.max_workers")
    };
    PgError::new(
        PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
        format!(
            "pg_qbo: {what}, or run it with CALL qbo.run_backfill(...) / CALL qbo.run_resume(...) instead, which run in this session and need no worker"
        ),
    )
}

/// Header of the shared segment, followed by the spec's JSON bytes.
#[repr(C)]
struct Shared {
    /// Run id once created (0 before).
    run_id: AtomicI64,
    /// 0 starting, 1 running, 2 finished (the ledger has the outcome), 3 failed before a run existed.
    state: AtomicI32,
    spec_len: AtomicI32,
    /// Error text when state = 3 (NUL-padded). Written by the worker, read by the leader once it
    /// has seen state 3 (hence the cells: writes go through a shared reference).
    error: UnsafeCell<[u8; 1024]>,
    sqlstate: UnsafeCell<[u8; 8]>,
}

// A `&Shared` may cross a caught ERROR: the error cells are written once, by `fail_early`, outside
// every `PgTryBuilder` closure, so an unwind can never leave them half written.
impl std::panic::RefUnwindSafe for Shared {}

const HEADER: usize = std::mem::size_of::<Shared>();

unsafe extern "C-unwind" {
    /// Postgres' own SIGTERM handler of backends (`die` in tcop/postgres.c); pgrx's binding wraps
    /// it in a Rust function, and a signal handler must be the C function itself.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// The worker's entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_qbo_worker_main(arg: pg_sys::Datum) {
    // SIGTERM (pg_terminate_backend, shutdown): the backends' `die` handler only sets a flag,
    // honoured at the next CHECK_FOR_INTERRUPTS (at least every 50 ms here). The default handler
    // of a background worker raises FATAL inside the signal handler, which is a PANIC, and a
    // restart of the whole server, when the signal lands in a critical section (a commit, a WAL
    // insert): a test that terminated workers hit exactly that.
    // SAFETY: on the worker's only thread, while its signals are still blocked (a background
    // worker's main starts with them blocked), so no SIGTERM arrives half-installed. `die` is
    // Postgres' own `void die(SIGNAL_ARGS)`, declared above with its C signature; it only sets
    // flags and the latch (async-signal-safe), and Postgres' parallel workers install it the
    // same way.
    unsafe { pg_sys::pqsignal(libc::SIGTERM, Some(postgres_die)) };
    // SAFETY: on the worker's only thread, its handlers installed: unblocking is what a
    // background worker's main must do before its work.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    let handle = arg.value() as pg_sys::dsm_handle;
    // SAFETY: on the worker's only thread, before any transaction (no resource owner, so the
    // mapping lasts until the dsm_detach at the end of this function); `handle` is the one the
    // leader passed in bgw_main_arg. A segment already destroyed (the leader is gone) makes
    // dsm_attach return null, checked just below.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    if seg.is_null() {
        log!("pg_qbo: worker could not attach its shared memory segment; the caller is gone");
        return;
    }
    // SAFETY: `seg` is attached (non-null) and stays so until the dsm_detach at the end of this
    // function, after the last use of `shared`. Its address is aligned for `Shared` (a mapping
    // of its own is page-aligned; one carved from min_dynamic_shared_memory starts on a 4 kB
    // page of a cache-line-aligned area), it is HEADER + spec_len bytes long, and the leader
    // zeroed the header before starting this worker: a valid `Shared` (zero atomics and bytes). The leader and this worker both write only
    // its atomics; `error` and `sqlstate` only this worker writes (fail_early).
    let shared = unsafe { &*(pg_sys::dsm_segment_address(seg) as *const Shared) };
    // SAFETY: the leader copied `spec_len` bytes of JSON right after the HEADER-byte header and
    // stored spec_len before it started this worker, and the segment is HEADER + spec_len bytes
    // long (see run_in_worker); the bytes are copied out while it is attached.
    let spec_bytes = unsafe {
        let p = (pg_sys::dsm_segment_address(seg) as *const u8).add(HEADER);
        std::slice::from_raw_parts(p, shared.spec_len.load(Ordering::Acquire) as usize).to_vec()
    };
    let spec: Spec = match serde_json::from_slice(&spec_bytes) {
        Ok(s) => s,
        Err(e) => {
            fail_early(
                shared,
                &PgError::internal(format!("pg_qbo worker: unreadable job: {e}")),
            );
            return;
        }
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(spec.database_oid)),
        Some(pg_sys::Oid::from(spec.role_oid)),
    );
    // the role's and database's statement_timeout & co. are for interactive statements, not runs
    guc::disable_session_timeouts();
    // SAFETY: on the worker's only thread, connected to its database just above and outside
    // any transaction (a background worker starts with none): this is how a worker begins one.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
    }
    // SAFETY: same thread, in the transaction just started, with no portal and no SPI
    // connection: a worker's top level may open a non-atomic connection and commit in it (what
    // the executor's xact::commit does). It is closed below, after the run.
    unsafe { pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32) };
    xact::ensure_outer_snapshot();
    let (mode, entry_point) = if spec.detached {
        (Mode::Detached, "detached")
    } else {
        let leader_pid = spec.leader_pid;
        (Mode::Worker { leader_pid }, "function")
    };
    let result = PgTryBuilder::new(|| {
        // its slot of qbo.max_workers, held until this process ends, before anything is written
        if locks::claim_worker_slot(spec.max_workers).is_none() {
            no_free_slot(spec.max_workers).raise();
        }
        let (run_id, resume) = match &spec.job {
            Job::New(req) => {
                let v = request::validate(req).unwrap_or_else(|e| e.raise());
                (request::create_run(req, &v, entry_point), Resume::Execute)
            }
            Job::Resume(id) => (*id, request::prepare_resume(*id)),
            Job::Sync(req) => {
                let f = if spec.detached {
                    "qbo.start_sync"
                } else {
                    "qbo.sync"
                };
                match sync::start(req, entry_point, f).unwrap_or_else(|e| e.raise()) {
                    sync::Started::Created(id) => (id, Resume::Execute),
                    // another session's sync took the company since the caller looked
                    sync::Started::Busy(notice) => {
                        raise(PgSqlErrorCode::ERRCODE_OBJECT_IN_USE, notice)
                    }
                }
            }
        };
        let is_sync = matches!(spec.job, Job::Sync(_));
        guc::set_application_name(&format!("pg_qbo run {run_id}"));
        xact::commit();
        shared.run_id.store(run_id, Ordering::Release);
        shared.state.store(1, Ordering::Release);
        // a run that succeeded meanwhile (another session resumed it) is left as it is
        if resume == Resume::Execute && is_sync {
            sync::execute(run_id, mode);
            if mode == Mode::Detached {
                let line = sync::summary_line(run_id)
                    .unwrap_or_else(|_| format!("sync run {run_id} succeeded"));
                held(|| log!("pg_qbo: detached {line}"));
            }
        } else if resume == Resume::Execute {
            executor::execute(run_id, mode);
            if mode == Mode::Detached {
                // nobody waits for a detached run: its end goes to the server log (a failure's is
                // logged below, like any worker's)
                let line = ledger::totals(run_id)
                    .map(|t| notices::succeeded(&t))
                    .unwrap_or_else(|_| format!("run {run_id} succeeded"));
                held(|| log!("pg_qbo: detached {line}"));
            }
        }
        Ok::<(), PgError>(())
    })
    .catch_others(|caught| Err(PgError::from(&caught)))
    .execute();
    if let Err(e) = &result {
        log!(
            "pg_qbo: background worker for run {} stopped: {} (SQLSTATE {})",
            shared.run_id.load(Ordering::Acquire),
            e.message,
            e.sqlstate()
        );
        if shared.run_id.load(Ordering::Acquire) == 0 {
            // failed before a run existed: the ledger has nothing, so tell the leader directly
            fail_early(shared, e);
        }
    }
    if result.is_err() {
        // An ERROR ended the work: its transaction is aborted, as Postgres does after an ERROR,
        // never committed (the executor has already recorded a run's outcome in a transaction of
        // its own; an ERROR before a run existed, in validation, create_run or prepare_resume,
        // must leave nothing it half wrote).
        // SAFETY: same thread, outside any SPI call; AbortCurrentTransaction also closes our SPI
        // connection and pops the snapshots of the aborted transaction.
        unsafe { pg_sys::AbortCurrentTransaction() };
        xact::release_outer_snapshot();
    } else {
        xact::release_outer_snapshot();
        // SAFETY: same thread. Our non-atomic connection is the current one unless the cleanup
        // of a caught error already closed it, hence the check; the transaction is committed
        // only if one is in progress.
        unsafe {
            if pg_sys::SPI_inside_nonatomic_context() {
                pg_sys::SPI_finish();
            }
            if pg_sys::IsTransactionState() {
                pg_sys::CommitTransactionCommand();
            }
        }
    }
    if shared.state.load(Ordering::Acquire) != 3 {
        shared.state.store(2, Ordering::Release);
    }
    // SAFETY: `seg` is the segment attached above, detached only here; `shared` is not used
    // after this line (the spec was copied out at the start).
    unsafe { pg_sys::dsm_detach(seg) };
}

fn fail_early(shared: &Shared, e: &PgError) {
    let (sqlstate, msg) = (e.sqlstate(), &e.message);
    // SAFETY: the cells are in this worker's writable mapping of the attached segment, and only
    // this worker writes them, once (the leader reads them only after it sees state 3, stored
    // below with Release, or after the worker has stopped), so no other reference to their
    // contents exists meanwhile; each copy stays inside its array (n <= 1023 of 1024, m <= 5 of
    // 8), so the texts stay NUL-terminated.
    unsafe {
        let err = &mut *shared.error.get();
        let n = msg.len().min(err.len() - 1);
        err[..n].copy_from_slice(&msg.as_bytes()[..n]);
        let st = &mut *shared.sqlstate.get();
        let m = sqlstate.len().min(5);
        st[..m].copy_from_slice(&sqlstate.as_bytes()[..m]);
    }
    shared.state.store(3, Ordering::Release);
}

/// Starts a worker for `job` and waits for it, relaying progress. Returns the run id.
pub fn run_in_worker(job: Job) -> i64 {
    // SAFETY: XactIsoLevel is a plain int of this backend, read on its own thread (SQL entry
    // points run only there) inside the transaction it describes.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "qbo.backfill and qbo.resume need READ COMMITTED (they read the progress their worker commits); use CALL qbo.run_backfill / qbo.run_resume, or run them outside a REPEATABLE READ or SERIALIZABLE transaction",
        );
    }
    // before the worker starts: what a resumed run had done is not relayed again
    let mut relay = Relay::new(&job);
    let is_sync = relay.sync;
    let (run_id, ()) = start_and_wait(job, false, "SELECT * FROM qbo.resume", |worker, shared| {
        let _ = worker.wait_for_startup();
        wait_loop(worker, shared, &mut relay)
    });
    relay.relay(run_id);
    match ledger::outcome(run_id) {
        Ok((status, _, _)) if status == "succeeded" && is_sync => match sync::summary_line(run_id) {
            Ok(line) => crate::say!("{line}"),
            Err(e) => held(|| {
                warning!("sync run {run_id} succeeded; its totals could not be read: {}", e.message)
            }),
        },
        Ok((status, _, _)) if status == "succeeded" => match ledger::totals(run_id) {
            Ok(t) => crate::say!("{}", notices::succeeded(&t)),
            Err(e) => held(|| {
                warning!("run {run_id} succeeded; its totals could not be read: {}", e.message)
            }),
        },
        Ok((status, _, _)) if status == "running" => raise(
            PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN,
            format!(
                "run {run_id} was interrupted: its background worker ended without finishing (terminated, or see the server log); resume it with SELECT * FROM qbo.resume({run_id}) or CALL qbo.run_resume({run_id})"
            ),
        ),
        Ok((status, err, st)) => {
            let msg = err.unwrap_or_else(|| {
                format!("run {run_id} ended with status {status}; see qbo.runs")
            });
            let msg = if msg.contains(&format!("run {run_id}")) {
                msg
            } else {
                format!("run {run_id}: {msg}")
            };
            PgError::from_sqlstate(st.as_deref().unwrap_or(""), msg).raise();
        }
        Err(e) => e.raise(),
    }
    run_id
}

/// Writes the [`Spec`] of `job`, by this session, into a new shared segment for a worker to read
/// (the segment belongs to the current resource owner: an ERROR of this transaction detaches it).
fn hand_over(job: Job, detached: bool) -> *mut pg_sys::dsm_segment {
    let spec = Spec {
        job,
        // SAFETY: we are on the backend's own thread; MyProcPid is set at backend start and
        // never changes.
        leader_pid: unsafe { pg_sys::MyProcPid },
        detached,
        // SAFETY: same thread; MyDatabaseId is set when the backend connects to its database
        // and never changes afterwards.
        database_oid: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        // SAFETY: same thread, in a session whose user InitPostgres has set: GetUserId only
        // reads it (the caller's role: this runs outside as_owner).
        role_oid: unsafe { pg_sys::GetUserId() }.to_u32(),
        max_workers: guc::max_workers(),
    };
    let bytes = serde_json::to_vec(&spec).unwrap_or_else(|e| {
        PgError::internal(format!("pg_qbo: the worker's job cannot be written: {e}")).raise()
    });
    // SAFETY: on the backend's own thread, in the caller's transaction: the segment belongs to
    // the current resource owner, so an ERROR anywhere below detaches it when the transaction
    // aborts. Flags 0: dsm_create raises rather than return null when no segment can be had.
    let seg = unsafe { pg_sys::dsm_create(HEADER + bytes.len(), 0) };
    // SAFETY: `seg` is the live segment just created (never null, see above).
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    // SAFETY: `base` is the start of a fresh, writable mapping of HEADER + bytes.len() bytes,
    // seen by no one else yet (the worker does not exist): zero the header, then copy the JSON
    // after it; `bytes` is a separate Rust allocation, so the ranges do not overlap.
    unsafe {
        std::ptr::write_bytes(base, 0, HEADER);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(HEADER), bytes.len());
    }
    // SAFETY: `seg` is attached and its header was just zeroed (see shared_of); the reference
    // is used for this one store only.
    unsafe { shared_of(seg) }
        .spec_len
        .store(bytes.len() as i32, Ordering::Release);
    seg
}

/// The header of a segment made by [`hand_over`].
///
/// # Safety
/// `seg` is a segment made by `hand_over` and still attached for as long as the reference is
/// used. Its address is aligned for `Shared` (page-aligned, or 4 kB-aligned within a
/// cache-line-aligned area with min_dynamic_shared_memory) and its header started zeroed, a
/// valid `Shared`; the worker writes only the atomics and, before it stops, `error`/`sqlstate`.
unsafe fn shared_of<'a>(seg: *mut pg_sys::dsm_segment) -> &'a Shared {
    // SAFETY: the caller's obligation (see above).
    unsafe { &*(pg_sys::dsm_segment_address(seg) as *const Shared) }
}

/// Registers the worker that reads segment `handle`: one tied to this session (which the
/// postmaster notifies of its start and end), or a detached one, which notifies no one.
/// 53400 when no slot is free.
fn start_worker(handle: pg_sys::dsm_handle, detached: bool) -> DynamicBackgroundWorker {
    let name = if detached {
        "pg_qbo detached run"
    } else {
        "pg_qbo backfill"
    };
    let builder = BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_library("pg_qbo")
        .set_function("pg_qbo_worker_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(handle as usize)))
        .set_restart_time(None);
    let builder = if detached {
        builder
    } else {
        // SAFETY: we are on the backend's own thread; MyProcPid is set at backend start and
        // never changes.
        builder.set_notify_pid(unsafe { pg_sys::MyProcPid })
    };
    match builder.load_dynamic() {
        Ok(w) => w,
        Err(_) => raise(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            format!(
                "pg_qbo: no free background worker slot (max_worker_processes = {}); run the backfill with CALL qbo.run_backfill(...) instead, or raise max_worker_processes",
                // SAFETY: on the backend's own thread; max_worker_processes is a
                // postmaster-level setting, fixed since the server started.
                unsafe { pg_sys::max_worker_processes }
            ),
        ),
    }
}

/// The error of a worker that stopped before a run existed (state 3, or no run id once it has
/// stopped), with its own SQLSTATE and text.
fn early_error(shared: &Shared) -> Option<PgError> {
    let run_id = shared.run_id.load(Ordering::Acquire);
    if shared.state.load(Ordering::Acquire) != 3 && run_id != 0 {
        return None;
    }
    // SAFETY: the worker wrote the cells before it stored state 3 (Release, read above with
    // Acquire) or has stopped (run id 0: it never got as far as a run), and writes them no
    // more: nothing writes them while they are read here.
    let (error, sqlstate) = unsafe { (&*shared.error.get(), &*shared.sqlstate.get()) };
    let msg = String::from_utf8_lossy(error)
        .trim_end_matches('\0')
        .to_owned();
    let st = String::from_utf8_lossy(sqlstate)
        .trim_end_matches('\0')
        .to_owned();
    let msg = if msg.is_empty() {
        "pg_qbo: the background worker stopped before creating the run (see the server log)"
            .to_owned()
    } else {
        msg
    };
    Some(PgError::from_sqlstate(&st, msg))
}

/// A run started in a detached worker.
pub struct Started {
    pub run_id: i64,
    /// The worker's process id (0 if it has already ended).
    pub pid: i32,
}

/// Starts a detached worker for `job` (see the module's doc) and waits only until it has
/// created (or reopened) the run and committed it. An error of the worker before the run existed
/// is raised here with its own text and SQLSTATE (the worker wrote nothing); a cancel of this
/// short wait stops the worker. The caller validated the job first.
pub fn start_detached(job: Job) -> Started {
    let (run_id, pid) = start_and_wait(job, true, "SELECT qbo.start_resume", wait_published);
    Started { run_id, pid }
}

/// Hands `job` to a new worker (detached or serving this session) and runs `wait` on it. An ERROR
/// in `wait` (a cancel, a lost client) stops the worker and is raised again naming the run and
/// `resume`, the call that continues it. Then the segment is detached and an error the worker
/// reported before a run existed is raised. Returns the run id (0: none) and what `wait` gave.
fn start_and_wait<T>(
    job: Job,
    detached: bool,
    resume: &str,
    wait: impl FnOnce(&DynamicBackgroundWorker, &Shared) -> T,
) -> (i64, T) {
    let continue_with = |run_id: i64| job.continue_with(run_id, resume);
    let seg = hand_over(job.clone(), detached);
    // SAFETY: `seg` was just made by hand_over and stays attached until the dsm_detach below,
    // after the last use of `shared`, or until an ERROR's abort, after which `shared` is never
    // used (raise does not return).
    let shared = unsafe { shared_of(seg) };
    // SAFETY: `seg` is the live segment created above; its handle is a plain number.
    let worker = start_worker(unsafe { pg_sys::dsm_segment_handle(seg) }, detached);
    let waited = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| wait(&worker, shared)))
        .catch_others(|caught| {
            stop_worker(&worker);
            let e = PgError::from(&caught);
            let run_id = shared.run_id.load(Ordering::Acquire);
            if run_id > 0 {
                PgError::new(
                    e.code,
                    format!(
                        "{} (run {run_id} was stopped; continue it with {})",
                        e.message,
                        continue_with(run_id)
                    ),
                )
                .raise()
            } else {
                e.raise()
            }
        })
        .execute();
    let run_id = shared.run_id.load(Ordering::Acquire);
    let early_error = early_error(shared);
    // SAFETY: `seg` is still attached (this is its only detach on this path); `shared` is not
    // used after this line, the texts having been copied into `early_error`. The worker keeps
    // its own mapping, so the segment lives on as long as the worker needs it, whatever this
    // session does next.
    unsafe { pg_sys::dsm_detach(seg) };
    if let Some(e) = early_error {
        e.raise();
    }
    (run_id, waited)
}

/// Waits, polling every 20 ms and serving cancels, until the detached worker has published its
/// run (or failed before one existed) or stopped. Returns its pid (0 once it has stopped).
///
/// Nothing of the caller is needed by the worker, except that the caller's transaction must
/// not hold a row of `qbo.runs` the worker has to change (e.g. it called `qbo._mark_interrupted()`
/// earlier in the same transaction): then both would wait for each other for ever, so the wait
/// looks for that (from 250 ms on) and raises a deadlock error instead.
fn wait_published(worker: &DynamicBackgroundWorker, shared: &Shared) -> i32 {
    let t0 = Instant::now();
    let mut next_check = Duration::from_millis(250);
    loop {
        let published = shared.state.load(Ordering::Acquire) != 0;
        let pid = match worker.pid() {
            Ok(pid) => pid,
            Err(BackgroundWorkerStatus::NotYetStarted) => 0,
            Err(_) => return 0,
        };
        if published {
            return pid;
        }
        if pid > 0 && t0.elapsed() >= next_check {
            next_check = t0.elapsed() + Duration::from_millis(250);
            if blocked_by_this_backend(pid) {
                raise(
                    PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED,
                    format!("pg_qbo: the run's background worker (pid {pid}) waits for a lock this transaction holds (it changed rows of qbo.runs the worker must change too): commit or roll back first, then start the run in a transaction of its own"),
                );
            }
        }
        interrupts::pause(20);
    }
}

/// Whether process `pid` waits for a lock this backend holds.
fn blocked_by_this_backend(pid: i32) -> bool {
    spi::one::<bool>(
        "SELECT pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) ANY (pg_catalog.pg_blocking_pids($1))",
        &[pid.into()],
    )
    .unwrap_or_else(|e| PgError::db("pg_qbo worker start (pg_blocking_pids)", e).raise())
    .unwrap_or(false)
}

fn wait_loop(worker: &DynamicBackgroundWorker, shared: &Shared, relay: &mut Relay) {
    loop {
        // SAFETY: on the backend's own thread; MyLatch is this process's own latch, set at
        // process start and valid for its whole life, which only its owner may wait on and
        // reset. With WL_EXIT_ON_PM_DEATH the process exits if the postmaster dies, so the
        // returned events need no checking.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                100,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pg_sys::check_for_interrupts!();
        if client_gone() {
            raise(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                "connection to client lost",
            );
        }
        let run_id = shared.run_id.load(Ordering::Acquire);
        if run_id > 0 {
            relay.relay(run_id);
        }
        match worker.pid() {
            Ok(_) => {}
            Err(BackgroundWorkerStatus::NotYetStarted) => {}
            Err(_) => return,
        }
    }
}

/// Whether the client of this backend hung up (the check `client_connection_check_interval`
/// does; done here because a backend waiting on its worker sends nothing for long stretches).
fn client_gone() -> bool {
    // SAFETY: on the backend's own thread; MyProcPort is a backend global set once when the
    // client connected (null in a process with no client).
    let port = unsafe { pg_sys::MyProcPort };
    if port.is_null() {
        return false;
    }
    // `Port` is opaque in pgrx's bindings; its first member is `pgsocket sock` (an int on
    // Unix) in every supported major version.
    // SAFETY: a non-null MyProcPort points to this backend's Port, which lives as long as the
    // backend; reading a C int at its start reads that first member.
    let sock = unsafe { *(port as *const i32) };
    if sock < 0 {
        return false;
    }
    let mut pfd = libc::pollfd {
        fd: sock,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `pfd` is a local pollfd and 1 is the length of that one-entry array; a zero
    // timeout only checks the socket's state, and poll neither reads from nor closes it.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && (pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR)) != 0
}

/// Asks the worker to cancel (SIGINT: it marks the run cancelled), waits up to 10 s without
/// interrupt checks, then terminates it.
fn stop_worker(worker: &DynamicBackgroundWorker) {
    if let Ok(pid) = worker.pid() {
        // SAFETY: kill(2) takes two integers and touches no memory of ours; `pid` is our worker's,
        // as the postmaster reported it just now (the worker is running).
        unsafe { libc::kill(pid, libc::SIGINT) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if worker.pid().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the worker was still running at the last check, at most ~20 ms ago
        // (a pid reused within that window would get the signal instead).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// Relays a run's progress as NOTICEs: what a `CALL` prints, from what the worker commits, written
/// in this (the caller's) session's `TimeZone`: the opening line of a new run, each chunk as it
/// completes (once), the run's totals at most every `qbo.progress_interval_ms` of the run's
/// settings, and the backoffs the worker records in `qbo.runs.progress` (numbered, so that the
/// same [`BackoffGate`] as a `CALL`'s says how many went unreported).
struct Relay {
    /// The run is a sync: each entity is reported as it finishes (the backfills it runs are
    /// followed in qbo.progress), and its backoffs.
    sync: bool,
    /// Since when the relay runs (this execution's pace is counted from it).
    started: Instant,
    /// A resume: its run exists, and is announced by no opening line.
    resumed: bool,
    /// Whether the run's settings were read (and a new run announced).
    known: bool,
    chunks_done: std::collections::BTreeSet<i32>,
    /// Rows and pages of the run when the relay started, and pages at the last progress line.
    rows_before: i64,
    pages: i64,
    clock: Option<ProgressClock>,
    backoffs: BackoffGate,
    /// The cause of the last failed flush, already reported.
    warned: Option<String>,
}

impl Relay {
    /// A relay for `job`; a resumed run's chunks already done are read now, before its worker
    /// starts, so that only what this execution does is relayed.
    fn new(job: &Job) -> Relay {
        let mut r = Relay {
            sync: matches!(job, Job::Sync(_)),
            started: Instant::now(),
            resumed: false,
            known: false,
            chunks_done: Default::default(),
            rows_before: 0,
            pages: 0,
            clock: None,
            backoffs: BackoffGate::default(),
            warned: None,
        };
        if let Job::Resume(run_id) = job {
            r.resumed = true;
            let done = ledger::chunks_done(*run_id, &[]).unwrap_or_else(|e| e.raise());
            r.chunks_done = done.iter().map(|c| c.chunk).collect();
            let p = ledger::run_progress(*run_id).unwrap_or_else(|e| e.raise());
            (r.rows_before, r.pages) = (p.rows, p.pages);
        }
        r
    }

    /// Prints what committed since the last flush, each line once. An error reading the ledger
    /// is returned; nothing was printed twice.
    fn flush(&mut self, run_id: i64) -> Result<(), PgError> {
        if self.sync {
            return self.flush_sync(run_id);
        }
        if !self.known {
            let run = ledger::load_run(run_id)?;
            let interval = serde_json::from_value::<Settings>(run.settings.clone())
                .map(|s| s.progress_interval())
                .unwrap_or(Duration::from_millis(
                    crate::pg::guc::DEFAULT_PROGRESS_INTERVAL_MS,
                ));
            self.clock = Some(ProgressClock::new(interval, self.rows_before, self.started));
            self.known = true;
            if !self.resumed {
                crate::say!(
                    "{}",
                    notices::opening(
                        run_id,
                        &run.entity,
                        run.fecha_inicio,
                        run.fecha_fin,
                        run.chunks_total.into(),
                        &session_ts
                    )
                );
            }
        }
        let before: Vec<i32> = self.chunks_done.iter().copied().collect();
        for c in ledger::chunks_done(run_id, &before)? {
            crate::say!("{}", notices::chunk_done(&c, &session_ts));
            self.chunks_done.insert(c.chunk);
        }
        let p = ledger::run_progress(run_id)?;
        let now = Instant::now();
        if let Some(b) = p.note.as_deref().and_then(notices::parse_backoff_note) {
            if let Some(unreported) = self.backoffs.offer(b.run_retries, now) {
                let (start, end) = ledger::chunk_window(run_id, b.chunk)?;
                crate::say!(
                    "{}",
                    notices::backoff(run_id, &b, start, end, unreported, &session_ts)
                );
            }
        }
        if let Some(clock) = &mut self.clock {
            if p.pages > self.pages && clock.due(now) {
                crate::say!("{}", clock.line(&p, now));
                self.pages = p.pages;
            }
        }
        Ok(())
    }

    /// [`Relay::flush`] of a sync: each entity as it finishes (once), and its backoffs.
    fn flush_sync(&mut self, run_id: i64) -> Result<(), PgError> {
        for (k, r) in syncs::report(run_id)?.iter().enumerate() {
            let chunk = k as i32 + 1;
            if r.status == "succeeded" && self.chunks_done.insert(chunk) {
                crate::say!("{}", sync::entity_line(run_id, r));
            }
        }
        let p = ledger::run_progress(run_id)?;
        if let Some(b) = p.note.as_deref().and_then(notices::parse_backoff_note) {
            if let Some(unreported) = self.backoffs.offer(b.run_retries, Instant::now()) {
                let others = if unreported > 0 {
                    format!("; {unreported} other retries not reported")
                } else {
                    String::new()
                };
                crate::say!(
                    "sync run {run_id}: {} on a request to QuickBooks; retrying in {:.2} s{others}",
                    b.cause,
                    b.seconds
                );
            }
        }
        Ok(())
    }

    /// [`Relay::flush`], reporting a failure as a WARNING once per distinct cause: the run goes
    /// on in its worker whatever the relay can read, and its outcome is read (and raised) apart.
    fn relay(&mut self, run_id: i64) {
        if let Err(e) = self.flush(run_id) {
            if self.warned.as_deref() != Some(e.message.as_str()) {
                held(|| {
                    warning!(
                        "run {run_id}: could not read its progress from the ledger (the run goes on): {}",
                        e.message
                    )
                });
                self.warned = Some(e.message);
            }
        }
    }
}
