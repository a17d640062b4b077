//! Access tokens for one run: cached in memory, shared through `qbo._connections`, refreshed under
//! a per-realm session advisory lock so two backfills of one realm never refresh at the same time
//! (the second waits and then uses the token the first stored), and every token Intuit returns is
//! stored and COMMITTED before it is used: a rotated refresh token is never lost.
//!
//! A refresh in flight is not abandoned by a cancel: it runs without interrupt checks under its own
//! short timeout (`qbo.token_timeout_ms`), and the cancel is honoured right after it.
//!
//! A 2xx token response that cannot be used ([`QboError::UnusableTokenResponse`]) may still carry
//! a rotated refresh token: it is stored and committed before the error is raised, or the company
//! would have to be re-authorized (see [`TokenCache::keep_salvaged`]).

use crate::error::QboError;
use crate::executor::{check_interrupts, Mode};
use crate::guc::Settings;
use crate::oauth::SalvagedTokens;
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

/// Lifetime believed when the token endpoint gives none we can use (`expires_in` absent, 0, or
/// unreadable): Intuit's documented access-token lifetime.
pub const ASSUMED_LIFETIME_SECS: i64 = 3600;

/// Shortest lifetime believed: a token must stay usable MARGIN_SECS after the margin, or every
/// request would refresh first.
pub const MIN_LIFETIME_SECS: i64 = 2 * MARGIN_SECS;

/// Longest lifetime believed (a day; Intuit's is an hour). Also keeps the date arithmetic sane.
pub const MAX_LIFETIME_SECS: i64 = 24 * 3600;

/// When to stop using an access token that `expires_in` said lasts that long, from `now`.
///
/// Policy: an expiry that is unknown (`None`, e.g. absent, negative or unreadable in the
/// response) or 0 is taken as Intuit's documented hour ([`ASSUMED_LIFETIME_SECS`]); any other is
/// clamped to [`MIN_LIFETIME_SECS`]..=[`MAX_LIFETIME_SECS`]. A wrong guess costs at most one 401:
/// the executor forgets a token QBO rejects and refreshes, so the token is in effect used until
/// QBO refuses it, and a nonsensical `expires_in` can never make every request refresh first
/// (with `expires_in: 0` taken literally, a token would be expired on arrival).
pub fn access_expiry(now: DateTime<Utc>, expires_in: Option<Duration>) -> DateTime<Utc> {
    let secs = match expires_in.map(|d| d.as_secs()) {
        None | Some(0) => ASSUMED_LIFETIME_SECS,
        Some(s) => i64::try_from(s)
            .unwrap_or(i64::MAX)
            .clamp(MIN_LIFETIME_SECS, MAX_LIFETIME_SECS),
    };
    now + chrono::Duration::seconds(secs)
}

/// Whether a token expiring at `exp` is still used at `at` (it must outlive the margin).
fn usable_at(exp: DateTime<Utc>, at: DateTime<Utc>) -> bool {
    exp > at + chrono::Duration::seconds(MARGIN_SECS)
}

/// When the refresh token expires, if known: `None` for an absent or 0 lifetime (the stored
/// date is then kept), capped at ten years (informational only: Intuit's is about 100 days).
pub fn refresh_expiry(now: DateTime<Utc>, lifetime: Option<Duration>) -> Option<DateTime<Utc>> {
    const TEN_YEARS: u64 = 10 * 366 * 24 * 3600;
    let secs = lifetime.map(|d| d.as_secs()).filter(|s| *s > 0)?;
    Some(now + chrono::Duration::seconds(secs.min(TEN_YEARS) as i64))
}

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
                    let exp = access_expiry(now, ts.expires_in);
                    let rexp = refresh_expiry(now, ts.x_refresh_token_expires_in);
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
                Err(e) => {
                    if let QboError::UnusableTokenResponse {
                        salvaged: Some(s), ..
                    } = &e
                    {
                        self.keep_salvaged(s)?;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Stores and commits what a 2xx token response that could not be used still carried: the
    /// rotated refresh token above all (Intuit superseded the old one when it sent it), and the
    /// access token when its lifetime was readable too (a later run may use it). The run then
    /// fails with the response's error.
    fn keep_salvaged(&self, s: &SalvagedTokens) -> Result<(), QboError> {
        let now = Utc::now();
        let rexp = refresh_expiry(now, s.x_refresh_token_expires_in);
        let lifetime = s.expires_in.filter(|d| !d.is_zero());
        match (&s.access_token, lifetime, &s.refresh_token) {
            (Some(access), Some(d), refresh) => store::store_tokens(
                &self.conn_name,
                access,
                access_expiry(now, Some(d)),
                refresh.as_deref(),
                rexp,
            )
            .map_err(db)?,
            (_, _, Some(refresh)) => {
                store::store_refresh_token(&self.conn_name, refresh, rexp).map_err(db)?
            }
            _ => return Ok(()),
        }
        store::commit();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).single().unwrap()
    }

    fn lifetime(expires_in: Option<u64>) -> i64 {
        (access_expiry(now(), expires_in.map(Duration::from_secs)) - now()).num_seconds()
    }

    /// Whether a token stored now with that `expires_in` is still used `after` seconds later.
    fn used_after(expires_in: Option<u64>, after: i64) -> bool {
        let exp = access_expiry(now(), expires_in.map(Duration::from_secs));
        usable_at(exp, now() + chrono::Duration::seconds(after))
    }

    #[test]
    fn expiry_policy() {
        // Intuit's normal answer is believed.
        assert_eq!(lifetime(Some(3600)), 3600);
        assert_eq!(lifetime(Some(1800)), 1800);
        // Unknown (absent, negative or unreadable: None) and 0 mean "an hour, until a 401".
        assert_eq!(lifetime(None), ASSUMED_LIFETIME_SECS);
        assert_eq!(lifetime(Some(0)), ASSUMED_LIFETIME_SECS);
        // Too short to be used past the margin: stretched (a 401 corrects it).
        assert_eq!(lifetime(Some(1)), MIN_LIFETIME_SECS);
        assert_eq!(lifetime(Some(60)), MIN_LIFETIME_SECS);
        // Absurdly long: capped, and no overflow.
        assert_eq!(lifetime(Some(u64::MAX)), MAX_LIFETIME_SECS);
        assert_eq!(lifetime(Some(10u64.pow(15))), MAX_LIFETIME_SECS);
        // Never refreshing before every request: whatever expires_in says, a fresh token is
        // still used a minute later.
        for e in [
            None,
            Some(0),
            Some(1),
            Some(59),
            Some(60),
            Some(61),
            Some(3600),
        ] {
            assert!(used_after(e, 0) && used_after(e, 59), "{e:?}");
        }
        assert!(!used_after(Some(3600), 3600 - MARGIN_SECS));
    }

    #[test]
    fn refresh_expiry_policy() {
        let d = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(refresh_expiry(now(), None), None);
        assert_eq!(refresh_expiry(now(), d(0)), None);
        assert_eq!(
            refresh_expiry(now(), d(8_726_400)),
            Some(now() + chrono::Duration::seconds(8_726_400))
        );
        // No overflow on a hostile value.
        assert!(refresh_expiry(now(), d(u64::MAX)).unwrap() < now() + chrono::Duration::days(3700));
    }
}
