// In-database tests of pg_qbo's tables: raw tables and their upsert and trust check, the ledger,
// connections (included by src/store/mod.rs; `cargo pgrx test`).
use crate::run::executor;
use crate::run::notices;
use crate::store::ledger::{self, NewRun, PageDone};
use crate::store::raw;
use crate::testing::{error_of, with_connection};
use chrono::{DateTime, Utc};
use pgrx::prelude::*;

#[pg_test]
fn connections_view_never_shows_a_secret() {
    with_connection();
    let row = Spi::get_one::<String>("SELECT row_to_json(c)::text FROM qbo.connections c").unwrap().unwrap();
    assert!(row.contains("123145"), "{row}");
    for secret in ["csecret", "rtoken"] {
        assert!(!row.contains(secret), "{row}");
    }
    let err = error_of("SELECT qbo.connect('12', 'a', 'supersecret', 'c', 'nope')");
    assert!(!err.contains("supersecret"), "{err}");
}

#[pg_test]
fn sync_token_and_exact_payloads() {
    assert_eq!(Spi::get_one::<i64>("SELECT qbo._sync_token('{\"SyncToken\":\"12\"}')").unwrap(), Some(12));
    assert_eq!(Spi::get_one::<i64>("SELECT qbo._sync_token('{\"SyncToken\":\"x\"}')").unwrap(), Some(-1));
    let kept = Spi::get_one::<String>(&format!(
        "SELECT '{}'::jsonb::text",
        qbo::jsonb::storable(r#"{"Amount":12.30,"Name":"Café Zoë ✓","Bad":"a\u0000b"}"#)
    ))
    .unwrap()
    .unwrap();
    assert_eq!(kept, r#"{"Bad": "a�b", "Name": "Café Zoë ✓", "Amount": 12.30}"#);
}

#[pg_test]
fn page_upsert_probes_the_primary_key_even_on_a_never_analyzed_table() {
    // a raw table loaded and never analyzed (as after TRUNCATE or during a first load): the
    // upsert once hashed the whole table for every page here
    let e = qbo::entities::lookup("Invoice").unwrap();
    raw::ensure_raw_table(e).unwrap();
    Spi::run(
        "INSERT INTO raw.qb_invoices (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc)
         SELECT 'r', g::text, jsonb_build_object('Id', g::text, 'SyncToken', '0', 'pad', repeat('x', 1500)), now(), now()
           FROM generate_series(1, 30000) g",
    )
    .unwrap();
    let list = |f: &dyn Fn(usize) -> String| (1..=1000).map(f).collect::<Vec<_>>().join(",");
    let ids = list(&|i| i.to_string());
    let payloads = list(&|_| "\"{}\"".to_owned());
    let syncs = list(&|_| "0".to_owned());
    let times = list(&|_| "\"2025-01-01T00:00:00Z\"".to_owned());
    Spi::run(&format!(
        "PREPARE up(text[], jsonb[], int8[], text, timestamptz, timestamptz, int, int, text, timestamptz[]) AS {}",
        raw::upsert_sql(e.table)
    ))
    .unwrap();
    // one plan, read as JSON: its nodes and its estimate
    let plan = Spi::get_one::<pgrx::Json>(&format!(
        "EXPLAIN (FORMAT JSON) EXECUTE up('{{{ids}}}', '{{{payloads}}}', '{{{syncs}}}', 'r', now(), now(), 1, 1000, '{{}}', '{{{times}}}')"
    ))
    .unwrap()
    .unwrap()
    .0;
    let text = plan.to_string();
    assert!(!text.contains(r#""Node Type":"Hash"#), "{text}");
    // the page's arrays stream through ProjectSet, not copied into a Function Scan's tuplestore
    assert!(text.contains(r#""Node Type":"ProjectSet""#), "{text}");
    assert!(!text.contains(r#""Node Type":"Function Scan""#), "{text}");
    assert!(text.contains(r#""Parent Relationship":"SubPlan""#), "{text}");
    assert!(
        text.contains(r#""Node Type":"Index Scan""#)
            && text.contains(r#""Index Name":"qb_invoices_pkey""#),
        "{text}"
    );
    // The estimate stays that of 1000 probes of one row each (about 5,000 here). Without
    // statistics the planner guessed more rows per probe the bigger the table (28,000 here, past
    // jit_above_cost at a few hundred thousand rows), so a big load JIT-compiled the upsert on
    // every page.
    let total = plan[0]["Plan"]["Total Cost"].as_f64().unwrap();
    println!("upsert of 1000 rows into a never-analyzed 30k-row table: estimated cost {total}");
    assert!(total < 10_000.0, "estimated cost {total}: {text}");

    // the tombstones probe the primary key too, in the arrays' order
    Spi::run(&format!(
        "PREPARE tomb(text[], timestamptz[], text) AS {}",
        raw::tombstone_sql(e.table)
    ))
    .unwrap();
    let plan = Spi::get_one::<pgrx::Json>(&format!(
        "EXPLAIN (FORMAT JSON) EXECUTE tomb('{{{ids}}}', '{{{times}}}', 'r')"
    ))
    .unwrap()
    .unwrap()
    .0;
    let text = plan.to_string();
    // never a scan of the table (nor of the realm through another index): a probe of the key
    // per tombstone, then the row by its ctid
    for node in ["Hash", "Seq Scan", "Bitmap Heap Scan"] {
        assert!(!text.contains(&format!(r#""Node Type":"{node}""#)), "{node}: {text}");
    }
    assert!(text.contains(r#""Node Type":"Tid Scan""#), "{text}");
    assert!(
        text.contains(r#""Node Type":"Index Scan""#)
            && text.contains(r#""Index Name":"qb_invoices_pkey""#),
        "{text}"
    );
    let total = plan[0]["Plan"]["Total Cost"].as_f64().unwrap();
    println!("tombstones of 1000 rows in a never-analyzed 30k-row table: estimated cost {total}");
    assert!(total < 20_000.0, "estimated cost {total}: {text}");
}

/// One page mixing records the network thread wrote as jsonb bytes and records left as text for
/// jsonb_in (an exponent, a repeated key): every payload is stored as jsonb_in reads its text
/// (`\u0000` as U+FFFD, in bytes and texts alike), and writing the page again changes nothing.
#[pg_test]
fn page_upsert_stores_encoded_and_text_payloads_alike() {
    use qbo::pager::{Payload, RawRecord};
    let e = qbo::entities::lookup("Invoice").unwrap();
    raw::ensure_raw_table(e).unwrap();
    let meta = r#""MetaData":{"CreateTime":"2025-01-02T03:04:05-08:00","LastUpdatedTime":"2025-01-02T03:04:05-08:00"}"#;
    let docs = [
        ("1", format!(r#"{{"Id":"1","SyncToken":"0",{meta},"TotalAmt":12.30,"Name":"Caf\u00e9 \ud83d\ude00"}}"#), true),
        ("2", format!(r#"{{"Id":"2","SyncToken":"0",{meta},"Rate":1.5e3}}"#), false),
        ("3", format!(r#"{{"Id":"3","SyncToken":"0",{meta},"Memo":"a\u0000b"}}"#), true),
        ("4", format!(r#"{{"Id":"4","SyncToken":"0",{meta},"Dup":1,"Dup":2}}"#), false),
        ("5", format!(r#"{{"Id":"5","SyncToken":"0",{meta},"Memo":"c\u0000d","Rate":2E2}}"#), false),
    ];
    let page = || {
        let recs: Vec<RawRecord> = docs
            .iter()
            .map(|(_, d, _)| {
                let raw = serde_json::value::RawValue::from_string(d.clone()).unwrap();
                RawRecord::from_page(&raw, true).unwrap()
            })
            .collect();
        let rows = executor::to_page_rows(recs);
        let kinds: Vec<bool> = rows.payloads.iter().map(|p| matches!(p, Payload::Jsonb(_))).collect();
        assert_eq!(kinds, docs.iter().map(|d| d.2).collect::<Vec<_>>());
        rows
    };
    let t = chrono::Utc::now();
    let write = || {
        raw::upsert_page(e, "r", page(), t, t, 1, 1000, r#"{"query":"q"}"#).unwrap()
    };
    assert_eq!(write(), raw::UpsertCounts { inserted: 5, updated: 0 });
    for (id, doc, _) in &docs {
        let expect = qbo::jsonb::storable(doc).into_owned();
        let same = Spi::get_one_with_args::<bool>(
            "SELECT payload = $1::jsonb AND payload::text = ($1::jsonb)::text FROM raw.qb_invoices WHERE realm_id = 'r' AND id = $2",
            &[expect.as_str().into(), (*id).into()],
        )
        .unwrap();
        assert_eq!(same, Some(true), "record {id}");
    }
    let memo = Spi::get_one::<String>("SELECT payload->>'Memo' FROM raw.qb_invoices WHERE id = '3'").unwrap();
    assert_eq!(memo.as_deref(), Some("a\u{FFFD}b"));
    // a record left as text gets the \u0000 policy too
    let memo = Spi::get_one::<String>("SELECT payload->>'Memo' FROM raw.qb_invoices WHERE id = '5'").unwrap();
    assert_eq!(memo.as_deref(), Some("c\u{FFFD}d"));
    let dup = Spi::get_one::<String>("SELECT payload->>'Dup' FROM raw.qb_invoices WHERE id = '4'").unwrap();
    assert_eq!(dup.as_deref(), Some("2"));
    assert_eq!(write(), raw::UpsertCounts { inserted: 0, updated: 0 });
}

/// A page's arrays (its jsonb[] is a megabyte or two on a real page) live only as long as the
/// page's SPI connection: built outside it, they stayed in the procedure's memory context for the
/// whole CALL (248 MB above idle after 100k invoices in B1).
#[pg_test]
fn page_upsert_keeps_nothing_in_the_callers_memory_context() {
    use qbo::pager::RawRecord;
    let e = qbo::entities::lookup("Invoice").unwrap();
    raw::ensure_raw_table(e).unwrap();
    let pad = "x".repeat(2000);
    let t = chrono::Utc::now();
    // SAFETY: on the test backend's own thread; CurrentMemoryContext is always a valid context
    // there, which MemoryContextMemAllocated only reads (recursively, its children too).
    let allocated = || unsafe { pg_sys::MemoryContextMemAllocated(pg_sys::CurrentMemoryContext, true) };
    let page = |p: usize| {
        let recs = (0..200)
            .map(|i| {
                let doc = format!(
                    r#"{{"Id":"{p}-{i}","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2025-01-02T03:04:05-08:00"}},"Pad":"{pad}"}}"#
                );
                let raw = serde_json::value::RawValue::from_string(doc).unwrap();
                RawRecord::from_page(&raw, true).unwrap()
            })
            .collect();
        executor::to_page_rows(recs)
    };
    raw::upsert_page(e, "r", page(0), t, t, 1, 1000, "{}").unwrap();
    let before = allocated();
    for p in 1..=20 {
        raw::upsert_page(e, "r", page(p), t, t, 1, 1000, "{}").unwrap();
    }
    let grown = allocated() as i64 - before as i64;
    // 20 pages of 200 records of 2 KB: 8 MB if the arrays stayed
    assert!(grown < 1 << 20, "the caller's memory context grew by {grown} bytes over 20 pages");
}

/// The trust check of a raw table: every place an INSERT or UPDATE can run code owned by a role
/// that is neither a superuser nor the extension owner is refused, naming it; the same objects
/// owned by a superuser are accepted.
#[pg_test]
fn raw_tables_with_code_of_untrusted_roles_are_refused() {
    let e = qbo::entities::lookup("Vendor").unwrap();
    raw::ensure_raw_table(e).unwrap();
    raw::check_raw_trust(e).expect("a table pg_qbo made is trusted");
    Spi::run(
        "CREATE ROLE trust_mallory NOLOGIN;
         CREATE SCHEMA trust_x;
         CREATE FUNCTION trust_x.f(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $1';
         CREATE FUNCTION trust_x.ok(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
         CREATE FUNCTION trust_x.eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
         CREATE OPERATOR trust_x.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = trust_x.eq);
         CREATE DOMAIN trust_x.d AS text CHECK (trust_x.ok(VALUE));
         ALTER TABLE raw.qb_vendors ADD COLUMN note text DEFAULT trust_x.f('x');
         ALTER TABLE raw.qb_vendors ADD CONSTRAINT c CHECK (id OPERATOR(trust_x.===) id);
         CREATE INDEX trust_idx ON raw.qb_vendors (trust_x.f(id));
         ALTER TABLE raw.qb_vendors ADD COLUMN d trust_x.d;",
    )
    .unwrap();
    // owned by a superuser (the test's role): all of it is trusted
    raw::check_raw_trust(e).expect("a superuser's functions are trusted");
    Spi::run(
        "ALTER FUNCTION trust_x.f(text) OWNER TO trust_mallory;
         ALTER FUNCTION trust_x.ok(text) OWNER TO trust_mallory;
         ALTER FUNCTION trust_x.eq(text, text) OWNER TO trust_mallory;
         GRANT TRIGGER ON raw.qb_vendors TO trust_mallory;",
    )
    .unwrap();
    let err = raw::check_raw_trust(e).unwrap_err();
    assert_eq!(err.sqlstate(), "42501");
    let m = err.message;
    for want in [
        "role trust_mallory may create triggers on raw.qb_vendors (REVOKE TRIGGER ON raw.qb_vendors FROM trust_mallory)",
        "function trust_x.f(text) (reached from default value for column note of table raw.qb_vendors) is owned by role trust_mallory",
        "function trust_x.eq(text,text) (reached from constraint c on table raw.qb_vendors) is owned by role trust_mallory",
        "function trust_x.ok(text) (reached from type trust_x.d) is owned by role trust_mallory",
    ] {
        assert!(m.contains(want), "missing «{want}» in: {m}");
    }
    // the domain and the operator themselves, owned by that role, are refused too
    Spi::run(
        "ALTER FUNCTION trust_x.f(text) OWNER TO CURRENT_USER;
         ALTER FUNCTION trust_x.ok(text) OWNER TO CURRENT_USER;
         ALTER FUNCTION trust_x.eq(text, text) OWNER TO CURRENT_USER;
         REVOKE TRIGGER ON raw.qb_vendors FROM trust_mallory;
         ALTER DOMAIN trust_x.d OWNER TO trust_mallory;
         ALTER OPERATOR trust_x.=== (text, text) OWNER TO trust_mallory;",
    )
    .unwrap();
    let m = raw::check_raw_trust(e).unwrap_err().message;
    assert!(m.contains("type trust_x.d (reached from the table raw.qb_vendors) is owned by role trust_mallory"), "{m}");
    assert!(m.contains("operator trust_x.===(text,text) (reached from constraint c on table raw.qb_vendors) is owned by role trust_mallory"), "{m}");
    // a rule redirects writes anywhere: refused whoever made it
    Spi::run(
        "ALTER DOMAIN trust_x.d OWNER TO CURRENT_USER;
         ALTER OPERATOR trust_x.=== (text, text) OWNER TO CURRENT_USER;
         CREATE TABLE trust_x.sink (LIKE raw.qb_vendors);
         CREATE RULE r AS ON INSERT TO raw.qb_vendors DO ALSO INSERT INTO trust_x.sink SELECT NEW.*;",
    )
    .unwrap();
    let m = raw::check_raw_trust(e).unwrap_err().message;
    assert!(m.contains("raw.qb_vendors has rules (DROP RULE ... ON raw.qb_vendors)"), "{m}");
    // and a table another role owns
    Spi::run("DROP RULE r ON raw.qb_vendors; ALTER TABLE raw.qb_vendors OWNER TO trust_mallory;").unwrap();
    let m = raw::check_raw_trust(e).unwrap_err().message;
    assert!(m.contains("raw.qb_vendors is owned by role trust_mallory, not by pg_qbo's owner (ALTER TABLE raw.qb_vendors OWNER TO postgres after reviewing it)"), "{m}");
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A record as a QBO page holds it (jsonb bytes, as the network thread writes them).
fn record(id: &str, sync: i64, last_updated: &str, memo: &str) -> qbo::pager::RawRecord {
    let doc = format!(
        r#"{{"Id":"{id}","SyncToken":"{sync}","MetaData":{{"CreateTime":"2024-01-01T00:00:00Z","LastUpdatedTime":"{last_updated}"}},"Memo":"{memo}"}}"#
    );
    let raw = serde_json::value::RawValue::from_string(doc).unwrap();
    qbo::pager::RawRecord::from_page(&raw, true).unwrap()
}

/// Upserts `records` as one page into the entity's table, for realm `realm`.
fn upsert(e: &qbo::entities::Entity, realm: &str, records: Vec<qbo::pager::RawRecord>) -> raw::UpsertCounts {
    let t = at("2025-01-01T00:00:00Z");
    raw::upsert_page(e, realm, executor::to_page_rows(records), t, t, 1, 1000, "{}").unwrap()
}

/// (last_updated_utc, deleted_at_utc, SyncToken, Memo) of a row of `raw.<table>`.
type RowState = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<String>, Option<String>);

fn row_state(table: &str, realm: &str, id: &str) -> RowState {
    use pgrx::datum::TimestampWithTimeZone;
    Spi::connect(|c| {
        let row = c
            .select(
                &format!(
                    "SELECT last_updated_utc, deleted_at_utc, payload->>'SyncToken', payload->>'Memo'
                       FROM raw.{table} WHERE realm_id = $1 AND id = $2"
                ),
                Some(1),
                &[realm.into(), id.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<TimestampWithTimeZone>(1)?.and_then(crate::pg::time::from_tstz),
            row.get::<TimestampWithTimeZone>(2)?.and_then(crate::pg::time::from_tstz),
            row.get::<String>(3)?,
            row.get::<String>(4)?,
        ))
    })
    .unwrap()
}

/// Columns of `raw.<table>`, as "name type" in their order.
fn columns_of(table: &str) -> Vec<String> {
    Spi::get_one::<Vec<String>>(&format!(
        "SELECT array_agg(attname || ' ' || format_type(atttypid, atttypmod) ORDER BY attnum)
           FROM pg_attribute WHERE attrelid = 'raw.{table}'::regclass AND attnum > 0 AND NOT attisdropped"
    ))
    .unwrap()
    .unwrap()
}

/// A raw table exactly as pg_qbo 0.5.0 made it (columns, primary key, indexes), in a schema `raw`
/// of the owner, with rows whose payloads carry a LastUpdatedTime (one in each of two realms, one
/// with a fraction and another offset) and one without MetaData.
fn make_0_5_0_table(table: &str) {
    // under the lock pg_qbo takes around its own raw DDL (ensure_raw_table): the suites run at
    // once, and creating schema raw here while another suite's ensure_raw_table holds that lock
    // and creates it too made each wait for the other (a deadlock in the fresh-clone CI)
    let class = crate::store::locks::WRITE_LOCK_CLASS;
    Spi::run(&format!(
        r#"SELECT pg_catalog.pg_advisory_xact_lock({class}, pg_catalog.hashtext('pg_qbo raw ddl'));
         CREATE SCHEMA IF NOT EXISTS raw;
         CREATE TABLE raw.{table} (
             realm_id text NOT NULL, id text NOT NULL, payload jsonb NOT NULL,
             ingested_at_utc timestamptz NOT NULL DEFAULT now(),
             extract_window_start_utc timestamptz NOT NULL, extract_window_end_utc timestamptz NOT NULL,
             page_number int4, page_size int4, request_payload jsonb,
             PRIMARY KEY (realm_id, id));
         CREATE INDEX {table}_ingested_idx ON raw.{table} (ingested_at_utc);
         CREATE INDEX {table}_window_start_idx ON raw.{table} (extract_window_start_utc);
         CREATE INDEX {table}_window_end_idx ON raw.{table} (extract_window_end_utc);
         INSERT INTO raw.{table} (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc) VALUES
           ('r', '1', '{{"Id":"1","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2025-01-02T03:04:05-08:00"}}}}', now(), now()),
           ('r', '2', '{{"Id":"2","SyncToken":"3","MetaData":{{"LastUpdatedTime":"2024-12-31T23:59:59.5+05:30"}}}}', now(), now()),
           ('s', '1', '{{"Id":"1","SyncToken":"1","MetaData":{{"LastUpdatedTime":"2025-06-01T00:00:00Z"}}}}', now(), now()),
           ('s', '9', '{{"Id":"9","SyncToken":"0"}}', now(), now());"#
    ))
    .unwrap();
}

const OLD_COLUMNS: [&str; 9] = [
    "realm_id text",
    "id text",
    "payload jsonb",
    "ingested_at_utc timestamp with time zone",
    "extract_window_start_utc timestamp with time zone",
    "extract_window_end_utc timestamp with time zone",
    "page_number integer",
    "page_size integer",
    "request_payload jsonb",
];

/// A raw table made by pg_qbo 0.5.0 passes the read-only check as it is, and gains
/// last_updated_utc (filled from the payloads, whatever the session's TimeZone), deleted_at_utc,
/// the index and the comments on its first use; a second use changes nothing.
#[pg_test]
fn a_raw_table_of_0_5_0_gains_the_columns_of_0_6_0_on_first_use() {
    let e = qbo::entities::lookup("Customer").unwrap();
    make_0_5_0_table(e.table);
    raw::check_existing_raw_table(e).expect("the 0.5.0 shape passes before a run");
    assert_eq!(columns_of(e.table), OLD_COLUMNS, "the check reads only");
    Spi::run("SET LOCAL TimeZone = 'America/Mexico_City'").unwrap();
    raw::ensure_raw_table(e).unwrap();
    let mut want: Vec<String> = OLD_COLUMNS.iter().map(|c| c.to_string()).collect();
    want.push("last_updated_utc timestamp with time zone".into());
    want.push("deleted_at_utc timestamp with time zone".into());
    assert_eq!(columns_of(e.table), want);
    assert_eq!(
        row_state(e.table, "r", "1"),
        (Some(at("2025-01-02T11:04:05Z")), None, Some("0".into()), None)
    );
    assert_eq!(
        row_state(e.table, "r", "2"),
        (Some(at("2024-12-31T18:29:59.5Z")), None, Some("3".into()), None)
    );
    assert_eq!(
        row_state(e.table, "s", "1"),
        (Some(at("2025-06-01T00:00:00Z")), None, Some("1".into()), None)
    );
    assert_eq!(row_state(e.table, "s", "9"), (None, None, Some("0".into()), None));
    let index = Spi::get_one::<String>(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'raw' AND indexname = 'qb_customers_last_updated_idx'",
    )
    .unwrap();
    assert_eq!(
        index.as_deref(),
        Some("CREATE INDEX qb_customers_last_updated_idx ON raw.qb_customers USING btree (realm_id, last_updated_utc)")
    );
    let comments = Spi::get_two::<String, String>(
        "SELECT col_description('raw.qb_customers'::regclass, 10), col_description('raw.qb_customers'::regclass, 11)",
    )
    .unwrap();
    assert_eq!(
        comments,
        (
            Some("MetaData.LastUpdatedTime of this version: when QBO last changed the record.".into()),
            Some("NULL while the record exists in QBO; once qbo.sync learns it was deleted (a Change Data Capture tombstone, or its deletes hunt), when it was deleted. The payload stays the last version seen before. A later version revives the row (NULL again).".into())
        )
    );
    // the same as a table pg_qbo 0.6.0 makes: columns, indexes, comments
    let new = qbo::entities::lookup("Class").unwrap();
    raw::ensure_raw_table(new).unwrap();
    assert_eq!(columns_of(new.table), want);
    let shape = |t: &str| {
        Spi::get_two::<Vec<String>, Vec<String>>(&format!(
            "SELECT (SELECT array_agg(replace(indexdef, '{t}', 'T') ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'raw' AND tablename = '{t}'),
                    (SELECT array_agg(coalesce(col_description('raw.{t}'::regclass, attnum), '-') ORDER BY attnum)
                       FROM pg_attribute WHERE attrelid = 'raw.{t}'::regclass AND attnum > 0)"
        ))
        .unwrap()
    };
    let (old_indexes, _) = shape(e.table);
    let (new_indexes, new_comments) = shape(new.table);
    assert_eq!(old_indexes, new_indexes);
    assert_eq!(new_comments.unwrap()[9..], [comments.0.unwrap(), comments.1.unwrap()]);
    // a second use adds and rewrites nothing
    let xmin = || Spi::get_one::<Vec<String>>("SELECT array_agg(xmin::text ORDER BY realm_id, id) FROM raw.qb_customers").unwrap();
    let before = xmin();
    raw::ensure_raw_table(e).unwrap();
    raw::check_existing_raw_table(e).unwrap();
    assert_eq!(xmin(), before);
    assert_eq!(columns_of(e.table), want);
}

/// Only the 0.5.0 shape passes without the new columns: a table that has one of them, or one of
/// their names under another type, or lacks an older column, is refused with the usual advice
/// and left as it was; and an old table the trust check refuses gains nothing.
// Each test of raw tables uses an entity (a table) of its own: the suites run at once, each in a
// transaction of its own, and two of them writing the same rows of one table can deadlock.
#[pg_test]
fn only_the_0_5_0_shape_passes_without_the_new_columns() {
    let e = qbo::entities::lookup("Department").unwrap();
    for (change, missing) in [
        ("ADD COLUMN last_updated_utc timestamptz", "deleted_at_utc timestamp with time zone"),
        (
            "ADD COLUMN last_updated_utc text",
            "last_updated_utc timestamp with time zone, deleted_at_utc timestamp with time zone",
        ),
        (
            "DROP COLUMN page_size",
            "page_size integer, last_updated_utc timestamp with time zone, deleted_at_utc timestamp with time zone",
        ),
    ] {
        Spi::run("DROP SCHEMA IF EXISTS raw CASCADE").unwrap();
        make_0_5_0_table(e.table);
        Spi::run(&format!("ALTER TABLE raw.qb_departments {change}")).unwrap();
        let columns = columns_of(e.table);
        for err in [
            raw::check_existing_raw_table(e).unwrap_err(),
            raw::ensure_raw_table(e).unwrap_err(),
        ] {
            assert_eq!(err.sqlstate(), "42P07", "{change}: {}", err.message);
            assert!(
                err.message.starts_with(&format!(
                    "table raw.qb_departments already exists with another shape (primary key (realm_id, id); missing or different columns: {missing}); pg_qbo needs primary key (realm_id, id) and columns realm_id text, "
                )),
                "{change}: {}",
                err.message
            );
            assert!(err.message.ends_with(", last_updated_utc timestamp with time zone, deleted_at_utc timestamp with time zone. Rename the old table (ALTER TABLE raw.qb_departments RENAME TO qb_departments_old) and run the backfill again, then copy what you need from the old table"), "{}", err.message);
        }
        assert_eq!(columns_of(e.table), columns, "{change}");
    }
    // an untrusted table of the old shape: refused before any DDL
    Spi::run("DROP SCHEMA IF EXISTS raw CASCADE").unwrap();
    make_0_5_0_table(e.table);
    Spi::run("CREATE ROLE shape_mallory NOLOGIN; ALTER TABLE raw.qb_departments OWNER TO shape_mallory").unwrap();
    raw::check_existing_raw_table(e).unwrap_err();
    let err = raw::ensure_raw_table(e).unwrap_err();
    assert_eq!(err.sqlstate(), "42501", "{}", err.message);
    assert_eq!(columns_of(e.table), OLD_COLUMNS);
}

/// Runs `f` in a subtransaction that is then rolled back (as a PL/pgSQL exception block does): what
/// an ERROR caught in `f` left behind is cleaned up, the test's transaction goes on.
fn rolled_back_subtransaction<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: on the test backend's own thread, inside its transaction; the memory context and
    // resource owner are restored after the subtransaction as PL/pgSQL does.
    unsafe {
        let ctx = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(ctx);
        let r = f();
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(ctx);
        pg_sys::CurrentResourceOwner = owner;
        r
    }
}

/// Another session reading an old table (holding a lock on it): adding the columns waits 5 s,
/// then stops with SQLSTATE 55P03 and says to run again, having changed nothing.
#[pg_test]
fn adding_the_columns_gives_up_on_a_lock_another_session_holds() {
    let e = qbo::entities::lookup("Term").unwrap();
    // the other session (dblink) commits the table, so that both see it, and holds it
    Spi::run("CREATE EXTENSION IF NOT EXISTS dblink").unwrap();
    let conn = Spi::get_one::<String>(
        "SELECT format('dbname=%s port=%s host=%s user=%s', current_database(), current_setting('port'),
                      split_part(current_setting('unix_socket_directories'), ',', 1), current_user)",
    )
    .unwrap()
    .unwrap();
    Spi::run_with_args("SELECT dblink_connect('other', $1)", &[conn.as_str().into()]).unwrap();
    let other = |sql: &str| {
        Spi::run_with_args("SELECT dblink_exec('other', $1)", &[sql.into()]).unwrap();
    };
    let had_raw = Spi::get_one::<bool>("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'raw')")
        .unwrap()
        .unwrap();
    other(
        "CREATE SCHEMA IF NOT EXISTS raw;
         CREATE TABLE raw.qb_terms (
             realm_id text NOT NULL, id text NOT NULL, payload jsonb NOT NULL,
             ingested_at_utc timestamptz NOT NULL DEFAULT now(),
             extract_window_start_utc timestamptz NOT NULL, extract_window_end_utc timestamptz NOT NULL,
             page_number int4, page_size int4, request_payload jsonb,
             PRIMARY KEY (realm_id, id))",
    );
    other("BEGIN");
    other("LOCK TABLE raw.qb_terms IN ACCESS SHARE MODE");
    let started = std::time::Instant::now();
    let result = rolled_back_subtransaction(|| raw::ensure_raw_table(e));
    let waited = started.elapsed();
    let columns = columns_of(e.table);
    other("ROLLBACK");
    other("DROP TABLE raw.qb_terms");
    if !had_raw {
        other("DROP SCHEMA raw");
    }
    Spi::run("SELECT dblink_disconnect('other')").unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.sqlstate(), "55P03");
    assert_eq!(
        err.message,
        "pg_qbo could not add columns to raw.qb_terms: pg_qbo 0.6.0 adds columns last_updated_utc and deleted_at_utc to existing raw tables on first use, and another session holds a lock on raw.qb_terms (waited 5 s). Nothing was changed. Run again once that session is done (pg_locks shows who holds it)"
    );
    assert!(waited >= std::time::Duration::from_secs(5) && waited < std::time::Duration::from_secs(30), "{waited:?}");
    assert_eq!(columns, OLD_COLUMNS);
    // the setting was the statement's only
    assert_eq!(Spi::get_one::<String>("SHOW lock_timeout").unwrap().as_deref(), Some("0"));
}

/// The upsert writes each record's LastUpdatedTime with it (the page sorted by Id, each time
/// with its record), on insert and on update; a stale version leaves it.
#[pg_test]
fn page_upsert_writes_last_updated_utc() {
    let e = qbo::entities::lookup("Bill").unwrap();
    raw::ensure_raw_table(e).unwrap();
    let rows = executor::to_page_rows(vec![
        record("2", 3, "2025-03-01T10:00:00-07:00", "b"),
        record("10", 0, "2025-03-01T08:00:00Z", "c"),
        record("1", 0, "2025-03-01T09:00:00.25Z", "a"),
    ]);
    assert_eq!(rows.ids, ["1", "10", "2"]);
    assert_eq!(
        rows.last_updated,
        [at("2025-03-01T09:00:00.25Z"), at("2025-03-01T08:00:00Z"), at("2025-03-01T17:00:00Z")]
    );
    let t = at("2025-01-01T00:00:00Z");
    assert_eq!(
        raw::upsert_page(e, "r", rows, t, t, 1, 1000, "{}").unwrap(),
        raw::UpsertCounts { inserted: 3, updated: 0 }
    );
    assert_eq!(
        row_state(e.table, "r", "1"),
        (Some(at("2025-03-01T09:00:00.25Z")), None, Some("0".into()), Some("a".into()))
    );
    assert_eq!(
        row_state(e.table, "r", "10"),
        (Some(at("2025-03-01T08:00:00Z")), None, Some("0".into()), Some("c".into()))
    );
    assert_eq!(
        row_state(e.table, "r", "2"),
        (Some(at("2025-03-01T17:00:00Z")), None, Some("3".into()), Some("b".into()))
    );
    // a new version updates it; a stale one (lower SyncToken) leaves the row as it is
    assert_eq!(
        upsert(e, "r", vec![record("1", 1, "2025-03-02T00:00:00Z", "a2"), record("2", 2, "2025-02-01T00:00:00Z", "old")]),
        raw::UpsertCounts { inserted: 0, updated: 1 }
    );
    assert_eq!(
        row_state(e.table, "r", "1"),
        (Some(at("2025-03-02T00:00:00Z")), None, Some("1".into()), Some("a2".into()))
    );
    assert_eq!(
        row_state(e.table, "r", "2"),
        (Some(at("2025-03-01T17:00:00Z")), None, Some("3".into()), Some("b".into()))
    );
}

/// Tombstones mark live rows whose version is not newer than the deletion, at the tombstone's
/// time (the latest of an Id's), in the realm given only; unknown Ids add no row; a second call
/// marks nothing and moves no time.
#[pg_test]
fn tombstones_mark_only_live_rows_not_newer_than_the_deletion() {
    let e = qbo::entities::lookup("Deposit").unwrap();
    raw::ensure_raw_table(e).unwrap();
    let (t1, t2, t3) = ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z");
    assert_eq!(
        upsert(e, "r", vec![record("1", 0, t1, "a"), record("2", 0, t3, "b"), record("3", 0, t2, "c"), record("4", 0, t2, "d")]),
        raw::UpsertCounts { inserted: 4, updated: 0 }
    );
    assert_eq!(upsert(e, "s", vec![record("1", 0, t1, "other realm")]).inserted, 1);
    let ids: Vec<String> = ["3", "1", "2", "99", "4", "4", "1"].map(String::from).to_vec();
    let times = [t2, t2, t2, t2, t1, t3, "2025-03-01T12:00:00Z"].map(at);
    assert_eq!(raw::apply_tombstones(e, "r", &ids, &times).unwrap(), 3);
    // 1: its latest tombstone (t2) after its version (t1); 2: its version (t3) is newer than the
    // deletion (t2): kept live; 3: deleted at the very time of its version (the tombstone wins
    // a tie); 4: the later of its two tombstones (t3) is after its version (t2)
    assert_eq!(row_state(e.table, "r", "1"), (Some(at(t1)), Some(at(t2)), Some("0".into()), Some("a".into())));
    assert_eq!(row_state(e.table, "r", "2"), (Some(at(t3)), None, Some("0".into()), Some("b".into())));
    assert_eq!(row_state(e.table, "r", "3"), (Some(at(t2)), Some(at(t2)), Some("0".into()), Some("c".into())));
    assert_eq!(row_state(e.table, "r", "4"), (Some(at(t2)), Some(at(t3)), Some("0".into()), Some("d".into())));
    assert_eq!(row_state(e.table, "s", "1"), (Some(at(t1)), None, Some("0".into()), Some("other realm".into())));
    let count = || Spi::get_one::<i64>("SELECT count(*) FROM raw.qb_deposits").unwrap();
    assert_eq!(count(), Some(5), "no row for Id 99");
    // again: nothing marked; later tombstones of rows already marked move no time
    assert_eq!(raw::apply_tombstones(e, "r", &ids, &times).unwrap(), 0);
    let marked = ["1", "3", "4"].map(String::from);
    assert_eq!(raw::apply_tombstones(e, "r", &marked, &[at("2025-04-01T00:00:00Z"); 3]).unwrap(), 0);
    assert_eq!(row_state(e.table, "r", "1").1, Some(at(t2)));
    assert_eq!(row_state(e.table, "r", "3").1, Some(at(t2)));
    assert_eq!(row_state(e.table, "r", "4").1, Some(at(t3)));
    assert_eq!(row_state(e.table, "r", "2").1, None);
    assert_eq!(count(), Some(5));
    assert_eq!(raw::apply_tombstones(e, "r", &[], &[]).unwrap(), 0);
    assert_eq!(raw::apply_tombstones(e, "r", &ids, &times[..1]).unwrap_err().sqlstate(), "XX000");
}

/// A row marked deleted is not written by a version last updated at or before its deletion, even
/// with a higher SyncToken (a late backfill page); a later version revives it (counted updated),
/// after which the SyncToken rule applies again.
#[pg_test]
fn a_deleted_row_is_revived_only_by_a_later_version() {
    let e = qbo::entities::lookup("Transfer").unwrap();
    raw::ensure_raw_table(e).unwrap();
    let (t1, t2, t3) = ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z");
    assert_eq!(upsert(e, "r", vec![record("1", 3, t1, "a")]).inserted, 1);
    assert_eq!(raw::apply_tombstones(e, "r", &["1".to_owned()], &[at(t2)]).unwrap(), 1);
    let nothing = raw::UpsertCounts { inserted: 0, updated: 0 };
    // older, then equal to the deletion: not written, whatever their SyncToken
    assert_eq!(upsert(e, "r", vec![record("1", 5, t1, "late page")]), nothing);
    assert_eq!(upsert(e, "r", vec![record("1", 6, t2, "same second")]), nothing);
    assert_eq!(row_state(e.table, "r", "1"), (Some(at(t1)), Some(at(t2)), Some("3".into()), Some("a".into())));
    // in a page with a new record: that one is inserted, the deleted one skipped
    assert_eq!(
        upsert(e, "r", vec![record("1", 7, "2025-03-01T23:59:59.999999Z", "late"), record("5", 0, t1, "new")]),
        raw::UpsertCounts { inserted: 1, updated: 0 }
    );
    // later than the deletion: revived, even with a lower SyncToken
    assert_eq!(
        upsert(e, "r", vec![record("1", 1, "2025-03-02T00:00:00.000001Z", "back")]),
        raw::UpsertCounts { inserted: 0, updated: 1 }
    );
    assert_eq!(
        row_state(e.table, "r", "1"),
        (Some(at("2025-03-02T00:00:00.000001Z")), None, Some("1".into()), Some("back".into()))
    );
    // live again: the SyncToken rule (the same version writes nothing; a lower SyncToken,
    // however late, neither; a higher one does)
    assert_eq!(upsert(e, "r", vec![record("1", 1, "2025-03-02T00:00:00.000001Z", "back")]), nothing);
    assert_eq!(upsert(e, "r", vec![record("1", 0, t3, "stale")]), nothing);
    assert_eq!(
        upsert(e, "r", vec![record("1", 2, t3, "next")]),
        raw::UpsertCounts { inserted: 0, updated: 1 }
    );
    assert_eq!(row_state(e.table, "r", "1"), (Some(at(t3)), None, Some("2".into()), Some("next".into())));
}

/// The ledger hands back rows, and the progress lines are made of them: pages committed after
/// what a reader has seen, chunks that finished, a run's totals (the relay of a worker's progress
/// and the `CALL`'s own NOTICEs print these through `run::notices`).
#[pg_test]
fn the_ledger_returns_the_rows_progress_lines_are_made_of() {
    with_connection();
    let (from, to) = (at("2025-01-01T00:00:00Z"), at("2025-01-15T00:00:00Z"));
    let chunks = qbo::plan::plan_chunks(from, to, 7).unwrap();
    let run_id = ledger::create_run(&NewRun {
        entity: "Invoice",
        connection: "default",
        realm_id: "123145",
        environment: "sandbox",
        fecha_inicio: from,
        fecha_fin: to,
        chunk_size: 7,
        page_size: 1000,
        minor_version: 75,
        settings: serde_json::json!({}),
        entry_point: "call",
        status: "running",
        chunks: &chunks,
    })
    .unwrap();
    ledger::start_execution(run_id).unwrap();
    ledger::start_chunk(run_id, 1).unwrap();
    for (page, rows) in [(1, 1000), (2, 500)] {
        ledger::page_done(
            run_id,
            &PageDone {
                chunk: 1,
                page,
                start_position: 1 + (page - 1) * 1000,
                rows,
                inserted: rows - 10,
                updated: 10,
                refetched: 0,
                seconds: 0.25,
                chunk_seconds: 0.5,
                intuit_tid: None,
            },
        )
        .unwrap();
        ledger::save_cursor(run_id, 1, &serde_json::Value::Null, (1, page), true).unwrap();
    }
    let p = ledger::run_progress(run_id).unwrap();
    assert_eq!(
        (p.chunks_total, p.done, p.running, p.pages, p.rows),
        (2, 0, 1, 2, 1500)
    );
    assert_eq!(p.note.as_deref(), Some("chunk 1 page 2 committed"));
    assert!(ledger::chunks_done(run_id, &[]).unwrap().is_empty());

    let done = ledger::finish_chunk(run_id, 1, 0.25).unwrap();
    // instants in the session's TimeZone, with its offset, as a timestamptz is shown
    Spi::run("SET LOCAL TimeZone = 'America/Mexico_City'").unwrap();
    assert_eq!(
        notices::chunk_done(&done, &crate::pg::time::session_ts),
        format!("run {run_id} chunk 1/2 [2024-12-31 18:00:00-06 → 2025-01-07 18:00:00-06): done: 2 pages, 1500 rows (1480 inserted, 20 updated, 0 skipped) in 1.25 s")
    );
    assert_eq!(
        ledger::chunk_window(run_id, 2).unwrap(),
        (at("2025-01-08T00:00:00Z"), at("2025-01-15T00:00:00Z"))
    );
    assert_eq!(ledger::chunks_done(run_id, &[]).unwrap(), vec![done]);
    assert!(ledger::chunks_done(run_id, &[1]).unwrap().is_empty());
    let t = ledger::totals(run_id).unwrap();
    assert_eq!(
        (t.chunks, t.pages, t.rows, t.inserted, t.updated, t.skipped),
        (2, 2, 1500, 1480, 20, 0)
    );
}

/// A cancel pending when rotated tokens are stored (it arrived while the token request was in
/// flight): stored with interrupts deferred, the UPDATE completes, the new refresh token is there
/// and the cancel is still pending; stored plainly, the cancel stops the UPDATE and the new
/// refresh token is lost with it (the bug token_soak hit with a termination).
#[pg_test]
fn a_pending_cancel_does_not_stop_storing_rotated_tokens() {
    use crate::store::connections;
    with_connection();
    let exp = at("2030-01-01T00:00:00Z");
    let pend = || {
        // SAFETY: on the test backend's own thread; what the SIGINT handler sets for a cancel
        unsafe {
            pg_sys::QueryCancelPending = 1;
            pg_sys::InterruptPending = 1;
        }
    };
    let clear = || {
        // SAFETY: as above, undoing `pend` before the test's own statements run
        unsafe {
            pg_sys::QueryCancelPending = 0;
            pg_sys::InterruptPending = 0;
        }
    };
    let stored = || {
        Spi::get_one::<String>("SELECT refresh_token FROM qbo._connections WHERE name = 'default'")
            .unwrap()
            .unwrap()
    };
    // the hazard: not held, the pending cancel stops the UPDATE
    pend();
    let lost = rolled_back_subtransaction(|| {
        PgTryBuilder::new(|| {
            connections::store_tokens("default", "access-1", exp, Some("refresh-1"), None)
                .map(|_| "stored".to_owned())
                .unwrap_or_else(|e| e.message)
        })
        .catch_others(|e| match e {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_owned(),
            pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                ereport.message().to_owned()
            }
        })
        .execute()
    });
    clear();
    assert!(lost.contains("canceling statement due to user request"), "{lost}");
    assert_eq!(stored(), "rtoken");
    // deferred, as TokenCache stores what Intuit sent: stored, the cancel still pending after it
    // (held alone is not enough: the CHECK constraints' regular expressions give up on a pending
    // cancel whether interrupts are held or not)
    pend();
    let kept = crate::pg::interrupts::deferred(|| {
        connections::store_tokens("default", "access-2", exp, Some("refresh-2"), None)
    });
    // SAFETY: reading the flag of this backend, on its own thread
    let still_pending = unsafe { pg_sys::QueryCancelPending } != 0;
    clear();
    assert!(kept.is_ok(), "{kept:?}");
    assert!(still_pending, "the cancel is served after the store, not dropped");
    assert_eq!(stored(), "refresh-2");
}

/// The page upsert and the tombstones written for Citus keep exactly the rule of the local ones:
/// the same pages and tombstones (a new record, the same version again, an equal SyncToken with
/// another payload, a lower SyncToken, a deletion, a late page older than it, a later version
/// reviving it) give the same counts and the same rows through both, run here on local tables.
#[pg_test]
fn the_statements_for_citus_keep_the_rule_of_the_local_ones() {
    let (t1, t2, t3, t4) = (
        "2025-03-01T00:00:00Z",
        "2025-03-02T00:00:00Z",
        "2025-03-03T00:00:00Z",
        "2025-03-04T00:00:00Z",
    );
    let scenario = |name: &str, citus: bool| {
        let e = qbo::entities::lookup(name).unwrap();
        raw::ensure_raw_table(e).unwrap();
        raw::FORCE_CITUS_STATEMENTS.with(|f| f.set(citus));
        let page = |records| {
            let c = upsert(e, "r", records);
            (c.inserted, c.updated, 0)
        };
        let mut counts = vec![
            page(vec![record("1", 0, t1, "a"), record("2", 0, t1, "b"), record("3", 2, t1, "c")]),
            page(vec![record("1", 0, t1, "a"), record("2", 0, t1, "b2"), record("3", 1, t2, "older")]),
        ];
        let marked = raw::apply_tombstones(e, "r", &["1".into(), "9".into()], &[at(t3), at(t3)]).unwrap();
        counts.push((0, 0, marked));
        counts.push(page(vec![record("1", 5, t2, "late page"), record("4", 0, t2, "d")]));
        counts.push(page(vec![record("1", 6, t4, "revived")]));
        counts.push(page(vec![record("1", 6, t4, "revived")]));
        raw::FORCE_CITUS_STATEMENTS.with(|f| f.set(false));
        let rows: Vec<RowState> = ["1", "2", "3", "4"].iter().map(|id| row_state(e.table, "r", id)).collect();
        (counts, rows)
    };
    let local = scenario("Transfer", false);
    let citus = scenario("VendorCredit", true);
    assert_eq!(
        local.0,
        vec![(3, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 0)],
        "the local rule"
    );
    assert_eq!(citus, local);
    assert_eq!(local.1[0], (Some(at(t4)), None, Some("6".into()), Some("revived".into())));
    assert_eq!(local.1[2].3.as_deref(), Some("c"), "a lower SyncToken is not written");
}
