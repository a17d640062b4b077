//! Command-line flags and the runtime configuration built from them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, FixedOffset, Utc};
use clap::Parser;

use crate::entity::Entity;
use crate::faults::FaultSpec;

/// Refresh-token rotation policy of the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The refresh token never changes.
    Never,
    /// Every successful refresh returns a new refresh token and retires the old one.
    Always,
    /// Every N-th use of the same refresh token rotates it.
    Every(u32),
}

impl std::str::FromStr for Rotation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(Rotation::Never),
            "always" => Ok(Rotation::Always),
            _ => match s.strip_prefix("every=").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Ok(Rotation::Every(n)),
                _ => Err(format!(
                    "invalid --rotate-refresh value {s:?}: expected never, always or every=N (N >= 1)"
                )),
            },
        }
    }
}

/// `qbo-emulator`: a local stand-in for the QuickBooks Online v3 API and Intuit's OAuth2 endpoint.
///
/// Fault grammar (`--faults`, `POST /__emulator/faults {"spec":"..."}`): a comma-separated list of
/// `[token:]KIND[=ARG][:PROB][@nth=N][/every=N]`. KIND is one of 429json 429xml 429json-ra 429xml-ra
/// 429-radate 403throttle 500json 500xml 500html 502json 502xml 502html 503json 503xml 503html
/// 504json 504xml 504html reset hang truncated truncated-conn fault200 401. `hang=MS` delays MS
/// milliseconds then answers (plain `hang` never answers); `429json-ra=S` sets Retry-After to S
/// seconds (default 1). PROB in [0,1] is decided from hash(seed, request text, attempt number);
/// `@nth=N` fires on the N-th matching request only, `/every=N` on every N-th. Example:
/// `429xml:0.1,503html@nth=3,token:503html@nth=1`.
/// Token endpoint only (write them `token:KIND`): badexpires (a refresh that rotates the refresh
/// token, answered 200 with "expires_in":"3600" as a string), expires0 (a normal refresh answered
/// with "expires_in":0), echoauth (400 invalid_request whose error_description echoes the
/// Authorization header and form body verbatim), flood[=BYTES] (200 whose body streams without
/// end: BYTES, default 268435456, or until the client hangs up).
/// Queries only: countlie=N makes every second a query pins (MetaData.LastUpdatedTime = 'T')
/// claim N records: count(*) answers N (an `Id IN` count also counts the made-up Ids it lists),
/// and pages past the second's real records are filled with made-up records of fresh Ids
/// (900000000000 + position, SyncToken 0, LastUpdatedTime T) up to position N. Other queries are
/// untouched; it is exempt from --max-consecutive-faults and counted in stats when it changes
/// an answer. Example: countlie=1000000000000 (a second that never ends). windowlie=N makes
/// every count(*) of a window (not pinned to one second) answer N, pages untouched; exempt and
/// counted the same way.
#[derive(Debug, Parser, Clone)]
#[command(name = "qbo-emulator", version, verbatim_doc_comment)]
pub struct Cli {
    /// Address to listen on (127.0.0.1 only on this machine; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seed of every pseudo-random choice (data, shuffles of ties, faults).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Company (realm) id to serve; repeatable. Default: 9341452000000001 and 9341452000000002.
    #[arg(long = "realm")]
    pub realms: Vec<String>,
    /// Records per entity and realm, ENTITY=N; repeatable. Defaults: Invoice 600, TimeActivity
    /// and Attachable 60, other transaction entities 250, name-list entities 60.
    #[arg(long = "records", value_parser = parse_records)]
    pub records: Vec<(Entity, usize)>,
    /// Start of the range in which record LastUpdatedTime values fall (RFC 3339).
    #[arg(long, default_value = "2025-01-01T00:00:00Z", value_parser = parse_instant)]
    pub data_from: DateTime<Utc>,
    /// End (exclusive) of the range in which LastUpdatedTime values fall (RFC 3339).
    #[arg(long, default_value = "2025-09-11T00:00:00Z", value_parser = parse_instant)]
    pub data_to: DateTime<Utc>,
    /// UTC offset in which the company's timestamps are rendered, e.g. -07:00.
    #[arg(long, default_value = "-07:00", value_parser = parse_offset, allow_hyphen_values = true)]
    pub company_offset: FixedOffset,
    /// OAuth2 client id accepted by the token endpoint.
    #[arg(long, default_value = "emu-client-id")]
    pub client_id: String,
    /// OAuth2 client secret accepted by the token endpoint.
    #[arg(long, default_value = "emu-client-secret")]
    pub client_secret: String,
    /// Initial valid refresh token.
    #[arg(long, default_value = "emu-refresh-token-0")]
    pub refresh_token: String,
    /// Refresh-token rotation: never, always or every=N.
    #[arg(long, default_value = "never")]
    pub rotate_refresh: Rotation,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub access_token_ttl: u64,
    /// Response time of every API answer, in milliseconds (with the per-row part: the emulator's
    /// own work on the answer counts in it, and what is left is slept).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra response time per returned row, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_per_row_us: u64,
    /// Leave out the single-second bulk import (over 1000 records in one second) that tables of
    /// more than 2000 records otherwise get: for benchmarks that measure throughput on evenly
    /// spread data.
    #[arg(long, default_value_t = false)]
    pub no_big_burst: bool,
    /// Fault-injection spec (grammar above); empty = none.
    #[arg(long, default_value = "", value_parser = parse_faults)]
    pub faults: FaultSpec,
    /// Requests per realm per sliding 60-second window before 429.
    #[arg(long, default_value_t = 500)]
    pub rate_limit: usize,
    /// Length of that sliding window in milliseconds (Intuit's: 60000); tests shorten it so that
    /// riding out a full window does not take a minute.
    #[arg(long, default_value_t = 60_000)]
    pub rate_window_ms: u64,
    /// Requests per realm per sliding 1-second window before 429 (Intuit: 10 per second per realm
    /// and app).
    #[arg(long, default_value_t = 10)]
    pub rate_limit_per_second: usize,
    /// Concurrent in-flight requests per realm before 429.
    #[arg(long, default_value_t = 10)]
    pub max_concurrent: usize,
    /// Most consecutive injected faults one identical request can receive.
    #[arg(long, default_value_t = 4)]
    pub max_consecutive_faults: u32,
}

fn parse_records(s: &str) -> Result<(Entity, usize), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid --records value {s:?}: expected ENTITY=N"))?;
    let entity = Entity::from_name(name)
        .ok_or_else(|| format!("invalid --records value {s:?}: unknown entity {name:?}"))?;
    let n = n
        .parse::<usize>()
        .map_err(|_| format!("invalid --records value {s:?}: {n:?} is not a count"))?;
    Ok((entity, n))
}

/// Parses an RFC 3339 instant.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("invalid timestamp {s:?}: {e}"))
}

/// Parses a UTC offset such as `-07:00`, `+05:30` or `Z`.
pub fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let bad = || format!("invalid offset {s:?}: expected +HH:MM or -HH:MM");
    if s == "Z" || s == "z" {
        return Ok(FixedOffset::east_opt(0).unwrap());
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

fn parse_faults(s: &str) -> Result<FaultSpec, String> {
    FaultSpec::parse(s).map_err(|e| format!("invalid --faults spec: {e}"))
}

/// Validated configuration of one emulator instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub seed: u64,
    pub realms: Vec<String>,
    pub records: BTreeMap<Entity, usize>,
    pub data_from: DateTime<Utc>,
    pub data_to: DateTime<Utc>,
    pub offset: FixedOffset,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub rotate_refresh: Rotation,
    pub access_token_ttl: u64,
    pub latency_ms: u64,
    pub latency_per_row_us: u64,
    pub no_big_burst: bool,
    pub faults: FaultSpec,
    pub rate_limit: usize,
    pub rate_window_ms: u64,
    pub rate_limit_per_second: usize,
    pub max_concurrent: usize,
    pub max_consecutive_faults: u32,
}

/// Default realms served when `--realm` is absent.
pub const DEFAULT_REALMS: [&str; 2] = ["9341452000000001", "9341452000000002"];

impl Default for Config {
    fn default() -> Self {
        Cli::parse_from(["qbo-emulator"])
            .into_config()
            .expect("default config is valid")
    }
}

impl Cli {
    /// Validates the flags and fills defaults.
    pub fn into_config(self) -> Result<Config> {
        if self.data_from >= self.data_to {
            bail!(
                "invalid --data-from/--data-to: {} is not before {}",
                self.data_from,
                self.data_to
            );
        }
        let mut realms = if self.realms.is_empty() {
            DEFAULT_REALMS.iter().map(|s| s.to_string()).collect()
        } else {
            self.realms
        };
        for r in &realms {
            if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
                return Err(anyhow!("invalid --realm value {r:?}: expected digits"));
            }
        }
        realms.dedup();
        let mut records: BTreeMap<Entity, usize> = Entity::ALL
            .iter()
            .map(|e| (*e, e.default_count()))
            .collect();
        for (e, n) in self.records {
            records.insert(e, n);
        }
        if self.rate_window_ms == 0 {
            bail!("invalid --rate-window-ms: must be at least 1");
        }
        if self.rate_limit == 0 || self.rate_limit_per_second == 0 || self.max_concurrent == 0 {
            bail!(
                "invalid --rate-limit/--rate-limit-per-second/--max-concurrent: must be at least 1"
            );
        }
        Ok(Config {
            listen: self.listen,
            seed: self.seed,
            realms,
            records,
            data_from: self.data_from,
            data_to: self.data_to,
            offset: self.company_offset,
            client_id: self.client_id,
            client_secret: self.client_secret,
            refresh_token: self.refresh_token,
            rotate_refresh: self.rotate_refresh,
            access_token_ttl: self.access_token_ttl,
            latency_ms: self.latency_ms,
            latency_per_row_us: self.latency_per_row_us,
            no_big_burst: self.no_big_burst,
            faults: self.faults,
            rate_limit: self.rate_limit,
            rate_window_ms: self.rate_window_ms,
            rate_limit_per_second: self.rate_limit_per_second,
            max_concurrent: self.max_concurrent,
            max_consecutive_faults: self.max_consecutive_faults,
        })
    }
}

impl Config {
    /// Builds a config from command-line style arguments (without the program name).
    pub fn from_args<I, S>(args: I) -> Result<Config>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["qbo-emulator".into()];
        all.extend(args.into_iter().map(Into::into));
        let cli = Cli::try_parse_from(all).context("bad flags")?;
        cli.into_config()
    }
}
