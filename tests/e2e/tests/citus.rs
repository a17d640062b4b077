//! End-to-end on Citus (issue 17): a coordinator and two workers on this machine; raw tables
//! created distributed by `realm_id` and co-located, or distributed afterwards by
//! `qbo.distribute_raw_tables()`; four companies backfilled at once, then synced after changes
//! and deletions, every raw table equal to the emulator's truth.
//!
//! Citus is not packaged in Debian 12, so these tests run only where it is installed:
//! `PG_QBO_CITUS_BIN` names the bin directory of a PostgreSQL 15 with Citus 13.2 and this build of
//! pg_qbo installed (`cargo pgrx install --pg-config $PG_QBO_CITUS_BIN/pg_config`). Unset, each
//! test prints `SKIPPED` and passes (`scripts/test.sh` then leaves them out, `--skip citus_`, and
//! says so); set to a PostgreSQL without Citus, each fails. Every test's name starts `citus_`.

use pg_qbo_e2e::*;
use std::path::Path;

const REALM3: &str = "9341452000000003";
const REALM4: &str = "9341452000000004";
const REALMS: [&str; 4] = [REALM1, REALM2, REALM3, REALM4];
const ENTITIES: [&str; 3] = ["Invoice", "Customer", "TimeActivity"];

/// The bin directory of the PostgreSQL with Citus, or None (the test is skipped, and says so).
fn citus_bin(test: &str) -> Option<String> {
    let Ok(bin) = std::env::var("PG_QBO_CITUS_BIN") else {
        println!("SKIPPED {test}: PG_QBO_CITUS_BIN is not set (the bin directory of a PostgreSQL 15 with Citus 13.2 and pg_qbo installed)");
        return None;
    };
    let out = std::process::Command::new(Path::new(&bin).join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .unwrap_or_else(|e| panic!("PG_QBO_CITUS_BIN={bin}: no pg_config there: {e}"));
    let lib = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        Path::new(&lib).join("citus.so").exists(),
        "PG_QBO_CITUS_BIN={bin}: Citus is not installed there (no {lib}/citus.so)"
    );
    assert!(
        Path::new(&lib).join("pg_qbo.so").exists(),
        "PG_QBO_CITUS_BIN={bin}: pg_qbo is not installed there (no {lib}/pg_qbo.so)"
    );
    Some(bin)
}

/// A coordinator and two workers.
struct Citus {
    coordinator: PrivateCluster,
    workers: Vec<PrivateCluster>,
}

fn start_citus(bin: &str, name: &str, first_port: u16) -> Citus {
    let conf = [
        "shared_preload_libraries = 'citus'",
        "max_connections = 300",
    ];
    let node = |i: u16| {
        PrivateCluster::start_with(
            &format!("{}-{name}-{i}", cluster_dir().display()),
            first_port + i,
            bin,
            &conf,
        )
    };
    let coordinator = node(0);
    let workers = vec![node(1), node(2)];
    for n in std::iter::once(&coordinator).chain(&workers) {
        n.connect("postgres")
            .batch_execute("CREATE EXTENSION citus")
            .unwrap();
    }
    let mut c = coordinator.connect("postgres");
    c.query_one(
        "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
        &[&i32::from(coordinator.port)],
    )
    .unwrap();
    for w in &workers {
        c.query_one(
            "SELECT citus_add_node('127.0.0.1', $1)",
            &[&i32::from(w.port)],
        )
        .unwrap();
    }
    let version: String = c.query_one("SELECT citus_version()", &[]).unwrap().get(0);
    println!(
        "{version}; workers on ports {} and {}",
        workers[0].port, workers[1].port
    );
    Citus {
        coordinator,
        workers,
    }
}

/// pg_qbo on the coordinator, pointed at the emulator, one connection per realm (`c1`..`c4`).
fn install_pg_qbo(c: &mut postgres::Client, emu: &Emulator, db: &str) {
    c.batch_execute(&format!(
        "CREATE EXTENSION pg_qbo;
         ALTER DATABASE postgres SET qbo.api_base_url = '{u}';
         ALTER DATABASE postgres SET qbo.token_url = '{u}/oauth2/v1/tokens/bearer';
         ALTER DATABASE postgres SET qbo.max_requests_per_second = 1000;
         ALTER DATABASE postgres SET qbo.sync_non_cdc_interval_ms = 0;",
        u = emu.url
    ))
    .unwrap();
    for (i, realm) in REALMS.iter().enumerate() {
        register(c, db, &format!("c{}", i + 1), realm, "emu-refresh-token-0");
    }
}

fn distributed(c: &mut postgres::Client) -> Vec<(String, i32)> {
    c.query(
        "SELECT logicalrelid::text, colocationid FROM pg_dist_partition
          WHERE logicalrelid::text LIKE 'raw.%' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Four companies synced at once (their first syncs: backfills of their whole history), then
/// again after changes and hard deletes in each: raw tables are created distributed by realm_id
/// and co-located, their shards on both workers, every table equal to the truth for every realm;
/// a re-backfill writes nothing.
#[test]
fn citus_four_companies_at_once_end_equal_to_truth() {
    let Some(bin) = citus_bin("citus_four_companies_at_once_end_equal_to_truth") else {
        return;
    };
    let emu = Emulator::start(&[
        "--seed", "81", "--realm", REALM1, "--realm", REALM2, "--realm", REALM3, "--realm", REALM4,
    ]);
    let citus = start_citus(&bin, "citus-a", port() + 20);
    let mut c = citus.coordinator.connect("postgres");
    install_pg_qbo(&mut c, &emu, "citus-a");
    let list: Vec<String> = ENTITIES.iter().map(|s| s.to_string()).collect();
    let sync_all = |label: &str| {
        let t0 = std::time::Instant::now();
        let handles: Vec<_> = (1..=4)
            .map(|i| {
                let list = list.clone();
                let port = citus.coordinator.port;
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(
                        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                        postgres::NoTls,
                    )
                    .unwrap();
                    c.query_one("CALL qbo.run_sync($1, $2)", &[&list, &format!("c{i}")])
                        .map(|r| r.get::<_, Option<i64>>(0))
                        .map_err(|e| {
                            e.as_db_error()
                                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                        })
                })
            })
            .collect();
        for h in handles {
            let run = h.join().unwrap().unwrap_or_else(|e| panic!("{label}: {e}"));
            assert!(run.is_some(), "{label}: every company has its own sync");
        }
        println!(
            "{label}: 4 companies in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
    };

    sync_all("first syncs");
    let dist = distributed(&mut c);
    println!("distributed: {dist:?}");
    assert_eq!(
        dist.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [
            "raw.qb_customers",
            "raw.qb_invoices",
            "raw.qb_time_activities"
        ]
    );
    assert!(
        dist.iter().all(|(_, g)| *g == dist[0].1),
        "co-located: {dist:?}"
    );
    let nodes: Vec<(String, i32, i64)> = c
        .query(
            "SELECT table_name::text, nodeport, count(*) FROM citus_shards
              WHERE table_name::text LIKE 'raw.%' GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    println!("shards: {nodes:?}");
    for (t, _) in &dist {
        let ports: Vec<i32> = nodes
            .iter()
            .filter(|(n, _, _)| n == t)
            .map(|(_, p, _)| *p)
            .collect();
        assert_eq!(
            ports,
            citus
                .workers
                .iter()
                .map(|w| i32::from(w.port))
                .collect::<Vec<_>>(),
            "{t}: shards on both workers"
        );
    }
    for realm in REALMS {
        for e in ENTITIES {
            assert_mirrors(&mut c, &emu, e, realm);
        }
    }

    // changes and hard deletes in every company, then the four syncs at once again
    for realm in REALMS {
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "mix", "count": 30, "realm": realm, "entities": ENTITIES}),
        );
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "delete", "count": 3, "realm": realm, "entity": "Invoice"}),
        );
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "delete", "count": 2, "realm": realm, "entity": "TimeActivity"}),
        );
    }
    sync_all("syncs after changes");
    let mut deleted = 0;
    for realm in REALMS {
        for e in ENTITIES {
            deleted += assert_mirrors(&mut c, &emu, e, realm);
        }
    }
    println!("rows marked deleted: {deleted}");
    assert!(
        deleted >= 4 * 5,
        "every company's deletes applied ({deleted})"
    );

    // runs belong on the coordinator: a worker (where Citus created pg_qbo too) refuses them
    let mut w = citus.workers[0].connect("postgres");
    for (f, call) in [
        (
            "qbo.run_backfill",
            "CALL qbo.run_backfill('Invoice', '2000-01-01Z', '2100-01-01Z', 36500, 1000, 75, 'c1')",
        ),
        ("qbo.run_sync", "CALL qbo.run_sync(NULL, 'c1')"),
    ] {
        let err = w.batch_execute(call).unwrap_err();
        assert_eq!(
            db_error(err),
            (
                "0A000".to_owned(),
                format!("{f}: pg_qbo runs on the Citus coordinator only: this node is a worker of a Citus cluster (connections, the run ledger and the per-company request limiter live on the coordinator); run it there")
            )
        );
    }

    // a re-backfill of a company writes nothing
    let run: i64 = c
        .query_one(
            "CALL qbo.run_backfill('Invoice', '2000-01-01Z', '2100-01-01Z', 36500, 1000, 75, 'c2')",
            &[],
        )
        .unwrap()
        .get(0);
    let (ins, upd, skip): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT sum(inserted)::bigint, sum(updated)::bigint, sum(skipped)::bigint FROM qbo.run_chunks WHERE run_id = $1",
                &[&run],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    println!("re-backfill of c2's invoices: {ins} inserted, {upd} updated, {skip} skipped");
    assert_eq!((ins, upd), (0, 0));
    assert_eq!(skip as usize, emu.truth(REALM2, "Invoice").len());
}

/// Raw tables made while `qbo.citus_distribute_raw_tables` was off stay local; one call of
/// `qbo.distribute_raw_tables()` distributes them with their rows (co-located), a second finds
/// them distributed already; the runs after it end equal to the truth. An operator may not call
/// it, and a superuser whose search_path starts with an operator's schema runs nothing planted
/// there.
#[test]
fn citus_local_raw_tables_are_distributed_by_one_call() {
    let Some(bin) = citus_bin("citus_local_raw_tables_are_distributed_by_one_call") else {
        return;
    };
    let emu = Emulator::start(&["--seed", "82", "--realm", REALM1, "--realm", REALM2]);
    let citus = start_citus(&bin, "citus-b", port() + 24);
    let mut c = citus.coordinator.connect("postgres");
    install_pg_qbo(&mut c, &emu, "citus-b");
    c.batch_execute("ALTER SYSTEM SET qbo.citus_distribute_raw_tables = off")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut c = citus.coordinator.connect("postgres");
    for conn in ["c1", "c2"] {
        c.query_one("CALL qbo.run_sync(ARRAY['Invoice', 'Item'], $1)", &[&conn])
            .unwrap();
    }
    assert_eq!(
        distributed(&mut c),
        Vec::<(String, i32)>::new(),
        "local while off"
    );

    // an operator may not distribute; nothing it plants runs when a superuser does
    c.batch_execute(
        "CREATE ROLE citus_op LOGIN;
         SELECT qbo.grant_operator('citus_op');
         GRANT CREATE ON DATABASE postgres TO citus_op;",
    )
    .unwrap();
    let mut op = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=citus_op dbname=postgres",
            citus.coordinator.port
        ),
        postgres::NoTls,
    )
    .unwrap();
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
    op.batch_execute(
        "CREATE SCHEMA evil;
         CREATE TABLE evil.marker (who name, what text);
         GRANT USAGE ON SCHEMA evil TO PUBLIC;
         GRANT INSERT, SELECT ON evil.marker TO PUBLIC;
         CREATE FUNCTION evil.create_distributed_table(t regclass, col text, colocate_with text)
           RETURNS void LANGUAGE sql AS $f$ INSERT INTO evil.marker VALUES (current_user, 'create_distributed_table') $f$;
         CREATE FUNCTION evil.truncate_local_data_after_distributing_table(t regclass)
           RETURNS void LANGUAGE sql AS $f$ INSERT INTO evil.marker VALUES (current_user, 'truncate_local_data') $f$;",
    )
    .unwrap();
    // positive control: with the operator's schema before pg_catalog, an unqualified call runs
    // the plant
    c.batch_execute("SET search_path = evil, pg_catalog, public")
        .unwrap();
    c.batch_execute(
        "SELECT create_distributed_table('evil.marker'::regclass, 'who', colocate_with => 'none')",
    )
    .unwrap();
    let fired: i64 = c
        .query_one("SELECT count(*) FROM evil.marker", &[])
        .unwrap()
        .get(0);
    assert_eq!(fired, 1, "positive control");
    c.batch_execute("DELETE FROM evil.marker").unwrap();
    let rows: Vec<(String, i64, String)> = c
        .query("SELECT * FROM qbo.distribute_raw_tables()", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    println!("distribute_raw_tables: {rows:?}");
    let invoices =
        emu.truth(REALM1, "Invoice").len() as i64 + emu.truth(REALM2, "Invoice").len() as i64;
    let items = emu.truth(REALM1, "Item").len() as i64 + emu.truth(REALM2, "Item").len() as i64;
    assert_eq!(
        rows,
        vec![
            (
                "raw.qb_invoices".to_owned(),
                invoices,
                "distributed".to_owned()
            ),
            ("raw.qb_items".to_owned(), items, "distributed".to_owned()),
        ]
    );
    let planted: i64 = c
        .query_one("SELECT count(*) FROM evil.marker", &[])
        .unwrap()
        .get(0);
    assert_eq!(planted, 0, "nothing planted ran");
    c.batch_execute("RESET search_path").unwrap();
    let dist = distributed(&mut c);
    assert_eq!(dist.len(), 2);
    assert_eq!(dist[0].1, dist[1].1, "co-located: {dist:?}");
    let again: Vec<String> = c
        .query("SELECT action FROM qbo.distribute_raw_tables()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(again, ["already distributed", "already distributed"]);
    for realm in [REALM1, REALM2] {
        for e in ["Invoice", "Item"] {
            assert_mirrors(&mut c, &emu, e, realm);
        }
    }
    // the runs after it write into the shards
    for realm in [REALM1, REALM2] {
        emu.post(
            "/__emulator/mutate",
            serde_json::json!({"op": "mix", "count": 20, "realm": realm, "entities": ["Invoice", "Item"]}),
        );
    }
    for conn in ["c1", "c2"] {
        c.query_one("CALL qbo.run_sync(ARRAY['Invoice', 'Item'], $1)", &[&conn])
            .unwrap();
    }
    for realm in [REALM1, REALM2] {
        for e in ["Invoice", "Item"] {
            assert_mirrors(&mut c, &emu, e, realm);
        }
    }
}

/// A worker stopped in the middle of a backfill whose company lives on it: the run fails with an
/// error naming the node, every page it committed is whole (raw rows = the ledger's pages); once
/// the node is back (and Citus has recovered its prepared transactions), a resume ends equal to
/// the truth.
#[test]
fn citus_a_worker_stopped_mid_run_then_resume_ends_equal_to_truth() {
    let Some(bin) = citus_bin("citus_a_worker_stopped_mid_run_then_resume_ends_equal_to_truth")
    else {
        return;
    };
    let emu = Emulator::start(&[
        "--seed",
        "83",
        "--realm",
        REALM1,
        "--realm",
        REALM2,
        "--records",
        "Invoice=2000",
    ]);
    let citus = start_citus(&bin, "citus-c", port() + 28);
    let mut c = citus.coordinator.connect("postgres");
    install_pg_qbo(&mut c, &emu, "citus-c");
    // the table exists, distributed, before the run: which worker holds each company is known
    c.batch_execute(
        "CALL qbo.run_backfill('Invoice', '1999-01-01Z', '1999-01-02Z', 1, 100, 75, 'c1')",
    )
    .unwrap();
    let port_of = |c: &mut postgres::Client, realm: &str| -> i32 {
        c.query_one(
            "SELECT s.nodeport FROM citus_shards s
              WHERE s.shardid = get_shard_id_for_distribution_column('raw.qb_invoices', $1::text)",
            &[&realm],
        )
        .unwrap()
        .get(0)
    };
    let (realm, conn) = [(REALM1, "c1"), (REALM2, "c2")]
        .into_iter()
        .find(|(r, _)| port_of(&mut c, r) == i32::from(citus.workers[1].port))
        .unwrap_or((REALM1, "c1"));
    let node = port_of(&mut c, realm);
    let worker = citus
        .workers
        .iter()
        .find(|w| i32::from(w.port) == node)
        .unwrap();
    println!("{realm} lives on the worker of port {node}");

    // 20 pages of 100; the 6th request held while the worker stops
    emu.hold(6);
    let port = citus.coordinator.port;
    let conn_name = conn.to_owned();
    let runner = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            postgres::NoTls,
        )
        .unwrap();
        c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
        c.query_one(
            "CALL qbo.run_backfill('Invoice', '2000-01-01Z', '2100-01-01Z', 36500, 100, 75, $1)",
            &[&conn_name],
        )
        .map(|r| r.get::<_, i64>(0))
        .map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        })
    });
    emu.wait_held();
    worker.stop();
    emu.release();
    let err = runner.join().unwrap().unwrap_err();
    println!("the run failed: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{node}")),
        "the error names the node: {err}"
    );
    let run_id: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    let status: String = c
        .query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");

    worker.up();
    // a new session: this one's cached connection to the worker died with it
    let mut c = citus.coordinator.connect("postgres");
    let recovered: i32 = c
        .query_one("SELECT recover_prepared_transactions()", &[])
        .unwrap()
        .get(0);
    println!("prepared transactions recovered: {recovered}");
    let (committed, rows): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT coalesce(sum(p.rows), 0)::bigint FROM qbo.run_pages p WHERE p.run_id = $1),
                        (SELECT count(*) FROM raw.qb_invoices WHERE realm_id = $2)",
                &[&run_id, &realm],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    println!("before the resume: {committed} rows in committed pages, {rows} raw rows");
    assert_eq!(committed, rows, "every committed page whole, nothing else");
    assert!(rows > 0 && rows < 2000, "stopped in the middle ({rows})");
    c.execute("CALL qbo.run_resume($1)", &[&run_id]).unwrap();
    assert_mirrors(&mut c, &emu, "Invoice", realm);
}

/// A backfill cancelled on the coordinator while its request is held, and a second backfill of
/// the same company and entity started meanwhile (with `qbo.max_in_flight = 1` they share the
/// realm's one request slot; the limiter, like pg_qbo's per-(realm, entity) write lock, lives on
/// the coordinator). The first ends `cancelled`, the second succeeds and raw equals the truth; a
/// resume of the first writes nothing (every record skipped).
#[test]
fn citus_a_cancel_and_a_concurrent_run_of_the_same_company() {
    let Some(bin) = citus_bin("citus_a_cancel_and_a_concurrent_run_of_the_same_company") else {
        return;
    };
    let emu = Emulator::start(&[
        "--seed",
        "84",
        "--realm",
        REALM1,
        "--records",
        "Invoice=1500",
    ]);
    let citus = start_citus(&bin, "citus-d", port() + 32);
    let mut c = citus.coordinator.connect("postgres");
    install_pg_qbo(&mut c, &emu, "citus-d");
    let port = citus.coordinator.port;
    let call = |range: (&'static str, &'static str)| {
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(
                &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                postgres::NoTls,
            )
            .unwrap();
            c.batch_execute("SET qbo.max_in_flight = 1").unwrap();
            c.query_one(
                "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 36500, 100, 75, 'c1')",
                &[&range.0, &range.1],
            )
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            })
        })
    };
    emu.hold(5);
    let first = call(("2000-01-01Z", "2100-01-01Z"));
    emu.wait_held();
    let run_id: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    // the same company and entity, all of it, while the first waits
    let second = call(("2000-01-01Z", "2100-01-01Z"));
    let t0 = std::time::Instant::now();
    while c
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get::<_, i64>(0)
        < 2
    {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid: i32 = c
        .query_one("SELECT pid FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0);
    c.query_one("SELECT pg_cancel_backend($1::int)", &[&pid])
        .unwrap();
    emu.release();
    let err = first.join().unwrap().unwrap_err();
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    let other = second.join().unwrap().expect("the concurrent run");
    let statuses: Vec<String> = c
        .query(
            "SELECT status FROM qbo.runs WHERE run_id IN ($1, $2) ORDER BY run_id",
            &[&run_id, &other],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["cancelled", "succeeded"]);
    assert_mirrors(&mut c, &emu, "Invoice", REALM1);
    c.execute("CALL qbo.run_resume($1)", &[&run_id]).unwrap();
    let (ins, upd): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT sum(inserted)::bigint, sum(updated)::bigint FROM qbo.run_pages WHERE run_id = $1
                   AND committed_at > (SELECT max(committed_at) FROM qbo.run_pages WHERE run_id = $2)",
                &[&run_id, &other],
            )
            .unwrap();
        (
            r.get::<_, Option<i64>>(0).unwrap_or(0),
            r.get::<_, Option<i64>>(1).unwrap_or(0),
        )
    };
    println!("the resume after the other run: {ins} inserted, {upd} updated");
    assert_eq!((ins, upd), (0, 0), "nothing written twice");
    assert_mirrors(&mut c, &emu, "Invoice", REALM1);
}
