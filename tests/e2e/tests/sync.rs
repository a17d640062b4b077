//! End-to-end: `CALL qbo.run_sync` keeps raw.* equal to QuickBooks (the emulator's truth) through
//! a first sync, rounds of seeded mutations read by Change Data Capture (deletes included), a
//! watermark older than CDC reaches, an answer at CDC's 1000-object cap, and an overlapping call;
//! with the requests each spends.

use pg_qbo_e2e::*;
use std::collections::BTreeMap;

/// Entities CDC serves (their deletes are read from tombstones).
const CDC_ENTITIES: [&str; 6] = [
    "Invoice",
    "Customer",
    "Bill",
    "Payment",
    "Item",
    "JournalEntry",
];
/// Entities CDC does not serve (read with one query, at every sync in these tests): a name list,
/// and a transaction small enough to be read whole, whose deletes that read finds.
const PAGER_ENTITIES: [&str; 2] = ["TaxCode", "TimeActivity"];

/// Makes every later sync of database `db` read the entities CDC does not serve (the default
/// reads them at most every 12 h).
fn every_sync_reads_non_cdc_entities(c: &mut postgres::Client, db: &str) {
    c.batch_execute(&format!(
        "ALTER DATABASE {db} SET qbo.sync_non_cdc_interval_ms = 0"
    ))
    .unwrap();
}

fn query_requests(emu: &Emulator, since: u64) -> usize {
    emu.requests(since)
        .iter()
        .filter(|r| r["endpoint"] == "query")
        .count()
}

fn cdc_requests(emu: &Emulator, since: u64) -> usize {
    emu.requests(since)
        .iter()
        .filter(|r| r["endpoint"] == "cdc")
        .count()
}

fn sync(c: &mut postgres::Client, entities: &[&str]) -> i64 {
    let list: Vec<String> = entities.iter().map(|s| s.to_string()).collect();
    c.query_one("CALL qbo.run_sync($1)", &[&list])
        .unwrap_or_else(|e| {
            panic!(
                "CALL qbo.run_sync: {:?}",
                e.as_db_error().map(|d| d.message().to_owned())
            )
        })
        .get(0)
}

fn total_requests(c: &mut postgres::Client, run_id: i64) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT r.requests_cdc + r.requests_query + r.requests_count + r.requests_token
                    + coalesce((SELECT sum(k.requests_query + k.requests_count + k.requests_token)
                                  FROM qbo.runs k WHERE k.parent_run_id = r.run_id), 0)::bigint,
                    (SELECT sum(c.requests) FROM qbo.run_chunks c WHERE c.run_id = r.run_id)::bigint
               FROM qbo.runs r WHERE r.run_id = $1",
            &[&run_id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn first_sync_then_rounds_of_mutations_end_equal_to_truth_with_one_cdc_request_each() {
    let emu = Emulator::start(&["--seed", "61"]);
    let (mut c, notices) = {
        let mut c0 = fresh_db("e2e_sync", &emu);
        every_sync_reads_non_cdc_entities(&mut c0, "e2e_sync");
        collecting("e2e_sync", "postgres")
    };
    let mut all: Vec<&str> = CDC_ENTITIES.to_vec();
    all.extend(PAGER_ENTITIES);

    // first sync: every entity's whole history, through a backfill each
    let seq = emu.last_seq();
    let run_id = sync(&mut c, &all);
    for e in &all {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
    let routes: Vec<(String, String, Option<i64>)> = c
        .query(
            "SELECT entity, route, child_run_id FROM qbo.run_chunks WHERE run_id = $1 ORDER BY chunk",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(routes.len(), all.len());
    assert!(
        routes
            .iter()
            .all(|(_, route, child)| route == "first_sync" && child.is_some()),
        "{routes:?}"
    );
    let (total, attributed) = total_requests(&mut c, run_id);
    let sent = emu.requests(seq).len() as i64;
    println!(
        "first sync of {} entities: {total} requests (emulator saw {sent})",
        all.len()
    );
    assert_eq!(
        total, attributed,
        "the entity rows add up to the sync's requests"
    );
    assert_eq!(cdc_requests(&emu, seq), 0);
    let marks: i64 = c
        .query_one(
            "SELECT count(*) FROM qbo.sync_state WHERE realm_id = $1 AND watermark > now() - interval '10 minutes'",
            &[&REALM1],
        )
        .unwrap()
        .get(0);
    assert_eq!(marks, all.len() as i64, "a watermark per entity");
    notices.take();

    // rounds of creates, updates, voids, inactivations and hard deletes over the CDC entities, and
    // updates of the pager entity; a sync after each
    let mut deleted_total = 0;
    for round in 0..3 {
        let changed = emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "mix", "count": 40, "realm": REALM1, "entities": CDC_ENTITIES}),
        );
        let ops: BTreeMap<String, usize> =
            changed["changed"]
                .as_array()
                .unwrap()
                .iter()
                .fold(BTreeMap::new(), |mut m, a| {
                    *m.entry(a["op"].as_str().unwrap().to_owned()).or_default() += 1;
                    m
                });
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "update", "count": 2, "realm": REALM1, "entity": "TaxCode"}),
        );
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "mix", "count": 6, "realm": REALM1, "entities": ["TimeActivity"]}),
        );
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "delete", "count": 2, "realm": REALM1, "entity": "TimeActivity"}),
        );
        let seq = emu.last_seq();
        let run_id = sync(&mut c, &all);
        deleted_total = 0;
        for e in &all {
            deleted_total += assert_mirrors(&mut c, &emu, e, REALM1);
        }
        let (total, attributed) = total_requests(&mut c, run_id);
        let cdc = cdc_requests(&emu, seq);
        let sums: (i64, i64, i64, i64, i64, i64) = {
            let r = c
                .query_one(
                    "SELECT sum(rows)::bigint, sum(inserted)::bigint, sum(updated)::bigint, sum(deleted)::bigint,
                            sum(skipped)::bigint, count(*) FILTER (WHERE route = 'cdc')
                       FROM qbo.run_chunks WHERE run_id = $1",
                    &[&run_id],
                )
                .unwrap();
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
        };
        println!(
            "round {round}: mutations {ops:?}; sync {run_id}: {cdc} CDC request(s), {total} requests in all; changed/inserted/updated/deleted/skipped/cdc entities {sums:?}"
        );
        assert_eq!(cdc, 1, "every CDC entity in one request");
        assert_eq!(total, attributed);
        assert_eq!(sums.5, CDC_ENTITIES.len() as i64);
        assert_eq!(
            sums.0,
            sums.1 + sums.2 + sums.3 + sums.4,
            "changed = the sum of its parts"
        );
        assert!(sums.3 > 0 || !ops.contains_key("delete"), "deletes applied");
        let said = notices.take();
        assert!(
            said.iter()
                .any(|n| n.contains("Invoice (cdc)") && n.contains(&format!("sync run {run_id}"))),
            "{said:?}"
        );
        // the entities CDC does not serve: one query each (TimeActivity's whole, its deletes
        // among the Ids it lacks), and one confirmation of those candidates
        let queries = query_requests(&emu, seq);
        let read: Vec<(String, String, i64, i64)> = c
            .query(
                "SELECT entity, route, requests, deleted FROM qbo.run_chunks
                  WHERE run_id = $1 AND entity IN ('TaxCode', 'TimeActivity') ORDER BY entity",
                &[&run_id],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        println!("round {round}: {queries} query request(s); {read:?}");
        assert_eq!(read[0].0, "TaxCode");
        assert_eq!((read[0].1.as_str(), read[0].2), ("query", 1));
        assert_eq!(
            (read[1].1.as_str(), read[1].2),
            ("query", 2),
            "a whole read and one confirmation"
        );
        assert!(
            read[1].3 >= 2,
            "the whole read tombstoned TimeActivity's deletes ({})",
            read[1].3
        );
        assert_eq!(queries, 3);
    }
    assert!(deleted_total > 0, "the rounds hard-deleted records");

    // a sync with nothing new: one CDC request, everything skipped, nothing written
    let seq = emu.last_seq();
    let run_id = sync(&mut c, &CDC_ENTITIES);
    let (ins, upd, del): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT sum(inserted)::bigint, sum(updated)::bigint, sum(deleted)::bigint FROM qbo.run_chunks WHERE run_id = $1",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((ins, upd, del), (0, 0, 0), "changes seen again are skipped");
    assert_eq!(cdc_requests(&emu, seq), 1);
    assert_eq!(
        emu.requests(seq).len(),
        1,
        "a steady-state sync is one request"
    );
}

#[test]
fn an_old_watermark_a_capped_answer_and_an_overlapping_call() {
    let emu = Emulator::start(&["--seed", "62", "--records", "Invoice=1500"]);
    let _ = fresh_db("e2e_sync2", &emu);
    let (mut c, notices) = collecting("e2e_sync2", "postgres");
    let ents = ["Invoice", "Customer", "Bill"];
    sync(&mut c, &ents);

    // a watermark older than CDC reaches: the pager reads from it
    c.execute(
        "UPDATE qbo.sync_state SET watermark = now() - interval '40 days' WHERE entity = 'Customer'",
        &[],
    )
    .unwrap();
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "count": 5, "realm": REALM1, "entity": "Customer"}),
    );
    notices.take();
    let run_id = sync(&mut c, &ents);
    let route: String = c
        .query_one(
            "SELECT route FROM qbo.run_chunks WHERE run_id = $1 AND entity = 'Customer'",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(route, "pager");
    assert!(notices
        .take()
        .iter()
        .any(|n| n.contains("the watermark of Customer")
            && n.contains("older than Change Data Capture reaches")),);
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }

    // QuickBooks' clock 31 days ahead of this machine's: CDC refuses the watermarks this machine
    // still thinks reachable, and the pager reads the entities instead
    emu.post(
        "/__emulator/clock",
        serde_json::json!({"offset_seconds": 31 * 86400}),
    );
    notices.take();
    let seq = emu.last_seq();
    let run_id = sync(&mut c, &ents);
    let said = notices.take();
    assert!(
        said.iter().any(
            |n| n.contains("QuickBooks refused a Change Data Capture request for")
                && n.contains("as reaching further back than it serves")
        ),
        "{said:?}"
    );
    let routes: Vec<String> = c
        .query(
            "SELECT route FROM qbo.run_chunks WHERE run_id = $1 ORDER BY chunk",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(routes, vec!["pager"; ents.len()]);
    let (total, attributed) = total_requests(&mut c, run_id);
    println!(
        "clock 31 days ahead: {} CDC request refused, {total} requests in all",
        cdc_requests(&emu, seq)
    );
    assert_eq!(total, attributed);
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
    emu.post(
        "/__emulator/clock",
        serde_json::json!({"offset_seconds": 0}),
    );

    // more changes than one CDC answer holds: halves, then the pager for the entity that fills
    // an answer alone
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "count": 1100, "realm": REALM1, "entity": "Invoice"}),
    );
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "count": 3, "realm": REALM1, "entity": "Bill"}),
    );
    let seq = emu.last_seq();
    let run_id = sync(&mut c, &ents);
    let cdc = cdc_requests(&emu, seq);
    let (total, attributed) = total_requests(&mut c, run_id);
    println!("capped: {cdc} CDC requests, {total} requests in all");
    assert!(cdc >= 2, "the capped answer's entities were asked again");
    assert_eq!(total, attributed);
    let route: String = c
        .query_one(
            "SELECT route FROM qbo.run_chunks WHERE run_id = $1 AND entity = 'Invoice'",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(route, "pager", "Invoice filled an answer alone");
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }

    // a second sync of the company while one runs: a NOTICE, NULL, nothing done
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "count": 1, "realm": REALM1, "entity": "Bill"}),
    );
    emu.hold(1);
    let first = std::thread::spawn(|| {
        let mut c = connect("e2e_sync2");
        let run_id: i64 = c
            .query_one("CALL qbo.run_sync(ARRAY['Invoice','Customer','Bill'])", &[])
            .unwrap()
            .get(0);
        run_id
    });
    emu.wait_held();
    let (mut other, said) = collecting("e2e_sync2", "postgres");
    let none: Option<i64> = other
        .query_one("CALL qbo.run_sync(ARRAY['Bill'])", &[])
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    let said = said.take();
    assert!(
        said.iter().any(|n| n
            .contains("qbo.run_sync: a sync of realm 9341452000000001 is already running (run ")),
        "{said:?}"
    );
    emu.release();
    let run_id = first.join().unwrap();
    let status: String = c
        .query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(status, "succeeded");
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
}

#[test]
fn bad_arguments_are_refused_with_what_is_allowed() {
    let emu = Emulator::start(&["--seed", "63"]);
    let mut c = fresh_db("e2e_sync3", &emu);
    let err = |c: &mut postgres::Client, sql: &str| -> String {
        db_error(c.batch_execute(sql).unwrap_err()).1
    };
    let e = err(&mut c, "CALL qbo.run_sync(ARRAY['Invoices'])");
    assert!(
        e.starts_with("qbo.run_sync: unknown entity \"Invoices\"") || e.contains("\"Invoices\""),
        "{e}"
    );
    assert!(e.contains("Invoice"), "{e}");
    let e = err(&mut c, "CALL qbo.run_sync(ARRAY[]::text[])");
    assert_eq!(e, "qbo.run_sync: entities must not be an empty array: name at least one entity (see qbo.entities), or pass NULL for every entity");
    let e = err(&mut c, "CALL qbo.run_sync(ARRAY['Invoice', NULL])");
    assert_eq!(
        e,
        "qbo.run_sync: entities must not hold a NULL (pass NULL itself for every entity)"
    );
    let e = err(&mut c, "CALL qbo.run_sync(connection => 'nope')");
    assert!(e.contains("nope"), "{e}");
    let e = err(&mut c, "BEGIN; CALL qbo.run_sync(); COMMIT;");
    assert!(e.starts_with("qbo.run_sync commits page by page, so it must be run with CALL outside an explicit transaction block"), "{e}");
    c.batch_execute("ROLLBACK").ok();
    let n: i64 = c
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing written");
}

#[test]
fn every_connection_in_one_call_and_the_worker_entry_points() {
    let emu = Emulator::start(&["--seed", "64"]);
    let mut c0 = fresh_db("e2e_sync4", &emu);
    register(
        &mut c0,
        "e2e_sync4",
        "second",
        REALM2,
        "emu-refresh-token-0",
    );
    every_sync_reads_non_cdc_entities(&mut c0, "e2e_sync4");
    let (mut c, notices) = collecting("e2e_sync4", "postgres");
    let ents = ["Invoice", "Customer", "TimeActivity"];
    let list: Vec<String> = ents.iter().map(|s| s.to_string()).collect();

    // both companies (connections default and second), first syncs, in one call
    c.batch_execute("CALL qbo.run_sync_all(ARRAY['Invoice', 'Customer', 'TimeActivity'])")
        .unwrap();
    for realm in [REALM1, REALM2] {
        for e in ents {
            assert_mirrors(&mut c, &emu, e, realm);
        }
    }
    let syncs: i64 = c
        .query_one(
            "SELECT count(*) FROM qbo.runs WHERE kind = 'sync' AND status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(syncs, 2, "one sync per connection");
    notices.take();

    // changes in both companies; qbo.sync (a worker of this session) for the first
    for realm in [REALM1, REALM2] {
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "mix", "count": 15, "realm": realm, "entities": ents}),
        );
    }
    let rows = c
        .query("SELECT * FROM qbo.sync($1)", &[&list])
        .expect("qbo.sync");
    assert_eq!(rows.len(), ents.len());
    let said = notices.take();
    for r in &rows {
        let (entity, route): (String, Option<String>) = (r.get("entity"), r.get("route"));
        let (changed, ins, upd, del, skip): (i64, i64, i64, i64, i64) = (
            r.get("changed"),
            r.get("inserted"),
            r.get("updated"),
            r.get("deleted"),
            r.get("skipped"),
        );
        assert_eq!(changed, ins + upd + del + skip, "{entity}");
        let expected = if entity == "TimeActivity" {
            "query"
        } else {
            "cdc"
        };
        assert_eq!(route.as_deref(), Some(expected), "{entity}");
        assert!(
            said.iter()
                .any(|n| n.contains(&format!(": {entity} ({expected})"))),
            "{entity} relayed: {said:?}"
        );
    }
    assert!(
        said.iter()
            .any(|n| n.contains("succeeded: 3 entities synced with")),
        "{said:?}"
    );
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }

    // qbo.start_sync (a worker tied to no session) for the second
    let run_id: i64 = c
        .query_one("SELECT qbo.start_sync($1, 'second')", &[&list])
        .unwrap()
        .get(0);
    let mut status = String::new();
    for _ in 0..600 {
        status = c
            .query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
            .unwrap()
            .get(0);
        if status != "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, "succeeded");
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM2);
    }

    // a role that may use only the first connection syncs only that one
    let mut admin = connect("e2e_sync4");
    fresh_role(&mut admin, "sync_op");
    admin
        .batch_execute(
            "SELECT qbo.grant_operator('sync_op'); SELECT qbo.grant_connection('default', 'sync_op');",
        )
        .unwrap();
    let before: i64 = c
        .query_one("SELECT count(*) FROM qbo.runs WHERE kind = 'sync'", &[])
        .unwrap()
        .get(0);
    let mut op = as_role("e2e_sync4", "sync_op");
    op.batch_execute("CALL qbo.run_sync_all(ARRAY['Invoice'])")
        .unwrap();
    let realms: Vec<String> = c
        .query(
            "SELECT realm_id FROM qbo.runs WHERE kind = 'sync' ORDER BY run_id OFFSET $1",
            &[&before],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(realms, vec![REALM1.to_owned()]);
    let e = db_error(
        op.batch_execute("CALL qbo.run_sync(ARRAY['Invoice'], 'second')")
            .unwrap_err(),
    )
    .1;
    assert!(
        e.contains("may not run backfills of connection \"second\""),
        "{e}"
    );
}

/// Sums of a sync's entity rows: (inserted, updated, deleted).
fn written(c: &mut postgres::Client, run_id: i64, entities: &[&str]) -> (i64, i64, i64) {
    let list: Vec<String> = entities.iter().map(|s| s.to_string()).collect();
    let r = c
        .query_one(
            "SELECT coalesce(sum(inserted), 0)::bigint, coalesce(sum(updated), 0)::bigint, coalesce(sum(deleted), 0)::bigint
               FROM qbo.run_chunks WHERE run_id = $1 AND entity = ANY ($2)",
            &[&run_id, &list],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn a_crash_and_a_cancel_in_the_middle_of_a_sync_then_the_next_sync_ends_equal_to_truth() {
    let emu = Emulator::start(&["--seed", "65"]);
    let cluster = PrivateCluster::start(
        &format!("{}-sync-crash", cluster_dir().display()),
        port() + 8,
    );
    let mut c = cluster.connect("postgres");
    c.batch_execute(&format!(
        "ALTER DATABASE postgres SET qbo.api_base_url = '{u}'; ALTER DATABASE postgres SET qbo.token_url = '{u}/oauth2/v1/tokens/bearer'; ALTER DATABASE postgres SET qbo.sync_non_cdc_interval_ms = 0",
        u = emu.url
    ))
    .unwrap();
    let mut c = cluster.connect("postgres");
    c.batch_execute("CREATE EXTENSION pg_qbo").unwrap();
    register(
        &mut c,
        "sync-crash",
        "default",
        REALM1,
        "emu-refresh-token-0",
    );
    let ents = ["Invoice", "Bill", "TimeActivity"];
    let call = "CALL qbo.run_sync(ARRAY['Invoice', 'Bill', 'TimeActivity'])";
    c.batch_execute(call).unwrap();
    let marks_before: Vec<(String, std::time::SystemTime)> = c
        .query(
            "SELECT entity, watermark FROM qbo.sync_state ORDER BY entity",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // changes; the server dies while the sync's CDC call is held at the emulator's barrier
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "mix", "count": 30, "realm": REALM1, "entities": ents}),
    );
    emu.hold(1);
    let runner = std::thread::spawn(move || c.batch_execute(call).map_err(|e| e.to_string()));
    let held = emu.wait_held();
    println!("held: {held}");
    cluster.crash();
    assert!(
        runner.join().unwrap().is_err(),
        "the CALL died with the server"
    );
    emu.release();
    cluster.up();
    let mut c = cluster.connect("postgres");
    let marks_after: Vec<(String, std::time::SystemTime)> = c
        .query(
            "SELECT entity, watermark FROM qbo.sync_state ORDER BY entity",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        marks_before, marks_after,
        "the crashed sync moved no watermark"
    );
    c.batch_execute(call).expect("the sync after the crash");
    let crashed: String = c
        .query_one(
            "SELECT status FROM qbo.runs WHERE kind = 'sync' ORDER BY run_id OFFSET 1 LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(crashed, "interrupted");
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }

    // changes again, and Bill's watermark older than CDC reaches; a cancel while the pager reads
    // Bill (its first request held), after the CDC answer and TimeActivity's query were applied
    // and committed
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "mix", "count": 30, "realm": REALM1, "entities": ents}),
    );
    c.execute(
        "UPDATE qbo.sync_state SET watermark = now() - interval '40 days' WHERE entity = 'Bill'",
        &[],
    )
    .unwrap();
    emu.hold_matching(1, "FROM Bill");
    let mut c2 = cluster.connect("postgres");
    let runner = std::thread::spawn(move || {
        c2.batch_execute(call).map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        })
    });
    emu.wait_held();
    let run_id: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs WHERE kind = 'sync'", &[])
        .unwrap()
        .get(0);
    let pid: i32 = c
        .query_one("SELECT pid FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0);
    c.query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    let err = runner.join().unwrap().unwrap_err();
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    emu.release();
    let statuses: Vec<(String, String)> = c
        .query(
            "SELECT kind, status FROM qbo.runs WHERE run_id = $1 OR parent_run_id = $1 ORDER BY run_id",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("sync".to_owned(), "cancelled".to_owned()),
            ("backfill".to_owned(), "cancelled".to_owned())
        ]
    );
    let (ins, upd, del) = written(&mut c, run_id, &["Invoice", "TimeActivity"]);
    assert!(
        ins + upd + del > 0,
        "the CDC answer and the query were applied before the cancel"
    );
    let cancelled_child: i64 = c
        .query_one(
            "SELECT run_id FROM qbo.runs WHERE parent_run_id = $1",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    // the next sync applies nothing twice: what the cancelled one committed is skipped
    c.batch_execute(call).expect("the sync after the cancel");
    let next: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs WHERE kind = 'sync'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        written(&mut c, next, &["Invoice", "TimeActivity"]),
        (0, 0, 0)
    );
    let resumed: i64 = c
        .query_one(
            "SELECT child_run_id FROM qbo.run_chunks WHERE run_id = $1 AND entity = 'Bill'",
            &[&next],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        resumed, cancelled_child,
        "the cancelled backfill was resumed"
    );
    let (status, parent): (String, i64) = {
        let r = c
            .query_one(
                "SELECT status, parent_run_id FROM qbo.runs WHERE run_id = $1",
                &[&resumed],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (status.as_str(), parent),
        ("succeeded", next),
        "it belongs to the sync that finished it"
    );
    for e in ents {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
}

/// TimeActivity too large to be read whole (1200 records): the sync reads its changes since
/// the watermark with one query, then hunts its deletes. Between the two (the hunt held at the
/// emulator's barrier on its first count), two records are updated and two deleted: the hunt
/// confirms the four candidates, upserts the two that moved and tombstones the two gone; the
/// sync ends equal to the truth.
#[test]
fn records_updated_and_deleted_between_the_query_and_the_hunt_end_equal_to_truth() {
    let emu = Emulator::start(&["--seed", "66", "--records", "TimeActivity=1200"]);
    let mut c0 = fresh_db("e2e_sync5", &emu);
    every_sync_reads_non_cdc_entities(&mut c0, "e2e_sync5");
    let (mut c, notices) = collecting("e2e_sync5", "postgres");
    sync(&mut c, &["TimeActivity"]);
    let ids: Vec<String> = emu
        .truth_rows(REALM1, "TimeActivity")
        .iter()
        .filter(|r| !r["deleted"].as_bool().unwrap_or(false))
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .take(4)
        .collect();
    // the hunt's first count is the only request reading from 2000-01-01
    emu.hold_matching(1, "2000-01-01");
    let runner = std::thread::spawn(move || {
        let mut c = connect("e2e_sync5");
        c.query_one("CALL qbo.run_sync(ARRAY['TimeActivity'])", &[])
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string())
    });
    let held = emu.wait_held();
    println!("held: {held}");
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "realm": REALM1, "entity": "TimeActivity", "ids": &ids[..2]}),
    );
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "delete", "realm": REALM1, "entity": "TimeActivity", "ids": &ids[2..]}),
    );
    emu.release();
    let run_id = runner.join().unwrap().expect("the sync");
    let _ = notices.take();
    let route: String = c
        .query_one(
            "SELECT route FROM qbo.run_chunks WHERE run_id = $1 AND entity = 'TimeActivity'",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(route, "query");
    let (deleted, updated): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT deleted, updated FROM qbo.run_chunks WHERE run_id = $1 AND entity = 'TimeActivity'",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (deleted, updated),
        (2, 2),
        "two tombstoned, two upserted as they are now"
    );
    assert_mirrors(&mut c, &emu, "TimeActivity", REALM1);

    // more changes than one query's page holds: the page is applied, the pager reads the rest
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "count": 1100, "realm": REALM1, "entity": "TimeActivity"}),
    );
    notices.take();
    let run_id = sync(&mut c, &["TimeActivity"]);
    let said = notices.take();
    assert!(
        said.iter().any(|n| n.contains(
            "TimeActivity: a query of the TimeActivity records changed since its watermark filled its page (1000 records): the rest is read through the pager"
        )),
        "{said:?}"
    );
    let (route, child, updated): (String, Option<i64>, i64) = {
        let r = c
            .query_one(
                "SELECT route, child_run_id, updated FROM qbo.run_chunks WHERE run_id = $1 AND entity = 'TimeActivity'",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    println!("1100 updates: route {route}, child {child:?}, updated {updated}");
    assert_eq!((route.as_str(), updated), ("pager", 1100));
    assert!(child.is_some());
    let (total, attributed) = total_requests(&mut c, run_id);
    assert_eq!(total, attributed);
    assert_mirrors(&mut c, &emu, "TimeActivity", REALM1);
}

/// `CALL qbo.run_sync()` with no arguments: every entity pg_qbo knows, all of which the emulator
/// serves; after a mix of changes over all of them, one more sync ends equal to the truth with
/// one CDC request for every entity CDC serves.
#[test]
fn every_entity_by_default() {
    let emu = Emulator::start(&["--seed", "67"]);
    let mut c0 = fresh_db("e2e_sync6", &emu);
    every_sync_reads_non_cdc_entities(&mut c0, "e2e_sync6");
    let (mut c, _notices) = collecting("e2e_sync6", "postgres");
    let all: Vec<String> = c
        .query("SELECT entity FROM qbo.entities ORDER BY entity", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    c.batch_execute("CALL qbo.run_sync()").unwrap();
    for e in &all {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "mix", "count": 120, "realm": REALM1}),
    );
    let seq = emu.last_seq();
    let run_id: i64 = c.query_one("CALL qbo.run_sync()", &[]).unwrap().get(0);
    let mut deleted = 0;
    for e in &all {
        deleted += assert_mirrors(&mut c, &emu, e, REALM1);
    }
    let (total, attributed) = total_requests(&mut c, run_id);
    let routes: BTreeMap<String, i64> = c
        .query(
            "SELECT route, count(*) FROM qbo.run_chunks WHERE run_id = $1 GROUP BY 1",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!(
        "{} entities: routes {routes:?}, {} CDC request(s), {total} requests in all, {deleted} rows marked deleted",
        all.len(),
        cdc_requests(&emu, seq)
    );
    assert_eq!(cdc_requests(&emu, seq), 1);
    assert_eq!(total, attributed);
    assert!(deleted > 0);
    assert_eq!(
        routes.get("query"),
        Some(&3),
        "TaxCode, TaxRate, TimeActivity"
    );
}

/// `CALL qbo.run_sync_all()` with one connection whose refresh token Intuit rejects: the other
/// company is synced all the same, and the call ends with an ERROR naming the failed sync.
#[test]
fn a_failing_connection_does_not_stop_the_others_in_run_sync_all() {
    let emu = Emulator::start(&["--seed", "68"]);
    let mut c0 = fresh_db("e2e_sync7", &emu);
    register(
        &mut c0,
        "e2e_sync7",
        "broken",
        REALM2,
        "a-refresh-token-intuit-never-issued",
    );
    let (mut c, notices) = collecting("e2e_sync7", "postgres");
    let err = c
        .batch_execute("CALL qbo.run_sync_all(ARRAY['Invoice', 'Customer'])")
        .unwrap_err();
    let (state, msg) = db_error(err);
    println!("{state}: {msg}");
    assert!(
        msg.starts_with(
            "qbo.run_sync_all: 1 sync(s) failed, the others succeeded: \"broken\" (sync run "
        ),
        "{msg}"
    );
    assert!(
        msg.contains("refresh token was rejected by Intuit"),
        "{msg}"
    );
    assert!(
        !msg.contains("a-refresh-token-intuit-never-issued"),
        "no secret in the error"
    );
    let said = notices.take();
    assert!(
        said.iter()
            .any(|n| n.starts_with("qbo.run_sync_all: the sync of connection \"broken\" failed: ")),
        "{said:?}"
    );
    for e in ["Invoice", "Customer"] {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
    let statuses: Vec<(String, String)> = c
        .query(
            "SELECT connection, status FROM qbo.runs WHERE kind = 'sync' ORDER BY connection",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("broken".to_owned(), "failed".to_owned()),
            ("default".to_owned(), "succeeded".to_owned())
        ]
    );
}

/// By default an entity CDC does not serve is read at most every 12 hours: a sync sooner leaves
/// it as it is (route `not_due`, no request, a NOTICE saying when it is next read); the first
/// sync once its watermark is 12 h old on QuickBooks' clock reads it with one query (and one
/// confirmation of the deletes it reveals). `SET qbo.sync_non_cdc_interval_ms = 0` reads it at
/// every sync; a negative value is refused.
#[test]
fn an_entity_cdc_does_not_serve_is_read_at_most_once_per_interval() {
    let emu = Emulator::start(&["--seed", "69"]);
    let _ = fresh_db("e2e_sync8", &emu);
    let (mut c, notices) = collecting("e2e_sync8", "postgres");
    let ents = ["Invoice", "TimeActivity"];
    sync(&mut c, &ents);
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "update", "count": 3, "realm": REALM1, "entity": "TimeActivity"}),
    );
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"op": "delete", "count": 2, "realm": REALM1, "entity": "TimeActivity"}),
    );
    let row = |c: &mut postgres::Client, run_id: i64| -> (String, i64, i64, i64, i64) {
        let r = c
            .query_one(
                "SELECT route, requests, rows, updated, deleted FROM qbo.run_chunks
                  WHERE run_id = $1 AND entity = 'TimeActivity'",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    };
    let live = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM raw.qb_time_activities WHERE deleted_at_utc IS NULL",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let truth_live = emu
        .truth_rows(REALM1, "TimeActivity")
        .iter()
        .filter(|r| !r["deleted"].as_bool().unwrap_or(false))
        .count() as i64;

    // at once, and 11 hours later on QuickBooks' clock: not due
    for hours in [0, 11] {
        emu.post(
            "/__emulator/clock",
            serde_json::json!({"offset_seconds": hours * 3600}),
        );
        notices.take();
        let seq = emu.last_seq();
        let run_id = sync(&mut c, &ents);
        let said = notices.take();
        println!("{hours} h: {:?}", row(&mut c, run_id));
        assert_eq!(row(&mut c, run_id), ("not_due".to_owned(), 0, 0, 0, 0));
        assert_eq!(query_requests(&emu, seq), 0, "{hours} h: no query");
        assert_eq!(cdc_requests(&emu, seq), 1);
        assert!(
            said.iter().any(|n| n.contains(&format!(
                "sync run {run_id}: TimeActivity: not due: Change Data Capture does not serve it, so it is read at most every 12 h (qbo.sync_non_cdc_interval_ms)"
            ))),
            "{said:?}"
        );
        assert_eq!(live(&mut c), truth_live + 2, "the deletes are not seen yet");
    }

    // 12 hours later: one query of every TimeActivity, one confirmation of the two it lacks
    emu.post(
        "/__emulator/clock",
        serde_json::json!({"offset_seconds": 12 * 3600}),
    );
    let seq = emu.last_seq();
    let run_id = sync(&mut c, &ents);
    println!("12 h: {:?}", row(&mut c, run_id));
    let (route, requests, _, updated, deleted) = row(&mut c, run_id);
    assert_eq!(
        (route.as_str(), requests, updated, deleted),
        ("query", 2, 3, 2)
    );
    assert_eq!(query_requests(&emu, seq), 2);
    assert_mirrors(&mut c, &emu, "TimeActivity", REALM1);
    let (total, attributed) = total_requests(&mut c, run_id);
    assert_eq!(total, attributed);

    // interval 0: read at every sync (one query, nothing new)
    c.batch_execute("SET qbo.sync_non_cdc_interval_ms = 0")
        .unwrap();
    let seq = emu.last_seq();
    let run_id = sync(&mut c, &ents);
    let (route, requests, rows, updated, deleted) = row(&mut c, run_id);
    assert_eq!(
        (
            route.as_str(),
            requests,
            rows - truth_live,
            updated,
            deleted
        ),
        ("query", 1, 0, 0, 0),
        "every live record read once, all skipped"
    );
    assert_eq!(query_requests(&emu, seq), 1);
    let err = c
        .batch_execute("SET qbo.sync_non_cdc_interval_ms = -1")
        .unwrap_err();
    assert_eq!(
        db_error(err).1,
        "-1 ms is outside the valid range for parameter \"qbo.sync_non_cdc_interval_ms\" (0 .. 2147483647)"
    );
}
