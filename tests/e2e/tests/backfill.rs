//! End-to-end: backfills through both entry points equal the emulator's truth, with exact volumetry.

use pg_qbo_e2e::*;

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

fn backfill(c: &mut postgres::Client, entity: &str, conn: &str, chunk: i32, page: i32) -> Vol {
    let rows = c
        .query(
            "SELECT * FROM qbo.backfill($1, $2::text::timestamptz, $3::text::timestamptz, chunk_size => $4, page_size => $5, connection => $6)",
            &[&entity, &FROM, &TO, &chunk, &page, &conn],
        )
        .unwrap_or_else(|e| panic!("backfill {entity}: {e}"));
    sum_rows(&rows)
}

#[test]
fn srf_and_call_equal_truth_for_six_entities_over_two_realms() {
    let emu = Emulator::start(&["--seed", "7"]);
    let mut c = fresh_db("e2e_truth", &emu);
    register(&mut c, "e2e_truth", "second", REALM2, "emu-refresh-token-0");
    for (entity, table) in [
        ("Customer", "qb_customers"),
        ("Invoice", "qb_invoices"),
        ("Item", "qb_items"),
        ("Vendor", "qb_vendors"),
        ("Bill", "qb_bills"),
        ("Payment", "qb_payments"),
    ] {
        // realm 1 through the set-returning function (background worker)
        let truth = truth_in_window(&emu, REALM1, entity, FROM, TO);
        let v = backfill(&mut c, entity, "default", 7, 100);
        println!(
            "{entity} realm1 via qbo.backfill: {v:?}, truth {}",
            truth.len()
        );
        assert_eq!(raw(&mut c, table, REALM1), truth, "{entity} realm 1");
        assert_eq!(
            v.rows,
            truth.len() as i64,
            "{entity}: rows = distinct records in the window"
        );
        assert_eq!(
            (v.inserted, v.updated, v.skipped),
            (truth.len() as i64, 0, 0),
            "{entity}"
        );

        // realm 2 through CALL in this session
        let truth2 = truth_in_window(&emu, REALM2, entity, FROM, TO);
        let run_id: i64 = c
            .query_one(
                "CALL qbo.run_backfill($1, $2::text::timestamptz, $3::text::timestamptz, 30, 1000, 75, 'second')",
                &[&entity, &FROM, &TO],
            )
            .unwrap_or_else(|e| panic!("CALL {entity}: {e}"))
            .get(0);
        assert_eq!(raw(&mut c, table, REALM2), truth2, "{entity} realm 2");
        let (status, rows): (String, i64) = {
            let r = c
                .query_one(
                    "SELECT r.status, sum(c.rows)::bigint FROM qbo.runs r JOIN qbo.run_chunks c USING (run_id) WHERE run_id = $1 GROUP BY 1",
                    &[&run_id],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(
            (status.as_str(), rows),
            ("succeeded", truth2.len() as i64),
            "{entity} realm 2 ledger"
        );
    }
    // the volumetry returned equals the per-page log
    let mismatched: i64 = c
        .query_one(
            "SELECT count(*) FROM qbo.run_chunks c
               CROSS JOIN LATERAL (
                    SELECT count(*)::int AS pages, coalesce(sum(p.rows), 0)::bigint AS rows,
                           coalesce(sum(p.inserted), 0)::bigint AS inserted, coalesce(sum(p.updated), 0)::bigint AS updated,
                           coalesce(sum(p.skipped), 0)::bigint AS skipped
                      FROM qbo.run_pages p WHERE p.run_id = c.run_id AND p.chunk = c.chunk) s
              WHERE (c.pages, c.rows, c.inserted, c.updated, c.skipped) IS DISTINCT FROM (s.pages, s.rows, s.inserted, s.updated, s.skipped)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        mismatched, 0,
        "chunks whose volumetry differs from the sum of their pages"
    );
    // name lists: inactive rows are present
    let inactive: i64 = c
        .query_one(
            "SELECT count(*) FROM raw.qb_customers WHERE payload->>'Active' = 'false'",
            &[],
        )
        .unwrap()
        .get(0);
    let truth_inactive = emu
        .truth_rows(REALM1, "Customer")
        .iter()
        .chain(emu.truth_rows(REALM2, "Customer").iter())
        .filter(|r| r["Active"] == serde_json::Value::Bool(false))
        .count() as i64;
    assert!(truth_inactive > 0, "the emulator serves inactive customers");
    assert_eq!(inactive, truth_inactive);
}

#[test]
fn rerun_skips_everything_and_writes_nothing_then_updates_are_reported() {
    let emu = Emulator::start(&["--seed", "11"]);
    let mut c = fresh_db("e2e_rerun", &emu);
    let truth = truth_in_window(&emu, REALM1, "Invoice", FROM, TO);
    let first = backfill(&mut c, "Invoice", "default", 7, 200);
    assert_eq!(first.inserted, truth.len() as i64);
    let xmin_before: i64 = c
        .query_one(
            "SELECT sum(xmin::text::bigint)::bigint FROM raw.qb_invoices",
            &[],
        )
        .unwrap()
        .get(0);
    let again = backfill(&mut c, "Invoice", "default", 7, 200);
    println!("first {first:?}\nagain {again:?}");
    assert_eq!(
        (again.rows, again.inserted, again.updated, again.skipped),
        (truth.len() as i64, 0, 0, truth.len() as i64)
    );
    let xmin_after: i64 = c
        .query_one(
            "SELECT sum(xmin::text::bigint)::bigint FROM raw.qb_invoices",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        xmin_before, xmin_after,
        "an all-skipped re-run rewrote rows"
    );

    // update three records in the emulator: they are reported updated, with their new SyncToken
    let ids: Vec<String> = truth.keys().take(3).cloned().collect();
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"realm": REALM1, "entity": "Invoice", "op": "update", "ids": ids}),
    );
    let now = c
        .query_one("SELECT (now() + interval '1 day')::text", &[])
        .unwrap()
        .get::<_, String>(0);
    let rows = c
        .query(
            "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 400)",
            &[&FROM, &now],
        )
        .unwrap();
    let v = sum_rows(&rows);
    println!("after update {v:?}");
    assert_eq!(v.updated, 3);
    assert_eq!(v.inserted, 0);
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        emu.truth(REALM1, "Invoice")
    );
}

/// Issue 15: chunks are units of reporting, not of requests. A small company (2,000 invoices in
/// 2025) backfilled over 2000 → 2026 with the default `chunk_size => 7` (1,357 chunks) costs
/// what one window costs: a count and its pages (a plain offset loop would send 3), or with one
/// request in flight the time cursor's pages; every chunk reports exactly its own records.
#[test]
fn empty_chunks_and_years_cost_no_request() {
    let emu = Emulator::start(&["--seed", "15", "--records", "Invoice=2000"]);
    let mut c = fresh_db("e2e_small_company", &emu);
    let truth = truth_in_window(
        &emu,
        REALM1,
        "Invoice",
        "2000-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(truth.len(), 2000);
    for (run_id, in_flight, most) in [(1i64, 10, 5i64), (2, 1, 4)] {
        c.batch_execute(&format!(
            "SET qbo.max_in_flight = {in_flight}; TRUNCATE raw.qb_invoices"
        ))
        .or_else(|_| c.batch_execute(&format!("SET qbo.max_in_flight = {in_flight}")))
        .unwrap();
        let rows = c
            .query(
                "SELECT * FROM qbo.backfill('Invoice', '2000-01-01Z', '2026-01-01Z', chunk_size => 7)",
                &[],
            )
            .unwrap();
        assert_eq!(rows.len(), 1357, "one row per chunk");
        let v = sum_rows(&rows);
        assert_eq!((v.rows, v.inserted), (2000, 2000));
        assert_eq!(raw(&mut c, "qb_invoices", REALM1), truth);
        let (query, count): (i64, i64) = c
            .query_one(
                "SELECT requests_query, requests_count FROM qbo.runs WHERE run_id = $1",
                &[&run_id],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        println!("max_in_flight {in_flight}: {query} pages and {count} counts for 1,357 chunks");
        assert!(query + count <= most, "{query} + {count} requests");
        // each chunk counts exactly the records whose LastUpdatedTime falls in it
        let wrong: i64 = c
            .query_one(
                "SELECT count(*) FROM qbo.run_chunks k
                  WHERE k.run_id = $1
                    AND k.rows <> (SELECT count(*) FROM raw.qb_invoices r
                                    WHERE (r.payload->'MetaData'->>'LastUpdatedTime')::timestamptz >= k.window_start
                                      AND (r.payload->'MetaData'->>'LastUpdatedTime')::timestamptz < k.window_end)",
                &[&run_id],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            wrong, 0,
            "chunks whose rows are not the records in their window"
        );
        let (empty_pages, status): (i64, String) = c
            .query_one(
                "SELECT coalesce(sum(pages) FILTER (WHERE rows = 0), 0)::bigint, (SELECT status FROM qbo.runs WHERE run_id = $1)
                   FROM qbo.run_chunks WHERE run_id = $1",
                &[&run_id],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(status, "succeeded");
        assert!(
            empty_pages <= 2,
            "empty chunks carry no pages but the last empty answer: {empty_pages}"
        );
    }
}
