//! Access tokens for one run: cached in memory, shared through `qbo._connections`, refreshed under
//! a per-realm session advisory lock so two backfills of one realm never refresh at the same time
//! (the second waits and then uses the token the first stored), and every token Intuit returns is
//! stored and COMMITTED before it is used: a rotated refresh token is never lost.
//!
//! A refresh in flight is not abandoned by a cancel: it runs without interrupt checks under its own
//! short timeout (`qbo.token_timeout_ms`), and the cancel is honoured right after it.
//!
//! Every refresh request sent (each attempt, retries included) is counted first, in its own
//! committed transaction, in `qbo._api_usage` (kind `token`) and on the run
//! (`qbo.runs.requests_token`).
//!
//! A 2xx token response that cannot be used ([`QboError::UnusableTokenResponse`]) may still carry
//! a rotated refresh token: it is stored and committed before the error is raised, or the company
//! would have to be re-authorized (see [`TokenCache::keep_salvaged`]).

use crate::pg::error::PgError;
use crate::pg::guc::Settings;
use crate::pg::interrupts::{check_interrupts, deferred, Mode};
use crate::pg::xact;
use crate::run::limiter;
use crate::store::connections::{self, Connection};
use crate::store::locks;
use chrono::{DateTime, Utc};
use qbo::error::QboError;
use qbo::lifetime::{access_expiry, refresh_expiry, usable_at};
use qbo::oauth::{SalvagedTokens, TokenEndpoint};
use qbo::retry::RetryPolicy;
use std::sync::Mutex;
use std::time::Duration;

/// Stores what Intuit just sent (`store`) and commits it with interrupts deferred
/// ([`deferred`]): a cancel or a termination (`pg_terminate_backend`) arriving while the token
/// request was in flight, or meanwhile, is served only once the tokens are committed. Without
/// this, PostgreSQL's own interrupt check inside the UPDATE (or the regular expressions of the
/// table's CHECK constraints) raised it there, the transaction holding the rotated refresh token
/// rolled back, and the company had to be re-authorized (seen in tests/e2e token_soak: a
/// termination landing in the store). Bounded: one UPDATE of one row and a commit.
fn keep(store: impl FnOnce() -> Result<(), PgError>) -> Result<(), PgError> {
    deferred(|| {
        store()?;
        xact::commit();
        Ok(())
    })
}

fn set_locked(m: &Mutex<Option<String>>, v: Option<String>) {
    if let Ok(mut g) = m.lock() {
        *g = v;
    }
}

/// The token state of one execution.
pub struct TokenCache<'a> {
    conn_name: String,
    realm: String,
    /// The run whose refresh requests are counted.
    run_id: i64,
    cached: Option<(String, DateTime<Utc>)>,
    endpoint: TokenEndpoint,
    policy: RetryPolicy,
    /// Set while the realm's token lock is held, so the error path can release it.
    locked: &'a Mutex<Option<String>>,
}

impl<'a> TokenCache<'a> {
    pub fn new(
        conn: Connection,
        run_id: i64,
        settings: &Settings,
        locked: &'a Mutex<Option<String>>,
    ) -> Result<Self, PgError> {
        let endpoint = TokenEndpoint::new(
            settings.token_endpoint(),
            Duration::from_millis(settings.connect_timeout_ms),
            Duration::from_millis(settings.token_timeout_ms),
        )?;
        let cached = match (&conn.access_token, conn.access_token_expires_at) {
            (Some(t), Some(exp)) => Some((t.clone(), exp)),
            _ => None,
        };
        Ok(TokenCache {
            conn_name: conn.name,
            realm: conn.realm_id,
            run_id,
            cached,
            endpoint,
            // the run's policy, with at most 3 retries: a token endpoint that keeps failing
            // fails the run sooner than a query would
            policy: settings.retry_policy().at_most(3),
            locked,
        })
    }

    fn valid(t: &Option<(String, DateTime<Utc>)>) -> Option<String> {
        match t {
            Some((tok, exp)) if usable_at(*exp, Utc::now()) => Some(tok.clone()),
            _ => None,
        }
    }

    /// A valid access token, refreshing if needed. Must be called between pages (the current
    /// transaction holds nothing uncommitted): a refresh commits.
    pub fn access_token(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mode: Mode,
    ) -> Result<String, PgError> {
        if let Some(t) = Self::valid(&self.cached) {
            return Ok(t);
        }
        self.refresh(rt, mode)
    }

    /// QBO answered 401 to `token`: forget it (here and in the table) and refresh.
    pub fn reject(&mut self, token: &str) -> Result<(), PgError> {
        // requests in flight may carry an older token than the cached one: keep a newer one
        if self.cached.as_ref().is_some_and(|(t, _)| t == token) {
            self.cached = None;
        }
        connections::forget_access_token(&self.conn_name, token)?;
        xact::commit();
        Ok(())
    }

    fn refresh(&mut self, rt: &tokio::runtime::Runtime, mode: Mode) -> Result<String, PgError> {
        locks::lock_token(&self.realm)?;
        set_locked(self.locked, Some(self.realm.clone()));
        let result = self.refresh_locked(rt, mode);
        let unlocked = locks::unlock_token(&self.realm);
        set_locked(self.locked, None);
        xact::commit();
        let token = result?;
        unlocked?;
        Ok(token)
    }

    fn refresh_locked(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mode: Mode,
    ) -> Result<String, PgError> {
        // Another session may have refreshed while we waited for the lock: use its token.
        let conn = connections::load_connection(&self.conn_name)?.ok_or_else(|| {
            PgError::invalid(format!(
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
            // counted before it is sent: a count is never lost (see crate::run::limiter)
            limiter::count_token(&conn.client_id, &self.realm, self.run_id)?;
            xact::commit();
            // Not interruptible on purpose: see the module doc. Bounded by `qbo.token_timeout_ms`.
            let fut =
                self.endpoint
                    .refresh(&conn.client_id, &conn.client_secret, &conn.refresh_token);
            match rt.block_on(fut) {
                Ok(ts) => {
                    let now = Utc::now();
                    let exp = access_expiry(now, ts.expires_in);
                    let rexp = refresh_expiry(now, ts.x_refresh_token_expires_in);
                    keep(|| {
                        connections::store_tokens(
                            &self.conn_name,
                            &ts.access_token,
                            exp,
                            ts.refresh_token.as_deref(),
                            rexp,
                        )
                    })?;
                    self.cached = Some((ts.access_token.clone(), exp));
                    return Ok(ts.access_token);
                }
                Err(e) => {
                    if let Some(d) = self.policy.decide(retries, &e, &mut rng) {
                        retries += 1;
                        qbo::runtime::sleep_interruptible(rt, d, &mut || check_interrupts(mode));
                        continue;
                    }
                    if let QboError::UnusableTokenResponse {
                        salvaged: Some(s), ..
                    } = &e
                    {
                        self.keep_salvaged(s)?;
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// Stores and commits what a 2xx token response that could not be used still carried: the
    /// rotated refresh token above all (Intuit superseded the old one when it sent it), and the
    /// access token when its lifetime was readable too (a later run may use it). The run then
    /// fails with the response's error.
    fn keep_salvaged(&self, s: &SalvagedTokens) -> Result<(), PgError> {
        let now = Utc::now();
        let rexp = refresh_expiry(now, s.x_refresh_token_expires_in);
        let lifetime = s.expires_in.filter(|d| !d.is_zero());
        match (&s.access_token, lifetime, &s.refresh_token) {
            (Some(access), Some(d), refresh) => keep(|| {
                connections::store_tokens(
                    &self.conn_name,
                    access,
                    access_expiry(now, Some(d)),
                    refresh.as_deref(),
                    rexp,
                )
            }),
            (_, _, Some(refresh)) => {
                keep(|| connections::store_refresh_token(&self.conn_name, refresh, rexp))
            }
            _ => Ok(()),
        }
    }
}
