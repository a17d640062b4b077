//! End-to-end attack suite: nothing a less privileged role plants may run as the extension owner
//! (a superuser), whatever the caller's `search_path`, and pg_qbo refuses raw tables another role
//! can attach code to.
//!
//! Every attack has a positive control (the planted object fires when called directly, writing a
//! row to a marker table) and is judged by outcomes: the marker table the plant writes (who ran it,
//! and the secrets it could read), and snapshots of `pg_authid`, `pg_auth_members` and the ACLs of
//! every schema, database and pg_qbo object taken before and after the attack.

use pg_qbo_e2e::*;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

/// Superusers, the attributes and memberships of the roles of the attack, and the ACLs and owners
/// of this database, its schemas and every relation or function of schemas qbo and raw: what an
/// escalation would change. (Other tests create roles and databases meanwhile: they are left out.)
fn snapshot(admin: &mut postgres::Client, role: &str) -> Vec<String> {
    admin
        .query(
            "SELECT x FROM (
               SELECT format('superusers %s', string_agg(rolname, ',' ORDER BY rolname)) AS x
                 FROM pg_authid WHERE rolsuper
               UNION ALL
               SELECT format('role %s super=%s createrole=%s createdb=%s bypassrls=%s replication=%s',
                             rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication)
                 FROM pg_authid WHERE rolname IN ($1, 'postgres')
               UNION ALL
               SELECT format('member %s of %s (admin %s)', m.member::regrole, m.roleid::regrole, m.admin_option)
                 FROM pg_auth_members m
                WHERE m.member::regrole::text IN ($1, 'postgres') OR m.roleid::regrole::text IN ($1, 'postgres')
               UNION ALL
               SELECT format('schema %s owner %s acl %s', nspname, nspowner::regrole, nspacl) FROM pg_namespace
               UNION ALL
               SELECT format('database %s owner %s acl %s', datname, datdba::regrole, datacl)
                 FROM pg_database WHERE datname = current_database()
               UNION ALL
               SELECT format('relation %s owner %s acl %s', c.oid::regclass, c.relowner::regrole, c.relacl)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('qbo', 'raw')
               UNION ALL
               SELECT format('function %s owner %s acl %s', p.oid::regprocedure, p.proowner::regrole, p.proacl)
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'qbo') s
             ORDER BY x",
            &[&role],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The rows of a marker table: (role that ran the plant, what it did or read).
fn marker(admin: &mut postgres::Client, table: &str) -> Vec<(String, String)> {
    admin
        .query(
            &format!("SELECT who::text, what FROM {table} ORDER BY at, what"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn is_superuser(admin: &mut postgres::Client, role: &str) -> bool {
    admin
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

/// What a plant does each time it runs, as whoever runs it: records who it runs as, copies every
/// secret it can read, and tries to make `role` a superuser. Every step that fails is skipped, so
/// the plant never makes the statement it runs in fail.
fn plant_body(marker: &str, role: &str) -> String {
    format!(
        "INSERT INTO {marker} (who, what) VALUES (current_user, 'fired');
         BEGIN
           INSERT INTO {marker} (who, what)
           SELECT current_user, 'secrets: ' || string_agg(client_secret || ' ' || refresh_token || ' ' || coalesce(access_token, ''), ', ')
             FROM qbo._connections;
         EXCEPTION WHEN OTHERS THEN NULL;
         END;
         BEGIN
           EXECUTE 'ALTER ROLE {role} SUPERUSER';
           INSERT INTO {marker} (who, what) VALUES (current_user, 'made {role} a superuser');
         EXCEPTION WHEN OTHERS THEN NULL;
         END;"
    )
}

fn diff(before: &[String], after: &[String]) -> Vec<String> {
    let mut d: Vec<String> = after
        .iter()
        .filter(|x| !before.contains(x))
        .map(|x| format!("+ {x}"))
        .collect();
    d.extend(
        before
            .iter()
            .filter(|x| !after.contains(x))
            .map(|x| format!("- {x}")),
    );
    d
}

/// Reports what the attack achieved (printed whatever the outcome, so a run against a vulnerable
/// build shows it), then asserts it achieved nothing.
fn assert_nothing_gained(
    admin: &mut postgres::Client,
    marker_table: &str,
    role: &str,
    before: &[String],
) {
    let fired = marker(admin, marker_table);
    let changed = diff(before, &snapshot(admin, role));
    let super_now = is_superuser(admin, role);
    println!("plant fired: {fired:?}");
    println!("catalog changes: {changed:?}");
    println!("{role} is superuser: {super_now}");
    assert_eq!(fired, Vec::<(String, String)>::new(), "the plant ran");
    assert_eq!(changed, Vec::<String>::new(), "roles or ACLs changed");
    assert!(!super_now, "{role} became a superuser");
}

/// Prints what a plant did so far (before the assertions: a run against a vulnerable build shows
/// the attack's outcome).
fn report(admin: &mut postgres::Client, marker_table: &str, role: &str) {
    println!("plant fired: {:?}", marker(admin, marker_table));
    println!("{role} is superuser: {}", is_superuser(admin, role));
}

/// An operator owns a schema with an `=` (text, text) operator, puts it first on its search_path
/// (in the session, and for its role so the background worker has it too) and runs backfills both
/// ways. Before the fix the ledger's `name = $1` ran the operator as the extension owner.
#[test]
fn an_operators_own_operator_never_runs_as_the_owner() {
    let emu = Emulator::start(&["--seed", "71"]);
    let mut admin = fresh_db("e2e_atk_operator", &emu);
    fresh_role(&mut admin, "atk_op");
    admin
        .batch_execute(
            "SELECT qbo.grant_operator('atk_op');
             SELECT qbo.grant_connection('default', 'atk_op');
             GRANT CREATE ON DATABASE e2e_atk_operator TO atk_op;",
        )
        .unwrap();
    // raw.qb_invoices exists before the attack (the snapshot then covers it)
    admin
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 60)",
            &[&FROM, &TO],
        )
        .unwrap();
    let mut op = as_role("e2e_atk_operator", "atk_op");
    op.batch_execute(&format!(
        "CREATE SCHEMA evil;
         CREATE TABLE evil.marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT USAGE ON SCHEMA evil TO PUBLIC;
         GRANT INSERT, SELECT ON evil.marker TO PUBLIC;
         CREATE FUNCTION evil.eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN a OPERATOR(pg_catalog.=) b;
         END $f$;
         CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
         CREATE FUNCTION evil.format(text, int, int) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN pg_catalog.format($1, $2, $3);
         END $f$;",
        plant_body("evil.marker", "atk_op"),
        plant_body("evil.marker", "atk_op")
    ))
    .unwrap();
    // positive control: the operator fires when used
    op.batch_execute("SET search_path = evil, pg_catalog")
        .unwrap();
    let eq: bool = op
        .query_one("SELECT 'a'::text = 'a'::text", &[])
        .unwrap()
        .get(0);
    assert!(eq);
    assert_eq!(
        marker(&mut admin, "evil.marker"),
        vec![("atk_op".to_owned(), "fired".to_owned())],
        "positive control: the planted operator runs (as its caller)"
    );
    admin.batch_execute("DELETE FROM evil.marker").unwrap();
    let before = snapshot(&mut admin, "atk_op");

    // the attack: the session's path and the role's (the worker of qbo.backfill logs in with it)
    op.batch_execute("ALTER ROLE atk_op SET search_path = evil, pg_catalog, public")
        .unwrap();
    let mut op = as_role("e2e_atk_operator", "atk_op");
    op.batch_execute("SET search_path = evil, pg_catalog, public")
        .unwrap();
    op.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 200)",
        &[&FROM, &TO],
    )
    .expect("CALL as the operator");
    op.query(
        "SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30)",
        &[&FROM, &TO],
    )
    .expect("qbo.backfill as the operator");
    op.query(
        "SELECT * FROM qbo.resume((SELECT max(run_id) FROM qbo.runs))",
        &[],
    )
    .expect("qbo.resume as the operator");
    // the backfills did their job
    assert_eq!(
        raw(&mut admin, "qb_customers", REALM1),
        truth_in_window(&emu, REALM1, "Customer", FROM, TO)
    );
    // settle the ledger's raw.qb_customers creation into the baseline: the run made it, not the plant
    let created: Vec<String> = snapshot(&mut admin, "atk_op")
        .into_iter()
        .filter(|l| l.contains("raw.qb_customers") || l.contains("qb_customers_"))
        .collect();
    let before: Vec<String> = before.into_iter().chain(created).collect();
    assert_nothing_gained(&mut admin, "evil.marker", "atk_op", &before);
    let run_by: Vec<String> = admin
        .query(
            "SELECT DISTINCT run_by::text FROM qbo.runs WHERE run_id > 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(run_by, vec!["atk_op".to_owned()], "run_by names the caller");
}

/// A role with no pg_qbo rights at all that may create in `public` (as in a database upgraded
/// from PostgreSQL 14) plants better matches for functions pg_qbo calls: `format(text, int, int)`
/// (the ledger's progress note) and `unnest(text[])` (the page upsert). A superuser then runs
/// backfills with the default search_path. Before the fix both ran as that superuser.
#[test]
fn functions_planted_in_public_never_run_in_a_superusers_backfill() {
    let emu = Emulator::start(&["--seed", "72"]);
    let mut admin = fresh_db("e2e_atk_public", &emu);
    fresh_role(&mut admin, "atk_pub");
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO atk_pub")
        .unwrap();
    let mut atk = as_role("e2e_atk_public", "atk_pub");
    atk.batch_execute(&format!(
        "CREATE TABLE public.atk_marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT, SELECT ON public.atk_marker TO PUBLIC;
         CREATE FUNCTION public.format(text, int, int) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN pg_catalog.format($1, $2, $3);
         END $f$;
         CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN QUERY SELECT pg_catalog.unnest($1);
         END $f$;",
        plant_body("public.atk_marker", "atk_pub"),
        plant_body("public.atk_marker", "atk_pub")
    ))
    .unwrap();
    // positive control: with the default search_path both plants win over pg_catalog's
    let mut control = as_role("e2e_atk_public", "atk_pub");
    let f: String = control
        .query_one("SELECT format('chunk %s page %s', 1, 2)", &[])
        .unwrap()
        .get(0);
    assert_eq!(f, "chunk 1 page 2");
    let n: i64 = control
        .query_one("SELECT count(*) FROM unnest('{a,b}'::text[])", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert_eq!(
        marker(&mut admin, "public.atk_marker"),
        vec![
            ("atk_pub".to_owned(), "fired".to_owned()),
            ("atk_pub".to_owned(), "fired".to_owned())
        ],
        "positive control: both plants run when called"
    );
    admin
        .batch_execute("DELETE FROM public.atk_marker")
        .unwrap();
    let before = snapshot(&mut admin, "atk_pub");

    // the attack: a superuser's backfills, default search_path, long enough for progress notes
    let mut dba = connect("e2e_atk_public");
    let path: String = dba.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(path, "\"$user\", public");
    dba.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 7, 50)",
        &[&FROM, &TO],
    )
    .expect("CALL as a superuser");
    dba.query(
        "SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 7, page_size => 20)",
        &[&FROM, &TO],
    )
    .expect("qbo.backfill as a superuser");
    assert_eq!(
        raw(&mut dba, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    let created: Vec<String> = snapshot(&mut admin, "atk_pub")
        .into_iter()
        .filter(|l| l.contains(" raw") || l.contains("raw."))
        .collect();
    let before: Vec<String> = before.into_iter().chain(created).collect();
    assert_nothing_gained(&mut admin, "public.atk_marker", "atk_pub", &before);
}

/// A role that may only create schemas in the database makes schema `raw` and `raw.qb_bills` with
/// the right shape and a BEFORE INSERT trigger, before the first Bill backfill. Before the fix the
/// backfill wrote into it and the trigger ran as the owner.
#[test]
fn a_raw_schema_made_by_another_role_is_refused_and_nothing_is_written() {
    let emu = Emulator::start(&["--seed", "73"]);
    let mut admin = fresh_db("e2e_atk_raw", &emu);
    fresh_role(&mut admin, "atk_db");
    admin
        .batch_execute("GRANT CREATE ON DATABASE e2e_atk_raw TO atk_db")
        .unwrap();
    let mut atk = as_role("e2e_atk_raw", "atk_db");
    atk.batch_execute(&format!(
        "CREATE SCHEMA raw;
         CREATE TABLE raw.atk_marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT USAGE ON SCHEMA raw TO PUBLIC;
         GRANT INSERT, SELECT ON raw.atk_marker TO PUBLIC;
         CREATE TABLE raw.qb_bills (
             realm_id text NOT NULL, id text NOT NULL, payload jsonb NOT NULL,
             ingested_at_utc timestamptz NOT NULL DEFAULT now(),
             extract_window_start_utc timestamptz NOT NULL, extract_window_end_utc timestamptz NOT NULL,
             page_number int, page_size int, request_payload jsonb,
             PRIMARY KEY (realm_id, id));
         GRANT SELECT, INSERT, UPDATE ON raw.qb_bills TO PUBLIC;
         CREATE FUNCTION raw.plant() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN NEW;
         END $f$;
         CREATE TRIGGER plant BEFORE INSERT OR UPDATE ON raw.qb_bills FOR EACH ROW EXECUTE FUNCTION raw.plant();",
        plant_body("raw.atk_marker", "atk_db")
    ))
    .unwrap();
    // positive control: the trigger fires on insert
    atk.batch_execute(
        "INSERT INTO raw.qb_bills (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc)
         VALUES ('1', '1', '{}', now(), now());
         DELETE FROM raw.qb_bills;",
    )
    .unwrap();
    assert_eq!(
        marker(&mut admin, "raw.atk_marker"),
        vec![("atk_db".to_owned(), "fired".to_owned())]
    );
    admin.batch_execute("DELETE FROM raw.atk_marker").unwrap();
    let before = snapshot(&mut admin, "atk_db");

    let want = "schema raw is owned by role \"atk_db\", not by pg_qbo's owner \"postgres\": pg_qbo writes raw tables as its owner and trusts nothing another role controls. Review what is in raw, then ALTER SCHEMA raw OWNER TO \"postgres\" (and ALTER TABLE ... OWNER TO \"postgres\" for its raw.qb_* tables) as a superuser, or rename it and let pg_qbo create a new one";
    let mut dba = connect("e2e_atk_raw");
    let r = dba.query_one(
        "CALL qbo.run_backfill('Bill', $1::text::timestamptz, $2::text::timestamptz, 60)",
        &[&FROM, &TO],
    );
    report(&mut admin, "raw.atk_marker", "atk_db");
    let e = r.expect_err("a raw schema of another role");
    assert_eq!(
        db_error(e),
        ("42501".to_owned(), format!("qbo.run_backfill: {want}"))
    );
    let e = dba
        .query(
            "SELECT * FROM qbo.backfill('Bill', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)",
            &[&FROM, &TO],
        )
        .expect_err("a raw schema of another role");
    assert_eq!(
        db_error(e),
        ("42501".to_owned(), format!("qbo.backfill: {want}"))
    );
    // a fresh table of an entity never backfilled is refused too: raw is not pg_qbo's
    let e = dba
        .query(
            "SELECT * FROM qbo.backfill('Vendor', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60)",
            &[&FROM, &TO],
        )
        .expect_err("a raw schema of another role");
    assert_eq!(db_error(e).0, "42501");
    // granting roles on such a schema is refused as well
    fresh_role(&mut admin, "atk_victim_reader");
    let e = admin
        .batch_execute("SELECT qbo.grant_reader('atk_victim_reader')")
        .expect_err("grant_reader on a foreign raw");
    assert_eq!(
        db_error(e),
        (
            "42501".to_owned(),
            "qbo.grant_reader: schema raw is owned by role \"atk_db\", not by pg_qbo's owner \"postgres\"; review it, then ALTER SCHEMA raw OWNER TO \"postgres\" (or rename it) and call qbo.grant_reader again".to_owned()
        )
    );
    // nothing written: no run, no row, no table, and the plant never ran
    let n: i64 = dba
        .query_one("SELECT count(*) FROM raw.qb_bills", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = dba
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_nothing_gained(&mut admin, "raw.atk_marker", "atk_db", &before);
}

/// A DBA attaches a trigger to a raw table. With a function another role owns (which that role can
/// replace at any time) the backfill is refused, naming it; with the DBA's own function it runs.
#[test]
fn a_raw_trigger_runs_only_when_a_trusted_role_owns_its_function() {
    let emu = Emulator::start(&["--seed", "74"]);
    let mut admin = fresh_db("e2e_atk_trigger", &emu);
    fresh_role(&mut admin, "atk_fn");
    fresh_role(&mut admin, "atk_trigger_op");
    admin
        .batch_execute(
            "GRANT CREATE ON DATABASE e2e_atk_trigger TO atk_fn;
             SELECT qbo.grant_operator('atk_trigger_op');
             SELECT qbo.grant_connection('default', 'atk_trigger_op');",
        )
        .unwrap();
    admin
        .query_one(
            "CALL qbo.run_backfill('Item', $1::text::timestamptz, $2::text::timestamptz, 60)",
            &[&FROM, &TO],
        )
        .unwrap();
    let mut atk = as_role("e2e_atk_trigger", "atk_fn");
    atk.batch_execute(&format!(
        "CREATE SCHEMA atk;
         GRANT USAGE ON SCHEMA atk TO PUBLIC;
         CREATE TABLE atk.marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT, SELECT ON atk.marker TO PUBLIC;
         CREATE FUNCTION atk.audit() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN NEW;
         END $f$;",
        plant_body("atk.marker", "atk_fn")
    ))
    .unwrap();
    admin
        .batch_execute(
            "CREATE TRIGGER audit BEFORE INSERT OR UPDATE ON raw.qb_items FOR EACH ROW EXECUTE FUNCTION atk.audit();",
        )
        .unwrap();
    // positive control: the trigger fires on a write of the table
    admin
        .batch_execute("UPDATE raw.qb_items SET page_size = page_size WHERE id = '1'")
        .unwrap();
    let fired = marker(&mut admin, "atk.marker");
    assert_eq!(fired.len(), 3, "positive control: {fired:?}");
    assert!(fired.iter().all(|(who, _)| who == "postgres"));
    admin
        .batch_execute("DELETE FROM atk.marker; ALTER ROLE atk_fn NOSUPERUSER;")
        .unwrap();
    let before = snapshot(&mut admin, "atk_fn");
    let rows_before: i64 = admin
        .query_one("SELECT count(*) FROM raw.qb_items", &[])
        .unwrap()
        .get(0);

    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"realm": REALM1, "entity": "Item", "op": "update", "count": 5}),
    );
    let to: String = admin
        .query_one("SELECT (now() + interval '1 day')::text", &[])
        .unwrap()
        .get(0);
    let mut op = as_role("e2e_atk_trigger", "atk_trigger_op");
    let r = op.query_one(
        "CALL qbo.run_backfill('Item', $1::text::timestamptz, $2::text::timestamptz, 400)",
        &[&FROM, &to],
    );
    report(&mut admin, "atk.marker", "atk_fn");
    let e = r.expect_err("an untrusted trigger function");
    let (code, msg) = db_error(e);
    println!("{msg}");
    assert_eq!(code, "42501");
    assert_eq!(
        msg,
        "qbo.run_backfill: pg_qbo will not write raw.qb_items: it writes raw tables as its owner \"postgres\", and function atk.audit() (reached from trigger audit on table raw.qb_items) is owned by role atk_fn, which is neither a superuser nor pg_qbo's owner. Nothing was written. Remove what another role attached (or, after reviewing it, have a superuser take ownership of it), then run again"
    );
    let rows_after: i64 = admin
        .query_one("SELECT count(*) FROM raw.qb_items", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows_after, rows_before);
    assert_nothing_gained(&mut admin, "atk.marker", "atk_fn", &before);

    // the DBA's own audit trigger (a superuser's function) is trusted, and runs
    admin
        .batch_execute(
            "DROP TRIGGER audit ON raw.qb_items;
             CREATE TABLE public.item_audit (id text, sync text);
             CREATE FUNCTION public.dba_audit() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN
               INSERT INTO public.item_audit VALUES (NEW.id, NEW.payload->>'SyncToken');
               RETURN NEW;
             END $f$;
             CREATE TRIGGER dba_audit AFTER INSERT OR UPDATE ON raw.qb_items FOR EACH ROW EXECUTE FUNCTION public.dba_audit();",
        )
        .unwrap();
    op.query_one(
        "CALL qbo.run_backfill('Item', $1::text::timestamptz, $2::text::timestamptz, 400)",
        &[&FROM, &to],
    )
    .expect("a superuser's trigger is trusted");
    let written: i64 = admin
        .query_one(
            "SELECT sum(inserted + updated)::bigint FROM qbo.run_chunks WHERE run_id = (SELECT max(run_id) FROM qbo.runs)",
            &[],
        )
        .unwrap()
        .get::<_, Option<i64>>(0)
        .unwrap_or(0);
    let audited: i64 = admin
        .query_one("SELECT count(*) FROM public.item_audit", &[])
        .unwrap()
        .get(0);
    assert!(written > 0, "the mutated items were written again");
    assert_eq!(audited, written, "the DBA's trigger saw every write");
    assert_eq!(
        raw(&mut admin, "qb_items", REALM1),
        emu.truth(REALM1, "Item")
    );
}

/// Operators read raw.* but write it only through pg_qbo: a hand-made record with a huge SyncToken
/// (which no later backfill would ever replace) is refused.
#[test]
fn operators_cannot_write_raw_tables_by_hand() {
    let emu = Emulator::start(&["--seed", "75"]);
    let mut admin = fresh_db("e2e_atk_write", &emu);
    fresh_role(&mut admin, "atk_writer");
    admin
        .batch_execute(
            "SELECT qbo.grant_operator('atk_writer'); SELECT qbo.grant_connection('default', 'atk_writer');",
        )
        .unwrap();
    let mut op = as_role("e2e_atk_write", "atk_writer");
    op.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 60)",
        &[&FROM, &TO],
    )
    .unwrap();
    let n: i64 = op
        .query_one("SELECT count(*) FROM raw.qb_invoices", &[])
        .unwrap()
        .get(0);
    assert!(n > 0, "operators read raw tables");
    for (sql, want) in [
        ("UPDATE raw.qb_invoices SET payload = jsonb_set(payload, '{SyncToken}', '\"999999\"')", "permission denied for table qb_invoices"),
        ("INSERT INTO raw.qb_invoices (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc) VALUES ('1', 'x', '{\"SyncToken\":\"999999\"}', now(), now())", "permission denied for table qb_invoices"),
        ("DELETE FROM raw.qb_invoices", "permission denied for table qb_invoices"),
        ("TRUNCATE raw.qb_invoices", "permission denied for table qb_invoices"),
    ] {
        let e = op.batch_execute(sql).expect_err(sql);
        assert_eq!(db_error(e), ("42501".to_owned(), want.to_owned()), "{sql}");
    }
    // a role granted by pg_qbo 0.1.0 (INSERT, UPDATE on raw) loses them when granted again
    admin
        .batch_execute(
            "GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA raw TO atk_writer;
             SELECT qbo.grant_operator('atk_writer');",
        )
        .unwrap();
    let e = op
        .batch_execute("UPDATE raw.qb_invoices SET page_size = 1")
        .expect_err("writes revoked");
    assert_eq!(db_error(e).1, "permission denied for table qb_invoices");
}

/// Status of a run and the process holding its liveness lock (None: no live process).
fn run_state(c: &mut postgres::Client, run_id: i64) -> (String, Option<i32>) {
    let r = c
        .query_one(
            "SELECT r.status,
                    (SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND l.classid = 1364414287 AND l.objid = r.run_id::oid AND l.objsubid = 2)
               FROM qbo.runs r WHERE r.run_id = $1",
            &[&run_id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Waits (bounded) for the final status of a run that goes on in its worker.
fn wait_final(c: &mut postgres::Client, run_id: i64) -> String {
    let t0 = std::time::Instant::now();
    loop {
        c.execute("SELECT qbo._mark_interrupted()", &[]).unwrap();
        let (status, _) = run_state(c, run_id);
        if status != "running" {
            return status;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "run {run_id} still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Another operator of the same connection may not cancel a run it did not start (42501, nothing
/// signalled: the run goes on to the end); a role without operator grants may not even call
/// qbo.cancel, qbo.start_backfill or qbo.start_resume; a superuser may cancel anyone's run.
#[test]
fn only_the_role_that_started_a_run_or_a_superuser_may_cancel_it() {
    let emu = Emulator::start(&["--seed", "76"]);
    let db = "e2e_atk_cancel";
    let mut admin = fresh_db(db, &emu);
    for role in ["atk_run_owner", "atk_other_op"] {
        fresh_role(&mut admin, role);
        admin
            .batch_execute(&format!(
                "SELECT qbo.grant_operator('{role}'); SELECT qbo.grant_connection('default', '{role}');"
            ))
            .unwrap();
    }
    fresh_role(&mut admin, "atk_reader");
    admin
        .batch_execute("SELECT qbo.grant_reader('atk_reader')")
        .unwrap();
    let mut owner = as_role(db, "atk_run_owner");
    emu.hold(2);
    let run_id: i64 = owner
        .query_one(
            "SELECT qbo.start_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)",
            &[&FROM, &TO],
        )
        .unwrap()
        .get(0);
    emu.wait_held();
    let (status, worker) = run_state(&mut admin, run_id);
    assert_eq!(status, "running");
    let worker = worker.expect("the worker holds the run");

    let mut other = as_role(db, "atk_other_op");
    let e = other
        .query_one("SELECT qbo.cancel($1)", &[&run_id])
        .expect_err("not its run");
    assert_eq!(
        db_error(e),
        (
            "42501".to_owned(),
            format!("qbo.cancel: run {run_id} was started by role \"atk_run_owner\"; only \"atk_run_owner\" or a superuser may cancel it")
        )
    );
    assert_eq!(
        run_state(&mut admin, run_id),
        ("running".to_owned(), Some(worker)),
        "the run is untouched"
    );
    // a reader (no operator grants) may run none of the three
    let mut reader = as_role(db, "atk_reader");
    for (sql, function) in [
        ("SELECT qbo.cancel(1)", "cancel"),
        ("SELECT qbo.start_resume(1)", "start_resume"),
        (
            "SELECT qbo.start_backfill('Invoice', '2025-01-01Z', '2025-02-01Z')",
            "start_backfill",
        ),
    ] {
        let e = reader.batch_execute(sql).expect_err(sql);
        assert_eq!(
            db_error(e),
            (
                "42501".to_owned(),
                format!("permission denied for function {function}")
            ),
            "{sql}"
        );
    }
    assert_eq!(
        run_state(&mut admin, run_id),
        ("running".to_owned(), Some(worker))
    );
    emu.release();
    // never signalled: a cancel would have stopped it
    assert_eq!(wait_final(&mut admin, run_id), "succeeded");
    assert_eq!(
        raw(&mut admin, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );

    // a superuser may cancel an operator's run
    emu.hold(2);
    let run_id: i64 = owner
        .query_one(
            "SELECT qbo.start_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 20)",
            &[&FROM, &TO],
        )
        .unwrap()
        .get(0);
    emu.wait_held();
    let got: String = admin
        .query_one("SELECT qbo.cancel($1)", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(got, "cancelled");
    assert_eq!(
        run_state(&mut admin, run_id),
        ("cancelled".to_owned(), None)
    );
    emu.release();
}

/// A role that may create in `public` plants better matches for functions and operators pg_qbo's
/// statements use (`format(text, int, int)`, `unnest(text[])`, `bigint & integer` of the run-lock
/// lookups, `oid = bigint`); a superuser then starts a detached run, cancels it and resumes it,
/// with the default search_path (which the detached worker gets from the role as well). Nothing
/// planted runs.
#[test]
fn functions_planted_in_public_never_run_when_a_superuser_starts_cancels_or_resumes_a_detached_run()
{
    let emu = Emulator::start(&["--seed", "77"]);
    let db = "e2e_atk_detached";
    let mut admin = fresh_db(db, &emu);
    fresh_role(&mut admin, "atk_det_pub");
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO atk_det_pub")
        .unwrap();
    let mut atk = as_role(db, "atk_det_pub");
    let plant = plant_body("public.atk_marker", "atk_det_pub");
    atk.batch_execute(&format!(
        "CREATE TABLE public.atk_marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT, SELECT ON public.atk_marker TO PUBLIC;
         CREATE FUNCTION public.format(text, int, int) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN
           {plant}
           RETURN pg_catalog.format($1, $2, $3);
         END $f$;
         CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $f$
         BEGIN
           {plant}
           RETURN QUERY SELECT pg_catalog.unnest($1);
         END $f$;
         CREATE FUNCTION public.band(bigint, integer) RETURNS bigint LANGUAGE plpgsql AS $f$
         BEGIN
           {plant}
           RETURN $1 OPERATOR(pg_catalog.&) $2;
         END $f$;
         CREATE OPERATOR public.& (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.band);
         CREATE FUNCTION public.oideq8(oid, bigint) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
           {plant}
           RETURN $1::bigint OPERATOR(pg_catalog.=) $2;
         END $f$;
         CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = bigint, FUNCTION = public.oideq8);"
    ))
    .unwrap();
    // positive control: with the default search_path every plant wins over pg_catalog's
    let mut control = as_role(db, "atk_det_pub");
    let f: String = control
        .query_one("SELECT format('chunk %s page %s', 1, 2)", &[])
        .unwrap()
        .get(0);
    assert_eq!(f, "chunk 1 page 2");
    let n: i64 = control
        .query_one("SELECT count(*) FROM unnest('{a,b}'::text[])", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let b: i64 = control
        .query_one("SELECT 4294967297::bigint & 2147483647", &[])
        .unwrap()
        .get(0);
    assert_eq!(b, 1);
    let eq: bool = control
        .query_one("SELECT 7::oid = 7::bigint", &[])
        .unwrap()
        .get(0);
    assert!(eq);
    let fired = marker(&mut admin, "public.atk_marker");
    assert_eq!(
        fired,
        vec![("atk_det_pub".to_owned(), "fired".to_owned()); 4],
        "positive control: every plant runs when called"
    );
    admin
        .batch_execute("DELETE FROM public.atk_marker")
        .unwrap();
    let before = snapshot(&mut admin, "atk_det_pub");

    // the attack: a superuser's detached run (progress notes and page upserts in its worker),
    // cancelled and resumed, default search_path
    let mut dba = connect(db);
    let path: String = dba.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(path, "\"$user\", public");
    emu.hold(3);
    let run_id: i64 = dba
        .query_one(
            "SELECT qbo.start_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 7, page_size => 50)",
            &[&FROM, &TO],
        )
        .expect("start_backfill as a superuser")
        .get(0);
    emu.wait_held();
    let got: String = dba
        .query_one("SELECT qbo.cancel($1)", &[&run_id])
        .expect("qbo.cancel as a superuser")
        .get(0);
    emu.release();
    report(&mut admin, "public.atk_marker", "atk_det_pub");
    assert_eq!(got, "cancelled");
    dba.query_one("SELECT qbo.start_resume($1)", &[&run_id])
        .expect("start_resume as a superuser");
    assert_eq!(wait_final(&mut admin, run_id), "succeeded");
    assert_eq!(
        raw(&mut dba, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    // a cancel of the finished run (the NOTICE path) fires nothing either
    let got: String = dba
        .query_one("SELECT qbo.cancel($1)", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(got, "succeeded");
    let created: Vec<String> = snapshot(&mut admin, "atk_det_pub")
        .into_iter()
        .filter(|l| l.contains(" raw") || l.contains("raw."))
        .collect();
    let before: Vec<String> = before.into_iter().chain(created).collect();
    assert_nothing_gained(&mut admin, "public.atk_marker", "atk_det_pub", &before);
}

/// The statements behind the progress lines (the session's time format, the run's totals, the
/// volumetry in milliseconds, the resume of a run that succeeded) resolve nothing through the
/// caller's `search_path`: a role that may create in `public` plants `to_char(timestamptz, text)`,
/// `date_trunc(text, interval)` and an `interval + interval` operator there, and a superuser whose
/// `search_path` puts `public` before `pg_catalog` runs and resumes backfills printing every kind of
/// line. None of the plants runs.
#[test]
fn plants_named_like_what_progress_lines_use_never_run_even_before_pg_catalog_on_the_path() {
    let emu = Emulator::start(&["--seed", "77"]);
    let mut admin = fresh_db("e2e_atk_notices", &emu);
    fresh_role(&mut admin, "atk_lines");
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO atk_lines")
        .unwrap();
    let mut atk = as_role("e2e_atk_notices", "atk_lines");
    let body = plant_body("public.atk_marker", "atk_lines");
    atk.batch_execute(&format!(
        "CREATE TABLE public.atk_marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT, SELECT ON public.atk_marker TO PUBLIC;
         CREATE FUNCTION public.to_char(timestamptz, text) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN
           {body}
           RETURN pg_catalog.to_char($1, $2);
         END $f$;
         CREATE FUNCTION public.date_trunc(text, interval) RETURNS interval LANGUAGE plpgsql AS $f$
         BEGIN
           {body}
           RETURN pg_catalog.date_trunc($1, $2);
         END $f$;
         CREATE FUNCTION public.atk_add(interval, interval) RETURNS interval LANGUAGE plpgsql AS $f$
         BEGIN
           {body}
           RETURN $1 OPERATOR(pg_catalog.+) $2;
         END $f$;
         CREATE OPERATOR public.+ (LEFTARG = interval, RIGHTARG = interval, FUNCTION = public.atk_add);"
    ))
    .unwrap();
    // positive control: with public before pg_catalog, each plant wins
    let mut control = as_role("e2e_atk_notices", "atk_lines");
    control
        .batch_execute(
            "SET search_path = public, pg_catalog;
             SELECT to_char(now(), 'YYYY'); SELECT date_trunc('milliseconds', interval '1 s');
             SELECT interval '1 s' + interval '1 s';",
        )
        .unwrap();
    assert_eq!(
        marker(&mut admin, "public.atk_marker"),
        vec![("atk_lines".to_owned(), "fired".to_owned()); 3],
        "positive control: the plants run when called"
    );
    admin
        .batch_execute("DELETE FROM public.atk_marker")
        .unwrap();
    let before = snapshot(&mut admin, "atk_lines");

    let (mut dba, notices) = collecting("e2e_atk_notices", "postgres");
    dba.batch_execute(
        "SET search_path = public, pg_catalog; SET TimeZone = 'America/Mexico_City';
         SET qbo.progress_interval_ms = 0; SET qbo.max_retries = 0;",
    )
    .unwrap();
    dba.query_one(
        "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', 7, 20)",
        &[],
    )
    .expect("CALL as a superuser");
    dba.query(
        "SELECT * FROM qbo.backfill('Customer', '2025-01-01Z', '2025-02-01Z', chunk_size => 7, page_size => 20)",
        &[],
    )
    .expect("qbo.backfill as a superuser");
    dba.query("SELECT * FROM qbo.resume(2)", &[])
        .expect("resume of a run that succeeded");
    dba.batch_execute("CALL qbo.run_resume(1)")
        .expect("resume of a run that succeeded");
    // a run that fails half way, resumed by the relay and by CALL: done lines over 2 attempts
    emu.faults("503html@nth=2");
    dba.batch_execute("CALL qbo.run_backfill('Item', '2025-01-01Z', '2025-02-01Z', 7, 2)")
        .expect_err("no retries");
    dba.query("SELECT * FROM qbo.resume(3)", &[])
        .expect("resume in a worker");
    report(&mut admin, "public.atk_marker", "atk_lines");
    let lines = notices.take();
    println!("{lines:#?}");
    for kind in [
        "run 1: Invoice [2024-12-31 18:00:00-06 → 2025-01-31 18:00:00-06) in 5 chunks",
        " of 5 chunks done, ",
        "run 2 chunk 1/5 [2024-12-31 18:00:00-06 → 2025-01-07 18:00:00-06): done: ",
        "run 2 already succeeded; nothing to resume",
        "run 1 already succeeded; nothing to resume",
        " over 2 attempts",
    ] {
        assert!(lines.iter().any(|l| l.contains(kind)), "{kind}: {lines:?}");
    }
    // what the backfills created: schema raw and its tables
    let created: Vec<String> = snapshot(&mut admin, "atk_lines")
        .into_iter()
        .filter(|l| l.contains(" raw") || l.contains("raw."))
        .collect();
    let before: Vec<String> = before.into_iter().chain(created).collect();
    assert_nothing_gained(&mut admin, "public.atk_marker", "atk_lines", &before);
}

/// The limiter and the monthly request count run as the extension owner under a pinned
/// search_path: functions a role planted in `public`, typed to win over pg_catalog's whenever
/// `public` is searched (`to_char(date, text)`, used for the budget's month, and `unnest(text[])`,
/// for the kinds admitted), never run there: with a budget set (both entry points) and a token
/// refresh counted.
#[test]
fn functions_planted_in_public_never_run_in_the_limiter_or_the_request_count() {
    let emu = Emulator::start(&["--seed", "73"]);
    let mut admin = fresh_db("e2e_atk_limiter", &emu);
    fresh_role(&mut admin, "atk_lim");
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO atk_lim")
        .unwrap();
    let mut atk = as_role("e2e_atk_limiter", "atk_lim");
    atk.batch_execute(&format!(
        "CREATE TABLE public.atk_marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT, SELECT ON public.atk_marker TO PUBLIC;
         CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN pg_catalog.to_char($1::timestamp, $2);
         END $f$;
         CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $f$
         BEGIN
           {}
           RETURN QUERY SELECT pg_catalog.unnest($1);
         END $f$;",
        plant_body("public.atk_marker", "atk_lim"),
        plant_body("public.atk_marker", "atk_lim")
    ))
    .unwrap();
    // positive control: with the default search_path both plants win over pg_catalog's
    let mut control = as_role("e2e_atk_limiter", "atk_lim");
    let m: String = control
        .query_one("SELECT to_char(DATE '2026-03-01', 'YYYY-MM')", &[])
        .unwrap()
        .get(0);
    assert_eq!(m, "2026-03");
    let n: i64 = control
        .query_one("SELECT count(*) FROM unnest('{query,count}'::text[])", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert_eq!(
        marker(&mut admin, "public.atk_marker"),
        vec![
            ("atk_lim".to_owned(), "fired".to_owned()),
            ("atk_lim".to_owned(), "fired".to_owned())
        ],
        "positive control: both plants run when called"
    );
    admin
        .batch_execute("DELETE FROM public.atk_marker")
        .unwrap();
    let before = snapshot(&mut admin, "atk_lim");

    // the attack: a superuser's backfills with a monthly budget (for the worker too) and a token
    // refresh, default search_path
    admin
        .batch_execute(
            "LOAD 'pg_qbo'; ALTER DATABASE e2e_atk_limiter SET qbo.monthly_request_budget = 1000000;
             UPDATE qbo._connections SET access_token = NULL, access_token_expires_at = NULL",
        )
        .unwrap();
    let mut dba = connect("e2e_atk_limiter");
    let path: String = dba.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(path, "\"$user\", public");
    dba.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)",
        &[&FROM, &TO],
    )
    .expect("CALL as a superuser");
    dba.query(
        "SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 60, page_size => 20)",
        &[&FROM, &TO],
    )
    .expect("qbo.backfill as a superuser");
    let counted: String = admin
        .query_one(
            "SELECT string_agg(kind || ' ' || requests, ', ' ORDER BY kind) FROM qbo.api_usage",
            &[],
        )
        .unwrap()
        .get(0);
    println!("counted: {counted}");
    assert!(
        counted.contains("token 1"),
        "the refresh was counted: {counted}"
    );
    admin
        .batch_execute("ALTER DATABASE e2e_atk_limiter RESET qbo.monthly_request_budget")
        .unwrap();
    let created: Vec<String> = snapshot(&mut admin, "atk_lim")
        .into_iter()
        .filter(|l| l.contains(" raw") || l.contains("raw."))
        .collect();
    let before: Vec<String> = before.into_iter().chain(created).collect();
    assert_nothing_gained(&mut admin, "public.atk_marker", "atk_lim", &before);
}

/// The limiter's pacing after a start (`qbo._api_admit`'s `p_started`, filled by the executor from
/// `pg_postmaster_start_time()`) and the throttled backoffs run as the extension owner: plants
/// named like what they use (`pg_postmaster_start_time()`, `ceil(numeric)`, and an operator
/// `-(integer, numeric)` typed to win over pg_catalog's for `61 - since`), which win when `public`
/// comes before pg_catalog, never run there: not in a
/// superuser's backfill ridden through a full window, nor when a superuser calls the limiter with
/// a start time inside its paced minute.
#[test]
fn plants_named_like_what_the_paced_limiter_uses_never_run_even_before_pg_catalog_on_the_path() {
    let emu = Emulator::start(&["--seed", "78", "--rate-window-ms", "3000"]);
    let mut admin = fresh_db("e2e_atk_pace", &emu);
    fresh_role(&mut admin, "atk_pace");
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO atk_pace")
        .unwrap();
    let mut atk = as_role("e2e_atk_pace", "atk_pace");
    let body = plant_body("public.atk_marker", "atk_pace");
    atk.batch_execute(&format!(
        "CREATE TABLE public.atk_marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT INSERT, SELECT ON public.atk_marker TO PUBLIC;
         CREATE FUNCTION public.pg_postmaster_start_time() RETURNS timestamptz LANGUAGE plpgsql AS $f$
         BEGIN
           {body}
           RETURN pg_catalog.clock_timestamp();
         END $f$;
         CREATE FUNCTION public.ceil(numeric) RETURNS numeric LANGUAGE plpgsql AS $f$
         BEGIN
           {body}
           RETURN pg_catalog.ceil($1);
         END $f$;
         CREATE FUNCTION public.atk_sub(integer, numeric) RETURNS numeric LANGUAGE plpgsql AS $f$
         BEGIN
           {body}
           RETURN $1::numeric OPERATOR(pg_catalog.-) $2;
         END $f$;
         CREATE OPERATOR public.- (LEFTARG = integer, RIGHTARG = numeric, FUNCTION = public.atk_sub);"
    ))
    .unwrap();
    // positive control: with public before pg_catalog, each plant wins
    let mut control = as_role("e2e_atk_pace", "atk_pace");
    control
        .batch_execute(
            "SET search_path = public, pg_catalog;
             SELECT pg_postmaster_start_time(); SELECT ceil(1.5::numeric);
             SELECT 61 - 1.5::numeric;",
        )
        .unwrap();
    assert_eq!(
        marker(&mut admin, "public.atk_marker"),
        vec![("atk_pace".to_owned(), "fired".to_owned()); 3],
        "positive control: the plants run when called"
    );
    admin
        .batch_execute("DELETE FROM public.atk_marker")
        .unwrap();
    let before = snapshot(&mut admin, "atk_pace");

    let mut dba = connect("e2e_atk_pace");
    dba.batch_execute(
        "SET search_path = public, pg_catalog; SET qbo.throttle_wait_ms = 20000; SET qbo.max_in_flight = 4",
    )
    .unwrap();
    // the limiter inside its paced minute, called by a superuser
    let n: i32 = dba
        .query_one(
            "SELECT cardinality(admitted) FROM qbo._api_admit('atk', '{query,query,query}', 1000, 610, 100, '{}', 'app', NULL, 0, pg_catalog.clock_timestamp() - interval '1 second')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // a backfill that rides out a full window
    emu.post(
        "/__emulator/fill_window",
        serde_json::json!({ "realm": REALM1 }),
    );
    dba.query_one(
        "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', 7, 20)",
        &[],
    )
    .expect("CALL as a superuser");
    let status: String = dba
        .query_one("SELECT status FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    let throttled = emu
        .requests(0)
        .iter()
        .filter(|e| e["status"] == 429)
        .count();
    println!("run 1: {status} after {throttled} throttled answers");
    assert_eq!(status, "succeeded");
    assert!(throttled > 0, "the run rode out the full window");
    report(&mut admin, "public.atk_marker", "atk_pace");
    let created: Vec<String> = snapshot(&mut admin, "atk_pace")
        .into_iter()
        .filter(|l| l.contains(" raw") || l.contains("raw."))
        .collect();
    let before: Vec<String> = before.into_iter().chain(created).collect();
    assert_nothing_gained(&mut admin, "public.atk_marker", "atk_pace", &before);
}

/// An operator plants `=` (text, text), `+` and `-` (bigint, bigint), `>` and `<` (timestamptz,
/// timestamptz) in its own schema, first on its search_path, and runs syncs: a first sync (its
/// backfills), then a sync after changes and deletions: Change Data Capture (the tombstones, the
/// counters, the watermarks, the sync lock) and, for TimeActivity, which CDC does not serve, the
/// whole read with its confirmation of deletes and the token attribution; then one more in which
/// TimeActivity is not due. Nothing it planted runs as the owner.
#[test]
fn an_operators_own_operators_never_run_in_a_sync() {
    let emu = Emulator::start(&["--seed", "72"]);
    let mut admin = fresh_db("e2e_atk_sync", &emu);
    fresh_role(&mut admin, "atk_sync");
    admin
        .batch_execute(
            "SELECT qbo.grant_operator('atk_sync');
             SELECT qbo.grant_connection('default', 'atk_sync');
             GRANT CREATE ON DATABASE e2e_atk_sync TO atk_sync;",
        )
        .unwrap();
    let mut op = as_role("e2e_atk_sync", "atk_sync");
    let body = plant_body("evil.marker", "atk_sync");
    op.batch_execute(&format!(
        "CREATE SCHEMA evil;
         CREATE TABLE evil.marker (who name, what text, at timestamptz DEFAULT clock_timestamp());
         GRANT USAGE ON SCHEMA evil TO PUBLIC;
         GRANT INSERT, SELECT ON evil.marker TO PUBLIC;
         CREATE FUNCTION evil.eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN {body} RETURN a OPERATOR(pg_catalog.=) b; END $f$;
         CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
         CREATE FUNCTION evil.plus(a bigint, b bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
         BEGIN {body} RETURN a OPERATOR(pg_catalog.+) b; END $f$;
         CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.plus);
         CREATE FUNCTION evil.minus(a bigint, b bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
         BEGIN {body} RETURN a OPERATOR(pg_catalog.-) b; END $f$;
         CREATE OPERATOR evil.- (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.minus);
         CREATE FUNCTION evil.gt(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN {body} RETURN a OPERATOR(pg_catalog.>) b; END $f$;
         CREATE OPERATOR evil.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.gt);
         CREATE FUNCTION evil.lt(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN {body} RETURN a OPERATOR(pg_catalog.<) b; END $f$;
         CREATE OPERATOR evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.lt);"
    ))
    .unwrap();
    // positive control: the plants fire when used
    op.batch_execute("SET search_path = evil, pg_catalog")
        .unwrap();
    let v: i64 = op
        .query_one("SELECT 2::bigint + 1::bigint", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, 3);
    assert!(
        !marker(&mut admin, "evil.marker").is_empty(),
        "positive control"
    );
    admin.batch_execute("DELETE FROM evil.marker").unwrap();

    op.batch_execute("ALTER ROLE atk_sync SET search_path = evil, pg_catalog, public")
        .unwrap();
    let mut op = as_role("e2e_atk_sync", "atk_sync");
    op.batch_execute("SET search_path = evil, pg_catalog, public")
        .unwrap();
    let ents = "ARRAY['Invoice', 'Customer', 'TimeActivity']";
    op.query_one(&format!("CALL qbo.run_sync({ents})"), &[])
        .expect("first sync as the operator");
    let before = snapshot(&mut admin, "atk_sync");
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "mix", "count": 20, "realm": REALM1, "entities": ["Invoice", "Customer"]}),
    );
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "delete", "count": 2, "realm": REALM1, "entity": "Invoice"}),
    );
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "delete", "count": 2, "realm": REALM1, "entity": "TimeActivity"}),
    );
    op.batch_execute("SET qbo.sync_non_cdc_interval_ms = 0")
        .unwrap();
    op.query_one(&format!("CALL qbo.run_sync({ents})"), &[])
        .expect("CDC sync as the operator");
    op.batch_execute("RESET qbo.sync_non_cdc_interval_ms")
        .unwrap();
    let last: i64 = op
        .query_one(&format!("CALL qbo.run_sync({ents})"), &[])
        .expect("a sync where TimeActivity is not due")
        .get(0);
    report(&mut admin, "evil.marker", "atk_sync");
    let routes: Vec<String> = admin
        .query(
            "SELECT c.route FROM qbo.run_chunks c JOIN qbo.runs r USING (run_id)
              WHERE r.kind = 'sync' AND c.entity = 'TimeActivity' ORDER BY run_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(routes, ["first_sync", "query", "not_due"], "sync {last}");
    let gone: i64 = admin
        .query_one(
            "SELECT count(*) FROM raw.qb_time_activities WHERE deleted_at_utc IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(gone, 2, "the whole read found TimeActivity's deletions");
    let deleted: i64 = admin
        .query_one(
            "SELECT count(*) FROM raw.qb_invoices WHERE deleted_at_utc IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(deleted >= 2, "the sync applied the deletions ({deleted})");
    assert_eq!(
        raw(&mut admin, "qb_customers", REALM1),
        emu.truth(REALM1, "Customer")
    );
    assert_nothing_gained(&mut admin, "evil.marker", "atk_sync", &before);
}

/// `qbo.distribute_raw_tables()` changes every raw table of the database as the owner: an
/// operator may not run it, and where Citus is not installed a superuser gets a clear error that
/// names what to do, before anything is locked or changed.
#[test]
fn distributing_raw_tables_is_for_superusers_and_needs_citus() {
    let emu = Emulator::start(&["--seed", "73"]);
    let mut admin = fresh_db("e2e_atk_dist", &emu);
    fresh_role(&mut admin, "atk_dist");
    admin
        .batch_execute("SELECT qbo.grant_operator('atk_dist')")
        .unwrap();
    admin
        .batch_execute("CALL qbo.run_backfill('Customer', '2000-01-01Z', '2100-01-01Z', 36500)")
        .unwrap();
    let mut op = as_role("e2e_atk_dist", "atk_dist");
    let err = op
        .batch_execute("SELECT * FROM qbo.distribute_raw_tables()")
        .unwrap_err();
    assert_eq!(
        db_error(err),
        (
            "42501".to_owned(),
            "permission denied for function distribute_raw_tables".to_owned()
        )
    );
    let err = admin
        .batch_execute("SELECT * FROM qbo.distribute_raw_tables()")
        .unwrap_err();
    assert_eq!(
        db_error(err),
        (
            "0A000".to_owned(),
            "qbo.distribute_raw_tables: Citus is not installed in this database: CREATE EXTENSION citus first (README, \"Scaling out\")".to_owned()
        )
    );
    assert_eq!(
        raw(&mut admin, "qb_customers", REALM1),
        emu.truth(REALM1, "Customer"),
        "the raw table is as it was"
    );
}
