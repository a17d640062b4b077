//! Parsing of QBO error bodies, whatever shape they come in, and throttle detection.
//!
//! Shapes handled (all seen from the real API):
//! - JSON `{"Fault":{"Error":[{"Message","Detail","code","element"}],"type"},"time"}`;
//! - the lowercase JSON variant (`fault` / `error` / `message` / `detail` / `code`, epoch-ms `time`);
//! - OAuth-style JSON `{"error":"invalid_grant","error_description":"..."}`;
//! - XML `<IntuitResponse><Fault type=".."><Error code=".."><Message>..</Message><Detail>..`,
//!   and a bare `<Fault>` (throttles come as XML even when JSON was asked for);
//! - HTML pages from load balancers (`<title>` or the first text);
//! - empty bodies (`None`) and garbage (its start, as the message).
//!
//! The XML extraction is a tiny hand-rolled scanner rather than quick-xml: we only need the first
//! `Fault` element's `type`, its first `Error`'s `code` and the `Message` / `Detail` texts, must
//! accept malformed documents (the scanner never fails, it just finds less), and one dependency
//! fewer is one less thing to audit. Nothing here panics on any input; every text is masked with
//! [`quote`] (the secrets given to [`parse_fault_masked`], credentials, token-like words) BEFORE it
//! is truncated to [`SNIPPET_CHARS`](crate::error::SNIPPET_CHARS) characters, so a cut never
//! leaves a piece of a secret behind.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{lossy_head, quote, Secrets};

/// What could be learned from an error body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultInfo {
    /// `Fault.type`, e.g. `ValidationFault`, `SERVICE`, `AUTHENTICATION`, `SystemFault`.
    pub fault_type: Option<String>,
    /// The first error's code, e.g. `4001`, `3001`, `3200`.
    pub code: Option<String>,
    /// The first error's message (for HTML: the title or first text).
    pub message: Option<String>,
    /// The first error's detail.
    pub detail: Option<String>,
}

impl FaultInfo {
    fn is_empty(&self) -> bool {
        self.fault_type.is_none()
            && self.code.is_none()
            && self.message.is_none()
            && self.detail.is_none()
    }
}

/// Largest body prefix examined (error bodies are small; a huge one is garbage).
const MAX_SCAN_BYTES: usize = 256 * 1024;

/// Parses any QBO error body. Returns `None` for an empty (or all-whitespace) body; otherwise the
/// best information found. `content_type` is only a hint: the body is sniffed first, because QBO
/// sends XML throttles with JSON requested and HTML from its load balancers.
pub fn parse_fault(content_type: Option<&str>, body: &[u8]) -> Option<FaultInfo> {
    parse_fault_masked(content_type, body, &Secrets::new())
}

/// [`parse_fault`], masking `secrets` (in every encoding) in every text it returns.
pub fn parse_fault_masked(
    content_type: Option<&str>,
    body: &[u8],
    secrets: &Secrets,
) -> Option<FaultInfo> {
    let text = lossy_head(body, MAX_SCAN_BYTES);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return None;
    }
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let info = if text.starts_with('{') || (ct.contains("json") && !text.starts_with('<')) {
        parse_json(text).or_else(|| garbage(text))
    } else if text.starts_with('<') {
        if find_tag(text, "Fault", 0).is_some() {
            parse_xml(text).or_else(|| html_text(text))
        } else {
            html_text(text)
        }
    } else {
        garbage(text)
    };
    info.map(|f| clean(f, secrets))
}

/// True when a response means "throttled": HTTP 429, or fault code 3001, or the text
/// `ThrottleExceeded` anywhere (the legacy throttle came as HTTP 403 with that text).
pub fn is_throttle(status: u16, fault: Option<&FaultInfo>, body: &[u8]) -> bool {
    if status == 429 {
        return true;
    }
    if let Some(f) = fault {
        if let Some(code) = &f.code {
            if code.trim().trim_start_matches('0') == "3001" {
                return true;
            }
        }
        let mentions =
            |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains("ThrottleExceeded"));
        if mentions(&f.message) || mentions(&f.detail) {
            return true;
        }
    }
    let scan = &body[..body.len().min(MAX_SCAN_BYTES)];
    scan.windows(b"ThrottleExceeded".len())
        .any(|w| w == b"ThrottleExceeded")
}

fn clean(f: FaultInfo, secrets: &Secrets) -> FaultInfo {
    let c = |s: Option<String>| s.map(|s| quote(&s, secrets)).filter(|s| !s.is_empty());
    FaultInfo {
        fault_type: c(f.fault_type),
        code: c(f.code),
        message: c(f.message),
        detail: c(f.detail),
    }
}

/// Collapses runs of whitespace into one space and trims.
pub(crate) fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn garbage(text: &str) -> Option<FaultInfo> {
    Some(FaultInfo {
        message: Some(text.to_string()),
        ..FaultInfo::default()
    })
}

fn get_ci<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_json(text: &str) -> Option<FaultInfo> {
    let v: Value = serde_json::from_str(text).ok()?;
    let obj = v.as_object()?;
    if let Some(fault) = get_ci(obj, "Fault").and_then(Value::as_object) {
        let mut info = FaultInfo {
            fault_type: scalar(get_ci(fault, "type")),
            ..FaultInfo::default()
        };
        let first = match get_ci(fault, "Error") {
            Some(Value::Array(a)) => a.first().and_then(Value::as_object),
            Some(Value::Object(o)) => Some(o),
            _ => None,
        };
        if let Some(e) = first {
            info.code = scalar(get_ci(e, "code"));
            info.message = scalar(get_ci(e, "Message"));
            info.detail = scalar(get_ci(e, "Detail"));
        }
        return Some(info);
    }
    // OAuth-style error.
    if let Some(Value::String(code)) = obj.get("error") {
        return Some(FaultInfo {
            fault_type: None,
            code: Some(code.clone()),
            message: scalar(obj.get("error_description")),
            detail: None,
        });
    }
    // A JSON object without any known error key: quote it.
    let info = FaultInfo {
        message: Some(text.to_string()),
        ..FaultInfo::default()
    };
    Some(info)
}

/// Finds `<Name` or `<prefix:Name` followed by whitespace, `>` or `/`; returns the byte index of `<`.
fn find_tag(text: &str, name: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        let rel = text.get(i..)?.find('<')?;
        let start = i + rel;
        let after = start + 1;
        let mut name_start = after;
        // Skip a namespace prefix.
        let rest = text.get(after..)?;
        let word_len = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let word = &rest[..word_len];
        if let Some(colon) = word.find(':') {
            name_start = after + colon + 1;
        }
        if text.get(name_start..after + word_len) == Some(name) {
            return Some(start);
        }
        i = after;
    }
    None
}

/// The opening tag text `<Name attr=..>` starting at `start` (up to `>`).
fn open_tag(text: &str, start: usize) -> &str {
    let rest = text.get(start..).unwrap_or("");
    match rest.find('>') {
        Some(e) => &rest[..=e],
        None => rest,
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let mut search = 0;
    while let Some(rel) = tag.get(search..)?.find(name) {
        let pos = search + rel;
        let before_ok = pos > 0 && tag[..pos].ends_with(|c: char| c.is_whitespace());
        let after = tag.get(pos + name.len()..)?.trim_start();
        if before_ok && after.starts_with('=') {
            let val = after[1..].trim_start();
            let quote = val.chars().next()?;
            if quote == '"' || quote == '\'' {
                let end = val[1..].find(quote)?;
                return Some(decode_entities(&val[1..1 + end]));
            }
        }
        search = pos + name.len();
    }
    None
}

/// Text of the first `<Name>..</Name>` (any prefix) at or after `from`.
fn element_text(text: &str, name: &str, from: usize) -> Option<String> {
    let start = find_tag(text, name, from)?;
    let tag = open_tag(text, start);
    if tag.ends_with("/>") {
        return Some(String::new());
    }
    let content_start = start + tag.len();
    let rest = text.get(content_start..)?;
    let end = rest.find("</").unwrap_or(rest.len());
    let raw = &rest[..end];
    let raw = raw.trim();
    let raw = raw
        .strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
        .unwrap_or(raw);
    Some(decode_entities(raw))
}

fn parse_xml(text: &str) -> Option<FaultInfo> {
    let fault_at = find_tag(text, "Fault", 0)?;
    let mut info = FaultInfo {
        fault_type: attr(open_tag(text, fault_at), "type"),
        ..FaultInfo::default()
    };
    if let Some(err_at) = find_tag(text, "Error", fault_at) {
        info.code = attr(open_tag(text, err_at), "code");
        info.message = element_text(text, "Message", err_at);
        info.detail = element_text(text, "Detail", err_at);
    }
    if info.is_empty() {
        None
    } else {
        Some(info)
    }
}

fn html_text(text: &str) -> Option<FaultInfo> {
    if let Some(t) = element_text(text, "title", 0).or_else(|| element_text(text, "TITLE", 0)) {
        let t = collapse_ws(&strip_tags(&t));
        if !t.is_empty() {
            return Some(FaultInfo {
                message: Some(t),
                ..FaultInfo::default()
            });
        }
    }
    let t = collapse_ws(&strip_tags(text));
    if t.is_empty() {
        None
    } else {
        Some(FaultInfo {
            message: Some(t),
            ..FaultInfo::default()
        })
    }
}

/// Removes tags, comments, `<script>`/`<style>` contents and the `<?xml ..?>` / doctype lines.
fn strip_tags(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        out.push(' ');
        let after = &rest[lt..];
        let lower_head: String = after
            .chars()
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let skip_to = if after.starts_with("<!--") {
            after.find("-->").map(|e| e + 3)
        } else if lower_head.starts_with("<script") {
            find_ci(after, "</script>").map(|e| e + 9)
        } else if lower_head.starts_with("<style") {
            find_ci(after, "</style>").map(|e| e + 8)
        } else {
            after.find('>').map(|e| e + 1)
        };
        match skip_to {
            Some(n) => rest = &after[n..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    decode_entities(&out)
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(&needle.to_ascii_lowercase())
}

/// Decodes the five XML entities and numeric character references; unknown ones are kept.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let semi = after.find(';').filter(|&i| i <= 10);
        let decoded = semi.and_then(|i| {
            let ent = &after[1..i];
            let ch = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let num = if let Some(h) =
                        ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X"))
                    {
                        u32::from_str_radix(h, 16).ok()
                    } else if let Some(d) = ent.strip_prefix('#') {
                        d.parse::<u32>().ok()
                    } else {
                        None
                    };
                    num.and_then(char::from_u32)
                }
            };
            ch.map(|c| (c, i))
        });
        match decoded {
            Some((c, i)) => {
                out.push(c);
                rest = &after[i + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The folder of real sample payloads, for the tests of this crate and of the extension's
/// in-database suite: `$QBO_SAMPLES_DIR`, else `/work/shared/qbo-samples`, else
/// `../shared/qbo-samples` beside the repository.
#[doc(hidden)]
pub fn samples_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Ok(d) = std::env::var("QBO_SAMPLES_DIR") {
        return PathBuf::from(d);
    }
    let fixed = PathBuf::from("/work/shared/qbo-samples");
    if fixed.is_dir() {
        return fixed;
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/qbo-samples"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(rel: &str) -> Vec<u8> {
        let p = samples_dir().join(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read sample {}: {e}", p.display()))
    }

    fn f(t: Option<&str>, c: Option<&str>, m: Option<&str>, d: Option<&str>) -> FaultInfo {
        FaultInfo {
            fault_type: t.map(String::from),
            code: c.map(String::from),
            message: m.map(String::from),
            detail: d.map(String::from),
        }
    }

    #[test]
    fn xml_throttle_429_sample() {
        let body = sample("quickbooks-ruby/too_many_requests_error.xml");
        let got = parse_fault(Some("application/xml"), &body).unwrap();
        assert_eq!(
            got,
            f(
                Some("SERVICE"),
                Some("3001"),
                Some("message=ThrottleExceeded; errorCode=003001; statusCode=429"),
                Some("The request limit was reached. Try again later")
            )
        );
        assert!(is_throttle(429, Some(&got), &body));
    }

    #[test]
    fn xml_throttle_legacy_403_sample_even_labelled_json() {
        let body = sample("quickbooks-ruby/throttle_exceeded_error.xml");
        let got = parse_fault(Some("application/json"), &body).unwrap();
        assert_eq!(got.code.as_deref(), Some("3001"));
        assert_eq!(
            got.message.as_deref(),
            Some("message=ThrottleExceeded; errorCode=003001; statusCode=403")
        );
        assert!(is_throttle(403, Some(&got), &body));
        assert!(is_throttle(403, None, &body));
    }

    #[test]
    fn xml_generic_system_fault_sample() {
        let body = sample("quickbooks-ruby/generic_error.xml");
        let got = parse_fault(Some("text/xml"), &body).unwrap();
        assert_eq!(
            got,
            f(
                Some("SystemFault"),
                Some("10000"),
                Some("An application error has occurred while processing your request"),
                Some("System Failure Error: Could not find resource for relative : some more info here")
            )
        );
        assert!(!is_throttle(500, Some(&got), &body));
    }

    #[test]
    fn bare_xml_fault_takes_first_error() {
        let body = sample("quickbooks-ruby/fault.xml");
        let got = parse_fault(None, &body).unwrap();
        assert_eq!(
            got,
            f(
                Some("ValidationFault"),
                Some("2050"),
                Some("Length exceeds limit"),
                Some("Length of the field exceeds 21 chars")
            )
        );
    }

    #[test]
    fn xml_query_validation_sample() {
        let body = sample("quickbooks-ruby/query_validation_error.xml");
        let got = parse_fault(None, &body).unwrap();
        assert_eq!(got.code.as_deref(), Some("4001"));
        assert_eq!(
            got.detail.as_deref(),
            Some("QueryValidationError: value 0 is too small. Min allowed value is 1")
        );
    }

    #[test]
    fn json_fault_samples() {
        let body = sample("qbo_api/vcr/error/400__1.json");
        let got = parse_fault(Some("application/json"), &body).unwrap();
        assert_eq!(
            got,
            f(
                Some("ValidationFault"),
                Some("4001"),
                Some("Invalid query"),
                Some("QueryValidationError: invalid context declaration: Custmoer")
            )
        );
        let body = sample("ExQuickBooks/api/query_error.json");
        let got = parse_fault(None, &body).unwrap();
        assert_eq!(got.code.as_deref(), Some("4000"));
        assert_eq!(
            got.detail.as_deref(),
            Some("QueryParserError: Encountered \" \"null\" \"NULL \"\" at line 1, column 15. Was expecting: <IDENTIFIER> ...")
        );
    }

    #[test]
    fn lowercase_json_401_sample_masks_token() {
        let body = sample("qbo_api/vcr/error/401__0.json");
        let got = parse_fault(Some("application/json"), &body).unwrap();
        assert_eq!(
            got,
            f(
                Some("AUTHENTICATION"),
                Some("3200"),
                Some("message=AuthenticationFailed; errorCode=003200; statusCode=401"),
                Some("Token expired: [redacted]")
            )
        );
        assert!(!is_throttle(401, Some(&got), &body));
    }

    #[test]
    fn lowercase_500_from_issue_thread() {
        let body = br#"{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=InternalServerError; errorCode=003100; statusCode=500","detail":null,"code":"3100","element":null}],"type":"SERVICE"},"report":null,"time":1519164488680,"cdcresponse":[]}"#;
        let got = parse_fault(Some("application/json"), body).unwrap();
        assert_eq!(
            got,
            f(
                Some("SERVICE"),
                Some("3100"),
                Some("message=InternalServerError; errorCode=003100; statusCode=500"),
                None
            )
        );
    }

    #[test]
    fn oauth_error_json() {
        let got = parse_fault(
            None,
            br#"{"error_description":"Token invalid","error":"invalid_grant"}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            f(None, Some("invalid_grant"), Some("Token invalid"), None)
        );
    }

    #[test]
    fn html_pages() {
        let avi = b"<html><head><title>503 Service Temporarily Unavailable</title></head><body bgcolor=\"white\"><center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>Avi Vantage/</center></body></html>";
        assert_eq!(
            parse_fault(Some("text/html"), avi).unwrap(),
            f(
                None,
                None,
                Some("503 Service Temporarily Unavailable"),
                None
            )
        );
        let iis = b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"><HTML><BODY><h2>Service Unavailable</h2><hr><p>HTTP Error 503. The service is unavailable.</p></BODY></HTML>";
        assert_eq!(
            parse_fault(Some("text/html; charset=us-ascii"), iis)
                .unwrap()
                .message
                .as_deref(),
            Some("Service Unavailable HTTP Error 503. The service is unavailable.")
        );
        let maint = b"<html><head><style>p{color:red}</style><script>var x=1;</script></head><body><p>We&#39;ll be back soon &amp; fast</p></body></html>";
        assert_eq!(
            parse_fault(None, maint).unwrap().message.as_deref(),
            Some("We'll be back soon & fast")
        );
    }

    #[test]
    fn xml_504_from_issue_thread() {
        let body = b"<Fault type=\"SERVICE\"><Error code=\"6002\"><Message>message=Timeout occurred while proxying request; errorCode=006002; statusCode=504</Message></Error></Fault>";
        let got = parse_fault(Some("application/xml"), body).unwrap();
        assert_eq!(got.code.as_deref(), Some("6002"));
        assert_eq!(got.detail, None);
    }

    #[test]
    fn empty_and_garbage() {
        assert_eq!(parse_fault(Some("application/json"), b""), None);
        assert_eq!(parse_fault(None, b"  \r\n "), None);
        let g = parse_fault(None, b"\xff\xfe garbage \x00 bytes").unwrap();
        assert_eq!(
            g.message.as_deref(),
            Some("\u{fffd}\u{fffd} garbage \u{0} bytes")
        );
        let long = "x".repeat(5000);
        let g = parse_fault(None, long.as_bytes()).unwrap();
        assert_eq!(g.message.unwrap().chars().count(), 301);
        // Truncated JSON: quoted, not parsed.
        let g = parse_fault(Some("application/json"), br#"{"Fault":{"Error":[{"Mess"#).unwrap();
        assert_eq!(g.message.as_deref(), Some(r#"{"Fault":{"Error":[{"Mess"#));
        // Broken XML never panics.
        for b in [
            &b"<Fault"[..],
            b"<Fault type=",
            b"<Fault type=\"x",
            b"<a><Fault><Error code='1'><Message>",
            b"<",
            b"&#xffffffff;<",
        ] {
            let _ = parse_fault(None, b);
        }
    }

    #[test]
    fn never_panics_on_prefixes_of_samples() {
        for rel in [
            "quickbooks-ruby/too_many_requests_error.xml",
            "qbo_api/vcr/error/401__0.json",
            "quickbooks-ruby/fault.xml",
        ] {
            let body = sample(rel);
            for n in 0..body.len() {
                let _ = parse_fault(None, &body[..n]);
                let _ = is_throttle(200, None, &body[..n]);
            }
        }
    }

    #[test]
    fn throttle_detection() {
        assert!(is_throttle(429, None, b""));
        assert!(!is_throttle(403, None, b"forbidden"));
        assert!(is_throttle(
            400,
            Some(&f(None, Some("003001"), None, None)),
            b""
        ));
        assert!(is_throttle(
            503,
            Some(&f(None, None, Some("ThrottleExceeded"), None)),
            b""
        ));
        assert!(!is_throttle(
            403,
            Some(&f(Some("SERVICE"), Some("3100"), None, None)),
            b"{}"
        ));
    }
}
