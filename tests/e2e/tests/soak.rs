//! Reliability under abuse: a fault soak over 30k records in two realms, and a psql client killed
//! while its qbo.backfill waits. Each prints what it measured.

use pg_qbo_e2e::*;
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

#[test]
fn fault_soak_30k_records_two_realms_one_in_five_requests_failing() {
    // 20 % of query requests fail transiently, every kind: throttles (JSON, XML, ± Retry-After,
    // legacy 403), 5xx with JSON/XML/HTML bodies, resets, hangs past the timeout, truncated JSON,
    // a 200 carrying a Fault. Seeded: the same faults every run.
    let spec = "429json:0.03,429xml:0.02,429json-ra=1:0.01,429-radate:0.01,403throttle:0.01,500json:0.02,502xml:0.02,503html:0.02,504html:0.01,reset:0.02,hang:0.01,truncated:0.01,truncated-conn:0.005,fault200:0.005";
    let emu = Emulator::start(&[
        "--seed",
        "81",
        "--records",
        "Invoice=15000",
        "--faults",
        spec,
        "--rate-limit",
        "100000000",
    ]);
    let mut c = fresh_db("e2e_soak", &emu);
    register(&mut c, "e2e_soak", "second", REALM2, "emu-refresh-token-0");
    let t0 = Instant::now();
    let mut total = Vol::default();
    // both realms at the same time: one in a worker (qbo.backfill), one in a session (CALL)
    let threads: Vec<_> = ["default", "second"]
        .into_iter()
        .map(|conn| {
            std::thread::spawn(move || {
                let mut c = connect("e2e_soak");
                c.batch_execute("SET qbo.http_timeout_ms = 400").unwrap();
                if conn == "default" {
                    sum_rows(
                        &c.query(
                            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 10, page_size => 250, connection => $3)",
                            &[&FROM, &TO, &conn],
                        )
                        .unwrap_or_else(|e| panic!("{conn}: {e:?}")),
                    )
                } else {
                    let id: i64 = c
                        .query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 10, 250, 75, $3)", &[&FROM, &TO, &conn])
                        .unwrap_or_else(|e| panic!("{conn}: {e:?}"))
                        .get(0);
                    sum_rows(&c.query("SELECT * FROM qbo.run_chunks WHERE run_id = $1", &[&id]).unwrap())
                }
            })
        })
        .collect();
    for t in threads {
        let v = t.join().unwrap();
        total.rows += v.rows;
        total.inserted += v.inserted;
        total.pages += v.pages;
        total.chunks += v.chunks;
    }
    let wall = t0.elapsed();
    let mut truth_n = 0;
    for realm in [REALM1, REALM2] {
        let truth = truth_in_window(&emu, realm, "Invoice", FROM, TO);
        truth_n += truth.len() as i64;
        let got = raw(&mut c, "qb_invoices", realm);
        let lost = truth.keys().filter(|k| !got.contains_key(*k)).count();
        assert_eq!(lost, 0, "realm {realm}: {lost} records lost");
        assert_eq!(got, truth, "realm {realm}");
    }
    let dup: i64 = c
        .query_one(
            "SELECT count(*) - count(DISTINCT (realm_id, id)) FROM raw.qb_invoices",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
    assert_eq!(
        (total.rows, total.inserted),
        (truth_n, truth_n),
        "metrics equal the truth"
    );
    let stats = emu.stats();
    let query_requests: i64 = stats["requests"]["query"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_i64())
        .sum();
    let faults: i64 = stats["faults_injected"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_i64())
        .sum();
    println!(
        "fault soak: {truth_n} records, {} chunks, {} pages; {query_requests} query requests, {faults} faults injected ({:.1} %), {} requests beyond the data pages (retries and second counts); 0 lost, 0 duplicated; wall {:.1} s",
        total.chunks,
        total.pages,
        100.0 * faults as f64 / query_requests as f64,
        query_requests - total.pages,
        wall.as_secs_f64()
    );
    println!("faults by kind: {}", stats["faults_injected"]);
    assert!(truth_n >= 30_000);
    assert!(
        faults as f64 >= 0.12 * query_requests as f64,
        "the soak really injected faults"
    );
}

#[test]
fn killing_the_psql_that_waits_on_qbo_backfill_cancels_the_run() {
    let emu = Emulator::start(&["--seed", "82"]);
    let mut c = fresh_db("e2e_psql_killed", &emu);
    emu.hold(4);
    let mut psql = std::process::Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port().to_string(), "-U", "postgres", "-d", "e2e_psql_killed", "-c"])
        .arg(format!("SELECT * FROM qbo.backfill('Invoice', '{FROM}', '{TO}', chunk_size => 30, page_size => 50)"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    emu.wait_held();
    let t0 = Instant::now();
    psql.kill().unwrap(); // SIGKILL: the client vanishes without a word
    let _ = psql.wait();
    loop {
        c.batch_execute("SELECT qbo._mark_interrupted()").unwrap();
        let status: String = c
            .query_one("SELECT status FROM qbo.runs WHERE run_id = 1", &[])
            .unwrap()
            .get(0);
        if status == "cancelled" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "run is still {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("psql killed: run cancelled {:?} later", t0.elapsed());
    emu.release();
    let v = sum_rows(&c.query("SELECT * FROM qbo.resume(1)", &[]).unwrap());
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    assert_eq!(v.inserted, truth.len() as i64);
}
