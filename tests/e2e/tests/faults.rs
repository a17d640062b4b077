//! End-to-end: transient faults, throttling, token expiry and rotation, exhausted retries and resume.

use pg_qbo_e2e::*;
use serde_json::Value;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

fn stat(stats: &Value, key: &str) -> i64 {
    stats[key].as_i64().unwrap_or(0)
}

#[test]
fn transient_faults_and_throttles_end_equal_to_truth() {
    let emu = Emulator::start(&[
        "--seed",
        "5",
        "--faults",
        "429json:0.06,429xml-ra=1:0.02,403throttle:0.02,500json:0.03,502xml:0.03,503html:0.04,504html:0.03,reset:0.03,truncated:0.03,fault200:0.02,hang:0.02",
    ]);
    let mut c = fresh_db("e2e_faults", &emu);
    c.batch_execute("SET qbo.http_timeout_ms = 800").unwrap();
    for (entity, table) in [("Invoice", "qb_invoices"), ("Customer", "qb_customers")] {
        let truth = truth_in_window(&emu, REALM1, entity, FROM, TO);
        let rows = c
            .query(
                "SELECT * FROM qbo.backfill($1, $2::text::timestamptz, $3::text::timestamptz, chunk_size => 20, page_size => 40)",
                &[&entity, &FROM, &TO],
            )
            .unwrap_or_else(|e| panic!("{entity}: {e:?}"));
        let v = sum_rows(&rows);
        assert_eq!(raw(&mut c, table, REALM1), truth, "{entity}");
        assert_eq!(
            (v.rows, v.inserted),
            (truth.len() as i64, truth.len() as i64),
            "{entity}: {v:?}"
        );
    }
    let stats = emu.stats();
    println!("emulator stats: {stats}");
    let faults: i64 = stats["faults_injected"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_i64).sum())
        .unwrap_or(0);
    assert!(
        faults >= 10,
        "the run saw {faults} injected faults; expected many"
    );
}

#[test]
fn access_tokens_expiring_and_refresh_tokens_rotating_every_use() {
    let emu = Emulator::start(&[
        "--seed",
        "9",
        "--rotate-refresh",
        "always",
        "--faults",
        "401/every=4",
    ]);
    let mut c = fresh_db("e2e_tokens", &emu);
    for (entity, table) in [("Invoice", "qb_invoices"), ("Item", "qb_items")] {
        let truth = truth_in_window(&emu, REALM1, entity, FROM, TO);
        c.query(
            "SELECT * FROM qbo.backfill($1, $2::text::timestamptz, $3::text::timestamptz, chunk_size => 15, page_size => 50)",
            &[&entity, &FROM, &TO],
        )
        .unwrap_or_else(|e| panic!("{entity}: {e:?}"));
        assert_eq!(raw(&mut c, table, REALM1), truth);
    }
    let _: i64 = c
        .query_one(
            "CALL qbo.run_backfill('Bill', $1::text::timestamptz, $2::text::timestamptz, 15, 50)",
            &[&FROM, &TO],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        raw(&mut c, "qb_bills", REALM1),
        truth_in_window(&emu, REALM1, "Bill", FROM, TO)
    );
    let stats = emu.stats();
    println!("emulator stats: {stats}");
    assert_eq!(
        stat(&stats, "invalid_grant"),
        0,
        "a refresh token was lost: {stats}"
    );
    assert!(stat(&stats, "token_refreshes") >= 3, "{stats}");
    // the stored refresh token is the one the emulator considers current
    let tokens: Value = ureq::get(&format!("{}/__emulator/tokens", emu.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let stored: String = c
        .query_one(
            "SELECT refresh_token FROM qbo._connections WHERE name = 'default'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(Value::String(stored), tokens["refresh_token"]);
}

#[test]
fn exhausted_retries_fail_with_the_full_story_and_resume_refetches_only_the_rest() {
    let emu = Emulator::start(&["--seed", "13"]);
    let mut c = fresh_db("e2e_exhaust", &emu);
    // sequential, so that the request after the 3rd is its retry (the 3rd is a page of the time
    // cursor: the pages of a pass over a bulk second would go out one after another instead)
    c.batch_execute("SET qbo.max_retries = 1; SET qbo.max_in_flight = 1")
        .unwrap();
    // the 3rd and 4th API requests fail: the 3rd request and its only retry
    emu.faults("503html@nth=3,503html@nth=4");
    let err = c
        .query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)", &[&FROM, &TO])
        .expect_err("retries are exhausted");
    let db = err.as_db_error().expect("a database error");
    let msg = db.message().to_owned();
    println!("error: {msg}");
    assert!(msg.starts_with("run 1 (Invoice chunk "), "{msg}");
    assert!(
        msg.contains("gave up after 2 attempts: QuickBooks API transient error: HTTP 503"),
        "{msg}"
    );
    assert!(msg.contains("intuit_tid"), "{msg}");
    assert!(
        msg.ends_with("resume with SELECT * FROM qbo.resume(1) or CALL qbo.run_resume(1)"),
        "{msg}"
    );
    let (status, error): (String, String) = {
        let r = c
            .query_one("SELECT status, error FROM qbo.runs WHERE run_id = 1", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), error.as_str()), ("failed", msg.as_str()));
    // completed pages are kept: raw holds exactly the rows of the committed pages
    let kept: i64 = c
        .query_one("SELECT count(*) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    let committed: i64 = c
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint FROM qbo.run_pages WHERE run_id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(kept > 0);
    assert_eq!(kept, committed);
    let failed_chunk_start: String = c
        .query_one(
            "SELECT to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM qbo.run_chunks WHERE run_id = 1 AND status = 'failed'",
            &[],
        )
        .unwrap()
        .get(0);

    emu.faults("");
    let seq = emu.last_seq();
    let rows = c.query("SELECT * FROM qbo.resume(1)", &[]).unwrap();
    let v = sum_rows(&rows);
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    assert_eq!(
        (v.rows, v.inserted, v.updated),
        (truth.len() as i64, truth.len() as i64, 0),
        "{v:?}"
    );
    // resume asked nothing before the failed chunk's start
    let lo = parse_rfc3339(&format!("{failed_chunk_start}Z"));
    let resumed: Vec<Value> = emu
        .requests(seq)
        .into_iter()
        .filter(|r| r["endpoint"] == "query")
        .collect();
    assert!(!resumed.is_empty());
    for r in &resumed {
        let q = r["query"].as_str().unwrap();
        let lit = q.split('\'').nth(1).unwrap();
        assert!(
            parse_rfc3339(lit) >= lo,
            "resume re-fetched before the failed chunk: {q}"
        );
    }
    println!(
        "resume made {} query requests from {failed_chunk_start}",
        resumed.len()
    );
    let status: String = c
        .query_one("SELECT status FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "succeeded");
}

/// A `count(*)` claiming 10^12 records in one second (and pages inside it that never run out of
/// fresh Ids) once made a run remember Ids without bound (393 MB in 75 s). Now the run fails at
/// once with 54000 naming the second and the setting, having sent a handful of requests, and the
/// backend's memory stays put. The time cursor reads such a second (`qbo.max_in_flight = 1`, the
/// sequential pager); offsets read it in Id order and keep no Ids of it.
#[test]
fn a_lying_count_fails_within_the_memory_budget() {
    let emu = Emulator::start(&[
        "--seed",
        "9",
        "--records",
        "Invoice=3000",
        "--faults",
        "countlie=1000000000000",
    ]);
    let mut c = fresh_db("e2e_countlie", &emu);
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let before = emu.last_seq();
    let e = c
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 400)",
            &[&FROM, &TO],
        )
        .expect_err("a second that never ends");
    let d = e.as_db_error().unwrap();
    println!("{}: {}", d.code().code(), d.message());
    assert_eq!(d.code().code(), "54000");
    assert!(
        d.message().contains("QuickBooks claims 1000000000000 records in that one second, more than qbo.max_buffer_mb = 256 MB lets pg_qbo remember while it reads them"),
        "{}",
        d.message()
    );
    assert!(
        d.message().starts_with("run 1 (Invoice chunk 1/1"),
        "{}",
        d.message()
    );
    let requests = emu.requests(before).len();
    let hwm_kb: i64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    println!(
        "{requests} requests sent; backend peak resident memory {} MB",
        hwm_kb / 1024
    );
    assert!(
        requests < 50,
        "{requests} requests for a second that never ends"
    );
    assert!(hwm_kb < 512 * 1024, "backend peak {hwm_kb} kB");
    let status: String = c
        .query_one("SELECT status FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
}

/// A window's `count(*)` sizes how many pages go out at once, never where the window ends: a count
/// that lies costs requests, never rows. Too high, the pages sent past the real end come back
/// empty (at most the lookahead, 2 x `qbo.max_in_flight`, past the pages taken); too low, the window
/// reads on a page at a time until a short page. Both end equal to the truth, counted exactly.
#[test]
fn a_lying_window_count_costs_requests_never_rows() {
    for lie in [1_000_000_000_000u64, 1_200] {
        let emu = Emulator::start(&[
            "--seed",
            "9",
            "--records",
            "Invoice=3000",
            "--faults",
            &format!("windowlie={lie}"),
        ]);
        let mut c = fresh_db("e2e_windowlie", &emu);
        let before = emu.last_seq();
        let v = sum_rows(
            &c.query(
                "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 400)",
                &[&FROM, &TO],
            )
            .unwrap(),
        );
        let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
        assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth, "count {lie}");
        assert_eq!(
            (v.rows, v.inserted),
            (truth.len() as i64, truth.len() as i64),
            "{v:?}"
        );
        let queries: Vec<Value> = emu
            .requests(before)
            .into_iter()
            .filter(|r| r["endpoint"] == "query")
            .collect();
        // pages of 1000 overlapping by 5 that the true count asks for
        let n = truth.len() as u64;
        let pages = (n - 6) / 995 + 1;
        let lies = emu.stats()["faults_injected"]["windowlie"].as_u64();
        println!(
            "count said {lie} of {n}: {} query requests for {pages} pages and the count ({lies:?} lies told)",
            queries.len()
        );
        assert_eq!(lies, Some(1), "the window's one count lied");
        if lie > n {
            // the count, the pages, and at most the lookahead (2 x 10) past the end
            assert!(
                queries.len() as u64 <= 1 + pages + 2 * 10,
                "{} requests",
                queries.len()
            );
        } else {
            assert_eq!(
                queries.len() as u64,
                1 + pages,
                "nothing wasted, only later"
            );
        }
    }
}
