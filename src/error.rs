//! The one error type of the plain-Rust core (planner, pager, HTTP client, OAuth), its mapping to
//! SQLSTATE codes, and the secret-masking helpers every message goes through.
//!
//! Rules:
//! - No `Display` string ever contains a secret: the client never puts tokens or client secrets in
//!   messages, strips query strings from URLs quoted by `reqwest`, and masks long opaque
//!   token-like words that Intuit echoes back in fault details (e.g. `Token expired: AB0160...`).
//! - `intuit_tid` is always shown when known: Intuit support asks for it.
//!
//! SQLSTATE choice (see [`QboError::sqlstate`]):
//! - `22023` invalid_parameter_value: bad input from the caller.
//! - `28000` invalid_authorization_specification: refresh token rejected, client credentials
//!   rejected, 401 after a refresh, 403 that is not a throttle (app not authorized for the company).
//! - `08006` connection_failure: network errors (timeouts, resets, DNS, TLS).
//! - `08P01` protocol_violation: QBO answered something we cannot use (malformed or truncated JSON,
//!   a 200 carrying a Fault, records outside the requested window, a second whose content never
//!   matches its `count(*)`).
//! - `08000` connection_exception: any other upstream HTTP error (400 query rejected, 404, 429 or
//!   5xx once retries are exhausted).
//! - `54000` program_limit_exceeded: a response larger than the configured cap.
//! - `57014` query_canceled: cancelled by the user.
//!
//! [`QboError::RetriesExhausted`] reports the SQLSTATE of its last error.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::fault::FaultInfo;

/// Maximum number of characters of a body or fault text quoted in a message.
pub const SNIPPET_CHARS: usize = 300;

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

    /// The response body exceeded the configured size cap. Not retryable.
    #[error("QuickBooks response larger than the {limit}-byte cap{}: lower page_size or raise the response size limit", tid_suffix(intuit_tid.as_deref()))]
    ResponseTooLarge {
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
            QboError::BadResponse(_) | QboError::UnstableSecond { .. } => "08P01",
            QboError::ResponseTooLarge { .. } => "54000",
            QboError::RetriesExhausted { last, .. } => last.sqlstate(),
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
            | QboError::ResponseTooLarge { intuit_tid, .. } => intuit_tid.as_deref(),
            QboError::RetriesExhausted { last, .. } => last.intuit_tid(),
            _ => None,
        }
    }

    /// A few words for progress notes: `HTTP 429`, `a network error`, `an unusable response`.
    pub fn short(&self) -> String {
        match (self.http_status(), self) {
            (Some(status), _) => format!("HTTP {status}"),
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
            QboError::RetriesExhausted { last, .. } => last.http_status(),
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
        QboError::Network(truncate_chars(&strip_query_strings(&msg), SNIPPET_CHARS))
    }
}

/// Replaces every occurrence of every non-empty secret in `s` with `[redacted]` (longest secrets
/// first, so a secret containing another is masked whole).
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
mod tests {
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
        assert_eq!(
            QboError::Network("timed out".into()).short(),
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

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate_chars("ééé", 2), "éé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }
}
