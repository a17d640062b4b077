//! Settings (`qbo.*`), registered from `_PG_init`. The `qbo` prefix is reserved, so a misspelled
//! setting (`SET qbo.max_retrys = 3`) is an error instead of a silent no-op.
//!
//! The two host overrides are superuser-only (SUSET): a configurable outbound URL is an SSRF lever.
//! So are the realm's request limits: they are shared by every session of every role, and so is
//! the monthly request budget (`qbo.monthly_request_budget`, read by each execution, not stored
//! with the run: see [`Budget`]). And so is
//! the memory bound of a run (`qbo.max_buffer_mb`): it is what stands between the server and
//! answers from outside, and a backend killed for memory restarts every session of the cluster,
//! so the role asking for a run must not lift it. So is the number of pg_qbo background workers
//! (`qbo.max_workers`): the slots of `max_worker_processes` belong to the whole server.
//! Everything else is per session, with bounds. A run resolves the settings once, stores them in
//! `qbo.runs.settings` and hands them to its background worker: a session's `SET` does not reach a
//! worker, and a resume must behave like the original run.

use crate::pg::error::PgError;
use crate::pg::spi;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use qbo::client::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REQUESTS_PER_MINUTE, DEFAULT_MAX_REQUESTS_PER_SECOND,
};
use qbo::retry::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::time::Duration;

use qbo::budget::{DEFAULT_BUFFER_MB, MAX_BUFFER_MB, MIN_BUFFER_MB};

/// Intuit's production API host.
pub const PRODUCTION_API: &str = "https://quickbooks.api.intuit.com";
/// Intuit's sandbox API host.
pub const SANDBOX_API: &str = "https://sandbox-quickbooks.api.intuit.com";
/// Intuit's OAuth2 token endpoint (production and sandbox alike).
pub const TOKEN_URL: &str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer";

static API_BASE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TOKEN_URL_GUC: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(120_000);
static TOKEN_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(15_000);
static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(6);
static BACKOFF_BASE_MS: GucSetting<i32> = GucSetting::<i32>::new(500);
static BACKOFF_CAP_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static RETRY_AFTER_CAP_MS: GucSetting<i32> = GucSetting::<i32>::new(120_000);
static THROTTLE_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_THROTTLE_WAIT_MS as i32);
static MAX_REQUESTS_PER_MINUTE: GucSetting<i32> =
    GucSetting::<i32>::new(DEFAULT_MAX_REQUESTS_PER_MINUTE as i32);
static MAX_REQUESTS_PER_SECOND: GucSetting<i32> =
    GucSetting::<i32>::new(DEFAULT_MAX_REQUESTS_PER_SECOND as i32);
static MAX_IN_FLIGHT: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_IN_FLIGHT as i32);
static MONTHLY_REQUEST_BUDGET: GucSetting<i32> = GucSetting::<i32>::new(0);
static MONTHLY_REQUEST_WARN_PERCENT: GucSetting<i32> = GucSetting::<i32>::new(80);
static BUFFER_MB: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_BUFFER_MB as i32);
static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_WORKERS);
static PROGRESS_INTERVAL_MS: GucSetting<i32> =
    GucSetting::<i32>::new(DEFAULT_PROGRESS_INTERVAL_MS as i32);
static CITUS_DISTRIBUTE_RAW_TABLES: GucSetting<bool> = GucSetting::<bool>::new(true);
static SYNC_NON_CDC_INTERVAL_MS: GucSetting<i32> =
    GucSetting::<i32>::new(qbo::poll::DEFAULT_INTERVAL_MS as i32);

/// Default of `qbo.throttle_wait_ms`: Intuit asks to wait 60 s after a 429, plus a margin.
pub const DEFAULT_THROTTLE_WAIT_MS: u64 = 70_000;
/// Default of `qbo.max_workers`: half of PostgreSQL's default `max_worker_processes` (8), whose
/// other slots parallel query, logical replication and other extensions need.
pub const DEFAULT_MAX_WORKERS: i32 = 4;
/// Upper bound of `qbo.max_workers`.
pub const MAX_MAX_WORKERS: i32 = 1024;

/// Default of `qbo.progress_interval_ms`.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u64 = 10_000;

/// Registers every setting and reserves the prefix. Called once per backend from `_PG_init`.
pub fn init() {
    GucRegistry::define_string_guc(
        c"qbo.api_base_url",
        c"Overrides Intuit's API host (tests and demos point it at the emulator). Superuser only.",
        c"Empty means Intuit's production or sandbox host, chosen by the connection's environment.",
        &API_BASE_URL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"qbo.token_url",
        c"Overrides Intuit's OAuth2 token endpoint. Superuser only.",
        c"Empty means https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer.",
        &TOKEN_URL_GUC,
        GucContext::Suset,
        GucFlags::default(),
    );
    int(
        c"qbo.http_connect_timeout_ms",
        c"TCP+TLS connect timeout of QBO requests.",
        &CONNECT_TIMEOUT_MS,
        10,
        600_000,
    );
    int(
        c"qbo.http_timeout_ms",
        c"Whole-request timeout of QBO query requests (a hang past it is retried).",
        &HTTP_TIMEOUT_MS,
        10,
        3_600_000,
    );
    int(
        c"qbo.token_timeout_ms",
        c"Timeout of a token refresh (never abandoned half-way by a cancel).",
        &TOKEN_TIMEOUT_MS,
        100,
        120_000,
    );
    int(
        c"qbo.max_retries",
        c"Retries of a request after 5xx, timeouts and resets (and after 429 when qbo.throttle_wait_ms = 0).",
        &MAX_RETRIES,
        0,
        50,
    );
    int(
        c"qbo.backoff_base_ms",
        c"Base of the exponential backoff (full jitter).",
        &BACKOFF_BASE_MS,
        1,
        600_000,
    );
    int(
        c"qbo.backoff_cap_ms",
        c"Cap of one backoff sleep.",
        &BACKOFF_CAP_MS,
        1,
        3_600_000,
    );
    int(
        c"qbo.retry_after_cap_ms",
        c"Cap applied to a Retry-After header.",
        &RETRY_AFTER_CAP_MS,
        0,
        3_600_000,
    );
    int(
        c"qbo.throttle_wait_ms",
        c"How long a run rides out throttling (HTTP 429) from the first throttled answer before it fails; 0: throttling counts against qbo.max_retries like other errors.",
        &THROTTLE_WAIT_MS,
        0,
        3_600_000,
    );
    int(
        c"qbo.progress_interval_ms",
        c"Least time between two NOTICEs of a run's totals (chunks done and running, pages, rows, rows/s); 0: after every committed page.",
        &PROGRESS_INTERVAL_MS,
        0,
        86_400_000,
    );
    int(
        c"qbo.sync_non_cdc_interval_ms",
        c"Least age of the watermark of an entity Change Data Capture does not serve (TaxCode, TaxRate, TimeActivity) before a sync reads it again; a sync sooner leaves it as it is (route not_due). 0: every sync reads it. Default 12 h.",
        &SYNC_NON_CDC_INTERVAL_MS,
        0,
        i32::MAX,
    );
    GucRegistry::define_int_guc(
        c"qbo.max_requests_per_minute",
        c"Requests per realm in any sliding 60 s, counted across every session and worker. Superuser only.",
        c"QBO answers 429 beyond 500 a minute per realm; pg_qbo paces itself below it instead.",
        &MAX_REQUESTS_PER_MINUTE,
        1,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"qbo.max_requests_per_second",
        c"Requests per realm in any sliding second, counted across every session and worker. Superuser only.",
        c"Intuit answers 429 beyond 10 a second per realm and app; pg_qbo paces itself below it (a 200 ms margin for network delay).",
        &MAX_REQUESTS_PER_SECOND,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"qbo.max_in_flight",
        c"Requests per realm in flight at once, across every session and worker. Superuser only.",
        c"QBO answers 429 beyond 10 concurrent requests per realm. 1 fetches sequentially.",
        &MAX_IN_FLIGHT,
        1,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"qbo.monthly_request_budget",
        c"Requests an app (OAuth2 client id) may send in a calendar month (UTC), counted in qbo.api_usage; past it new requests are refused. 0: no budget. Superuser only.",
        c"Intuit meters an app's read calls per month and blocks the app past its tier until the next month. Read when a run or resume starts executing.",
        &MONTHLY_REQUEST_BUDGET,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"qbo.monthly_request_warn_percent",
        c"Share of qbo.monthly_request_budget past which a run warns (once per execution). Superuser only.",
        c"",
        &MONTHLY_REQUEST_WARN_PERCENT,
        1,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"qbo.max_buffer_mb",
        c"Memory one run may hold for QuickBooks' answers: response bodies, pages waiting to be written, Ids of a second being read. Superuser only.",
        c"Three quarters bound the pages (one response may take that share over 2 x qbo.max_in_flight + 1), a quarter the Ids of the seconds read by STARTPOSITION.",
        &BUFFER_MB,
        MIN_BUFFER_MB as i32,
        MAX_BUFFER_MB as i32,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"qbo.max_workers",
        c"Most pg_qbo background workers (runs of qbo.backfill, qbo.resume, qbo.start_backfill, qbo.start_resume) running at once on the server; past it such a start fails at once (53400). 0: none. Superuser only.",
        c"Keeps pg_qbo from taking the max_worker_processes slots that parallel query, logical replication and other extensions need: set it at most to max_worker_processes minus what they need. Counted server-wide, across databases, by the slots the workers hold for their lifetime (advisory locks of database 0 in pg_locks, freed when a worker ends, is terminated or crashes). CALL qbo.run_backfill and qbo.run_resume run in the caller's backend and take no slot.",
        &MAX_WORKERS,
        0,
        MAX_MAX_WORKERS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"qbo.citus_distribute_raw_tables",
        c"Where the Citus extension is installed in the database, create each new raw table distributed by realm_id, co-located with the other raw tables. Superuser only.",
        c"Off: new raw tables stay local to the coordinator. Existing local raw tables are distributed by SELECT * FROM qbo.distribute_raw_tables().",
        &CITUS_DISTRIBUTE_RAW_TABLES,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init on the backend's own thread (GUC state is per process and
    // not thread-safe), after every `qbo.*` setting above is defined; the argument is a static
    // NUL-terminated string, and Postgres keeps its own copy (pstrdup in TopMemoryContext).
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"qbo".as_ptr()) };
}

fn int(
    name: &'static std::ffi::CStr,
    desc: &'static std::ffi::CStr,
    s: &'static GucSetting<i32>,
    min: i32,
    max: i32,
) {
    GucRegistry::define_int_guc(
        name,
        desc,
        c"",
        s,
        min,
        max,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
}

/// `qbo.citus_distribute_raw_tables` in this session.
pub fn citus_distribute_raw_tables() -> bool {
    CITUS_DISTRIBUTE_RAW_TABLES.get()
}

/// `qbo.max_workers` in this session: how many pg_qbo workers may run at once when it starts one.
pub fn max_workers() -> i32 {
    MAX_WORKERS.get()
}

/// Turns off, for the rest of this process, the session timeouts that `ALTER ROLE ... SET` and
/// `ALTER DATABASE ... SET` hand a background worker connecting as that role to that database.
/// Called by every pg_qbo worker before its run, outside any transaction (so no abort can undo
/// it), at the highest priority (`PGC_S_OVERRIDE`, as a superuser): the worker's one "statement"
/// is a run of minutes or hours, which the role's limits for interactive statements were never
/// meant for, and its caller's own limits stop the caller, never the run (a session-tied worker
/// is cancelled when its caller is, a detached one is stopped with `qbo.cancel`).
/// - `statement_timeout`, `idle_in_transaction_session_timeout` (and `transaction_timeout` where
///   it exists, PostgreSQL 17+, which also applies to background workers): a run would be killed
///   once it lasted that long.
/// - `lock_timeout` as well: a run waits on pg_qbo's own short locks (the lock serialising page
///   writes of one realm and entity, held by a concurrent run for one page's upsert; the
///   realm's rate-limiter row; raw-table DDL), and a limit meant to keep interactive statements
///   from queueing behind DDL would fail a long run on a wait that is part of normal concurrent
///   work. The run stays cancellable while it waits, and deadlocks are still detected.
pub fn disable_session_timeouts() {
    let names: &[&std::ffi::CStr] = &[
        c"statement_timeout",
        c"lock_timeout",
        c"idle_in_transaction_session_timeout",
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        c"transaction_timeout",
    ];
    for name in names {
        // SAFETY: on the worker's only thread, connected to its database, outside any
        // transaction (GUC state is per process and not thread-safe; with no transaction open
        // the value is not stacked, so it lasts for the process); both arguments are static
        // NUL-terminated strings that Postgres copies, and every name is a built-in setting of
        // this server version, so the assignment cannot fail.
        unsafe {
            pgrx::pg_sys::SetConfigOption(
                name.as_ptr(),
                c"0".as_ptr(),
                pgrx::pg_sys::GucContext::PGC_SUSET,
                pgrx::pg_sys::GucSource::PGC_S_OVERRIDE,
            )
        };
    }
}

/// Sets `application_name` of this process (a background worker naming the run it executes in
/// `pg_stat_activity`). Called in a transaction, the name lasts for the process once that
/// transaction commits (an abort restores the previous one).
pub fn set_application_name(name: &str) {
    let Ok(value) = CString::new(name) else {
        return;
    };
    // SAFETY: on the process's own thread; both arguments are NUL-terminated strings Postgres
    // copies; application_name accepts any text (its check hook replaces non-ASCII
    // characters), so the assignment cannot fail.
    unsafe {
        pgrx::pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            value.as_ptr(),
            pgrx::pg_sys::GucContext::PGC_SUSET,
            pgrx::pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };
}

/// Settings resolved for one run: stored in `qbo.runs.settings`, passed to workers, reused by resume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// API host override (None: Intuit's host for the environment).
    pub api_base_url: Option<String>,
    /// Token endpoint override.
    pub token_url: Option<String>,
    pub connect_timeout_ms: u64,
    pub http_timeout_ms: u64,
    pub token_timeout_ms: u64,
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub retry_after_cap_ms: u64,
    /// How long throttling is ridden out (runs stored before this setting existed get the
    /// default).
    #[serde(default = "default_throttle_wait")]
    pub throttle_wait_ms: u64,
    /// Requests per realm per sliding minute (runs stored before this setting existed get the default).
    #[serde(default = "default_per_minute")]
    pub max_requests_per_minute: u32,
    /// Requests per realm in flight at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Requests per realm per sliding second (runs stored before this setting existed get the
    /// default).
    #[serde(default = "default_per_second")]
    pub max_requests_per_second: u32,
    /// Memory bound of the run's buffers, in MB (2^20 bytes; see [`qbo::budget`]).
    #[serde(default = "default_buffer_mb")]
    pub max_buffer_mb: u32,
    /// Least time between two progress lines of the run's totals, in ms (0: after every page).
    #[serde(default = "default_progress_interval")]
    pub progress_interval_ms: u64,
    /// Least age of the watermark of an entity CDC does not serve before a sync reads it again,
    /// in ms (0: every sync). See [`qbo::poll`].
    #[serde(default = "default_non_cdc_interval")]
    pub sync_non_cdc_interval_ms: u64,
}

fn default_non_cdc_interval() -> u64 {
    qbo::poll::DEFAULT_INTERVAL_MS
}

fn default_per_minute() -> u32 {
    DEFAULT_MAX_REQUESTS_PER_MINUTE
}

fn default_throttle_wait() -> u64 {
    DEFAULT_THROTTLE_WAIT_MS
}

fn default_per_second() -> u32 {
    DEFAULT_MAX_REQUESTS_PER_SECOND
}

fn default_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}

fn default_buffer_mb() -> u32 {
    DEFAULT_BUFFER_MB
}

fn default_progress_interval() -> u64 {
    DEFAULT_PROGRESS_INTERVAL_MS
}

/// A memory setting's text as stored by `ALTER ... SET` (`512`, `512MB`, `1GB`, `1.5 GB`,
/// `2048kB`: PostgreSQL's memory units, MB when none), in MB, rounded as PostgreSQL rounds.
fn parse_mb(v: &str) -> Option<u32> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let num: f64 = v[..split].parse().ok()?;
    let per_mb = match v[split..].trim() {
        "" | "MB" => 1.0,
        "B" => 1.0 / (1024.0 * 1024.0),
        "kB" => 1.0 / 1024.0,
        "GB" => 1024.0,
        "TB" => 1024.0 * 1024.0,
        _ => return None,
    };
    let mb = (num * per_mb).round();
    (mb.is_finite() && mb >= 0.0).then(|| mb.min(f64::from(u32::MAX)) as u32)
}

fn text(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get()
        .and_then(|c| c.to_str().ok().map(str::to_owned))
        .map(|v| v.trim().trim_end_matches('/').to_owned())
        .filter(|v| !v.is_empty())
}

/// Superuser-only settings whose session value is the built-in default although a superuser set
/// them for this database, this role or the server: what a non-superuser's `PGOPTIONS='-c
/// qbo.api_base_url=...'` leaves behind. Given at connection start, before pg_qbo is loaded, such
/// a value replaces the placeholder's value from `ALTER DATABASE`/`ALTER ROLE`/`ALTER SYSTEM`;
/// when pg_qbo loads, Postgres refuses it (a WARNING) and the setting falls back to its built-in
/// default, so a run would go to Intuit's default host instead of the one the superuser chose.
/// Returns (setting, value) pairs of the values the superuser set, in Postgres' precedence:
/// database and role, role, database, then the configuration files.
fn superuser_values_lost() -> Vec<(String, String)> {
    const SQL: &str = "
        WITH lost AS (
            SELECT s.name FROM pg_catalog.pg_settings s
             WHERE s.name OPERATOR(pg_catalog.=) ANY ('{qbo.api_base_url,qbo.token_url,qbo.max_requests_per_minute,qbo.max_requests_per_second,qbo.max_in_flight,qbo.max_buffer_mb,qbo.monthly_request_budget,qbo.monthly_request_warn_percent}'::pg_catalog.text[])
               AND s.source OPERATOR(pg_catalog.=) 'default'),
        stored AS (
            SELECT pg_catalog.split_part(c.item, '=', 1) AS name,
                   pg_catalog.substr(c.item, pg_catalog.strpos(c.item, '=') OPERATOR(pg_catalog.+) 1) AS value,
                   CASE WHEN d.setdatabase OPERATOR(pg_catalog.<>) 0 AND d.setrole OPERATOR(pg_catalog.<>) 0 THEN 1
                        WHEN d.setrole OPERATOR(pg_catalog.<>) 0 THEN 2 ELSE 3 END AS rank,
                   0 AS seq
              FROM pg_catalog.pg_db_role_setting d
              CROSS JOIN LATERAL pg_catalog.unnest(d.setconfig) AS c(item)
             WHERE d.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[0, (SELECT b.oid FROM pg_catalog.pg_database b
                                                                  WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())]::pg_catalog.oid[])
               AND d.setrole OPERATOR(pg_catalog.=) ANY (ARRAY[0, (SELECT r.oid FROM pg_catalog.pg_roles r
                                                              WHERE r.rolname OPERATOR(pg_catalog.=) SESSION_USER)]::pg_catalog.oid[])
            UNION ALL
            -- the last line of the files wins, as when they are read
            SELECT f.name, f.setting, 4, f.seqno FROM pg_catalog.pg_file_settings f
             WHERE f.error IS NULL AND f.setting IS NOT NULL)
        SELECT DISTINCT ON (l.name) l.name, st.value
          FROM lost l JOIN stored st ON st.name OPERATOR(pg_catalog.=) l.name
         ORDER BY l.name, st.rank, st.seq DESC";
    // pg_file_settings is readable by superusers only: read as the extension owner
    spi::as_owner(|| {
        pgrx::Spi::connect(|c| {
            let mut out = Vec::new();
            for r in c.select(SQL, None, &[])? {
                if let (Some(n), Some(v)) = (r.get::<String>(1)?, r.get::<String>(2)?) {
                    out.push((n, v));
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_else(|e| {
        PgError::db("pg_qbo settings (pg_db_role_setting, pg_file_settings)", e).raise()
    })
}

/// The monthly request budget in force in this process now (`qbo.monthly_request_budget`,
/// `qbo.monthly_request_warn_percent`). Unlike [`Settings`] it is not stored with a run: every
/// execution (a run, each resume) reads it when it starts, so a run refused at the budget resumes
/// once a superuser raised it (or next month). In a background worker that is the value of
/// `ALTER SYSTEM` / `ALTER DATABASE` / `ALTER ROLE`; a `SET` reaches only `CALL`s of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests per app and calendar month (UTC); 0: no budget.
    pub requests: i64,
    /// Warn once the month's count passes this share of `requests`.
    pub warn_percent: i64,
}

impl Budget {
    /// The values in force now (never a built-in default standing in for a value a superuser
    /// set: see [`superuser_values_lost`]).
    pub fn current() -> Budget {
        let mut b = Budget {
            requests: MONTHLY_REQUEST_BUDGET.get().max(0) as i64,
            warn_percent: MONTHLY_REQUEST_WARN_PERCENT.get().clamp(1, 100) as i64,
        };
        for (name, value) in superuser_values_lost() {
            let v = value.trim();
            match name.as_str() {
                "qbo.monthly_request_budget" => {
                    if let Ok(n) = v.parse::<i64>() {
                        b.requests = n.clamp(0, i32::MAX as i64);
                    }
                }
                "qbo.monthly_request_warn_percent" => {
                    if let Ok(n) = v.parse::<i64>() {
                        b.warn_percent = n.clamp(1, 100);
                    }
                }
                _ => {}
            }
        }
        b
    }
}

impl Settings {
    /// The values in force in this session now (for the superuser-only ones, never a built-in
    /// default standing in for a value a superuser set: see [`superuser_values_lost`]).
    pub fn current() -> Settings {
        let mut s = Settings::session();
        for (name, value) in superuser_values_lost() {
            let v = value.trim().trim_end_matches('/').to_owned();
            match name.as_str() {
                "qbo.api_base_url" => s.api_base_url = Some(v).filter(|v| !v.is_empty()),
                "qbo.token_url" => s.token_url = Some(v).filter(|v| !v.is_empty()),
                "qbo.max_requests_per_minute" => {
                    if let Ok(n) = v.parse::<u32>() {
                        s.max_requests_per_minute = n.clamp(1, 100_000);
                    }
                }
                "qbo.max_requests_per_second" => {
                    if let Ok(n) = v.parse::<u32>() {
                        s.max_requests_per_second = n.clamp(1, 1000);
                    }
                }
                "qbo.max_in_flight" => {
                    if let Ok(n) = v.parse::<u32>() {
                        s.max_in_flight = n.clamp(1, 100);
                    }
                }
                "qbo.max_buffer_mb" => {
                    if let Some(n) = parse_mb(&v) {
                        s.max_buffer_mb = n.clamp(MIN_BUFFER_MB, MAX_BUFFER_MB);
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// The values the session's variables hold.
    fn session() -> Settings {
        Settings {
            api_base_url: text(&API_BASE_URL),
            token_url: text(&TOKEN_URL_GUC),
            connect_timeout_ms: CONNECT_TIMEOUT_MS.get() as u64,
            http_timeout_ms: HTTP_TIMEOUT_MS.get() as u64,
            token_timeout_ms: TOKEN_TIMEOUT_MS.get() as u64,
            max_retries: MAX_RETRIES.get() as u32,
            backoff_base_ms: BACKOFF_BASE_MS.get() as u64,
            backoff_cap_ms: BACKOFF_CAP_MS.get() as u64,
            retry_after_cap_ms: RETRY_AFTER_CAP_MS.get() as u64,
            throttle_wait_ms: THROTTLE_WAIT_MS.get().max(0) as u64,
            max_requests_per_minute: MAX_REQUESTS_PER_MINUTE.get().max(1) as u32,
            max_in_flight: MAX_IN_FLIGHT.get().max(1) as u32,
            max_requests_per_second: MAX_REQUESTS_PER_SECOND.get().max(1) as u32,
            max_buffer_mb: BUFFER_MB.get().max(MIN_BUFFER_MB as i32) as u32,
            progress_interval_ms: PROGRESS_INTERVAL_MS.get().max(0) as u64,
            sync_non_cdc_interval_ms: SYNC_NON_CDC_INTERVAL_MS.get().max(0) as u64,
        }
    }

    /// API base for a connection's environment.
    pub fn api_base(&self, environment: &str) -> String {
        match &self.api_base_url {
            Some(url) => url.clone(),
            None if environment == "sandbox" => SANDBOX_API.to_owned(),
            None => PRODUCTION_API.to_owned(),
        }
    }

    /// Token endpoint.
    /// The retry policy of a run's requests (`qbo.max_retries`, `qbo.backoff_*`,
    /// `qbo.retry_after_cap_ms`, `qbo.throttle_wait_ms`).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            base: Duration::from_millis(self.backoff_base_ms),
            cap: Duration::from_millis(self.backoff_cap_ms),
            retry_after_cap: Duration::from_millis(self.retry_after_cap_ms),
            throttle_wait: Duration::from_millis(self.throttle_wait_ms),
        }
    }

    /// Least time between two progress lines of the run's totals (`qbo.progress_interval_ms`).
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    pub fn token_endpoint(&self) -> String {
        self.token_url
            .clone()
            .unwrap_or_else(|| TOKEN_URL.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_as_stored_by_alter_set() {
        assert_eq!(parse_mb("512"), Some(512));
        assert_eq!(parse_mb("512MB"), Some(512));
        assert_eq!(parse_mb(" 1GB "), Some(1024));
        assert_eq!(parse_mb("1.5 GB"), Some(1536));
        assert_eq!(parse_mb("2048kB"), Some(2));
        assert_eq!(parse_mb("1TB"), Some(1024 * 1024));
        assert_eq!(parse_mb("1mb"), None);
        assert_eq!(parse_mb("-5"), None);
        assert_eq!(parse_mb("lots"), None);
    }

    #[test]
    fn settings_stored_before_the_buffer_and_progress_settings_load_with_their_defaults() {
        let old = serde_json::json!({
            "api_base_url": null, "token_url": null, "connect_timeout_ms": 10000,
            "http_timeout_ms": 120000, "token_timeout_ms": 15000, "max_retries": 6,
            "backoff_base_ms": 500, "backoff_cap_ms": 60000, "retry_after_cap_ms": 120000,
            "max_requests_per_minute": 500, "max_in_flight": 10
        });
        let s: Settings = serde_json::from_value(old).unwrap();
        assert_eq!(s.max_buffer_mb, DEFAULT_BUFFER_MB);
        assert_eq!(s.progress_interval_ms, DEFAULT_PROGRESS_INTERVAL_MS);
        let round = serde_json::to_value(&s).unwrap();
        assert_eq!(round["max_buffer_mb"], 256);
        assert_eq!(round["progress_interval_ms"], 10000);
    }

    #[test]
    fn settings_stored_before_the_per_second_limit_load_with_intuits_10() {
        let old = serde_json::json!({
            "api_base_url": null, "token_url": null, "connect_timeout_ms": 10000,
            "http_timeout_ms": 120000, "token_timeout_ms": 15000, "max_retries": 6,
            "backoff_base_ms": 500, "backoff_cap_ms": 60000, "retry_after_cap_ms": 120000,
            "max_requests_per_minute": 500, "max_in_flight": 10, "max_buffer_mb": 256
        });
        let s: Settings = serde_json::from_value(old).unwrap();
        assert_eq!(s.max_requests_per_second, 10);
        assert_eq!(
            s.throttle_wait_ms, 70_000,
            "0.3.0 runs ride out throttling when resumed"
        );
        let round = serde_json::to_value(&s).unwrap();
        assert_eq!(round["max_requests_per_second"], 10);
    }
}
