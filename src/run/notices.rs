//! The text of progress messages: one formatter per kind of line, used by every entry point (the
//! `CALL`'s own NOTICEs, and the relay of a worker's progress by the session that started it), so
//! a line reads the same wherever it is printed. The ledger supplies the rows.
//!
//! Every instant is written by the `ts` function the caller passes: `pg::time::session_ts` (the
//! printing session's `TimeZone`, as its result grid shows a `timestamptz`), or
//! `pg::time::utc_ts` in unit tests, which need no database.
//!
//! What a run prints, in a `CALL` and in the relay of `qbo.backfill` / `qbo.resume` alike:
//! - [`opening`], once, when a new run starts;
//! - [`chunk_done`] for each chunk as it completes (chunks run concurrently, so in no fixed order);
//! - [`progress`], the run's totals, at most every `qbo.progress_interval_ms` ([`ProgressClock`]);
//! - [`backoff`] when a request is retried after a backoff, at most one per [`BackoffGate::EVERY`]
//!   (the next one says how many retries went unreported);
//! - [`succeeded`] at the end.

use crate::store::ledger::{ChunkDone, RunProgress, RunTotals};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// How an instant is written (see the module's documentation).
pub type Ts<'a> = &'a dyn Fn(DateTime<Utc>) -> String;

/// `1 page`, `2 pages`, `0 rows`.
pub fn count(n: impl Into<i64>, one: &str, many: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `[2025-01-15 00:00:00-06 → 2025-01-22 00:00:00-06)`.
fn window(start: DateTime<Utc>, end: DateTime<Utc>, ts: Ts) -> String {
    format!("[{} → {})", ts(start), ts(end))
}

/// `run 42 chunk 3/37 [2025-01-15 00:00:00+00 → 2025-01-22 00:00:00+00)`.
fn chunk_head(
    run_id: i64,
    chunk: i32,
    total: i32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    ts: Ts,
) -> String {
    format!(
        "run {run_id} chunk {chunk}/{total} {}",
        window(start, end, ts)
    )
}

/// `run 42: Invoice [2025-01-01 00:00:00+00 → 2025-09-11 00:00:00+00) in 37 chunks`.
pub fn opening(
    run_id: i64,
    entity: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    chunks: i64,
    ts: Ts,
) -> String {
    format!(
        "run {run_id}: {entity} {} in {}",
        window(start, end, ts),
        count(chunks, "chunk", "chunks")
    )
}

/// `run 42 chunk 3/37 [...): done: 2 pages, 1500 rows (1500 inserted, 0 updated, 0 skipped) in 1.20 s`,
/// ending `in 3.21 s over 2 attempts` when several executions worked on the chunk (its duration
/// is their sum).
pub fn chunk_done(c: &ChunkDone, ts: Ts) -> String {
    let over = if c.attempts > 1 {
        format!(" over {} attempts", c.attempts)
    } else {
        String::new()
    };
    format!(
        "{}: done: {}, {} ({} inserted, {} updated, {} skipped) in {:.2} s{over}",
        chunk_head(
            c.run_id,
            c.chunk,
            c.chunks_total,
            c.window_start,
            c.window_end,
            ts
        ),
        count(c.pages, "page", "pages"),
        count(c.rows, "row", "rows"),
        c.inserted,
        c.updated,
        c.skipped,
        c.seconds
    )
}

/// `run 42: 3 of 37 chunks done, 2 running; 41 pages, 40000 rows so far (812 rows/s)`;
/// `rows_per_second` is this execution's pace.
pub fn progress(p: &RunProgress, rows_per_second: f64) -> String {
    format!(
        "run {}: {} of {} done, {} running; {}, {} so far ({:.0} rows/s)",
        p.run_id,
        p.done,
        count(p.chunks_total, "chunk", "chunks"),
        p.running,
        count(p.pages, "page", "pages"),
        count(p.rows, "row", "rows"),
        rows_per_second
    )
}

/// `run 42 succeeded: 37 chunks, 80 pages, 79123 rows (...) in 61.02 s`.
pub fn succeeded(t: &RunTotals) -> String {
    format!(
        "run {} succeeded: {}, {}, {} ({} inserted, {} updated, {} skipped) in {:.2} s",
        t.run_id,
        count(t.chunks, "chunk", "chunks"),
        count(t.pages, "page", "pages"),
        count(t.rows, "row", "rows"),
        t.inserted,
        t.updated,
        t.skipped,
        t.seconds
    )
}

/// `run 42 already succeeded; nothing to resume ...`.
pub fn already_succeeded(run_id: i64) -> String {
    format!(
        "run {run_id} already succeeded; nothing to resume (its volumetry is unchanged; start a new run to fetch its window again)"
    )
}

/// A request sent again after a backoff, as the run records it in `qbo.runs.progress` (the note
/// `qbo.progress.detail` shows, [`backoff_note`]) and as its NOTICE reports it ([`backoff`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub chunk: i32,
    pub chunks_total: i32,
    /// STARTPOSITION of the page asked (0: a `count(*)` query).
    pub start_position: u32,
    /// What failed, as `QboError::short` says it: `HTTP 503`, `a timeout`, `a network error`,
    /// `an unusable response` (never a response body).
    pub cause: String,
    /// The wait before the next attempt, in seconds.
    pub seconds: f64,
    /// This request's retry number (1 for the first retry) and the most it gets.
    pub retry: u32,
    pub max: u32,
    /// Retries of this execution of the run so far, this one included (numbers them, so that
    /// whoever reports a subset can say how many it left out).
    pub run_retries: u64,
    /// Throttled: for how long (ms, `qbo.throttle_wait_ms`) the run rides it out; `retry` then
    /// numbers the waits of the throttling episode and `max` is 0.
    pub throttle_ms: Option<u64>,
}

/// The note committed to `qbo.runs.progress`:
/// `chunk 3/37 start 1: backing off 1.20 s after HTTP 429 (retry 1/6; retries this execution: 4)`.
/// Throttled: `chunk 3/37 start 1: backing off 1.20 s after HTTP 429 (throttled, wait 2 of at
/// most 70000 ms; retries this execution: 4)`.
/// `qbo.progress` reads its state from it (`backing off`, `HTTP 429`); [`parse_backoff_note`]
/// reads it back.
pub fn backoff_note(b: &Backoff) -> String {
    let which = match b.throttle_ms {
        Some(ms) => format!("throttled, wait {} of at most {ms} ms", b.retry),
        None => format!("retry {}/{}", b.retry, b.max),
    };
    format!(
        "chunk {}/{} start {}: backing off {:.2} s after {} ({which}; retries this execution: {})",
        b.chunk, b.chunks_total, b.start_position, b.seconds, b.cause, b.run_retries
    )
}

/// The [`Backoff`] a note of [`backoff_note`] records; `None` for any other note.
pub fn parse_backoff_note(note: &str) -> Option<Backoff> {
    let rest = note.strip_prefix("chunk ")?;
    let (chunk, rest) = rest.split_once('/')?;
    let (total, rest) = rest.split_once(" start ")?;
    let (start, rest) = rest.split_once(": backing off ")?;
    let (seconds, rest) = rest.split_once(" s after ")?;
    let (cause, which, rest) = match rest.rsplit_once(" (retry ") {
        Some((cause, rest)) => {
            let (retry, rest) = rest.split_once('/')?;
            let (max, rest) = rest.split_once("; retries this execution: ")?;
            (cause, (retry.parse().ok()?, max.parse().ok()?, None), rest)
        }
        None => {
            let (cause, rest) = rest.rsplit_once(" (throttled, wait ")?;
            let (retry, rest) = rest.split_once(" of at most ")?;
            let (ms, rest) = rest.split_once(" ms; retries this execution: ")?;
            (
                cause,
                (retry.parse().ok()?, 0, Some(ms.parse().ok()?)),
                rest,
            )
        }
    };
    let run_retries = rest.strip_suffix(')')?;
    Some(Backoff {
        chunk: chunk.parse().ok()?,
        chunks_total: total.parse().ok()?,
        start_position: start.parse().ok()?,
        cause: cause.to_owned(),
        seconds: seconds.parse().ok()?,
        retry: which.0,
        max: which.1,
        run_retries: run_retries.parse().ok()?,
        throttle_ms: which.2,
    })
}

/// What failed, as a NOTICE says it.
fn cause(short: &str) -> String {
    match short {
        "a timeout" => "timeout waiting for QuickBooks".to_owned(),
        "a network error" => "network error talking to QuickBooks".to_owned(),
        "an unusable response" => "unusable response from QuickBooks".to_owned(),
        s if s.starts_with("HTTP ") => format!("{s} from QuickBooks"),
        s => s.to_owned(),
    }
}

/// `run 42 chunk 3/37 [...): HTTP 503 from QuickBooks on the page at start position 1; retrying
/// in 1.20 s (attempt 2 of 7)`, ending `(attempt 2 of 7; 9 other retries not reported)` when
/// retries were left out since the last such line ([`BackoffGate`]). Throttled: `run 42 chunk
/// 3/37 [...): throttled by QuickBooks (HTTP 429) on the page at start position 1; waiting
/// 4.20 s before trying again (wait 2; gives up after 70 s of throttling)`.
pub fn backoff(
    run_id: i64,
    b: &Backoff,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    unreported: u64,
    ts: Ts,
) -> String {
    let what = if b.start_position == 0 {
        "on a count(*) query".to_owned()
    } else {
        format!("on the page at start position {}", b.start_position)
    };
    let left_out = if unreported > 0 {
        format!(
            "; {} not reported",
            count(unreported as i64, "other retry", "other retries")
        )
    } else {
        String::new()
    };
    let head = chunk_head(run_id, b.chunk, b.chunks_total, start, end, ts);
    if let Some(ms) = b.throttle_ms {
        return format!(
            "{head}: throttled by QuickBooks ({}) {what}; waiting {:.2} s before trying again (wait {}; gives up after {} s of throttling{left_out})",
            b.cause,
            b.seconds,
            b.retry,
            ms as f64 / 1000.0
        );
    }
    format!(
        "{head}: {} {what}; retrying in {:.2} s (attempt {} of {}{left_out})",
        cause(&b.cause),
        b.seconds,
        b.retry + 1,
        b.max + 1
    )
}

/// At most one backoff NOTICE per [`BackoffGate::EVERY`] for a run: a storm of throttled requests
/// (ten in flight answered 429 at once) prints one line, and the next line says how many retries
/// it did not report. Each retry is offered once, numbered by [`Backoff::run_retries`].
#[derive(Debug, Default)]
pub struct BackoffGate {
    last: Option<Instant>,
    /// `run_retries` of the last retry offered, and of the last one reported.
    offered: u64,
    reported: u64,
}

impl BackoffGate {
    pub const EVERY: Duration = Duration::from_secs(5);

    /// Whether retry number `run_retries` is reported at `now`: `Some(n)`, with `n` retries left
    /// out since the last one reported. A number offered before is never reported again.
    pub fn offer(&mut self, run_retries: u64, now: Instant) -> Option<u64> {
        if run_retries <= self.offered {
            return None;
        }
        self.offered = run_retries;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return None;
        }
        let unreported = run_retries.saturating_sub(self.reported + 1);
        self.reported = run_retries;
        self.last = Some(now);
        Some(unreported)
    }
}

/// When the run-level [`progress`] line is due, and this execution's pace: at most every
/// `interval` (`qbo.progress_interval_ms`; zero: whenever pages were committed since the last
/// line), counted from the start of the execution.
#[derive(Debug)]
pub struct ProgressClock {
    interval: Duration,
    started: Instant,
    last: Instant,
    /// Rows of the run when this execution started (a resume's earlier rows are not its pace).
    rows_base: i64,
}

impl ProgressClock {
    pub fn new(interval: Duration, rows_base: i64, now: Instant) -> Self {
        ProgressClock {
            interval,
            started: now,
            last: now,
            rows_base,
        }
    }

    /// Whether a line is due at `now`, pages having been committed since the last one.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= self.interval
    }

    /// The line for `p` at `now`, the next one being due an interval later.
    pub fn line(&mut self, p: &RunProgress, now: Instant) -> String {
        self.last = now;
        let secs = now.saturating_duration_since(self.started).as_secs_f64();
        let rate = if secs > 0.0 {
            (p.rows - self.rows_base).max(0) as f64 / secs
        } else {
            0.0
        };
        progress(p, rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::time::utc_ts;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, d, h, 0, 0).single().unwrap()
    }

    fn done(pages: i32, rows: i64, attempts: i32) -> ChunkDone {
        ChunkDone {
            run_id: 42,
            chunk: 3,
            chunks_total: 37,
            window_start: at(15, 0),
            window_end: at(22, 6),
            pages,
            rows,
            inserted: rows,
            updated: 0,
            skipped: 0,
            seconds: 1.2,
            attempts,
        }
    }

    #[test]
    fn lines_read_as_documented() {
        assert_eq!(
            opening(42, "Invoice", at(1, 0), at(20, 0), 3, &utc_ts),
            "run 42: Invoice [2025-01-01 00:00:00+00 → 2025-01-20 00:00:00+00) in 3 chunks"
        );
        assert_eq!(
            chunk_done(&done(2, 1500, 1), &utc_ts),
            "run 42 chunk 3/37 [2025-01-15 00:00:00+00 → 2025-01-22 06:00:00+00): done: 2 pages, 1500 rows (1500 inserted, 0 updated, 0 skipped) in 1.20 s"
        );
        assert_eq!(
            chunk_done(&done(3, 2000, 2), &utc_ts),
            "run 42 chunk 3/37 [2025-01-15 00:00:00+00 → 2025-01-22 06:00:00+00): done: 3 pages, 2000 rows (2000 inserted, 0 updated, 0 skipped) in 1.20 s over 2 attempts"
        );
        let t = RunTotals {
            run_id: 42,
            chunks: 37,
            pages: 80,
            rows: 79123,
            inserted: 79000,
            updated: 100,
            skipped: 23,
            seconds: 61.016,
        };
        assert_eq!(
            succeeded(&t),
            "run 42 succeeded: 37 chunks, 80 pages, 79123 rows (79000 inserted, 100 updated, 23 skipped) in 61.02 s"
        );
        let p = RunProgress {
            run_id: 5,
            chunks_total: 9,
            done: 3,
            running: 2,
            pages: 41,
            rows: 40000,
            note: None,
        };
        assert_eq!(
            progress(&p, 812.4),
            "run 5: 3 of 9 chunks done, 2 running; 41 pages, 40000 rows so far (812 rows/s)"
        );
    }

    #[test]
    fn one_of_anything_is_singular() {
        assert_eq!(
            opening(7, "Item", at(1, 0), at(2, 0), 1, &utc_ts),
            "run 7: Item [2025-01-01 00:00:00+00 → 2025-01-02 00:00:00+00) in 1 chunk"
        );
        assert_eq!(
            chunk_done(&done(1, 1, 1), &utc_ts),
            "run 42 chunk 3/37 [2025-01-15 00:00:00+00 → 2025-01-22 06:00:00+00): done: 1 page, 1 row (1 inserted, 0 updated, 0 skipped) in 1.20 s"
        );
        let t = RunTotals {
            run_id: 7,
            chunks: 1,
            pages: 1,
            rows: 0,
            inserted: 0,
            updated: 0,
            skipped: 0,
            seconds: 0.5,
        };
        assert_eq!(
            succeeded(&t),
            "run 7 succeeded: 1 chunk, 1 page, 0 rows (0 inserted, 0 updated, 0 skipped) in 0.50 s"
        );
        let p = RunProgress {
            run_id: 7,
            chunks_total: 1,
            done: 0,
            running: 1,
            pages: 1,
            rows: 1,
            note: None,
        };
        assert_eq!(
            progress(&p, 2.0),
            "run 7: 0 of 1 chunk done, 1 running; 1 page, 1 row so far (2 rows/s)"
        );
    }

    fn b(start_position: u32, cause: &str, seconds: f64) -> Backoff {
        Backoff {
            chunk: 2,
            chunks_total: 9,
            start_position,
            cause: cause.to_owned(),
            seconds,
            retry: 1,
            max: 6,
            run_retries: 4,
            throttle_ms: None,
        }
    }

    #[test]
    fn a_throttled_backoff_says_so_and_reads_back() {
        let x = Backoff {
            retry: 2,
            max: 0,
            throttle_ms: Some(70_000),
            ..b(1, "HTTP 429", 4.2)
        };
        let note = backoff_note(&x);
        assert_eq!(
            note,
            "chunk 2/9 start 1: backing off 4.20 s after HTTP 429 (throttled, wait 2 of at most 70000 ms; retries this execution: 4)"
        );
        assert_eq!(parse_backoff_note(&note), Some(x.clone()));
        assert_eq!(
            backoff(5, &x, at(8, 0), at(15, 0), 3, &utc_ts),
            "run 5 chunk 2/9 [2025-01-08 00:00:00+00 → 2025-01-15 00:00:00+00): throttled by QuickBooks (HTTP 429) on the page at start position 1; waiting 4.20 s before trying again (wait 2; gives up after 70 s of throttling; 3 other retries not reported)"
        );
        let y = Backoff {
            max: 0,
            throttle_ms: Some(2_500),
            ..b(0, "HTTP 403", 1.0)
        };
        assert_eq!(parse_backoff_note(&backoff_note(&y)), Some(y.clone()));
        assert!(backoff(5, &y, at(8, 0), at(15, 0), 0, &utc_ts).ends_with(
            "throttled by QuickBooks (HTTP 403) on a count(*) query; waiting 1.00 s before trying again (wait 1; gives up after 2.5 s of throttling)"
        ));
    }

    #[test]
    fn a_backoff_note_reads_back_and_its_notice_says_what_how_long_and_which_attempt() {
        let x = b(1001, "HTTP 503", 1.2);
        let note = backoff_note(&x);
        assert_eq!(
            note,
            "chunk 2/9 start 1001: backing off 1.20 s after HTTP 503 (retry 1/6; retries this execution: 4)"
        );
        assert_eq!(parse_backoff_note(&note), Some(x.clone()));
        assert_eq!(parse_backoff_note("chunk 1 page 3 committed"), None);
        assert_eq!(
            backoff(5, &x, at(8, 0), at(15, 0), 0, &utc_ts),
            "run 5 chunk 2/9 [2025-01-08 00:00:00+00 → 2025-01-15 00:00:00+00): HTTP 503 from QuickBooks on the page at start position 1001; retrying in 1.20 s (attempt 2 of 7)"
        );
        assert_eq!(
            backoff(5, &b(0, "a timeout", 0.004), at(8, 0), at(15, 0), 1, &utc_ts),
            "run 5 chunk 2/9 [2025-01-08 00:00:00+00 → 2025-01-15 00:00:00+00): timeout waiting for QuickBooks on a count(*) query; retrying in 0.00 s (attempt 2 of 7; 1 other retry not reported)"
        );
        let y = b(1, "a network error", 30.0);
        assert_eq!(parse_backoff_note(&backoff_note(&y)), Some(y.clone()));
        assert!(backoff(5, &y, at(8, 0), at(15, 0), 9, &utc_ts).ends_with(
            "network error talking to QuickBooks on the page at start position 1; retrying in 30.00 s (attempt 2 of 7; 9 other retries not reported)"
        ));
    }

    #[test]
    fn a_storm_of_retries_is_reported_once_per_interval_with_the_count_left_out() {
        let t0 = Instant::now();
        let mut g = BackoffGate::default();
        // ten requests throttled at once: the first is reported
        assert_eq!(g.offer(1, t0), Some(0));
        for n in 2..=10 {
            assert_eq!(g.offer(n, t0 + Duration::from_millis(n * 10)), None);
        }
        // a retry offered again (a relay reading the same note twice) is not reported again
        assert_eq!(g.offer(10, t0 + Duration::from_secs(6)), None);
        // the next one after the interval says how many were left out
        assert_eq!(g.offer(11, t0 + Duration::from_secs(6)), Some(9));
        assert_eq!(g.offer(12, t0 + Duration::from_secs(7)), None);
        // a relay that saw only some notes: numbers it never saw count as left out too
        assert_eq!(g.offer(20, t0 + Duration::from_secs(12)), Some(8));
    }

    #[test]
    fn the_progress_line_is_due_once_per_interval_at_this_executions_pace() {
        let t0 = Instant::now();
        let mut c = ProgressClock::new(Duration::from_secs(10), 1000, t0);
        assert!(!c.due(t0 + Duration::from_secs(9)));
        assert!(c.due(t0 + Duration::from_secs(10)));
        let p = RunProgress {
            run_id: 5,
            chunks_total: 9,
            done: 3,
            running: 2,
            pages: 41,
            rows: 9120,
            note: None,
        };
        // 8120 rows of this execution in 10 s
        assert_eq!(
            c.line(&p, t0 + Duration::from_secs(10)),
            "run 5: 3 of 9 chunks done, 2 running; 41 pages, 9120 rows so far (812 rows/s)"
        );
        assert!(!c.due(t0 + Duration::from_secs(19)));
        assert!(c.due(t0 + Duration::from_secs(20)));
        let every_page = ProgressClock::new(Duration::ZERO, 0, t0);
        assert!(every_page.due(t0));
    }
}
