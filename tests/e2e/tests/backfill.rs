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
