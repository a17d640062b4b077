//! End-to-end: exactness of the data itself — bulk-import seconds, chunk boundaries, payloads
//! byte-for-byte, records changing while a run pages, overlapping runs, and data that outlives the
//! extension.

use pg_qbo_e2e::*;
use serde_json::Value;
use std::collections::BTreeMap;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

#[test]
fn a_second_holding_more_than_a_page_and_one_day_chunks_end_equal_to_truth() {
    let emu = Emulator::start(&["--seed", "31", "--records", "Invoice=2600"]);
    let truth_rows = emu.truth_rows(REALM1, "Invoice");
    let mut per_second: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &truth_rows {
        *per_second
            .entry(r["LastUpdatedTime"].as_str().unwrap())
            .or_default() += 1;
    }
    let biggest = per_second.values().max().copied().unwrap_or(0);
    assert!(
        biggest > 1000,
        "the data has a second with {biggest} records"
    );
    let midnights = truth_rows
        .iter()
        .filter(|r| {
            let t = parse_rfc3339(r["LastUpdatedTime"].as_str().unwrap());
            t % 86400 == 0
        })
        .count();
    assert!(midnights > 0, "records exactly on UTC midnights");

    let mut c = fresh_db("e2e_burst", &emu);
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    let rows = c
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 1, page_size => 1000)",
            &[&FROM, &TO],
        )
        .unwrap();
    let v = sum_rows(&rows);
    println!(
        "{} one-day chunks, biggest second {biggest} records, {midnights} on UTC midnights: {v:?}",
        rows.len()
    );
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    assert_eq!(
        (v.rows, v.inserted),
        (truth.len() as i64, truth.len() as i64),
        "each record counted once"
    );
    // the per-chunk rows equal the truth restricted to each chunk's window
    for r in rows.iter().step_by(17) {
        let ws: String = c.query_one("SELECT to_char($1::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", &[&r.get::<_, std::time::SystemTime>("window_start")]).unwrap().get(0);
        let we: String = c.query_one("SELECT to_char($1::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", &[&r.get::<_, std::time::SystemTime>("window_end")]).unwrap().get(0);
        assert_eq!(
            r.get::<_, i64>("rows"),
            truth_in_window(&emu, REALM1, "Invoice", &ws, &we).len() as i64,
            "chunk [{ws}, {we})"
        );
    }
}

fn token(emu: &Emulator) -> String {
    let v: Value = ureq::post(&format!("{}/oauth2/v1/tokens/bearer", emu.url))
        .set(
            "Authorization",
            "Basic ZW11LWNsaWVudC1pZDplbXUtY2xpZW50LXNlY3JldA==",
        )
        .send_form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "emu-refresh-token-0"),
        ])
        .unwrap()
        .into_json()
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn payloads_are_stored_exactly_as_qbo_sent_them() {
    // this test reads records from the emulator itself, right after pg_qbo's run and unpaced:
    // Intuit's 10 requests a second are lifted for it
    let emu = Emulator::start(&["--seed", "32", "--rate-limit-per-second", "1000000"]);
    let mut c = fresh_db("e2e_payload", &emu);
    c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO])
        .unwrap();
    let with_decimal: Vec<String> = c
        .query(
            "SELECT id FROM raw.qb_invoices WHERE payload::text ~ '[0-9]\\.[0-9]0[,}]' LIMIT 3",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !with_decimal.is_empty(),
        "some payload keeps a trailing-zero decimal such as 12.30"
    );
    let tok = token(&emu);
    for id in &with_decimal {
        let body = ureq::get(&format!("{}/v3/company/{REALM1}/query", emu.url))
            .query("query", &format!("SELECT * FROM Invoice WHERE Id = '{id}'"))
            .query("minorversion", "75")
            .set("Authorization", &format!("Bearer {tok}"))
            .set("Accept", "application/json")
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        // the record's text exactly as served, cut out of the envelope
        let start = body.find("[{").unwrap() + 1;
        let end = body.rfind("}]").unwrap() + 1;
        let served = &body[start..end];
        let same: bool = c
            .query_one("SELECT payload = $1::text::jsonb AND payload::text = ($1::text::jsonb)::text FROM raw.qb_invoices WHERE realm_id = $2 AND id = $3", &[&served, &REALM1, id])
            .unwrap()
            .get(0);
        assert!(same, "Invoice {id} differs from what QBO served:\n{served}");
        assert!(
            served.contains(".30") || served.contains("0,") || served.contains("0}"),
            "{served}"
        );
    }
    // unicode text survives
    c.query("SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO])
        .unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM raw.qb_customers WHERE payload::text LIKE '%Café Zoë ✓%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        n > 0,
        "a customer named with non-ASCII text is stored as served"
    );
    // request_payload describes the request and never holds a token
    let rp: Value = c
        .query_one(
            "SELECT request_payload::text FROM raw.qb_invoices LIMIT 1",
            &[],
        )
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).unwrap())
        .unwrap();
    assert_eq!(rp["page_size"], 1000);
    assert_eq!(rp["minor_version"], 75);
    assert_eq!(rp["environment"], "sandbox");
    assert!(rp["query"]
        .as_str()
        .unwrap()
        .starts_with("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '"));
}

#[test]
fn records_updated_and_deleted_at_a_high_rate_while_a_run_pages_end_equal_to_truth_after_one_more_run(
) {
    let emu = Emulator::start(&[
        "--seed",
        "33",
        "--records",
        "Invoice=3000",
        "--latency-ms",
        "3",
        "--rate-limit",
        "1000000",
    ]);
    let mut c = fresh_db("e2e_mutating", &emu);
    // ~400 updates per second land in the current second: more than a page, so the live second is
    // read by STARTPOSITION while it keeps filling; and a record is deleted every 20 ms
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"schedule": {"every_ms": 5, "count": 1000000, "per_tick": 2, "entity": "Invoice", "realm": REALM1, "op": "update"}}),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deleter = {
        let stop = std::sync::Arc::clone(&stop);
        let url = emu.url.clone();
        std::thread::spawn(move || {
            let mut id = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = ureq::post(&format!("{url}/__emulator/mutate"))
                    .send_json(serde_json::json!({"realm": REALM1, "entity": "Invoice", "op": "delete", "ids": [id.to_string()]}));
                id += 7;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let now: String = c
        .query_one("SELECT (now() + interval '1 day')::text", &[])
        .unwrap()
        .get(0);
    let first = sum_rows(
        &c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 20)", &[&FROM, &now])
            .unwrap(),
    );
    emu.post("/__emulator/mutate", serde_json::json!({"schedule": null}));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    deleter.join().unwrap();
    let second = sum_rows(
        &c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 400, page_size => 20)", &[&FROM, &now])
            .unwrap(),
    );
    let truth = emu.truth_rows(REALM1, "Invoice");
    let alive: std::collections::BTreeMap<String, i64> = truth
        .iter()
        .filter(|r| !r["deleted"].as_bool().unwrap_or(false))
        .map(|r| {
            (
                r["Id"].as_str().unwrap().to_owned(),
                r["SyncToken"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let deleted: std::collections::BTreeSet<String> = truth
        .iter()
        .filter(|r| r["deleted"].as_bool().unwrap_or(false))
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    let got = raw(&mut c, "qb_invoices", REALM1);
    let stats = emu.stats();
    println!(
        "first run {first:?}; one more run {second:?}; {} mutations, {} deleted records of which {} still in raw",
        stats["mutations"],
        deleted.len(),
        got.keys().filter(|k| deleted.contains(*k)).count()
    );
    assert!(stats["mutations"].as_i64().unwrap() > 100, "{stats}");
    for (id, token) in &alive {
        assert_eq!(
            got.get(id),
            Some(token),
            "Invoice {id}: alive in QBO with SyncToken {token}"
        );
    }
    assert!(
        got.keys()
            .all(|k| alive.contains_key(k) || deleted.contains(k)),
        "nothing that never existed"
    );
}

#[test]
fn overlapping_runs_of_one_realm_and_entity_do_not_deadlock_and_insert_each_record_once() {
    let emu = Emulator::start(&[
        "--seed",
        "34",
        "--records",
        "Invoice=1500",
        "--latency-ms",
        "2",
        "--rate-limit",
        "1000000",
    ]);
    let c = fresh_db("e2e_overlap", &emu);
    drop(c);
    let spawn = |from: &'static str, to: &'static str, via_call: bool| {
        std::thread::spawn(move || {
            let mut c = connect("e2e_overlap");
            if via_call {
                c.query_one("CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 10, 25)", &[&from, &to])
                    .unwrap();
                let r = c.query_one("SELECT sum(inserted)::bigint, sum(updated)::bigint, sum(skipped)::bigint FROM qbo.run_chunks WHERE run_id = (SELECT max(run_id) FROM qbo.runs WHERE entry_point = 'call')", &[]).unwrap();
                (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2))
            } else {
                let rows = c
                    .query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 7, page_size => 30)", &[&from, &to])
                    .unwrap();
                let v = sum_rows(&rows);
                (v.inserted, v.updated, v.skipped)
            }
        })
    };
    let a = spawn("2025-01-01T00:00:00Z", "2025-07-01T00:00:00Z", true);
    let b = spawn("2025-03-01T00:00:00Z", "2025-09-11T00:00:00Z", false);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    println!("run A (CALL) inserted/updated/skipped {a:?}, run B (worker) {b:?}");
    let mut c = connect("e2e_overlap");
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
    assert_eq!(
        a.0 + b.0,
        truth.len() as i64,
        "each record inserted by exactly one of the runs"
    );
    assert_eq!(a.1 + b.1, 0);
    let overlap = truth_in_window(
        &emu,
        REALM1,
        "Invoice",
        "2025-03-01T00:00:00Z",
        "2025-07-01T00:00:00Z",
    )
    .len() as i64;
    assert_eq!(
        a.2 + b.2,
        overlap,
        "the overlap is read twice: once inserted, once skipped"
    );
}

#[test]
fn raw_data_outlives_the_extension_and_survives_dump_and_restore() {
    let emu = Emulator::start(&["--seed", "35"]);
    let mut c = fresh_db("e2e_keep", &emu);
    c.query("SELECT * FROM qbo.backfill('Item', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO])
        .unwrap();
    let before = raw(&mut c, "qb_items", REALM1);
    assert!(!before.is_empty());
    // dump and restore into another database
    let port = port().to_string();
    let dump = std::process::Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "e2e_keep",
        ])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let sql = String::from_utf8(dump.stdout).unwrap();
    assert!(
        !sql.contains("emu-client-secret"),
        "a dump never holds a secret"
    );
    let mut admin = connect("postgres");
    admin
        .batch_execute("DROP DATABASE IF EXISTS e2e_keep_restored")
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE e2e_keep_restored")
        .unwrap();
    let restore = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "e2e_keep_restored",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(sql.as_bytes())?;
            ch.wait()
        })
        .unwrap();
    assert!(restore.success());
    let mut r = connect("e2e_keep_restored");
    assert_eq!(raw(&mut r, "qb_items", REALM1), before);
    let runs: i64 = r
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "the ledger is dumped");
    let conns: i64 = r
        .query_one("SELECT count(*) FROM qbo.connections", &[])
        .unwrap()
        .get(0);
    assert_eq!(conns, 0, "connections (secrets) are not dumped");
    // DROP EXTENSION keeps raw; re-creating it and re-running skips everything
    c.batch_execute("DROP EXTENSION pg_qbo").unwrap();
    assert_eq!(raw(&mut c, "qb_items", REALM1), before);
    c.batch_execute("CREATE EXTENSION pg_qbo").unwrap();
    register(&mut c, "e2e_keep", "default", REALM1, "emu-refresh-token-0");
    let v = sum_rows(&c.query("SELECT * FROM qbo.backfill('Item', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO]).unwrap());
    assert_eq!(
        (v.inserted, v.updated, v.skipped),
        (0, 0, before.len() as i64)
    );
}

#[test]
fn an_existing_raw_table_of_another_shape_is_refused_with_advice() {
    let emu = Emulator::start(&["--seed", "36"]);
    let mut c = fresh_db("e2e_shape", &emu);
    c.batch_execute(
        "CREATE SCHEMA raw; CREATE TABLE raw.qb_invoices (id text PRIMARY KEY, payload jsonb)",
    )
    .unwrap();
    let err = c
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz)",
            &[&FROM, &TO],
        )
        .expect_err("shape");
    let msg = err.as_db_error().unwrap().message().to_owned();
    println!("{msg}");
    assert!(msg.starts_with("qbo.backfill: table raw.qb_invoices already exists with another shape (primary key (id); missing or different columns: realm_id text, ingested_at_utc timestamp with time zone,"), "{msg}");
    assert!(
        msg.contains(
            "Rename the old table (ALTER TABLE raw.qb_invoices RENAME TO qb_invoices_old)"
        ),
        "{msg}"
    );
    assert_eq!(err.as_db_error().unwrap().code().code(), "42P07");
    let n: i64 = c
        .query_one("SELECT count(*) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was written");
}
