//! A run request: the arguments of an entry point and the settings in force, validated before
//! anything is written; creating the run (its ledger rows and liveness lock) or reopening one.

use crate::pg::error::{raise, PgError};
use crate::pg::guc::Settings;
use crate::pg::spi;
use crate::pg::time::session_ts;
use crate::run::notices;
use crate::store::ledger::{self, NewRun};
use crate::store::{connections, locks, raw};
use chrono::{DateTime, Utc};
use pgrx::PgSqlErrorCode;
use qbo::entities::{self, Entity};
use qbo::plan::{self, Chunk};
use serde::{Deserialize, Serialize};

/// The parameters of a backfill, as the caller gave them plus the resolved settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub entity: String,
    pub fecha_inicio: DateTime<Utc>,
    pub fecha_fin: DateTime<Utc>,
    pub chunk_size: i32,
    pub page_size: i32,
    pub minor_version: i32,
    pub connection: String,
    pub settings: Settings,
}

/// What validation established.
pub struct Validated {
    pub entity: &'static Entity,
    pub chunks: Vec<Chunk>,
    pub realm_id: String,
    pub environment: String,
}

fn bad(msg: String) -> PgError {
    PgError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg)
}

/// Checks every argument; the error names the bad value and what is allowed. Writes nothing.
pub fn validate(r: &RunRequest) -> Result<Validated, PgError> {
    spi::forget_owner();
    let entity = entities::lookup(&r.entity).map_err(bad)?;
    if r.fecha_fin <= r.fecha_inicio {
        return Err(bad(format!(
            "fecha_fin ({}) must be later than fecha_inicio ({}): the window is [fecha_inicio, fecha_fin)",
            session_ts(r.fecha_fin),
            session_ts(r.fecha_inicio)
        )));
    }
    if r.chunk_size < 1 {
        return Err(bad(format!(
            "chunk_size must be at least 1 day (got {})",
            r.chunk_size
        )));
    }
    if !(1..=1000).contains(&r.page_size) {
        return Err(bad(format!(
            "page_size must be between 1 and 1000 (got {}): QBO returns at most 1000 rows per page",
            r.page_size
        )));
    }
    check_version_and_hosts(r.minor_version, &r.settings)?;
    let chunks = plan::plan_chunks(r.fecha_inicio, r.fecha_fin, r.chunk_size)?;
    let conn = connections::require_connection(&r.connection)?;
    connections::check_may_use(&conn.name)?;
    if conn.client_id.is_empty() || conn.client_secret.is_empty() || conn.refresh_token.is_empty() {
        return Err(bad(format!(
            "connection \"{}\" has no credentials: register them with qbo.connect(...)",
            r.connection
        )));
    }
    raw::check_existing_raw_table(entity)?;
    Ok(Validated {
        entity,
        chunks,
        realm_id: conn.realm_id,
        environment: conn.environment,
    })
}

/// The checks every run shares, a backfill's or a sync's: the minor version, and hosts that
/// carry no credentials (the settings are stored in `qbo.runs.settings`, which readers see).
pub fn check_version_and_hosts(minor_version: i32, settings: &Settings) -> Result<(), PgError> {
    if !(75..=999).contains(&minor_version) {
        return Err(bad(format!(
            "minor_version must be between 75 and 999 (got {minor_version}): QBO answers versions below 75 as 75"
        )));
    }
    for (name, url) in [
        ("qbo.api_base_url", &settings.api_base_url),
        ("qbo.token_url", &settings.token_url),
    ] {
        if url.as_deref().is_some_and(qbo::client::url_has_credentials) {
            return Err(bad(format!(
                "{name} holds credentials (user:password@host): every run stores its settings in qbo.runs.settings, which readers can see; use a URL without them"
            )));
        }
    }
    Ok(())
}

/// Creates the run and its chunk plan and takes its liveness lock (the caller commits and executes).
pub fn create_run(r: &RunRequest, v: &Validated, entry_point: &str) -> i64 {
    let run_id = insert_run(r, v, entry_point, "running");
    locks::lock_for_execution(run_id);
    run_id
}

/// Inserts the run and its chunk plan with the given status.
pub fn insert_run(r: &RunRequest, v: &Validated, entry_point: &str, status: &str) -> i64 {
    let settings = serde_json::to_value(&r.settings).unwrap_or_else(|e| {
        PgError::internal(format!("pg_qbo: the run's settings cannot be stored: {e}")).raise()
    });
    ledger::mark_interrupted().unwrap_or_else(|e| e.raise());
    ledger::create_run(&NewRun {
        entity: v.entity.name,
        connection: &r.connection,
        realm_id: &v.realm_id,
        environment: &v.environment,
        fecha_inicio: r.fecha_inicio,
        fecha_fin: r.fecha_fin,
        chunk_size: r.chunk_size,
        page_size: r.page_size,
        minor_version: r.minor_version,
        settings,
        entry_point,
        status,
        chunks: &v.chunks,
    })
    .unwrap_or_else(|e| e.raise())
}

/// What a resume of a run comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a run that already succeeded must not be executed again"]
pub enum Resume {
    /// Execute it (the caller commits, then `executor::execute`).
    Execute,
    /// It already succeeded: nothing is done (its executions, status and finish time stay as
    /// they are, no worker is started); a NOTICE said so, and a set-returning entry point returns
    /// its volumetry.
    AlreadySucceeded,
}

/// The one rule of every resume entry point (`qbo.resume`, `CALL qbo.run_resume`, and any other):
/// the run must exist and the caller must be allowed to use its connection; a run that already
/// succeeded is left alone with a NOTICE ([`Resume::AlreadySucceeded`]).
fn resumable(run: &ledger::RunRow, context: &str) -> Resume {
    if let Err(e) = connections::check_may_use(&run.connection) {
        e.prefixed(context).raise();
    }
    if run.status == "succeeded" {
        crate::say!("{}", notices::already_succeeded(run.run_id));
        return Resume::AlreadySucceeded;
    }
    Resume::Execute
}

/// Reopens a run for execution (its liveness lock taken; the caller commits and executes), or
/// leaves it alone if it already succeeded (see [`resumable`]).
pub fn prepare_resume(run_id: i64) -> Resume {
    spi::forget_owner();
    if let Err(e) = ledger::mark_interrupted() {
        e.raise();
    }
    let run = ledger::load_run(run_id).unwrap_or_else(|e| e.raise());
    // checked before the run is touched: a role that may not use the connection cannot mark
    // another role's run as failed either
    if resumable(&run, &format!("run {run_id}")) == Resume::AlreadySucceeded {
        return Resume::AlreadySucceeded;
    }
    if run.status == "running" {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("run {run_id} is still running; wait for it, or stop it with SELECT qbo.cancel({run_id}) and resume it then"),
        );
    }
    locks::lock_for_execution(run_id);
    // `running` from the commit that takes its lock, as a new run is: a detached resume returns
    // once this is committed, and the run must not read `failed` (nor seem to have nothing to
    // cancel) while its worker starts executing it
    ledger::reopen(run_id).unwrap_or_else(|e| e.raise());
    Resume::Execute
}

/// The checks a session makes before it hands a resume to a worker (`func`: `qbo.resume`,
/// `qbo.start_resume`): the run exists, the caller may use its connection, and it has not already
/// succeeded ([`resumable`]). Writes nothing.
pub fn check_resumable(run_id: i64, func: &str) -> Resume {
    let run = ledger::load_run(run_id).unwrap_or_else(|e| e.raise());
    resumable(&run, &format!("{func}: run {run_id}"))
}
