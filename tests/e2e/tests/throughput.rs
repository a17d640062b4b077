//! End-to-end: concurrent fetching under the realm's shared limiter. Two sessions backfilling one
//! realm at once stay within the realm's in-flight limit (counted by the emulator, which answers
//! 429 beyond it), use it, and both end equal to the truth; the sequential pager
//! (`qbo.max_in_flight = 1`) never has two requests in flight; the pages of a window read by
//! offsets are fetched together, and a bulk-import second in it costs no more than its pages.

use pg_qbo_e2e::*;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

fn max_seen(emu: &Emulator) -> u64 {
    emu.stats()["max_concurrent_seen"].as_u64().unwrap()
}

#[test]
fn two_sessions_on_one_realm_share_its_limit_and_never_see_a_429() {
    // every answer takes 40 ms; more than 4 requests of a realm in flight at once are refused
    let emu = Emulator::start(&[
        "--seed",
        "61",
        "--records",
        "Invoice=4000",
        "--records",
        "Bill=3000",
        "--latency-ms",
        "40",
        "--max-concurrent",
        "4",
    ]);
    let mut c = fresh_db("e2e_limiter", &emu);
    c.batch_execute("ALTER DATABASE e2e_limiter SET qbo.max_in_flight = 4")
        .unwrap();
    let t0 = std::time::Instant::now();
    let worker = std::thread::spawn(|| {
        let mut c = connect("e2e_limiter");
        c.query(
            "SELECT * FROM qbo.backfill('Bill', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 100)",
            &[&FROM, &TO],
        )
        .map(|rows| sum_rows(&rows))
        .map_err(|e| e.to_string())
    });
    let mut c2 = connect("e2e_limiter");
    let inv = c2
        .query(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
            &[&FROM, &TO],
        )
        .map_err(|e| e.to_string());
    let bills = worker.join().unwrap();
    let took = t0.elapsed();
    inv.unwrap();
    let bills = bills.unwrap();
    let stats = emu.stats();
    let queries: u64 = stats["requests"]["query"]
        .as_object()
        .map(|m| m.values().map(|v| v.as_u64().unwrap()).sum())
        .unwrap_or(0);
    println!(
        "2 sessions, 1 realm: {queries} query requests in {took:?}, at most {} in flight, {} answered 429",
        max_seen(&emu),
        stats["throttled_429"]
    );
    assert_eq!(stats["throttled_429"], 0, "{stats}");
    assert!(max_seen(&emu) <= 4);
    assert!(
        max_seen(&emu) >= 3,
        "requests were fetched concurrently: {}",
        max_seen(&emu)
    );
    let truth_inv = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    let truth_bill = truth_in_window(&emu, REALM1, "Bill", FROM, TO);
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth_inv);
    assert_eq!(raw(&mut c, "qb_bills", REALM1), truth_bill);
    assert_eq!(bills.rows, truth_bill.len() as i64, "{bills:?}");
    assert_eq!(bills.inserted, truth_bill.len() as i64, "{bills:?}");
    let inv_rows: i64 = c
        .query_one(
            "SELECT sum(inserted)::bigint FROM qbo.run_chunks c JOIN qbo.runs r USING (run_id) WHERE r.entity = 'Invoice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(inv_rows, truth_inv.len() as i64);
    // every admitted request was released
    let open: i64 = connect("e2e_limiter")
        .query_one(
            "SELECT count(*) FROM qbo._api_requests WHERE finished_at IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
}

#[test]
fn the_sequential_pager_has_one_request_in_flight() {
    let emu = Emulator::start(&["--seed", "62", "--records", "Invoice=1500"]);
    let mut c = fresh_db("e2e_sequential", &emu);
    c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
    c.query(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
        &[&FROM, &TO],
    )
    .unwrap();
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    let counts = emu
        .requests(0)
        .iter()
        .filter(|r| {
            r["endpoint"] == "query"
                && r["query"]
                    .as_str()
                    .unwrap_or("")
                    .contains("count(*) FROM Invoice WHERE MetaData.LastUpdatedTime >=")
        })
        .count();
    println!(
        "sequential: at most {} in flight, {counts} window counts",
        max_seen(&emu)
    );
    assert_eq!(max_seen(&emu), 1);
    assert_eq!(counts, 0, "the sequential pager does not cut windows");
}

#[test]
fn the_pages_of_a_window_are_fetched_together_and_a_bulk_second_costs_nothing_more() {
    // the emulator's default data has one second holding 1001 + n/50 records (1061 here); read by
    // offsets in Id order, it is just more positions: hold the window's first page, and the next
    // ones still go, up to the lookahead (2 x qbo.max_in_flight: what may be in flight, read or
    // waiting at once), the pages read meanwhile waiting in memory for the first
    let emu = Emulator::start(&["--seed", "63", "--records", "Invoice=3000"]);
    let mut c = fresh_db("e2e_bulk_second", &emu);
    let (_, n) = bulk_second(&emu, &mut c);
    assert_eq!(n, 1061);
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    emu.hold_matching(1, "ORDERBY Id STARTPOSITION 1 ");
    let seq = emu.last_seq();
    let worker = std::thread::spawn(|| {
        let mut c = connect("e2e_bulk_second");
        c.query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 100)",
            &[&FROM, &TO],
        )
        .map(|rows| sum_rows(&rows))
        .map_err(|e| e.to_string())
    });
    let held = emu.wait_held();
    let q = held["query"].as_str().unwrap().to_string();
    assert!(q.contains("STARTPOSITION 1 MAXRESULTS 100"), "{q}");
    // while page 1 is held, the next nineteen arrive (99 new records a page, overlapping by one:
    // 100, 199, ...; page k is asked for while the count says it holds a new record)
    let n = truth.len() as u64;
    let ahead = (1..20u64).filter(|k| 99 * k + 2 <= n).count();
    assert_eq!(
        ahead, 19,
        "the window holds more than 20 pages ({n} records)"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let others = loop {
        let others: Vec<String> = emu
            .requests(seq)
            .iter()
            .filter_map(|r| r["query"].as_str())
            .filter(|q| q.contains("ORDERBY Id STARTPOSITION") && !q.contains("STARTPOSITION 1 "))
            .map(str::to_string)
            .collect();
        if others.len() >= ahead || std::time::Instant::now() > deadline {
            break others;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    emu.release();
    let vol = worker.join().unwrap().unwrap();
    println!(
        "page 1 held; {} other pages fetched meanwhile",
        others.len()
    );
    assert_eq!(others.len(), ahead, "{others:#?}");
    assert!(
        others.iter().any(|q| q.contains("STARTPOSITION 1882 ")),
        "{others:#?}"
    );
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    assert_eq!(vol.rows, truth.len() as i64, "{vol:?}");
    assert_eq!(vol.inserted, truth.len() as i64, "{vol:?}");
    // the window's records in pages of 99 new ones, and its count: nothing for the bulk second
    let queries: Vec<String> = emu
        .requests(seq)
        .iter()
        .filter(|r| r["endpoint"] == "query")
        .filter_map(|r| r["query"].as_str().map(str::to_string))
        .collect();
    let pages = (truth.len() as u64 - 1).div_ceil(99);
    println!(
        "{} records: {} query requests ({pages} pages and the count)",
        truth.len(),
        queries.len()
    );
    assert_eq!(queries.len() as u64, pages + 1, "{queries:#?}");
}
