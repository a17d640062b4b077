//! One-time backfills scheduled with pg_cron.
//!
//! pg_cron sends a job's command as one query string, i.e. one transaction: "backfill; then
//! unschedule" could never unschedule after a failed backfill, and a multi-statement string cannot
//! COMMIT. So the job's command is exactly one `CALL qbo.run_scheduled(run_id)`. pg_cron cancels a
//! running job the moment it is unscheduled or deactivated (it drops the job's connection), so the
//! procedure cannot simply delete its own job. Instead it first moves its job to a schedule that
//! never fires (`0 0 30 2 *`, February 30th) and commits — from then on the job can never run
//! again, whatever happens — and starts a small background worker that removes the job from
//! `cron.job` once the job's session has ended (after pg_cron has recorded the outcome in
//! `cron.job_run_details`). Then it executes the run. A run that is not `scheduled` is never
//! executed by its job. Should the cleanup worker not start (no free slot), the next
//! `qbo.schedule_backfill` removes the jobs of finished runs.
//!
//! pg_cron 1.4 schedules by the minute, in GMT: `run_at` means the first whole minute at or after
//! it (and at least 5 s from now, see [`LEAD`]), whatever the session's TimeZone. Its `cron` schema
//! exists only in `cron.database_name`; from another database the job must be created there with
//! `cron.schedule_in_database`, and the error says exactly what to run.

use crate::pg::error::{raise, PgError};
use crate::pg::interrupts::{held, Mode};
use crate::pg::time::session_ts;
use crate::pg::{spi, xact};
use crate::run::executor;
use crate::run::request::{self, RunRequest, Validated};
use crate::store::ledger;
use chrono::{DateTime, Datelike, DurationRound, Timelike, Utc};
use pgrx::prelude::*;

/// pg_cron job name of a scheduled run.
pub fn job_name(run_id: i64) -> String {
    format!("pg_qbo run {run_id}")
}

/// pg_cron processes a minute when it starts: a job registered less than this before its minute
/// could miss it (and, being a yearly expression, wait a year). `run_at` closer than this to now
/// moves to the following minute.
pub const LEAD: chrono::Duration = chrono::Duration::seconds(5);

/// The minute (GMT) and cron expression of a one-time job: the first whole minute at or after
/// `at`, and at least [`LEAD`] after `now`.
pub fn one_time_schedule(at: DateTime<Utc>, now: DateTime<Utc>) -> (DateTime<Utc>, String) {
    let at = at.max(now + LEAD);
    let floor = at
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(at);
    let minute = if floor < at {
        floor + chrono::Duration::minutes(1)
    } else {
        floor
    };
    let expr = format!(
        "{} {} {} {} *",
        minute.minute(),
        minute.hour(),
        minute.day(),
        minute.month()
    );
    (minute, expr)
}

pub fn cron_state() -> (bool, Option<String>) {
    let here = spi::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron')",
        &[],
    )
    .unwrap_or_else(|e| PgError::db("pg_qbo pg_cron check", e).raise())
    .unwrap_or(false);
    // pg_cron makes cron.database_name readable by superusers (and pg_read_all_settings) only;
    // a database name is no secret, and an operator scheduling a backfill needs to be told which
    // database schedules jobs: read as the extension owner
    let db = spi::as_owner(|| {
        Spi::get_one::<String>("SELECT pg_catalog.current_setting('cron.database_name', true)")
    })
    .unwrap_or_else(|e| PgError::db("pg_qbo pg_cron check", e).raise());
    (here, db)
}

/// Schedules run of `req` (validated here) as a one-time pg_cron job at the first whole minute
/// at or after `at`; `f` names the entry point in messages. Returns the job id, the run id and
/// the minute. Raises with a message that says what to do when pg_cron is missing or lives in
/// another database.
pub fn schedule(f: &str, req: &RunRequest, at: DateTime<Utc>) -> (i64, i64, DateTime<Utc>) {
    if let Err(m) = within_a_year(at, Utc::now(), &session_ts) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{f}: {m}"),
        );
    }
    let v: Validated = request::validate(req).unwrap_or_else(|e| e.prefixed(f).raise());
    let (installed, cron_db) = cron_state();
    let this_db = spi::one::<String>("SELECT pg_catalog.current_database()::pg_catalog.text", &[])
        .unwrap_or_else(|e| PgError::db("pg_qbo pg_cron check", e).raise())
        .unwrap_or_default();
    if !installed {
        match cron_db {
            Some(db) if !db.is_empty() && db != this_db => raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "{f}: pg_cron runs jobs from database \"{db}\" (cron.database_name), not \"{this_db}\"; schedule from there with cron.schedule_in_database(..., database => '{this_db}'), or run qbo.schedule_backfill in a database where pg_cron is installed"
                ),
            ),
            Some(_) => raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("{f}: pg_cron is loaded but not installed in this database: CREATE EXTENSION pg_cron; (it must be in database cron.database_name)"),
            ),
            None => raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("{f} needs pg_cron: add it to shared_preload_libraries (restart), then CREATE EXTENSION pg_cron in the database named by cron.database_name"),
            ),
        }
    }
    remove_finished_jobs();
    let run_id = request::insert_run(req, &v, "cron", "scheduled");
    let (minute, expr) = one_time_schedule(at, Utc::now());
    let job_id = spi::one::<i64>(
        "SELECT cron.schedule($1::pg_catalog.text, $2::pg_catalog.text, $3::pg_catalog.text)",
        &[
            job_name(run_id).as_str().into(),
            expr.as_str().into(),
            format!("CALL qbo.run_scheduled({run_id})").as_str().into(),
        ],
    )
    .unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("{f}: cron.schedule failed: {e}"),
        )
    })
    .unwrap_or(0);
    ledger::set_progress(
        run_id,
        &format!(
            "scheduled as pg_cron job {job_id} for {} GMT",
            minute.format("%Y-%m-%d %H:%M")
        ),
    )
    .unwrap_or_else(|e| e.raise());
    crate::say!(
        "run {run_id}: {} scheduled as pg_cron job {job_id} ({expr}, in GMT) for {}; the job runs once and is removed afterwards",
        v.entity.name,
        session_ts(minute)
    );
    (job_id, run_id, minute)
}

/// `CALL qbo.run_scheduled(run_id)`, in the job's session: makes the job unable to fire again and
/// has it removed once this session ends, then executes the run if it is still `scheduled`.
///
/// # Safety
/// Must be called from a procedure's non-atomic call context (see `pg::fmgr::require_nonatomic`).
pub unsafe fn run_scheduled(run_id: i64) {
    // SAFETY: a non-atomic CALL is our caller's obligation.
    unsafe { xact::in_call(|| scheduled(run_id)) }
}

fn scheduled(run_id: i64) {
    // First of all: this job must never fire again, whatever happens next.
    let job_id = spi::optional(spi::one::<i64>(
        "SELECT j.jobid FROM cron.job j WHERE j.jobname OPERATOR(pg_catalog.=) $1",
        &[job_name(run_id).as_str().into()],
    ))
    .unwrap_or_else(|e| PgError::db("pg_qbo cron.job", e).raise());
    if let Some(job_id) = job_id {
        // Should this fail, the job keeps its schedule, but the run executes only while it is
        // `scheduled` (checked below), so a later firing only fails with 55000.
        if let Err(e) = spi::exec(
            "SELECT cron.alter_job(job_id => $1, schedule => $2::pg_catalog.text)",
            &[job_id.into(), NEVER.into()],
        ) {
            held(|| {
                warning!("run {run_id}: could not move pg_cron job {job_id} to a schedule that never fires: {e}; it is removed after the run all the same")
            });
        }
    }
    xact::commit();
    if let Some(job_id) = job_id {
        start_cleanup(job_id);
    }
    let status = spi::optional(spi::one::<String>(
        "SELECT r.status FROM qbo.runs r WHERE r.run_id OPERATOR(pg_catalog.=) $1",
        &[run_id.into()],
    ))
    .unwrap_or_else(|e| PgError::db("pg_qbo ledger", e).raise());
    if status.as_deref() != Some("scheduled") {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "qbo.run_scheduled: run {run_id} is {}, not scheduled: a scheduled run executes only once (resume it with qbo.resume)",
                status.as_deref().unwrap_or("missing")
            ),
        );
    }
    // a scheduled run has never executed, so it cannot have succeeded
    if request::prepare_resume(run_id) == request::Resume::Execute {
        xact::commit();
        executor::execute(run_id, Mode::Call);
    }
}

/// pg_cron's schedules have no year: a job for a minute a year or more ahead would fire at the
/// same minute, day and month sooner. `Err`: the message saying so.
pub fn within_a_year(
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    ts: crate::run::notices::Ts,
) -> Result<(), String> {
    let limit = now
        .checked_add_months(chrono::Months::new(12))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let (minute, _) = one_time_schedule(at, now);
    if minute >= limit {
        return Err(format!(
            "run_at {} is a year or more ahead (the latest is before {}): pg_cron schedules have no year, so the job would fire at that minute, day and month sooner; schedule it within the next 12 months",
            ts(at),
            ts(limit)
        ));
    }
    Ok(())
}

/// A schedule pg_cron accepts and never fires.
pub const NEVER: &str = "0 0 30 2 *";

/// Removes the jobs of scheduled runs that have finished (normally the cleanup worker does it).
pub fn remove_finished_jobs() {
    let removed = spi::exec(
        "SELECT cron.unschedule(j.jobid)
           FROM cron.job j
           JOIN qbo.runs r ON j.jobname OPERATOR(pg_catalog.=) ('pg_qbo run ' OPERATOR(pg_catalog.||) r.run_id::pg_catalog.text)
          WHERE j.schedule OPERATOR(pg_catalog.=) '0 0 30 2 *'
            AND r.status OPERATOR(pg_catalog.<>) ALL ('{scheduled,running}'::pg_catalog.text[])",
        &[],
    );
    if let Err(e) = removed {
        held(|| {
            warning!(
                "pg_qbo: could not remove the pg_cron jobs of finished runs (they never fire): {e}"
            )
        });
    }
}

/// Starts the worker that removes job `job_id` once this backend has exited.
pub fn start_cleanup(job_id: i64) {
    // SAFETY: plain reads of backend globals on the backend's own thread: MyDatabaseId is set
    // when the backend connects to its database and MyProcPid at process start, neither changes
    // afterwards; GetUserId reads the current user InitPostgres set.
    let (db, role, pid) = unsafe {
        (
            pg_sys::MyDatabaseId.to_u32(),
            pg_sys::GetUserId().to_u32(),
            pg_sys::MyProcPid,
        )
    };
    let extra = format!("{db} {role} {job_id} {pid}");
    let started = pgrx::bgworkers::BackgroundWorkerBuilder::new("pg_qbo cron cleanup")
        .set_type("pg_qbo cron cleanup")
        .set_library("pg_qbo")
        .set_function("pg_qbo_cron_cleanup_main")
        .enable_spi_access()
        .set_extra(&extra)
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        held(|| {
            warning!("pg_qbo: no free background worker slot to remove pg_cron job {job_id} after its run; the next qbo.schedule_backfill removes it (it can never fire again)")
        });
    }
}

/// The cleanup worker: waits for the job's backend to exit, then unschedules the job.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_qbo_cron_cleanup_main(_arg: pg_sys::Datum) {
    use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let parts: Vec<u64> = BackgroundWorker::get_extra()
        .split(' ')
        .filter_map(|p| p.parse().ok())
        .collect();
    let [db, role, job_id, pid] = parts[..] else {
        log!("pg_qbo cron cleanup: unreadable arguments");
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(db as u32)),
        Some(pg_sys::Oid::from(role as u32)),
    );
    // SAFETY: a background worker attached to shared memory, on its own thread;
    // BackendPidGetProc takes ProcArrayLock itself, and the PGPROC pointer it returns is only
    // compared with null, never dereferenced.
    while unsafe { !pg_sys::BackendPidGetProc(pid as i32).is_null() } {
        if !BackgroundWorker::wait_latch(Some(std::time::Duration::from_millis(200)))
            || BackgroundWorker::sigterm_received()
        {
            return;
        }
    }
    BackgroundWorker::transaction(|| {
        if let Err(e) = spi::exec(
            "SELECT cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobid OPERATOR(pg_catalog.=) $1",
            &[(job_id as i64).into()],
        ) {
            log!("pg_qbo cron cleanup: could not remove pg_cron job {job_id} (it never fires; the next qbo.schedule_backfill removes it): {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn schedule_is_the_first_whole_minute_at_or_after() {
        let long_ago = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 3, 9, 23, 59, 1).unwrap();
        assert_eq!(one_time_schedule(t, long_ago).1, "0 0 10 3 *");
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 7, 5, 0).unwrap();
        assert_eq!(
            one_time_schedule(t, long_ago),
            (t, "5 7 31 12 *".to_owned())
        );
        // run_at = now, 2 s before a minute: too close, the next minute is used
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 7, 4, 58).unwrap();
        assert_eq!(one_time_schedule(now, now).1, "6 7 31 12 *");
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 7, 4, 50).unwrap();
        assert_eq!(one_time_schedule(now, now).1, "5 7 31 12 *");
    }

    #[test]
    fn run_at_a_year_or_more_ahead_is_refused() {
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 19, 0, 30).unwrap();
        // the same minute next year, before now's second: the next match of "0 19 4 12 *" is it
        let ts = &crate::pg::time::utc_ts;
        assert!(within_a_year(
            Utc.with_ymd_and_hms(2027, 12, 4, 19, 0, 0).unwrap(),
            now,
            ts
        )
        .is_ok());
        // a minute later: "1 19 4 12 *" would fire today, a year early
        let e = within_a_year(
            Utc.with_ymd_and_hms(2027, 12, 4, 19, 1, 0).unwrap(),
            now,
            ts,
        )
        .unwrap_err();
        assert!(e.starts_with("run_at 2027-12-04 19:01:00+00 is a year or more ahead (the latest is before 2027-12-04 19:00:30+00)"), "{e}");
        assert!(
            within_a_year(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(), now, ts).is_err()
        );
        assert!(within_a_year(now, now, ts).is_ok());
    }
}
