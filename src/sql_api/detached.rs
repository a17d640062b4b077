//! `qbo.start_backfill`, `qbo.start_resume`: a run in a background worker tied to no session
//! (see [`crate::run::worker`]); the call returns the run id as soon as the run is committed.
//! `qbo.cancel`: stops a running run by its id, whatever started it (see [`crate::run::cancel`]).

use crate::pg::time::session_ts;
use crate::run::cancel as run_cancel;
use crate::run::notices;
use crate::run::request::{check_resumable, validate, Resume};
use crate::run::worker::{self, Job};
use crate::sql_api::args::{request, required};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// `SELECT qbo.start_backfill(...)`: the arguments of `qbo.backfill`, validated here (bad input
/// fails in the caller, nothing written); the run goes on in a detached background worker.
/// Returns the run id.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn start_backfill(
    entity: Option<&str>,
    fecha_inicio: Option<TimestampWithTimeZone>,
    fecha_fin: Option<TimestampWithTimeZone>,
    chunk_size: default!(Option<i32>, 7),
    page_size: default!(Option<i32>, 1000),
    minor_version: default!(Option<i32>, 75),
    connection: default!(Option<&str>, "'default'"),
) -> i64 {
    let f = "qbo.start_backfill";
    let req = request(
        f,
        entity,
        fecha_inicio,
        fecha_fin,
        chunk_size,
        page_size,
        minor_version,
        connection,
    );
    let v = validate(&req).unwrap_or_else(|e| e.prefixed(f).raise());
    let (entity, start, end, chunks) = (
        v.entity.name,
        req.fecha_inicio,
        req.fecha_fin,
        v.chunks.len() as i64,
    );
    let started = worker::start_detached(Job::New(Box::new(req)));
    say_started(started, |run_id| {
        notices::opening(run_id, entity, start, end, chunks, &session_ts)
    })
}

/// `SELECT qbo.start_resume(run_id)`: continues a run (as `qbo.resume`) in a detached background
/// worker. Returns the run id.
#[pg_extern(volatile, parallel_unsafe)]
fn start_resume(run_id: Option<i64>) -> i64 {
    let f = "qbo.start_resume";
    let run_id = required(run_id, "run_id", f);
    if check_resumable(run_id, f) == Resume::AlreadySucceeded {
        // the NOTICE said there is nothing to resume; no worker is started
        return run_id;
    }
    let started = worker::start_detached(Job::Resume(run_id));
    say_started(started, |run_id| format!("run {run_id}: resumed"))
}

/// `run 42: Invoice [...) in 37 chunks, in background worker pid 4711, detached from this session
/// (...)`: the line a detached start prints, led by `head`'s words for the run.
fn say_started(started: worker::Started, head: impl FnOnce(i64) -> String) -> i64 {
    let worker::Started { run_id, pid } = started;
    crate::say!(
        "{}, in background worker pid {pid}, detached from this session (it goes on when the session ends); follow it in qbo.progress, stop it with SELECT qbo.cancel({run_id})",
        head(run_id)
    );
    run_id
}

/// `SELECT qbo.cancel(run_id)`: cancels a running run, whatever started it; returns its status.
///
/// Who may: the role that started the run (`qbo.runs.run_by`) or a superuser; anyone else gets
/// 42501 and nothing is signalled. The run's process is the holder of its liveness lock in
/// `pg_locks` (never `qbo.runs.pid` alone: a pid may have been reused), sent SIGINT (a query
/// cancel: the executor rolls back the page in flight and marks the run `cancelled`) directly
/// rather than through `pg_cancel_backend`, whose rule compares the caller with the *session*
/// role of the target process (and refuses a superuser's process to others): a `CALL` after
/// `SET ROLE`, or a superuser's session running a run for another role, would make it refuse the
/// run's owner or allow another role; see [`crate::run::cancel`]. Then waits (cancellable,
/// polling every 20 ms, at most 30 s) until the process has let go of the run and returns the
/// final status (`cancelled`). A run that is not running: a NOTICE and its status.
#[pg_extern(volatile, parallel_unsafe)]
fn cancel(run_id: Option<i64>) -> String {
    let f = "qbo.cancel";
    let run_id = required(run_id, "run_id", f);
    run_cancel::cancel(run_id, f)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION qbo.start_backfill(text, timestamptz, timestamptz, int, int, int, text) IS
    'pg_qbo: starts a backfill (the arguments of qbo.backfill) in a background worker tied to no session and returns its run id as soon as the run is committed: closing the session, or losing the connection, does not stop it. No NOTICEs: follow it in qbo.progress, qbo.runs and qbo.run_chunks; stop it with qbo.cancel(run_id). It keeps the qbo.* settings of this session (stored in qbo.runs.settings), never its statement_timeout. Needs a free pg_qbo worker slot (qbo.max_workers) and background worker slot (max_worker_processes), else fails at once (53400); CALL qbo.run_backfill needs neither.';
COMMENT ON FUNCTION qbo.start_resume(bigint) IS
    'pg_qbo: continues a failed, cancelled or interrupted run (as qbo.resume: only what did not complete, with the stored plan and settings) in a background worker tied to no session; returns the run id as soon as the run is reopened. Stop it with qbo.cancel(run_id).';
COMMENT ON FUNCTION qbo.cancel(bigint) IS
    'pg_qbo: cancels a running run, whatever started it: a query cancel to the process executing it (the holder of its lock in pg_locks), which rolls back the page in flight and marks the run cancelled (completed pages stay; continue it with qbo.start_resume or qbo.resume). Waits until that process has let go of the run (at most 30 s) and returns the run''s status. Only the role that started the run (qbo.runs.run_by) or a superuser may. For a run that is not running: a NOTICE, and its status.';
"#,
    name = "detached",
    requires = [start_backfill, start_resume, cancel]
);
