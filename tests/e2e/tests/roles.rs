//! End-to-end: least privilege. An operator role runs backfills; a reader role reads raw.* and the
//! ledger. Neither can read a secret or token, change the API hosts, or tamper with the ledger.

use pg_qbo_e2e::*;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

fn as_role(db: &str, role: &str) -> postgres::Client {
    postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user={role} dbname={db}", port()),
        postgres::NoTls,
    )
    .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

fn denied(c: &mut postgres::Client, sql: &str) -> String {
    let e = c.batch_execute(sql).expect_err(sql);
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

#[test]
fn operator_runs_backfills_reader_reads_and_neither_sees_a_secret() {
    let emu = Emulator::start(&["--seed", "61", "--rotate-refresh", "always"]);
    let mut admin = fresh_db("e2e_roles", &emu);
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qbo_op_e2e') THEN CREATE ROLE qbo_op_e2e LOGIN; END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qbo_ro_e2e') THEN CREATE ROLE qbo_ro_e2e LOGIN; END IF;
             END $$;",
        )
        .unwrap();
    admin
        .batch_execute(
            "SELECT qbo.grant_operator('qbo_op_e2e'); SELECT qbo.grant_reader('qbo_ro_e2e')",
        )
        .unwrap();

    // the operator runs backfills both ways (tokens rotate on every refresh meanwhile)
    let mut op = as_role("e2e_roles", "qbo_op_e2e");
    let rows = op
        .query("SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO])
        .unwrap();
    assert!(!rows.is_empty());
    op.query_one(
        "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 60, 1000)",
        &[&FROM, &TO],
    )
    .unwrap();
    assert_eq!(
        raw(&mut op, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    assert_eq!(
        raw(&mut op, "qb_customers", REALM1),
        truth_in_window(&emu, REALM1, "Customer", FROM, TO)
    );
    let n: i64 = op
        .query_one("SELECT count(*) FROM qbo.progress", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // ... and cannot read or touch what it must not
    for (sql, want) in [
        ("SELECT * FROM qbo._connections", "permission denied for table _connections"),
        ("SELECT client_secret FROM qbo._connections", "permission denied for table _connections"),
        ("SET qbo.api_base_url = 'http://169.254.169.254'", "permission denied to set parameter \"qbo.api_base_url\""),
        ("SET qbo.token_url = 'http://169.254.169.254'", "permission denied to set parameter \"qbo.token_url\""),
        ("ALTER ROLE qbo_op_e2e SET qbo.api_base_url = 'http://x'", "permission denied to set parameter \"qbo.api_base_url\""),
        ("UPDATE qbo.runs SET settings = '{}'", "permission denied for table runs"),
        ("DELETE FROM qbo.run_chunks", "permission denied for table run_chunks"),
        ("SELECT qbo.connect('1', 'a', 'b', 'c')", "permission denied for function connect"),
        ("SELECT qbo.connect_from_file('/etc/passwd')", "permission denied for function connect_from_file"),
        ("SELECT qbo.grant_operator('qbo_ro_e2e')", "permission denied for function grant_operator"),
        ("CREATE FUNCTION pg_temp.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'; CREATE TRIGGER t BEFORE INSERT ON raw.qb_invoices FOR EACH ROW EXECUTE FUNCTION pg_temp.f()", "permission denied for table qb_invoices"),
        ("DROP TABLE raw.qb_invoices", "must be owner of table qb_invoices"),
    ] {
        assert_eq!(denied(&mut op, sql), want, "operator: {sql}");
    }

    // the reader reads raw.* and the ledger, and nothing else
    let mut ro = as_role("e2e_roles", "qbo_ro_e2e");
    let n: i64 = ro
        .query_one("SELECT count(*) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    assert!(n > 0);
    let n: i64 = ro
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    for (sql, want) in [
        ("SELECT * FROM qbo._connections", "permission denied for table _connections"),
        ("SELECT * FROM qbo.connections", "permission denied for view connections"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z')", "permission denied for function backfill"),
        ("CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-02-01Z')", "permission denied for procedure run_backfill"),
        ("SELECT * FROM qbo.resume(1)", "permission denied for function resume"),
        ("INSERT INTO raw.qb_invoices (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc) VALUES ('1', '1', '{}', now(), now())", "permission denied for table qb_invoices"),
    ] {
        assert_eq!(denied(&mut ro, sql), want, "reader: {sql}");
    }
    // Before pg_qbo is loaded in a session, qbo.* are placeholders anyone may SET; when the library
    // loads it discards a value a non-superuser set for a superuser-only setting (with a WARNING),
    // so a fresh session cannot point a backfill elsewhere either.
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = std::sync::Arc::clone(&warnings);
    let mut cfg: postgres::Config = format!(
        "host=127.0.0.1 port={} user=qbo_op_e2e dbname=e2e_roles",
        port()
    )
    .parse()
    .unwrap();
    cfg.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_owned()));
    let mut fresh = cfg.connect(postgres::NoTls).unwrap();
    fresh
        .batch_execute("SET qbo.api_base_url = 'http://169.254.169.254'")
        .unwrap();
    fresh
        .query("SELECT * FROM qbo.backfill('Item', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO])
        .unwrap();
    let used: String = fresh
        .query_one(
            "SELECT settings->>'api_base_url' FROM qbo.runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(used, emu.url, "the run used the superuser's host");
    let shown: String = fresh
        .query_one("SHOW qbo.api_base_url", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, emu.url);
    println!("warnings: {:?}", warnings.lock().unwrap());
    assert!(
        warnings
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.contains("qbo.api_base_url")),
        "the discarded SET is reported"
    );
    // nothing either role can see holds a secret or token
    let stored: (String, String) = {
        let r = admin
            .query_one(
                "SELECT refresh_token, access_token FROM qbo._connections WHERE name = 'default'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    for c in [&mut op, &mut ro] {
        let visible: String = c
            .query_one(
                "SELECT coalesce((SELECT string_agg(row_to_json(r)::text, ' ') FROM qbo.runs r), '') ||
                        coalesce((SELECT string_agg(row_to_json(p)::text, ' ') FROM qbo.progress p), '') ||
                        coalesce((SELECT string_agg(query, ' ') FROM pg_stat_activity), '')",
                &[],
            )
            .unwrap()
            .get(0);
        for secret in ["emu-client-secret", stored.0.as_str(), stored.1.as_str()] {
            assert!(
                !visible.contains(secret),
                "a secret is visible to a non-superuser role"
            );
        }
    }
}
