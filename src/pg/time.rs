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
