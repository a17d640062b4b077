//! The network thread: fetches QBO pages while the backend writes the pages that have arrived.
//!
//! # Why a thread
//! A tokio runtime on the backend's own thread makes progress only inside `block_on`: while the
//! backend runs SQL (an upsert of 1000 rows takes tens of milliseconds), no request would advance,
//! so fetching and writing could never overlap. Background worker processes could fetch, but each
//! costs a slot of `max_worker_processes`, a login, and a copy of every page through shared
//! memory. A thread in the backend costs nothing of the kind. It is safe because it never calls a
//! Postgres function (Postgres is not thread safe; only the backend's thread touches SPI, memory
//! contexts, or signals), and all signals are blocked in it, so `SIGINT`, `SIGTERM` and friends
//! keep going to the backend's thread, whose handlers set the flags `CHECK_FOR_INTERRUPTS` reads.
//!
//! The thread runs a current-thread tokio runtime with its own `reqwest` client (a connection
//! belongs to the runtime that opened it), makes exactly one attempt per job and sends back what
//! happened. Retries, backoff, tokens, the rate limiter and every decision stay with the backend,
//! which waits on the result channel in slices of at most 50 ms to poll for a cancel. Dropping
//! [`Net`] closes the job channel: the thread aborts what is in flight and exits, and the drop
//! joins it (a few milliseconds).
//!
//! # Two answers per job
//! JSON is parsed off the backend too (records split, keys extracted, each record written as
//! jsonb bytes by [`crate::jsonb::encode`] when the database is UTF-8), by a second thread that
//! the network thread starts (so it inherits the blocked signals) and that parses one response at
//! a time. A response read completely is reported at once ([`Answer::Read`]): QuickBooks no
//! longer counts it in flight, so the backend frees its slot and sends the next request while
//! the page is parsed; its page or error follows ([`Answer::Done`]). Parsing on the thread that
//! reads would hold every other response behind it: ten pages coming back together took a
//! quarter of a second to parse one after the other, and the slots of the last ones stayed
//! taken that long (issue 15, BENCHMARKS.md).
//!
//! # Read-ahead
//! A body read is memory, where one left in the socket is not: at most [`Net::set_read_ahead`]
//! responses are read and not yet parsed at once (2 until set), the others wait, their status
//! and headers in, for one to be parsed. The backend raises it to a round of pages while answers
//! take long (then reading them at once frees their slots, and the parser and the writer have the
//! time to catch up before the next round comes back), and keeps it low while they come back at
//! once (then reading ahead would only pile pages up in memory).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::{HttpConfig, Page, QboClient, RawResponse};
use crate::error::QboError;

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// `SELECT count(*)`: the answer is a number.
    Count,
    /// `SELECT *`: the answer is a page.
    Page,
    /// A Change Data Capture call ([`crate::cdc`]); the job's `query` is not used.
    Cdc(crate::cdc::CdcCall),
}

/// Responses read and not yet parsed at once until [`Net::set_read_ahead`] says otherwise: one
/// being parsed and the next.
pub const DEFAULT_READ_AHEAD: usize = 2;

/// One request for the network thread.
pub struct Job {
    /// Chosen by the caller, returned in [`Done::id`].
    pub id: u64,
    pub kind: JobKind,
    pub base_url: String,
    pub realm: String,
    pub minor_version: u32,
    /// Never logged: [`QboError`] texts mask tokens.
    pub access_token: String,
    pub query: String,
}

/// A fetched answer.
#[derive(Debug)]
pub enum Fetched {
    Count(u64),
    Page(Page),
    Cdc(crate::cdc::CdcAnswer),
}

/// The outcome of one job: its answer parsed, or why there is none.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub result: Result<Fetched, QboError>,
}

/// What the thread reports about a job (see the module documentation).
#[derive(Debug)]
pub enum Answer {
    /// The response of job `id` has been read completely: the request is no longer in flight at
    /// QuickBooks. Its [`Answer::Done`] follows once it is parsed. A job that fails before its
    /// response is read (a timeout, a refused connection, a body over the cap) has none.
    /// `latency`: from sending the request to its status and headers (QuickBooks' time, not
    /// the wait for the read-ahead).
    Read { id: u64, latency: Duration },
    /// The job's outcome; its last report.
    Done(Done),
}

/// Handle of the network thread.
pub struct Net {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    results: mpsc::Receiver<Answer>,
    thread: Option<JoinHandle<()>>,
    read_ahead: Arc<ReadAhead>,
}

/// Responses read and not yet parsed, and how many may be (see the module documentation).
struct ReadAhead {
    /// (read and not yet parsed, allowed)
    state: std::sync::Mutex<(usize, usize)>,
    notify: tokio::sync::Notify,
}

/// One response read and not yet parsed; dropped once it is parsed (or given up).
struct Permit(Arc<ReadAhead>);

impl ReadAhead {
    fn new(allowed: usize) -> ReadAhead {
        ReadAhead {
            state: std::sync::Mutex::new((0, allowed.max(1))),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn try_take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let free = s.0 < s.1;
        if free {
            s.0 += 1;
        }
        free
    }

    async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // registered before the check: a release between the two is not missed
            notified.as_mut().enable();
            if self.try_take() {
                return Permit(self.clone());
            }
            notified.await;
        }
    }

    fn set(&self, allowed: usize) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = allowed.max(1);
        self.notify.notify_waiters();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(1);
        drop(s);
        self.0.notify.notify_waiters();
    }
}

/// Why a wait for a result returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing arrived within the timeout.
    Timeout,
    /// The thread is gone (it never exits while [`Net`] lives unless it panicked).
    Gone,
}

impl Net {
    /// Starts the thread with its own HTTP client built from `cfg`.
    pub fn start(cfg: HttpConfig) -> Result<Net, QboError> {
        let client = QboClient::new(cfg)?;
        let (job_tx, job_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Answer>();
        let read_ahead = Arc::new(ReadAhead::new(DEFAULT_READ_AHEAD));
        let gate = read_ahead.clone();
        let thread = spawn_with_signals_blocked(move || thread_main(client, job_rx, done_tx, gate))
            .map_err(|e| QboError::Network(format!("cannot start the network thread: {e}")))?;
        Ok(Net {
            jobs: Some(job_tx),
            results: done_rx,
            thread: Some(thread),
            read_ahead,
        })
    }

    /// How many responses may be read and not yet parsed at once (at least 1; see the module
    /// documentation).
    pub fn set_read_ahead(&self, responses: usize) {
        self.read_ahead.set(responses);
    }

    /// Hands a job to the thread.
    pub fn submit(&self, job: Job) -> Result<(), QboError> {
        self.jobs
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| QboError::Network("the network thread has stopped".into()))
    }

    /// A report that has arrived, without waiting.
    pub fn try_next(&self) -> Option<Answer> {
        self.results.try_recv().ok()
    }

    /// Waits up to `timeout` for a report.
    pub fn wait(&self, timeout: Duration) -> Result<Answer, Idle> {
        match self.results.recv_timeout(timeout) {
            Ok(d) => Ok(d),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Idle::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Idle::Gone),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // closing the channel ends the thread's loop; its runtime is dropped in the background
        // (in-flight requests are aborted, a blocking DNS lookup is not waited for)
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spawns a thread with every signal blocked, so that signals keep being delivered to the
/// backend's thread (the mask is inherited at creation; the caller's own mask is restored).
fn spawn_with_signals_blocked(
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    // SAFETY: `all` and `old` are locals; all-zero bytes are a valid `sigset_t` (a plain C
    // struct), `all` is then filled by sigfillset and `old` written by the first pthread_sigmask
    // before the second reads it. pthread_sigmask changes only the calling thread's mask, and the
    // second call restores exactly the mask the first one saved, so the caller's thread ends as it
    // began while the spawned thread inherits the full mask. Builder::spawn cannot unwind here
    // (its only panic is on a thread name containing NUL), so the restore always runs.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = std::thread::Builder::new()
            .name("pg_qbo net".into())
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

fn thread_main(
    client: QboClient,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    done: mpsc::Sender<Answer>,
    gate: Arc<ReadAhead>,
) {
    // answers every job with `msg`, so the backend reports it
    let refuse = |mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>, msg: String| {
        while let Some(j) = jobs.blocking_recv() {
            let _ = done.send(Answer::Done(Done {
                id: j.id,
                result: Err(QboError::Network(msg.clone())),
            }));
        }
    };
    let (to_parse, parse_rx) = mpsc::channel::<(Job, RawResponse, Permit)>();
    let stopping = Arc::new(AtomicBool::new(false));
    // started from this thread, whose signals are all blocked: it inherits that mask
    let parser = {
        let (client, done, stopping) = (client.clone(), done.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("pg_qbo parse".into())
            .spawn(move || parse_main(client, parse_rx, done, stopping))
    };
    let parser = match parser {
        Ok(h) => h,
        Err(e) => return refuse(jobs, format!("cannot start the parsing thread: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            stopping.store(true, Ordering::Relaxed);
            let _ = parser.join();
            return refuse(jobs, format!("cannot start the network runtime: {e}"));
        }
    };
    rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => {
                        let client = client.clone();
                        let done = done.clone();
                        let to_parse = to_parse.clone();
                        let gate = gate.clone();
                        tasks.spawn(async move {
                            let sent = std::time::Instant::now();
                            let read = async {
                                let pending = match &job.kind {
                                    JobKind::Cdc(call) => client
                                        .send_cdc(
                                            &job.base_url,
                                            &job.realm,
                                            job.minor_version,
                                            &job.access_token,
                                            call,
                                        )
                                        .await?,
                                    JobKind::Count | JobKind::Page => client
                                        .send(
                                            &job.base_url,
                                            &job.realm,
                                            job.minor_version,
                                            &job.access_token,
                                            &job.query,
                                        )
                                        .await?,
                                };
                                let latency = sent.elapsed();
                                let permit = gate.acquire().await;
                                let raw = client.read_body(pending).await?;
                                Ok::<_, QboError>((raw, permit, latency))
                            };
                            match read.await {
                                Ok((raw, permit, latency)) => {
                                    let _ = done.send(Answer::Read { id: job.id, latency });
                                    let _ = to_parse.send((job, raw, permit));
                                }
                                Err(e) => {
                                    let _ = done.send(Answer::Done(Done { id: job.id, result: Err(e) }));
                                }
                            }
                        });
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.abort_all();
    });
    // responses still waiting to be parsed are dropped, not parsed
    stopping.store(true, Ordering::Relaxed);
    rt.shutdown_background();
    let _ = parser.join();
}

/// The parsing thread: one response at a time until the network thread stops (then what waits
/// is dropped unparsed). Of the responses waiting, the job sent first goes first: a window's
/// pages are sent in order and taken in order, so each page parsed can be taken and written at
/// once, instead of pages answered early waiting for the first one and being written together.
fn parse_main(
    client: QboClient,
    responses: mpsc::Receiver<(Job, RawResponse, Permit)>,
    done: mpsc::Sender<Answer>,
    stopping: Arc<AtomicBool>,
) {
    let mut waiting: std::collections::BTreeMap<u64, (Job, RawResponse, Permit)> =
        Default::default();
    while !stopping.load(Ordering::Relaxed) {
        while let Ok((job, raw, permit)) = responses.try_recv() {
            waiting.insert(job.id, (job, raw, permit));
        }
        if let Some((_, (job, raw, permit))) = waiting.pop_first() {
            let result = interpret(&client, &job, raw);
            // the body is gone: the next response may be read
            drop(permit);
            let _ = done.send(Answer::Done(Done { id: job.id, result }));
            continue;
        }
        match responses.recv_timeout(Duration::from_millis(20)) {
            Ok((job, raw, permit)) => {
                waiting.insert(job.id, (job, raw, permit));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

fn interpret(client: &QboClient, job: &Job, raw: RawResponse) -> Result<Fetched, QboError> {
    if let JobKind::Cdc(call) = &job.kind {
        return Ok(Fetched::Cdc(client.interpret_cdc(
            raw,
            &job.access_token,
            call,
        )?));
    }
    let page = client.interpret(raw, &job.access_token, &job.query)?;
    Ok(match job.kind {
        // what QboClient::count returns: `totalCount`, absent meaning 0
        JobKind::Count => Fetched::Count(page.total_count.unwrap_or(0)),
        _ => Fetched::Page(page),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn job(id: u64, base: &str, kind: JobKind) -> Job {
        Job {
            id,
            kind,
            base_url: base.to_owned(),
            realm: "123".into(),
            minor_version: 75,
            access_token: "tok".into(),
            query: "SELECT * FROM Invoice".into(),
        }
    }

    /// The next outcome, the `Read` reports before it checked off against `read`: every job
    /// is reported read once, before its outcome.
    fn next_done(net: &Net, timeout: Duration, read: &mut Vec<u64>) -> Result<Done, Idle> {
        loop {
            match net.wait(timeout)? {
                Answer::Read { id, .. } => {
                    assert!(!read.contains(&id), "job {id} reported read twice");
                    read.push(id);
                }
                Answer::Done(d) => return Ok(d),
            }
        }
    }

    fn collect(net: &Net, n: usize) -> Vec<Done> {
        let mut out = Vec::new();
        let mut read = Vec::new();
        while out.len() < n {
            let d = next_done(net, Duration::from_secs(20), &mut read).expect("result");
            assert!(read.contains(&d.id), "job {} done before it was read", d.id);
            out.push(d);
        }
        out
    }

    #[test]
    fn jobs_run_concurrently_on_the_thread_and_come_back_by_id() {
        let rt = crate::runtime::new_runtime().unwrap();
        let server = rt.block_on(MockServer::start());
        rt.block_on(
            Mock::given(method("GET"))
                .and(path("/v3/company/123/query"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_delay(Duration::from_millis(300))
                        .set_body_string(
                            r#"{"QueryResponse":{"Invoice":[{"Id":"1","SyncToken":"0","MetaData":{"LastUpdatedTime":"2025-01-01T00:00:00Z"}}],"totalCount":7}}"#,
                        ),
                )
                .mount(&server),
        );
        let net = Net::start(HttpConfig::default()).unwrap();
        let t0 = Instant::now();
        for i in 0..8 {
            let kind = if i % 2 == 0 {
                JobKind::Page
            } else {
                JobKind::Count
            };
            net.submit(job(i, &server.uri(), kind)).unwrap();
        }
        let mut got = collect(&net, 8);
        let took = t0.elapsed();
        got.sort_by_key(|d| d.id);
        for d in &got {
            match (&d.result, d.id % 2) {
                (Ok(Fetched::Page(p)), 0) => assert_eq!(p.entity_records.len(), 1),
                (Ok(Fetched::Count(7)), 1) => {}
                other => panic!("job {}: {other:?}", d.id),
            }
        }
        println!("8 jobs of 300 ms each took {took:?}");
        // sequential would take 2.4 s
        assert!(took < Duration::from_millis(2000), "{took:?}");
    }

    #[test]
    fn a_cdc_job_goes_to_the_cdc_endpoint_and_comes_back_parsed() {
        use wiremock::matchers::query_param;
        let rt = crate::runtime::new_runtime().unwrap();
        let server = rt.block_on(MockServer::start());
        rt.block_on(
            Mock::given(method("GET"))
                .and(path("/v3/company/123/cdc"))
                .and(query_param("entities", "Estimate"))
                .respond_with(
                    ResponseTemplate::new(200).set_body_bytes(crate::fault::tests::sample(
                        "qbo_api/vcr/cdc/basic__0.json",
                    )),
                )
                .expect(1)
                .mount(&server),
        );
        let since = chrono::DateTime::parse_from_rfc3339("2020-09-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let call = crate::cdc::CdcCall::new(&["Estimate"], since).unwrap();
        let net = Net::start(HttpConfig::default()).unwrap();
        net.submit(job(1, &server.uri(), JobKind::Cdc(call)))
            .unwrap();
        let got = collect(&net, 1);
        match &got[0].result {
            Ok(Fetched::Cdc(a)) => {
                assert_eq!(a.changes.len(), 1);
                assert_eq!(a.changes[0].entity.name, "Estimate");
                assert!(!a.changes[0].records.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cap_of_one_response_follows_the_memory_budget() {
        use crate::budget::MemoryBudget;
        // a 6 MiB page: within what 256 MB leaves one of 2 x 10 + 1 responses (about 9.1 MiB),
        // beyond what 128 MB leaves (about 4.6 MiB), or 256 MB with 30 in flight (the 4 MiB floor)
        let pad = "x".repeat(6 * 1024 + 256);
        let recs: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"Id":"{i}","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2025-01-01T00:00:00Z"}},"Memo":"{pad}"}}"#))
            .collect();
        let body = format!(
            r#"{{"QueryResponse":{{"Invoice":[{}],"startPosition":1,"maxResults":1000}}}}"#,
            recs.join(",")
        );
        assert!(body.len() > 6 << 20);
        let rt = crate::runtime::new_runtime().unwrap();
        let server = rt.block_on(MockServer::start());
        rt.block_on(
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_body_string(body))
                .mount(&server),
        );
        let fetch_with = |budget: MemoryBudget| {
            let net = Net::start(HttpConfig {
                max_response_bytes: budget.response_cap(),
                ..HttpConfig::default()
            })
            .unwrap();
            net.submit(job(1, &server.uri(), JobKind::Page)).unwrap();
            next_done(&net, Duration::from_secs(30), &mut Vec::new())
                .unwrap()
                .result
        };
        match fetch_with(MemoryBudget::new(256, 10)) {
            Ok(Fetched::Page(p)) => assert_eq!(p.entity_records.len(), 1000),
            other => panic!("{other:?}"),
        }
        for budget in [MemoryBudget::new(128, 10), MemoryBudget::new(256, 30)] {
            match fetch_with(budget) {
                Err(e @ QboError::ResponseTooLarge { .. }) => {
                    assert_eq!(e.sqlstate(), "54000");
                    assert!(
                        e.to_string().starts_with(&format!(
                            "QuickBooks response larger than the {}-byte cap of one response",
                            budget.response_cap()
                        )),
                        "{e}"
                    );
                    assert!(e.to_string().contains("qbo.max_buffer_mb"), "{e}");
                }
                other => panic!("{budget:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn signals_are_blocked_in_the_thread() {
        // SAFETY: `cur` is a local zeroed `sigset_t` (a valid value) that pthread_sigmask fills
        // with the spawned thread's own mask; the null `set` makes the call read the mask only.
        let h = spawn_with_signals_blocked(|| unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
            assert_eq!(libc::sigismember(&cur, libc::SIGINT), 1);
            assert_eq!(libc::sigismember(&cur, libc::SIGTERM), 1);
            assert_eq!(libc::sigismember(&cur, libc::SIGUSR1), 1);
        })
        .unwrap();
        h.join().unwrap();
        // and the caller's mask is unchanged
        // SAFETY: as above, on the test's own thread: a zeroed local `sigset_t` filled by a
        // read-only pthread_sigmask (null `set`).
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
            assert_eq!(libc::sigismember(&cur, libc::SIGINT), 0);
        }
    }

    #[test]
    fn dropping_the_handle_aborts_a_hung_request_quickly() {
        let rt = crate::runtime::new_runtime().unwrap();
        let server = rt.block_on(MockServer::start());
        rt.block_on(
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
                .mount(&server),
        );
        let net = Net::start(HttpConfig::default()).unwrap();
        net.submit(job(1, &server.uri(), JobKind::Page)).unwrap();
        assert_eq!(
            net.wait(Duration::from_millis(200)).unwrap_err(),
            Idle::Timeout
        );
        let t0 = Instant::now();
        drop(net);
        let took = t0.elapsed();
        println!("drop with a hung request took {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn an_unreachable_host_is_a_network_error_for_that_job() {
        let net = Net::start(HttpConfig {
            connect_timeout: Duration::from_millis(500),
            ..HttpConfig::default()
        })
        .unwrap();
        // a port nobody listens on
        net.submit(job(9, "http://127.0.0.1:9", JobKind::Count))
            .unwrap();
        let mut read = Vec::new();
        let d = next_done(&net, Duration::from_secs(20), &mut read).unwrap();
        assert_eq!(d.id, 9);
        // nothing was read: the job's slot is freed with its outcome
        assert!(read.is_empty(), "{read:?}");
        assert!(
            matches!(d.result, Err(QboError::Network(_))),
            "{:?}",
            d.result
        );
    }
}
