//! End-to-end: the NOTICEs a DBA reads in psql or pgAdmin's Messages tab. Instants in the session's
//! TimeZone as the result grid shows them, correct plurals, no stray NOTICE of pg_qbo's own DDL, a
//! line per chunk and the run's totals instead of a line per page, backoffs reported at most once
//! per 5 s, durations in milliseconds that say when they add up several attempts, and a resume of
//! a run that already succeeded that does nothing and says so. CALL and qbo.backfill (whose session
//! relays what its worker commits) print the same lines.

use pg_qbo_e2e::*;
use std::time::Duration;

/// `1 row`, `2 rows`.
fn count(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The line with every time in seconds (`in 0.71 s`) and pace (`(812 rows/s)`) replaced by `N`,
/// the only parts of a line a test cannot know.
fn mask(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or("");
        if next == "s" && w.contains('.') && w.parse::<f64>().is_ok() {
            out.push("N".to_owned());
        } else if next == "rows/s)" && w.starts_with('(') && w[1..].parse::<f64>().is_ok() {
            out.push("(N".to_owned());
        } else {
            out.push((*w).to_owned());
        }
    }
    out.join(" ")
}

/// (done, total, running, pages, rows) of a progress line
/// `run 5: 3 of 9 chunks done, 2 running; 41 pages, 40000 rows so far (812 rows/s)`.
fn progress_line(line: &str) -> Option<(i64, i64, i64, i64, i64)> {
    let (_, rest) = line.split_once(": ")?;
    let n = |s: &str| s.parse::<i64>().ok();
    let w: Vec<&str> = rest
        .split([' ', ',', ';'])
        .filter(|s| !s.is_empty())
        .collect();
    // 3 of 9 chunks done 2 running 41 pages 40000 rows so far (812 rows/s)
    if w.len() != 15 || w[1] != "of" || w[4] != "done" || w[6] != "running" || w[12] != "far" {
        return None;
    }
    Some((n(w[0])?, n(w[2])?, n(w[5])?, n(w[7])?, n(w[9])?))
}

#[test]
fn the_first_call_for_a_new_entity_prints_exactly_its_lines_in_the_sessions_time_zone() {
    let emu = Emulator::start(&["--seed", "71"]);
    let db = "e2e_notice_call";
    let mut admin = fresh_db(db, &emu);
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qbo_notice_op') THEN CREATE ROLE qbo_notice_op LOGIN; END IF;
             END $$;
             SELECT qbo.grant_connection('default', 'qbo_notice_op');
             ALTER DATABASE {db} SET qbo.max_in_flight = 1;"
        ))
        .unwrap();
    // granting creates schema raw the first time; neither that nor a second grant says anything
    let (mut granter, granted) = collecting(db, "postgres");
    granter
        .batch_execute(
            "SELECT qbo.grant_operator('qbo_notice_op'); SELECT qbo.grant_operator('qbo_notice_op');
             SELECT qbo.grant_reader('qbo_notice_op');",
        )
        .unwrap();
    assert_eq!(granted.take(), Vec::<String>::new(), "grants print nothing");

    // an operator's first CALL for Invoice: its raw table is created on the way
    let (mut op, notices) = collecting(db, "qbo_notice_op");
    op.batch_execute("SET TimeZone = 'America/Mexico_City'")
        .unwrap();
    let run_id: i64 = op
        .query_one(
            "CALL qbo.run_backfill('Invoice', '2025-01-01 00:00-06', '2025-01-20 00:00-06', 7, 1000)",
            &[],
        )
        .unwrap()
        .get(0);
    // the windows as the result grid shows them in this session
    let windows: Vec<(String, String)> = op
        .query(
            "SELECT window_start::text, window_end::text FROM qbo.run_chunks WHERE run_id = $1 ORDER BY chunk",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        windows,
        vec![
            (
                "2025-01-01 00:00:00-06".to_owned(),
                "2025-01-08 00:00:00-06".to_owned()
            ),
            (
                "2025-01-08 00:00:00-06".to_owned(),
                "2025-01-15 00:00:00-06".to_owned()
            ),
            (
                "2025-01-15 00:00:00-06".to_owned(),
                "2025-01-20 00:00:00-06".to_owned()
            ),
        ]
    );
    let bounds = [
        "2025-01-01T06:00:00Z",
        "2025-01-08T06:00:00Z",
        "2025-01-15T06:00:00Z",
        "2025-01-20T06:00:00Z",
    ];
    let mut want = vec![format!(
        "run {run_id}: Invoice [2025-01-01 00:00:00-06 → 2025-01-20 00:00:00-06) in 3 chunks"
    )];
    let mut total = 0;
    for k in 0..3 {
        let n = truth_in_window(&emu, REALM1, "Invoice", bounds[k], bounds[k + 1]).len() as i64;
        total += n;
        want.push(format!(
            "run {run_id} chunk {}/3 [{} → {}): done: 1 page, {} ({n} inserted, 0 updated, 0 skipped) in N s",
            k + 1,
            windows[k].0,
            windows[k].1,
            count(n, "row", "rows")
        ));
    }
    want.push(format!(
        "run {run_id} succeeded: 3 chunks, 3 pages, {total} rows ({total} inserted, 0 updated, 0 skipped) in N s"
    ));
    let got: Vec<String> = notices.take().iter().map(|l| mask(l)).collect();
    println!("{got:#?}");
    assert_eq!(got, want);

    // one chunk, one page: singular
    let run_id: i64 = op
        .query_one(
            "CALL qbo.run_backfill('Customer', '2025-01-01 00:00-06', '2025-01-20 00:00-06', 30, 1000)",
            &[],
        )
        .unwrap()
        .get(0);
    let n = truth_in_window(&emu, REALM1, "Customer", bounds[0], bounds[3]).len() as i64;
    let got: Vec<String> = notices.take().iter().map(|l| mask(l)).collect();
    assert_eq!(
        got,
        vec![
            format!("run {run_id}: Customer [2025-01-01 00:00:00-06 → 2025-01-20 00:00:00-06) in 1 chunk"),
            format!("run {run_id} chunk 1/1 [2025-01-01 00:00:00-06 → 2025-01-20 00:00:00-06): done: 1 page, {} ({n} inserted, 0 updated, 0 skipped) in N s", count(n, "row", "rows")),
            format!("run {run_id} succeeded: 1 chunk, 1 page, {} ({n} inserted, 0 updated, 0 skipped) in N s", count(n, "row", "rows")),
        ]
    );

    // an error naming an instant writes it the same way
    let e = op
        .batch_execute(
            "CALL qbo.run_backfill('Invoice', '2025-02-01 00:00-06', '2025-01-01 00:00-06')",
        )
        .expect_err("an empty window");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "qbo.run_backfill: fecha_fin (2025-01-01 00:00:00-06) must be later than fecha_inicio (2025-02-01 00:00:00-06): the window is [fecha_inicio, fecha_fin)"
    );
}

#[test]
fn qbo_backfill_relays_the_same_lines_in_the_callers_time_zone_and_durations_in_milliseconds() {
    let emu = Emulator::start(&["--seed", "72"]);
    let db = "e2e_notice_srf";
    drop(fresh_db(db, &emu));
    let (mut c, notices) = collecting(db, "postgres");
    c.batch_execute("SET TimeZone = 'Asia/Kolkata'; SET qbo.max_in_flight = 1")
        .unwrap();
    let rows = c
        .query(
            "SELECT chunk, window_start::text, window_end::text, pages, rows, duration::text,
                    extract(microseconds FROM duration)::bigint % 1000
               FROM qbo.backfill('Invoice', '2025-01-01 00:00+05:30', '2025-01-20 00:00+05:30', chunk_size => 7)",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 3);
    let mut want = vec![
        "run 1: Invoice [2025-01-01 00:00:00+05:30 → 2025-01-20 00:00:00+05:30) in 3 chunks"
            .to_owned(),
    ];
    let (mut total, mut total_pages) = (0, 0);
    for r in &rows {
        let (chunk, start, end, pages, n): (i32, String, String, i32, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        total += n;
        total_pages += i64::from(pages);
        want.push(format!(
            "run 1 chunk {chunk}/3 [{start} → {end}): done: {}, {} ({n} inserted, 0 updated, 0 skipped) in N s",
            count(pages.into(), "page", "pages"),
            count(n, "row", "rows")
        ));
        // rounded to milliseconds: pgAdmin's column shows it whole
        let duration: String = r.get(5);
        let fraction = duration.split_once('.').map(|(_, f)| f.len()).unwrap_or(0);
        assert!(
            fraction <= 3,
            "duration {duration} has more than milliseconds"
        );
        assert_eq!(r.get::<_, i64>(6), 0, "{duration}");
    }
    want.push(format!(
        "run 1 succeeded: 3 chunks, {}, {total} rows ({total} inserted, 0 updated, 0 skipped) in N s",
        count(total_pages, "page", "pages")
    ));
    let got: Vec<String> = notices.take().iter().map(|l| mask(l)).collect();
    println!("{got:#?}");
    assert_eq!(got, want);
    assert!(got[1].contains("[2025-01-01 00:00:00+05:30 → 2025-01-08 00:00:00+05:30)"));
    // the rounded duration is the stored one, rounded
    let differ: i64 = c
        .query_one(
            "SELECT count(*) FROM qbo.run_chunks c JOIN qbo.resume(1) v USING (chunk)
              WHERE v.duration <> date_trunc('milliseconds', c.duration + interval '0.5 ms')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(differ, 0);
}

#[test]
fn totals_come_at_most_every_progress_interval_and_never_a_line_per_page() {
    let emu = Emulator::start(&["--seed", "73"]);
    let db = "e2e_notice_progress";
    drop(fresh_db(db, &emu));
    let (mut c, notices) = collecting(db, "postgres");
    // (SHOW knows the setting once pg_qbo is loaded in the session)
    c.batch_execute("SELECT FROM qbo.entities LIMIT 1").unwrap();
    let shown: String = c
        .query_one("SHOW qbo.progress_interval_ms", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "10s");
    // 0: after every committed page. Sequential.
    c.batch_execute("SET qbo.progress_interval_ms = 0; SET qbo.max_in_flight = 1")
        .unwrap();
    c.query_one(
        "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-01-20Z', 7, 5)",
        &[],
    )
    .unwrap();
    let lines = notices.take();
    println!("{lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains(": page ")),
        "no page lines"
    );
    let (pages, rows): (i64, i64) = c
        .query_one(
            "SELECT sum(pages)::bigint, sum(rows)::bigint FROM qbo.run_chunks WHERE run_id = 1",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(pages > 3, "several pages per chunk: {pages}");
    let mut done = 0;
    let mut seen = Vec::new();
    for l in &lines {
        if l.contains(": done: ") {
            done += 1;
        } else if let Some((d, t, running, p, _)) = progress_line(l) {
            // (the next chunk opens while the last pages of one wait to be written)
            assert_eq!((d, t), (done, 3), "{l}");
            assert!((1..=2).contains(&running) && d + running <= t, "{l}");
            seen.push(p);
        }
    }
    // a line after every page committed: one per request (sequential, nothing counted); a page
    // carrying records of two chunks counts in both, so the pages shown may step by two
    let requests: i64 = c
        .query_one("SELECT requests_query FROM qbo.runs WHERE run_id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        seen.len() as i64,
        requests,
        "a line after every page: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1] && w[1] <= w[0] + 2),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&pages));
    let last = lines.iter().rev().find_map(|l| progress_line(l)).unwrap();
    assert_eq!((last.3, last.4), (pages, rows));
    let stored: String = c
        .query_one(
            "SELECT settings->>'progress_interval_ms' FROM qbo.runs WHERE run_id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, "0");

    // the relay of qbo.backfill: the same lines, at most one per look at the ledger
    c.batch_execute("RESET qbo.max_in_flight").unwrap();
    let v = c
        .query(
            "SELECT * FROM qbo.backfill('Bill', '2025-01-01Z', '2025-02-01Z', chunk_size => 3, page_size => 5)",
            &[],
        )
        .unwrap();
    let total = sum_rows(&v);
    let lines = notices.take();
    println!("{lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains(": page ")),
        "no page lines"
    );
    let seen: Vec<(i64, i64, i64, i64, i64)> =
        lines.iter().filter_map(|l| progress_line(l)).collect();
    assert!(!seen.is_empty(), "{lines:?}");
    assert!(
        seen.windows(2).all(|w| w[0].3 < w[1].3),
        "pages grow: {seen:?}"
    );
    assert!(seen
        .iter()
        .all(|s| s.1 == 11 && s.3 <= total.pages && s.4 <= total.rows));
    assert_eq!(
        lines.iter().filter(|l| l.contains(": done: ")).count(),
        11,
        "each chunk once"
    );
    // the default interval prints no totals in a run this short
    c.batch_execute("RESET qbo.progress_interval_ms").unwrap();
    c.query_one(
        "CALL qbo.run_backfill('Item', '2025-01-01Z', '2025-01-20Z', 7, 5)",
        &[],
    )
    .unwrap();
    let lines = notices.take();
    assert!(
        lines.iter().all(|l| progress_line(l).is_none()),
        "{lines:?}"
    );
}

/// A storm of four throttled retries of one request, a pause of over 5 s, and one more failure:
/// the first and the last are reported, the last saying three were not. Both entry points print
/// the very same lines. The 429s spend qbo.max_retries here (`qbo.throttle_wait_ms = 0`, the 0.3.0
/// policy), so the storm is four quick retries; throttle.rs has the NOTICEs of throttling ridden
/// out.
fn backoff_storm(db: &str, select: bool) -> Vec<String> {
    let emu = Emulator::start(&["--seed", "74"]);
    drop(fresh_db(db, &emu));
    let (mut c, notices) = collecting(db, "postgres");
    c.batch_execute(
        "SET TimeZone = 'UTC'; SET qbo.max_in_flight = 1; SET qbo.backoff_base_ms = 1; SET qbo.backoff_cap_ms = 1;
         SET qbo.http_timeout_ms = 60000; SET qbo.throttle_wait_ms = 0",
    )
    .unwrap();
    // sequential, 5 records a page: requests 1-4 are the first page and its first three retries
    // (the first answer asks for 1 s), 5 its fourth retry, 6 the second page (held, longer than
    // the 3 s timeout the test databases have), 7 the third page (503) and 8 its retry (held)
    emu.faults("429json-ra=1@nth=1,429json@nth=2,429json@nth=3,429json@nth=4,503html@nth=7");
    emu.hold(6);
    let sql = if select {
        "SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-01-20Z', chunk_size => 7, page_size => 5)"
    } else {
        "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-01-20Z', 7, 5)"
    };
    let run = std::thread::spawn(move || c.batch_execute(sql).map_err(|e| e.to_string()));
    emu.wait_held();
    notices.wait_for("HTTP 429");
    emu.hold(2);
    // the next report may come 5 s after the first one at the earliest
    std::thread::sleep(Duration::from_millis(5200));
    emu.release();
    emu.wait_held();
    // (a worker's retry is reported from its committed note: released once it was)
    notices.wait_for("HTTP 503");
    emu.release();
    run.join().unwrap().unwrap();
    let stats = emu.stats();
    let faults: i64 = stats["faults_injected"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_i64).sum())
        .unwrap_or(0);
    assert_eq!(faults, 5, "{stats}");
    let lines: Vec<String> = notices
        .take()
        .into_iter()
        .filter(|l| l.contains("retrying"))
        .collect();
    println!("{lines:#?}");
    assert!((lines.len() as i64) < faults, "fewer NOTICEs than retries");
    lines
}

#[test]
fn backoffs_are_reported_at_most_every_5_s_with_the_retries_left_out_in_both_entry_points() {
    let want = vec![
        "run 1 chunk 1/3 [2025-01-01 00:00:00+00 → 2025-01-08 00:00:00+00): HTTP 429 from QuickBooks on the page at start position 1; retrying in 1.00 s (attempt 2 of 7)".to_owned(),
        // (the third page of five records still reads chunk 1: the chunks are one window)
        "run 1 chunk 1/3 [2025-01-01 00:00:00+00 → 2025-01-08 00:00:00+00): HTTP 503 from QuickBooks on the page at start position 1; retrying in 0.00 s (attempt 2 of 7; 3 other retries not reported)".to_owned(),
    ];
    assert_eq!(backoff_storm("e2e_notice_backoff_call", false), want);
    assert_eq!(backoff_storm("e2e_notice_backoff_srf", true), want);
}

#[test]
fn a_resumed_chunk_says_its_duration_adds_up_its_attempts_and_done_chunks_are_not_repeated() {
    let emu = Emulator::start(&["--seed", "75"]);
    let db = "e2e_notice_resume";
    drop(fresh_db(db, &emu));
    let (mut c, notices) = collecting(db, "postgres");
    // the first request reading chunk 2 (its time cursor is on 2025-01-10 or later: chunk 1 is
    // done) is held past the timeout and not retried: the run fails there
    c.batch_execute(
        "SET TimeZone = 'UTC'; SET qbo.max_in_flight = 1; SET qbo.max_retries = 0; SET qbo.http_timeout_ms = 500",
    )
    .unwrap();
    let chunk2 = "LastUpdatedTime >= '2025-01-1";
    for (run_id, select) in [(1, true), (2, false)] {
        emu.hold_matching(1, chunk2);
        let sql = if select {
            "SELECT * FROM qbo.backfill('Invoice', '2025-01-01Z', '2025-01-19Z', chunk_size => 9, page_size => 5)"
        } else {
            "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-01-19Z', 9, 5)"
        };
        c.batch_execute(sql).expect_err("chunk 2 times out");
        emu.release();
        let first: Vec<String> = notices.take();
        assert!(
            first
                .iter()
                .any(|l| l.starts_with(&format!("run {run_id} chunk 1/2 "))
                    && !l.contains("attempts")),
            "{first:?}"
        );
        let resume = if select {
            format!("SELECT * FROM qbo.resume({run_id})")
        } else {
            format!("CALL qbo.run_resume({run_id})")
        };
        c.batch_execute(&resume).unwrap();
        let lines: Vec<String> = notices.take().iter().map(|l| mask(l)).collect();
        println!("{lines:#?}");
        // chunk 1, done before, is not announced again; chunk 2 says both attempts are in its time
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!(
                "run {run_id} chunk 2/2 [2025-01-10 00:00:00+00 → 2025-01-19 00:00:00+00): done: "
            )) && lines[0].ends_with(" in N s over 2 attempts"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with(&format!("run {run_id} succeeded: 2 chunks, ")));
    }
    let attempts: Vec<i32> = c
        .query(
            "SELECT attempts FROM qbo.run_chunks ORDER BY run_id, chunk",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![1, 2, 1, 2]);
}

#[test]
fn resuming_a_run_that_succeeded_does_nothing_and_says_so() {
    let emu = Emulator::start(&["--seed", "76"]);
    let db = "e2e_notice_done";
    drop(fresh_db(db, &emu));
    let (mut c, notices) = collecting(db, "postgres");
    let volumetry = |c: &mut postgres::Client, sql: &str| -> Vec<String> {
        c.query(
            &format!(
                "SELECT format('%s %s %s %s %s %s %s %s %s', chunk, window_start, window_end, pages, rows,
                               inserted, updated, skipped, duration)
                   FROM {sql}"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let first = volumetry(
        &mut c,
        "qbo.backfill('Item', '2025-01-01Z', '2025-02-01Z', chunk_size => 10)",
    );
    let durations = |c: &mut postgres::Client, sql: &str| -> Vec<String> {
        c.query(&format!("SELECT duration::text FROM {sql}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let first_durations = durations(&mut c, "qbo.run_chunks WHERE run_id = 1 ORDER BY chunk");
    let state = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT format('%s %s %s %s %s', executions, status, finished_at, updated_at, pid) FROM qbo.runs WHERE run_id = 1",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = state(&mut c);
    let seq = emu.last_seq();
    notices.take();
    let said = "run 1 already succeeded; nothing to resume (its volumetry is unchanged; start a new run to fetch its window again)".to_owned();

    assert_eq!(volumetry(&mut c, "qbo.resume(1)"), first);
    assert_eq!(
        notices.take(),
        vec![said.clone()],
        "no worker, no other line"
    );
    c.batch_execute("CALL qbo.run_resume(1)").unwrap();
    assert_eq!(notices.take(), vec![said]);

    assert_eq!(
        state(&mut c),
        before,
        "executions, status, finished_at unchanged"
    );
    assert_eq!(emu.last_seq(), seq, "QuickBooks was not asked anything");
    assert_eq!(
        durations(&mut c, "qbo.run_chunks WHERE run_id = 1 ORDER BY chunk"),
        first_durations
    );
    assert!(before.starts_with("1 succeeded "), "{before}");
}
