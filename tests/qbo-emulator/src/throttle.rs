//! Real throttling: per realm, at most `rate_limit` admitted requests in any sliding 60-second
//! window (Intuit's; `--rate-window-ms` shortens it for tests), at most `per_second` in any sliding 1-second window (Intuit's 10 requests per second
//! per realm and app) and at most `max_concurrent` in flight. A [`Slot`] is held until the
//! response body has been fully written (it travels inside the body), so slow readers count as in
//! flight. A refused request is not admitted: it counts in no window.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Intuit's window.
pub const WINDOW: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct RealmState {
    admitted: VecDeque<Instant>,
    in_flight: usize,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sliding minute is full.
    Rate,
    /// The sliding second is full.
    PerSecond,
    Concurrency,
}

/// Per-realm rate and concurrency limits.
#[derive(Debug)]
pub struct Throttle {
    rate_limit: usize,
    window: Duration,
    per_second: usize,
    max_concurrent: usize,
    realms: Mutex<HashMap<String, RealmState>>,
    max_seen: AtomicUsize,
}

/// An admitted request's place; dropping it frees the concurrency slot.
#[derive(Debug)]
pub struct Slot {
    throttle: Arc<Throttle>,
    realm: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut realms = self.throttle.realms.lock().unwrap();
        if let Some(r) = realms.get_mut(&self.realm) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }
}

impl Throttle {
    pub fn new(rate_limit: usize, per_second: usize, max_concurrent: usize) -> Arc<Self> {
        Self::with_window(rate_limit, per_second, max_concurrent, WINDOW)
    }

    /// The same with a sliding window of `window` instead of Intuit's minute.
    pub fn with_window(
        rate_limit: usize,
        per_second: usize,
        max_concurrent: usize,
        window: Duration,
    ) -> Arc<Self> {
        Arc::new(Throttle {
            rate_limit,
            window,
            per_second,
            max_concurrent,
            realms: Mutex::new(HashMap::new()),
            max_seen: AtomicUsize::new(0),
        })
    }

    /// Admits a request for `realm` now, or says why not.
    pub fn acquire(self: &Arc<Self>, realm: &str) -> Result<Slot, Refusal> {
        self.acquire_at(realm, Instant::now())
    }

    pub fn acquire_at(self: &Arc<Self>, realm: &str, now: Instant) -> Result<Slot, Refusal> {
        let mut realms = self.realms.lock().unwrap();
        let r = realms.entry(realm.to_string()).or_default();
        while r
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            r.admitted.pop_front();
        }
        if r.in_flight >= self.max_concurrent {
            return Err(Refusal::Concurrency);
        }
        if r.admitted.len() >= self.rate_limit {
            return Err(Refusal::Rate);
        }
        // admissions are in time order: count the last second's from the newest back
        let last_second = r
            .admitted
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < SECOND)
            .count();
        if last_second >= self.per_second {
            return Err(Refusal::PerSecond);
        }
        r.admitted.push_back(now);
        r.in_flight += 1;
        self.max_seen.fetch_max(r.in_flight, Ordering::Relaxed);
        Ok(Slot {
            throttle: Arc::clone(self),
            realm: realm.to_string(),
        })
    }

    /// Highest number of concurrent in-flight requests seen on one realm.
    pub fn max_concurrent_seen(&self) -> usize {
        self.max_seen.load(Ordering::Relaxed)
    }

    /// Current in-flight requests per realm.
    pub fn in_flight(&self) -> HashMap<String, usize> {
        let realms = self.realms.lock().unwrap();
        realms
            .iter()
            .map(|(k, v)| (k.clone(), v.in_flight))
            .collect()
    }

    /// Fills `realm`'s window as another app would have: `rate_limit` admissions at `now` in all
    /// (in no second's window, on no slot), so every request is refused for a whole window.
    /// Returns how many were added.
    pub fn fill_at(&self, realm: &str, now: Instant) -> usize {
        let mut realms = self.realms.lock().unwrap();
        let r = realms.entry(realm.to_string()).or_default();
        r.admitted.retain(|t| now.duration_since(*t) < self.window);
        let add = self.rate_limit.saturating_sub(r.admitted.len());
        // stamped a second back: they count in the window but not in the current second
        let at = now.checked_sub(SECOND).unwrap_or(now);
        for _ in 0..add {
            r.admitted.push_back(at);
        }
        let mut v: Vec<Instant> = r.admitted.drain(..).collect();
        v.sort();
        r.admitted = v.into();
        add
    }

    /// Forgets the rate windows (in-flight requests keep their slots).
    pub fn reset(&self) {
        let mut realms = self.realms.lock().unwrap();
        for r in realms.values_mut() {
            r.admitted.clear();
        }
        self.max_seen.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let t = Throttle::new(3, 100, 100);
        let t0 = Instant::now();
        let mut slots = Vec::new();
        for i in 0..3 {
            slots.push(t.acquire_at("r", t0 + Duration::from_secs(i)).unwrap());
        }
        assert_eq!(
            t.acquire_at("r", t0 + Duration::from_secs(10)).unwrap_err(),
            Refusal::Rate
        );
        // Other realms are independent.
        assert!(t.acquire_at("other", t0).is_ok());
        // The first admission leaves the window after 60 s.
        assert!(t.acquire_at("r", t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(
            t.acquire_at("r", t0 + Duration::from_secs(60)).unwrap_err(),
            Refusal::Rate
        );
    }

    #[test]
    fn a_filled_window_refuses_everything_for_a_whole_window() {
        let t = Throttle::with_window(5, 10, 10, Duration::from_secs(4));
        let t0 = Instant::now() + Duration::from_secs(2);
        let _a = t.acquire_at("r", t0).unwrap();
        assert_eq!(t.fill_at("r", t0), 4);
        assert_eq!(t.acquire_at("r", t0).unwrap_err(), Refusal::Rate);
        assert!(t.acquire_at("other", t0).is_ok());
        // the filler was stamped a second back: it leaves the window 3 s later
        assert_eq!(
            t.acquire_at("r", t0 + Duration::from_millis(2999))
                .unwrap_err(),
            Refusal::Rate
        );
        assert!(t.acquire_at("r", t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn concurrency_slots_free_on_drop() {
        let t = Throttle::new(100, 100, 2);
        let a = t.acquire("r").unwrap();
        let _b = t.acquire("r").unwrap();
        assert_eq!(t.acquire("r").unwrap_err(), Refusal::Concurrency);
        drop(a);
        assert!(t.acquire("r").is_ok());
        assert_eq!(t.max_concurrent_seen(), 2);
    }

    #[test]
    fn sliding_second() {
        let t = Throttle::new(500, 3, 100);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut slots = Vec::new();
        for at in [0, 300, 600] {
            slots.push(t.acquire_at("r", ms(at)).unwrap());
        }
        // a fourth inside the second of the first is refused, and counts in no window
        assert_eq!(t.acquire_at("r", ms(999)).unwrap_err(), Refusal::PerSecond);
        // another realm has its own second
        assert!(t.acquire_at("other", ms(999)).is_ok());
        // one second after the first it has left the window: one more fits, then none
        assert!(t.acquire_at("r", ms(1000)).is_ok());
        assert_eq!(t.acquire_at("r", ms(1000)).unwrap_err(), Refusal::PerSecond);
        assert_eq!(t.acquire_at("r", ms(1299)).unwrap_err(), Refusal::PerSecond);
        assert!(t.acquire_at("r", ms(1300)).is_ok());
    }

    #[test]
    fn the_minute_still_binds_when_every_second_is_within_its_limit() {
        let t = Throttle::new(4, 2, 100);
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut slots = Vec::new();
        for at in [0, 0, 1, 1] {
            slots.push(t.acquire_at("r", s(at)).unwrap());
        }
        // a fresh second, but the minute holds 4 already
        assert_eq!(t.acquire_at("r", s(2)).unwrap_err(), Refusal::Rate);
        assert!(t.acquire_at("r", s(60)).is_ok());
    }
}
