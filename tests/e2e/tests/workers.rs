//! End-to-end: `qbo.max_workers`, the most pg_qbo background workers running at once on the
//! server (runs of `qbo.backfill`, `qbo.resume`, `qbo.start_backfill`, `qbo.start_resume`).
//!
//! Each worker holds a slot (a session advisory lock of database 0, class 1364414291) for its
//! lifetime; a start finding every slot held fails at once with 53400 and writes nothing; a slot
//! is free again once its worker ends, however it ends (success, cancel, termination). `CALL`
//! takes no slot. The setting is superuser-only: here a superuser gives the operator its value
//! with `ALTER ROLE ... SET`. The tests of this file share slot 0 (cap 1), so they run one at a
//! time (LOCK), and no other suite's workers may run meanwhile (cargo runs test binaries one by
//! one). Moments are hit with the emulator's barrier, never with sleeps.

use pg_qbo_e2e::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

const START: &str = "SELECT qbo.start_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)";
const SELECT: &str = "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)";
const CALL: &str =
    "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)";

/// The refusal at qbo.max_workers = 1.
const FULL: &str = "pg_qbo: all 1 pg_qbo background workers that qbo.max_workers = 1 allows are running; wait for a run to end (qbo.progress), have a superuser raise qbo.max_workers, or run it with CALL qbo.run_backfill(...) / CALL qbo.run_resume(...) instead, which run in this session and need no worker";

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh operator of connection `default` whose sessions get qbo.max_workers = `cap`.
fn operator(admin: &mut postgres::Client, role: &str, cap: i32) {
    fresh_role(admin, role);
    admin
        .batch_execute(&format!(
            "SELECT qbo.grant_operator('{role}'); SELECT qbo.grant_connection('default', '{role}');
             ALTER ROLE {role} SET qbo.max_workers = {cap};"
        ))
        .unwrap();
}

/// The pids holding a pg_qbo worker slot, with the slot.
fn slots(c: &mut postgres::Client) -> Vec<(i32, i64)> {
    c.query(
        "SELECT pid, objid::bigint FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND database = 0
            AND classid = 1364414291 AND objsubid = 2 ORDER BY objid",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Polls (bounded) until no pg_qbo worker holds a slot: a worker lets go of it when its process
/// exits, a moment after it committed its run's outcome.
fn wait_slots_free(c: &mut postgres::Client) {
    let t0 = Instant::now();
    while !slots(c).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "slots still held: {:?}",
            slots(c)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(c: &mut postgres::Client, run_id: i64) -> String {
    c.query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0)
}

fn runs(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0)
}

/// Both starting entry points fail at once with `FULL` and write nothing.
fn assert_refused(c: &mut postgres::Client, admin: &mut postgres::Client) {
    let before = runs(admin);
    for sql in [SELECT, START] {
        let t0 = Instant::now();
        let got = c.query(sql, &[&FROM, &TO]).map(|_| ()).map_err(db_error);
        assert_eq!(got, Err(("53400".to_owned(), FULL.to_owned())), "{sql}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{sql}: refused only after {:?}",
            t0.elapsed()
        );
    }
    assert_eq!(runs(admin), before, "a refused start wrote no run");
}

/// With qbo.max_workers = 1 and a detached run held at the emulator's barrier, a second
/// `qbo.backfill` and `qbo.start_backfill` fail at once (53400, nothing written) while `CALL`
/// runs; once the first run has ended, a new start succeeds.
#[test]
fn a_start_past_qbo_max_workers_fails_at_once_and_the_slot_frees_when_the_run_ends() {
    let _serial = serial();
    let emu = Emulator::start(&["--seed", "71"]);
    let db = "e2e_wk_cap";
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, "wk_op_cap", 1);
    let mut c = as_role(db, "wk_op_cap");
    let shown: String = c.query_one("SHOW qbo.max_workers", &[]).unwrap().get(0);
    assert_eq!(shown, "1");
    wait_slots_free(&mut admin);

    emu.hold(1);
    let run_id: i64 = c.query_one(START, &[&FROM, &TO]).unwrap().get(0);
    emu.wait_held();
    let worker: i32 = admin
        .query_one("SELECT pid FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(
        slots(&mut admin),
        vec![(worker, 0)],
        "the worker holds slot 0"
    );

    let mut other = as_role(db, "wk_op_cap");
    assert_refused(&mut other, &mut admin);
    // only a superuser may change it, in a session that has loaded pg_qbo ...
    assert_eq!(
        other
            .batch_execute("SET qbo.max_workers = 8")
            .map_err(db_error),
        Err((
            "42501".to_owned(),
            "permission denied to set parameter \"qbo.max_workers\"".to_owned()
        ))
    );
    // ... and before: the placeholder a SET leaves is dropped when pg_qbo loads
    let mut early = as_role(db, "wk_op_cap");
    early.batch_execute("SET qbo.max_workers = 8").unwrap();
    assert_refused(&mut early, &mut admin);

    // CALL runs in the caller's backend: no slot needed (it waits for the held run's page
    // writes of the same realm and entity only one page at a time; use another entity)
    other
        .execute(
            "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        )
        .unwrap();

    emu.release();
    let t0 = Instant::now();
    while status(&mut admin, run_id) == "running" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "run {run_id} never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status(&mut admin, run_id), "succeeded");
    wait_slots_free(&mut admin);
    // the next one gets the slot
    let rows = other.query(SELECT, &[&FROM, &TO]).unwrap();
    assert!(!rows.is_empty(), "qbo.backfill returned its chunks");
}

/// A cancelled worker and a terminated one let go of their slot.
#[test]
fn a_cancelled_or_terminated_worker_frees_its_slot() {
    let _serial = serial();
    let emu = Emulator::start(&["--seed", "72"]);
    let db = "e2e_wk_free";
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, "wk_op_free", 1);
    let mut c = as_role(db, "wk_op_free");
    wait_slots_free(&mut admin);

    // cancelled
    emu.hold(1);
    let run1: i64 = c.query_one(START, &[&FROM, &TO]).unwrap().get(0);
    emu.wait_held();
    assert_refused(&mut c, &mut admin);
    let got: String = c
        .query_one("SELECT qbo.cancel($1)", &[&run1])
        .unwrap()
        .get(0);
    assert_eq!(got, "cancelled");
    emu.release();
    wait_slots_free(&mut admin);

    // terminated (what a crash of the worker alone looks like to the slot: its process is gone)
    emu.hold(1);
    let run2: i64 = c.query_one(START, &[&FROM, &TO]).unwrap().get(0);
    emu.wait_held();
    let worker: i32 = admin
        .query_one("SELECT pid FROM qbo.runs WHERE run_id = $1", &[&run2])
        .unwrap()
        .get(0);
    assert_eq!(slots(&mut admin), vec![(worker, 0)]);
    assert_refused(&mut c, &mut admin);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&worker])
        .unwrap();
    emu.release();
    wait_slots_free(&mut admin);

    // the slot serves a new run, which completes
    let run3: i64 = c.query_one(START, &[&FROM, &TO]).unwrap().get(0);
    let t0 = Instant::now();
    while status(&mut admin, run3) == "running" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "run {run3} never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status(&mut admin, run3), "succeeded");
}

/// qbo.max_workers = 0: no pg_qbo worker at all, with its own words; CALL still works.
#[test]
fn qbo_max_workers_zero_refuses_every_worker_and_leaves_call() {
    let _serial = serial();
    let emu = Emulator::start(&["--seed", "73"]);
    let db = "e2e_wk_zero";
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, "wk_op_zero", 0);
    let mut c = as_role(db, "wk_op_zero");
    for sql in [SELECT, START] {
        assert_eq!(
            c.query(sql, &[&FROM, &TO]).map(|_| ()).map_err(db_error),
            Err((
                "53400".to_owned(),
                "pg_qbo: qbo.max_workers = 0: this server lets pg_qbo start no background worker; have a superuser raise qbo.max_workers, or run it with CALL qbo.run_backfill(...) / CALL qbo.run_resume(...) instead, which run in this session and need no worker".to_owned()
            )),
            "{sql}"
        );
    }
    assert_eq!(runs(&mut admin), 0);
    c.execute(CALL, &[&FROM, &TO]).unwrap();
    assert_eq!(status(&mut admin, 1), "succeeded");
}
