//! End-to-end attack: whatever Intuit's token endpoint answers (a 2xx it cannot parse, an error
//! echoing the request's credentials, an endless body, `expires_in: 0`), no secret reaches any
//! channel a non-owner or a log reader sees, a rotated refresh token is never lost, and memory
//! stays bounded. Secrets have Intuit's real shapes; every channel is scanned for any
//! 16-character window of each secret, raw, base64 (alone, at every alignment, and as the HTTP
//! Basic client pair) and URL-encoded: NOTICEs, every field of every error, the ledger,
//! `pg_stat_activity` while a request is in flight, `raw.*.request_payload`, and the server log
//! written at `log_min_messages = debug5` for the test's database.
//! (Named zz_ so it runs after the other suites.)

use base64::Engine;
use pg_qbo_e2e::*;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";
const DB: &str = "e2e_zz_token_attacks";
/// A production client id (50 characters) and secret (40), and a refresh token (`AB11` + 10
/// digits + 36 characters), shaped as Intuit issues them.
const CLIENT_ID: &str = "ABpQ2oMw7lQm6nP0x2dN1qvJ8sT5kZc3rY9wH4uL0eFgAiBj12";
const CLIENT_SECRET: &str = "x7Kd2Pq9Lm4Rt8Vw1Yz5Bn3Hc6Fg0Js2Ua9Ek7Qo";
const REFRESH_0: &str = "AB11750000000Xk2m9Pq4Rt7Vw1Yz5Bn3Hc6Fg0Js2Ua9E4w";

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every 16-character window of every encoding of `secret` that carries its material.
fn windows(secret: &str) -> BTreeSet<String> {
    let mut forms: Vec<String> = vec![secret.to_owned(), percent_encode(secret)];
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        // base64 of the secret embedded at each alignment: skip the characters the prefix shapes
        for (prefix, skip) in [("", 0), ("x", 2), ("xx", 3)] {
            let e = engine.encode(format!("{prefix}{secret}"));
            forms.push(e[skip..].trim_end_matches('=').to_owned());
        }
    }
    let mut out = BTreeSet::new();
    for f in forms {
        let c: Vec<char> = f.chars().collect();
        for w in c.windows(16) {
            out.insert(w.iter().collect());
        }
    }
    out
}

/// The windows of the HTTP Basic credential of the client pair (from the first character that
/// depends on the secret on).
fn basic_windows() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for pair in [
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
        format!(
            "{}:{}",
            percent_encode(CLIENT_ID),
            percent_encode(CLIENT_SECRET)
        ),
    ] {
        let e = base64::engine::general_purpose::STANDARD.encode(&pair);
        let first = (CLIENT_ID.len() + 1) / 3 * 4;
        let c: Vec<char> = e.trim_end_matches('=').chars().collect();
        for w in c[first..].windows(16) {
            out.insert(w.iter().collect());
        }
    }
    out
}

/// Secrets pg_qbo stores for the connection now (refresh and access tokens).
fn stored(admin: &mut postgres::Client, seen: &mut BTreeSet<String>) {
    let r = admin
        .query_one(
            "SELECT refresh_token, coalesce(access_token, '') FROM qbo._connections WHERE name = 'default'",
            &[],
        )
        .unwrap();
    for v in [r.get::<_, String>(0), r.get::<_, String>(1)] {
        if !v.is_empty() {
            seen.insert(v);
        }
    }
}

fn force_refresh(admin: &mut postgres::Client) {
    admin
        .batch_execute(
            "UPDATE qbo._connections SET access_token = NULL, access_token_expires_at = NULL WHERE name = 'default'",
        )
        .unwrap();
}

/// Every field of a database error, as text.
fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} | {} | {:?} | {:?} | {:?} | {:?} | {:?} | {:?} | {:?} | {:?} | {:?}",
            d.code().code(),
            d.message(),
            d.detail(),
            d.hint(),
            d.where_(),
            d.schema(),
            d.table(),
            d.column(),
            d.datatype(),
            d.constraint(),
            d.routine()
        ),
        None => e.to_string(),
    }
}

#[test]
fn no_token_endpoint_answer_leaks_a_secret_or_loses_a_rotated_refresh_token() {
    let emu = Emulator::start(&[
        "--seed",
        "81",
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        "--refresh-token",
        REFRESH_0,
        "--rotate-refresh",
        "always",
    ]);
    let mut admin = fresh_db(DB, &emu);
    // the real-shaped credentials, from a file as README advises
    let path = cluster_dir().join(format!("creds-{DB}.json"));
    std::fs::write(
        &path,
        serde_json::json!({
            "realm_id": REALM1, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_0, "environment": "sandbox"
        })
        .to_string(),
    )
    .unwrap();
    admin
        .query_one(
            "SELECT qbo.connect_from_file($1, 'default')",
            &[&path.to_string_lossy().as_ref()],
        )
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    connect("postgres")
        .batch_execute(&format!(
            "ALTER DATABASE {DB} SET log_min_messages = debug5"
        ))
        .unwrap();
    let log_path = cluster_dir().join("server.log");
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);

    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&notices);
    let mut cfg: postgres::Config =
        format!("host=127.0.0.1 port={} user=postgres dbname={DB}", port())
            .parse()
            .unwrap();
    cfg.notice_callback(move |n| {
        sink.lock().unwrap().push(format!(
            "{} | {:?} | {:?} | {:?}",
            n.message(),
            n.detail(),
            n.hint(),
            n.where_()
        ))
    });
    let mut c = cfg.connect(postgres::NoTls).unwrap();
    let mut errors: Vec<String> = Vec::new();
    let mut secrets: BTreeSet<String> = [CLIENT_SECRET.to_owned(), REFRESH_0.to_owned()].into();

    // 1. ordinary runs (every refresh rotates), with pg_stat_activity read while a request waits
    c.query(
        "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)",
        &[&FROM, &TO],
    )
    .unwrap();
    stored(&mut admin, &mut secrets);
    force_refresh(&mut admin);
    emu.hold(2);
    let mut c2 = cfg.connect(postgres::NoTls).unwrap();
    let call = std::thread::spawn(move || {
        c2.query_one(
            "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 60)",
            &[&FROM, &TO],
        )
        .map(|_| ())
    });
    emu.wait_held();
    let activity: String = admin
        .query_one(
            "SELECT string_agg(row_to_json(a)::text, E'\\n') FROM pg_stat_activity a",
            &[],
        )
        .unwrap()
        .get(0);
    emu.release();
    call.join().unwrap().unwrap();
    stored(&mut admin, &mut secrets);

    // 2. a 2xx the OAuth client cannot parse ("expires_in": "3600"), carrying a rotated refresh
    //    token: the run fails without quoting it, and the rotated token is kept
    emu.faults("token:badexpires@nth=1");
    force_refresh(&mut admin);
    let e = c
        .query_one(
            "CALL qbo.run_backfill('Item', $1::text::timestamptz, $2::text::timestamptz, 60)",
            &[&FROM, &TO],
        )
        .expect_err("an unusable token response");
    println!("badexpires: {}", error_text(&e));
    errors.push(error_text(&e));
    expect(&e, "08P01", "unusable answer from Intuit's token endpoint (HTTP 200): expires_in is not a number (a string); the new refresh token it carried is kept (intuit_tid ");
    let issued: String = ureq_get_refresh(&emu);
    stored(&mut admin, &mut secrets);
    secrets.insert(issued.clone());
    let kept: String = admin
        .query_one(
            "SELECT refresh_token FROM qbo._connections WHERE name = 'default'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        kept, issued,
        "the rotated refresh token was stored before the run failed"
    );
    emu.faults("");
    force_refresh(&mut admin);
    c.query_one(
        "CALL qbo.run_backfill('Item', $1::text::timestamptz, $2::text::timestamptz, 60)",
        &[&FROM, &TO],
    )
    .expect("the salvaged refresh token works");
    stored(&mut admin, &mut secrets);

    // 3. an error whose description echoes the Authorization header and the form body
    emu.faults("token:echoauth");
    force_refresh(&mut admin);
    let e = c
        .query(
            "SELECT * FROM qbo.backfill('Vendor', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)",
            &[&FROM, &TO],
        )
        .expect_err("invalid_request");
    println!("echoauth: {}", error_text(&e));
    errors.push(error_text(&e));
    expect(&e, "08000", "HTTP 400: OAuth2 code invalid_request: Invalid request. Authorization: Basic [redacted]; body: grant_type=refresh_token&refresh_token=[redacted] (intuit_tid ");

    // 4. an endless 200 body: cut at the cap, the backend's memory bounded
    emu.faults("token:flood");
    let e = c
        .query_one(
            "CALL qbo.run_backfill('Vendor', $1::text::timestamptz, $2::text::timestamptz, 60)",
            &[&FROM, &TO],
        )
        .expect_err("an endless token response");
    println!("flood: {}", error_text(&e));
    errors.push(error_text(&e));
    expect(
        &e,
        "54000",
        "Intuit's token endpoint sent a response larger than the 16384-byte cap (intuit_tid ",
    );

    // 5. expires_in: 0 is not "expired on arrival": one refresh for the whole run
    emu.faults("token:expires0");
    force_refresh(&mut admin);
    let before = emu.stats()["token_refreshes"].as_u64().unwrap_or(0);
    c.query_one(
        "CALL qbo.run_backfill('Vendor', $1::text::timestamptz, $2::text::timestamptz, 30, 20)",
        &[&FROM, &TO],
    )
    .unwrap();
    let refreshes = emu.stats()["token_refreshes"].as_u64().unwrap_or(0) - before;
    let pages: i64 = admin
        .query_one("SELECT sum(pages)::bigint FROM qbo.run_chunks WHERE run_id = (SELECT max(run_id) FROM qbo.runs)", &[])
        .unwrap()
        .get(0);
    println!("expires_in 0: {refreshes} refresh(es) for {pages} pages");
    assert!(pages > 3);
    assert_eq!(refreshes, 1, "one refresh for the run, not one per request");
    emu.faults("");
    stored(&mut admin, &mut secrets);
    secrets.insert(ureq_get_refresh(&emu));

    // every channel
    let ledger: String = admin
        .query_one(
            "SELECT coalesce((SELECT string_agg(row_to_json(r)::text, E'\\n') FROM qbo.runs r), '') ||
                    coalesce((SELECT string_agg(row_to_json(r)::text, E'\\n') FROM qbo.run_chunks r), '') ||
                    coalesce((SELECT string_agg(row_to_json(r)::text, E'\\n') FROM qbo.run_pages r), '') ||
                    coalesce((SELECT string_agg(row_to_json(r)::text, E'\\n') FROM qbo.progress r), '') ||
                    coalesce((SELECT string_agg(row_to_json(r)::text, E'\\n') FROM qbo.connections r), '')",
            &[],
        )
        .unwrap()
        .get(0);
    let payloads: String = admin
        .query_one(
            "SELECT coalesce(string_agg(request_payload::text, E'\\n'), '') FROM (
               SELECT request_payload FROM raw.qb_invoices UNION ALL SELECT request_payload FROM raw.qb_customers
               UNION ALL SELECT request_payload FROM raw.qb_items UNION ALL SELECT request_payload FROM raw.qb_vendors) p",
            &[],
        )
        .unwrap()
        .get(0);
    let log = std::fs::read(&log_path).unwrap();
    let log = String::from_utf8_lossy(&log[log_start as usize..]).into_owned();
    assert!(
        log.contains("DEBUG"),
        "the server log was written at debug level"
    );
    let channels = [
        ("NOTICEs", notices.lock().unwrap().join("\n")),
        ("errors", errors.join("\n")),
        ("ledger", ledger),
        ("pg_stat_activity", activity),
        ("request_payload", payloads),
        ("server log", log),
    ];
    let mut needles: BTreeSet<String> = basic_windows();
    for s in &secrets {
        needles.extend(windows(s));
    }
    println!(
        "{} secrets ({} windows) over {} channels",
        secrets.len(),
        needles.len(),
        channels.len()
    );
    assert!(
        secrets.len() >= 6,
        "rotated tokens were collected: {}",
        secrets.len()
    );
    for (name, text) in &channels {
        let found: Vec<&String> = needles
            .iter()
            .filter(|w| text.contains(w.as_str()))
            .collect();
        assert!(
            found.is_empty(),
            "{name} holds {} window(s) of a secret, e.g. {:?}",
            found.len(),
            found.first()
        );
    }
}

/// The error has this SQLSTATE, names its run, says `what`, carries no DETAIL (no backtrace).
fn expect(e: &postgres::Error, code: &str, what: &str) {
    let d = e.as_db_error().expect("a database error");
    assert_eq!(d.code().code(), code, "{}", d.message());
    assert!(d.message().contains(what), "{}", d.message());
    assert!(d.message().contains("run "), "{}", d.message());
    assert_eq!(d.detail(), None);
}

/// The refresh token the emulator considers current.
fn ureq_get_refresh(emu: &Emulator) -> String {
    let v: serde_json::Value = ureq::get(&format!("{}/__emulator/tokens", emu.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    v["refresh_token"].as_str().unwrap().to_owned()
}
