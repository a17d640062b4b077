//! Fault injection: the spec grammar, the deterministic decision, and the bodies of injected faults.
//!
//! Grammar: a comma-separated list of rules `[token:]KIND[=ARG][:PROB][@nth=N][/every=N]`.
//! * `token:` makes the rule apply to the token endpoint instead of the API (query, batch, cdc).
//!   The kinds `badexpires`, `expires0`, `echoauth` and `flood` exist for the token endpoint only.
//! * `PROB` (0..=1): fire with this probability, decided from hash(seed, request text, attempt
//!   number of that identical request, rule index): the same run of requests sees the same faults,
//!   whatever the arrival order.
//! * `@nth=N`: fire only on the N-th request (of that target) counted since the spec was set.
//! * `/every=N`: fire on every N-th request (of that target) counted since the spec was set.
//! * no PROB, nth or every: fire on every request (subject to the consecutive-fault cap).
//! * `countlie=N` (API only) is not a failure but a lie: a query pinned to one second
//!   (`MetaData.LastUpdatedTime = 'T'`) sees that second as holding N records, `count(*)` says N
//!   and its pages past the real records are filled with made-up ones (see
//!   [`crate::exec::count_lie`]). It is exempt from the consecutive-fault cap (a lie that stopped
//!   after four identical requests would not be one).
//!
//! The first rule that fires wins. Whatever the rules, one identical request never gets more
//! than `--max-consecutive-faults` faults in a row (enforced by the caller).

use chrono::{DateTime, FixedOffset, Utc};

use crate::util::{render_time_ms, StableHash};

/// Body flavour of an HTTP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Xml,
    Html,
}

/// `Retry-After` header of a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    None,
    Secs(u64),
    Date(u64),
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 429 ThrottleExceeded (code 3001).
    Throttle429 {
        body: BodyKind,
        retry_after: RetryAfter,
    },
    /// Legacy HTTP 403 ThrottleExceeded, XML.
    Throttle403,
    /// 500/502/503/504 with a JSON, XML or HTML body.
    Status { code: u16, body: BodyKind },
    /// Close the connection without any response.
    Reset,
    /// Never answer (`None`), or answer normally after a delay in milliseconds.
    Hang(Option<u64>),
    /// 200 with the JSON body cut in half (complete HTTP message, malformed JSON).
    Truncated,
    /// 200 announcing the full Content-Length, then the connection closes half way.
    TruncatedConn,
    /// 200 carrying a Fault body.
    Fault200,
    /// Expire the caller's access token now and answer 401.
    Unauthorized,
    /// Token endpoint only: a refresh that ROTATES the refresh token (whatever
    /// `--rotate-refresh` says; the new one is recorded as current), answered 200 with
    /// `"expires_in"` as a string (`"3600"`), which a strict client cannot parse.
    BadExpires,
    /// Token endpoint only: a normal refresh (rotation as configured) answered with
    /// `"expires_in": 0`; the access token really lives `--access-token-ttl` seconds.
    Expires0,
    /// Token endpoint only: 400 `invalid_request` whose `error_description` echoes the
    /// request's Authorization header and form body verbatim. Nothing is refreshed.
    EchoAuth,
    /// Token endpoint only: 200 `application/json` whose body streams without end: ARG bytes
    /// (default [`FLOOD_DEFAULT_BYTES`]) or until the client hangs up. Nothing is refreshed.
    Flood(Option<u64>),
    /// API only: a query pinned to one second sees it holding ARG records: `count(*)` answers
    /// ARG, and pages past the second's real records are filled with made-up records of fresh
    /// Ids up to position ARG ([`crate::exec::count_lie`]).
    CountLie(u64),
    /// API only: every `count(*)` of a window (not pinned to one second) answers ARG; pages are
    /// left alone ([`crate::exec::window_lie`]).
    WindowLie(u64),
}

/// The lie a query is told under: `countlie` (a pinned second) or `windowlie` (a window's count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    Second(u64),
    Window(u64),
}

impl Kind {
    /// The lie this kind tells, if it is one (not a failure: no cap, counted where it changes an
    /// answer).
    pub fn lie(&self) -> Option<Lie> {
        match *self {
            Kind::CountLie(n) => Some(Lie::Second(n)),
            Kind::WindowLie(n) => Some(Lie::Window(n)),
            _ => None,
        }
    }
}

/// Bytes a `token:flood` body streams when no ARG is given: generous (a token response is
/// about 1 KB), but bounded, so a client that reads everything ends too.
pub const FLOOD_DEFAULT_BYTES: u64 = 256 * 1024 * 1024;

impl Kind {
    /// Kinds that only make sense at the token endpoint.
    pub fn token_only(self) -> bool {
        matches!(
            self,
            Kind::BadExpires | Kind::Expires0 | Kind::EchoAuth | Kind::Flood(_)
        )
    }
}

/// Which endpoint a rule targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Api,
    Token,
}

/// One rule of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub target: Target,
    pub kind: Kind,
    /// The KIND text, for stats and logs.
    pub label: String,
    pub prob: Option<f64>,
    pub nth: Option<u64>,
    pub every: Option<u64>,
}

/// A parsed fault spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub text: String,
    pub rules: Vec<Rule>,
}

impl FaultSpec {
    /// Parses a spec; the error names the bad part.
    pub fn parse(spec: &str) -> Result<FaultSpec, String> {
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            rules.push(parse_rule(item)?);
        }
        Ok(FaultSpec {
            text: spec.to_string(),
            rules,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that fires for this request, if any.
    ///
    /// `key` is the request's identity (realm + endpoint + query text), `attempt` the 1-based
    /// count of identical requests so far, `nth` the 1-based count of requests on this target
    /// since the spec was set.
    pub fn decide(
        &self,
        target: Target,
        seed: u64,
        key: &str,
        attempt: u64,
        nth: u64,
    ) -> Option<&Rule> {
        self.rules.iter().enumerate().find_map(|(i, r)| {
            if r.target != target {
                return None;
            }
            if r.nth.is_some_and(|n| n != nth) {
                return None;
            }
            if r.every.is_some_and(|e| !nth.is_multiple_of(e)) {
                return None;
            }
            if let Some(p) = r.prob {
                let u = StableHash::new(seed)
                    .str(key)
                    .u64(attempt)
                    .u64(i as u64)
                    .unit();
                if u >= p {
                    return None;
                }
            }
            Some(r)
        })
    }
}

fn parse_rule(item: &str) -> Result<Rule, String> {
    let bad = |why: String| format!("bad fault rule {item:?}: {why}");
    let (target, mut rest) = match item.strip_prefix("token:") {
        Some(r) => (Target::Token, r),
        None => (Target::Api, item),
    };
    let mut every = None;
    if let Some((a, b)) = rest.split_once("/every=") {
        every = Some(
            b.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("every={b:?} is not a positive integer")))?,
        );
        rest = a;
    }
    let mut nth = None;
    if let Some((a, b)) = rest.split_once("@nth=") {
        nth = Some(
            b.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("nth={b:?} is not a positive integer")))?,
        );
        rest = a;
    }
    let mut prob = None;
    if let Some((a, b)) = rest.split_once(':') {
        prob = Some(
            b.parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| bad(format!("probability {b:?} is not a number in [0,1]")))?,
        );
        rest = a;
    }
    let (name, arg) = match rest.split_once('=') {
        Some((n, a)) => (
            n,
            Some(
                a.parse::<u64>()
                    .map_err(|_| bad(format!("argument {a:?} is not a non-negative integer")))?,
            ),
        ),
        None => (rest, None),
    };
    let status = |code: u16, body: BodyKind| Kind::Status { code, body };
    let kind = match name {
        "429json" => Kind::Throttle429 {
            body: BodyKind::Json,
            retry_after: RetryAfter::None,
        },
        "429xml" => Kind::Throttle429 {
            body: BodyKind::Xml,
            retry_after: RetryAfter::None,
        },
        "429json-ra" => Kind::Throttle429 {
            body: BodyKind::Json,
            retry_after: RetryAfter::Secs(arg.unwrap_or(1)),
        },
        "429xml-ra" => Kind::Throttle429 {
            body: BodyKind::Xml,
            retry_after: RetryAfter::Secs(arg.unwrap_or(1)),
        },
        "429-radate" | "429json-radate" => Kind::Throttle429 {
            body: BodyKind::Json,
            retry_after: RetryAfter::Date(arg.unwrap_or(1)),
        },
        "429xml-radate" => Kind::Throttle429 {
            body: BodyKind::Xml,
            retry_after: RetryAfter::Date(arg.unwrap_or(1)),
        },
        "403throttle" => Kind::Throttle403,
        "reset" => Kind::Reset,
        "hang" => Kind::Hang(arg),
        "truncated" => Kind::Truncated,
        "truncated-conn" => Kind::TruncatedConn,
        "fault200" => Kind::Fault200,
        "401" => Kind::Unauthorized,
        "badexpires" => Kind::BadExpires,
        "expires0" => Kind::Expires0,
        "echoauth" => Kind::EchoAuth,
        "flood" => Kind::Flood(arg),
        "countlie" => Kind::CountLie(
            arg.ok_or_else(|| bad("countlie needs the count to claim: countlie=N".into()))?,
        ),
        "windowlie" => Kind::WindowLie(
            arg.ok_or_else(|| bad("windowlie needs the count to claim: windowlie=N".into()))?,
        ),
        other => {
            let (code, body) = other.split_at(other.len().min(3));
            let code = match code {
                "500" => 500,
                "502" => 502,
                "503" => 503,
                "504" => 504,
                _ => return Err(bad(format!("unknown fault kind {other:?}"))),
            };
            let body = match body {
                "json" => BodyKind::Json,
                "xml" => BodyKind::Xml,
                "html" => BodyKind::Html,
                _ => return Err(bad(format!("unknown fault kind {other:?}"))),
            };
            status(code, body)
        }
    };
    let takes_arg = matches!(
        kind,
        Kind::Hang(_)
            | Kind::Flood(_)
            | Kind::CountLie(_)
            | Kind::WindowLie(_)
            | Kind::Throttle429 {
                retry_after: RetryAfter::Secs(_) | RetryAfter::Date(_),
                ..
            }
    );
    if arg.is_some() && !takes_arg {
        return Err(bad(format!("fault kind {name:?} takes no =ARG")));
    }
    if kind.lie().is_some() && target == Target::Token {
        return Err(bad(format!(
            "fault kind {name:?} is for queries: write it without token:"
        )));
    }
    if kind.token_only() && target != Target::Token {
        return Err(bad(format!(
            "fault kind {name:?} exists for the token endpoint only: write token:{name}"
        )));
    }
    Ok(Rule {
        target,
        kind,
        label: name.to_string(),
        prob,
        nth,
        every,
    })
}

/// A fully formed HTTP error answer.
#[derive(Debug, Clone)]
pub struct ErrorAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

pub const CT_JSON_OK: &str = "application/json;charset=UTF-8";
pub const CT_JSON_FAULT: &str = "application/json";
pub const CT_XML: &str = "application/xml";
pub const CT_HTML: &str = "text/html";

fn xml_fault(
    now: DateTime<Utc>,
    off: &FixedOffset,
    ftype: &str,
    code: &str,
    msg: &str,
    detail: &str,
) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<IntuitResponse time=\"{}\" xmlns=\"http://schema.intuit.com/finance/v3\">\n  <Fault type=\"{ftype}\">\n    <Error code=\"{code}\">\n      <Message>{msg}</Message>\n      <Detail>{detail}</Detail>\n    </Error>\n  </Fault>\n</IntuitResponse>",
        render_time_ms(now, off)
    )
}

/// The upper-case JSON fault envelope: `{"Fault":{"Error":[...],"type":..},"time":".."}`.
pub fn json_fault(
    now: DateTime<Utc>,
    off: &FixedOffset,
    ftype: &str,
    code: &str,
    msg: &str,
    detail: &str,
) -> String {
    format!(
        "{{\"Fault\":{{\"Error\":[{{\"Message\":{},\"Detail\":{},\"code\":\"{code}\"}}],\"type\":\"{ftype}\"}},\"time\":\"{}\"}}",
        crate::util::json_str(msg),
        crate::util::json_str(detail),
        render_time_ms(now, off)
    )
}

/// The lower-case envelope Intuit's gateway sends (401s, some 500s): epoch-millisecond `time`.
pub fn lowercase_fault(
    now: DateTime<Utc>,
    ftype: &str,
    code: &str,
    msg: &str,
    detail: &str,
) -> String {
    format!(
        "{{\"warnings\":null,\"intuitObject\":null,\"fault\":{{\"error\":[{{\"message\":{},\"detail\":{},\"code\":\"{code}\",\"element\":null}}],\"type\":\"{ftype}\"}},\"report\":null,\"queryResponse\":null,\"batchItemResponse\":[],\"attachableResponse\":[],\"syncErrorResponse\":null,\"requestId\":null,\"time\":{},\"status\":null,\"cdcresponse\":[]}}",
        crate::util::json_str(msg),
        crate::util::json_str(detail),
        now.timestamp_millis()
    )
}

/// The 401 AuthenticationFailed answer, as recorded (`qbo_api/vcr/error/401__0`).
pub fn unauthorized(now: DateTime<Utc>, detail: &str) -> ErrorAnswer {
    ErrorAnswer {
        status: 401,
        content_type: CT_JSON_FAULT,
        body: lowercase_fault(
            now,
            "AUTHENTICATION",
            "3200",
            "message=AuthenticationFailed; errorCode=003200; statusCode=401",
            detail,
        ),
        headers: vec![(
            "www-authenticate",
            "Bearer realm=\"Intuit\", error=\"invalid_token\"".to_string(),
        )],
    }
}

/// The throttle answer (real or injected).
pub fn throttle(
    now: DateTime<Utc>,
    off: &FixedOffset,
    body: BodyKind,
    retry_after: RetryAfter,
) -> ErrorAnswer {
    let msg = "message=ThrottleExceeded; errorCode=003001; statusCode=429";
    let detail = "The request limit was reached.  Try again later";
    let (content_type, body) = match body {
        BodyKind::Xml => (CT_XML, xml_fault(now, off, "SERVICE", "3001", msg, detail)),
        _ => (
            CT_JSON_FAULT,
            json_fault(now, off, "SERVICE", "3001", msg, detail),
        ),
    };
    let mut headers = Vec::new();
    match retry_after {
        RetryAfter::None => {}
        RetryAfter::Secs(s) => headers.push(("retry-after", s.to_string())),
        RetryAfter::Date(s) => {
            // HTTP-dates have second precision: round up so the client never retries early.
            // When to come back is a matter of the throttle, which keeps to the real clock
            // (`now` is QuickBooks' clock, which a test may have moved).
            let at = Utc::now() + chrono::Duration::seconds(s as i64 + 1);
            headers.push((
                "retry-after",
                at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            ));
        }
    }
    ErrorAnswer {
        status: 429,
        content_type,
        body,
        headers,
    }
}

fn html_page(code: u16) -> String {
    let title = match code {
        500 => "500 Internal Server Error",
        502 => "502 Bad Gateway",
        503 => "503 Service Temporarily Unavailable",
        _ => "504 Gateway Time-out",
    };
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body bgcolor=\"white\">\r\n<center><h1>{title}</h1></center>\r\n<hr><center>Avi Vantage/</center>\r\n</body>\r\n</html>\r\n"
    )
}

/// The HTTP answer of an injected fault kind that answers with an error status
/// (`None` for kinds handled at the connection level or that answer 200).
pub fn error_answer(kind: Kind, now: DateTime<Utc>, off: &FixedOffset) -> Option<ErrorAnswer> {
    Some(match kind {
        Kind::Throttle429 { body, retry_after } => throttle(now, off, body, retry_after),
        Kind::Throttle403 => ErrorAnswer {
            status: 403,
            content_type: CT_XML,
            body: xml_fault(
                now,
                off,
                "SERVICE",
                "3001",
                "message=ThrottleExceeded; errorCode=003001; statusCode=403",
                "The request limit was reached.  Try again later",
            ),
            headers: vec![],
        },
        Kind::Status { code, body } => {
            let (name, ecode, detail) = match code {
                500 => ("InternalServerError", "3100", "An internal error occurred"),
                502 => ("BadGateway", "6002", "Bad gateway"),
                503 => ("ServiceUnavailable", "6003", "The service is unavailable"),
                _ => ("Timeout occurred while proxying request", "6002", "Gateway timeout"),
            };
            let msg = format!("message={name}; errorCode=00{ecode}; statusCode={code}");
            let (content_type, text) = match body {
                BodyKind::Json => (CT_JSON_FAULT, lowercase_fault(now, "SERVICE", ecode, &msg, detail)),
                BodyKind::Xml if code == 500 => (
                    CT_XML,
                    xml_fault(
                        now,
                        off,
                        "SystemFault",
                        "10000",
                        "An application error has occurred while processing your request",
                        "System Failure Error: An unexpected error occurred while accessing or saving your data.",
                    ),
                ),
                BodyKind::Xml => (CT_XML, xml_fault(now, off, "SERVICE", ecode, &msg, detail)),
                BodyKind::Html => (CT_HTML, html_page(code)),
            };
            ErrorAnswer {
                status: code,
                content_type,
                body: text,
                headers: vec![],
            }
        }
        Kind::Unauthorized => unauthorized(now, "Token expired: emulator fault injection"),
        Kind::Fault200 => ErrorAnswer {
            status: 200,
            content_type: CT_JSON_OK,
            body: json_fault(
                now,
                off,
                "SystemFault",
                "10000",
                "An application error has occurred while processing your request",
                "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again.",
            ),
            headers: vec![],
        },
        Kind::Reset
        | Kind::Hang(_)
        | Kind::Truncated
        | Kind::TruncatedConn
        | Kind::BadExpires
        | Kind::Expires0
        | Kind::EchoAuth
        | Kind::Flood(_)
        | Kind::CountLie(_)
        | Kind::WindowLie(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> FixedOffset {
        FixedOffset::west_opt(7 * 3600).unwrap()
    }

    #[test]
    fn parses_every_kind() {
        let kinds = [
            "429json",
            "429xml",
            "429json-ra",
            "429xml-ra",
            "429-radate",
            "403throttle",
            "500json",
            "500xml",
            "500html",
            "502json",
            "502xml",
            "502html",
            "503json",
            "503xml",
            "503html",
            "504json",
            "504xml",
            "504html",
            "reset",
            "hang",
            "hang=30000",
            "truncated",
            "truncated-conn",
            "fault200",
            "401",
            "429json-ra=5",
        ];
        let spec = FaultSpec::parse(&kinds.join(",")).unwrap();
        assert_eq!(spec.rules.len(), kinds.len());
        assert_eq!(spec.rules[19].kind, Kind::Hang(None));
        assert_eq!(spec.rules[20].kind, Kind::Hang(Some(30000)));
        assert_eq!(
            spec.rules[25].kind,
            Kind::Throttle429 {
                body: BodyKind::Json,
                retry_after: RetryAfter::Secs(5)
            }
        );
    }

    #[test]
    fn parses_token_only_kinds() {
        let spec = FaultSpec::parse(
            "token:badexpires,token:expires0@nth=2,token:echoauth:0.5,token:flood,token:flood=4096",
        )
        .unwrap();
        let kinds: Vec<Kind> = spec.rules.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::BadExpires,
                Kind::Expires0,
                Kind::EchoAuth,
                Kind::Flood(None),
                Kind::Flood(Some(4096))
            ]
        );
        assert!(spec.rules.iter().all(|r| r.target == Target::Token));
        assert_eq!(spec.rules[1].nth, Some(2));
        assert_eq!(spec.rules[2].prob, Some(0.5));
        for k in ["badexpires", "expires0", "echoauth", "flood", "flood=10"] {
            let e = FaultSpec::parse(k).unwrap_err();
            assert!(e.contains("token endpoint only"), "{k}: {e}");
        }
        let e = FaultSpec::parse("token:echoauth=3").unwrap_err();
        assert!(e.contains("takes no"), "{e}");
        for k in [
            Kind::BadExpires,
            Kind::Expires0,
            Kind::EchoAuth,
            Kind::Flood(None),
        ] {
            assert!(k.token_only());
            assert!(error_answer(k, Utc::now(), &off()).is_none());
        }
        assert!(!Kind::Reset.token_only());
    }

    #[test]
    fn parses_windowlie() {
        let s = FaultSpec::parse("windowlie=7").unwrap();
        assert_eq!(s.rules[0].kind, Kind::WindowLie(7));
        assert_eq!(s.rules[0].kind.lie(), Some(Lie::Window(7)));
        assert!(FaultSpec::parse("windowlie").is_err());
        assert!(FaultSpec::parse("token:windowlie=7").is_err());
    }

    #[test]
    fn parses_countlie() {
        let s = FaultSpec::parse("countlie=1000000000000,countlie=5000@nth=3").unwrap();
        assert_eq!(s.rules[0].kind, Kind::CountLie(1_000_000_000_000));
        assert_eq!(s.rules[0].label, "countlie");
        assert_eq!(
            (s.rules[1].kind, s.rules[1].nth),
            (Kind::CountLie(5000), Some(3))
        );
        assert!(!Kind::CountLie(1).token_only());
        assert!(error_answer(Kind::CountLie(1), Utc::now(), &off()).is_none());
        let e = FaultSpec::parse("countlie").unwrap_err();
        assert!(e.contains("countlie=N"), "{e}");
        let e = FaultSpec::parse("token:countlie=5").unwrap_err();
        assert!(e.contains("for queries"), "{e}");
    }

    #[test]
    fn parses_modifiers() {
        let s = FaultSpec::parse("token:503html@nth=1, 429xml:0.25/every=3").unwrap();
        assert_eq!(s.rules[0].target, Target::Token);
        assert_eq!(s.rules[0].nth, Some(1));
        assert_eq!(s.rules[1].prob, Some(0.25));
        assert_eq!(s.rules[1].every, Some(3));
        assert!(FaultSpec::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_specs_naming_the_bad_part() {
        for (spec, needle) in [
            ("429jsn", "429jsn"),
            ("500json:1.5", "1.5"),
            ("reset@nth=0", "nth"),
            ("reset/every=x", "every"),
            ("reset=5", "takes no"),
            ("hang=abc", "abc"),
        ] {
            let e = FaultSpec::parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn probabilistic_decision_is_deterministic_and_roughly_calibrated() {
        let s = FaultSpec::parse("500json:0.3").unwrap();
        let mut fired = 0;
        for i in 0..2000u64 {
            let key = format!("SELECT * FROM Invoice STARTPOSITION {i}");
            let a = s.decide(Target::Api, 42, &key, 1, i).is_some();
            let b = s.decide(Target::Api, 42, &key, 1, i + 999).is_some();
            assert_eq!(a, b, "decision must not depend on arrival order");
            fired += usize::from(a);
        }
        assert!((450..750).contains(&fired), "{fired}");
        // A different attempt number is a different draw.
        let differs = (0..200u64).any(|i| {
            let key = format!("q{i}");
            s.decide(Target::Api, 42, &key, 1, 1).is_some()
                != s.decide(Target::Api, 42, &key, 2, 1).is_some()
        });
        assert!(differs);
    }

    #[test]
    fn nth_and_every_and_target() {
        let s = FaultSpec::parse("reset@nth=3,token:401").unwrap();
        assert!(s.decide(Target::Api, 1, "q", 1, 2).is_none());
        assert_eq!(
            s.decide(Target::Api, 1, "q", 1, 3).unwrap().kind,
            Kind::Reset
        );
        assert_eq!(
            s.decide(Target::Token, 1, "q", 1, 1).unwrap().kind,
            Kind::Unauthorized
        );
        let s = FaultSpec::parse("503html/every=2").unwrap();
        assert!(s.decide(Target::Api, 1, "q", 1, 1).is_none());
        assert!(s.decide(Target::Api, 1, "q", 1, 2).is_some());
        assert!(s.decide(Target::Token, 1, "q", 1, 2).is_none());
    }

    #[test]
    fn bodies_of_each_http_kind() {
        let now = Utc::now();
        let a = throttle(now, &off(), BodyKind::Xml, RetryAfter::None);
        assert_eq!((a.status, a.content_type), (429, CT_XML));
        assert!(a.body.contains("<Error code=\"3001\">") && a.body.contains("statusCode=429"));
        let a = throttle(now, &off(), BodyKind::Json, RetryAfter::Secs(2));
        assert_eq!(a.headers, vec![("retry-after", "2".to_string())]);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["Fault"]["Error"][0]["code"], "3001");
        let a = throttle(now, &off(), BodyKind::Json, RetryAfter::Date(1));
        assert!(a.headers[0].1.ends_with(" GMT"));
        let a = error_answer(Kind::Throttle403, now, &off()).unwrap();
        assert_eq!(a.status, 403);
        assert!(a.body.contains("statusCode=403"));
        for code in [500u16, 502, 503, 504] {
            for body in [BodyKind::Json, BodyKind::Xml, BodyKind::Html] {
                let a = error_answer(Kind::Status { code, body }, now, &off()).unwrap();
                assert_eq!(a.status, code);
                match body {
                    BodyKind::Json => {
                        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                        assert!(v["fault"]["error"][0]["code"].is_string());
                        assert!(v["time"].is_i64());
                    }
                    BodyKind::Xml => {
                        assert!(a.body.starts_with("<?xml") && a.body.contains("<Fault"))
                    }
                    BodyKind::Html => {
                        assert_eq!(a.content_type, CT_HTML);
                        assert!(a.body.contains(&format!("<h1>{code}")));
                    }
                }
            }
        }
        let a = error_answer(Kind::Unauthorized, now, &off()).unwrap();
        assert_eq!(a.status, 401);
        assert!(a
            .body
            .contains("\"fault\":{\"error\":[{\"message\":\"message=AuthenticationFailed"));
        let a = error_answer(Kind::Fault200, now, &off()).unwrap();
        assert_eq!(a.status, 200);
        assert!(a.body.starts_with("{\"Fault\""));
        for k in [
            Kind::Reset,
            Kind::Hang(None),
            Kind::Truncated,
            Kind::TruncatedConn,
        ] {
            assert!(error_answer(k, now, &off()).is_none());
        }
    }
}
