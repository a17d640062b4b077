//! How long tokens are believed: the lifetimes a token response states, read with the
//! suspicion a hostile or broken token endpoint deserves. Plain functions of a clock reading;
//! the extension's token cache applies them.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A token is used only if it stays valid at least this long.
pub const MARGIN_SECS: i64 = 60;

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
pub fn usable_at(exp: DateTime<Utc>, at: DateTime<Utc>) -> bool {
    exp > at + chrono::Duration::seconds(MARGIN_SECS)
}

/// When the refresh token expires, if known: `None` for an absent or 0 lifetime (the stored
/// date is then kept), capped at ten years (informational only: Intuit's is about 100 days).
pub fn refresh_expiry(now: DateTime<Utc>, lifetime: Option<Duration>) -> Option<DateTime<Utc>> {
    const TEN_YEARS: u64 = 10 * 366 * 24 * 3600;
    let secs = lifetime.map(|d| d.as_secs()).filter(|s| *s > 0)?;
    Some(now + chrono::Duration::seconds(secs.min(TEN_YEARS) as i64))
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
