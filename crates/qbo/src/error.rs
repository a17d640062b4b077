//! The one error type of the plain-Rust core (planner, pager, HTTP client, OAuth), its mapping to
//! SQLSTATE codes, and the secret-masking helpers every message goes through.
//!
//! Rules:
//! - No `Display` or `Debug` string ever contains a secret: the client never puts tokens or client
//!   secrets in messages, and every text that comes from upstream (an `error_description`, a fault
//!   message or detail, a body snippet, a `reqwest` error chain) goes through [`mask_upstream`]
//!   (usually by way of [`quote`] / [`quote_bytes`]) before it is quoted. That one function masks
//!   the known secrets of the exchange in every encoding ([`Secrets`]), `Basic` / `Bearer`
//!   credentials, long opaque token-like words (Intuit echoes `Token expired: AB0160...`), and
//!   query strings. It runs before any cut: a secret is never cut in two halves that escape it.
//! - A 2xx token response is never quoted at all (it carries the tokens).
//! - `intuit_tid` is always shown when known: Intuit support asks for it.
//!
//! SQLSTATE choice (see [`QboError::sqlstate`]):
//! - `22023` invalid_parameter_value: bad input from the caller.
//! - `28000` invalid_authorization_specification: refresh token rejected, client credentials
//!   rejected, 401 after a refresh, 403 that is not a throttle (app not authorized for the company).
//! - `08006` connection_failure: network errors (timeouts, resets, DNS, TLS).
//! - `08P01` protocol_violation: QBO answered something we cannot use (malformed or truncated JSON,
//!   a 200 carrying a Fault, records outside the requested window, a second whose content never
//!   matches its `count(*)`, a 2xx token response that is not a token set).
//! - `08000` connection_exception: any other upstream HTTP error (400 query rejected, 404, 429 or
//!   5xx once retries are exhausted).
//! - `54000` program_limit_exceeded: a response larger than the configured cap (or a token
//!   response larger than [`crate::oauth::TOKEN_RESPONSE_MAX_BYTES`]).
//! - `57014` query_canceled: cancelled by the user.
//!
//! [`QboError::RetriesExhausted`] reports the SQLSTATE of its last error.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::fault::{collapse_ws, FaultInfo};
use crate::oauth::SalvagedTokens;

/// Maximum number of characters of a body or fault text quoted in a message.
pub const SNIPPET_CHARS: usize = 300;

/// What replaces a secret in a message.
pub const REDACTED: &str = "[redacted]";

/// Every error of the core modules.
#[derive(thiserror::Error, Debug)]
pub enum QboError {
    /// Bad input from the caller; the text names the value and what is allowed.
    #[error("{0}")]
    InvalidParameter(String),

    /// A non-retryable HTTP error from the QBO API (400, 403 that is not a throttle, 404, ...).
    #[error("QuickBooks API error: HTTP {status}{}", upstream_suffix(fault.as_deref(), intuit_tid.as_deref(), body_snippet))]
    Http {
        /// HTTP status code.
        status: u16,
        /// The parsed fault, when the body had one.
        fault: Option<Box<FaultInfo>>,
        /// Intuit's transaction id (`intuit_tid` header).
        intuit_tid: Option<String>,
        /// The start of the body (masked, at most [`SNIPPET_CHARS`] characters).
        body_snippet: String,
    },

    /// HTTP 401. The caller refreshes the access token once and retries; a second 401 is final.
    #[error("QuickBooks API rejected the access token (HTTP 401){}", upstream_suffix(fault.as_deref(), intuit_tid.as_deref(), ""))]
    Unauthorized {
        /// The parsed fault (code 3200: token expired or revoked; 3201: user not authorized).
        fault: Option<Box<FaultInfo>>,
        /// Intuit's transaction id.
        intuit_tid: Option<String>,
    },

    /// Throttled: HTTP 429, fault code 3001 or `ThrottleExceeded` (historically on a 403).
    /// Retryable.
    #[error("QuickBooks API throttled the request (HTTP {status}){}{}", retry_after_suffix(*retry_after), upstream_suffix(fault.as_deref(), intuit_tid.as_deref(), ""))]
    Throttled {
        /// HTTP status code (429, or 403 for the legacy throttle).
        status: u16,
        /// The `Retry-After` delay, when the response had a valid one.
        retry_after: Option<Duration>,
        /// The parsed fault.
        fault: Option<Box<FaultInfo>>,
        /// Intuit's transaction id.
        intuit_tid: Option<String>,
    },

    /// A transient server error: HTTP 500, 502, 503 or 504. Retryable.
    #[error("QuickBooks API transient error: HTTP {status}{}{}", retry_after_suffix(*retry_after), upstream_suffix(fault.as_deref(), intuit_tid.as_deref(), body_snippet))]
    Transient {
        /// HTTP status code.
        status: u16,
        /// The `Retry-After` delay, when the response had a valid one.
        retry_after: Option<Duration>,
        /// The parsed fault.
        fault: Option<Box<FaultInfo>>,
        /// Intuit's transaction id.
        intuit_tid: Option<String>,
        /// The start of the body (masked, at most [`SNIPPET_CHARS`] characters).
        body_snippet: String,
    },

    /// A retryable error was retried `attempts - 1` times and failed every time.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Number of attempts made (first try included).
        attempts: u32,
        /// The error of the last attempt.
        last: Box<QboError>,
    },

    /// Throttling (see [`QboError::Throttled`]) went on past the time a run rides it out
    /// (`qbo.throttle_wait_ms`): retried for `waited` since its first throttled answer.
    #[error("gave up after being throttled for {} s (qbo.throttle_wait_ms = {}): {last}", waited.as_secs(), bound.as_millis())]
    ThrottledTooLong {
        /// How long the requests were throttled, from the first throttled answer to the last.
        waited: Duration,
        /// The bound it passed.
        bound: Duration,
        /// The last throttled answer.
        last: Box<QboError>,
    },

    /// Network failure: timeout, connection refused or reset, DNS, TLS. Retryable. The text never
    /// contains a query string.
    #[error("network error talking to QuickBooks: {0}")]
    Network(String),

    /// The token endpoint rejected the refresh token (`invalid_grant`): expired, revoked or
    /// superseded by a rotation. Only a human can fix this by re-authorizing the company.
    #[error("the refresh token was rejected by Intuit (invalid_grant{}): the company must be re-authorized with qbo.connect", description_suffix(.0))]
    InvalidGrant(String),

    /// The token endpoint rejected the client id / secret (`invalid_client`).
    #[error("Intuit rejected the app's client credentials (invalid_client{}): check the client id and secret given to qbo.connect", description_suffix(.0))]
    InvalidClient(String),

    /// QBO answered with something unusable: malformed or truncated JSON, a 2xx carrying a Fault,
    /// a record without Id / SyncToken / MetaData.LastUpdatedTime. Retryable.
    #[error("unusable response from QuickBooks: {0}")]
    BadResponse(String),

    /// A response body, or the records parsed from it, exceeded the cap of one response (see
    /// [`crate::budget::MemoryBudget::response_cap`]). Not retryable.
    #[error("QuickBooks response larger than the {limit}-byte cap of one response{}{}: lower page_size, or raise qbo.max_buffer_mb (one response may take three quarters of it over 2 x qbo.max_in_flight + 1), in a new run: a resume keeps the run's page_size and settings", parsed_note(*parsed), tid_suffix(intuit_tid.as_deref()))]
    ResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
        /// True when the body fit but its records, once parsed, did not.
        parsed: bool,
        /// Intuit's transaction id.
        intuit_tid: Option<String>,
    },

    /// The token endpoint answered 2xx with a body that is not a usable token set (a field of the
    /// wrong type, a missing access token, not JSON, ...). The body is never quoted: `detail`
    /// says what is wrong in general terms. When the body carried a refresh token, Intuit has
    /// already superseded the old one: the caller must store [`SalvagedTokens::refresh_token`]
    /// (and commit) before failing. Not retryable: a retry would present the old refresh token.
    #[error("unusable answer from Intuit's token endpoint (HTTP {status}): {detail}{}{}", salvage_note(salvaged.as_deref()), tid_suffix(intuit_tid.as_deref()))]
    UnusableTokenResponse {
        /// HTTP status code (2xx).
        status: u16,
        /// What is wrong with the body, in general terms (never a value).
        detail: String,
        /// The tokens that could be read from it anyway (Debug-redacted).
        salvaged: Option<Box<SalvagedTokens>>,
        /// Intuit's transaction id.
        intuit_tid: Option<String>,
    },

    /// The token endpoint's body exceeded [`crate::oauth::TOKEN_RESPONSE_MAX_BYTES`]; the rest
    /// was not read. Not retryable.
    #[error("Intuit's token endpoint sent a response larger than the {limit}-byte cap{}: it was not read further (a token response is about 1 KB)", tid_suffix(intuit_tid.as_deref()))]
    TokenResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
        /// Intuit's transaction id.
        intuit_tid: Option<String>,
    },

    /// A second holding a full page or more never matched its `count(*)` after all tries
    /// (records kept changing in it, or QBO's answers were inconsistent).
    #[error("{entity} records updated at {} could not be read completely: count(*) said {expected} but {seen} distinct Ids were seen, after {attempts} tries", crate::query::literal(*second))]
    UnstableSecond {
        /// The entity being paged.
        entity: String,
        /// The second (UTC) that was paged.
        second: DateTime<Utc>,
        /// `count(*)` at the start of the last try.
        expected: u64,
        /// Distinct Ids seen in the last try.
        seen: u64,
        /// Number of tries made.
        attempts: u32,
    },

    /// A second read by STARTPOSITION claims more records than the Ids the run may remember
    /// (a quarter of `qbo.max_buffer_mb`, shared by the seconds being read at once). `count(*)`
    /// is never trusted for memory: the bound is the budget. Not retryable.
    #[error("{entity} records updated at {}: QuickBooks claims {claimed} records in that one second, more than qbo.max_buffer_mb = {buffer_mb} MB lets pg_qbo remember while it reads them ({held} of their Ids held; the Ids of the seconds being read may take {limit} bytes, a quarter of it, about {fits} Ids of this length{}): raise qbo.max_buffer_mb and start a new run (a resume keeps the run's settings)", crate::query::literal(*second), others_note(*others))]
    SecondTooLarge {
        /// The entity being paged.
        entity: String,
        /// The second (UTC) being read.
        second: DateTime<Utc>,
        /// Records QBO claims the second holds: its `count(*)`, or the positions its pages
        /// reached if further.
        claimed: u64,
        /// Distinct Ids of the second held when the pager stopped.
        held: u64,
        /// About how many Ids (of the length seen) the budget holds for this second.
        fits: u64,
        /// The bytes the Ids of the seconds being read may take.
        limit: u64,
        /// Bytes of that held by other seconds being read at the same time.
        others: u64,
        /// `qbo.max_buffer_mb`.
        buffer_mb: u32,
    },

    /// The operation was cancelled (query cancel, statement timeout, termination).
    #[error("canceling statement due to user request")]
    Cancelled,
}

fn description_suffix(desc: &str) -> String {
    if desc.is_empty() {
        String::new()
    } else {
        format!(": {desc}")
    }
}

fn salvage_note(s: Option<&SalvagedTokens>) -> &'static str {
    match s {
        Some(s) if s.refresh_token.is_some() => "; the new refresh token it carried is kept",
        _ => "; it carried no refresh token to keep",
    }
}

fn parsed_note(parsed: bool) -> &'static str {
    if parsed {
        " once its records are parsed"
    } else {
        ""
    }
}

fn others_note(others: u64) -> String {
    if others == 0 {
        String::new()
    } else {
        format!(", {others} bytes of it held by other seconds being read at the same time")
    }
}

fn tid_suffix(tid: Option<&str>) -> String {
    match tid {
        Some(t) => format!(" (intuit_tid {t})"),
        None => String::new(),
    }
}

fn retry_after_suffix(ra: Option<Duration>) -> String {
    match ra {
        Some(d) => format!(", Retry-After {} s", d.as_secs()),
        None => String::new(),
    }
}

/// `: <fault> [(intuit_tid ..)]`, or the body snippet when there is no fault.
fn upstream_suffix(fault: Option<&FaultInfo>, tid: Option<&str>, snippet: &str) -> String {
    let mut out = String::new();
    match fault {
        Some(f) => {
            let text = f.to_string();
            if !text.is_empty() {
                out.push_str(": ");
                out.push_str(&text);
            }
        }
        None => {
            if !snippet.is_empty() {
                out.push_str(": ");
                out.push_str(snippet);
            }
        }
    }
    out.push_str(&tid_suffix(tid));
    out
}

impl QboError {
    /// The 5-character SQLSTATE the extension raises this error with (see the module doc).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QboError::InvalidParameter(_) => "22023",
            QboError::Unauthorized { .. }
            | QboError::InvalidGrant(_)
            | QboError::InvalidClient(_) => "28000",
            QboError::Http { status: 403, .. } => "28000",
            QboError::Http { .. } | QboError::Throttled { .. } | QboError::Transient { .. } => {
                "08000"
            }
            QboError::Network(_) => "08006",
            QboError::BadResponse(_)
            | QboError::UnstableSecond { .. }
            | QboError::UnusableTokenResponse { .. } => "08P01",
            QboError::ResponseTooLarge { .. }
            | QboError::TokenResponseTooLarge { .. }
            | QboError::SecondTooLarge { .. } => "54000",
            QboError::RetriesExhausted { last, .. } | QboError::ThrottledTooLong { last, .. } => {
                last.sqlstate()
            }
            QboError::Cancelled => "57014",
        }
    }

    /// True for errors worth retrying after a backoff: throttling, 5xx, network errors and
    /// unusable (e.g. truncated) responses. `Unauthorized` is not retryable here: the caller
    /// refreshes the token once and retries by itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            QboError::Throttled { .. }
                | QboError::Transient { .. }
                | QboError::Network(_)
                | QboError::BadResponse(_)
        )
    }

    /// The server's `Retry-After` hint carried by a throttle or transient error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            QboError::Throttled { retry_after, .. } | QboError::Transient { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Intuit's transaction id, when the error came from an HTTP response that had one.
    pub fn intuit_tid(&self) -> Option<&str> {
        match self {
            QboError::Http { intuit_tid, .. }
            | QboError::Unauthorized { intuit_tid, .. }
            | QboError::Throttled { intuit_tid, .. }
            | QboError::Transient { intuit_tid, .. }
            | QboError::ResponseTooLarge { intuit_tid, .. }
            | QboError::UnusableTokenResponse { intuit_tid, .. }
            | QboError::TokenResponseTooLarge { intuit_tid, .. } => intuit_tid.as_deref(),
            QboError::RetriesExhausted { last, .. } | QboError::ThrottledTooLong { last, .. } => {
                last.intuit_tid()
            }
            _ => None,
        }
    }

    /// A few words for progress notes: `HTTP 429`, `a timeout`, `a network error`, `an unusable
    /// response` (never a response body).
    pub fn short(&self) -> String {
        match (self.http_status(), self) {
            (Some(status), _) => format!("HTTP {status}"),
            // what `from_reqwest` says of a request that timed out
            (None, QboError::Network(m)) if m.starts_with("timed out") => "a timeout".to_owned(),
            (None, QboError::Network(_)) => "a network error".to_owned(),
            (None, QboError::BadResponse(_)) => "an unusable response".to_owned(),
            (None, other) => truncate_chars(&other.to_string(), 80),
        }
    }

    /// The HTTP status, when the error is an HTTP answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            QboError::Http { status, .. }
            | QboError::Throttled { status, .. }
            | QboError::Transient { status, .. } => Some(*status),
            QboError::Unauthorized { .. } => Some(401),
            QboError::RetriesExhausted { last, .. } | QboError::ThrottledTooLong { last, .. } => {
                last.http_status()
            }
            _ => None,
        }
    }

    /// Builds a [`QboError::Network`] from a `reqwest` error: the URL is dropped, the error kind
    /// and its source chain kept, any query string that might remain is stripped.
    pub fn from_reqwest(err: reqwest::Error) -> QboError {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else if err.is_body() || err.is_decode() {
            "failed reading the response body"
        } else if err.is_redirect() {
            "redirect refused"
        } else {
            "request failed"
        };
        let err = err.without_url();
        let mut chain = Vec::new();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&err);
        while let Some(s) = src {
            let t = s.to_string();
            if !t.is_empty() && !chain.contains(&t) {
                chain.push(t);
            }
            src = s.source();
        }
        let mut msg = kind.to_string();
        for c in chain {
            msg.push_str(": ");
            msg.push_str(&c);
        }
        QboError::Network(quote(&msg, &Secrets::new()))
    }
}

/// The secrets of one exchange, with every encoding of them an upstream text could echo, for
/// [`mask_upstream`]. Its `Debug` output shows none of them.
#[derive(Clone, Default)]
pub struct Secrets {
    needles: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} forms, redacted)", self.needles.len())
    }
}

/// Percent-encoding flavours a secret may be echoed in.
#[derive(Clone, Copy)]
enum Pct {
    /// `application/x-www-form-urlencoded` (what oauth2 sends; space as `+`).
    Form,
    /// RFC 3986 (space as `%20`, `~` kept).
    Rfc3986,
}

fn percent_encode(s: &str, how: Pct, lower: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_')
            || matches!((how, b), (Pct::Form, b'*') | (Pct::Rfc3986, b'~'));
        if keep {
            out.push(char::from(b));
        } else if matches!((how, b), (Pct::Form, b' ')) {
            out.push('+');
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Secrets {
    /// No secret: [`mask_upstream`] still masks credentials, token-like words and query strings.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds a secret sent as is (an access token, a refresh token, a client secret): its raw form
    /// and its URL-encoded forms (form and RFC 3986, upper- and lower-case hex).
    pub fn with(mut self, secret: &str) -> Secrets {
        self.add_encoded(secret);
        self
    }

    /// Adds the client pair sent as HTTP Basic: the secret as in [`Secrets::with`], and the
    /// base64 of `client_id:client_secret` (of the raw pair, and of the form-encoded pair that
    /// RFC 6749 §2.3.1 and oauth2 use), standard and URL-safe alphabets, with and without padding,
    /// each also URL-encoded. The client id alone is not a secret.
    pub fn with_client(mut self, client_id: &str, client_secret: &str) -> Secrets {
        if client_secret.is_empty() {
            return self;
        }
        self.add_encoded(client_secret);
        let pairs = [
            format!("{client_id}:{client_secret}"),
            format!(
                "{}:{}",
                percent_encode(client_id, Pct::Form, false),
                percent_encode(client_secret, Pct::Form, false)
            ),
        ];
        for pair in &pairs {
            for engine in [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                self.add_encoded(&engine.encode(pair));
            }
        }
        self
    }

    fn add_encoded(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        let mut forms = vec![s.to_string()];
        for how in [Pct::Form, Pct::Rfc3986] {
            for lower in [false, true] {
                forms.push(percent_encode(s, how, lower));
            }
        }
        for f in forms {
            if !self.needles.contains(&f) {
                self.needles.push(f);
            }
        }
    }
}

/// Any stretch of this many bytes of a secret (or of an encoding of it) is masked wherever it
/// appears, so an echo that was cut, or re-encoded in places, shows no 16 characters of it.
const WINDOW: usize = 16;

/// Characters a masked stretch is widened over (a token's alphabet, and `%` of its encodings),
/// so no short piece of a secret is left at its ends.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'%')
}

/// THE masking function: every upstream text quoted in a message goes through it (by way of
/// [`quote`] / [`quote_bytes`] when it must also be shortened). It masks, with [`REDACTED`]:
/// 1. every stretch of 16 bytes or more of a known secret in any of its encodings
///    ([`Secrets`]), widened to the surrounding word, and shorter secrets wherever they appear
///    whole;
/// 2. `Basic <credential>` and `Bearer <credential>` (any case; separated by spaces, `+` or
///    `%20`), except before a plain lower-case word (`Bearer realm=`, `basic auth`);
/// 3. token-like words ([`mask_token_like`]);
/// 4. query strings of URLs ([`strip_query_strings`]).
///
/// Masking must come before any cut of the text (see [`quote`]).
pub fn mask_upstream(text: &str, secrets: &Secrets) -> String {
    let s = mask_needles(text, &secrets.needles);
    let s = mask_credentials(&s);
    let s = mask_token_like(&s);
    strip_query_strings(&s)
}

fn mask_needles(text: &str, needles: &[String]) -> String {
    let bytes = text.as_bytes();
    let mut marked = vec![false; bytes.len()];
    let mut windows: HashSet<&[u8]> = HashSet::new();
    for n in needles {
        let nb = n.as_bytes();
        if nb.len() >= WINDOW {
            windows.extend(nb.windows(WINDOW));
        } else if !nb.is_empty() {
            for (i, _) in text.match_indices(n.as_str()) {
                marked[i..i + nb.len()].iter_mut().for_each(|m| *m = true);
            }
        }
    }
    if !windows.is_empty() {
        for (i, w) in bytes.windows(WINDOW).enumerate() {
            if windows.contains(w) {
                marked[i..i + WINDOW].iter_mut().for_each(|m| *m = true);
            }
        }
    }
    if !marked.contains(&true) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if !marked[i] {
            i += 1;
            continue;
        }
        let mut start = i;
        let mut end = i;
        while end < bytes.len() && marked[end] {
            end += 1;
        }
        // Widen to the word (and base64 padding on the right).
        while start > copied && is_word_byte(bytes[start - 1]) {
            start -= 1;
        }
        loop {
            while end < bytes.len() && (marked[end] || is_word_byte(bytes[end])) {
                end += 1;
            }
            let pad = end;
            while end < bytes.len() && bytes[end] == b'=' {
                end += 1;
            }
            if end == pad {
                break;
            }
        }
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Masks the credential after `Basic` / `Bearer` (case-insensitive, at a word start).
fn mask_credentials(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let keyword = [&b"basic"[..], &b"bearer"[..]].into_iter().find(|k| {
            at_word_start
                && bytes[i..].len() >= k.len()
                && bytes[i..i + k.len()].eq_ignore_ascii_case(k)
        });
        let Some(keyword) = keyword else {
            i += 1;
            continue;
        };
        // Separator: spaces, tabs, `+` (form-encoded space) or `%20`.
        let mut j = i + keyword.len();
        loop {
            if j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'+') {
                j += 1;
            } else if bytes.len() >= j + 3 && bytes[j..j + 3].eq_ignore_ascii_case(b"%20") {
                j += 3;
            } else {
                break;
            }
        }
        let sep_end = j;
        while j < bytes.len() && (is_word_byte(bytes[j]) || bytes[j] == b'=') {
            j += 1;
        }
        let cred = &text[sep_end..j];
        let plain_word = cred
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_lowercase());
        if sep_end == i + keyword.len() || cred.is_empty() || plain_word {
            i += keyword.len();
            continue;
        }
        out.push_str(&text[copied..sep_end]);
        out.push_str(REDACTED);
        copied = j;
        i = j;
    }
    out.push_str(&text[copied..]);
    out
}

/// Characters of an upstream text examined before it is quoted (a quote shows at most
/// [`SNIPPET_CHARS`]; masking can only shorten the text).
const QUOTE_SCAN_CHARS: usize = 4 * SNIPPET_CHARS;

/// Bytes of a body examined for a quote.
const QUOTE_SCAN_BYTES: usize = 16 * 1024;

/// Longest word a quote's first cut extends into (beyond, the word is dropped).
const QUOTE_MAX_WORD: usize = 8 * 1024;

/// An upstream text ready to be quoted in a message: whitespace collapsed, masked by
/// [`mask_upstream`], then cut to [`SNIPPET_CHARS`]. A long text is first cut after
/// [`QUOTE_SCAN_CHARS`] characters, but never inside a word (a token is only recognised whole):
/// the cut moves to the word's end, or before the word when it is enormous.
pub fn quote(text: &str, secrets: &Secrets) -> String {
    let text = collapse_ws(text);
    let head = match text.char_indices().nth(QUOTE_SCAN_CHARS) {
        None => text,
        Some((idx, _)) => {
            let rest = &text[idx..];
            let word_end = rest
                .find(|c: char| !(c.is_ascii() && is_word_byte(c as u8)))
                .unwrap_or(rest.len());
            if word_end <= QUOTE_MAX_WORD {
                format!("{}…", &text[..idx + word_end])
            } else {
                format!("{}…", trim_partial_word(&text[..idx]))
            }
        }
    };
    truncate_chars(&mask_upstream(&head, secrets), SNIPPET_CHARS)
}

/// [`quote`] of a body's start (lossy UTF-8; a cut falls on a word boundary).
pub fn quote_bytes(body: &[u8], secrets: &Secrets) -> String {
    quote(&lossy_head(body, QUOTE_SCAN_BYTES), secrets)
}

/// The first `max` bytes of `body` as text; when it is cut, the word the cut falls in is dropped
/// (it could be the start of a secret too short to be recognised) and `…` marks the cut.
pub fn lossy_head(body: &[u8], max: usize) -> String {
    if body.len() <= max {
        return String::from_utf8_lossy(body).into_owned();
    }
    let mut end = max;
    while end > 0 && is_word_byte(body[end - 1]) {
        end -= 1;
    }
    format!("{}…", String::from_utf8_lossy(&body[..end]))
}

fn trim_partial_word(s: &str) -> &str {
    s.trim_end_matches(|c: char| c.is_ascii() && is_word_byte(c as u8))
}

/// Replaces every occurrence of every non-empty secret in `s` with `[redacted]` (longest secrets
/// first, so a secret containing another is masked whole). Exact matches only: for upstream
/// texts use [`mask_upstream`].
pub fn redact(s: &str, secrets: &[&str]) -> String {
    let mut list: Vec<&str> = secrets.iter().copied().filter(|x| !x.is_empty()).collect();
    list.sort_by_key(|x| std::cmp::Reverse(x.len()));
    let mut out = s.to_string();
    for secret in list {
        if out.contains(secret) {
            out = out.replace(secret, "[redacted]");
        }
    }
    out
}

/// Removes the query string (`?...` up to the next whitespace or quote) of every URL-like word.
pub fn strip_query_strings(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut skipping = false;
    for c in s.chars() {
        if skipping {
            if c.is_whitespace() || c == '"' || c == '\'' || c == ')' || c == '>' {
                skipping = false;
                out.push(c);
            }
            continue;
        }
        if c == '?' && looks_like_url_before(&out) {
            skipping = true;
            out.push_str("?[redacted]");
            continue;
        }
        out.push(c);
    }
    out
}

fn looks_like_url_before(prefix: &str) -> bool {
    let word = prefix
        .rsplit(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '(')
        .next()
        .unwrap_or("");
    word.contains("://")
}

/// Masks words that look like opaque tokens: runs of at least 32 characters from
/// `[A-Za-z0-9._~+/=-]` mixing letters and digits. Intuit echoes token prefixes in 401 details.
pub fn mask_token_like(s: &str) -> String {
    fn is_tok(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '+' | '/' | '=' | '-')
    }
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let letters = word.chars().any(|c| c.is_ascii_alphabetic());
        let digits = word.chars().any(|c| c.is_ascii_digit());
        if word.chars().count() >= 32 && letters && digits && !word.contains("://") {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if is_tok(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Truncates to at most `max` characters (on a char boundary), appending `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((idx, _)) => {
            let mut t = s[..idx].to_string();
            t.push('…');
            t
        }
    }
}

impl fmt::Display for FaultInfo {
    /// `type code N: message (detail)`, omitting absent parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = &self.fault_type {
            parts.push(t.clone());
        }
        if let Some(c) = &self.code {
            parts.push(format!("code {c}"));
        }
        let head = parts.join(" ");
        let mut text = String::new();
        if let Some(m) = &self.message {
            text.push_str(m);
        }
        if let Some(d) = &self.detail {
            if !d.is_empty() && Some(d) != self.message.as_ref() {
                if text.is_empty() {
                    text.push_str(d);
                } else {
                    text.push_str(" (");
                    text.push_str(d);
                    text.push(')');
                }
            }
        }
        match (head.is_empty(), text.is_empty()) {
            (true, true) => Ok(()),
            (false, true) => f.write_str(&head),
            (true, false) => f.write_str(&text),
            (false, false) => write!(f, "{head}: {text}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fault() -> FaultInfo {
        FaultInfo {
            fault_type: Some("ValidationFault".into()),
            code: Some("4001".into()),
            message: Some("Invalid query".into()),
            detail: Some("QueryValidationError: invalid context declaration: Custmoer".into()),
        }
    }

    #[test]
    fn sqlstates() {
        let cases: Vec<(QboError, &str)> = vec![
            (QboError::InvalidParameter("x".into()), "22023"),
            (
                QboError::Unauthorized {
                    fault: None,
                    intuit_tid: None,
                },
                "28000",
            ),
            (QboError::InvalidGrant(String::new()), "28000"),
            (QboError::InvalidClient(String::new()), "28000"),
            (
                QboError::Http {
                    status: 403,
                    fault: None,
                    intuit_tid: None,
                    body_snippet: String::new(),
                },
                "28000",
            ),
            (
                QboError::Http {
                    status: 400,
                    fault: None,
                    intuit_tid: None,
                    body_snippet: String::new(),
                },
                "08000",
            ),
            (QboError::Network("x".into()), "08006"),
            (QboError::BadResponse("x".into()), "08P01"),
            (
                QboError::ResponseTooLarge {
                    limit: 1,
                    parsed: false,
                    intuit_tid: None,
                },
                "54000",
            ),
            (QboError::Cancelled, "57014"),
            (
                QboError::RetriesExhausted {
                    attempts: 7,
                    last: Box::new(QboError::Network("x".into())),
                },
                "08006",
            ),
        ];
        for (e, s) in cases {
            assert_eq!(e.sqlstate(), s, "{e:?}");
            assert_eq!(e.sqlstate().len(), 5);
        }
    }

    #[test]
    fn short_descriptions() {
        assert_eq!(QboError::Network("timed out".into()).short(), "a timeout");
        assert_eq!(
            QboError::Network("request failed: connection reset by peer".into()).short(),
            "a network error"
        );
        assert_eq!(
            QboError::BadResponse("x".into()).short(),
            "an unusable response"
        );
        let t = QboError::Throttled {
            status: 429,
            retry_after: None,
            fault: None,
            intuit_tid: None,
        };
        assert_eq!(t.short(), "HTTP 429");
    }

    #[test]
    fn retryable() {
        assert!(QboError::Network("x".into()).is_retryable());
        assert!(QboError::BadResponse("x".into()).is_retryable());
        assert!(QboError::Throttled {
            status: 429,
            retry_after: None,
            fault: None,
            intuit_tid: None
        }
        .is_retryable());
        assert!(QboError::Transient {
            status: 503,
            retry_after: None,
            fault: None,
            intuit_tid: None,
            body_snippet: String::new()
        }
        .is_retryable());
        assert!(!QboError::Unauthorized {
            fault: None,
            intuit_tid: None
        }
        .is_retryable());
        assert!(!QboError::InvalidGrant(String::new()).is_retryable());
        assert!(!QboError::Cancelled.is_retryable());
        assert!(!QboError::Http {
            status: 400,
            fault: None,
            intuit_tid: None,
            body_snippet: String::new()
        }
        .is_retryable());
        assert!(!QboError::RetriesExhausted {
            attempts: 3,
            last: Box::new(QboError::Network("x".into()))
        }
        .is_retryable());
    }

    #[test]
    fn display_texts() {
        let e = QboError::Http {
            status: 400,
            fault: Some(Box::new(fault())),
            intuit_tid: Some("1-5f7349e0-0fd2bee86a8a83c67a77fbb2".into()),
            body_snippet: "ignored".into(),
        };
        assert_eq!(
            e.to_string(),
            "QuickBooks API error: HTTP 400: ValidationFault code 4001: Invalid query \
             (QueryValidationError: invalid context declaration: Custmoer) (intuit_tid 1-5f7349e0-0fd2bee86a8a83c67a77fbb2)"
        );
        let e = QboError::Transient {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
            fault: None,
            intuit_tid: None,
            body_snippet: "503 Service Temporarily Unavailable".into(),
        };
        assert_eq!(
            e.to_string(),
            "QuickBooks API transient error: HTTP 503, Retry-After 7 s: 503 Service Temporarily Unavailable"
        );
        assert_eq!(
            QboError::InvalidGrant(String::new()).to_string(),
            "the refresh token was rejected by Intuit (invalid_grant): the company must be re-authorized with qbo.connect"
        );
        assert_eq!(
            QboError::InvalidGrant("Token invalid".into()).to_string(),
            "the refresh token was rejected by Intuit (invalid_grant: Token invalid): the company must be re-authorized with qbo.connect"
        );
        let e = QboError::RetriesExhausted {
            attempts: 7,
            last: Box::new(QboError::Throttled {
                status: 429,
                retry_after: None,
                fault: None,
                intuit_tid: Some("t1".into()),
            }),
        };
        assert_eq!(
            e.to_string(),
            "gave up after 7 attempts: QuickBooks API throttled the request (HTTP 429) (intuit_tid t1)"
        );
        assert_eq!(e.intuit_tid(), Some("t1"));
        assert_eq!(e.http_status(), Some(429));
        let e = QboError::UnstableSecond {
            entity: "Invoice".into(),
            second: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).single().unwrap(),
            expected: 2500,
            seen: 2499,
            attempts: 3,
        };
        assert_eq!(
            e.to_string(),
            "Invoice records updated at 2025-01-02T03:04:05+00:00 could not be read completely: \
             count(*) said 2500 but 2499 distinct Ids were seen, after 3 tries"
        );
    }

    #[test]
    fn a_second_too_large_names_the_second_the_claim_what_was_held_and_the_setting() {
        let e = QboError::SecondTooLarge {
            entity: "Invoice".into(),
            second: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).single().unwrap(),
            claimed: 1_000_000_000_000,
            held: 12_000,
            fits: 20_000,
            limit: 67_108_864,
            others: 4_000_000,
            buffer_mb: 256,
        };
        assert_eq!(e.sqlstate(), "54000");
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "Invoice records updated at 2025-01-02T03:04:05+00:00: QuickBooks claims 1000000000000 \
             records in that one second, more than qbo.max_buffer_mb = 256 MB lets pg_qbo remember \
             while it reads them (12000 of their Ids held; the Ids of the seconds being read may \
             take 67108864 bytes, a quarter of it, about 20000 Ids of this length, 4000000 bytes of \
             it held by other seconds being read at the same time): raise qbo.max_buffer_mb and \
             start a new run (a resume keeps the run's settings)"
        );
    }

    #[test]
    fn redact_replaces_all_secrets() {
        assert_eq!(
            redact("a=SECRET b=SECRETX c=SECRET", &["SECRET", "SECRETX", ""]),
            "a=[redacted] b=[redacted] c=[redacted]"
        );
        assert_eq!(redact("nothing", &[]), "nothing");
    }

    #[test]
    fn strips_query_strings() {
        assert_eq!(
            strip_query_strings("error sending request for url (http://h/x?token=abc&y=1): boom"),
            "error sending request for url (http://h/x?[redacted]): boom"
        );
        assert_eq!(strip_query_strings("what? no url"), "what? no url");
    }

    #[test]
    fn masks_token_like_words() {
        assert_eq!(
            mask_token_like("Token expired: AB01601390262kxzxOlnHYdhtEVRXISU7piPqQrCmmbDN35Yjd"),
            "Token expired: [redacted]"
        );
        assert_eq!(
            mask_token_like("Invalid query at 4001"),
            "Invalid query at 4001"
        );
    }

    // Secrets of Intuit's real shapes.
    const CID: &str = "ABpQ2oMw7lQm6nP0x2dN1qvJ8sT5kZc3rY9wH4uL0eFgAiBjKl";
    const SECRET: &str = "x7Kd2Pq9Lm4Rt8Vw1Yz5Bn3Hc6Fg0Js2Ua9Ek7Qo";
    const RT: &str = "AB11750000000Xk2m9Pq4Rt7Vw1Yz5Bn3Hc6Fg0Js2Ua9E";
    const AT: &str = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..Tm9wZUxvbmdJdlN0cmluZzEy.q1W2e3R4t5Y6u7I8o9P0aSdFgHjKlZxCvBnMqWeRtYuIoPaSdFgHjKlZx.Zm9vYmFyYmF6cXV4MTIzNDU2";
    /// Shapes with characters URL-encoding changes.
    const ODD_SECRET: &str = "x7Kd2Pq9/Lm4+Rt8Vw1 Yz5=Bn3Hc6Fg0Js2Ua9~Ek7Qo";
    const ODD_RT: &str = "AB11750000000Xk2m9Pq4/Rt7Vw1+Yz5Bn3Hc6=Fg0Js2Ua9E";

    fn secrets(secret: &str, rt: &str) -> Secrets {
        Secrets::new().with_client(CID, secret).with(rt).with(AT)
    }

    fn b64(engine: &base64::engine::GeneralPurpose, s: &str) -> String {
        engine.encode(s)
    }

    /// Raw, URL-encoded (independent encoder) and base64 forms that must never show.
    fn forbidden(secret: &str, rt: &str) -> Vec<String> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let enc = |s: &str, lower: bool| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                        char::from(b).to_string()
                    } else if lower {
                        format!("%{b:02x}")
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let mut v = Vec::new();
        for s in [secret, rt, AT] {
            v.extend([s.to_string(), enc(s, false), enc(s, true)]);
        }
        let pair = format!("{CID}:{secret}");
        for b in [b64(&STANDARD, &pair), b64(&URL_SAFE_NO_PAD, &pair)] {
            v.push(enc(&b, false));
            v.push(b);
        }
        v
    }

    /// Fails if any 16-character window of any forbidden string appears in `text`.
    pub(crate) fn assert_no_window(text: &str, forbidden: &[String]) {
        for f in forbidden {
            let chars: Vec<char> = f.chars().collect();
            for w in chars.windows(16) {
                let w: String = w.iter().collect();
                assert!(!text.contains(&w), "{w:?} (of {f:?}) leaked in: {text}");
            }
        }
    }

    #[test]
    fn masks_every_shape_of_every_secret() {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        for (secret, rt) in [(SECRET, RT), (ODD_SECRET, ODD_RT)] {
            let sec = secrets(secret, rt);
            let pair = format!("{CID}:{secret}");
            let form_pair = format!(
                "{}:{}",
                percent_encode(CID, Pct::Form, false),
                percent_encode(secret, Pct::Form, false)
            );
            let mut shapes = vec![
                format!("client secret {secret} echoed"),
                format!(
                    "refresh_token={} & more",
                    percent_encode(rt, Pct::Form, false)
                ),
                format!("refresh_token={}", percent_encode(rt, Pct::Rfc3986, true)),
                format!("secret={}", percent_encode(secret, Pct::Form, true)),
                format!("token {rt}, again {rt}"),
                format!("Authorization: Bearer {AT}"),
                format!("\"{AT}\""),
                // A cut echo: the first 20 characters only.
                format!("prefix {}", &rt[..20]),
                format!("{}…", &secret[..18]),
            ];
            for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                for p in [&pair, &form_pair] {
                    let b = b64(&engine, p);
                    shapes.push(format!("Authorization: Basic {b}"));
                    shapes.push(format!("auth={}", percent_encode(&b, Pct::Form, false)));
                    shapes.push(format!("b64 {b} alone"));
                }
            }
            for shape in &shapes {
                let masked = mask_upstream(shape, &sec);
                assert!(masked.contains(REDACTED), "{shape} -> {masked}");
                assert_no_window(&masked, &forbidden(secret, rt));
            }
        }
        // Debug of the secret set shows none of them.
        let dbg = format!("{:?}", secrets(SECRET, RT));
        assert!(
            dbg.starts_with("Secrets(") && dbg.ends_with("forms, redacted)"),
            "{dbg}"
        );
        assert_no_window(&dbg, &forbidden(SECRET, RT));
    }

    #[test]
    fn masks_unknown_credentials_after_basic_and_bearer() {
        let none = Secrets::new();
        for (text, want) in [
            (
                "Authorization: Basic Zm9vOmJhcg==",
                "Authorization: Basic [redacted]",
            ),
            ("basic Zm9vOmJhcg and more", "basic [redacted] and more"),
            ("BASIC%20Zm9vOmJhcg%3D%3D&x=1", "BASIC%20[redacted]&x=1"),
            ("Basic+Zm9vOmJhcg", "Basic+[redacted]"),
            ("bearer abc.DEF-123_x~y", "bearer [redacted]"),
            ("BEARER  T0k3n;", "BEARER  [redacted];"),
            // Plain words are left alone.
            (
                "Bearer realm=\"Intuit\", error=\"invalid_token\"",
                "Bearer realm=\"Intuit\", error=\"invalid_token\"",
            ),
            ("basic validation failed", "basic validation failed"),
            ("Basic", "Basic"),
            ("isBasic Zm9vOmJhcg==", "isBasic Zm9vOmJhcg=="),
        ] {
            assert_eq!(mask_upstream(text, &none), want, "{text}");
        }
    }

    #[test]
    fn masks_before_cutting() {
        let sec = secrets(SECRET, RT);
        // A secret across the 300-character cut, and across the scan cut, in many positions.
        for pad in [250usize, 270, 285, 295, 1150, 1190, 1199, 1205] {
            let text = format!("{}{SECRET} {RT} tail", "a ".repeat(pad / 2));
            let q = quote(&text, &sec);
            assert!(q.chars().count() <= SNIPPET_CHARS + 1, "{q}");
            assert_no_window(&q, &forbidden(SECRET, RT));
            // Without the known secrets, the token-like rule still masks them whole.
            let q = quote(&text, &Secrets::new());
            assert_no_window(&q, &forbidden(SECRET, RT));
        }
        // A body cut in the middle of a token drops the piece.
        let body = format!("{}{RT}", " ".repeat(20_000 - 10));
        let q = quote_bytes(body.as_bytes(), &Secrets::new());
        assert!(!q.contains("AB11"), "{q}");
        assert_eq!(lossy_head(b"abc def", 5), "abc …");
        assert_eq!(lossy_head(b"abc def", 50), "abc def");
        // Long plain words are still quoted (cut after masking).
        let long = "x".repeat(5000);
        assert_eq!(
            quote(&long, &Secrets::new()).chars().count(),
            SNIPPET_CHARS + 1
        );
    }

    #[test]
    fn new_token_errors() {
        let e = QboError::UnusableTokenResponse {
            status: 200,
            detail: "expires_in is not a number (a string)".into(),
            salvaged: Some(Box::new(SalvagedTokens {
                refresh_token: Some(RT.into()),
                access_token: Some(AT.into()),
                ..SalvagedTokens::default()
            })),
            intuit_tid: Some("t1".into()),
        };
        assert_eq!(
            e.to_string(),
            "unusable answer from Intuit's token endpoint (HTTP 200): expires_in is not a number (a string); the new refresh token it carried is kept (intuit_tid t1)"
        );
        assert_no_window(&format!("{e:?}"), &forbidden(SECRET, RT));
        assert_eq!(
            (e.sqlstate(), e.is_retryable(), e.intuit_tid()),
            ("08P01", false, Some("t1"))
        );
        let e = QboError::TokenResponseTooLarge {
            limit: 16384,
            intuit_tid: None,
        };
        assert_eq!((e.sqlstate(), e.is_retryable()), ("54000", false));
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate_chars("ééé", 2), "éé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }
}
