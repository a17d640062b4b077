// In-database suites, run by `cargo pgrx test` inside a transaction that is rolled back.
// (Everything that COMMITs — procedures, workers — is tested end to end in tests/e2e.)
use crate::pg::spi;
use crate::run::executor;
use crate::store::raw;
use pgrx::prelude::*;

fn error_of(sql: &str) -> String {
    PgTryBuilder::new(|| {
        Spi::run(sql).expect("statement");
        String::from("no error")
    })
    .catch_others(|e| match e {
        pgrx::pg_sys::panic::CaughtError::PostgresError(r) | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => {
            r.message().to_owned()
        }
        pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
    })
    .execute()
}

fn with_connection() {
    Spi::run(
        "SELECT qbo.connect('123145', 'cid', 'csecret', 'rtoken', 'sandbox', 'default')",
    )
    .expect("connect");
}

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
    let cases = [
        ("SELECT * FROM qbo.backfill('invoice', '2025-01-01Z', '2025-02-01Z')",
         "qbo.backfill: unknown entity \"invoice\" (entity names are case-sensitive: did you mean \"Invoice\"?); valid entities are: Account, Attachable, Bill,"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-02-01Z', '2025-01-01Z')",
         "qbo.backfill: fecha_fin (2025-01-01T00:00:00+00:00) must be later than fecha_inicio (2025-02-01T00:00:00+00:00): the window is [fecha_inicio, fecha_fin)"),
        ("SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-01-01Z')",
         "qbo.backfill: fecha_fin (2025-01-01T00:00:00+00:00) must be later than fecha_inicio"),
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

fn admit(want: i32, per_minute: i32, in_flight: i32, finished: &str) -> (Vec<i64>, i32) {
    let sql = format!(
        "SELECT admitted, wait_ms FROM qbo._api_admit('9341', {want}, {per_minute}, {in_flight}, '{finished}'::bigint[])"
    );
    Spi::connect(|c| {
        let r = c.select(&sql, Some(1), &[])?.first();
        Ok::<_, pgrx::spi::Error>((
            r.get::<Vec<i64>>(1)?.unwrap_or_default(),
            r.get::<i32>(2)?.unwrap_or(-1),
        ))
    })
    .unwrap()
}

#[pg_test]
fn limiter_caps_requests_in_flight_and_frees_a_slot_when_a_response_is_read() {
    let (a, w) = admit(5, 500, 3, "{}");
    assert_eq!((a.len(), w), (3, 0), "3 of 5 admitted with 3 in flight allowed");
    let (b, w) = admit(1, 500, 3, "{}");
    assert!(b.is_empty());
    assert_eq!(w, 20, "all in flight: look again shortly");
    // one response read completely: one slot free
    let (c, _) = admit(2, 500, 3, &format!("{{{}}}", a[0]));
    assert_eq!(c.len(), 1);
    // another realm is not affected
    let other = Spi::get_one::<Vec<i64>>(
        "SELECT admitted FROM qbo._api_admit('other', 2, 500, 3, '{}')",
    )
    .unwrap()
    .unwrap();
    assert_eq!(other.len(), 2);
}

#[pg_test]
fn limiter_counts_a_sliding_minute_and_says_how_long_to_wait() {
    // 4 admitted 30 s ago and finished, 1 admitted 10 s ago and finished
    Spi::run(
        "INSERT INTO qbo._api_requests (realm_id, pid, started_at, finished_at)
         SELECT '9341', pg_backend_pid(), clock_timestamp() - interval '30 s', clock_timestamp() - interval '29 s'
           FROM generate_series(1, 4)
         UNION ALL SELECT '9341', pg_backend_pid(), clock_timestamp() - interval '10 s', clock_timestamp() - interval '9 s'",
    )
    .unwrap();
    let (a, _) = admit(3, 6, 10, "{}");
    assert_eq!(a.len(), 1, "6 a minute, 5 in the window: 1 more");
    let (b, w) = admit(1, 6, 10, "{}");
    assert!(b.is_empty());
    // the oldest of the window leaves it 61 s after it started: about 31 s from now
    assert!((29_000..=32_000).contains(&w), "wait {w} ms");
    // requests older than the window no longer count
    Spi::run("UPDATE qbo._api_requests SET started_at = started_at - interval '40 s' WHERE started_at < clock_timestamp() - interval '20 s'").unwrap();
    let (c, _) = admit(10, 6, 10, "{}");
    assert_eq!(c.len(), 4, "only the 2 recent ones count: 4 more");
}

#[pg_test]
fn limiter_frees_the_slots_of_a_process_that_is_gone() {
    // a request left in flight by a process that died (pid 0 never exists)
    Spi::run(
        "INSERT INTO qbo._api_requests (realm_id, pid, started_at) VALUES ('9341', 0, clock_timestamp()), ('9341', 0, clock_timestamp())",
    )
    .unwrap();
    let (a, _) = admit(2, 500, 2, "{}");
    assert_eq!(a.len(), 2, "the dead process's slots were freed");
    let freed = Spi::get_one::<i32>("SELECT qbo._api_release_mine()").unwrap().unwrap();
    assert_eq!(freed, 2);
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
    Spi::run(&format!(
        "PREPARE up(text[], jsonb[], int8[], text, timestamptz, timestamptz, int, int, text) AS {}",
        raw::upsert_sql(e.table)
    ))
    .unwrap();
    // one plan, read as JSON: its nodes and its estimate
    let plan = Spi::get_one::<pgrx::Json>(&format!(
        "EXPLAIN (FORMAT JSON) EXECUTE up('{{{ids}}}', '{{{payloads}}}', '{{{syncs}}}', 'r', now(), now(), 1, 1000, '{{}}')"
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
}

/// The bytes of a varlena datum.
///
/// # Safety
/// `d` must point to a complete, non-toasted varlena (such as an input function's fresh
/// result) that stays allocated for the call.
unsafe fn varlena_bytes(d: pg_sys::Datum) -> Vec<u8> {
    let p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: `p` is a complete in-memory varlena (our caller's guarantee), so varsize_any
    // reads its header and the whole length it gives is readable; the bytes are copied out.
    unsafe { std::slice::from_raw_parts(p as *const u8, pgrx::varsize_any(p)).to_vec() }
}

/// PostgreSQL's own jsonb of `text` (after the `\u0000` policy), `None` where it raises.
fn postgres_jsonb(text: &str) -> Option<Vec<u8>> {
    let text = qbo::jsonb::storable(text).into_owned();
    PgTryBuilder::new(move || {
        // SAFETY: jsonb_in's result is a fresh jsonb varlena palloc'd in the current memory
        // context (never toasted), still allocated while its bytes are copied.
        raw::jsonb_in(&text).ok().map(|d| unsafe { varlena_bytes(d) })
    })
    .catch_others(|_| None)
    .execute()
}

/// Every QBO sample document: where the network thread's encoder writes jsonb, its bytes are
/// exactly jsonb_in's, and it declines none of them.
#[pg_test]
fn jsonb_encoder_writes_jsonb_in_bytes_for_every_qbo_sample() {
    assert!(raw::database_is_utf8());
    let mut files = Vec::new();
    let mut dirs = vec![qbo::fault::samples_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut same, mut invalid) = (0, 0);
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        let ours = qbo::jsonb::encode::encode(&text);
        let theirs = postgres_jsonb(&text);
        match (&ours, &theirs) {
            (Some(o), Some(t)) => {
                assert!(o == t, "{}: encoder bytes differ from jsonb_in", f.display());
                same += 1;
            }
            (Some(_), None) => panic!("{}: encoded what jsonb_in rejects", f.display()),
            // no sample has an exponent or a repeated key: none may be declined
            (None, Some(_)) => panic!("{}: declined a plain QBO document", f.display()),
            (None, None) => invalid += 1,
        }
    }
    // 128 of the 136 files are JSON (the rest are XML or HTML error bodies named .json)
    assert!(same >= 120, "only {same} of {} samples compared ({invalid} not JSON)", files.len());
}

/// Generated documents (seeded): deep and wide containers (past the 32-entry offset stride),
/// keys in every length order, escapes, surrogate pairs, `\u0000`, numbers of every scale and
/// weight (short and long numeric headers, negative zero): byte-identical to jsonb_in.
#[pg_test]
fn jsonb_encoder_writes_jsonb_in_bytes_for_generated_documents() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261128);
    fn digits(rng: &mut rand::rngs::StdRng, n: usize, lead_nonzero: bool) -> String {
        (0..n)
            .map(|i| {
                let lo = if i == 0 && lead_nonzero { 1 } else { 0 };
                char::from(b'0' + rng.random_range(lo..10u8))
            })
            .collect()
    }
    fn number(rng: &mut rand::rngs::StdRng) -> String {
        let mut s = String::new();
        if rng.random_bool(0.3) {
            s.push('-');
        }
        if rng.random_bool(0.3) {
            s.push('0');
        } else {
            let n = rng.random_range(1..30);
            s.push_str(&digits(rng, n, true));
        }
        if rng.random_bool(0.6) {
            s.push('.');
            let n = *[1, 2, 3, 4, 5, 8, 63, 64, 70].get(rng.random_range(0..9)).unwrap();
            if rng.random_bool(0.3) {
                s.push_str(&"0".repeat(rng.random_range(1..300)));
            }
            s.push_str(&digits(rng, n, false));
        }
        s
    }
    fn string(rng: &mut rand::rngs::StdRng) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", " ", "é", "日本", "😀", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\r",
            "\\b", "\\f", "\\u00e9", "\\u65e5", "\\ud83d\\ude00", "\\u0000", "\\u001f", "x y",
        ];
        let n = rng.random_range(0..12);
        let body: String = (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
        format!("\"{body}\"")
    }
    fn value(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
        let pick = if depth >= 4 { rng.random_range(0..5) } else { rng.random_range(0..7) };
        match pick {
            0 => "null".into(),
            1 => if rng.random_bool(0.5) { "true".into() } else { "false".into() },
            2 => number(rng),
            3 | 4 => string(rng),
            5 => {
                let n = *[0, 1, 2, 31, 32, 33, 65].get(rng.random_range(0..7)).unwrap();
                let items: Vec<String> = (0..n).map(|_| value(rng, depth + 1)).collect();
                format!("[{}]", items.join(if rng.random_bool(0.5) { "," } else { " ,\n " }))
            }
            _ => {
                let n = *[0, 1, 3, 16, 33, 40].get(rng.random_range(0..6)).unwrap();
                // distinct after unescaping ("é" and "\u00e9" are one key): a numbered prefix
                let pairs: Vec<String> = (0..n)
                    .map(|i| {
                        let body = string(rng);
                        let key = format!("\"{i}|{}", &body[1..]);
                        format!("{key}:{}", value(rng, depth + 1))
                    })
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }
        }
    }
    let mut compared = 0;
    for _ in 0..1500 {
        let doc = value(&mut rng, 0);
        let ours = qbo::jsonb::encode::encode(&doc);
        let theirs = postgres_jsonb(&doc);
        match (ours, theirs) {
            (Some(o), Some(t)) => {
                assert!(o == t, "encoder bytes differ from jsonb_in for {doc}");
                compared += 1;
            }
            (o, t) => panic!("encoder {:?} / jsonb_in {:?} for {doc}", o.is_some(), t.is_some()),
        }
    }
    assert_eq!(compared, 1500);
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

/// Whatever `search_path` the caller has, pg_qbo's statements resolve nothing from it, and the
/// caller's path is back as it was afterwards (also after an error).
#[pg_test]
fn pg_qbo_statements_resolve_nothing_from_the_callers_search_path() {
    Spi::run(
        "CREATE SCHEMA path_x;
         CREATE TABLE path_x.fired (n int);
         CREATE FUNCTION path_x.format(text, int, int) RETURNS text LANGUAGE sql AS 'INSERT INTO path_x.fired VALUES (1) RETURNING ''planted''';
         CREATE FUNCTION path_x.eq(text, text) RETURNS boolean LANGUAGE sql AS 'INSERT INTO path_x.fired VALUES (2) RETURNING true';
         CREATE OPERATOR path_x.= (LEFTARG = text, RIGHTARG = text, FUNCTION = path_x.eq);
         SET search_path = path_x, pg_catalog;",
    )
    .unwrap();
    // positive control: the plants win under this path
    assert_eq!(
        Spi::get_one::<String>("SELECT format('%s %s', 1, 2)").unwrap().as_deref(),
        Some("planted")
    );
    assert_eq!(Spi::get_one::<bool>("SELECT 'a'::text = 'b'::text").unwrap(), Some(true));
    Spi::run("DELETE FROM path_x.fired").unwrap();
    let (path, eq) = spi::pinned(|| {
        (
            Spi::get_one::<String>("SELECT current_setting('search_path')").unwrap(),
            Spi::get_one::<bool>("SELECT 'a'::text = 'b'::text").unwrap(),
        )
    });
    assert_eq!(path.as_deref(), Some("pg_catalog, pg_temp"));
    assert_eq!(eq, Some(false));
    let s = spi::as_owner(|| {
        Spi::get_one::<String>("SELECT format('%s %s', 1, 2)").unwrap()
    });
    assert_eq!(s.as_deref(), Some("1 2"));
    // an error inside the span restores the caller's path too
    let caught = PgTryBuilder::new(|| {
        spi::pinned(|| Spi::run("SELECT 1/0").unwrap());
        false
    })
    .catch_others(|_| true)
    .execute();
    assert!(caught);
    assert_eq!(
        Spi::get_one::<String>("SELECT current_setting('search_path')").unwrap().as_deref(),
        Some("path_x, pg_catalog")
    );
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM path_x.fired").unwrap(), Some(0));
    Spi::run("RESET search_path").unwrap();
}
