//! Retry policy: exponential backoff with full jitter, honouring a capped `Retry-After`.
//!
//! `attempt` counts retries from 0: the wait before the first retry is `backoff(0, ..)`.
//!
//! Choice when the server sends `Retry-After`: the wait is
//! `max(min(retry_after, retry_after_cap), jitter)` where `jitter` is the usual full-jitter draw.
//! The server's hint is a floor (retrying earlier is pointless and burns the realm's quota), the
//! jitter above it still spreads concurrent backfills apart once the hint is small, and the cap
//! bounds what a misbehaving server can make us sleep.
//!
//! Throttling (HTTP 429, or the legacy 403 `ThrottleExceeded`) has its own budget, a time bound
//! ([`RetryPolicy::throttle_wait`], default 70 s: Intuit asks to wait 60 s after a 429, plus a
//! margin) instead of `max_retries`: the realm's minute may be full of somebody else's requests
//! and only time empties it. Its waits grow towards [`THROTTLE_CAP`] with "equal jitter" (uniform
//! in the upper half of the ceiling, so they really grow and a run does not probe a full window
//! every few hundred milliseconds), and honour `Retry-After` the same way. With `throttle_wait`
//! zero, throttling counts against `max_retries` like any retryable error (the 0.3.0 policy).

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::error::QboError;

/// The ceiling of the first wait after a throttled answer (it doubles with each wait).
pub const THROTTLE_BASE: Duration = Duration::from_secs(1);
/// The largest ceiling of a wait after a throttled answer.
pub const THROTTLE_CAP: Duration = Duration::from_secs(15);

/// How often and how long to wait between attempts of a retryable request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 6).
    pub max_retries: u32,
    /// Backoff base: the ceiling of the first wait (default 500 ms).
    pub base: Duration,
    /// Largest jittered wait (default 60 s).
    pub cap: Duration,
    /// Largest `Retry-After` honoured (default 120 s).
    pub retry_after_cap: Duration,
    /// How long throttling is ridden out, from the first throttled answer (default 70 s); zero:
    /// throttling counts against `max_retries` like other retryable errors.
    pub throttle_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(120),
            throttle_wait: Duration::from_secs(70),
        }
    }
}

impl RetryPolicy {
    /// The jitter ceiling for retry number `attempt` (0-based): `min(cap, base * 2^attempt)`,
    /// without overflow for any `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let exp = if attempt >= 32 {
            None
        } else {
            self.base.checked_mul(factor)
        };
        match exp {
            Some(d) => d.min(self.cap),
            None => self.cap,
        }
    }

    /// The wait before retry number `attempt` (0-based): uniform in `[0, ceiling(attempt)]`
    /// (full jitter); with a `Retry-After`, at least that delay capped at `retry_after_cap`.
    pub fn backoff(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = self.ceiling(attempt);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling_nanos));
        match retry_after {
            Some(ra) => ra.min(self.retry_after_cap).max(jittered),
            None => jittered,
        }
    }

    /// Whether `err` is throttling retried on the time budget ([`RetryPolicy::throttle_wait`]).
    pub fn rides_out(&self, err: &QboError) -> bool {
        !self.throttle_wait.is_zero() && matches!(err, QboError::Throttled { .. })
    }

    /// The wait after throttled answer number `wait` (0-based) of an episode: uniform in
    /// `[c/2, c]` with `c = min(THROTTLE_CAP, THROTTLE_BASE * 2^wait)`; with a `Retry-After`, at
    /// least that delay capped at `retry_after_cap`.
    pub fn throttle_backoff(
        &self,
        wait: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = RetryPolicy {
            base: THROTTLE_BASE,
            cap: THROTTLE_CAP,
            ..*self
        }
        .ceiling(wait);
        let c = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(c / 2..=c));
        match retry_after {
            Some(ra) => ra.min(self.retry_after_cap).max(jittered),
            None => jittered,
        }
    }

    /// True when another retry is allowed after `retries_done` retries.
    pub fn may_retry(&self, retries_done: u32) -> bool {
        retries_done < self.max_retries
    }

    /// The one retry rule: after `retries_done` retries, an attempt that failed with `err` is
    /// tried again after the returned wait when the error is worth retrying
    /// ([`QboError::is_retryable`]) and retries are left; `None`: it is final.
    pub fn decide(
        &self,
        retries_done: u32,
        err: &QboError,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        (err.is_retryable() && self.may_retry(retries_done))
            .then(|| self.backoff(retries_done, err.retry_after(), rng))
    }

    /// The same policy with at most `n` retries.
    pub fn at_most(self, n: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries.min(n),
            ..self
        }
    }
}

/// Parses a `Retry-After` header value: delta-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, also the obsolete RFC 850 and asctime forms). A date in the
/// past gives zero. Anything else (negative, fractional, garbage) gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64: treat as "very long", the cap applies later.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 6);
        assert_eq!(p.base, Duration::from_millis(500));
        assert_eq!(p.cap, Duration::from_secs(60));
        assert_eq!(p.retry_after_cap, Duration::from_secs(120));
        assert_eq!(p.throttle_wait, Duration::from_secs(70));
        assert!(p.may_retry(5));
        assert!(!p.may_retry(6));
    }

    #[test]
    fn ceilings_double_then_cap() {
        let p = RetryPolicy::default();
        let got: Vec<u128> = (0..10).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(
            got,
            vec![500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert_eq!(p.ceiling(31), Duration::from_secs(60));
        assert_eq!(p.ceiling(32), Duration::from_secs(60));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(60));
        let huge = RetryPolicy {
            base: Duration::from_secs(u64::MAX / 2),
            cap: Duration::MAX,
            ..p
        };
        assert_eq!(huge.ceiling(5), Duration::MAX);
    }

    #[test]
    fn full_jitter_is_bounded_spread_and_seeded() {
        let p = RetryPolicy::default();
        let mut a = StdRng::seed_from_u64(42);
        let mut b = StdRng::seed_from_u64(42);
        for attempt in 0..12 {
            let mut sum = 0f64;
            let mut min = Duration::MAX;
            let mut max = Duration::ZERO;
            for _ in 0..2000 {
                let d = p.backoff(attempt, None, &mut a);
                assert_eq!(d, p.backoff(attempt, None, &mut b), "same seed, same draws");
                assert!(d <= p.ceiling(attempt));
                sum += d.as_secs_f64();
                min = min.min(d);
                max = max.max(d);
            }
            let c = p.ceiling(attempt).as_secs_f64();
            let mean = sum / 2000.0;
            assert!(
                (mean - c / 2.0).abs() < c * 0.05,
                "attempt {attempt}: mean {mean} vs ceiling {c}"
            );
            assert!(min.as_secs_f64() < c * 0.01 && max.as_secs_f64() > c * 0.99);
        }
    }

    #[test]
    fn retry_after_is_a_capped_floor() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            // Ceiling 500 ms < 10 s: always exactly the hint.
            assert_eq!(
                p.backoff(0, Some(Duration::from_secs(10)), &mut rng),
                Duration::from_secs(10)
            );
            // Hint above the cap: exactly the cap.
            assert_eq!(
                p.backoff(0, Some(Duration::from_secs(3600)), &mut rng),
                Duration::from_secs(120)
            );
            // Small hint, large ceiling: at least the hint, at most the ceiling.
            let d = p.backoff(8, Some(Duration::from_secs(1)), &mut rng);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(60));
            // Zero hint (a past date): plain jitter.
            assert!(p.backoff(1, Some(Duration::ZERO), &mut rng) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn throttle_waits_grow_in_the_upper_half_towards_the_cap() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..500 {
            for (wait, c) in [
                (0u64, 1000u64),
                (1, 2000),
                (2, 4000),
                (3, 8000),
                (4, 15000),
                (9, 15000),
            ] {
                let d = p.throttle_backoff(wait as u32, None, &mut rng).as_millis() as u64;
                assert!(d >= c / 2 && d <= c, "wait {wait}: {d} ms");
            }
            // Retry-After is a floor, capped
            assert_eq!(
                p.throttle_backoff(0, Some(Duration::from_secs(30)), &mut rng),
                Duration::from_secs(30)
            );
            assert_eq!(
                p.throttle_backoff(0, Some(Duration::from_secs(3600)), &mut rng),
                Duration::from_secs(120)
            );
        }
        // a full minute of throttling costs about a dozen probes at most: the lower bounds of the
        // waits add up past 60 s by the eleventh
        let lower: Vec<u64> = (0..11).map(|w| (1000u64 << w).min(15_000) / 2).collect();
        assert!(lower.iter().sum::<u64>() >= 60_000, "{lower:?}");
    }

    #[test]
    fn only_throttling_rides_out_and_only_with_a_bound() {
        let t = QboError::Throttled {
            status: 429,
            retry_after: None,
            fault: None,
            intuit_tid: None,
        };
        let n = QboError::Network("connection reset".into());
        let p = RetryPolicy::default();
        assert!(p.rides_out(&t));
        assert!(!p.rides_out(&n));
        let old = RetryPolicy {
            throttle_wait: Duration::ZERO,
            ..p
        };
        assert!(!old.rides_out(&t));
    }

    #[test]
    fn zero_base_means_no_wait() {
        let p = RetryPolicy {
            base: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(p.backoff(3, None, &mut rng), Duration::ZERO);
    }

    #[test]
    fn parses_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
