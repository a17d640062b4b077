//! End-to-end: detached runs (`qbo.start_backfill`, `qbo.start_resume`) and `qbo.cancel`.
//!
//! A detached run lives in a background worker tied to no session: the call returns the run id as
//! soon as the run is committed, the session that started it may end, and the run goes on to the
//! emulator's truth. `qbo.cancel` stops a run by its id (whatever started it) by a query cancel to
//! the process holding the run's lock, for the role that started it or a superuser. Every pg_qbo
//! worker turns off the statement_timeout, lock_timeout and idle_in_transaction_session_timeout
//! its role or database carries. Moments are hit with the emulator's barrier and with locks held
//! by another session, never with sleeps.

use pg_qbo_e2e::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

const START: &str = "SELECT qbo.start_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)";

/// A fresh operator of connection `default`.
fn operator(admin: &mut postgres::Client, role: &str) {
    fresh_role(admin, role);
    admin
        .batch_execute(&format!(
            "SELECT qbo.grant_operator('{role}'); SELECT qbo.grant_connection('default', '{role}');"
        ))
        .unwrap();
}

/// Connects to `db` as `role`, collecting the NOTICEs the server sends.
fn with_notices(db: &str, role: &str) -> (postgres::Client, Arc<Mutex<Vec<String>>>) {
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&notices);
    let mut cfg: postgres::Config =
        format!("host=127.0.0.1 port={} user={role} dbname={db}", port())
            .parse()
            .unwrap();
    cfg.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_owned()));
    (cfg.connect(postgres::NoTls).unwrap(), notices)
}

fn status(c: &mut postgres::Client, run_id: i64) -> String {
    c.query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0)
}

/// Polls (bounded) until `f` holds.
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Waits for a run's final status (it goes on in its worker meanwhile).
fn wait_status(c: &mut postgres::Client, run_id: i64, want: &str) {
    let t0 = Instant::now();
    loop {
        let _ = c.execute("SELECT qbo._mark_interrupted()", &[]);
        let last = status(c, run_id);
        if last == want {
            return;
        }
        if last != "running" || t0.elapsed() > Duration::from_secs(120) {
            let err: Option<String> = c
                .query_one("SELECT error FROM qbo.runs WHERE run_id = $1", &[&run_id])
                .unwrap()
                .get(0);
            panic!("run {run_id} is {last}, expected {want} (error: {err:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process holding run `run_id`'s liveness lock in this database.
fn lock_holder(c: &mut postgres::Client, run_id: i64) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = 1364414287 AND objid = $1::bigint::oid AND objsubid = 2",
        &[&run_id],
    )
    .unwrap()
    .map(|r| r.get(0))
}

/// Whether process `pid` is alive in pg_stat_activity.
fn alive(c: &mut postgres::Client, pid: i32) -> bool {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
        &[&pid],
    )
    .unwrap()
    .get::<_, i64>(0)
        > 0
}

fn detached_workers(c: &mut postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_qbo detached run' AND datname = current_database()",
        &[],
    )
    .unwrap()
    .get(0)
}

fn assert_equals_truth(c: &mut postgres::Client, emu: &Emulator, run_id: i64) {
    let truth = truth_in_window(emu, REALM1, "Invoice", FROM, TO);
    assert_eq!(raw(c, "qb_invoices", REALM1), truth);
    let (rows, inserted): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT sum(rows)::bigint, sum(inserted)::bigint FROM qbo.run_chunks WHERE run_id = $1",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (rows, inserted),
        (truth.len() as i64, truth.len() as i64),
        "each record counted once, inserted once"
    );
}

/// The server log's lines of process `pid`.
fn log_of(pid: i32) -> Vec<String> {
    let log = std::fs::read_to_string(cluster_dir().join("server.log")).unwrap_or_default();
    let tag = format!("[{pid}] ");
    log.lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_owned)
        .collect()
}

#[test]
fn start_backfill_returns_at_once_and_the_run_outlives_the_session_that_started_it() {
    let emu = Emulator::start(&["--seed", "91"]);
    let db = "e2e_det_outlive";
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, "det_op_outlive");
    let (mut starter, notices) = with_notices(db, "det_op_outlive");
    let starter_pid: i32 = starter
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // the run's first query waits at the emulator until released
    emu.hold(1);
    let run_id: i64 = starter.query_one(START, &[&FROM, &TO]).unwrap().get(0);
    assert_eq!(run_id, 1);
    // start_backfill returned with the run committed, before its first query was answered
    emu.wait_held();
    let r = admin
        .query_one(
            "SELECT status, entry_point, run_by::text, executions, pid,
                    (SELECT count(*) FROM qbo.run_pages p WHERE p.run_id = r.run_id)
               FROM qbo.runs r WHERE run_id = $1",
            &[&run_id],
        )
        .unwrap();
    let worker = lock_holder(&mut admin, run_id).expect("the run's lock is held");
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, i32>(3),
            r.get::<_, i32>(4),
            r.get::<_, i64>(5)
        ),
        (
            "running".to_owned(),
            "detached".to_owned(),
            "det_op_outlive".to_owned(),
            1,
            worker,
            0
        )
    );
    assert_ne!(worker, starter_pid);
    // a DBA recognises it in pg_stat_activity
    let a = admin
        .query_one(
            "SELECT backend_type, usename::text, application_name FROM pg_stat_activity WHERE pid = $1",
            &[&worker],
        )
        .unwrap();
    assert_eq!(
        (
            a.get::<_, String>(0),
            a.get::<_, String>(1),
            a.get::<_, String>(2)
        ),
        (
            "pg_qbo detached run".to_owned(),
            "det_op_outlive".to_owned(),
            "pg_qbo run 1".to_owned()
        )
    );
    assert_eq!(
        notices.lock().unwrap().clone(),
        vec![format!("run 1: Invoice [2025-01-01 00:00:00+00 → 2025-09-11 00:00:00+00) in 9 chunks, in background worker pid {worker}, detached from this session (it goes on when the session ends); follow it in qbo.progress, stop it with SELECT qbo.cancel(1)")]
    );

    // resuming it while it runs: the worker refuses before touching it, and the caller gets that
    // error, word for word
    let e = starter
        .query_one("SELECT qbo.start_resume(1)", &[])
        .expect_err("the run is running");
    assert_eq!(
        db_error(e),
        (
            "55006".to_owned(),
            "run 1 is still running; wait for it, or stop it with SELECT qbo.cancel(1) and resume it then".to_owned()
        )
    );
    let executions: i32 = admin
        .query_one("SELECT executions FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(executions, 1);
    assert_eq!(lock_holder(&mut admin, run_id), Some(worker));

    // the session that started it ends (a closed pgAdmin, a lost VPN): the run goes on
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&starter_pid])
        .unwrap()
        .get(0);
    assert!(terminated);
    wait_until(
        "the starting session is gone",
        Duration::from_secs(10),
        || !alive(&mut admin, starter_pid),
    );
    assert!(
        alive(&mut admin, worker),
        "the worker was stopped with its starter"
    );
    assert_eq!(lock_holder(&mut admin, run_id), Some(worker));
    assert_eq!(status(&mut admin, run_id), "running");

    emu.release();
    wait_status(&mut admin, run_id, "succeeded");
    assert_equals_truth(&mut admin, &emu, run_id);
    wait_until("the worker exits", Duration::from_secs(10), || {
        detached_workers(&mut admin) == 0
    });
    // nobody listened: the end is in the server log
    let line = "LOG:  pg_qbo: detached run 1 succeeded: 9 chunks,";
    assert!(
        log_of(worker).iter().any(|l| l.contains(line)),
        "{line} not in the log of pid {worker}: {:?}",
        log_of(worker)
    );
}

#[test]
fn bad_input_is_refused_in_the_caller_and_nothing_is_written() {
    let emu = Emulator::start(&["--seed", "92"]);
    let db = "e2e_det_input";
    let mut admin = fresh_db(db, &emu);
    register(&mut admin, db, "second", REALM2, "emu-refresh-token-0");
    operator(&mut admin, "det_op_input");
    let mut op = as_role(db, "det_op_input");
    let cases: &[(&str, &str, &str)] = &[
        (
            "SELECT qbo.start_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', page_size => 0)",
            "22023",
            "qbo.start_backfill: page_size must be between 1 and 1000 (got 0): QBO returns at most 1000 rows per page",
        ),
        (
            "SELECT qbo.start_backfill('Invoice', '2025-02-01Z', '2025-01-01Z')",
            "22023",
            "qbo.start_backfill: fecha_fin (2025-01-01 00:00:00+00) must be later than fecha_inicio (2025-02-01 00:00:00+00): the window is [fecha_inicio, fecha_fin)",
        ),
        (
            "SELECT qbo.start_backfill('Invoice', '2025-01-01Z', 'infinity')",
            "22023",
            "qbo.start_backfill: fecha_fin must be a finite timestamp",
        ),
        (
            "SELECT qbo.start_backfill(NULL, '2025-01-01Z', '2025-02-01Z')",
            "22004",
            "qbo.start_backfill: argument entity must not be NULL",
        ),
        (
            "SELECT qbo.start_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', connection => 'nope')",
            "22023",
            "qbo.start_backfill: unknown connection \"nope\": register it with qbo.connect(...) or qbo.connect_from_file(...) (see qbo.connections)",
        ),
        (
            "SELECT qbo.start_backfill('Invoice', '2025-01-01Z', '2025-02-01Z', connection => 'second')",
            "42501",
            "qbo.start_backfill: role \"det_op_input\" may not run backfills of connection \"second\": a superuser grants it with SELECT qbo.grant_connection('second', 'det_op_input')",
        ),
        (
            "SELECT qbo.start_resume(NULL)",
            "22004",
            "qbo.start_resume: argument run_id must not be NULL",
        ),
        (
            "SELECT qbo.start_resume(999)",
            "22023",
            "run 999 does not exist (see qbo.runs)",
        ),
        (
            "SELECT qbo.cancel(NULL)",
            "22004",
            "qbo.cancel: argument run_id must not be NULL",
        ),
        (
            "SELECT qbo.cancel(999)",
            "22023",
            "run 999 does not exist (see qbo.runs)",
        ),
    ];
    for (sql, code, msg) in cases {
        let e = op.query_one(*sql, &[]).expect_err(sql);
        assert_eq!(
            db_error(e),
            ((*code).to_owned(), (*msg).to_owned()),
            "{sql}"
        );
    }
    let runs: i64 = admin
        .query_one("SELECT count(*) FROM qbo.runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 0, "no run was created");
    assert_eq!(detached_workers(&mut admin), 0);
    assert_eq!(emu.last_seq(), 0, "nothing was asked of QuickBooks");
}

#[test]
fn start_resume_of_a_failed_run_completes_it() {
    let emu = Emulator::start(&["--seed", "93"]);
    let db = "e2e_det_resume";
    let mut admin = fresh_db(db, &emu);
    register(&mut admin, db, "second", REALM2, "emu-refresh-token-0");
    operator(&mut admin, "det_op_resume");
    fresh_role(&mut admin, "det_op_resume_other");
    admin
        .batch_execute("SELECT qbo.grant_operator('det_op_resume_other'); SELECT qbo.grant_connection('second', 'det_op_resume_other')")
        .unwrap();
    let mut op = as_role(db, "det_op_resume");
    // the 4th query answers 500 and the run has no retries: it fails after three pages
    emu.faults("500json@nth=4");
    op.batch_execute("SET qbo.max_retries = 0").unwrap();
    let e = op
        .query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        )
        .expect_err("the 500 fails the run");
    println!("{}", db_error(e).1);
    emu.faults("");
    assert_eq!(status(&mut admin, 1), "failed");
    // an operator of another connection may not resume it
    let mut other = as_role(db, "det_op_resume_other");
    let e = other
        .query_one("SELECT qbo.start_resume(1)", &[])
        .expect_err("not its connection");
    assert_eq!(
        db_error(e),
        (
            "42501".to_owned(),
            "qbo.start_resume: run 1: role \"det_op_resume_other\" may not run backfills of connection \"default\": a superuser grants it with SELECT qbo.grant_connection('default', 'det_op_resume_other')".to_owned()
        )
    );
    assert_eq!(status(&mut admin, 1), "failed");

    let run_id: i64 = op
        .query_one("SELECT qbo.start_resume(1)", &[])
        .unwrap()
        .get(0);
    assert_eq!(run_id, 1);
    wait_status(&mut admin, 1, "succeeded");
    assert_equals_truth(&mut admin, &emu, 1);
    let (executions, entry_point): (i32, String) = {
        let r = admin
            .query_one(
                "SELECT executions, entry_point FROM qbo.runs WHERE run_id = 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((executions, entry_point.as_str()), (2, "call"));
}

/// A run whose process died is `running` until some pg_qbo call marks it `interrupted`. A
/// transaction that did that itself (`qbo._mark_interrupted()`, e.g. in one pgAdmin script with
/// the resume) holds the run's row, which the worker must update too: both would wait for each
/// other for ever, so start_resume says so at once instead of hanging.
#[test]
fn start_resume_in_a_transaction_holding_the_runs_row_fails_instead_of_hanging() {
    let emu = Emulator::start(&["--seed", "94"]);
    let db = "e2e_det_deadlock";
    let mut admin = fresh_db(db, &emu);
    let mut c = connect(db);
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    emu.hold(3);
    let call = std::thread::spawn(move || {
        c.query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        )
        .map(|_| ())
    });
    emu.wait_held();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(call.join().unwrap().is_err());
    emu.release();
    wait_until("the run's process is gone", Duration::from_secs(10), || {
        lock_holder(&mut admin, 1).is_none()
    });
    let mut dba = connect(db);
    let t0 = Instant::now();
    let e = dba
        .batch_execute("SELECT qbo._mark_interrupted(); SELECT qbo.start_resume(1);")
        .expect_err("the worker waits for this transaction");
    let took = t0.elapsed();
    let (code, msg) = db_error(e);
    println!("{code} after {took:?}: {msg}");
    assert_eq!(code, "40P01");
    assert!(
        msg.starts_with("pg_qbo: the run's background worker (pid ")
            && msg.ends_with(") waits for a lock this transaction holds (it changed rows of qbo.runs the worker must change too): commit or roll back first, then start the run in a transaction of its own"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // the implicit transaction was rolled back: the run is as the crash left it, and a resume in
    // a statement of its own finishes it
    wait_until("the stopped worker exits", Duration::from_secs(15), || {
        detached_workers(&mut admin) == 0
    });
    let run_id: i64 = dba
        .query_one("SELECT qbo.start_resume(1)", &[])
        .unwrap()
        .get(0);
    wait_status(&mut admin, run_id, "succeeded");
    assert_equals_truth(&mut admin, &emu, 1);
}

#[test]
fn cancel_by_the_role_that_started_it_stops_a_detached_run_and_start_resume_finishes_it() {
    let emu = Emulator::start(&["--seed", "95"]);
    let db = "e2e_det_cancel";
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, "det_op_cancel");
    let mut op = as_role(db, "det_op_cancel");
    emu.hold(3);
    let run_id: i64 = op.query_one(START, &[&FROM, &TO]).unwrap().get(0);
    emu.wait_held();
    let worker = lock_holder(&mut admin, run_id).expect("running");
    let t0 = Instant::now();
    let got: String = op
        .query_one("SELECT qbo.cancel($1)", &[&run_id])
        .unwrap()
        .get(0);
    let took = t0.elapsed();
    println!("qbo.cancel returned {got} after {took:?}");
    assert_eq!(got, "cancelled");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let r = admin
        .query_one(
            "SELECT status, error, error_sqlstate FROM qbo.runs WHERE run_id = $1",
            &[&run_id],
        )
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        ),
        (
            "cancelled".to_owned(),
            "canceling statement due to user request".to_owned(),
            "57014".to_owned()
        )
    );
    assert_eq!(lock_holder(&mut admin, run_id), None);
    wait_until("the worker exits", Duration::from_secs(10), || {
        !alive(&mut admin, worker)
    });
    emu.release();
    // cancelling it again: nothing to cancel
    let again: String = op
        .query_one("SELECT qbo.cancel($1)", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(again, "cancelled");

    let resumed: i64 = op
        .query_one("SELECT qbo.start_resume($1)", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(resumed, run_id);
    wait_status(&mut admin, run_id, "succeeded");
    assert_equals_truth(&mut admin, &emu, run_id);
}

/// `qbo.cancel` stops runs of the other entry points the same way: a `CALL` (its session's
/// statement is cancelled) and `qbo.backfill` (its worker is; the caller gets the run's error).
#[test]
fn cancel_stops_a_call_and_a_qbo_backfill_run_too() {
    let emu = Emulator::start(&["--seed", "96"]);
    let db = "e2e_det_cancel_any";
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, "det_op_any");

    let mut c = as_role(db, "det_op_any");
    emu.hold(3);
    let call = std::thread::spawn(move || {
        c.query_one(
            "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 50)",
            &[&FROM, &TO],
        )
        .map(|_| ())
        .map_err(db_error)
    });
    emu.wait_held();
    let mut op = as_role(db, "det_op_any");
    let got: String = op.query_one("SELECT qbo.cancel(1)", &[]).unwrap().get(0);
    assert_eq!(got, "cancelled");
    assert_eq!(
        call.join().unwrap(),
        Err((
            "57014".to_owned(),
            "canceling statement due to user request".to_owned()
        ))
    );
    emu.release();

    let mut c = as_role(db, "det_op_any");
    emu.hold(3);
    let select = std::thread::spawn(move || {
        c.query(
            "SELECT * FROM qbo.backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 20)",
            &[&FROM, &TO],
        )
        .map(|_| ())
        .map_err(db_error)
    });
    emu.wait_held();
    let holder = lock_holder(&mut admin, 2).expect("run 2 is running");
    let backend_type: String = admin
        .query_one(
            "SELECT backend_type FROM pg_stat_activity WHERE pid = $1",
            &[&holder],
        )
        .unwrap()
        .get(0);
    assert_eq!(backend_type, "pg_qbo backfill");
    let got: String = op.query_one("SELECT qbo.cancel(2)", &[]).unwrap().get(0);
    assert_eq!(got, "cancelled");
    assert_eq!(
        select.join().unwrap(),
        Err((
            "57014".to_owned(),
            "run 2: canceling statement due to user request".to_owned()
        ))
    );
    emu.release();
    let statuses: Vec<String> = admin
        .query("SELECT status FROM qbo.runs ORDER BY run_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, vec!["cancelled", "cancelled"]);
}

/// A finished run keeps its last pid in qbo.runs.pid, and that session may be doing something
/// else entirely: qbo.cancel finds nothing to signal (it looks for the run's lock, not the pid),
/// says so, and returns the status. A run whose process died is reported interrupted.
#[test]
fn cancel_of_a_run_that_is_not_running_says_so_and_signals_nobody() {
    let emu = Emulator::start(&["--seed", "97"]);
    let db = "e2e_det_not_running";
    let mut admin = fresh_db(db, &emu);
    let mut c = connect(db);
    let c_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.query_one(
        "CALL qbo.run_backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, 30, 200)",
        &[&FROM, &TO],
    )
    .unwrap();
    let pid: i32 = admin
        .query_one("SELECT pid FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(pid, c_pid, "qbo.runs.pid is the session that ran it");
    // that session now waits on a lock another session holds: a cancel would end its wait
    admin.execute("SELECT pg_advisory_lock(4242)", &[]).unwrap();
    let waiting = std::thread::spawn(move || {
        c.query_one("SELECT pg_advisory_lock(4242)", &[])
            .map(|_| ())
            .map_err(db_error)
    });
    let mut watcher = connect(db);
    wait_until(
        "the session waits for the lock",
        Duration::from_secs(10),
        || {
            watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&c_pid],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 1
        },
    );
    let (mut dba, notices) = with_notices(db, "postgres");
    let got: String = dba.query_one("SELECT qbo.cancel(1)", &[]).unwrap().get(0);
    assert_eq!(got, "succeeded");
    assert_eq!(
        notices.lock().unwrap().clone(),
        vec!["run 1 is not running (status succeeded): there is nothing to cancel".to_owned()]
    );
    // the session that ran it was not signalled: its wait is still on, and ends normally
    let still: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
            &[&c_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(still, 1);
    admin
        .execute("SELECT pg_advisory_unlock(4242)", &[])
        .unwrap();
    assert_eq!(waiting.join().unwrap(), Ok(()));

    // a run whose process was terminated: interrupted, nothing to cancel
    let mut c = connect(db);
    let c_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    emu.hold(2);
    let call = std::thread::spawn(move || {
        c.query_one(
            "CALL qbo.run_backfill('Customer', $1::text::timestamptz, $2::text::timestamptz, 30, 20)",
            &[&FROM, &TO],
        )
        .map(|_| ())
    });
    emu.wait_held();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&c_pid])
        .unwrap();
    assert!(call.join().unwrap().is_err());
    emu.release();
    wait_until("the run's process is gone", Duration::from_secs(10), || {
        lock_holder(&mut admin, 2).is_none()
    });
    notices.lock().unwrap().clear();
    let got: String = dba.query_one("SELECT qbo.cancel(2)", &[]).unwrap().get(0);
    assert_eq!(got, "interrupted");
    assert_eq!(
        notices.lock().unwrap().clone(),
        vec!["run 2 is not running (status interrupted): there is nothing to cancel".to_owned()]
    );
}

/// `ALTER ROLE ... SET statement_timeout / lock_timeout / idle_in_transaction_session_timeout`
/// reach a background worker that connects as that role. A worker's run must outlive them: it is
/// held at the emulator for longer than 1 s, then waits longer than 1 s for the lock serialising
/// page writes of (realm, Invoice), held by another session, and still succeeds.
fn role_timeouts_reach_no_worker(db: &str, seed: &str, role: &str, detached: bool) {
    let emu = Emulator::start(&["--seed", seed]);
    let mut admin = fresh_db(db, &emu);
    operator(&mut admin, role);
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} SET statement_timeout = '1s';
             ALTER ROLE {role} SET lock_timeout = '1s';
             ALTER ROLE {role} SET idle_in_transaction_session_timeout = '1s';
             ALTER DATABASE {db} SET qbo.max_in_flight = 1;"
        ))
        .unwrap();
    let mut op = as_role(db, role);
    let t: String = op
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .unwrap()
        .get(0);
    assert_eq!(t, "1s", "the role's setting is in force");
    // the caller's own limits would stop the caller's statement (qbo.backfill waits for its
    // worker): what is tested is the worker, which gets the role's settings at its own start
    op.batch_execute(
        "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0",
    )
    .unwrap();
    let mut blocker = connect(db);
    blocker.batch_execute("BEGIN").unwrap();
    blocker
        .execute(
            "SELECT pg_advisory_xact_lock(1364414289, hashtext('1364414289:' || $1 || '/Invoice'))",
            &[&REALM1],
        )
        .unwrap();
    emu.hold(1);
    let select = if detached {
        let run_id: i64 = op.query_one(START, &[&FROM, &TO]).unwrap().get(0);
        assert_eq!(run_id, 1);
        None
    } else {
        Some(std::thread::spawn(move || {
            op.query(
                "SELECT * FROM qbo.backfill('Invoice', $1::text::timestamptz, $2::text::timestamptz, chunk_size => 30, page_size => 50)",
                &[&FROM, &TO],
            )
            .map(|rows| sum_rows(&rows))
            .map_err(db_error)
        }))
    };
    emu.wait_held();
    let worker = lock_holder(&mut admin, 1).expect("run 1 is running");
    let settings: Vec<String> = admin
        .query(
            "SELECT name || '=' || setting FROM pg_settings WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout') ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("admin session: {settings:?} (the worker's are not readable from here)");
    let run_state = |c: &mut postgres::Client| -> String {
        let r = c
            .query_one("SELECT status, error FROM qbo.runs WHERE run_id = 1", &[])
            .unwrap();
        format!(
            "{} ({:?})",
            r.get::<_, String>(0),
            r.get::<_, Option<String>>(1)
        )
    };
    // 1. held at the emulator for more than 1 s (by the server's clock)
    let held_at: String = admin
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    wait_until("1.5 s at the barrier", Duration::from_secs(30), || {
        let r = admin
            .query_one(
                "SELECT clock_timestamp() - $1::text::timestamptz > interval '1500 ms', status, error
                   FROM qbo.runs WHERE run_id = 1",
                &[&held_at],
            )
            .unwrap();
        let (status, error): (String, Option<String>) = (r.get(1), r.get(2));
        assert_eq!(status, "running", "run 1 stopped at the barrier: {error:?}");
        r.get(0)
    });
    assert_eq!(lock_holder(&mut admin, 1), Some(worker));
    emu.release();
    // 2. waiting for the page-write lock for more than 1 s
    wait_until(
        "the worker waits for the lock",
        Duration::from_secs(30),
        || {
            let waiting = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&worker],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 1;
            if !waiting {
                let s = run_state(&mut admin);
                assert!(s.starts_with("running"), "run 1 stopped: {s}");
            }
            waiting
        },
    );
    let waits_from: String = admin
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    wait_until(
        "1.5 s waiting for the lock",
        Duration::from_secs(30),
        || {
            let r = admin
            .query_one(
                "SELECT clock_timestamp() - $1::text::timestamptz > interval '1500 ms',
                        (SELECT count(*) FROM pg_stat_activity WHERE pid = $2 AND wait_event_type = 'Lock')",
                &[&waits_from, &worker],
            )
            .unwrap();
            if r.get::<_, i64>(1) != 1 {
                panic!(
                    "the worker stopped waiting for the lock: run 1 {}",
                    run_state(&mut admin)
                );
            }
            r.get(0)
        },
    );
    blocker.batch_execute("COMMIT").unwrap();
    match select {
        Some(t) => {
            let v = t
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("qbo.backfill failed: {e:?}"));
            println!("qbo.backfill: {v:?}");
        }
        None => wait_status(&mut admin, 1, "succeeded"),
    }
    assert_eq!(status(&mut admin, 1), "succeeded");
    assert_equals_truth(&mut admin, &emu, 1);
}

#[test]
fn role_timeouts_never_reach_a_detached_run() {
    role_timeouts_reach_no_worker("e2e_det_timeouts", "98", "det_op_timeouts", true);
}

#[test]
fn role_timeouts_never_reach_the_worker_of_qbo_backfill() {
    role_timeouts_reach_no_worker("e2e_det_timeouts_fn", "99", "det_op_timeouts_fn", false);
}
