//! Conversions between Postgres' timestamptz and chrono.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;

/// Converts a chrono instant to a Postgres timestamptz.
pub fn tstz(t: DateTime<Utc>) -> TimestampWithTimeZone {
    // microseconds since 2000-01-01, Postgres' epoch
    let pg_epoch_offset_us: i64 = 946_684_800_000_000;
    let us = t.timestamp_micros() - pg_epoch_offset_us;
    // Every instant chrono represents in the range we use converts; out of range saturates.
    TimestampWithTimeZone::try_from(us).unwrap_or_else(|_| {
        TimestampWithTimeZone::try_from(0i64).expect("the Postgres epoch is a valid timestamptz")
    })
}

/// Converts a Postgres timestamptz to a chrono instant (infinite values are rejected by callers).
pub fn from_tstz(t: TimestampWithTimeZone) -> Option<DateTime<Utc>> {
    let us: i64 = t.into_inner();
    DateTime::<Utc>::from_timestamp_micros(us + 946_684_800_000_000)
}

/// An instant as this session shows a `timestamptz` under `DateStyle = ISO`, in its `TimeZone`
/// and with its offset: `2025-01-01 00:00:00-06`, `2025-01-01 11:30:00+05:30`, a fraction only
/// when the instant has one (`2025-01-01 00:00:00.5+00`). Postgres does the zone arithmetic
/// (`to_char` in the session), so a NOTICE reads like the result grid next to it. Should the
/// query fail, the instant in UTC (`+00`).
pub fn session_ts(t: DateTime<Utc>) -> String {
    let parts = crate::pg::spi::pinned(|| {
        pgrx::Spi::get_two_with_args::<String, String>(
            "SELECT pg_catalog.to_char($1, 'YYYY-MM-DD HH24:MI:SS'), pg_catalog.to_char($1, 'OF')",
            &[tstz(t).into()],
        )
    });
    match parts {
        Ok((Some(main), Some(offset))) => format!("{main}{}{offset}", fraction(t)),
        _ => utc_ts(t),
    }
}

/// The fraction of a second of `t` as Postgres prints it (`.5`, `.000123`), empty when none.
fn fraction(t: DateTime<Utc>) -> String {
    match t.timestamp_subsec_micros() {
        0 => String::new(),
        us => format!(".{us:06}").trim_end_matches('0').to_owned(),
    }
}

/// [`session_ts`] without a database: the instant in UTC, as a session whose `TimeZone` is UTC
/// shows it (what unit tests format with, and the fallback of `session_ts`).
pub fn utc_ts(t: DateTime<Utc>) -> String {
    format!("{}{}+00", t.format("%Y-%m-%d %H:%M:%S"), fraction(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn utc_instants_read_as_a_utc_session_shows_them() {
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 6, 0, 0).single().unwrap();
        assert_eq!(utc_ts(t), "2025-01-01 06:00:00+00");
        let half = t + chrono::Duration::milliseconds(500);
        assert_eq!(utc_ts(half), "2025-01-01 06:00:00.5+00");
        let us = t + chrono::Duration::microseconds(123);
        assert_eq!(utc_ts(us), "2025-01-01 06:00:00.000123+00");
    }
}
