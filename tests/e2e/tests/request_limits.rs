//! End-to-end: Intuit's request limits and its monthly metering.
//!
//! - The shared limiter keeps every session of a realm within 10 requests in any second: the
//!   emulator enforces Intuit's per-second rule (`--rate-limit-per-second`) and logs each request's
//!   arrival (`at_us`), so the test counts the busiest second itself.
//! - Every request pg_qbo sends (pages, counts, token refreshes, retries included) is counted per
//!   month, app, realm and kind in `qbo.api_usage` and per run in `qbo.runs.requests_*`, exactly as
//!   the emulator saw them.
//! - `qbo.monthly_request_budget` warns, then refuses with SQLSTATE 53400, and a raised budget lets
//!   the run resume; operators read the counts but cannot write them or lift the budget.

use pg_qbo_e2e::*;
use serde_json::Value;
use std::collections::BTreeMap;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

/// The most requests of the log that arrived within one second of each other (a sliding window
/// over their arrival times).
fn busiest_second(log: &[&Value]) -> usize {
    let mut at: Vec<i64> = log
        .iter()
        .map(|e| e["at_us"].as_i64().expect("at_us"))
        .collect();
    at.sort_unstable();
    let (mut best, mut first) = (0, 0);
    for last in 0..at.len() {
        while at[last] - at[first] >= 1_000_000 {
            first += 1;
        }
        best = best.max(last - first + 1);
    }
    best
}

/// The kind pg_qbo counts a logged request as: `token`, `count` or `query`.
fn kind(e: &Value) -> &'static str {
    if e["endpoint"] == "token" {
        "token"
    } else if e["query"]
        .as_str()
        .unwrap_or("")
        .to_ascii_uppercase()
        .contains("COUNT(*)")
    {
        "count"
    } else {
        "query"
    }
}

/// Requests of the log per kind (query requests of `realm` and token requests).
fn per_kind(log: &[Value], realm: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for e in log {
        if e["endpoint"] == "token" || (e["endpoint"] == "query" && e["realm"] == realm) {
            *m.entry(kind(e).to_owned()).or_default() += 1;
        }
    }
    m
}

/// Two sessions backfill two entities of realm 1 at once, each after `set`; returns what each
/// CALL gave.
fn two_sessions(db: &str, set: &str) -> Vec<Result<(), String>> {
    // small pages: enough requests to pass 10 a second if nothing paced them (offsets read a
    // window's pages all at once)
    // both CALLs start together, once both sessions are connected and set
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = [("Invoice", 20), ("Bill", 20)]
        .into_iter()
        .map(|(entity, page)| {
            let (db, set) = (db.to_owned(), set.to_owned());
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = connect(&db);
                c.batch_execute(&set).unwrap();
                barrier.wait();
                c.query_one(
                    "CALL qbo.run_backfill($1, $2::text::timestamptz, $3::text::timestamptz, 30, $4)",
                    &[&entity, &FROM, &TO, &page],
                )
                .map(|_| ())
                .map_err(|e| {
                    let msg = e.as_db_error().map(|d| d.message().to_owned());
                    format!("{entity}: {}", msg.unwrap_or_else(|| e.to_string()))
                })
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Realm 1's query requests of the log, and whether the two entities' requests met: overlapped in
/// time, or one session's first requests came within one of the limiter's per-second windows
/// (1.2 s) of the other's last, so the shared rule decided between them. (With answers read as
/// soon as they arrive, a session whose window is small can take a whole first second and be
/// done just as the other's first request is admitted, 3 ms later: seen once in five runs.)
fn realm_queries(log: &[Value]) -> (Vec<&Value>, bool) {
    let q: Vec<&Value> = log
        .iter()
        .filter(|e| e["endpoint"] == "query" && e["realm"] == REALM1)
        .collect();
    let span = |entity: &str| {
        let at: Vec<i64> = q
            .iter()
            .filter(|e| e["query"].as_str().unwrap_or("").contains(entity))
            .map(|e| e["at_us"].as_i64().unwrap())
            .collect();
        (
            at.iter().min().copied().unwrap_or(0),
            at.iter().max().copied().unwrap_or(0),
        )
    };
    let (a, b) = (span("FROM Invoice"), span("FROM Bill"));
    println!(
        "Invoice requests from {} to {} us, Bill from {} to {} us",
        a.0, a.1, b.0, b.1
    );
    const WINDOW_US: i64 = 1_200_000;
    (q, a.0 < b.1 + WINDOW_US && b.0 < a.1 + WINDOW_US)
}

#[test]
fn two_sessions_of_one_realm_never_send_more_than_10_requests_in_a_second() {
    let emu = Emulator::start(&["--seed", "91", "--rate-limit-per-second", "10"]);
    let c = fresh_db("e2e_per_second", &emu);
    drop(c);
    // Intuit's limit, and pg_qbo's default (the harness lifts it for other suites)
    let results = two_sessions("e2e_per_second", "SET qbo.max_requests_per_second = 10");
    let log = emu.requests(0);
    let (q, overlapped) = realm_queries(&log);
    let busiest = busiest_second(&q);
    let stats = emu.stats();
    println!(
        "paced: {} requests of realm 1, busiest second {busiest}, 429s {} (per second {}), runs {results:?}",
        q.len(),
        stats["throttled_429"],
        stats["throttled_per_second"]
    );
    assert!(busiest <= 10, "busiest second: {busiest}");
    assert_eq!(stats["throttled_429"], 0, "{stats}");
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert!(overlapped, "the two sessions' requests met");
    assert!(
        q.len() > 40,
        "enough requests to exceed 10 a second unpaced"
    );
}

/// The control: the same two sessions with the limiter's per-second rule lifted (1000) meet the
/// emulator's 10 a second (429s, retried).
#[test]
fn without_the_per_second_rule_the_same_sessions_are_throttled() {
    let emu = Emulator::start(&["--seed", "91", "--rate-limit-per-second", "10"]);
    let c = fresh_db("e2e_per_second_off", &emu);
    drop(c);
    let results = two_sessions(
        "e2e_per_second_off",
        "SET qbo.max_requests_per_second = 1000; SET qbo.max_retries = 20;
         SET qbo.backoff_base_ms = 200; SET qbo.backoff_cap_ms = 1000",
    );
    let log = emu.requests(0);
    let (q, overlapped) = realm_queries(&log);
    let busiest = busiest_second(&q);
    let stats = emu.stats();
    println!(
        "unpaced: {} requests of realm 1 (429s included), busiest second {busiest}, 429s {} (per second {}), runs {results:?}",
        q.len(),
        stats["throttled_429"],
        stats["throttled_per_second"]
    );
    assert!(overlapped, "the two sessions' requests met");
    assert!(busiest > 10, "busiest second: {busiest}");
    assert!(
        stats["throttled_per_second"].as_u64().unwrap() > 0,
        "{stats}"
    );
}

#[test]
fn api_usage_and_each_runs_counts_equal_the_emulators_log_per_kind() {
    // a 500 (retried) and a 401 (a token refresh, then sent again) on the way
    let emu = Emulator::start(&["--seed", "92", "--faults", "500json@nth=4,401@nth=9"]);
    let mut c = fresh_db("e2e_api_usage", &emu);
    let start = emu.last_seq();
    let run1: i64 = c
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
            &[&FROM, &TO],
        )
        .unwrap()
        .get(0);
    let middle = emu.last_seq();
    // the second run in a background worker, with a token refresh of its own
    c.batch_execute(
        "UPDATE qbo._connections SET access_token = NULL, access_token_expires_at = NULL",
    )
    .unwrap();
    c.query(
        "SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60, page_size => 20)",
        &[&FROM, &TO],
    )
    .unwrap();
    let run2: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    let log = emu.requests(start);
    let (log1, log2): (Vec<Value>, Vec<Value>) = log
        .into_iter()
        .partition(|e| e["seq"].as_u64().unwrap() <= middle);
    let seen1 = per_kind(&log1, REALM1);
    let seen2 = per_kind(&log2, REALM1);
    let mut seen = seen1.clone();
    for (k, n) in &seen2 {
        *seen.entry(k.clone()).or_default() += n;
    }
    let stats = emu.stats();
    println!(
        "emulator: run {run1} {seen1:?}, run {run2} {seen2:?}; faults {}",
        stats["faults_injected"]
    );
    assert_eq!(
        seen1.get("token"),
        Some(&2),
        "the first refresh and the one after the 401"
    );
    assert_eq!(seen2.get("token"), Some(&1));
    assert_eq!(
        stats["faults_injected"].as_object().map(|m| m.len()),
        Some(2),
        "{stats}"
    );
    let usage: BTreeMap<String, i64> = c
        .query(
            "SELECT kind, sum(requests)::bigint FROM qbo.api_usage
              WHERE client_id = 'emu-client-id' AND realm_id = $1 GROUP BY kind",
            &[&REALM1],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!("qbo.api_usage: {usage:?}");
    assert_eq!(usage, seen);
    let total: i64 = c
        .query_one(
            "SELECT DISTINCT app_month_requests FROM qbo.api_usage WHERE month = date_trunc('month', now() AT TIME ZONE 'UTC')::date",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, seen.values().sum::<i64>());
    for (run, seen) in [(run1, &seen1), (run2, &seen2)] {
        let r = c
            .query_one(
                "SELECT requests_query, requests_count, requests_token FROM qbo.runs WHERE run_id = $1",
                &[&run],
            )
            .unwrap();
        let on_run: BTreeMap<String, i64> = [
            ("count", r.get::<_, i64>(1)),
            ("query", r.get(0)),
            ("token", r.get(2)),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        println!("run {run}: {on_run:?}");
        assert_eq!(&on_run, seen, "run {run}");
    }
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
}

/// The month (UTC) as `YYYY-MM`, and the next one.
fn months(c: &mut postgres::Client) -> (String, String) {
    let r = c
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM'),
                    to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYY-MM')",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn the_monthly_budget_warns_refuses_and_lifts_when_raised() {
    const DB: &str = "e2e_budget";
    let emu = Emulator::start(&["--seed", "93"]);
    let mut admin = fresh_db(DB, &emu);
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = std::sync::Arc::clone(&notices);
    let mut cfg: postgres::Config =
        format!("host=127.0.0.1 port={} user=postgres dbname={DB}", port())
            .parse()
            .unwrap();
    cfg.notice_callback(move |n| {
        if n.severity() == "WARNING" {
            sink.lock().unwrap().push(n.message().to_owned());
        }
    });
    let mut c = cfg.connect(postgres::NoTls).unwrap();
    let (month, next) = months(&mut c);
    // one request per admission (sequential), so the count at the warning is exact
    c.batch_execute(
        "SET qbo.max_in_flight = 1; SET qbo.monthly_request_budget = 20;
         SET qbo.monthly_request_warn_percent = 50",
    )
    .unwrap();
    let start = emu.last_seq();
    let e = c
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 20)",
            &[&FROM, &TO],
        )
        .expect_err("past the budget");
    let run: i64 = admin
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    let (code, msg) = db_error(e);
    println!("{code}: {msg}");
    let refused = |run: i64| {
        format!(
            "run {run}: monthly request budget used up: the app of connection \"default\" has sent 20 requests to QuickBooks in {month} (UTC) and qbo.monthly_request_budget = 20; a superuser may raise qbo.monthly_request_budget, or wait for {next}; resume with SELECT * FROM qbo.resume({run}) or CALL qbo.run_resume({run})"
        )
    };
    assert_eq!((code.as_str(), msg.clone()), ("53400", refused(run)));
    let warnings = notices.lock().unwrap().clone();
    println!("warnings: {warnings:?}");
    assert_eq!(
        warnings,
        vec![format!(
            "run {run}: the app of connection \"default\" has sent 10 requests to QuickBooks in {month} (UTC), 50% of qbo.monthly_request_budget = 20; past it new requests are refused (see qbo.api_usage)"
        )]
    );
    // the run failed resumable, having sent exactly 20 requests (the emulator agrees) and written
    // every page it was answered
    let r = admin
        .query_one(
            "SELECT status, error_sqlstate, error, requests_query + requests_count + requests_token,
                    -- pages written: one transaction each (a page carrying records of two chunks
                    -- has a qbo.run_pages row in each)
                    (SELECT count(DISTINCT committed_at) FROM qbo.run_pages WHERE run_id = $1),
                    (SELECT sum(rows)::bigint FROM qbo.run_chunks WHERE run_id = $1)
               FROM qbo.runs WHERE run_id = $1",
            &[&run],
        )
        .unwrap();
    let log = emu.requests(start);
    let answered_pages = log
        .iter()
        .filter(|e| e["endpoint"] == "query" && kind(e) == "query" && e["status"] == 200)
        .count() as i64;
    println!(
        "run {run}: {:?} {:?}, {} requests counted, {} pages written, {answered_pages} pages answered",
        r.get::<_, String>(0),
        r.get::<_, String>(1),
        r.get::<_, i64>(3),
        r.get::<_, i64>(4)
    );
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        ),
        ("failed".to_owned(), "53400".to_owned(), refused(run))
    );
    assert_eq!(r.get::<_, i64>(3), 20);
    assert_eq!(per_kind(&log, REALM1).values().sum::<i64>(), 20);
    assert_eq!(
        r.get::<_, i64>(4),
        answered_pages,
        "every page answered was written"
    );
    let n: i64 = admin
        .query_one("SELECT count(*) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, r.get::<_, i64>(5));

    // a background worker reads the budget of ALTER DATABASE: a new run is refused at once
    admin
        .batch_execute(&format!(
            "LOAD 'pg_qbo'; ALTER DATABASE {DB} SET qbo.monthly_request_budget = 20"
        ))
        .unwrap();
    let mut w = connect(DB);
    let e = w
        .query(
            "SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)",
            &[&FROM, &TO],
        )
        .expect_err("past the budget");
    let run2: i64 = admin
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    let (code, msg) = db_error(e);
    println!("{code}: {msg}");
    assert_eq!((code.as_str(), msg), ("53400", refused(run2)));

    // raised: both resume to the end
    c.batch_execute("SET qbo.monthly_request_budget = 100000")
        .unwrap();
    c.query("CALL qbo.run_resume($1)", &[&run])
        .expect("resume after the budget was raised");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {DB} SET qbo.monthly_request_budget = 100000"
        ))
        .unwrap();
    let mut w = connect(DB);
    w.query("SELECT * FROM qbo.resume($1)", &[&run2])
        .expect("worker resume after the budget was raised");
    assert_eq!(
        raw(&mut admin, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    assert_eq!(
        raw(&mut admin, "qb_customers", REALM1),
        truth_in_window(&emu, REALM1, "Customer", FROM, TO)
    );
    let counted: i64 = admin
        .query_one(
            "SELECT sum(requests)::bigint FROM qbo.api_usage WHERE client_id = 'emu-client-id'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        counted,
        per_kind(&emu.requests(start), REALM1).values().sum::<i64>()
    );
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {DB} RESET qbo.monthly_request_budget"
        ))
        .unwrap();
}

/// Refused with requests in flight (10 at a time, each answered after 150 ms): nothing more is
/// sent, the answers of those in flight are waited for and every page answered is written, so
/// the budget pays for nothing that is thrown away.
#[test]
fn a_run_refused_with_requests_in_flight_writes_every_page_it_was_answered() {
    const DB: &str = "e2e_budget_in_flight";
    let emu = Emulator::start(&["--seed", "95", "--latency-ms", "150"]);
    let mut c = fresh_db(DB, &emu);
    c.batch_execute("SET qbo.monthly_request_budget = 25")
        .unwrap();
    let start = emu.last_seq();
    let e = c
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 20)",
            &[&FROM, &TO],
        )
        .expect_err("past the budget");
    let (code, msg) = db_error(e);
    println!("{code}: {msg}");
    assert_eq!(code, "53400");
    assert!(msg.contains("has sent 25 requests"), "{msg}");
    let log = emu.requests(start);
    let answered_pages = log
        .iter()
        .filter(|e| e["endpoint"] == "query" && kind(e) == "query" && e["status"] == 200)
        .count() as i64;
    let r = c
        .query_one(
            "SELECT (SELECT count(DISTINCT committed_at) FROM qbo.run_pages p WHERE p.run_id = r.run_id),
                    (SELECT sum(rows)::bigint FROM qbo.run_chunks c WHERE c.run_id = r.run_id),
                    (SELECT count(*) FROM raw.qb_invoices),
                    r.requests_query + r.requests_count + r.requests_token
               FROM qbo.runs r ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .unwrap();
    let (pages, rows, stored, counted): (i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    println!(
        "{} requests sent, {counted} counted; {answered_pages} pages answered, {pages} written ({rows} rows, {stored} stored); most in flight {}",
        per_kind(&log, REALM1).values().sum::<i64>(),
        emu.stats()["max_concurrent_seen"]
    );
    assert_eq!(per_kind(&log, REALM1).values().sum::<i64>(), 25);
    assert_eq!(counted, 25);
    assert!(answered_pages > 0);
    assert_eq!(pages, answered_pages, "every page answered was written");
    assert_eq!(rows, stored);
}

/// Operators and readers read `qbo.api_usage`; neither can write the count, run the limiter's
/// functions, or lift a limit or the budget, not even with a value given at connection start
/// (PGOPTIONS), which pg_qbo discards in favour of the superuser's.
#[test]
fn operators_read_the_counts_but_cannot_write_them_or_lift_the_budget() {
    const DB: &str = "e2e_budget_roles";
    let emu = Emulator::start(&["--seed", "94"]);
    let mut admin = fresh_db(DB, &emu);
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qbo_op_budget') THEN CREATE ROLE qbo_op_budget LOGIN; END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qbo_ro_budget') THEN CREATE ROLE qbo_ro_budget LOGIN; END IF;
             END $$;
             SELECT qbo.grant_operator('qbo_op_budget'); SELECT qbo.grant_reader('qbo_ro_budget');
             SELECT qbo.grant_connection('default', 'qbo_op_budget');",
        )
        .unwrap();
    admin
        .query_one(
            "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 60, 1000)",
            &[&FROM, &TO],
        )
        .unwrap();
    let used: i64 = admin
        .query_one("SELECT sum(requests)::bigint FROM qbo._api_usage", &[])
        .unwrap()
        .get(0);
    for role in ["qbo_op_budget", "qbo_ro_budget"] {
        let mut r = as_role(DB, role);
        let seen: i64 = r
            .query_one("SELECT sum(requests)::bigint FROM qbo.api_usage", &[])
            .unwrap()
            .get(0);
        assert_eq!(seen, used, "{role} reads qbo.api_usage");
        // pg_qbo loaded in the session (qbo.entities calls into it): its settings are known
        r.query_one("SELECT count(*) FROM qbo.entities", &[])
            .unwrap();
        for (sql, want) in [
            ("SELECT * FROM qbo._api_usage", "permission denied for table _api_usage"),
            ("UPDATE qbo._api_usage SET requests = 0", "permission denied for table _api_usage"),
            ("DELETE FROM qbo._api_usage", "permission denied for table _api_usage"),
            ("INSERT INTO qbo._api_usage VALUES ('2020-01-01', 'x', '1', 'query', -1000000)", "permission denied for table _api_usage"),
            ("SELECT qbo._api_count('emu-client-id', '9341452000000001', 'query', NULL)", "permission denied for function _api_count"),
            ("SELECT * FROM qbo._api_admit('9341452000000001', '{}', 10, 500, 10, '{}', 'x', NULL, 0)", "permission denied for function _api_admit"),
            ("SET qbo.monthly_request_budget = 0", "permission denied to set parameter \"qbo.monthly_request_budget\""),
            ("SET qbo.monthly_request_warn_percent = 100", "permission denied to set parameter \"qbo.monthly_request_warn_percent\""),
            ("SET qbo.max_requests_per_second = 1000", "permission denied to set parameter \"qbo.max_requests_per_second\""),
            (&format!("ALTER ROLE {role} SET qbo.monthly_request_budget = 0"), "permission denied to set parameter \"qbo.monthly_request_budget\""),
        ] {
            let e = r.batch_execute(sql).expect_err(sql);
            assert_eq!(db_error(e).1, want, "{role}: {sql}");
        }
    }
    // the budget a superuser set for the database holds against a value given at connection start
    admin
        .batch_execute(&format!(
            "LOAD 'pg_qbo'; ALTER DATABASE {DB} SET qbo.monthly_request_budget = {used};
             ALTER DATABASE {DB} SET qbo.max_requests_per_second = 7"
        ))
        .unwrap();
    let mut op = postgres::Config::new()
        .host("127.0.0.1")
        .port(port())
        .user("qbo_op_budget")
        .dbname(DB)
        .options("-c qbo.monthly_request_budget=0 -c qbo.max_requests_per_second=1000")
        .connect(postgres::NoTls)
        .unwrap();
    for sql in [
        "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-09-11Z', 60, 1000)",
        "SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-09-11Z', chunk_size => 60)",
    ] {
        let e = op.batch_execute(sql).expect_err(sql);
        let (code, msg) = db_error(e);
        println!("operator with PGOPTIONS: {code}: {msg}");
        assert_eq!(code, "53400", "{sql}: {msg}");
        assert!(
            msg.contains(&format!("has sent {used} requests")),
            "{sql}: {msg}"
        );
    }
    let per_second: String = admin
        .query_one(
            "SELECT settings->>'max_requests_per_second' FROM qbo.runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        per_second, "7",
        "the operator's PGOPTIONS did not lift the per-second limit the superuser set"
    );
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {DB} RESET qbo.monthly_request_budget"
        ))
        .unwrap();
}
