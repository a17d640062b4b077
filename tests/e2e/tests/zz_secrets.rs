//! End-to-end: no secret (client secret, refresh or access token) in NOTICEs, errors,
//! request_payload, or the server log — the test cluster runs with log_statement = 'all'.
//! (Named zz_ so it runs after the other suites and also scans what they logged.)

use pg_qbo_e2e::*;
use std::sync::{Arc, Mutex};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

fn leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for needle in [
        "emu-client-secret",
        "emu-refresh-token-0",
        "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0",
    ] {
        if text.contains(needle) {
            found.push(needle.to_owned());
        }
    }
    // rotated refresh tokens: AB11 + 10 digits + emu + 16 hex
    let b = text.as_bytes();
    for i in 0..b.len().saturating_sub(33) {
        if &b[i..i + 4] == b"AB11"
            && b[i + 4..i + 14].iter().all(u8::is_ascii_digit)
            && &b[i + 14..i + 17] == b"emu"
        {
            found.push(String::from_utf8_lossy(&b[i..i + 33]).into_owned());
        }
    }
    found
}

#[test]
fn secrets_never_reach_notices_errors_request_payload_or_the_server_log() {
    let emu = Emulator::start(&[
        "--seed",
        "41",
        "--rotate-refresh",
        "always",
        "--faults",
        "401/every=3,503html:0.1",
    ]);
    let c = fresh_db("e2e_secrets", &emu);
    drop(c);
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&notices);
    let mut cfg: postgres::Config = format!(
        "host=127.0.0.1 port={} user=postgres dbname=e2e_secrets",
        port()
    )
    .parse()
    .unwrap();
    cfg.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_owned()));
    let mut c = cfg.connect(postgres::NoTls).unwrap();
    c.query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 100)", &[&FROM, &TO])
        .unwrap();
    c.query_one(
        "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
        &[&FROM, &TO],
    )
    .unwrap();
    // a failing token refresh: the emulator now rejects the stored refresh token
    c.batch_execute(
        "UPDATE qbo._connections SET refresh_token = 'revoked-by-the-test', access_token = NULL",
    )
    .unwrap();
    let err = c
        .query(
            "SELECT * FROM qbo.backfill('Item', $1::text::timestamptz, $2::text::timestamptz)",
            &[&FROM, &TO],
        )
        .expect_err("invalid_grant");
    let msg = err.as_db_error().unwrap().message().to_owned();
    println!("{msg}");
    assert!(msg.contains("invalid_grant"), "{msg}");
    assert!(
        msg.contains("the company must be re-authorized with qbo.connect"),
        "{msg}"
    );
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000");
    // a credentials file that is not valid: the error never echoes its content
    let bad = cluster_dir().join("creds-bad.json");
    std::fs::write(
        &bad,
        "{\"realm_id\":\"12x\",\"client_secret\":\"emu-client-secret\"",
    )
    .unwrap();
    let err = c
        .query_one(
            "SELECT qbo.connect_from_file($1)",
            &[&bad.to_string_lossy().as_ref()],
        )
        .expect_err("bad file");
    assert!(leaks(err.as_db_error().unwrap().message()).is_empty());

    let notices = notices.lock().unwrap().join("\n");
    assert!(notices.contains("run 1 chunk 1/9"), "NOTICEs were captured");
    assert_eq!(leaks(&notices), Vec::<String>::new(), "secret in a NOTICE");
    assert_eq!(leaks(&msg), Vec::<String>::new());
    for (table, _) in [("raw.qb_invoices", 0), ("raw.qb_customers", 0)] {
        let rp: String = c
            .query_one(
                &format!("SELECT string_agg(request_payload::text, ' ') FROM {table}"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(leaks(&rp), Vec::<String>::new());
        assert!(!rp.to_lowercase().contains("bearer"));
    }
    let errors: String = c
        .query_one(
            "SELECT coalesce(string_agg(error, ' '), '') FROM qbo.runs",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaks(&errors), Vec::<String>::new());
    let log = std::fs::read_to_string(cluster_dir().join("server.log")).unwrap();
    assert!(
        log.contains("qbo.backfill"),
        "the log has the statements (log_statement = 'all')"
    );
    assert_eq!(
        leaks(&log),
        Vec::<String>::new(),
        "secret in the server log"
    );
}
