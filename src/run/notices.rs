//! The text of progress messages: one formatter per kind of line, used by every entry point (the
//! `CALL`'s own NOTICEs, and the relay of a worker's progress by the session that started it), so
//! a line reads the same wherever it is printed. The ledger supplies the rows.

use crate::store::ledger::{ChunkDone, PageLine, RunTotals};
use chrono::{DateTime, Utc};

/// `2025-01-15` for a UTC midnight, the full instant otherwise.
pub fn short_ts(t: DateTime<Utc>) -> String {
    if t.time() == chrono::NaiveTime::MIN {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// `run 42 chunk 3/37 [2025-01-15 → 2025-01-22)`.
fn chunk_head(
    run_id: i64,
    chunk: i32,
    total: i32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    format!(
        "run {run_id} chunk {chunk}/{total} [{} → {})",
        short_ts(start),
        short_ts(end)
    )
}

/// `run 42 chunk 3/37 [2025-01-15 → 2025-01-22): page 1: 1000 rows in 0.48 s (start=1)`.
pub fn page(p: &PageLine) -> String {
    format!(
        "{}: page {}: {} rows in {:.2} s (start={})",
        chunk_head(
            p.run_id,
            p.chunk,
            p.chunks_total,
            p.window_start,
            p.window_end
        ),
        p.page,
        p.rows,
        p.seconds,
        p.start_position
    )
}

/// `run 42 chunk 3/37 [...): done: 2 pages, 1500 rows (1500 inserted, 0 updated, 0 skipped) in 1.20 s`.
pub fn chunk_done(c: &ChunkDone) -> String {
    format!(
        "{}: done: {} pages, {} rows ({} inserted, {} updated, {} skipped) in {:.2} s",
        chunk_head(
            c.run_id,
            c.chunk,
            c.chunks_total,
            c.window_start,
            c.window_end
        ),
        c.pages,
        c.rows,
        c.inserted,
        c.updated,
        c.skipped,
        c.seconds
    )
}

/// `run 42 succeeded: 37 chunks, 80 pages, 79123 rows (...) in 61.02 s`.
pub fn succeeded(t: &RunTotals) -> String {
    format!(
        "run {} succeeded: {} chunks, {} pages, {} rows ({} inserted, {} updated, {} skipped) in {:.2} s",
        t.run_id, t.chunks, t.pages, t.rows, t.inserted, t.updated, t.skipped, t.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, d, h, 0, 0).single().unwrap()
    }

    #[test]
    fn lines_read_as_documented() {
        let p = PageLine {
            run_id: 42,
            chunk: 3,
            chunks_total: 37,
            window_start: at(15, 0),
            window_end: at(22, 6),
            page: 1,
            rows: 1000,
            seconds: 0.4801,
            start_position: 1,
        };
        assert_eq!(
            page(&p),
            "run 42 chunk 3/37 [2025-01-15 → 2025-01-22 06:00:00): page 1: 1000 rows in 0.48 s (start=1)"
        );
        let c = ChunkDone {
            run_id: 42,
            chunk: 3,
            chunks_total: 37,
            window_start: at(15, 0),
            window_end: at(22, 0),
            pages: 2,
            rows: 1500,
            inserted: 1400,
            updated: 60,
            skipped: 40,
            seconds: 1.2,
        };
        assert_eq!(
            chunk_done(&c),
            "run 42 chunk 3/37 [2025-01-15 → 2025-01-22): done: 2 pages, 1500 rows (1400 inserted, 60 updated, 40 skipped) in 1.20 s"
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
    }
}
