//! End-to-end: the `qbo.*` settings can be set the way README ("Settings") says, from fresh
//! sessions, with `ALTER SYSTEM` and `ALTER DATABASE`, and a run started from a fresh session uses
//! them. PostgreSQL knows a `qbo.*` name only once pg_qbo's library is loaded in the session: before
//! that, `ALTER SYSTEM` refuses the name and `ALTER DATABASE` stores any text unchecked. Hence
//! README's `LOAD 'pg_qbo'` first. `ALTER SYSTEM` changes the whole cluster, so this test has a
//! cluster of its own.

use pg_qbo_e2e::*;
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-03-01T00:00:00Z";

fn message(e: postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// The settings a run stored, from a run started in a fresh session.
fn run_settings(cluster: &PrivateCluster) -> (String, String, String) {
    let mut c = cluster.connect("postgres");
    let r = c
        .query_one(
            "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
            &[&FROM, &TO],
        )
        .unwrap();
    let run_id: i64 = r.get(0);
    let r = c
        .query_one(
            "SELECT settings->>'max_in_flight', settings->>'max_retries', settings->>'http_timeout_ms'
               FROM qbo.runs WHERE run_id = $1 AND status = 'succeeded'",
            &[&run_id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn settings_set_from_fresh_sessions_with_alter_system_and_alter_database_reach_a_run() {
    let emu = Emulator::start(&["--seed", "73"]);
    let cluster =
        PrivateCluster::start(&format!("{}-settings", cluster_dir().display()), port() + 8);
    let mut c = cluster.connect("postgres");
    c.batch_execute(&format!(
        "ALTER DATABASE postgres SET qbo.api_base_url = '{u}'; ALTER DATABASE postgres SET qbo.token_url = '{u}/oauth2/v1/tokens/bearer'",
        u = emu.url
    ))
    .unwrap();
    let mut c = cluster.connect("postgres");
    c.batch_execute("CREATE EXTENSION pg_qbo").unwrap();
    register(&mut c, "settings", "default", REALM1, "emu-refresh-token-0");
    assert_eq!(
        run_settings(&cluster),
        ("10".into(), "6".into(), "120000".into()),
        "the defaults first"
    );

    // A fresh session that has not loaded pg_qbo: Postgres does not know the name yet.
    let mut fresh = cluster.connect("postgres");
    assert_eq!(
        message(
            fresh
                .batch_execute("ALTER SYSTEM SET qbo.max_in_flight = 4")
                .unwrap_err()
        ),
        "unrecognized configuration parameter \"qbo.max_in_flight\""
    );
    // ... and ALTER DATABASE takes any text, unchecked (README warns of exactly this).
    fresh
        .batch_execute("ALTER DATABASE postgres SET qbo.max_retries = 'many'")
        .unwrap();
    fresh
        .batch_execute("ALTER DATABASE postgres RESET qbo.max_retries")
        .unwrap();

    // README's way: LOAD 'pg_qbo' first, in a fresh session. Values are checked like any setting's.
    let mut fresh = cluster.connect("postgres");
    // (one statement per call: ALTER SYSTEM cannot run in the implicit transaction of a
    // multi-statement string)
    for sql in [
        "LOAD 'pg_qbo'",
        "ALTER SYSTEM SET qbo.max_in_flight = 4",
        "ALTER SYSTEM SET qbo.max_retries = 3",
        "SELECT pg_reload_conf()",
    ] {
        fresh.batch_execute(sql).unwrap();
    }
    assert_eq!(
        message(
            fresh
                .batch_execute("ALTER SYSTEM SET qbo.max_in_flight = 0")
                .unwrap_err()
        ),
        "0 is outside the valid range for parameter \"qbo.max_in_flight\" (1 .. 100)"
    );
    let mut fresh = cluster.connect("postgres");
    fresh.batch_execute("LOAD 'pg_qbo'").unwrap();
    fresh
        .batch_execute("ALTER DATABASE postgres SET qbo.http_timeout_ms = 4321")
        .unwrap();
    assert_eq!(
        message(
            fresh
                .batch_execute("ALTER DATABASE postgres SET qbo.http_timeout_ms = 'soon'")
                .unwrap_err()
        ),
        "invalid value for parameter \"qbo.http_timeout_ms\": \"soon\""
    );

    // The reload reaches new sessions once the postmaster has read the file again: wait for that
    // (observable), then a run from a fresh session stores all three values.
    let t0 = Instant::now();
    loop {
        let v: String = cluster
            .connect("postgres")
            .query_one("SELECT current_setting('qbo.max_in_flight')", &[])
            .unwrap()
            .get(0);
        if v == "4" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the reload did not reach new sessions in 30 s (qbo.max_in_flight = {v})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = run_settings(&cluster);
    println!(
        "a run from a fresh session stored max_in_flight, max_retries, http_timeout_ms = {got:?}"
    );
    assert_eq!(got, ("4".into(), "3".into(), "4321".into()));
}
