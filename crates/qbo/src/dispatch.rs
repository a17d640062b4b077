//! The decisions of a run loop, without I/O: which requests may be sent now, what happens to one
//! that failed (a fresh token after a 401, a backoff after a 429, a 5xx, a timeout or a reset, or
//! the end of the run), and how long the loop may wait. The extension's executor is the driver:
//! it asks for room, pairs requests with the limiter's admissions, hands them to the network
//! thread with a token, and reports each answer back here; everything it decides with the
//! answers is here, and tested by driving sequences of outcomes (as `Pager` and `ChunkSlices`
//! are), with no runtime, socket or database.
//!
//! Rules:
//! - **Back-pressure**: at most `max_in_flight` requests in flight (a request whose response has
//!   been read completely is no longer in flight: [`Dispatcher::read`]), and requests sent and not
//!   yet answered (in flight, or read and being parsed) plus pages waiting to be written at most
//!   `max_in_flight + slack` ([`slack`]: 0 for the sequential pager, which sends nothing while a
//!   page waits; `max_in_flight` when requests run concurrently, so a round of pages coming back
//!   together is parsed and written while the next round is in flight, and a window may hold
//!   pages that far ahead of the one it waits for and still have a slot to send that one again).
//!   The rest follows the answers' pace: while they take [`READ_AHEAD_AFTER`] or more, the network
//!   thread may hold a round of responses read and not yet parsed (reading them frees their
//!   slots at QBO: [`Dispatcher::read_ahead`]) and the writer's backlog may take the whole slack;
//!   while they come back at once, 2 responses and 2 pages of backlog (the writer is then the
//!   limit, and more would only pile pages up in memory; the other responses wait in their
//!   sockets). See [`Dispatcher::room_holding`].
//! - **401**: the request is sent again at once, with a fresh token; the token it carried is to be
//!   forgotten ([`Retry::Reauthorize`]`{ reject: Some(token) }`) the first time a 401 names it only
//!   (requests in flight with the same token meet the same fate through no fault of their own, and
//!   count nothing). Past [`MAX_UNAUTHORIZED`] 401s to fresh tokens for one request, the run fails:
//!   the API keeps refusing what the token endpoint hands out.
//! - **Throttling** (HTTP 429, or the legacy 403 `ThrottleExceeded`), with
//!   [`RetryPolicy::throttle_wait`] set: ridden out for that long from the first throttled answer
//!   of an episode, whatever `max_retries` says (the realm's minute may be full of another app's
//!   requests, and only time empties it); then the run fails with
//!   [`QboError::ThrottledTooLong`]. While throttled the run holds back: nothing is sent until the
//!   wait ([`RetryPolicy::throttle_backoff`]) has passed, then one request alone probes the realm
//!   and the others follow once one answer came back unthrottled. Requests that were already in
//!   flight when the wait was set come back throttled too: they wait for the same end, without
//!   lengthening it. So a storm of throttled answers costs one request per wait.
//! - **Retryable errors** (5xx, network errors, unusable answers, and throttling when
//!   `throttle_wait` is zero: see [`QboError::is_retryable`]): sent again after the
//!   [`RetryPolicy`]'s backoff, at most `max_retries` times; then the run fails with
//!   [`QboError::RetriesExhausted`].
//! - **Anything else** fails the run at once.
//! - **The limiter**: requests it did not admit go back to the front of the queue, and nothing is
//!   sent before the wait it asked for has passed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::error::QboError;
use crate::retry::RetryPolicy;

/// 401 answers (to a token not yet known bad) tolerated for one request before the run fails.
pub const MAX_UNAUTHORIZED: u32 = 12;

/// A request to send (new, or again after a failure), with what the caller needs to make and
/// place it (`item`).
#[derive(Debug)]
pub struct Request<T> {
    pub item: T,
    /// Retries after failures so far.
    pub retries: u32,
    /// 401 answers to fresh tokens so far.
    pub unauthorized: u32,
    /// Not before this instant (a backoff).
    due: Option<Instant>,
}

impl<T> Request<T> {
    pub fn new(item: T) -> Self {
        Request {
            item,
            retries: 0,
            unauthorized: 0,
            due: None,
        }
    }
}

/// Answers (from a request's sending to its status and headers) taking this long or more make a
/// run read a round ahead (see the module documentation): a round of ten pages is parsed and
/// written in about half a second on the development machine, but only a fraction of that is
/// needed before the first pages of the next round are taken.
pub const READ_AHEAD_AFTER: Duration = Duration::from_millis(250);

/// The writer's backlog beyond the requests in flight while answers come back at once.
const SLACK_AT_ONCE: usize = 2;

/// The most pages that may be read, parsed or waiting to be written beyond the requests in flight
/// (see the module documentation): what [`crate::budget::MemoryBudget`] counts.
pub fn slack(max_in_flight: u32, concurrent: bool) -> u32 {
    if concurrent {
        max_in_flight.max(1)
    } else {
        0
    }
}

/// A request on its way.
#[derive(Debug)]
pub struct Flight<T> {
    pub request: Request<T>,
    /// The access token it carries.
    pub token: String,
    /// The limiter's admission (its in-flight slot is freed when the answer has been read).
    pub admission: i64,
    pub sent: Instant,
    /// Its response has been read completely ([`Dispatcher::read`]): the admission's slot is
    /// free already, and the answer is being parsed.
    pub read: bool,
}

/// What becomes of a failed request that is sent again (it is back in the queue).
#[derive(Debug)]
pub enum Retry {
    /// At once, with a fresh token; `reject`: the token to forget everywhere (its first 401).
    Reauthorize { reject: Option<String> },
    /// After `delay`: retry number `retry` of at most `max`, after `error`. When `throttle` is
    /// set the request was throttled: `retry` numbers the waits of the throttling episode, `max`
    /// is 0, and the episode may last `throttle` from its first throttled answer.
    Backoff {
        delay: Duration,
        retry: u32,
        max: u32,
        error: QboError,
        throttle: Option<Duration>,
    },
}

/// A throttling episode: from a first throttled answer to the next unthrottled one.
#[derive(Debug, Clone, Copy)]
struct Throttling {
    /// The first throttled answer.
    since: Instant,
    /// When the current wait was set (requests sent before it are part of the storm it answered).
    set_at: Instant,
    /// Nothing is sent before this; then one probe at a time.
    until: Instant,
    /// Waits so far.
    waits: u32,
}

/// The state of one run loop's requests.
#[derive(Debug)]
pub struct Dispatcher<T> {
    policy: RetryPolicy,
    max_in_flight: usize,
    slack: usize,
    /// Requests to send again (retries first in line, then requests the limiter did not admit).
    queue: VecDeque<Request<T>>,
    flights: HashMap<u64, Flight<T>>,
    /// Tokens a 401 has named.
    rejected: HashSet<String>,
    next_id: u64,
    /// Nothing is sent before this instant (the limiter's wait).
    limiter_wait: Option<Instant>,
    /// The realm throttles this run's requests.
    throttling: Option<Throttling>,
    /// How long the last answer read took to come (see [`Dispatcher::read`]).
    latency: Option<Duration>,
}

impl<T> Dispatcher<T> {
    /// `concurrent`: requests run side by side (pages may wait for the writer); otherwise the
    /// sequential pager, one page at a time.
    pub fn new(policy: RetryPolicy, max_in_flight: u32, concurrent: bool) -> Self {
        Dispatcher {
            policy,
            max_in_flight: max_in_flight.max(1) as usize,
            slack: slack(max_in_flight, concurrent) as usize,
            queue: VecDeque::new(),
            flights: HashMap::new(),
            rejected: HashSet::new(),
            next_id: 0,
            limiter_wait: None,
            throttling: None,
            latency: None,
        }
    }

    /// Whether answers take long enough to read a round ahead (see the module documentation).
    pub fn reading_ahead(&self) -> bool {
        self.latency.is_some_and(|l| l >= READ_AHEAD_AFTER)
    }

    /// How many responses the network thread may hold read and not yet parsed: a round while
    /// reading ahead, else [`crate::net::DEFAULT_READ_AHEAD`].
    pub fn read_ahead(&self) -> usize {
        if self.reading_ahead() {
            self.max_in_flight
        } else {
            crate::net::DEFAULT_READ_AHEAD
        }
    }

    /// How many requests may be sent now, with `waiting` pages fetched and not yet written.
    pub fn room(&self, waiting: usize, now: Instant) -> usize {
        self.room_holding(waiting, 0, now)
    }

    /// How many requests may be sent now, with `waiting` pages taken and not yet written (the
    /// writer's backlog) and `held` pages answered and held until a page before them is taken.
    /// The backlog is kept within `max_in_flight + 2` pages with the requests while answers come
    /// back at once (more would only pile up in memory: the writer is the limit), within
    /// `max_in_flight + slack` while they take long; held pages count only against that last
    /// bound, so that pages held while answers were slow never take the slot that the page they
    /// wait for needs (see the module documentation).
    pub fn room_holding(&self, waiting: usize, held: usize, now: Instant) -> usize {
        if self.limiter_wait.is_some_and(|t| t > now) {
            return 0;
        }
        let flying = self.flights.len();
        let on_the_wire = self.flights.values().filter(|f| !f.read).count();
        let paced = if self.reading_ahead() {
            self.slack
        } else {
            self.slack.min(SLACK_AT_ONCE)
        };
        let room = self
            .max_in_flight
            .saturating_sub(on_the_wire)
            .min((self.max_in_flight + paced).saturating_sub(flying + waiting))
            .min((self.max_in_flight + self.slack).saturating_sub(flying + waiting + held));
        match self.throttling {
            // throttled: nothing before the wait ends, then one probe alone
            Some(t) if t.until > now => 0,
            Some(_) => room.min(1usize.saturating_sub(flying)),
            None => room,
        }
    }

    /// A request sent at `sent` was answered without throttling: an episode of throttling it
    /// probed is over, and requests flow again. (An answer to a request sent before the
    /// episode's current wait says nothing about the realm now.)
    pub fn delivered(&mut self, sent: Instant) {
        if self.throttling.is_some_and(|t| sent >= t.set_at) {
            self.throttling = None;
        }
    }

    /// Whether the run is holding back after throttled answers.
    pub fn is_throttled(&self) -> bool {
        self.throttling.is_some()
    }

    /// Up to `n` queued requests that are due at `now`, in queue order.
    pub fn take_due(&mut self, now: Instant, n: usize) -> Vec<Request<T>> {
        let mut out = Vec::new();
        let mut k = 0;
        while k < self.queue.len() && out.len() < n {
            if self.queue[k].due.is_none_or(|d| d <= now) {
                out.extend(self.queue.remove(k));
            } else {
                k += 1;
            }
        }
        out
    }

    /// The limiter admitted `admissions` (one each, in order) for `requests`, and asked to wait
    /// `wait` when it admitted none. Returns what to send: a job id, the request and its
    /// admission; the rest goes back to the front of the queue, in order.
    pub fn admit(
        &mut self,
        requests: Vec<Request<T>>,
        admissions: Vec<i64>,
        wait: Duration,
        now: Instant,
    ) -> Vec<(u64, Request<T>, i64)> {
        self.limiter_wait = (admissions.is_empty() && !requests.is_empty())
            .then(|| now + wait.max(Duration::from_millis(1)));
        let mut ids = admissions.into_iter();
        let mut send = Vec::new();
        let mut back = Vec::new();
        for r in requests {
            match ids.next() {
                Some(admission) => {
                    self.next_id += 1;
                    send.push((self.next_id, r, admission));
                }
                None => back.push(r),
            }
        }
        for r in back.into_iter().rev() {
            self.queue.push_front(r);
        }
        send
    }

    /// Request `id` left with `token`.
    pub fn sent(
        &mut self,
        id: u64,
        request: Request<T>,
        token: String,
        admission: i64,
        now: Instant,
    ) {
        self.flights.insert(
            id,
            Flight {
                request,
                token,
                admission,
                sent: now,
                read: false,
            },
        );
    }

    /// The response of request `id` has been read completely, its status and headers `latency`
    /// after it was sent: it is no longer in flight at QuickBooks. Returns its admission, whose
    /// slot is to be freed (`None`: not one of ours, or reported before).
    pub fn read(&mut self, id: u64, latency: Duration) -> Option<i64> {
        let f = self.flights.get_mut(&id).filter(|f| !f.read)?;
        f.read = true;
        self.latency = Some(latency);
        Some(f.admission)
    }

    /// The flight whose answer arrived (`None`: not one of ours). Unless it was
    /// [`Dispatcher::read`] before, its admission's slot is to be freed now.
    pub fn answered(&mut self, id: u64) -> Option<Flight<T>> {
        self.flights.remove(&id)
    }

    /// What to do with a request that failed with `err`. `Ok`: it is queued again (see [`Retry`]);
    /// `Err`: the run fails with that error (the request is handed back for its context).
    pub fn failed(
        &mut self,
        flight: Flight<T>,
        err: QboError,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Retry, (Request<T>, QboError)> {
        let mut r = flight.request;
        match err {
            QboError::Unauthorized { .. } if r.unauthorized < MAX_UNAUTHORIZED => {
                // only the first 401 of a token counts
                let reject = if self.rejected.insert(flight.token.clone()) {
                    r.unauthorized += 1;
                    Some(flight.token)
                } else {
                    None
                };
                r.due = None;
                self.queue.push_front(r);
                Ok(Retry::Reauthorize { reject })
            }
            e if self.policy.rides_out(&e) => {
                let bound = self.policy.throttle_wait;
                if let Some(t) = self.throttling.filter(|t| flight.sent < t.set_at) {
                    // in flight when the current wait was set: it waits for the same end
                    r.due = Some(t.until);
                    self.queue.push_back(r);
                    return Ok(Retry::Backoff {
                        delay: t.until.saturating_duration_since(now),
                        retry: t.waits,
                        max: 0,
                        error: e,
                        throttle: Some(bound),
                    });
                }
                let since = self.throttling.map_or(now, |t| t.since);
                let waited = now.saturating_duration_since(since);
                if waited >= bound {
                    return Err((
                        r,
                        QboError::ThrottledTooLong {
                            waited,
                            bound,
                            last: Box::new(e),
                        },
                    ));
                }
                let waits = self.throttling.map_or(0, |t| t.waits);
                // the last wait ends at the bound: one more probe then
                let delay = self
                    .policy
                    .throttle_backoff(waits, e.retry_after(), rng)
                    .min(bound - waited);
                self.throttling = Some(Throttling {
                    since,
                    set_at: now,
                    until: now + delay,
                    waits: waits + 1,
                });
                r.due = Some(now + delay);
                self.queue.push_front(r);
                Ok(Retry::Backoff {
                    delay,
                    retry: waits + 1,
                    max: 0,
                    error: e,
                    throttle: Some(bound),
                })
            }
            e => match self.policy.decide(r.retries, &e, rng) {
                Some(delay) => {
                    r.retries += 1;
                    r.due = Some(now + delay);
                    let retry = r.retries;
                    self.queue.push_back(r);
                    Ok(Retry::Backoff {
                        delay,
                        retry,
                        max: self.policy.max_retries,
                        error: e,
                        throttle: None,
                    })
                }
                None if e.is_retryable() => {
                    let attempts = r.retries + 1;
                    Err((
                        r,
                        QboError::RetriesExhausted {
                            attempts,
                            last: Box::new(e),
                        },
                    ))
                }
                None => Err((r, e)),
            },
        }
    }

    /// How long the loop may wait for an answer at `now` before something else is due (a
    /// backoff ending, the limiter's wait), at most `poll` (the cancel check's period).
    pub fn timeout(&self, now: Instant, poll: Duration) -> Duration {
        let mut t = poll;
        if let Some(w) = self.limiter_wait {
            t = t.min(w.saturating_duration_since(now));
        }
        match self.throttling {
            Some(th) if th.until > now => t = t.min(th.until - now),
            // probing: the requests due wait for the probe's answer, which wakes the loop
            Some(_) if !self.flights.is_empty() => return t,
            _ => {}
        }
        if let Some(d) = self.queue.iter().filter_map(|r| r.due).min() {
            t = t.min(d.saturating_duration_since(now));
        }
        t
    }

    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Nothing in flight and nothing queued.
    pub fn is_idle(&self) -> bool {
        self.flights.is_empty() && self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            retry_after_cap: Duration::from_secs(10),
            throttle_wait: Duration::ZERO,
        }
    }

    /// The default policy: throttling ridden out for 70 s.
    fn riding() -> RetryPolicy {
        RetryPolicy::default()
    }

    fn unauthorized() -> QboError {
        QboError::Unauthorized {
            fault: None,
            intuit_tid: None,
        }
    }

    fn transient() -> QboError {
        QboError::Transient {
            status: 503,
            retry_after: None,
            fault: None,
            intuit_tid: None,
            body_snippet: "Service Unavailable".into(),
        }
    }

    fn throttled(ra: Option<u64>) -> QboError {
        QboError::Throttled {
            status: 429,
            retry_after: ra.map(Duration::from_secs),
            fault: None,
            intuit_tid: None,
        }
    }

    fn http(status: u16) -> QboError {
        QboError::Http {
            status,
            fault: None,
            intuit_tid: None,
            body_snippet: String::new(),
        }
    }

    /// Sends every due request with `token`, all admitted; returns their job ids.
    fn send_all(
        d: &mut Dispatcher<&'static str>,
        fresh: &[&'static str],
        token: &str,
        now: Instant,
    ) -> Vec<u64> {
        let room = d.room(0, now);
        let mut reqs = d.take_due(now, room);
        for f in fresh.iter().take(room - reqs.len()) {
            reqs.push(Request::new(*f));
        }
        let n = reqs.len() as i64;
        let sent = d.admit(reqs, (1..=n).collect(), Duration::ZERO, now);
        let mut ids = Vec::new();
        for (id, r, adm) in sent {
            ids.push(id);
            d.sent(id, r, token.to_owned(), adm, now);
        }
        ids
    }

    #[test]
    fn a_401_sends_again_at_once_and_rejects_its_token_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut d = Dispatcher::new(policy(), 4, true);
        let ids = send_all(&mut d, &["a", "b", "c"], "tok1", now);
        assert_eq!(d.in_flight(), 3);
        // the three meet a 401 with the same token: only the first rejects it or counts
        let mut rejects = Vec::new();
        for id in &ids {
            let f = d.answered(*id).unwrap();
            match d.failed(f, unauthorized(), now, &mut rng) {
                Ok(Retry::Reauthorize { reject }) => rejects.push(reject),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rejects, vec![Some("tok1".to_owned()), None, None]);
        // all three are due at once, first in line, in the order they failed... the last failed
        // is first (each goes to the front): what matters is that none waits
        let again = d.take_due(now, 10);
        assert_eq!(again.len(), 3);
        let counted: Vec<u32> = again.iter().map(|r| r.unauthorized).collect();
        assert_eq!(counted.iter().sum::<u32>(), 1, "{counted:?}");
        assert!(again.iter().all(|r| r.retries == 0));
    }

    #[test]
    fn a_request_refused_by_every_fresh_token_fails_after_the_limit() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut d = Dispatcher::new(policy(), 1, false);
        let mut fresh: &[&'static str] = &["a"];
        for k in 0..MAX_UNAUTHORIZED {
            let ids = send_all(&mut d, fresh, &format!("tok{k}"), now);
            fresh = &[];
            let f = d.answered(ids[0]).unwrap();
            match d.failed(f, unauthorized(), now, &mut rng) {
                Ok(Retry::Reauthorize { reject }) => assert_eq!(reject, Some(format!("tok{k}"))),
                other => panic!("{other:?}"),
            }
        }
        let ids = send_all(&mut d, fresh, "tok-last", now);
        let f = d.answered(ids[0]).unwrap();
        let (r, e) = d.failed(f, unauthorized(), now, &mut rng).unwrap_err();
        assert_eq!(r.item, "a");
        assert_eq!(r.unauthorized, MAX_UNAUTHORIZED);
        assert!(matches!(e, QboError::Unauthorized { .. }), "{e:?}");
        assert!(d.is_idle());
    }

    #[test]
    fn retryable_errors_back_off_then_exhaust_the_retries() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut now = Instant::now();
        let mut d = Dispatcher::new(policy(), 1, false);
        let mut fresh: &[&'static str] = &["p"];
        let errors = [
            transient(),
            QboError::Network("connection reset by peer".into()),
            QboError::Network("request timed out after 120000 ms".into()),
        ];
        for (k, e) in errors.into_iter().enumerate() {
            let ids = send_all(&mut d, fresh, "tok", now);
            fresh = &[];
            assert_eq!(ids.len(), 1, "retry {k}");
            let f = d.answered(ids[0]).unwrap();
            match d.failed(f, e, now, &mut rng).unwrap() {
                Retry::Backoff {
                    delay, retry, max, ..
                } => {
                    assert_eq!((retry, max), (k as u32 + 1, 3));
                    assert!(delay <= policy().ceiling(k as u32), "{delay:?}");
                    // not due before its delay, and the loop waits no longer than it
                    if !delay.is_zero() {
                        assert!(d.take_due(now, 1).is_empty());
                    }
                    assert!(d.timeout(now, Duration::from_secs(9)) <= delay);
                    now += delay;
                }
                other => panic!("{other:?}"),
            }
        }
        let ids = send_all(&mut d, fresh, "tok", now);
        let f = d.answered(ids[0]).unwrap();
        let (r, e) = d.failed(f, transient(), now, &mut rng).unwrap_err();
        assert_eq!(r.retries, 3);
        match e {
            QboError::RetriesExhausted { attempts, last } => {
                assert_eq!(attempts, 4);
                assert!(matches!(*last, QboError::Transient { status: 503, .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_429_waits_at_least_its_retry_after_capped() {
        let mut rng = StdRng::seed_from_u64(4);
        let now = Instant::now();
        let mut d = Dispatcher::new(policy(), 2, true);
        let ids = send_all(&mut d, &["a", "b"], "tok", now);
        let f = d.answered(ids[0]).unwrap();
        match d.failed(f, throttled(Some(5)), now, &mut rng).unwrap() {
            Retry::Backoff { delay, .. } => assert!(delay >= Duration::from_secs(5), "{delay:?}"),
            other => panic!("{other:?}"),
        }
        let f = d.answered(ids[1]).unwrap();
        match d.failed(f, throttled(Some(3600)), now, &mut rng).unwrap() {
            Retry::Backoff { delay, .. } => assert_eq!(delay, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
        assert!(d.take_due(now + Duration::from_secs(4), 5).is_empty());
        assert_eq!(d.take_due(now + Duration::from_secs(10), 5).len(), 2);
    }

    /// Drives a run of `pages` single requests with `max_in_flight` 10 against a realm whose
    /// minute is full until `full_for`: every request sent before then is throttled. Returns the
    /// throttled answers and the outcome.
    fn ride(policy: RetryPolicy, full_for: Duration, pages: usize) -> (u32, Result<(), QboError>) {
        let mut rng = StdRng::seed_from_u64(11);
        let t0 = Instant::now();
        let mut now = t0;
        let mut d: Dispatcher<usize> = Dispatcher::new(policy, 10, true);
        let mut fresh: VecDeque<usize> = (0..pages).collect();
        let mut throttled = 0;
        let mut done = 0;
        while done < pages {
            let room = d.room(0, now);
            let mut reqs = d.take_due(now, room);
            while reqs.len() < room {
                match fresh.pop_front() {
                    Some(p) => reqs.push(Request::new(p)),
                    None => break,
                }
            }
            let n = reqs.len() as i64;
            let mut ids = Vec::new();
            for (id, r, adm) in d.admit(reqs, (1..=n).collect(), Duration::ZERO, now) {
                d.sent(id, r, "tok".into(), adm, now);
                ids.push(id);
            }
            // the answers come back 5 ms later
            now += Duration::from_millis(5);
            for id in ids {
                let f = d.answered(id).unwrap();
                if now.duration_since(t0) < full_for {
                    throttled += 1;
                    if let Err((_, e)) = d.failed(f, throttled_error(), now, &mut rng) {
                        return (throttled, Err(e));
                    }
                } else {
                    d.delivered(f.sent);
                    done += 1;
                }
            }
            now += d
                .timeout(now, Duration::from_secs(3600))
                .max(Duration::from_millis(1));
        }
        assert!(!d.is_throttled());
        (throttled, Ok(()))
    }

    fn throttled_error() -> QboError {
        throttled(None)
    }

    #[test]
    fn a_full_minute_of_throttling_is_ridden_out_one_probe_per_wait() {
        let (n, outcome) = ride(riding(), Duration::from_secs(60), 40);
        outcome.unwrap();
        // the 10 in flight, then one probe per wait: about a dozen waits fill a minute
        assert!((11..=10 + 13).contains(&n), "{n} throttled answers");
    }

    #[test]
    fn throttling_past_the_bound_fails_with_how_long_it_waited() {
        let p = RetryPolicy {
            throttle_wait: Duration::from_secs(20),
            ..riding()
        };
        let (n, outcome) = ride(p, Duration::from_secs(3600), 40);
        let e = outcome.unwrap_err();
        assert!(n <= 10 + 8, "{n} throttled answers");
        match &e {
            QboError::ThrottledTooLong { waited, bound, .. } => {
                assert_eq!(*bound, Duration::from_secs(20));
                // the last wait ends at the bound, and the probe then is answered 5 ms later
                assert!(*waited >= *bound && *waited < *bound + Duration::from_millis(50));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "gave up after being throttled for 20 s (qbo.throttle_wait_ms = 20000): QuickBooks API throttled the request (HTTP 429)"
        );
        assert_eq!(e.sqlstate(), "08000");
    }

    #[test]
    fn without_a_throttle_wait_throttling_spends_the_retries_as_in_0_3_0() {
        let p = RetryPolicy {
            throttle_wait: Duration::ZERO,
            ..riding()
        };
        let (_, outcome) = ride(p, Duration::from_secs(60), 1);
        match outcome.unwrap_err() {
            QboError::RetriesExhausted { attempts, last } => {
                assert_eq!(attempts, 7);
                assert!(matches!(*last, QboError::Throttled { status: 429, .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_late_answer_from_before_the_wait_neither_ends_nor_lengthens_it() {
        let mut rng = StdRng::seed_from_u64(12);
        let now = Instant::now();
        let mut d = Dispatcher::new(riding(), 3, true);
        let ids = send_all(&mut d, &["a", "b", "c"], "tok", now);
        let t1 = now + Duration::from_millis(10);
        let f = d.answered(ids[0]).unwrap();
        let first = match d.failed(f, throttled(None), t1, &mut rng).unwrap() {
            Retry::Backoff {
                delay,
                retry: 1,
                max: 0,
                throttle: Some(b),
                ..
            } => {
                assert_eq!(b, Duration::from_secs(70));
                assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1));
                delay
            }
            other => panic!("{other:?}"),
        };
        // the second was in flight: same end, same wait number
        let f = d.answered(ids[1]).unwrap();
        match d
            .failed(f, throttled(None), t1 + Duration::from_millis(2), &mut rng)
            .unwrap()
        {
            Retry::Backoff {
                delay, retry: 1, ..
            } => {
                assert_eq!(delay, first - Duration::from_millis(2))
            }
            other => panic!("{other:?}"),
        }
        // the third was sent before the wait too: its good answer does not end the episode
        let f = d.answered(ids[2]).unwrap();
        d.delivered(f.sent);
        assert!(d.is_throttled());
        assert_eq!(d.room(0, t1 + first - Duration::from_millis(1)), 0);
        assert_eq!(d.room(0, t1 + first), 1, "one probe");
        assert_eq!(
            d.timeout(t1, Duration::from_secs(9)),
            first,
            "the loop wakes up when the wait ends"
        );

        // the probe gets through: everything flows again
        let later = t1 + first;
        let ids = send_all(&mut d, &[], "tok", later);
        assert_eq!(ids.len(), 1);
        assert_eq!(
            d.timeout(later, Duration::from_secs(9)),
            Duration::from_secs(9),
            "the others wait for the probe's answer, not again and again"
        );
        let f = d.answered(ids[0]).unwrap();
        d.delivered(f.sent);
        assert!(!d.is_throttled());
        assert_eq!(d.room(0, later), 3);
    }

    #[test]
    fn other_errors_fail_at_once() {
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        for e in [
            QboError::InvalidGrant("refresh token expired".into()),
            http(400),
            http(403),
            QboError::Cancelled,
        ] {
            let text = e.to_string();
            let mut d = Dispatcher::new(policy(), 1, false);
            let ids = send_all(&mut d, &["x"], "tok", now);
            let f = d.answered(ids[0]).unwrap();
            let (r, back) = d.failed(f, e, now, &mut rng).unwrap_err();
            assert_eq!((r.item, r.retries), ("x", 0));
            assert_eq!(back.to_string(), text);
        }
    }

    #[test]
    fn room_follows_flights_and_pages_waiting_to_be_written() {
        let now = Instant::now();
        let mut d: Dispatcher<&str> = Dispatcher::new(policy(), 4, true);
        assert_eq!(d.room(0, now), 4);
        let ids = send_all(&mut d, &["a", "b", "c"], "t", now);
        assert_eq!(d.room(0, now), 1);
        assert_eq!(
            d.room(2, now),
            1,
            "two pages may wait for the writer without idling a slot"
        );
        assert_eq!(d.room(3, now), 0);
        // pages held for an earlier one count against the whole slack only
        assert_eq!(d.room_holding(0, 4, now), 1);
        assert_eq!(d.room_holding(0, 5, now), 0);
        assert_eq!(d.room_holding(2, 3, now), 0);
        // a response read completely is no longer in flight: its slot goes to the next request
        // while it is parsed, and it counts with the pages waiting to be written
        let quick = READ_AHEAD_AFTER / 10;
        assert_eq!(d.read(ids[0], quick), Some(1));
        assert_eq!(d.read(ids[0], quick), None, "reported once");
        assert_eq!(d.read(999, quick), None, "not one of ours");
        assert_eq!(d.in_flight(), 3);
        assert!(!d.reading_ahead());
        assert_eq!(d.read_ahead(), crate::net::DEFAULT_READ_AHEAD);
        assert_eq!(d.room(0, now), 2);
        assert_eq!(d.room(2, now), 1);
        assert_eq!(d.room(3, now), 0);
        // answers that take long: a round is read ahead, and the writer's backlog may take the
        // whole slack
        assert_eq!(d.read(ids[1], READ_AHEAD_AFTER), Some(2));
        assert!(d.reading_ahead());
        assert_eq!(d.read_ahead(), 4);
        // one on the wire, two read: 3 slots, and 4 + 4 page things less the 3 requests
        assert_eq!(d.room(0, now), 3);
        assert_eq!(d.room(2, now), 3);
        assert_eq!(d.room(3, now), 2);
        assert_eq!(d.room(5, now), 0);
        let f = d.answered(ids[0]).expect("flight");
        assert!(f.read, "its slot was freed when it was read");
        assert!(d.answered(ids[1]).expect("flight").read);
        assert!(!d.answered(ids[2]).expect("flight").read);
        // and back to at once
        let more = send_all(&mut d, &["d"], "t", now);
        d.read(more[0], quick);
        assert!(!d.reading_ahead());
        assert_eq!(d.read_ahead(), crate::net::DEFAULT_READ_AHEAD);
        // the pages that may wait do not follow the pace: a window holding pages up to its
        // lookahead (2 x max - 1 past the one it waits for) while answers were slow must still
        // have a slot to send that one again once they come back at once (a first version let
        // the slack follow the pace too, and a run spun without end in the faults suite)
        d.answered(more[0]);
        assert_eq!(d.room_holding(0, 2 * 4 - 1, now), 1);
        // the sequential pager sends nothing while a page waits
        let mut s: Dispatcher<&str> = Dispatcher::new(policy(), 1, false);
        assert_eq!(s.room(1, now), 0);
        assert_eq!(s.room(0, now), 1);
        send_all(&mut s, &["a"], "t", now);
        assert_eq!(s.room(0, now), 0);
    }

    #[test]
    fn requests_the_limiter_refuses_wait_first_in_line() {
        let now = Instant::now();
        let mut d: Dispatcher<&str> = Dispatcher::new(policy(), 4, true);
        let reqs = vec![Request::new("a"), Request::new("b"), Request::new("c")];
        let sent = d.admit(reqs, vec![7], Duration::from_millis(300), now);
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].1.item, sent[0].2), ("a", 7));
        // some were admitted: no wait imposed, the rest are due at once, in order
        assert_eq!(d.room(0, now), 4);
        let due: Vec<&str> = d.take_due(now, 10).into_iter().map(|r| r.item).collect();
        assert_eq!(due, vec!["b", "c"]);
        // none admitted: nothing is sent before the limiter's wait has passed
        let sent = d.admit(
            vec![Request::new("b")],
            vec![],
            Duration::from_millis(300),
            now,
        );
        assert!(sent.is_empty());
        assert_eq!(d.room(0, now), 0);
        assert_eq!(
            d.timeout(now, Duration::from_millis(50)),
            Duration::from_millis(50)
        );
        assert_eq!(
            d.timeout(now + Duration::from_millis(280), Duration::from_millis(50)),
            Duration::from_millis(20)
        );
        assert_eq!(d.room(0, now + Duration::from_millis(300)), 4);
        assert_eq!(d.take_due(now, 10).len(), 1);
    }

    #[test]
    fn an_answer_for_an_unknown_job_is_ignored() {
        let mut d: Dispatcher<&str> = Dispatcher::new(policy(), 2, true);
        assert!(d.answered(42).is_none());
    }
}
