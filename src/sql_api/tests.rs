// In-database tests of the SQL surface (included by src/sql_api/mod.rs; `cargo pgrx test`).
use crate::testing::{error_of, with_connection};
use pgrx::prelude::*;

#[pg_test]
fn entities_view_lists_the_catalog() {
    let n = Spi::get_one::<i64>("SELECT count(*) FROM qbo.entities").unwrap().unwrap();
    assert_eq!(n as usize, qbo::entities::ENTITIES.len());
    let t = Spi::get_one::<String>("SELECT raw_table FROM qbo.entities WHERE entity = 'Invoice'").unwrap().unwrap();
    assert_eq!(t, "raw.qb_invoices");
    let k = Spi::get_one::<String>("SELECT kind FROM qbo.entities WHERE entity = 'Customer'").unwrap().unwrap();
    assert_eq!(k, "name-list");
}

#[pg_test]
fn bad_input_is_rejected_with_the_value_and_what_is_allowed() {
    with_connection();
    // instants in messages are written in the session's TimeZone
    Spi::run("SET TimeZone = 'UTC'").unwrap();
    let cases = [
        ("SELECT * FROM qbo.backfill('invoice', '2025-01-01Z', '2025-02-01Z')",
         "qbo.backfill: unknown entity \"invoice\" (entity names are case-sensitive: did you mean \"Invoice\"?); valid entities are: Account, Attachable, Bill,"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-02-01Z', '2025-01-01Z')",
         "qbo.backfill: fecha_fin (2025-01-01 00:00:00+00) must be later than fecha_inicio (2025-02-01 00:00:00+00): the window is [fecha_inicio, fecha_fin)"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-01-01Z')",
         "qbo.backfill: fecha_fin (2025-01-01 00:00:00+00) must be later than fecha_inicio"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z', chunk_size => 0)",
         "qbo.backfill: chunk_size must be at least 1 day (got 0)"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z', page_size => 1001)",
         "qbo.backfill: page_size must be between 1 and 1000 (got 1001): QBO returns at most 1000 rows per page"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z', page_size => 0)",
         "qbo.backfill: page_size must be between 1 and 1000 (got 0)"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z', minor_version => 74)",
         "qbo.backfill: minor_version must be between 75 and 999 (got 74)"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z', minor_version => 100000)",
         "qbo.backfill: minor_version must be between 75 and 999 (got 100000)"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-02-01Z', connection => 'nope')",
         "qbo.backfill: unknown connection \"nope\": register it with qbo.connect(...)"),
        ("SELECT * FROM qbo.backfill(NULL, '2025-01-01Z', '2025-02-01Z')",
         "qbo.backfill: argument entity must not be NULL"),
        ("SELECT * FROM qbo.backfill('Invoice', NULL, '2025-02-01Z')",
         "qbo.backfill: argument fecha_inicio must not be NULL"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', 'infinity')",
         "qbo.backfill: fecha_fin must be a finite timestamp"),
        ("SELECT * FROM qbo.backfill('Invoice''; DROP TABLE qbo.runs; --', '2025-01-01Z', '2025-02-01Z')",
         "qbo.backfill: unknown entity \"Invoice'; DROP TABLE qbo.runs; --\"; valid entities are:"),
        ("CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-02-01Z')",
         "qbo.run_backfill commits page by page, so it must be run with CALL outside an explicit transaction block"),
        ("SELECT qbo.start_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', page_size => 0)",
         "qbo.start_backfill: page_size must be between 1 and 1000 (got 0): QBO returns at most 1000 rows per page"),
        ("SELECT qbo.start_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', connection => 'nope')",
         "qbo.start_backfill: unknown connection \"nope\": register it with qbo.connect(...)"),
        ("SELECT qbo.start_resume(NULL)", "qbo.start_resume: argument run_id must not be NULL"),
        ("SELECT qbo.start_resume(12345)", "run 12345 does not exist (see qbo.runs)"),
        ("SELECT qbo.cancel(12345)", "run 12345 does not exist (see qbo.runs)"),
        ("SELECT * FROM qbo.schedule_backfill('Invoice', '2025-01-01Z', '2025-02-01Z')",
         "qbo.schedule_backfill needs pg_cron: add it to shared_preload_libraries (restart), then CREATE EXTENSION pg_cron in the database named by cron.database_name"),
        ("SELECT qbo.grant_operator('no_such_role_x')",
         "qbo.grant_operator: role \"no_such_role_x\" does not exist"),
        ("SELECT qbo.grant_reader('no_such_role_x')",
         "qbo.grant_reader: role \"no_such_role_x\" does not exist"),
        ("SELECT qbo.connect('12x', 'a', 'b', 'c')",
         "qbo.connect: invalid realm_id \"12x\": a QuickBooks company id is 1 to 32 digits"),
        ("SELECT qbo.connect('12', 'a', 'b', 'c', 'prod')",
         "qbo.connect: invalid environment \"prod\": allowed values are production, sandbox"),
    ];
    for (sql, expected) in cases {
        let got = error_of(sql);
        assert!(got.starts_with(expected), "\n  sql: {sql}\n  got: {got}\n want: {expected}");
    }
    // nothing was written
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM qbo.runs").unwrap(), Some(0));
}

/// The routines `role` may run (`has_function_privilege`), by signature.
fn may_run(role: &str) -> Vec<String> {
    Spi::get_one::<Vec<String>>(&format!(
        "SELECT coalesce(pg_catalog.array_agg(r.routine::text ORDER BY r.routine::text), '{{}}')
           FROM qbo._routines() r WHERE pg_catalog.has_function_privilege('{role}', r.routine, 'EXECUTE')"
    ))
    .unwrap()
    .unwrap_or_default()
}

/// Privileges come from one list (qbo._routine_grants): PUBLIC runs the three helpers views and
/// the upsert need, an operator those plus its entry points, a reader nothing more than PUBLIC,
/// and every other routine (credentials, grants, the limiter) is for superusers.
#[pg_test]
fn public_operators_and_readers_may_run_exactly_the_routines_the_list_gives_them() {
    Spi::run(
        "CREATE ROLE qbo_acl_op; CREATE ROLE qbo_acl_ro;
         SELECT qbo.grant_operator('qbo_acl_op'); SELECT qbo.grant_reader('qbo_acl_ro');",
    )
    .unwrap();
    let public = vec![
        "qbo._entities()",
        "qbo._mark_interrupted()",
        "qbo._sync_token(jsonb)",
    ];
    assert_eq!(may_run("public"), public);
    assert_eq!(may_run("qbo_acl_ro"), public);
    let mut operator: Vec<&str> = public.clone();
    operator.extend([
        "qbo._may_use(text,oid)",
        "qbo.backfill(text,timestamp with time zone,timestamp with time zone,integer,integer,integer,text)",
        "qbo.cancel(bigint)",
        "qbo.resume(bigint)",
        "qbo.run_backfill(text,timestamp with time zone,timestamp with time zone,integer,integer,integer,text,bigint)",
        "qbo.run_resume(bigint)",
        "qbo.run_scheduled(bigint)",
        "qbo.schedule_backfill(text,timestamp with time zone,timestamp with time zone,integer,integer,integer,text,timestamp with time zone)",
        "qbo.start_backfill(text,timestamp with time zone,timestamp with time zone,integer,integer,integer,text)",
        "qbo.start_resume(bigint)",
        "qbo.run_sync(text[],text,integer,bigint)",
        "qbo.run_sync_all(text[],integer)",
        "qbo.start_sync(text[],text,integer)",
        "qbo.sync(text[],text,integer)",
    ]);
    operator.sort();
    assert_eq!(may_run("qbo_acl_op"), operator);
    // every routine is accounted for: the rest is for superusers only
    let superuser_only = Spi::get_one::<Vec<String>>(
        "SELECT pg_catalog.array_agg(r.routine::text ORDER BY r.routine::text) FROM qbo._routines() r WHERE r.grantee IS NULL",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        superuser_only,
        vec![
            "qbo._api_admit(text,text[],integer,integer,integer,bigint[],text,bigint,bigint,timestamp with time zone)",
            "qbo._api_count(text,text,text,bigint)",
            "qbo._api_release_mine()",
            "qbo._grant_common(text,name,text)",
            "qbo._routines()",
            "qbo.connect(text,text,text,text,text,text)",
            "qbo.connect_from_file(text,text)",
            "qbo.distribute_raw_tables()",
            "qbo.grant_connection(text,name)",
            "qbo.grant_operator(name)",
            "qbo.grant_reader(name)",
            "qbo.revoke_connection(text,name)",
        ]
    );
    for r in &superuser_only {
        for role in ["public", "qbo_acl_op", "qbo_acl_ro"] {
            assert!(!may_run(role).contains(r), "{role} may run {r}");
        }
    }
}
