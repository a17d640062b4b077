//! End-to-end: riding out throttling the run did not cause (issue 15 item 3).
//!
//! - Another app filled the realm's window: QBO answers 429 to everything until it empties. A run
//!   rides it out (`qbo.throttle_wait_ms`), says so in its NOTICEs and in `qbo.progress`, and does
//!   not hammer: the requests in flight come back 429, then one probe per wait. The emulator's
//!   window is shortened (`--rate-window-ms`) so the test takes seconds, not a minute; the filler
//!   is `POST /__emulator/fill_window`. Under the 0.3.0 policy (`qbo.throttle_wait_ms = 0`: the
//!   429s spend `qbo.max_retries`) the same run fails.
//! - A realm throttled for longer than the bound fails with the exact error, and resumes.
//! - The limiter paces the first 61 s after the server started as if the minute before had been
//!   full: `qbo._api_admit` is called with a simulated start time.

use pg_qbo_e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-04-01T00:00:00Z";
const BACKFILL: &str =
    "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)";

/// The throttle's own 429s the emulator answered for `realm` (not injected faults).
fn throttled(emu: &Emulator, realm: &str) -> usize {
    emu.requests(0)
        .iter()
        .filter(|e| e["realm"] == realm && e["status"] == 429 && e["fault"] == "throttle")
        .count()
}

/// The message without its ` (intuit_tid ...)` (a fresh id every time).
fn without_tid(msg: &str) -> String {
    match msg.find(" (intuit_tid ") {
        Some(i) => {
            let end = msg[i..].find(')').map_or(msg.len(), |j| i + j + 1);
            format!("{}{}", &msg[..i], &msg[end..])
        }
        None => msg.to_owned(),
    }
}

fn fill(emu: &Emulator, realm: &str) -> Value {
    let v = emu.post("/__emulator/fill_window", json!({ "realm": realm }));
    assert_eq!(v["realm"], realm, "{v}");
    v
}

#[test]
fn a_window_filled_by_another_app_is_ridden_out_one_probe_per_wait() {
    let emu = Emulator::start(&["--seed", "31", "--rate-window-ms", "8000"]);
    fresh_db("e2e_throttle", &emu);
    let (mut c, notices) = collecting("e2e_throttle", "postgres");
    c.batch_execute("SET qbo.throttle_wait_ms = 30000; SET qbo.max_in_flight = 4")
        .unwrap();
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);

    // the old policy first: the same window, the 429s spend qbo.max_retries (6, with the test
    // database's 5-40 ms backoff) and the run fails
    let filled = fill(&emu, REALM1);
    println!("window filled: {filled}");
    c.batch_execute("SET qbo.throttle_wait_ms = 0").unwrap();
    let e = c
        .query_one(BACKFILL, &[&FROM, &TO])
        .expect_err("0.3.0 policy");
    let msg = e.as_db_error().expect("db error").message().to_owned();
    println!("with qbo.throttle_wait_ms = 0: {msg}");
    assert!(
        msg.contains("gave up after 7 attempts: QuickBooks API throttled the request (HTTP 429)"),
        "{msg}"
    );

    // the new policy, with a window full for 7 s more
    emu.post("/__emulator/reset", json!({}));
    c.batch_execute("RESET qbo.throttle_wait_ms").unwrap();
    c.batch_execute("SET qbo.throttle_wait_ms = 30000").unwrap();
    notices.take();
    fill(&emu, REALM1);
    let t0 = Instant::now();
    let watcher = std::thread::spawn(|| {
        // qbo.progress says what the run is doing while it waits (the wait lasts seconds)
        let mut o = connect("e2e_throttle");
        let t0 = Instant::now();
        loop {
            let row = o
                .query_opt(
                    "SELECT state, detail FROM qbo.progress WHERE run_id = 2 AND state = 'waiting for throttle'",
                    &[],
                )
                .unwrap();
            if let Some(r) = row {
                return (r.get::<_, String>(0), r.get::<_, String>(1));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "never waiting for throttle"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    c.query_one(BACKFILL, &[&FROM, &TO])
        .unwrap_or_else(|e| panic!("rides out the full window: {e:?}"));
    let took = t0.elapsed();
    let (state, detail) = watcher.join().unwrap();
    println!("qbo.progress while throttled: {state} / {detail}");
    assert!(
        detail.contains("after HTTP 429 (throttled, wait ")
            && detail.contains(" of at most 30000 ms;"),
        "{detail}"
    );
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    let status: String = c
        .query_one("SELECT status FROM qbo.runs WHERE run_id = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "succeeded");
    // the window was full for 7 s from the fill (its requests were stamped a second back)
    // ... and a probe refused just before it ends costs one more wait (at most 15 s)
    assert!(
        took >= Duration::from_millis(6500) && took < Duration::from_secs(30),
        "{took:?}"
    );
    let all = notices.all();
    let said: Vec<&String> = all
        .iter()
        .filter(|n| n.contains("throttled by QuickBooks (HTTP 429)"))
        .collect();
    println!("throttle NOTICEs: {said:#?}");
    assert!(!said.is_empty(), "{all:#?}");
    assert!(
        said.iter().all(|n| n.contains("; waiting ")
            && n.contains(" s before trying again (wait ")
            && n.contains("gives up after 30 s of throttling")),
        "{said:#?}"
    );
    // the 4 in flight when the window was found full, then one probe per wait: waits of at least
    // 0.5, 1, 2 and 4 s add up past 7 s by the fourth, so at most 4 probes are refused
    let n = throttled(&emu, REALM1);
    println!("429s received: {n} in {took:?}");
    assert!((1..=4 + 4).contains(&n), "{n} throttled answers");
}

/// The same through the background worker (`qbo.backfill`): its relay reads the throttled note
/// back and says the same.
#[test]
fn a_worker_rides_out_a_full_window_and_its_relay_says_it_waits() {
    let emu = Emulator::start(&["--seed", "34", "--rate-window-ms", "5000"]);
    fresh_db("e2e_throttle_worker", &emu);
    let (mut c, notices) = collecting("e2e_throttle_worker", "postgres");
    c.batch_execute("SET qbo.throttle_wait_ms = 20000; SET qbo.max_in_flight = 4")
        .unwrap();
    fill(&emu, REALM1);
    let rows = c
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 100)",
            &[&FROM, &TO],
        )
        .unwrap_or_else(|e| panic!("rides out the full window: {e:?}"));
    assert_eq!(
        sum_rows(&rows).rows,
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO).len() as i64
    );
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    let all = notices.all();
    let said: Vec<&String> = all
        .iter()
        .filter(|n| n.contains("throttled by QuickBooks (HTTP 429)"))
        .collect();
    println!("relayed: {said:#?}");
    assert!(
        !said.is_empty()
            && said.iter().all(|n| n.starts_with("run 1 chunk ")
                && n.contains(" s before trying again (wait ")
                && n.contains("gives up after 20 s of throttling")),
        "{all:#?}"
    );
    let n = throttled(&emu, REALM1);
    println!("429s received: {n}");
    assert!((1..=4 + 4).contains(&n), "{n} throttled answers");
}

#[test]
fn a_realm_throttled_past_the_bound_fails_with_how_long_and_resumes() {
    // Intuit's minute: filled once, the realm refuses everything for 59 s
    let emu = Emulator::start(&["--seed", "32"]);
    let mut c = fresh_db("e2e_throttle_bound", &emu);
    // one request at a time: the request that gives up is the first one, always
    c.batch_execute("SET qbo.throttle_wait_ms = 3000; SET qbo.max_in_flight = 1")
        .unwrap();
    fill(&emu, REALM1);
    let t0 = Instant::now();
    let e = c
        .query_one(BACKFILL, &[&FROM, &TO])
        .expect_err("throttled past the bound");
    let took = t0.elapsed();
    let d = e.as_db_error().expect("db error");
    println!("after {took:?}: {} {}", d.code().code(), d.message());
    assert_eq!(d.code().code(), "08000");
    assert_eq!(
        without_tid(d.message()),
        "run 1 (Invoice chunk 1/3, start position 1): gave up after being throttled for 3 s (qbo.throttle_wait_ms = 3000): QuickBooks API throttled the request (HTTP 429): SERVICE code 3001: message=ThrottleExceeded; errorCode=003001; statusCode=429 (The request limit was reached. Try again later); resume with SELECT * FROM qbo.resume(1) or CALL qbo.run_resume(1)"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (status, sqlstate): (String, String) = {
        let r = c
            .query_one(
                "SELECT status, error_sqlstate FROM qbo.runs WHERE run_id = 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), sqlstate.as_str()), ("failed", "08000"));
    // the first try, then probes after waits of at least 0.5, 1 and 1.5 s (the last cut at the
    // bound)
    let n = throttled(&emu, REALM1);
    println!("429s received: {n}");
    assert!((2..=4).contains(&n), "{n} throttled answers");

    // once the window is free again the run resumes to the truth
    emu.post("/__emulator/reset", json!({}));
    c.batch_execute("CALL qbo.run_resume(1)").unwrap();
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
}

/// `qbo._api_admit` for realm `realm` with a server started `ago` before now (`None`: no start
/// given): (admitted, wait_ms).
fn admit(c: &mut postgres::Client, realm: &str, want: i32, ago: Option<&str>) -> (usize, i32) {
    let started = match ago {
        Some(a) => format!("pg_catalog.clock_timestamp() - interval '{a}'"),
        None => "NULL".to_owned(),
    };
    let r = c
        .query_one(
            &format!(
                "SELECT coalesce(cardinality(admitted), 0)::int, wait_ms FROM qbo._api_admit($1, array_fill('query'::text, ARRAY[$2::int]), 1000, 610, 1000, '{{}}', 'app', NULL, 0, {started})"
            ),
            &[&realm, &want],
        )
        .unwrap();
    (r.get::<_, i32>(0) as usize, r.get(1))
}

#[test]
fn the_first_minute_after_a_start_is_paced_as_if_the_minute_before_had_been_full() {
    let emu = Emulator::start(&["--seed", "33"]);
    let mut c = fresh_db("e2e_throttle_pace", &emu);
    // 610 a minute: 10 per second of the paced minute. 6.1 s after the start, 61 may have gone
    // (floor(610 * 6.1 / 61)); the next one fits 0.1 s later
    let (n, _) = admit(&mut c, "r1", 100, Some("6.1 seconds"));
    assert_eq!(n, 61);
    let (n, wait) = admit(&mut c, "r1", 1, Some("6.1 seconds"));
    println!("6.1 s after the start: 61 admitted, then {n} and a wait of {wait} ms");
    assert_eq!(n, 0);
    assert!((1..=100).contains(&wait), "{wait}");
    // right at the start: nothing yet, the first one in 61 / 610 s
    let (n, wait) = admit(&mut c, "r2", 5, Some("0 seconds"));
    assert_eq!(n, 0);
    assert!((90..=100).contains(&wait), "{wait}");
    // 30.5 s after the start: half the minute
    assert_eq!(admit(&mut c, "r3", 400, Some("30.5 seconds")).0, 305);
    // 61 s after the start (and with no start given) the minute is the limiter's own
    assert_eq!(admit(&mut c, "r4", 700, Some("61 seconds")).0, 610);
    assert_eq!(admit(&mut c, "r5", 700, None).0, 610);
    // the 9-argument call of 0.3.0 reaches the same function (p_started defaults to NULL)
    let n: i32 = c
        .query_one(
            "SELECT cardinality(admitted) FROM qbo._api_admit('r6', '{query,query}', 10, 500, 10, '{}', 'app', NULL, 0)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // a run admits through pg_postmaster_start_time(): started more than 61 s ago here, or not,
    // a backfill of this cluster ends equal to the truth either way
    let up: f64 = c
        .query_one(
            "SELECT extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())::float8",
            &[],
        )
        .unwrap()
        .get(0);
    println!("cluster up for {up:.1} s");
    c.query_one(BACKFILL, &[&FROM, &TO]).unwrap();
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
}
