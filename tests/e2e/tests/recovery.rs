//! End-to-end: cancel, statement_timeout, a terminated backend, a vanished caller — each hit at an
//! exact point with the emulator's barrier — and resume back to the truth.

use pg_qbo_e2e::*;
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

fn status(c: &mut postgres::Client, run_id: i64) -> String {
    c.query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0)
}

fn wait_status(c: &mut postgres::Client, run_id: i64, want: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let _ = c.execute("SELECT qbo._mark_interrupted()", &[]);
        let s = status(c, run_id);
        if s == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "run {run_id} stayed {s}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish_with_resume(c: &mut postgres::Client, emu: &Emulator, run_id: i64) {
    let rows = c.query("SELECT * FROM qbo.resume($1)", &[&run_id]).unwrap();
    let v = sum_rows(&rows);
    let truth = truth_in_window(emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(c, "qb_invoices", REALM1), truth);
    assert_eq!(v.rows, truth.len() as i64, "{v:?}");
    assert_eq!(
        v.inserted,
        truth.len() as i64,
        "nothing was inserted twice: {v:?}"
    );
    assert_eq!(status(c, run_id), "succeeded");
}

#[test]
fn cancel_of_call_waiting_on_http_leaves_run_cancelled_and_session_usable() {
    let emu = Emulator::start(&["--seed", "21"]);
    let mut c = fresh_db("e2e_cancel_call", &emu);
    let mut other = connect("e2e_cancel_call");
    // sequential: "the pages before the held one" is then an exact number
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    emu.hold(4);
    let worker = std::thread::spawn(move || {
        let r = c.query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        );
        (
            r.map(|_| ())
                .map_err(|e| e.as_db_error().map(|d| d.message().to_owned())),
            c,
        )
    });
    emu.wait_held();
    let t0 = Instant::now();
    other
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    let (r, mut c) = worker.join().unwrap();
    let latency = t0.elapsed();
    println!("cancel during an HTTP wait took {latency:?}");
    assert_eq!(
        r,
        Err(Some("canceling statement due to user request".to_owned()))
    );
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    emu.release();
    assert_eq!(status(&mut c, 1), "cancelled");
    let kept: i64 = c
        .query_one("SELECT count(*) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    // pages committed: one transaction each (a page carrying records of two chunks has a
    // qbo.run_pages row in each)
    let pages: i64 = c
        .query_one(
            "SELECT count(DISTINCT committed_at) FROM qbo.run_pages WHERE run_id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        pages, 3,
        "the three pages before the held one are committed"
    );
    assert!(kept > 0);
    finish_with_resume(&mut c, &emu, 1);
}

#[test]
fn statement_timeout_during_a_backoff_sleep_cancels_the_srf_run() {
    let emu = Emulator::start(&["--seed", "22"]);
    let mut c = fresh_db("e2e_timeout", &emu);
    // every request after the 3rd is throttled with Retry-After 30 s: the worker sleeps in a backoff
    emu.faults("429json-ra=30/every=1");
    emu.faults("");
    c.batch_execute("SET qbo.backoff_base_ms = 30000; SET qbo.backoff_cap_ms = 30000; SET qbo.retry_after_cap_ms = 30000").unwrap();
    emu.faults("429json-ra=30@nth=3");
    c.batch_execute("SET statement_timeout = '1500ms'").unwrap();
    let t0 = Instant::now();
    let err = c
        .query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)", &[&FROM, &TO])
        .expect_err("statement_timeout");
    let took = t0.elapsed();
    println!("statement_timeout 1.5 s during a 30 s backoff returned after {took:?}");
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert_eq!(msg, "canceling statement due to statement timeout (run 1 was stopped; continue it with SELECT * FROM qbo.resume(1))");
    assert!(took < Duration::from_secs(8), "{took:?}");
    c.batch_execute("RESET statement_timeout").unwrap();
    let t = wait_status(&mut c, 1, "cancelled");
    println!("run marked cancelled {t:?} after the error");
    c.batch_execute(
        "RESET qbo.backoff_base_ms; RESET qbo.backoff_cap_ms; RESET qbo.retry_after_cap_ms",
    )
    .unwrap();
    emu.faults("");
    // resume reuses the run's stored settings (long backoff) but no fault is left
    finish_with_resume(&mut c, &emu, 1);
}

#[test]
fn terminated_backend_is_reported_interrupted_and_resumes_to_truth() {
    let emu = Emulator::start(&["--seed", "23"]);
    let mut c = fresh_db("e2e_terminate", &emu);
    let mut other = connect("e2e_terminate");
    // sequential: the held page is then the only one in flight
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    emu.hold(5);
    let worker = std::thread::spawn(move || {
        c.query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)", &[&FROM, &TO])
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let held = emu.wait_held();
    other
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(worker.join().unwrap().is_err());
    emu.release();
    wait_status(&mut other, 1, "interrupted");
    let err: String = other
        .query_one("SELECT error FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert!(
        err.starts_with("run 1 was interrupted: its process (pid "),
        "{err}"
    );
    let seq = emu.last_seq();
    finish_with_resume(&mut other, &emu, 1);
    // the resume re-fetched the held page first, not the four committed ones before it
    let first = emu
        .requests(seq)
        .into_iter()
        .find(|r| r["endpoint"] == "query")
        .unwrap();
    assert_eq!(first["query"], held["query"]);
}

#[test]
fn caller_of_backfill_terminated_stops_the_worker_and_run_is_cancelled() {
    let emu = Emulator::start(&["--seed", "24"]);
    let mut c = fresh_db("e2e_leader", &emu);
    let mut other = connect("e2e_leader");
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    emu.hold(3);
    let worker = std::thread::spawn(move || {
        c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)", &[&FROM, &TO])
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    emu.wait_held();
    other
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(worker.join().unwrap().is_err());
    let t = wait_status(&mut other, 1, "cancelled");
    println!("worker noticed its caller was gone and cancelled the run in {t:?}");
    emu.release();
    let t0 = Instant::now();
    while other
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_qbo backfill' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the worker did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    finish_with_resume(&mut other, &emu, 1);
}

#[test]
fn a_backing_off_run_shows_it_in_the_ledger_while_it_waits() {
    let emu = Emulator::start(&["--seed", "25"]);
    let mut c = fresh_db("e2e_progress", &emu);
    let mut other = connect("e2e_progress");
    emu.faults("429json-ra=2@nth=3");
    c.batch_execute("SET qbo.retry_after_cap_ms = 5000; SET qbo.backoff_cap_ms = 5000")
        .unwrap();
    let worker = std::thread::spawn(move || {
        c.query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)", &[&FROM, &TO])
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let t0 = Instant::now();
    let progress = loop {
        let p: Option<(String, String)> = other
            .query_opt(
                "SELECT detail, state FROM qbo.progress WHERE run_id = 1 AND detail IS NOT NULL",
                &[],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1)));
        if let Some((p, state)) = p.filter(|p| p.0.contains("backing off")) {
            // the 2 s wait has just started: the view says why the run is not moving
            assert_eq!(state, "waiting for throttle");
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no backoff progress was committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("progress seen from another session: {progress}");
    assert!(progress.starts_with("chunk "), "{progress}");
    assert!(
        progress.ends_with(
            ": backing off 2.00 s after HTTP 429 (throttled, wait 1 of at most 70000 ms; retries this execution: 1)"
        ),
        "{progress}"
    );
    worker.join().unwrap().unwrap();
    let (status, p): (String, Option<String>) = {
        let r = other
            .query_one(
                "SELECT status, progress FROM qbo.runs WHERE run_id = 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), p), ("succeeded", None));
}

#[test]
fn another_session_sees_qbo_progress_move_while_a_slow_run_advances() {
    let emu = Emulator::start(&["--seed", "26", "--latency-ms", "60"]);
    let mut c = fresh_db("e2e_watch", &emu);
    // two pages in flight: offsets would read every page of the window in one round trip, too fast
    // to watch
    c.batch_execute("SET qbo.max_in_flight = 2").unwrap();
    let mut other = connect("e2e_watch");
    let worker = std::thread::spawn(move || {
        c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 40)", &[&FROM, &TO])
            .map(|r| r.len())
            .map_err(|e| e.to_string())
    });
    let mut seen: Vec<(i64, String, Option<String>)> = Vec::new();
    let mut most_running = 0;
    let t0 = Instant::now();
    loop {
        if let Some(r) = other
            .query_opt(
                "SELECT pages, state, format('%s/%s', chunk, chunks_total), eta::text,
                               chunks_done, chunks_running, chunks_total, live, status
                          FROM qbo.progress WHERE run_id = 1",
                &[],
            )
            .unwrap()
        {
            let pages: i64 = r.get(0);
            let state: String = r.get(1);
            let (done, running, total): (i32, i32, i32) = (r.get(4), r.get(5), r.get(6));
            let (live, status): (bool, String) = (r.get(7), r.get(8));
            assert!(
                done + running <= total,
                "{done} done + {running} running of {total}"
            );
            assert_eq!(
                live,
                status == "running",
                "a run is live exactly while it runs ({status})"
            );
            most_running = most_running.max(running);
            if seen.last().map(|l| l.0) != Some(pages) {
                seen.push((
                    pages,
                    format!("{state} chunk {}", r.get::<_, String>(2)),
                    r.get(3),
                ));
            }
            if state == "succeeded" {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "run did not finish: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(worker.join().unwrap().is_ok());
    println!("qbo.progress as seen from another session: {seen:?}; at most {most_running} chunks running at once");
    // consecutive chunks are read as one window: the chunk it is in runs, the ones before it are
    // done as soon as they are written
    assert!(
        most_running >= 1,
        "qbo.progress says which chunks are being worked on (chunks_running)"
    );
    let moving: Vec<&(i64, String, Option<String>)> = seen
        .iter()
        .filter(|s| s.1.starts_with("fetching and upserting"))
        .collect();
    assert!(
        moving.len() >= 5,
        "progress moved through {} distinct page counts: {seen:?}",
        moving.len()
    );
    assert!(
        moving.windows(2).all(|w| w[0].0 < w[1].0),
        "pages only grow"
    );
    // the window is read by offsets, so its chunks finish together at its end: the ETA comes from
    // the records read against the window's count meanwhile
    assert!(
        moving.iter().any(|s| s.0 > 0 && s.2.is_some()),
        "an ETA while the window is read: {seen:?}"
    );
    assert!(
        moving.iter().any(|s| s.2.is_some()),
        "an ETA appears once a chunk is done"
    );
}

fn cancel_after(other: &mut postgres::Client, pid: i32) -> Instant {
    let t0 = Instant::now();
    other
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    t0
}

#[test]
fn cancel_latency_during_a_hanging_response_and_during_an_upsert_waiting_on_a_row_lock() {
    let emu = Emulator::start(&["--seed", "27"]);
    let mut c = fresh_db("e2e_cancel_more", &emu);
    let mut other = connect("e2e_cancel_more");
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);

    // 1. a response that never comes (the HTTP timeout is a minute away)
    c.batch_execute("SET qbo.http_timeout_ms = 60000").unwrap();
    emu.faults("hang@nth=3");
    let h = std::thread::spawn(move || {
        let r = c.query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)", &[&FROM, &TO]);
        (
            r.map(|_| ())
                .map_err(|e| e.as_db_error().map(|d| d.message().to_owned())),
            c,
        )
    });
    let t_wait = Instant::now();
    while emu.stats()["faults_injected"]["hang"].as_i64().unwrap_or(0) == 0 {
        assert!(
            t_wait.elapsed() < Duration::from_secs(20),
            "the hang was never reached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200)); // the client is now waiting on the hung response
    let t0 = cancel_after(&mut other, pid);
    let (r, mut c) = h.join().unwrap();
    let hang_latency = t0.elapsed();
    assert_eq!(
        r,
        Err(Some("canceling statement due to user request".to_owned()))
    );
    assert_eq!(status(&mut c, 1), "cancelled");
    emu.faults("");
    finish_with_resume(&mut c, &emu, 1);

    // 2. an upsert blocked on a row lock held by another session
    let id: String = c
        .query_one("SELECT min(id) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"realm": REALM1, "entity": "Invoice", "op": "update", "ids": [id]}),
    );
    let mut locker = connect("e2e_cancel_more");
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM raw.qb_invoices WHERE id = '{id}' FOR UPDATE"
        ))
        .unwrap();
    let until: String = c
        .query_one("SELECT (now() + interval '1 day')::text", &[])
        .unwrap()
        .get(0);
    let h = std::thread::spawn(move || {
        let r = c.query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 400, 1000)", &[&FROM, &until]);
        (
            r.map(|_| ())
                .map_err(|e| e.as_db_error().map(|d| d.message().to_owned())),
            c,
        )
    });
    let t_wait = Instant::now();
    loop {
        let waiting: i64 = other
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            t_wait.elapsed() < Duration::from_secs(20),
            "the upsert never blocked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = cancel_after(&mut other, pid);
    let (r, mut c) = h.join().unwrap();
    let upsert_latency = t0.elapsed();
    assert_eq!(
        r,
        Err(Some("canceling statement due to user request".to_owned()))
    );
    locker.batch_execute("ROLLBACK").unwrap();
    let run2: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(status(&mut c, run2), "cancelled");
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1, "the session is usable after the cancel");
    println!("cancel latency: hung response {hang_latency:?}, upsert waiting on a row lock {upsert_latency:?}");
    assert!(hang_latency < Duration::from_secs(5) && upsert_latency < Duration::from_secs(5));
}

#[test]
fn a_terminated_worker_is_reported_to_its_caller_and_the_run_resumes() {
    let emu = Emulator::start(&["--seed", "28"]);
    let mut c = fresh_db("e2e_worker_killed", &emu);
    let mut other = connect("e2e_worker_killed");
    emu.hold(3);
    let h = std::thread::spawn(move || {
        let r = c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)", &[&FROM, &TO]);
        (
            r.map(|_| ())
                .map_err(|e| e.as_db_error().map(|d| d.message().to_owned())),
            c,
        )
    });
    emu.wait_held();
    let killed: i64 = other
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'pg_qbo backfill' AND datname = current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let (r, mut c) = h.join().unwrap();
    emu.release();
    assert_eq!(
        r,
        Err(Some("run 1 was interrupted: its background worker ended without finishing (terminated, or see the server log); resume it with SELECT * FROM qbo.resume(1) or CALL qbo.run_resume(1)".to_owned()))
    );
    wait_status(&mut c, 1, "interrupted");
    finish_with_resume(&mut c, &emu, 1);
}

#[test]
fn a_run_cancelled_inside_a_bulk_second_resumes_from_its_id_table() {
    // 3000 invoices: one second holds 1061 of them, read by STARTPOSITION in pages of 100 whose
    // ties the emulator shuffles on every request, so it takes several passes; hold a request of
    // a later pass, cancel, and resume: nothing taken twice, nothing missed. The time cursor reads
    // such a second (`qbo.max_in_flight = 1`, the sequential pager); offsets read it in Id order.
    let emu = Emulator::start(&["--seed", "25", "--records", "Invoice=3000"]);
    let mut c = fresh_db("e2e_bulk_resume", &emu);
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    let mut other = connect("e2e_bulk_resume");
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    // pass 1 is 11 pages, then a recount: the 15th request of the second is in pass 2
    let (second, _) = bulk_second(&emu, &mut c);
    emu.hold_matching(15, &format!("LastUpdatedTime = '{second}'"));
    let worker = std::thread::spawn(move || {
        let r = c.query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
            &[&FROM, &TO],
        );
        (
            r.map(|_| ())
                .map_err(|e| e.as_db_error().map(|d| d.message().to_owned())),
            c,
        )
    });
    emu.wait_held();
    // let the pages already fetched be written, then look at what a resume would start from
    let t0 = Instant::now();
    let (ids, cursor): (i64, String) = loop {
        let row = other
            .query_one(
                "SELECT (SELECT count(*) FROM qbo._second_ids WHERE run_id = 1),
                        (SELECT cursor::text FROM qbo.run_chunks
                          WHERE run_id = 1 AND cursor::text LIKE '%ids_in_table%')",
                &[],
            )
            .unwrap();
        let cursor: Option<String> = row.get(1);
        if let (n, Some(text)) = (row.get::<_, i64>(0), cursor) {
            if n >= 500 {
                break (n, text);
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no Id table rows");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "held in a later pass: {ids} Ids in the table, the chunk's cursor {} bytes",
        cursor.len()
    );
    assert!(cursor.len() < 4000, "{cursor}");
    other
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    let (r, mut c) = worker.join().unwrap();
    assert_eq!(
        r,
        Err(Some("canceling statement due to user request".to_owned()))
    );
    emu.release();
    assert_eq!(status(&mut c, 1), "cancelled");
    finish_with_resume(&mut c, &emu, 1);
    let left: i64 = c
        .query_one("SELECT count(*) FROM qbo._second_ids", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the Id table is emptied when its chunk completes");
}

/// `DROP EXTENSION` while a CALL waits on QBO: the run ends with its own error, naming the run,
/// not with an error of its cleanup (which finds the ledger and the limiter gone); the session
/// stays usable. Errors Postgres raises inside pg_qbo carry no Rust backtrace in DETAIL.
#[test]
fn drop_extension_during_a_call_ends_it_with_its_own_error() {
    let emu = Emulator::start(&["--seed", "27"]);
    let mut c = fresh_db("e2e_drop_ext", &emu);
    let mut other = connect("e2e_drop_ext");
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    emu.hold(3);
    let worker = std::thread::spawn(move || {
        let r = c.query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        );
        (
            r.map(|_| ()).map_err(|e| {
                let d = e.as_db_error().expect("a database error");
                (
                    d.code().code().to_owned(),
                    d.message().to_owned(),
                    d.detail().map(str::to_owned),
                )
            }),
            c,
        )
    });
    emu.wait_held();
    other
        .batch_execute("SET lock_timeout = '20s'; DROP EXTENSION pg_qbo")
        .expect("DROP EXTENSION while the run waits on QBO");
    emu.release();
    let (r, mut c) = worker.join().unwrap();
    let (code, msg, detail) = r.expect_err("the run cannot go on without its ledger");
    println!("{code}: {msg}");
    // whichever of pg_qbo's objects the run met first: a ledger table or the upsert's function
    assert!(["42P01", "42883"].contains(&code.as_str()), "{code}");
    assert!(msg.starts_with("run 1: "), "{msg}");
    assert!(
        msg.contains(" does not exist; resume with SELECT * FROM qbo.resume(1)"),
        "{msg}"
    );
    assert!(
        msg.ends_with("(the run could not be marked in qbo.runs: is pg_qbo still installed in this database?)"),
        "{msg}"
    );
    assert_eq!(detail, None, "no backtrace in DETAIL");
    // the session goes on; the extension comes back and works
    c.batch_execute("CREATE EXTENSION pg_qbo").unwrap();
    register(
        &mut c,
        "e2e_drop_ext",
        "default",
        REALM1,
        "emu-refresh-token-0",
    );
    // a Postgres error raised inside pg_qbo's SQL (a read-only session) has no backtrace either
    c.batch_execute("SET default_transaction_read_only = on")
        .unwrap();
    let e = c
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30)",
            &[&FROM, &TO],
        )
        .expect_err("read-only");
    let d = e.as_db_error().unwrap();
    println!("{}: {} / {:?}", d.code().code(), d.message(), d.detail());
    assert_eq!(d.code().code(), "25006");
    assert_eq!(d.detail(), None, "no backtrace in DETAIL");
    c.batch_execute("SET default_transaction_read_only = off")
        .unwrap();
    c.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30)",
        &[&FROM, &TO],
    )
    .unwrap();
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
}

/// A failure of pg_qbo's own token store (here: a connection that can no longer be read because
/// a column's type was changed by hand) is an internal error naming the token store and its real
/// cause, recorded so in the ledger. It used to be reported as SQLSTATE 08P01, "unusable response
/// from QuickBooks", sending a DBA to look at Intuit for a problem in the database.
#[test]
fn a_token_store_failure_is_an_internal_error_with_its_cause_not_a_quickbooks_answer() {
    let emu = Emulator::start(&["--seed", "23"]);
    let mut c = fresh_db("e2e_token_store", &emu);
    let mut other = connect("e2e_token_store");
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    // the first query waits at the barrier; the second is answered 401, so the run forgets its
    // token and refreshes, which reads the connection again from the token store
    emu.faults("401@nth=2");
    emu.hold(1);
    let worker = std::thread::spawn(move || {
        let r = c.query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        );
        (
            r.map(|_| ()).map_err(|e| {
                e.as_db_error()
                    .map(|d| (d.code().code().to_owned(), d.message().to_owned()))
            }),
            c,
        )
    });
    emu.wait_held();
    other
        .batch_execute(
            "SET lock_timeout = '20s';
             ALTER TABLE qbo._connections ALTER COLUMN client_secret TYPE bytea
               USING pg_catalog.convert_to(client_secret, 'UTF8')",
        )
        .unwrap();
    emu.release();
    let (r, _c) = worker.join().unwrap();
    let (code, msg) = r.expect_err("the run must fail").expect("a database error");
    println!("{code}: {msg}");
    assert_eq!(code, "XX000", "{msg}");
    assert!(msg.starts_with("run 1 (Invoice chunk "), "{msg}");
    assert!(msg.contains("): pg_qbo token store: "), "{msg}");
    assert!(msg.contains("bytea"), "the real cause is kept: {msg}");
    assert!(!msg.contains("QuickBooks"), "{msg}");
    let (status, sqlstate): (String, String) = other
        .query_one(
            "SELECT status, error_sqlstate FROM qbo.runs WHERE run_id = 1",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((status.as_str(), sqlstate.as_str()), ("failed", "XX000"));
}
