//! The run ledger (`qbo.runs`, `qbo.run_chunks`, `qbo.run_pages`): creation, progress, outcome,
//! and the rows progress messages and the volumetry are made of. Everything runs as the extension
//! owner; the caller decides when to commit.

use crate::pg::error::PgError;
use crate::pg::spi::{self, owner_exec};
use crate::pg::time::{from_tstz, tstz};
use chrono::{DateTime, Utc};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::spi::SpiResult;
use pgrx::JsonB;
use pgrx::PgSqlErrorCode;
use qbo::plan::Chunk;

fn err(e: pgrx::spi::Error) -> PgError {
    PgError::new(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("pg_qbo ledger: {e}"),
    )
}

/// What a new run is.
pub struct NewRun<'a> {
    pub entity: &'a str,
    pub connection: &'a str,
    pub realm_id: &'a str,
    pub environment: &'a str,
    pub fecha_inicio: DateTime<Utc>,
    pub fecha_fin: DateTime<Utc>,
    pub chunk_size: i32,
    pub page_size: i32,
    pub minor_version: i32,
    pub settings: serde_json::Value,
    pub entry_point: &'a str,
    /// `running` (executed now) or `scheduled` (by pg_cron).
    pub status: &'a str,
    pub chunks: &'a [Chunk],
}

/// Inserts the run and its chunk plan; returns the run id.
pub fn create_run(r: &NewRun) -> Result<i64, PgError> {
    let starts: Vec<TimestampWithTimeZone> = r.chunks.iter().map(|c| tstz(c.start)).collect();
    let ends: Vec<TimestampWithTimeZone> = r.chunks.iter().map(|c| tstz(c.end)).collect();
    // the role running the backfill (the statements below run as the extension owner)
    // SAFETY: on the backend's own thread, in a session whose user InitPostgres has set (this
    // runs under an SQL entry point or in a worker connected as the caller's role): GetUserId
    // only reads that backend global, here before owner_connect switches to the owner.
    let caller = unsafe { pgrx::pg_sys::GetUserId() };
    spi::owner_connect(|c| -> SpiResult<i64> {
        let id = c
            .update(
                "INSERT INTO qbo.runs (entity, connection, realm_id, environment, fecha_inicio, fecha_fin,
                                       chunk_size, page_size, minor_version, settings, entry_point, status,
                                       chunks_total, run_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $12,
                         pg_catalog.pg_get_userbyid($14)) RETURNING run_id",
                Some(1),
                &[
                    r.entity.into(),
                    r.connection.into(),
                    r.realm_id.into(),
                    r.environment.into(),
                    tstz(r.fecha_inicio).into(),
                    tstz(r.fecha_fin).into(),
                    r.chunk_size.into(),
                    r.page_size.into(),
                    r.minor_version.into(),
                    JsonB(r.settings.clone()).into(),
                    r.entry_point.into(),
                    (r.chunks.len() as i32).into(),
                    r.status.into(),
                    caller.into(),
                ],
            )?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0);
        c.update(
            "INSERT INTO qbo.run_chunks (run_id, chunk, window_start, window_end)
             SELECT $1, t.n::pg_catalog.int4, t.s, t.e
               FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.timestamptz[]), pg_catalog.unnest($3::pg_catalog.timestamptz[]))
                    WITH ORDINALITY AS t(s, e, n)",
            None,
            &[id.into(), starts.into(), ends.into()],
        )?;
        Ok(id)
    })
    .map_err(err)
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: i64,
    pub entity: String,
    pub connection: String,
    pub realm_id: String,
    pub environment: String,
    pub page_size: i32,
    pub minor_version: i32,
    pub chunks_total: i32,
    pub settings: serde_json::Value,
    pub status: String,
    pub fecha_inicio: DateTime<Utc>,
    pub fecha_fin: DateTime<Utc>,
    /// How the run was started (`qbo.runs.entry_point`).
    pub entry_point: String,
}

/// Loads a run; a clear error if it does not exist.
pub fn load_run(run_id: i64) -> Result<RunRow, PgError> {
    let row = spi::owner_connect(|c| -> SpiResult<Option<RunRow>> {
        let t = c.update(
            "SELECT entity, connection, realm_id, environment, page_size, minor_version, chunks_total, settings, status,
                    fecha_inicio, fecha_fin, entry_point
               FROM qbo.runs WHERE run_id OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[run_id.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(RunRow {
            run_id,
            entity: r.get::<String>(1)?.unwrap_or_default(),
            connection: r.get::<String>(2)?.unwrap_or_default(),
            realm_id: r.get::<String>(3)?.unwrap_or_default(),
            environment: r.get::<String>(4)?.unwrap_or_default(),
            page_size: r.get::<i32>(5)?.unwrap_or(1000),
            minor_version: r.get::<i32>(6)?.unwrap_or(75),
            chunks_total: r.get::<i32>(7)?.unwrap_or(0),
            settings: r.get::<JsonB>(8)?.map(|j| j.0).unwrap_or_default(),
            status: r.get::<String>(9)?.unwrap_or_default(),
            fecha_inicio: r.get::<TimestampWithTimeZone>(10)?.and_then(from_tstz).unwrap_or_default(),
            fecha_fin: r.get::<TimestampWithTimeZone>(11)?.and_then(from_tstz).unwrap_or_default(),
            entry_point: r.get::<String>(12)?.unwrap_or_default(),
        }))
    })
    .map_err(err)?;
    row.ok_or_else(|| no_such_run(run_id))
}

/// The error for a run id that is not in `qbo.runs`.
fn no_such_run(run_id: i64) -> PgError {
    PgError::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("run {run_id} does not exist (see qbo.runs)"),
    )
}

/// Status of a run and the role that started it (`run_by`), read with a fresh snapshot; the
/// error of [`load_run`] if there is no such run.
pub fn status_and_owner(run_id: i64) -> Result<(String, String), PgError> {
    let row = spi::owner_connect(|c| -> SpiResult<Option<(String, String)>> {
        let t = c.update(
            "SELECT status, run_by::pg_catalog.text FROM qbo.runs WHERE run_id OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[run_id.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
        )))
    })
    .map_err(err)?;
    row.ok_or_else(|| no_such_run(run_id))
}

/// Marks a stopped run running again in this process (it is being resumed: its liveness lock
/// was just taken in this transaction); `start_execution` then counts the execution.
pub fn reopen(run_id: i64) -> Result<(), PgError> {
    spi::owner_exec(
        "UPDATE qbo.runs SET status = 'running', pid = pg_catalog.pg_backend_pid(), error = NULL,
                error_sqlstate = NULL, finished_at = NULL, updated_at = pg_catalog.now()
          WHERE run_id OPERATOR(pg_catalog.=) $1",
        &[run_id.into()],
    )
    .map_err(err)
}

/// Marks the run running in this process and resets unfinished chunks to pending.
pub fn start_execution(run_id: i64) -> Result<(), PgError> {
    spi::owner_connect(|c| -> SpiResult<()> {
        c.update(
            "UPDATE qbo.runs SET status = 'running', pid = pg_catalog.pg_backend_pid(),
                    executions = executions OPERATOR(pg_catalog.+) 1,
                    error = NULL, error_sqlstate = NULL, finished_at = NULL, updated_at = pg_catalog.now()
              WHERE run_id OPERATOR(pg_catalog.=) $1",
            None,
            &[run_id.into()],
        )?;
        c.update(
            "UPDATE qbo.run_chunks SET status = 'pending', error = NULL
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.<>) 'succeeded'",
            None,
            &[run_id.into()],
        )?;
        Ok(())
    })
    .map_err(err)
}

/// A chunk still to do.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub chunk: i32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub pages: i32,
    pub cursor: Option<serde_json::Value>,
}

/// Chunks not yet succeeded, in order.
pub fn pending_chunks(run_id: i64) -> Result<Vec<ChunkRow>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Vec<ChunkRow>> {
        let t = c.update(
            "SELECT chunk, window_start, window_end, pages, cursor FROM qbo.run_chunks
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.<>) 'succeeded'
              ORDER BY chunk USING OPERATOR(pg_catalog.<)",
            None,
            &[run_id.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(ChunkRow {
                chunk: r.get::<i32>(1)?.unwrap_or(0),
                window_start: instant(&r, 2)?,
                window_end: instant(&r, 3)?,
                pages: r.get::<i32>(4)?.unwrap_or(0),
                cursor: r.get::<JsonB>(5)?.map(|j| j.0),
            });
        }
        Ok(out)
    })
    .map_err(err)
}

/// Marks a chunk running.
pub fn start_chunk(run_id: i64, chunk: i32) -> Result<(), PgError> {
    spi::owner_exec(
        "UPDATE qbo.run_chunks SET status = 'running', attempts = attempts OPERATOR(pg_catalog.+) 1,
                started_at = coalesce(started_at, pg_catalog.now())
          WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
        &[run_id.into(), chunk.into()],
    )
    .map_err(err)
}

/// Records QuickBooks counted in the window whose cursor is saved on `chunk`, read by offsets
/// (`qbo.run_chunks.records_expected`: what `qbo.progress` estimates the time left from, as the
/// window's chunks finish together at its end). Committed with the run's next commit.
pub fn set_records_expected(run_id: i64, chunk: i32, records: i64) -> Result<(), PgError> {
    spi::owner_exec(
        "UPDATE qbo.run_chunks SET records_expected = $3
          WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
        &[run_id.into(), chunk.into(), records.into()],
    )
    .map_err(err)
}

/// One committed page.
pub struct PageDone {
    pub chunk: i32,
    pub page: i32,
    pub start_position: i32,
    pub rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub refetched: i64,
    pub seconds: f64,
    /// Wall-clock time to add to the chunk's duration (since its last page or its start).
    pub chunk_seconds: f64,
    pub intuit_tid: Option<String>,
}

/// Records a page (or the part of a page whose records fall in `p.chunk`): the chunk's counters
/// and a `qbo.run_pages` row.
pub fn page_done(run_id: i64, p: &PageDone) -> Result<(), PgError> {
    let skipped = p.rows - p.inserted - p.updated;
    spi::owner_connect(|c| -> SpiResult<()> {
        c.update(
            "UPDATE qbo.run_chunks
                SET pages = pages OPERATOR(pg_catalog.+) 1, rows = rows OPERATOR(pg_catalog.+) $3,
                    inserted = inserted OPERATOR(pg_catalog.+) $4, updated = updated OPERATOR(pg_catalog.+) $5,
                    skipped = skipped OPERATOR(pg_catalog.+) $6,
                    duration = duration OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $7)
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
            None,
            &[
                run_id.into(),
                p.chunk.into(),
                p.rows.into(),
                p.inserted.into(),
                p.updated.into(),
                skipped.into(),
                p.chunk_seconds.into(),
            ],
        )?;
        c.update(
            "INSERT INTO qbo.run_pages (run_id, chunk, page, start_position, rows, inserted, updated, skipped,
                                        refetched, seconds, intuit_tid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (run_id, chunk, page) DO UPDATE SET start_position = EXCLUDED.start_position,
                 rows = EXCLUDED.rows, inserted = EXCLUDED.inserted, updated = EXCLUDED.updated,
                 skipped = EXCLUDED.skipped, refetched = EXCLUDED.refetched, seconds = EXCLUDED.seconds,
                 intuit_tid = EXCLUDED.intuit_tid, committed_at = pg_catalog.now()",
            None,
            &[
                run_id.into(),
                p.chunk.into(),
                p.page.into(),
                p.start_position.into(),
                (p.rows as i32).into(),
                (p.inserted as i32).into(),
                (p.updated as i32).into(),
                (skipped as i32).into(),
                (p.refetched as i32).into(),
                p.seconds.into(),
                p.intuit_tid.clone().into(),
            ],
        )?;
        Ok(())
    })
    .map_err(err)
}

/// Saves the cursor of a group of chunks on its key chunk, in the transaction of the page(s)
/// it follows; with `touch_run`, also bumps `qbo.runs.updated_at` and says which chunk and page
/// (`shown`) were committed.
pub fn save_cursor(
    run_id: i64,
    key: i32,
    cursor: &serde_json::Value,
    shown: (i32, i32),
    touch_run: bool,
) -> Result<(), PgError> {
    spi::owner_connect(|c| -> SpiResult<()> {
        c.update(
            "UPDATE qbo.run_chunks SET cursor = $3
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
            None,
            &[run_id.into(), key.into(), JsonB(cursor.clone()).into()],
        )?;
        if touch_run {
            c.update(
                "UPDATE qbo.runs SET updated_at = pg_catalog.now(),
                        progress = pg_catalog.format('chunk %s page %s committed', $2, $3)
                  WHERE run_id OPERATOR(pg_catalog.=) $1",
                None,
                &[run_id.into(), shown.0.into(), shown.1.into()],
            )?;
        }
        Ok(())
    })
    .map_err(err)
}

/// Writes a page's rows of a second's Id table (see `PagerState::ids_in_table`), in the page's
/// transaction.
pub fn write_second_ids(run_id: i64, chunk: i32, d: &qbo::pager::SecondIds) -> Result<(), PgError> {
    if d.ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = d.ids.iter().map(|r| r.id.as_str()).collect();
    let tokens: Vec<i64> = d.ids.iter().map(|r| r.sync_token).collect();
    let tries: Vec<i32> = d.ids.iter().map(|r| r.seen_try as i32).collect();
    spi::owner_connect(|c| -> SpiResult<()> {
        c.update(
            "INSERT INTO qbo._second_ids AS s (run_id, chunk, second, id, sync_token, seen_try)
             SELECT $1, $2, $3, u.id, u.tok, u.try
               FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.int8[]),
                              pg_catalog.unnest($6::pg_catalog.int4[])) u(id, tok, try)
             ON CONFLICT (run_id, chunk, second, id) DO UPDATE
                SET sync_token = greatest(s.sync_token, EXCLUDED.sync_token), seen_try = EXCLUDED.seen_try",
            None,
            &[
                run_id.into(),
                chunk.into(),
                tstz(d.second).into(),
                ids.into(),
                tokens.into(),
                tries.into(),
            ],
        )?;
        Ok(())
    })
    .map_err(err)
}

/// The Id table of `second` in a chunk (to resume a slice reading it).
pub fn read_second_ids(
    run_id: i64,
    chunk: i32,
    second: DateTime<Utc>,
) -> Result<Vec<qbo::pager::SecondId>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Vec<qbo::pager::SecondId>> {
        let rows = c.select(
            "SELECT id, sync_token, seen_try FROM qbo._second_ids
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2
                AND second OPERATOR(pg_catalog.=) $3",
            None,
            &[run_id.into(), chunk.into(), tstz(second).into()],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(qbo::pager::SecondId {
                id: r.get::<String>(1)?.unwrap_or_default(),
                sync_token: r.get::<i64>(2)?.unwrap_or(0),
                seen_try: r.get::<i32>(3)?.unwrap_or(0).max(0) as u32,
            });
        }
        Ok(out)
    })
    .map_err(err)
}

/// A chunk that finished, as its progress line reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkDone {
    pub run_id: i64,
    pub chunk: i32,
    pub chunks_total: i32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub pages: i32,
    pub rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub skipped: i64,
    /// The chunk's duration, summed over every execution that worked on it, in seconds.
    pub seconds: f64,
    /// Executions that worked on the chunk.
    pub attempts: i32,
}

/// The totals of a run that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTotals {
    pub run_id: i64,
    pub chunks: i32,
    pub pages: i64,
    pub rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub skipped: i64,
    /// From the run's start to now.
    pub seconds: f64,
}

const CHUNK_DONE_COLUMNS: &str = "c.run_id, c.chunk, r.chunks_total, c.window_start, c.window_end, c.pages, c.rows::pg_catalog.int8,
                c.inserted::pg_catalog.int8, c.updated::pg_catalog.int8, c.skipped::pg_catalog.int8,
                pg_catalog.date_part('epoch', c.duration)::pg_catalog.float8, c.attempts";

/// Column `n` of a row as an instant (a NULL reads as the epoch: the columns read so are NOT NULL).
fn instant(r: &pgrx::spi::SpiHeapTupleData, n: usize) -> SpiResult<DateTime<Utc>> {
    Ok(r.get::<TimestampWithTimeZone>(n)?
        .and_then(from_tstz)
        .unwrap_or_default())
}

fn chunk_done(r: &pgrx::spi::SpiHeapTupleData) -> SpiResult<ChunkDone> {
    Ok(ChunkDone {
        run_id: r.get::<i64>(1)?.unwrap_or(0),
        chunk: r.get::<i32>(2)?.unwrap_or(0),
        chunks_total: r.get::<i32>(3)?.unwrap_or(0),
        window_start: instant(r, 4)?,
        window_end: instant(r, 5)?,
        pages: r.get::<i32>(6)?.unwrap_or(0),
        rows: r.get::<i64>(7)?.unwrap_or(0),
        inserted: r.get::<i64>(8)?.unwrap_or(0),
        updated: r.get::<i64>(9)?.unwrap_or(0),
        skipped: r.get::<i64>(10)?.unwrap_or(0),
        seconds: r.get::<f64>(11)?.unwrap_or(0.0),
        attempts: r.get::<i32>(12)?.unwrap_or(0),
    })
}

/// Marks a chunk succeeded, adding `seconds` to its duration, and forgets its seconds' Ids.
pub fn finish_chunk(run_id: i64, chunk: i32, seconds: f64) -> Result<ChunkDone, PgError> {
    spi::owner_connect(|c| -> SpiResult<ChunkDone> {
        c.update(
            "DELETE FROM qbo._second_ids WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
            None,
            &[run_id.into(), chunk.into()],
        )?;
        c.update(
            "UPDATE qbo.run_chunks c SET status = 'succeeded', finished_at = pg_catalog.now(), error = NULL,
                    duration = c.duration OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $3)
              WHERE c.run_id OPERATOR(pg_catalog.=) $1 AND c.chunk OPERATOR(pg_catalog.=) $2",
            None,
            &[run_id.into(), chunk.into(), seconds.into()],
        )?;
        let t = c.update(
            &format!(
                "SELECT {CHUNK_DONE_COLUMNS}
                   FROM qbo.run_chunks c JOIN qbo.runs r ON r.run_id OPERATOR(pg_catalog.=) c.run_id
                  WHERE c.run_id OPERATOR(pg_catalog.=) $1 AND c.chunk OPERATOR(pg_catalog.=) $2"
            ),
            Some(1),
            &[run_id.into(), chunk.into()],
        )?;
        // the chunk exists (the run's own plan): no row would be a missing position
        match t.into_iter().next() {
            Some(r) => chunk_done(&r),
            None => Err(pgrx::spi::Error::InvalidPosition),
        }
    })
    .map_err(err)
}

/// The chunks of a run that succeeded, except those in `already`, in the order they finished.
pub fn chunks_done(run_id: i64, already: &[i32]) -> Result<Vec<ChunkDone>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Vec<ChunkDone>> {
        let t = c.update(
            &format!(
                "SELECT {CHUNK_DONE_COLUMNS}
                   FROM qbo.run_chunks c JOIN qbo.runs r ON r.run_id OPERATOR(pg_catalog.=) c.run_id
                  WHERE c.run_id OPERATOR(pg_catalog.=) $1 AND c.status OPERATOR(pg_catalog.=) 'succeeded'
                    AND c.chunk OPERATOR(pg_catalog.<>) ALL ($2)
                  ORDER BY c.finished_at, c.chunk"
            ),
            None,
            &[run_id.into(), already.to_vec().into()],
        )?;
        let mut v = Vec::new();
        for r in t {
            v.push(chunk_done(&r)?);
        }
        Ok(v)
    })
    .map_err(err)
}

/// Where a run stands, as its progress line reports it (read with a fresh snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct RunProgress {
    pub run_id: i64,
    pub chunks_total: i32,
    /// Chunks succeeded, and chunks being worked on.
    pub done: i64,
    pub running: i64,
    /// Pages committed and rows accepted so far, over every execution of the run.
    pub pages: i64,
    pub rows: i64,
    /// The run's last progress note (`qbo.runs.progress`).
    pub note: Option<String>,
}

/// Where run `run_id` stands now.
pub fn run_progress(run_id: i64) -> Result<RunProgress, PgError> {
    spi::owner_connect(|c| -> SpiResult<RunProgress> {
        let r = c
            .update(
                "SELECT r.chunks_total, t.done, t.running, t.pages, t.rows, r.progress
                   FROM qbo.runs r
                  CROSS JOIN LATERAL (
                        SELECT pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'succeeded') AS done,
                               pg_catalog.count(*) FILTER (WHERE c.status OPERATOR(pg_catalog.=) 'running') AS running,
                               coalesce(pg_catalog.sum(c.pages), 0)::pg_catalog.int8 AS pages,
                               coalesce(pg_catalog.sum(c.rows), 0)::pg_catalog.int8 AS rows
                          FROM qbo.run_chunks c WHERE c.run_id OPERATOR(pg_catalog.=) r.run_id) t
                  WHERE r.run_id OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[run_id.into()],
            )?
            .first();
        Ok(RunProgress {
            run_id,
            chunks_total: r.get::<i32>(1)?.unwrap_or(0),
            done: r.get::<i64>(2)?.unwrap_or(0),
            running: r.get::<i64>(3)?.unwrap_or(0),
            pages: r.get::<i64>(4)?.unwrap_or(0),
            rows: r.get::<i64>(5)?.unwrap_or(0),
            note: r.get::<String>(6)?,
        })
    })
    .map_err(err)
}

/// The window of a chunk of a run.
pub fn chunk_window(run_id: i64, chunk: i32) -> Result<(DateTime<Utc>, DateTime<Utc>), PgError> {
    spi::owner_connect(|c| -> SpiResult<(DateTime<Utc>, DateTime<Utc>)> {
        let t = c.update(
            "SELECT c.window_start, c.window_end FROM qbo.run_chunks c
              WHERE c.run_id OPERATOR(pg_catalog.=) $1 AND c.chunk OPERATOR(pg_catalog.=) $2",
            Some(1),
            &[run_id.into(), chunk.into()],
        )?;
        match t.into_iter().next() {
            Some(r) => Ok((instant(&r, 1)?, instant(&r, 2)?)),
            None => Err(pgrx::spi::Error::InvalidPosition),
        }
    })
    .map_err(err)
}

/// Records what the run is doing now (the caller commits; callers rate-limit to about 1/s).
pub fn set_progress(run_id: i64, what: &str) -> Result<(), PgError> {
    spi::owner_exec(
        "UPDATE qbo.runs SET progress = $2, updated_at = pg_catalog.now() WHERE run_id OPERATOR(pg_catalog.=) $1",
        &[run_id.into(), what.into()],
    )
    .map_err(err)
}

/// Marks the run succeeded.
pub fn finish_run_ok(run_id: i64) -> Result<(), PgError> {
    spi::owner_exec(
        "UPDATE qbo.runs SET status = 'succeeded', finished_at = pg_catalog.now(), updated_at = pg_catalog.now(),
                error = NULL, error_sqlstate = NULL, progress = NULL WHERE run_id OPERATOR(pg_catalog.=) $1",
        &[run_id.into()],
    )
    .map_err(err)
}

/// Marks the run (and its running chunk) failed or cancelled with the error.
pub fn finish_run_with_error(
    run_id: i64,
    status: &str,
    sqlstate: &str,
    message: &str,
) -> Result<(), PgError> {
    spi::owner_connect(|c| -> SpiResult<()> {
        c.update(
            "UPDATE qbo.runs SET status = $2, error = $3, error_sqlstate = $4, finished_at = pg_catalog.now(),
                    updated_at = pg_catalog.now(), progress = NULL
              WHERE run_id OPERATOR(pg_catalog.=) $1",
            None,
            &[run_id.into(), status.into(), message.into(), sqlstate.into()],
        )?;
        c.update(
            "UPDATE qbo.run_chunks SET status = $2, error = $3
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'running'",
            None,
            &[run_id.into(), status.into(), message.into()],
        )?;
        Ok(())
    })
    .map_err(err)
}

/// The totals of a run, for its final message.
pub fn totals(run_id: i64) -> Result<RunTotals, PgError> {
    spi::owner_connect(|c| -> SpiResult<RunTotals> {
        let r = c
            .update(
                "SELECT pg_catalog.count(*)::pg_catalog.int4,
                        coalesce(pg_catalog.sum(c.pages), 0)::pg_catalog.int8,
                        coalesce(pg_catalog.sum(c.rows), 0)::pg_catalog.int8,
                        coalesce(pg_catalog.sum(c.inserted), 0)::pg_catalog.int8,
                        coalesce(pg_catalog.sum(c.updated), 0)::pg_catalog.int8,
                        coalesce(pg_catalog.sum(c.skipped), 0)::pg_catalog.int8,
                        pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-)
                            (SELECT r.started_at FROM qbo.runs r WHERE r.run_id OPERATOR(pg_catalog.=) $1))::pg_catalog.float8
                   FROM qbo.run_chunks c WHERE c.run_id OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[run_id.into()],
            )?
            .first();
        Ok(RunTotals {
            run_id,
            chunks: r.get::<i32>(1)?.unwrap_or(0),
            pages: r.get::<i64>(2)?.unwrap_or(0),
            rows: r.get::<i64>(3)?.unwrap_or(0),
            inserted: r.get::<i64>(4)?.unwrap_or(0),
            updated: r.get::<i64>(5)?.unwrap_or(0),
            skipped: r.get::<i64>(6)?.unwrap_or(0),
            seconds: r.get::<f64>(7)?.unwrap_or(0.0),
        })
    })
    .map_err(err)
}

/// One row of the volumetry returned by `qbo.backfill` / `qbo.resume`.
pub type VolumetryRow = (
    i32,
    TimestampWithTimeZone,
    TimestampWithTimeZone,
    i32,
    i64,
    i64,
    i64,
    i64,
    Interval,
);

/// The volumetry of every chunk of a run; a chunk's duration is the sum over every execution that
/// worked on it, rounded to milliseconds.
pub fn volumetry(run_id: i64) -> Result<Vec<VolumetryRow>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Vec<VolumetryRow>> {
        let t = c.update(
            "SELECT chunk, window_start, window_end, pages, rows, inserted, updated, skipped,
                    pg_catalog.date_trunc('milliseconds', duration OPERATOR(pg_catalog.+) '0.0005 s'::pg_catalog.interval)
               FROM qbo.run_chunks WHERE run_id OPERATOR(pg_catalog.=) $1 ORDER BY chunk USING OPERATOR(pg_catalog.<)",
            None,
            &[run_id.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<i32>(1)?.unwrap_or(0),
                r.get::<TimestampWithTimeZone>(2)?.unwrap_or_else(|| tstz(DateTime::<Utc>::UNIX_EPOCH)),
                r.get::<TimestampWithTimeZone>(3)?.unwrap_or_else(|| tstz(DateTime::<Utc>::UNIX_EPOCH)),
                r.get::<i32>(4)?.unwrap_or(0),
                r.get::<i64>(5)?.unwrap_or(0),
                r.get::<i64>(6)?.unwrap_or(0),
                r.get::<i64>(7)?.unwrap_or(0),
                r.get::<i64>(8)?.unwrap_or(0),
                r.get::<Interval>(9)?.unwrap_or_else(|| Interval::from_micros(0)),
            ));
        }
        Ok(out)
    })
    .map_err(err)
}

/// Status, error and SQLSTATE of a run (read with a fresh snapshot).
pub fn outcome(run_id: i64) -> Result<(String, Option<String>, Option<String>), PgError> {
    spi::owner_connect(|c| -> SpiResult<(String, Option<String>, Option<String>)> {
        let r = c
            .update(
                "SELECT status, error, error_sqlstate FROM qbo.runs WHERE run_id OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[run_id.into()],
            )?
            .first();
        Ok((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?,
            r.get::<String>(3)?,
        ))
    })
    .map_err(err)
}

/// Marks runs whose process is gone as interrupted.
pub fn mark_interrupted() -> Result<(), PgError> {
    owner_exec("SELECT qbo._mark_interrupted()", &[]).map_err(|e| PgError::db("pg_qbo ledger", e))
}
