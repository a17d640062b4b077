//! The ledger of syncs: a sync is a run (`qbo.runs.kind = 'sync'`) with one `qbo.run_chunks` row
//! per entity (its route, window, counters and requests), and the watermarks of `qbo.sync_state`.
//! Everything runs as the extension owner; the caller decides when to commit.

use crate::pg::error::PgError;
use crate::pg::spi::{self, owner_exec};
use crate::pg::time::{from_tstz, tstz};
use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::spi::SpiResult;
use pgrx::JsonB;
use pgrx::PgSqlErrorCode;
use qbo::entities::Entity;
use std::collections::HashMap;

fn err(e: pgrx::spi::Error) -> PgError {
    PgError::new(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("pg_qbo sync ledger: {e}"),
    )
}

/// A new sync run.
pub struct NewSync<'a> {
    /// What `qbo.runs.entity` shows: `*` for every entity, else the names asked.
    pub label: &'a str,
    pub connection: &'a str,
    pub realm_id: &'a str,
    pub environment: &'a str,
    pub minor_version: i32,
    pub settings: serde_json::Value,
    pub entry_point: &'a str,
    /// Each entity with where its sync starts (its watermark, or the start of history).
    pub entities: &'a [(&'static Entity, DateTime<Utc>)],
    /// Where the sync reads up to, at most (the end of the second it was created in).
    pub until: DateTime<Utc>,
}

/// Inserts the sync run and its rows (one per entity, in the given order); returns the run id.
pub fn create_sync(r: &NewSync) -> Result<i64, PgError> {
    // SAFETY: on the backend's own thread, in a session whose user InitPostgres has set:
    // GetUserId only reads that backend global, here before owner_connect switches to the owner.
    let caller = unsafe { pgrx::pg_sys::GetUserId() };
    let names: Vec<&str> = r.entities.iter().map(|(e, _)| e.name).collect();
    let starts: Vec<TimestampWithTimeZone> = r.entities.iter().map(|(_, s)| tstz(*s)).collect();
    let from = r.entities.iter().map(|(_, s)| *s).min().unwrap_or(r.until);
    spi::owner_connect(|c| -> SpiResult<i64> {
        let id = c
            .update(
                "INSERT INTO qbo.runs (kind, entity, connection, realm_id, environment, fecha_inicio, fecha_fin,
                                       chunk_size, page_size, minor_version, settings, entry_point, status,
                                       chunks_total, run_by)
                 VALUES ('sync', $1, $2, $3, $4, $5, $6, 0, 1000, $7, $8, $9, 'running', $10,
                         pg_catalog.pg_get_userbyid($11)) RETURNING run_id",
                Some(1),
                &[
                    r.label.into(),
                    r.connection.into(),
                    r.realm_id.into(),
                    r.environment.into(),
                    tstz(from).into(),
                    tstz(r.until).into(),
                    r.minor_version.into(),
                    JsonB(r.settings.clone()).into(),
                    r.entry_point.into(),
                    (names.len() as i32).into(),
                    caller.into(),
                ],
            )?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0);
        c.update(
            "INSERT INTO qbo.run_chunks (run_id, chunk, entity, window_start, window_end)
             SELECT $1, t.n::pg_catalog.int4, t.e, t.s, $4
               FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.timestamptz[]))
                    WITH ORDINALITY AS t(e, s, n)",
            None,
            &[id.into(), names.into(), starts.into(), tstz(r.until).into()],
        )?;
        Ok(id)
    })
    .map_err(err)
}

/// The watermarks of every entity of realm `realm` synced so far.
pub fn watermarks(realm: &str) -> Result<HashMap<String, DateTime<Utc>>, PgError> {
    spi::owner_connect(|c| -> SpiResult<HashMap<String, DateTime<Utc>>> {
        let t = c.update(
            "SELECT entity, watermark FROM qbo.sync_state WHERE realm_id OPERATOR(pg_catalog.=) $1",
            None,
            &[realm.into()],
        )?;
        let mut out = HashMap::new();
        for r in t {
            if let (Some(e), Some(w)) = (
                r.get::<String>(1)?,
                r.get::<TimestampWithTimeZone>(2)?.and_then(from_tstz),
            ) {
                out.insert(e, w);
            }
        }
        Ok(out)
    })
    .map_err(err)
}

/// Moves the watermark of (realm, entity) to `watermark` (never back: both say everything before
/// them is applied), in the current transaction, which holds the rows it covers. (`GREATEST` is
/// SQL syntax, not a function looked up by name: it compares with the type's default btree
/// operator class.)
pub fn set_watermark(
    realm: &str,
    entity: &str,
    watermark: DateTime<Utc>,
    connection: &str,
    run_id: i64,
    route: &str,
) -> Result<(), PgError> {
    owner_exec(
        "INSERT INTO qbo.sync_state AS s (realm_id, entity, watermark, connection, run_id, route)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (realm_id, entity) DO UPDATE
            SET watermark = GREATEST(s.watermark, EXCLUDED.watermark),
                connection = EXCLUDED.connection, run_id = EXCLUDED.run_id, route = EXCLUDED.route,
                updated_at = pg_catalog.now()",
        &[
            realm.into(),
            entity.into(),
            tstz(watermark).into(),
            connection.into(),
            run_id.into(),
            route.into(),
        ],
    )
    .map_err(err)
}

/// An entity row of a sync.
#[derive(Debug, Clone)]
pub struct EntityRow {
    pub chunk: i32,
    pub entity: String,
}

/// The entity rows of sync `run_id`, in order.
pub fn entity_rows(run_id: i64) -> Result<Vec<EntityRow>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Vec<EntityRow>> {
        let t = c.update(
            "SELECT chunk, entity FROM qbo.run_chunks
              WHERE run_id OPERATOR(pg_catalog.=) $1 ORDER BY chunk USING OPERATOR(pg_catalog.<)",
            None,
            &[run_id.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(EntityRow {
                chunk: r.get::<i32>(1)?.unwrap_or(0),
                entity: r.get::<String>(2)?.unwrap_or_default(),
            });
        }
        Ok(out)
    })
    .map_err(err)
}

/// Marks an entity row running on `route`, reading from `since`.
pub fn start_entity(
    run_id: i64,
    chunk: i32,
    route: &str,
    since: DateTime<Utc>,
) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo.run_chunks SET status = 'running', route = $3, window_start = $4,
                attempts = attempts OPERATOR(pg_catalog.+) 1, started_at = coalesce(started_at, pg_catalog.now())
          WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
        &[run_id.into(), chunk.into(), route.into(), tstz(since).into()],
    )
    .map_err(err)
}

/// What one CDC answer applied to one entity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    /// Records and tombstones of the entity in the answer (distinct Ids).
    pub changed: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    /// Requests attributed to the entity (the CDC request, when it was the call's first entity).
    pub requests: i64,
    /// Answers that carried records of the entity.
    pub pages: i32,
    pub seconds: f64,
}

/// Adds what an answer applied to an entity row (skipped = changed - the rest).
pub fn add_applied(run_id: i64, chunk: i32, a: &Applied) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo.run_chunks
            SET pages = pages OPERATOR(pg_catalog.+) $9, rows = rows OPERATOR(pg_catalog.+) $3,
                inserted = inserted OPERATOR(pg_catalog.+) $4, updated = updated OPERATOR(pg_catalog.+) $5,
                deleted = deleted OPERATOR(pg_catalog.+) $6,
                skipped = skipped OPERATOR(pg_catalog.+) ($3 OPERATOR(pg_catalog.-) $4 OPERATOR(pg_catalog.-) $5 OPERATOR(pg_catalog.-) $6),
                requests = requests OPERATOR(pg_catalog.+) $7,
                duration = duration OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $8)
          WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
        &[
            run_id.into(),
            chunk.into(),
            a.changed.into(),
            a.inserted.into(),
            a.updated.into(),
            a.deleted.into(),
            a.requests.into(),
            a.seconds.into(),
            a.pages.into(),
        ],
    )
    .map_err(err)
}

/// Finishes an entity row: succeeded, synced up to `until`.
pub fn finish_entity(run_id: i64, chunk: i32, until: DateTime<Utc>) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo.run_chunks SET status = 'succeeded', window_end = $3, finished_at = pg_catalog.now()
          WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
        &[run_id.into(), chunk.into(), tstz(until).into()],
    )
    .map_err(err)
}

/// Records the backfill run reading an entity of a sync through the pager (both ways: the child
/// points to the sync, the entity row to the child).
pub fn link_child(run_id: i64, chunk: i32, child: i64) -> Result<(), PgError> {
    spi::owner_connect(|c| -> SpiResult<()> {
        c.update(
            "UPDATE qbo.runs SET parent_run_id = $1 WHERE run_id OPERATOR(pg_catalog.=) $3",
            None,
            &[run_id.into(), chunk.into(), child.into()],
        )?;
        c.update(
            "UPDATE qbo.run_chunks SET child_run_id = $3
              WHERE run_id OPERATOR(pg_catalog.=) $1 AND chunk OPERATOR(pg_catalog.=) $2",
            None,
            &[run_id.into(), chunk.into(), child.into()],
        )?;
        Ok(())
    })
    .map_err(err)
}

/// Adds the totals of the finished backfill `child` to the entity row (which may hold what CDC
/// answers at the cap applied before; requests: every request the child sent, over all its
/// executions).
pub fn take_child_totals(run_id: i64, chunk: i32, child: i64) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo.run_chunks e
            SET pages = e.pages OPERATOR(pg_catalog.+) t.pages, rows = e.rows OPERATOR(pg_catalog.+) t.rows,
                inserted = e.inserted OPERATOR(pg_catalog.+) t.inserted,
                updated = e.updated OPERATOR(pg_catalog.+) t.updated,
                skipped = e.skipped OPERATOR(pg_catalog.+) t.skipped,
                duration = e.duration OPERATOR(pg_catalog.+) t.duration,
                requests = e.requests OPERATOR(pg_catalog.+) t.requests
           FROM (SELECT coalesce(pg_catalog.sum(c.pages), 0)::pg_catalog.int4 AS pages,
                        coalesce(pg_catalog.sum(c.rows), 0)::pg_catalog.int8 AS rows,
                        coalesce(pg_catalog.sum(c.inserted), 0)::pg_catalog.int8 AS inserted,
                        coalesce(pg_catalog.sum(c.updated), 0)::pg_catalog.int8 AS updated,
                        coalesce(pg_catalog.sum(c.skipped), 0)::pg_catalog.int8 AS skipped,
                        coalesce(pg_catalog.sum(c.duration), '0'::pg_catalog.interval) AS duration,
                        (SELECT r.requests_query OPERATOR(pg_catalog.+) r.requests_count OPERATOR(pg_catalog.+) r.requests_token
                           FROM qbo.runs r WHERE r.run_id OPERATOR(pg_catalog.=) $3) AS requests
                   FROM qbo.run_chunks c WHERE c.run_id OPERATOR(pg_catalog.=) $3) t
          WHERE e.run_id OPERATOR(pg_catalog.=) $1 AND e.chunk OPERATOR(pg_catalog.=) $2",
        &[run_id.into(), chunk.into(), child.into()],
    )
    .map_err(err)
}

/// Counts the token refreshes the sync sent itself (for its own requests: CDC calls, queries of
/// entities CDC does not serve, deletes hunts) on its first entity read by CDC, else by a query,
/// else through the pager, so that the entity rows' `requests` add up to the sync's total.
pub fn attribute_tokens(run_id: i64) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo.run_chunks c
            SET requests = c.requests OPERATOR(pg_catalog.+)
                           (SELECT r.requests_token FROM qbo.runs r WHERE r.run_id OPERATOR(pg_catalog.=) $1)
          WHERE c.run_id OPERATOR(pg_catalog.=) $1
            AND c.chunk OPERATOR(pg_catalog.=) (SELECT k.chunk FROM qbo.run_chunks k
                                                 WHERE k.run_id OPERATOR(pg_catalog.=) $1
                                                   AND k.route OPERATOR(pg_catalog.=) ANY ('{cdc,query,pager}'::pg_catalog.text[])
                                                 ORDER BY pg_catalog.array_position('{cdc,query,pager}'::pg_catalog.text[], k.route), k.chunk
                                                 LIMIT 1)",
        &[run_id.into()],
    )
    .map_err(err)
}

/// A backfill an earlier sync ran for (realm, entity) from `since` that did not finish (failed,
/// cancelled or interrupted): the newest one, with its end. Resuming it costs only what it had
/// not done.
pub fn unfinished_child(
    realm: &str,
    entity: &str,
    since: DateTime<Utc>,
) -> Result<Option<(i64, DateTime<Utc>)>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Option<(i64, DateTime<Utc>)>> {
        let t = c.update(
            "SELECT r.run_id, r.fecha_fin FROM qbo.runs r
              WHERE r.kind OPERATOR(pg_catalog.=) 'backfill' AND r.parent_run_id IS NOT NULL
                AND r.realm_id OPERATOR(pg_catalog.=) $1 AND r.entity OPERATOR(pg_catalog.=) $2
                AND r.fecha_inicio OPERATOR(pg_catalog.=) $3
                AND r.status OPERATOR(pg_catalog.=) ANY ('{failed,cancelled,interrupted}'::pg_catalog.text[])
              ORDER BY r.run_id USING OPERATOR(pg_catalog.>) LIMIT 1",
            Some(1),
            &[realm.into(), entity.into(), tstz(since).into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(match (
            r.get::<i64>(1)?,
            r.get::<TimestampWithTimeZone>(2)?.and_then(from_tstz),
        ) {
            (Some(id), Some(end)) => Some((id, end)),
            _ => None,
        })
    })
    .map_err(err)
}

/// The sync of realm `realm` running now, if any (for the NOTICE of an overlapping call).
pub fn running_sync(realm: &str) -> Result<Option<i64>, PgError> {
    spi::optional(spi::as_owner(|| {
        spi::one::<i64>(
            "SELECT pg_catalog.max(run_id) FROM qbo.runs
          WHERE kind OPERATOR(pg_catalog.=) 'sync' AND status OPERATOR(pg_catalog.=) 'running'
            AND realm_id OPERATOR(pg_catalog.=) $1",
            &[realm.into()],
        )
    }))
    .map_err(err)
}

/// One row of a sync's report (`qbo.sync`, the NOTICEs of `CALL qbo.run_sync`).
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub entity: String,
    pub route: Option<String>,
    pub since: TimestampWithTimeZone,
    pub until: TimestampWithTimeZone,
    pub requests: i64,
    pub changed: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub skipped: i64,
    /// Seconds spent on the entity.
    pub seconds: f64,
    /// pending, running, succeeded, failed, cancelled or interrupted.
    pub status: String,
}

/// The report of sync `run_id`, one row per entity in order.
pub fn report(run_id: i64) -> Result<Vec<ReportRow>, PgError> {
    spi::owner_connect(|c| -> SpiResult<Vec<ReportRow>> {
        let t = c.update(
            "SELECT entity, route, window_start, window_end, requests, rows, inserted, updated, deleted, skipped,
                    pg_catalog.date_part('epoch', duration)::pg_catalog.float8, status
               FROM qbo.run_chunks WHERE run_id OPERATOR(pg_catalog.=) $1 ORDER BY chunk USING OPERATOR(pg_catalog.<)",
            None,
            &[run_id.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            let epoch = || tstz(DateTime::<Utc>::UNIX_EPOCH);
            out.push(ReportRow {
                entity: r.get::<String>(1)?.unwrap_or_default(),
                route: r.get::<String>(2)?,
                since: r.get::<TimestampWithTimeZone>(3)?.unwrap_or_else(epoch),
                until: r.get::<TimestampWithTimeZone>(4)?.unwrap_or_else(epoch),
                requests: r.get::<i64>(5)?.unwrap_or(0),
                changed: r.get::<i64>(6)?.unwrap_or(0),
                inserted: r.get::<i64>(7)?.unwrap_or(0),
                updated: r.get::<i64>(8)?.unwrap_or(0),
                deleted: r.get::<i64>(9)?.unwrap_or(0),
                skipped: r.get::<i64>(10)?.unwrap_or(0),
                seconds: r.get::<f64>(11)?.unwrap_or(0.0),
                status: r.get::<String>(12)?.unwrap_or_default(),
            });
        }
        Ok(out)
    })
    .map_err(err)
}

/// Every request sync `run_id` sent, its own (CDC, tokens) and its backfills'.
pub fn total_requests(run_id: i64) -> Result<i64, PgError> {
    spi::as_owner(|| spi::one::<i64>(
        "SELECT (SELECT r.requests_cdc OPERATOR(pg_catalog.+) r.requests_query OPERATOR(pg_catalog.+)
                        r.requests_count OPERATOR(pg_catalog.+) r.requests_token
                   FROM qbo.runs r WHERE r.run_id OPERATOR(pg_catalog.=) $1)
              OPERATOR(pg_catalog.+)
                coalesce((SELECT pg_catalog.sum(r.requests_query OPERATOR(pg_catalog.+) r.requests_count
                                                OPERATOR(pg_catalog.+) r.requests_token)
                            FROM qbo.runs r WHERE r.parent_run_id OPERATOR(pg_catalog.=) $1), 0)::pg_catalog.int8",
        &[run_id.into()],
    ))
    .map(|v| v.unwrap_or(0))
    .map_err(err)
}

/// The live rows (not tombstoned) of `entity` in realm `realm` whose `last_updated_utc` is in
/// `[from, to)` (the index on (realm_id, last_updated_utc) serves it).
pub fn live_count(
    entity: &Entity,
    realm: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, PgError> {
    let t = entity.table;
    spi::as_owner(|| {
        spi::one::<i64>(
            &format!(
                "SELECT pg_catalog.count(*) FROM raw.{t}
                  WHERE realm_id OPERATOR(pg_catalog.=) $1 AND deleted_at_utc IS NULL
                    AND last_updated_utc OPERATOR(pg_catalog.>=) $2 AND last_updated_utc OPERATOR(pg_catalog.<) $3"
            ),
            &[realm.into(), tstz(from).into(), tstz(to).into()],
        )
    })
    .map(|n| n.unwrap_or(0).max(0) as u64)
    .map_err(err)
}

/// Their Ids.
pub fn live_ids(
    entity: &Entity,
    realm: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<String>, PgError> {
    let t = entity.table;
    spi::as_owner(|| {
        spi::one::<Vec<String>>(
            &format!(
                "SELECT coalesce(pg_catalog.array_agg(id), '{{}}'::pg_catalog.text[]) FROM raw.{t}
                  WHERE realm_id OPERATOR(pg_catalog.=) $1 AND deleted_at_utc IS NULL
                    AND last_updated_utc OPERATOR(pg_catalog.>=) $2 AND last_updated_utc OPERATOR(pg_catalog.<) $3"
            ),
            &[realm.into(), tstz(from).into(), tstz(to).into()],
        )
    })
    .map(|v| v.unwrap_or_default())
    .map_err(err)
}
