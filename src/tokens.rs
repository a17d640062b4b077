//! Access tokens for one run: cached in memory, shared through `qbo._connections`, refreshed under
//! a per-realm session advisory lock so two backfills of one realm never refresh at the same time
//! (the second waits and then uses the token the first stored), and every token Intuit returns is
//! stored and COMMITTED before it is used: a rotated refresh token is never lost.
//!
//! A refresh in flight is not abandoned by a cancel: it runs without interrupt checks under its own
//! short timeout (`qbo.token_timeout_ms`), and the cancel is honoured right after it.

use crate::error::QboError;
use crate::executor::{check_interrupts, Mode};
use crate::guc::Settings;
use crate::retry::RetryPolicy;
use crate::store::{self, Connection};
use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Duration;

fn set_locked(m: &Mutex<Option<String>>, v: Option<String>) {
    if let Ok(mut g) = m.lock() {
        *g = v;
    }
}

/// A token is used only if it stays valid at least this long.
const MARGIN_SECS: i64 = 60;

/// The token state of one execution.
pub struct TokenCache<'a> {
    conn_name: String,
    realm: String,
    cached: Option<(String, DateTime<Utc>)>,
    http: reqwest::Client,
    token_url: String,
    timeout: Duration,
    policy: RetryPolicy,
    /// Set while the realm's token lock is held, so the error path can release it.
    locked: &'a Mutex<Option<String>>,
}

fn db(e: String) -> QboError {
    QboError::BadResponse(format!("pg_qbo token store: {e}"))
}

impl<'a> TokenCache<'a> {
    pub fn new(
        conn: Connection,
        settings: &Settings,
        locked: &'a Mutex<Option<String>>,
    ) -> Result<Self, QboError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.token_timeout_ms))
            .build()
            .map_err(|e| QboError::Network(format!("cannot build the token client: {e}")))?;
        let cached = match (&conn.access_token, conn.access_token_expires_at) {
            (Some(t), Some(exp)) => Some((t.clone(), exp)),
            _ => None,
        };
        Ok(TokenCache {
            conn_name: conn.name,
            realm: conn.realm_id,
            cached,
            http,
            token_url: settings.token_endpoint(),
            timeout: Duration::from_millis(settings.token_timeout_ms),
            policy: RetryPolicy {
                max_retries: settings.max_retries.min(3),
                base: Duration::from_millis(settings.backoff_base_ms),
                cap: Duration::from_millis(settings.backoff_cap_ms),
                retry_after_cap: Duration::from_millis(settings.retry_after_cap_ms),
            },
            locked,
        })
    }

    fn valid(t: &Option<(String, DateTime<Utc>)>) -> Option<String> {
        match t {
            Some((tok, exp)) if *exp > Utc::now() + chrono::Duration::seconds(MARGIN_SECS) => {
                Some(tok.clone())
            }
            _ => None,
        }
    }

    /// A valid access token, refreshing if needed. Must be called between pages (the current
    /// transaction holds nothing uncommitted): a refresh commits.
    pub fn access_token(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mode: Mode,
    ) -> Result<String, QboError> {
        if let Some(t) = Self::valid(&self.cached) {
            return Ok(t);
        }
        self.refresh(rt, mode)
    }

    /// QBO answered 401 to `token`: forget it (here and in the table) and refresh.
    pub fn reject(&mut self, token: &str) -> Result<(), QboError> {
        // requests in flight may carry an older token than the cached one: keep a newer one
        if self.cached.as_ref().is_some_and(|(t, _)| t == token) {
            self.cached = None;
        }
        store::forget_access_token(&self.conn_name, token).map_err(db)?;
        store::commit();
        Ok(())
    }

    fn refresh(&mut self, rt: &tokio::runtime::Runtime, mode: Mode) -> Result<String, QboError> {
        store::lock_token(&self.realm).map_err(db)?;
        set_locked(self.locked, Some(self.realm.clone()));
        let result = self.refresh_locked(rt, mode);
        let unlocked = store::unlock_token(&self.realm).map_err(db);
        set_locked(self.locked, None);
        store::commit();
        let token = result?;
        unlocked?;
        Ok(token)
    }

    fn refresh_locked(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mode: Mode,
    ) -> Result<String, QboError> {
        // Another session may have refreshed while we waited for the lock: use its token.
        let conn = store::load_connection(&self.conn_name)
            .map_err(db)?
            .ok_or_else(|| {
                QboError::InvalidParameter(format!(
                    "connection \"{}\" was removed during the run",
                    self.conn_name
                ))
            })?;
        let stored = match (&conn.access_token, conn.access_token_expires_at) {
            (Some(t), Some(exp)) => Some((t.clone(), exp)),
            _ => None,
        };
        if let Some(t) = Self::valid(&stored) {
            self.cached = stored;
            return Ok(t);
        }
        let mut retries = 0;
        let mut rng = rand::rng();
        loop {
            // Not interruptible on purpose: see the module doc. Bounded by `self.timeout`.
            let fut = crate::oauth::refresh(
                &self.http,
                &self.token_url,
                &conn.client_id,
                &conn.client_secret,
                &conn.refresh_token,
                self.timeout,
            );
            match rt.block_on(fut) {
                Ok(ts) => {
                    let now = Utc::now();
                    let exp = now
                        + chrono::Duration::from_std(
                            ts.expires_in.unwrap_or(Duration::from_secs(3600)),
                        )
                        .unwrap_or_default();
                    let rexp = ts
                        .x_refresh_token_expires_in
                        .and_then(|d| chrono::Duration::from_std(d).ok())
                        .map(|d| now + d);
                    store::store_tokens(
                        &self.conn_name,
                        &ts.access_token,
                        exp,
                        ts.refresh_token.as_deref(),
                        rexp,
                    )
                    .map_err(db)?;
                    store::commit();
                    self.cached = Some((ts.access_token.clone(), exp));
                    return Ok(ts.access_token);
                }
                Err(e) if e.is_retryable() && retries < self.policy.max_retries => {
                    let d = self.policy.backoff(retries, e.retry_after(), &mut rng);
                    retries += 1;
                    crate::runtime::sleep_interruptible(rt, d, &mut || check_interrupts(mode));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
