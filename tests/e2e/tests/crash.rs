//! End-to-end: the server crashes (`pg_ctl stop -m immediate`) while a run waits on a page, held
//! at the emulator's barrier. After restart the run is reported interrupted, and qbo.resume
//! finishes it equal to the truth, never re-fetching a page that was committed (pages in flight or
//! fetched but not yet written when the server died are fetched again).

use pg_qbo_e2e::*;
use std::collections::BTreeSet;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

#[test]
fn crash_mid_page_then_resume_refetches_no_committed_page() {
    let emu = Emulator::start(&["--seed", "71"]);
    let cluster = PrivateCluster::start(&format!("{}-crash", cluster_dir().display()), port() + 7);
    let mut c = cluster.connect("postgres");
    c.batch_execute(&format!(
        "ALTER DATABASE postgres SET qbo.api_base_url = '{u}'; ALTER DATABASE postgres SET qbo.token_url = '{u}/oauth2/v1/tokens/bearer'",
        u = emu.url
    ))
    .unwrap();
    let mut c = cluster.connect("postgres");
    c.batch_execute("CREATE EXTENSION pg_qbo").unwrap();
    register(&mut c, "crash", "default", REALM1, "emu-refresh-token-0");

    emu.hold(8);
    let runner = std::thread::spawn(move || {
        c.query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)", &[&FROM, &TO])
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let held = emu.wait_held();
    let before: Vec<serde_json::Value> = emu.requests(0);
    cluster.crash();
    assert!(
        runner.join().unwrap().is_err(),
        "the CALL died with the server"
    );
    emu.release();

    cluster.up();
    let mut c = cluster.connect("postgres");
    // Before any pg_qbo function runs, qbo.runs still says running (nothing could rewrite it while
    // the server was down), but the dashboard already tells the truth: nobody holds the run's lock.
    let r = c
        .query_one(
            "SELECT p.status, p.state, p.eta IS NULL, p.live, p.error, r.status
               FROM qbo.progress p JOIN qbo.runs r USING (run_id) WHERE run_id = 1",
            &[],
        )
        .unwrap();
    let (status, state, no_eta, live, error, ledger): (String, String, bool, bool, String, String) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
    println!(
        "right after the restart: qbo.progress says {status} / {state}, qbo.runs says {ledger}"
    );
    assert_eq!(ledger, "running", "no pg_qbo function has run yet");
    assert_eq!(
        (status.as_str(), state.as_str(), no_eta, live),
        ("interrupted", "interrupted", true, false)
    );
    let pid: i32 = c
        .query_one("SELECT pid FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        error,
        format!("run 1 was interrupted: its process (pid {pid}) is gone; resume it with SELECT * FROM qbo.resume(1) or CALL qbo.run_resume(1)")
    );
    c.batch_execute("SELECT qbo._mark_interrupted()").unwrap();
    let (status, pages): (String, i64) = {
        let r = c
            .query_one("SELECT status, (SELECT count(*) FROM qbo.run_pages WHERE run_id = 1) FROM qbo.runs WHERE run_id = 1", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    println!("after the crash: run 1 is {status} with {pages} committed pages");
    assert_eq!(status, "interrupted");
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
    assert_eq!(
        kept, committed,
        "every committed page survived the crash, nothing else did"
    );

    // the pages committed before the crash, by their query (each raw row keeps its request)
    let committed_queries: BTreeSet<String> = c
        .query(
            "SELECT DISTINCT request_payload->>'query' FROM raw.qb_invoices",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let seq = emu.last_seq();
    let rows = c.query("SELECT * FROM qbo.resume(1)", &[]).unwrap();
    let v = sum_rows(&rows);
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    assert_eq!(v.inserted, truth.len() as i64, "{v:?}");
    let after: Vec<String> = emu
        .requests(seq)
        .into_iter()
        .filter(|r| r["endpoint"] == "query")
        .map(|r| r["query"].as_str().unwrap().to_owned())
        .collect();
    // what was in flight comes again, not necessarily by the same query: the resume continues by
    // time cursor from what was written (the truth above is equal)
    let held_query = held["query"].as_str().unwrap();
    println!(
        "in flight at the crash: {held_query}; the resume's first query: {:?}",
        after.first()
    );
    assert!(
        after
            .first()
            .is_some_and(|q| !q.contains("count(*)") || q.contains("LastUpdatedTime = '")),
        "the resume starts from the saved cursor, without counting its window again: {after:?}"
    );
    let answered_before = before
        .iter()
        .filter(|r| r["endpoint"] == "query" && r["status"] == 200)
        .count();
    // (a second holding more than a page is read by STARTPOSITION passes, each pass sending the
    // same queries again and taking only Ids not taken before: those are not pages fetched twice)
    let refetched: Vec<&String> = after
        .iter()
        .filter(|q| committed_queries.contains(*q) && !q.contains("LastUpdatedTime = '"))
        .collect();
    println!(
        "{} pages committed before the crash ({answered_before} requests answered); resume made {} query requests; committed pages fetched again: {refetched:?}",
        committed_queries.len(),
        after.len()
    );
    assert!(!committed_queries.is_empty());
    assert!(refetched.is_empty(), "no committed page is fetched twice");
}
