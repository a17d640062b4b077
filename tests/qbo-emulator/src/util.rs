//! Small shared helpers: stable hashing, timestamp rendering, JSON string escaping.

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};

/// SplitMix64 finaliser: a good, stable 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable (across runs, platforms and Rust versions) hash of a sequence of parts.
#[derive(Debug, Clone, Copy)]
pub struct StableHash(u64);

impl StableHash {
    pub fn new(seed: u64) -> Self {
        StableHash(mix64(seed))
    }
    pub fn u64(self, x: u64) -> Self {
        StableHash(mix64(self.0 ^ mix64(x)))
    }
    pub fn str(self, s: &str) -> Self {
        // FNV-1a over the bytes, then mixed in.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.u64(h ^ (s.len() as u64).rotate_left(32))
    }
    pub fn finish(self) -> u64 {
        self.0
    }
    /// A float uniformly in [0, 1).
    pub fn unit(self) -> f64 {
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Renders an epoch-second instant as QBO does in payloads: `2025-03-04T05:06:07-07:00`.
pub fn render_ts(epoch: i64, offset: &FixedOffset) -> String {
    let dt = offset
        .timestamp_opt(epoch, 0)
        .single()
        .expect("valid timestamp");
    dt.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Renders an instant with milliseconds, as in the `time` field of responses.
pub fn render_time_ms(now: DateTime<Utc>, offset: &FixedOffset) -> String {
    now.with_timezone(offset)
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// The date (company-local) of an epoch-second instant, `YYYY-MM-DD`.
pub fn render_date(epoch: i64, offset: &FixedOffset) -> String {
    let dt = offset
        .timestamp_opt(epoch, 0)
        .single()
        .expect("valid timestamp");
    dt.format("%Y-%m-%d").to_string()
}

/// Days since the epoch of the company-local date of an instant.
pub fn local_day(epoch: i64, offset: &FixedOffset) -> i64 {
    (epoch + i64::from(offset.local_minus_utc())).div_euclid(86_400)
}

/// Appends `s` as a JSON string literal (with quotes) to `out`.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON string literal of `s`.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Renders cents as a decimal amount with two places, e.g. 1230 -> `12.30`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// A request id shaped like Intuit's `intuit_tid`: `1-5f7349e0-0fd2bee86a8a83c67a77fbb2`.
pub fn intuit_tid(seq: u64, seed: u64) -> String {
    let h = StableHash::new(seed).u64(seq).finish();
    let h2 = mix64(h);
    format!(
        "1-{:08x}-{:016x}{:08x}",
        Utc::now().timestamp() as u32,
        h,
        (h2 >> 32) as u32
    )
}

/// Now, in microseconds since the Unix epoch (the request log's `at_us`).
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_renders_two_places() {
        assert_eq!(money(1230), "12.30");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-100), "-1.00");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n✓"), "\"a\\\"b\\\\c\\n✓\"");
    }

    #[test]
    fn ts_rendering() {
        let off = FixedOffset::west_opt(7 * 3600).unwrap();
        assert_eq!(render_ts(0, &off), "1969-12-31T17:00:00-07:00");
        let utc = FixedOffset::east_opt(0).unwrap();
        assert_eq!(render_ts(0, &utc), "1970-01-01T00:00:00+00:00");
    }
}
