//! End-to-end: least privilege. An operator role runs backfills; a reader role reads raw.* and the
//! ledger. Neither can read a secret or token, change the API hosts, or tamper with the ledger.

use pg_qbo_e2e::*;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

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

    // an operator runs only the connections granted to it: none yet
    let mut op = as_role("e2e_roles", "qbo_op_e2e");
    let n: i64 = op
        .query_one("SELECT count(*) FROM qbo.connections", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "qbo.connections lists only the connections the role may use"
    );
    let e = op
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz)",
            &[&FROM, &TO],
        )
        .expect_err("no grant");
    let d = e.as_db_error().unwrap();
    assert_eq!(d.code().code(), "42501");
    assert_eq!(
        d.message(),
        "qbo.backfill: role \"qbo_op_e2e\" may not run backfills of connection \"default\": a superuser grants it with SELECT qbo.grant_connection('default', 'qbo_op_e2e')"
    );
    let n: i64 = admin
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was written");
    admin
        .batch_execute("SELECT qbo.grant_connection('default', 'qbo_op_e2e')")
        .unwrap();
    let conns: Vec<String> = op
        .query("SELECT name FROM qbo.connections", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(conns, vec!["default".to_owned()]);

    // the operator runs backfills both ways (tokens rotate on every refresh meanwhile)
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
        ("SELECT qbo.grant_connection('default', 'qbo_op_e2e')", "permission denied for function grant_connection"),
        ("SELECT * FROM qbo._connection_grants", "permission denied for table _connection_grants"),
        ("INSERT INTO raw.qb_invoices (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc) VALUES ('1', '1', '{}', now(), now())", "permission denied for table qb_invoices"),
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
        ("SELECT qbo._may_use('default', 10)", "permission denied for function _may_use"),
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
    // The same value given at connection start (PGOPTIONS) once replaced the database-level host
    // for good: Postgres discarded it when pg_qbo loaded, and the run went to Intuit's default
    // host. The run uses the superuser's host.
    let mut opts: postgres::Config = format!(
        "host=127.0.0.1 port={} user=qbo_op_e2e dbname=e2e_roles",
        port()
    )
    .parse()
    .unwrap();
    opts.options("-c qbo.api_base_url=http://169.254.169.254 -c qbo.max_in_flight=100");
    let mut early = opts.connect(postgres::NoTls).unwrap();
    early
        .query("SELECT * FROM qbo.backfill('Item', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)", &[&FROM, &TO])
        .expect("the run goes to the superuser's host");
    let (used, in_flight): (String, i64) = early
        .query_one(
            "SELECT settings->>'api_base_url', (settings->>'max_in_flight')::bigint FROM qbo.runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((used.as_str(), in_flight), (emu.url.as_str(), 10));
    // a host with credentials in it would be stored where readers see it: refused
    admin
        .batch_execute("SET qbo.api_base_url = 'http://user:hunter2@127.0.0.1:9'")
        .unwrap();
    let e = admin
        .batch_execute("CALL qbo.run_backfill('Item', '2025-01-01Z', '2025-02-01Z')")
        .expect_err("credentials in the URL");
    let d = e.as_db_error().unwrap();
    assert_eq!(d.code().code(), "22023");
    assert_eq!(
        d.message(),
        "qbo.run_backfill: qbo.api_base_url holds credentials (user:password@host): every run stores its settings in qbo.runs.settings, which readers can see; use a URL without them"
    );
    admin.batch_execute("RESET qbo.api_base_url").unwrap();
    let leaked: i64 = admin
        .query_one(
            "SELECT count(*) FROM qbo.runs WHERE settings::text LIKE '%hunter2%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);

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

/// Connections are granted to roles (directly or through a group role): an operator runs, resumes
/// and sees only those; a role that may not use a connection cannot touch its runs either. Readers
/// are kept to their companies by row-level security on `realm_id` (the README's recipe), which
/// does not stop pg_qbo's own writes.
#[test]
fn connection_grants_and_row_level_security_keep_companies_apart() {
    let emu = Emulator::start(&["--seed", "62"]);
    let mut admin = fresh_db("e2e_realms", &emu);
    register(
        &mut admin,
        "e2e_realms",
        "second",
        REALM2,
        "emu-refresh-token-0",
    );
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qbo_grp_a') THEN CREATE ROLE qbo_grp_a NOLOGIN; END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qbo_op_a') THEN CREATE ROLE qbo_op_a LOGIN; END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qbo_op_b') THEN CREATE ROLE qbo_op_b LOGIN; END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qbo_an_a') THEN CREATE ROLE qbo_an_a LOGIN; END IF;
             END $$;
             GRANT qbo_grp_a TO qbo_op_a;
             SELECT qbo.grant_operator('qbo_op_a');
             SELECT qbo.grant_operator('qbo_op_b');
             SELECT qbo.grant_reader('qbo_an_a');
             SELECT qbo.grant_connection('default', 'qbo_grp_a');
             SELECT qbo.grant_connection('second', 'qbo_op_b');",
        )
        .unwrap();
    let grants: Vec<(String, String)> = admin
        .query(
            "SELECT connection, role_name::text FROM qbo.connection_grants ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        grants,
        vec![
            ("default".to_owned(), "qbo_grp_a".to_owned()),
            ("second".to_owned(), "qbo_op_b".to_owned())
        ]
    );
    let e = admin
        .batch_execute("SELECT qbo.grant_connection('nope', 'qbo_op_a')")
        .expect_err("unknown connection");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "qbo.grant_connection: unknown connection \"nope\" (registered: default, second)"
    );

    // operator a, through its group: company 1 only
    let mut a = as_role("e2e_realms", "qbo_op_a");
    a.query(
        "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)",
        &[&FROM, &TO],
    )
    .expect("granted through qbo_grp_a");
    let conns: Vec<String> = a
        .query("SELECT name FROM qbo.connections ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(conns, vec!["default".to_owned()]);
    let e = a
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 60, connection => 'second')",
            &[&FROM, &TO],
        )
        .expect_err("not granted");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "qbo.run_backfill: role \"qbo_op_a\" may not run backfills of connection \"second\": a superuser grants it with SELECT qbo.grant_connection('second', 'qbo_op_a')"
    );

    // operator b: company 2; a cannot resume (or so much as mark) b's run
    let mut b = as_role("e2e_realms", "qbo_op_b");
    let run_b: i64 = b
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 60, connection => 'second')",
            &[&FROM, &TO],
        )
        .unwrap()
        .get(0);
    for sql in [
        format!("SELECT * FROM qbo.resume({run_b})"),
        format!("CALL qbo.run_resume({run_b})"),
    ] {
        let e = a.batch_execute(&sql).expect_err(&sql);
        let d = e.as_db_error().unwrap();
        assert_eq!(d.code().code(), "42501", "{sql}");
        assert!(
            d.message().contains(&format!(
                "run {run_b}: role \"qbo_op_a\" may not run backfills of connection \"second\""
            )),
            "{sql}: {}",
            d.message()
        );
    }
    let (status, execs): (String, i32) = admin
        .query_one(
            "SELECT status, executions FROM qbo.runs WHERE run_id = $1",
            &[&run_b],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((status.as_str(), execs), ("succeeded", 1));

    // revoking the group's grant stops a's next run
    admin
        .batch_execute("SELECT qbo.revoke_connection('default', 'qbo_grp_a')")
        .unwrap();
    let e = a
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz)",
            &[&FROM, &TO],
        )
        .expect_err("revoked");
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");

    // readers: README's row-level security recipe, realm 1 for qbo_an_a
    admin
        .batch_execute(
            "CREATE TABLE public.realm_readers (role_name name, realm_id text, PRIMARY KEY (role_name, realm_id));
             GRANT SELECT ON public.realm_readers TO PUBLIC;
             DO $$ DECLARE t regclass; BEGIN
               FOR t IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'raw' AND c.relkind = 'r' LOOP
                 EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
                 EXECUTE format('DROP POLICY IF EXISTS realm_readers ON %s', t);
                 EXECUTE format('CREATE POLICY realm_readers ON %s FOR SELECT USING (realm_id IN (SELECT r.realm_id FROM public.realm_readers r WHERE r.role_name = current_user))', t);
               END LOOP;
             END $$;",
        )
        .unwrap();
    admin
        .execute(
            "INSERT INTO public.realm_readers VALUES ('qbo_an_a', $1)",
            &[&REALM1],
        )
        .unwrap();
    let mut an = as_role("e2e_realms", "qbo_an_a");
    let seen: Vec<String> = an
        .query("SELECT DISTINCT realm_id FROM raw.qb_invoices", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![REALM1.to_owned()]);
    assert_eq!(
        raw(&mut an, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    // pg_qbo writes as the table's owner, which the policy does not restrict
    let ids: Vec<String> = emu
        .truth(REALM2, "Invoice")
        .keys()
        .take(3)
        .cloned()
        .collect();
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"realm": REALM2, "entity": "Invoice", "op": "update", "ids": ids}),
    );
    let to: String = admin
        .query_one("SELECT (now() + interval '1 day')::text", &[])
        .unwrap()
        .get(0);
    let rows = b
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 1000, connection => 'second')",
            &[&FROM, &to],
        )
        .unwrap();
    assert_eq!(sum_rows(&rows).updated, 3);
    assert_eq!(
        raw(&mut admin, "qb_invoices", REALM2),
        emu.truth(REALM2, "Invoice")
    );
}
