//! Connections (`qbo._connections`): credentials and tokens, read and written as the extension
//! owner only; whether a role may use one (`qbo._may_use`).

use crate::pg::error::PgError;
use crate::pg::spi::{as_owner, owner_connect, owner_exec};
use crate::pg::time::{from_tstz, tstz};
use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiResult;

/// A registered connection with its secrets (never Debug-printed).
pub struct Connection {
    pub name: String,
    pub realm_id: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub access_token: Option<String>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
}

/// Reads a connection with its secrets, as the extension owner. `Ok(None)` if it does not exist.
pub fn load_connection(name: &str) -> Result<Option<Connection>, PgError> {
    owner_connect(|c| -> SpiResult<Option<Connection>> {
        let t = c.update(
            "SELECT realm_id, environment, client_id, client_secret, refresh_token, access_token, access_token_expires_at
               FROM qbo._connections WHERE name OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[name.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(Connection {
            name: name.to_owned(),
            realm_id: r.get::<String>(1)?.unwrap_or_default(),
            environment: r.get::<String>(2)?.unwrap_or_default(),
            client_id: r.get::<String>(3)?.unwrap_or_default(),
            client_secret: r.get::<String>(4)?.unwrap_or_default(),
            refresh_token: r.get::<String>(5)?.unwrap_or_default(),
            access_token: r.get::<String>(6)?,
            access_token_expires_at: r.get::<TimestampWithTimeZone>(7)?.and_then(from_tstz),
        }))
    })
    .map_err(|e| PgError::db("pg_qbo token store", e))
}

/// A registered connection with its secrets; an error naming it (cut to 70 characters) and how to
/// register one when there is none.
pub fn require_connection(name: &str) -> Result<Connection, PgError> {
    crate::store::raw::refuse_citus_worker()?;
    load_connection(name)?.ok_or_else(|| {
        PgError::invalid(format!(
            "unknown connection \"{}\": register it with qbo.connect(...) or qbo.connect_from_file(...) (see qbo.connections)",
            name.chars().take(70).collect::<String>()
        ))
    })
}

/// Whether the current role may run backfills of connection `conn` (see `qbo._may_use`); `Err`:
/// the message to raise (SQLSTATE 42501) when it may not.
pub fn check_may_use(conn: &str) -> Result<(), PgError> {
    // SAFETY: on the backend's own thread, in a session whose user InitPostgres has set (this
    // runs under an SQL entry point or in a worker connected as the caller's role): GetUserId
    // only reads that backend global, here before as_owner switches to the owner.
    let caller = unsafe { pg_sys::GetUserId() };
    let (ok, who) = as_owner(|| {
        Spi::get_two_with_args::<bool, String>(
            "SELECT qbo._may_use($1, $2), pg_catalog.pg_get_userbyid($2)::pg_catalog.text",
            &[conn.into(), caller.into()],
        )
    })
    .map_err(|e| {
        PgError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("pg_qbo connection grants: {e}"),
        )
    })?;
    if ok == Some(true) {
        return Ok(());
    }
    let who = who.unwrap_or_default();
    Err(PgError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "role \"{who}\" may not run backfills of connection \"{conn}\": a superuser grants it with SELECT qbo.grant_connection({}, {})",
            pgrx::spi::quote_literal(conn),
            pgrx::spi::quote_literal(&who)
        ),
    ))
}

/// The connections the current role may use (`qbo._may_use`), by name.
pub fn usable_connections() -> Result<Vec<String>, PgError> {
    // SAFETY: as in check_may_use: the caller's role, read before as_owner switches.
    let caller = unsafe { pg_sys::GetUserId() };
    as_owner(|| {
        Spi::get_one_with_args::<Vec<String>>(
            "SELECT coalesce(pg_catalog.array_agg(c.name ORDER BY c.name USING OPERATOR(pg_catalog.<)), '{}'::pg_catalog.text[])
               FROM qbo._connections c WHERE qbo._may_use(c.name, $1)",
            &[caller.into()],
        )
    })
    .map(|v| v.unwrap_or_default())
    .map_err(|e| PgError::db("pg_qbo connections", e))
}

/// Stores tokens just received from Intuit (the caller commits at once).
pub fn store_tokens(
    conn: &str,
    access: &str,
    access_expires: DateTime<Utc>,
    refresh: Option<&str>,
    refresh_expires: Option<DateTime<Utc>>,
) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo._connections
            SET access_token = $2, access_token_expires_at = $3,
                refresh_token = coalesce($4, refresh_token),
                refresh_token_expires_at = coalesce($5, refresh_token_expires_at),
                last_refresh_at = pg_catalog.now(), updated_at = pg_catalog.now()
          WHERE name OPERATOR(pg_catalog.=) $1",
        &[
            conn.into(),
            access.into(),
            tstz(access_expires).into(),
            refresh.into(),
            refresh_expires.map(tstz).into(),
        ],
    )
    .map_err(|e| PgError::db("pg_qbo token store", e))
}

/// Stores a refresh token salvaged from a token response that could not be used otherwise (it
/// rotated: the old one is already superseded at Intuit). The caller commits at once.
pub fn store_refresh_token(
    conn: &str,
    refresh: &str,
    refresh_expires: Option<DateTime<Utc>>,
) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo._connections
            SET refresh_token = $2, refresh_token_expires_at = coalesce($3, refresh_token_expires_at),
                last_refresh_at = pg_catalog.now(), updated_at = pg_catalog.now()
          WHERE name OPERATOR(pg_catalog.=) $1",
        &[conn.into(), refresh.into(), refresh_expires.map(tstz).into()],
    )
    .map_err(|e| PgError::db("pg_qbo token store", e))
}

/// Forgets an access token QBO rejected.
pub fn forget_access_token(conn: &str, rejected: &str) -> Result<(), PgError> {
    owner_exec(
        "UPDATE qbo._connections SET access_token = NULL, access_token_expires_at = NULL
          WHERE name OPERATOR(pg_catalog.=) $1 AND access_token OPERATOR(pg_catalog.=) $2",
        &[conn.into(), rejected.into()],
    )
    .map_err(|e| PgError::db("pg_qbo token store", e))
}
