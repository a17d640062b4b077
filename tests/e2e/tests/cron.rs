//! End-to-end with pg_cron 1.4 loaded in the cluster (cron.database_name = 'e2e_cron'): one-time
//! backfills scheduled for the next minute run once and their jobs are gone, on success and on
//! failure.

use pg_qbo_e2e::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

/// pg_cron runs jobs of one database (cron.database_name = 'e2e_cron'): its tests take turns.
static CRON_DB: Mutex<()> = Mutex::new(());

/// e2e_cron afresh, with pg_cron installed and its scheduler running.
fn cron_db(emu: &Emulator) -> postgres::Client {
    let mut c = reset_db("e2e_cron", emu);
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        .unwrap();
    // pg_cron's scheduler (re)starts once its database and extension exist: wait for it, as a
    // production server would already have it running
    let t0 = Instant::now();
    while c
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher' AND datname = 'e2e_cron'", &[])
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "pg_cron's scheduler did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

#[test]
fn one_time_backfills_run_once_and_unschedule_themselves_on_success_and_failure() {
    let _turn = CRON_DB.lock().unwrap_or_else(|e| e.into_inner());
    let emu = Emulator::start(&["--seed", "51"]);
    let mut c = cron_db(&emu);
    register(
        &mut c,
        "e2e_cron",
        "broken",
        REALM2,
        "a-refresh-token-intuit-never-issued",
    );

    let ok = c
        .query_one("SELECT job_id, run_id, runs_at::text FROM qbo.schedule_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 100)", &[&FROM, &TO])
        .unwrap();
    let (ok_job, ok_run, at): (i64, i64, String) = (ok.get(0), ok.get(1), ok.get(2));
    let bad = c
        .query_one("SELECT job_id, run_id FROM qbo.schedule_backfill('Item', $1::text::timestamptz, $2::text::timestamptz, connection => 'broken')", &[&FROM, &TO])
        .unwrap();
    let (bad_job, bad_run): (i64, i64) = (bad.get(0), bad.get(1));
    println!("scheduled jobs {ok_job} (run {ok_run}) and {bad_job} (run {bad_run}) for {at}");
    let status = |c: &mut postgres::Client, run: i64| -> String {
        c.query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run])
            .unwrap()
            .get(0)
    };
    assert_eq!(status(&mut c, ok_run), "scheduled");
    let jobs: i64 = c
        .query_one(
            "SELECT count(*) FROM cron.job WHERE jobid IN ($1, $2)",
            &[&ok_job, &bad_job],
        )
        .unwrap()
        .get(0);
    assert_eq!(jobs, 2);

    let t0 = Instant::now();
    loop {
        let (a, b) = (status(&mut c, ok_run), status(&mut c, bad_run));
        if ["succeeded", "failed"].contains(&a.as_str())
            && ["succeeded", "failed"].contains(&b.as_str())
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(150),
            "scheduled runs did not finish: {a}, {b}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "both scheduled runs finished {:?} after scheduling",
        t0.elapsed()
    );
    assert_eq!(status(&mut c, ok_run), "succeeded");
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    assert_eq!(status(&mut c, bad_run), "failed");
    let err: String = c
        .query_one("SELECT error FROM qbo.runs WHERE run_id = $1", &[&bad_run])
        .unwrap()
        .get(0);
    assert!(err.contains("invalid_grant"), "{err}");
    // both jobs are gone once their sessions ended; pg_cron recorded both outcomes
    let t1 = Instant::now();
    loop {
        let jobs: Vec<(i64, String)> = c
            .query(
                "SELECT jobid, schedule FROM cron.job WHERE jobid IN ($1, $2)",
                &[&ok_job, &bad_job],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if jobs.is_empty() {
            break;
        }
        assert!(
            jobs.iter().all(|j| j.1 == "0 0 30 2 *"),
            "a started job can never fire again: {jobs:?}"
        );
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the one-time jobs were not removed: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t2 = Instant::now();
    let details = loop {
        let rows = c
            .query("SELECT jobid, status, coalesce(return_message, '') FROM cron.job_run_details WHERE jobid IN ($1, $2) AND status IN ('succeeded', 'failed') ORDER BY jobid", &[&ok_job, &bad_job])
            .unwrap();
        if rows.len() == 2 || t2.elapsed() > Duration::from_secs(20) {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let d: Vec<(i64, String, String)> = details
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    println!("cron.job_run_details: {d:?}");
    assert_eq!(d.len(), 2, "each job ran exactly once: {d:?}");
    assert_eq!(d[0].1, "succeeded");
    assert_eq!(d[1].1, "failed");
    assert!(d[1].2.contains("invalid_grant"), "{d:?}");
    // a scheduled run executes only once, even if its command is called again
    let err = c
        .query_one("CALL qbo.run_scheduled($1)", &[&ok_run])
        .expect_err("already ran");
    assert_eq!(
        err.as_db_error().unwrap().message(),
        format!("qbo.run_scheduled: run {ok_run} is succeeded, not scheduled: a scheduled run executes only once (resume it with qbo.resume)")
    );
}

#[test]
fn scheduling_from_a_database_without_pg_cron_says_what_to_do() {
    let emu = Emulator::start(&["--seed", "52"]);
    let mut c = fresh_db("e2e_nocron", &emu);
    let err = c
        .query("SELECT * FROM qbo.schedule_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz)", &[&FROM, &TO])
        .expect_err("no pg_cron here");
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert_eq!(
        msg,
        "qbo.schedule_backfill: pg_cron runs jobs from database \"e2e_cron\" (cron.database_name), not \"e2e_nocron\"; schedule from there with cron.schedule_in_database(..., database => 'e2e_nocron'), or run qbo.schedule_backfill in a database where pg_cron is installed"
    );
    // an operator is told the same (cron.database_name is readable by superusers only: pg_qbo
    // reads it as its owner; the operator once got a permission error with a Rust backtrace)
    c.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qbo_cron_op') THEN CREATE ROLE qbo_cron_op LOGIN; END IF;
         END $$;
         SELECT qbo.grant_operator('qbo_cron_op');
         SELECT qbo.grant_connection('default', 'qbo_cron_op');",
    )
    .unwrap();
    let mut op = as_role("e2e_nocron", "qbo_cron_op");
    // instants in messages are written in the session's TimeZone
    op.batch_execute("SET TimeZone = 'UTC'").unwrap();
    let err = op
        .query("SELECT * FROM qbo.schedule_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz)", &[&FROM, &TO])
        .expect_err("no pg_cron here");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.message(), msg);
    assert_eq!(db.detail(), None, "no backtrace in DETAIL");
    // pg_cron's schedules have no year: a run_at 13 months ahead would fire within a year
    let err = op
        .query("SELECT * FROM qbo.schedule_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, run_at => '2100-01-01 00:00Z')", &[&FROM, &TO])
        .expect_err("too far ahead");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22023");
    assert!(
        db.message().starts_with("qbo.schedule_backfill: run_at 2100-01-01 00:00:00+00 is a year or more ahead (the latest is before "),
        "{}",
        db.message()
    );
    let runs: i64 = c
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 0, "nothing was written");
}

/// README's recipe for resuming a run once from pg_cron (after a server restart left it
/// interrupted): a daily job whose command is `SELECT qbo.start_resume(N); SELECT
/// cron.unschedule(<its name>)`. It fires once, the run goes on detached after the job's session
/// ended, and the job is gone.
#[test]
fn a_cron_job_that_resumes_a_run_detached_fires_once_and_removes_itself() {
    let _turn = CRON_DB.lock().unwrap_or_else(|e| e.into_inner());
    let emu = Emulator::start(&["--seed", "53"]);
    let mut c = cron_db(&emu);
    // a run that stopped half way (the 4th query answers 500, no retries)
    emu.faults("500json@nth=4");
    c.batch_execute("SET qbo.max_retries = 0").unwrap();
    c.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
        &[&FROM, &TO],
    )
    .expect_err("the 500 stops the run");
    emu.faults("");
    let run_id: i64 = c
        .query_one(
            "SELECT max(run_id) FROM qbo.runs WHERE status = 'failed'",
            &[],
        )
        .unwrap()
        .get(0);
    // the job fires at the next whole minute (GMT) at least 5 s away, every day
    let expr: String = c
        .query_one(
            "SELECT to_char(m, 'FMMI FMHH24') || ' * * *'
               FROM (SELECT date_trunc('minute', (now() + interval '65 seconds') AT TIME ZONE 'UTC') AS m) t",
            &[],
        )
        .unwrap()
        .get(0);
    let name = format!("qbo-resume-{run_id}");
    let job: i64 = c
        .query_one(
            "SELECT cron.schedule($1::text, $2::text, format('SELECT qbo.start_resume(%s); SELECT cron.unschedule(%L)', $3::bigint, $1::text))",
            &[&name, &expr, &run_id],
        )
        .unwrap()
        .get(0);
    println!("job {job} '{expr}' resumes run {run_id}");
    let t0 = Instant::now();
    loop {
        let _ = c.execute("SELECT qbo._mark_interrupted()", &[]);
        let s: String = c
            .query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
            .unwrap()
            .get(0);
        if s == "succeeded" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "run {run_id} is {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        raw(&mut c, "qb_invoices", REALM1),
        truth_in_window(&emu, REALM1, "Invoice", FROM, TO)
    );
    let jobs: i64 = c
        .query_one("SELECT count(*) FROM cron.job WHERE jobid = $1", &[&job])
        .unwrap()
        .get(0);
    assert_eq!(jobs, 0, "the job removed itself");
    let t1 = Instant::now();
    let details = loop {
        let d: Vec<(String, String)> = c
            .query(
                "SELECT status, coalesce(return_message, '') FROM cron.job_run_details WHERE jobid = $1 AND status NOT IN ('starting', 'running')",
                &[&job],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if !d.is_empty() || t1.elapsed() > Duration::from_secs(20) {
            break d;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("cron.job_run_details: {details:?}");
    assert_eq!(details.len(), 1, "the job fired once: {details:?}");
    let (executions, entry_point): (i32, String) = {
        let r = c
            .query_one(
                "SELECT executions, entry_point FROM qbo.runs WHERE run_id = $1",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((executions, entry_point.as_str()), (2, "call"));
}

/// `CALL qbo.run_sync(...)` every minute from pg_cron while the emulator's mutator creates,
/// updates, voids and deletes records; once it stops and one more sync ran, raw equals the truth.
#[test]
fn a_sync_every_minute_from_pg_cron_keeps_raw_equal_to_truth_while_records_change() {
    let _turn = CRON_DB.lock().unwrap_or_else(|e| e.into_inner());
    let emu = Emulator::start(&["--seed", "52"]);
    let mut c = cron_db(&emu);
    // TimeActivity (which CDC does not serve) read at every sync, not at most every 12 h; for
    // pg_cron's sessions too (reset at the end: the database outlives the test)
    c.batch_execute(
        "ALTER DATABASE e2e_cron SET qbo.sync_non_cdc_interval_ms = 0; SET qbo.sync_non_cdc_interval_ms = 0",
    )
    .unwrap();
    let call = "CALL qbo.run_sync(ARRAY['Invoice', 'Customer', 'TimeActivity'])";
    c.batch_execute(call).unwrap();
    emu.post(
        "/__emulator/mutate",
        serde_json::json!({"schedule": {"every_ms": 500, "count": 400, "per_tick": 2, "op": "mix",
                                        "realm": REALM1, "entities": ["Invoice", "Customer", "TimeActivity"]}}),
    );
    let since: i64 = c
        .query_one("SELECT max(run_id) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    c.query_one(
        "SELECT cron.schedule('qbo-sync', '* * * * *', $1)",
        &[&call],
    )
    .unwrap();
    // two syncs fired by pg_cron while records change
    let t0 = Instant::now();
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM qbo.runs WHERE kind = 'sync' AND run_id > $1 AND status = 'succeeded'",
                &[&since],
            )
            .unwrap()
            .get(0);
        if n >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(200),
            "pg_cron ran {n} syncs in 200 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    emu.post("/__emulator/mutate", serde_json::json!({"schedule": null}));
    c.query_one("SELECT cron.unschedule('qbo-sync')", &[])
        .unwrap();
    // a sync pg_cron started may still run: the next one waits for nothing, it returns at once
    // with a NOTICE while one runs; so wait until none runs, then one more
    let t0 = Instant::now();
    while c
        .query_one(
            "SELECT count(*) FROM qbo.runs WHERE kind = 'sync' AND status = 'running'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100));
    }
    c.batch_execute(call).unwrap();
    let failed: Vec<String> = c
        .query(
            "SELECT status || ': ' || coalesce(return_message, '') FROM cron.job_run_details WHERE command = $1 AND status <> 'succeeded'",
            &[&call],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(failed, Vec::<String>::new(), "every pg_cron sync succeeded");
    let runs: Vec<(i64, i64)> = c
        .query(
            "SELECT r.run_id, (SELECT sum(k.rows)::bigint FROM qbo.run_chunks k WHERE k.run_id = r.run_id)
               FROM qbo.runs r WHERE r.kind = 'sync' AND r.run_id > $1 ORDER BY 1",
            &[&since],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!("syncs after the first (run id, records changed): {runs:?}");
    for e in ["Invoice", "Customer", "TimeActivity"] {
        assert_mirrors(&mut c, &emu, e, REALM1);
    }
    c.batch_execute("ALTER DATABASE e2e_cron RESET qbo.sync_non_cdc_interval_ms")
        .unwrap();
}
