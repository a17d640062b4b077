//! Chunk planner: cuts a half-open window `[start, end)` into `chunk_days`-day chunks in UTC.
//!
//! Steps are exact multiples of 24 h in UTC, so time zones and DST never change the plan; the last
//! chunk is shorter when the window is not a multiple of the step. Each instant of the window
//! belongs to exactly one chunk.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::QboError;
use crate::query::literal_exact;

/// Most chunks one plan may have.
pub const MAX_CHUNKS: u64 = 100_000;

/// One chunk of a plan: the half-open interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// 1-based position in the plan.
    pub index: u32,
    /// Inclusive start (UTC).
    pub start: DateTime<Utc>,
    /// Exclusive end (UTC).
    pub end: DateTime<Utc>,
}

/// Plans the chunks of `[start, end)`, `chunk_days` days each (the last one may be shorter).
///
/// Errors ([`QboError::InvalidParameter`]): `end <= start`, `chunk_days < 1`, or more than
/// [`MAX_CHUNKS`] chunks.
pub fn plan_chunks(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    chunk_days: i32,
) -> Result<Vec<Chunk>, QboError> {
    if end <= start {
        return Err(QboError::InvalidParameter(format!(
            "fecha_fin ({}) must be later than fecha_inicio ({}): the window is the half-open interval [fecha_inicio, fecha_fin)",
            literal_exact(end),
            literal_exact(start)
        )));
    }
    if chunk_days < 1 {
        return Err(QboError::InvalidParameter(format!(
            "chunk_size must be at least 1 (days), got {chunk_days}"
        )));
    }
    let step_secs = i64::from(chunk_days) * 86_400;
    let step = TimeDelta::seconds(step_secs);
    let span = end - start;
    // Whole seconds, rounded up: the span is positive, so this is at least 1.
    let span_secs = span.num_seconds() + i64::from(span.subsec_nanos() > 0);
    let count =
        u64::try_from(span_secs.saturating_add(step_secs - 1) / step_secs).unwrap_or(u64::MAX);
    if count > MAX_CHUNKS {
        return Err(QboError::InvalidParameter(format!(
            "the window [{}, {}) cut into {chunk_days}-day chunks gives {count} chunks, more than the {MAX_CHUNKS} allowed: use a larger chunk_size or a shorter window",
            literal_exact(start),
            literal_exact(end)
        )));
    }
    let mut chunks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut cur = start;
    let mut index: u32 = 1;
    while cur < end {
        let next = cur.checked_add_signed(step).map_or(end, |n| n.min(end));
        chunks.push(Chunk {
            index,
            start: cur,
            end: next,
        });
        cur = next;
        index += 1;
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn exact_multiple() {
        let c = plan_chunks(t(2025, 1, 1, 0, 0, 0), t(2025, 1, 15, 0, 0, 0), 7).unwrap();
        assert_eq!(
            c,
            vec![
                Chunk {
                    index: 1,
                    start: t(2025, 1, 1, 0, 0, 0),
                    end: t(2025, 1, 8, 0, 0, 0)
                },
                Chunk {
                    index: 2,
                    start: t(2025, 1, 8, 0, 0, 0),
                    end: t(2025, 1, 15, 0, 0, 0)
                },
            ]
        );
    }

    #[test]
    fn last_chunk_shorter_and_contiguous() {
        let s = t(2024, 2, 27, 13, 30, 5);
        let e = t(2024, 3, 10, 1, 0, 0);
        let c = plan_chunks(s, e, 3).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].start, s);
        assert_eq!(c[1].start, t(2024, 3, 1, 13, 30, 5)); // leap day crossed in UTC steps
        assert_eq!(c.last().unwrap().end, e);
        assert_eq!(c.last().unwrap().start, t(2024, 3, 7, 13, 30, 5));
        for w in c.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_eq!(w[0].index + 1, w[1].index);
        }
    }

    #[test]
    fn tiny_window_one_chunk() {
        let s = t(2025, 1, 1, 0, 0, 0);
        let e = s + TimeDelta::microseconds(1);
        assert_eq!(
            plan_chunks(s, e, 7).unwrap(),
            vec![Chunk {
                index: 1,
                start: s,
                end: e
            }]
        );
    }

    #[test]
    fn rejects_empty_or_reversed_window() {
        let s = t(2025, 1, 1, 0, 0, 0);
        let e = plan_chunks(s, s, 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            "fecha_fin (2025-01-01T00:00:00+00:00) must be later than fecha_inicio (2025-01-01T00:00:00+00:00): the window is the half-open interval [fecha_inicio, fecha_fin)"
        );
        assert_eq!(e.sqlstate(), "22023");
        assert!(plan_chunks(s, t(2024, 12, 31, 23, 59, 59), 7).is_err());
    }

    #[test]
    fn rejects_bad_chunk_days() {
        let s = t(2025, 1, 1, 0, 0, 0);
        for d in [0, -1, i32::MIN] {
            let e = plan_chunks(s, t(2025, 2, 1, 0, 0, 0), d).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("chunk_size must be at least 1 (days), got {d}")
            );
        }
    }

    #[test]
    fn limits_chunk_count() {
        let s = t(2000, 1, 1, 0, 0, 0);
        // Exactly 100 000 one-day chunks is allowed, one more is not.
        assert_eq!(
            plan_chunks(s, s + TimeDelta::days(100_000), 1)
                .unwrap()
                .len(),
            100_000
        );
        let e =
            plan_chunks(s, s + TimeDelta::days(100_000) + TimeDelta::seconds(1), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the window [2000-01-01T00:00:00+00:00, 2273-10-16T00:00:01+00:00) cut into 1-day chunks gives 100001 chunks, more than the 100000 allowed: use a larger chunk_size or a shorter window"
        );
        // Extreme inputs do not overflow.
        let far =
            plan_chunks(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, i32::MAX).unwrap();
        assert_eq!(far.last().unwrap().end, DateTime::<Utc>::MAX_UTC);
        assert!(plan_chunks(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, 1).is_err());
    }
}
