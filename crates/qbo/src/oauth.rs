//! OAuth2 refresh against Intuit's token endpoint, with the `oauth2` crate driven by our own
//! `reqwest::Client` (one HTTP/TLS stack; built by [`crate::client::build_http_client`] with
//! redirects disabled, as the `oauth2` docs advise against SSRF).
//!
//! - `POST token_url`, `Authorization: Basic base64(client_id:client_secret)`, form body
//!   `grant_type=refresh_token&refresh_token=...`.
//! - The refresh token ROTATES: [`TokenSet::refresh_token`] is the new one when Intuit sent one;
//!   the caller must store it durably at once, before using the access token.
//! - `invalid_grant` → [`QboError::InvalidGrant`] (re-authorize with `qbo.connect`),
//!   `invalid_client` → [`QboError::InvalidClient`], 5xx → [`QboError::Transient`], 429 →
//!   [`QboError::Throttled`], timeouts and connection errors → [`QboError::Network`] (retryable).
//! - No message ever contains the client secret or a token: every server text goes through
//!   [`crate::error::quote`] with the exchange's [`Secrets`] (client secret, base64 of the client
//!   pair, refresh token, in every encoding), and a 2xx body is never quoted at all.
//! - The whole exchange is bounded by `timeout` (needs a tokio runtime with time enabled); the
//!   future is cancel-safe in the sense that dropping it aborts the request, but callers should
//!   let a refresh finish (a rotated token lost in flight disconnects the company).
//!
//! Design: `oauth2` still builds the request (Basic auth with RFC 6749 encoding, form body) and
//! parses the answer, but the HTTP exchange is ours ([`send_bounded`], given to `oauth2` as its
//! `AsyncHttpClient` closure): the body is read in chunks and dropped as soon as it exceeds
//! [`TOKEN_RESPONSE_MAX_BYTES`] ([`QboError::TokenResponseTooLarge`]), where `oauth2`'s own
//! reqwest glue reads any body whole. Our errors travel through `oauth2` untouched. The function
//! also keeps a copy of a 2xx body: when `oauth2` cannot turn it into a token set (a field of the
//! wrong type, a missing field, a wrong Content-Type), that body is read again leniently
//! ([`salvage`]) because Intuit may already have rotated the refresh token in it; the result is a
//! [`QboError::UnusableTokenResponse`] carrying the [`SalvagedTokens`] for the caller to store
//! before it fails, with a fixed-vocabulary description of what was wrong ([`diagnose`]).
//! Bypassing `oauth2`'s parser entirely was not needed: its strict parse is the normal path, and
//! the lenient one only runs on the copy when it fails.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, ExtraTokenFields, HttpRequest, HttpResponse, RefreshToken,
    RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{quote, quote_bytes, truncate_chars, QboError, Secrets};
use crate::fault::{parse_fault_masked, FaultInfo};

/// Largest token-endpoint body read, in bytes. A real Intuit token response is about 1 KB (two
/// tokens, a JWT-like access token being the larger); 16 KiB leaves room for any plausible
/// growth while bounding what a broken or hostile endpoint can make a backend hold.
pub const TOKEN_RESPONSE_MAX_BYTES: usize = 16 * 1024;

/// Intuit's extra token response field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IntuitExtraFields {
    /// Seconds until the refresh token expires (about 100 days, rolling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_refresh_token_expires_in: Option<u64>,
}

impl ExtraTokenFields for IntuitExtraFields {}

type IntuitTokenResponse = StandardTokenResponse<IntuitExtraFields, BasicTokenType>;

type IntuitClient = oauth2::Client<
    BasicErrorResponse,
    IntuitTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// The tokens returned by a refresh.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The new access token (valid about an hour).
    pub access_token: String,
    /// The refresh token to use from now on, when Intuit sent one (it rotates: store it at once).
    pub refresh_token: Option<String>,
    /// Lifetime of the access token, as sent (`Some(0)` is possible: see
    /// [`crate::lifetime::access_expiry`] for what is believed).
    pub expires_in: Option<Duration>,
    /// Lifetime of the refresh token (Intuit's `x_refresh_token_expires_in`).
    pub x_refresh_token_expires_in: Option<Duration>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .field(
                "x_refresh_token_expires_in",
                &self.x_refresh_token_expires_in,
            )
            .finish()
    }
}

/// What could be read from a 2xx token response that was not a usable token set (carried by
/// [`QboError::UnusableTokenResponse`]). Each field is only set when its value was sane: a
/// non-empty string for the tokens, a non-negative whole number of seconds (a JSON number or a
/// string of digits) for the lifetimes. `Debug` shows no token.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SalvagedTokens {
    /// The rotated refresh token: store it before failing (the old one is superseded).
    pub refresh_token: Option<String>,
    /// Lifetime of that refresh token.
    pub x_refresh_token_expires_in: Option<Duration>,
    /// The access token.
    pub access_token: Option<String>,
    /// Lifetime of the access token.
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for SalvagedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalvagedTokens")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "x_refresh_token_expires_in",
                &self.x_refresh_token_expires_in,
            )
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What the HTTP layer saw of the token endpoint's answer (the `oauth2` errors drop the status).
#[derive(Default)]
struct Seen {
    status: Option<u16>,
    tid: Option<String>,
    content_type: Option<String>,
    /// A copy of a 2xx body (at most [`TOKEN_RESPONSE_MAX_BYTES`]), for [`salvage`].
    ok_body: Option<Vec<u8>>,
}

/// An error of [`send_bounded`], carried through `oauth2` as its HTTP client error.
#[derive(Debug)]
struct Fail(QboError);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Fail {}

/// One HTTP exchange for `oauth2`: sends `req` with `http` and reads the body in chunks, failing
/// with [`QboError::TokenResponseTooLarge`] as soon as it would exceed `cap` bytes (announced by
/// `Content-Length` or as it arrives). Records the status, `intuit_tid`, Content-Type and a copy
/// of a 2xx body in `seen`. Bounded by the client's timeout and the caller's.
async fn send_bounded(
    http: &reqwest::Client,
    req: HttpRequest,
    cap: usize,
    seen: &Mutex<Seen>,
) -> Result<HttpResponse, Fail> {
    let mut req: reqwest::Request = req
        .try_into()
        .map_err(|e| Fail(QboError::from_reqwest(e)))?;
    if let Some(v) = req.headers_mut().get_mut(AUTHORIZATION) {
        v.set_sensitive(true);
    }
    let mut resp = http
        .execute(req)
        .await
        .map_err(|e| Fail(QboError::from_reqwest(e)))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let tid = headers
        .get("intuit_tid")
        .or_else(|| headers.get("intuit-tid"))
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate_chars(v.trim(), 100))
        .filter(|v| !v.is_empty());
    if let Ok(mut s) = seen.lock() {
        s.status = Some(status.as_u16());
        s.tid = tid.clone();
        s.content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    let too_large = || {
        Fail(QboError::TokenResponseTooLarge {
            limit: cap,
            intuit_tid: tid.clone(),
        })
    };
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Fail(QboError::from_reqwest(e)))?
    {
        if body.len() + chunk.len() > cap {
            // Dropping `resp` closes the connection: nothing more is read.
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        if let Ok(mut s) = seen.lock() {
            s.ok_body = Some(body.clone());
        }
    }
    let mut builder = oauth2::http::Response::builder()
        .status(status)
        .version(resp.version());
    for (name, value) in headers.iter() {
        builder = builder.header(name, value);
    }
    builder.body(body).map_err(|_| {
        Fail(QboError::BadResponse(
            "the token endpoint's response headers could not be read".into(),
        ))
    })
}

/// A token endpoint with its own HTTP client: no redirects followed (the client credentials
/// must never be sent elsewhere) and its own timeouts, apart from the data requests'.
pub struct TokenEndpoint {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl TokenEndpoint {
    /// The endpoint at `url`, connecting within `connect_timeout` and answering within `timeout`.
    pub fn new(
        url: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, QboError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| QboError::Network(format!("cannot build the token client: {e}")))?;
        Ok(TokenEndpoint { http, url, timeout })
    }

    /// One refresh-token grant at this endpoint (see [`refresh`]).
    pub async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<TokenSet, QboError> {
        refresh(
            &self.http,
            &self.url,
            client_id,
            client_secret,
            refresh_token,
            self.timeout,
        )
        .await
    }
}

/// Exchanges `refresh_token` for new tokens at `token_url` (one attempt, bounded by `timeout`).
///
/// A 2xx answer that is not a usable token set is a [`QboError::UnusableTokenResponse`] carrying
/// what could be salvaged from it: the caller must store its refresh token before failing.
pub async fn refresh(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    refresh_token: &str,
    timeout: Duration,
) -> Result<TokenSet, QboError> {
    if client_id.is_empty() || client_secret.is_empty() || refresh_token.is_empty() {
        return Err(QboError::InvalidParameter(
            "the connection has no client id, client secret or refresh token: register it with qbo.connect".into(),
        ));
    }
    let url = TokenUrl::new(token_url.to_string()).map_err(|_| {
        QboError::InvalidParameter(format!(
            "token URL {:?} is not a valid URL",
            truncate_chars(token_url, 100)
        ))
    })?;
    let client: IntuitClient = oauth2::Client::new(ClientId::new(client_id.to_string()))
        .set_client_secret(ClientSecret::new(client_secret.to_string()))
        .set_auth_type(AuthType::BasicAuth)
        .set_token_uri(url);
    let seen = Mutex::new(Seen::default());
    let bounded = |req: HttpRequest| send_bounded(http, req, TOKEN_RESPONSE_MAX_BYTES, &seen);
    let rt = RefreshToken::new(refresh_token.to_string());
    let fut = client.exchange_refresh_token(&rt).request_async(&bounded);
    let result = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => {
            return Err(QboError::Network(format!(
                "token refresh timed out after {} ms",
                timeout.as_millis()
            )))
        }
    };
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    let secrets = Secrets::new()
        .with_client(client_id, client_secret)
        .with(refresh_token);
    let status = seen.status;
    let ok_status = status.filter(|s| (200..300).contains(s));
    match result {
        Ok(tok) if !tok.access_token().secret().trim().is_empty() => Ok(TokenSet {
            access_token: tok.access_token().secret().clone(),
            refresh_token: tok
                .refresh_token()
                .map(|r| r.secret().clone())
                .filter(|r| !r.is_empty()),
            expires_in: tok.expires_in(),
            x_refresh_token_expires_in: tok
                .extra_fields()
                .x_refresh_token_expires_in
                .map(Duration::from_secs),
        }),
        Err(RequestTokenError::Request(Fail(e))) => Err(e),
        // A 2xx oauth2 could not use (or an empty access token): never quoted, salvaged.
        Ok(_) | Err(_) if ok_status.is_some() => {
            Err(unusable(ok_status.unwrap_or(200), &seen, &secrets))
        }
        Ok(_) => Err(QboError::BadResponse(
            "the token endpoint's answer has an empty access token".into(),
        )),
        Err(e) => Err(map_error(e, &seen, &secrets)),
    }
}

/// The error for a 2xx body oauth2 could not turn into a token set.
fn unusable(status: u16, seen: &Seen, secrets: &Secrets) -> QboError {
    let body = seen.ok_body.as_deref().unwrap_or_default();
    let value = lenient_json(body);
    // A 2xx carrying an OAuth error (`{"error":"invalid_grant"}`): treat it as that error.
    if let Some(Value::Object(obj)) = &value {
        if obj.get("error").is_some_and(Value::is_string) && obj.get("access_token").is_none() {
            if let Ok(err) =
                serde_json::from_value::<BasicErrorResponse>(Value::Object(obj.clone()))
            {
                return server_error(err, status, seen.tid.clone(), secrets);
            }
        }
    }
    QboError::UnusableTokenResponse {
        status,
        detail: diagnose(status, seen.content_type.as_deref(), body, value.as_ref()),
        salvaged: value.as_ref().and_then(salvage).map(Box::new),
        intuit_tid: seen.tid.clone(),
    }
}

/// The body as JSON, tolerating a BOM and surrounding whitespace.
fn lenient_json(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str(text.trim_start_matches('\u{feff}').trim()).ok()
}

/// A lifetime in seconds, when sane: a non-negative whole JSON number, or a string of digits.
fn sane_seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e15)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || t.len() > 15 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        }
        _ => None,
    }
}

/// Reads what it can from a token response that failed the strict parse. `None` when it holds
/// neither token.
pub(crate) fn salvage(v: &Value) -> Option<SalvagedTokens> {
    let obj = v.as_object()?;
    let token = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let secs = |k: &str| obj.get(k).and_then(sane_seconds).map(Duration::from_secs);
    let s = SalvagedTokens {
        refresh_token: token("refresh_token"),
        x_refresh_token_expires_in: secs("x_refresh_token_expires_in"),
        access_token: token("access_token"),
        expires_in: secs("expires_in"),
    };
    (s.refresh_token.is_some() || s.access_token.is_some()).then_some(s)
}

/// What is wrong with a 2xx token response, in a fixed vocabulary: field names and kinds of
/// problems, never a value (the body carries tokens).
pub(crate) fn diagnose(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    value: Option<&Value>,
) -> String {
    let mut problems: Vec<String> = Vec::new();
    if status != 200 {
        problems.push("a token response must come with HTTP 200".into());
    }
    if content_type.is_some_and(|ct| {
        !ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    }) {
        problems.push("its Content-Type is not application/json".into());
    }
    match value {
        None if body.iter().all(u8::is_ascii_whitespace) => {
            problems.push("the body is empty".into())
        }
        None => problems.push(format!("the {}-byte body is not JSON", body.len())),
        Some(Value::Object(obj)) => {
            match obj.get("access_token") {
                None | Some(Value::Null) => problems.push("access_token is missing".into()),
                Some(Value::String(s)) if s.trim().is_empty() => {
                    problems.push("access_token is empty".into())
                }
                Some(Value::String(_)) => {}
                Some(_) => problems.push("access_token is not a string".into()),
            }
            match obj.get("token_type") {
                None | Some(Value::Null) => problems.push("token_type is missing".into()),
                Some(Value::String(_)) => {}
                Some(_) => problems.push("token_type is not a string".into()),
            }
            for key in ["refresh_token", "scope"] {
                if obj.get(key).is_some_and(|v| !v.is_string() && !v.is_null()) {
                    problems.push(format!("{key} is not a string"));
                }
            }
            for key in ["expires_in", "x_refresh_token_expires_in"] {
                let what = match obj.get(key) {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) if n.as_u64().is_some() => None,
                    Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f < 0.0) => {
                        Some("is negative")
                    }
                    Some(Value::Number(_)) => Some("is not a whole number of seconds"),
                    Some(Value::String(_)) => Some("is not a number (a string)"),
                    Some(_) => Some("is not a number"),
                };
                if let Some(w) = what {
                    problems.push(format!("{key} {w}"));
                }
            }
        }
        Some(_) => problems.push("the body is not a JSON object".into()),
    }
    if problems.is_empty() {
        problems.push("the body does not have the shape of a token response".into());
    }
    problems.join(", ")
}

fn server_error(
    err: BasicErrorResponse,
    status: u16,
    tid: Option<String>,
    secrets: &Secrets,
) -> QboError {
    let tid_note = tid
        .as_ref()
        .map(|t| format!(" (intuit_tid {t})"))
        .unwrap_or_default();
    let desc = err
        .error_description()
        .map(|d| quote(d, secrets))
        .unwrap_or_default();
    let with_tid = |d: String| match (d.is_empty(), &tid) {
        (true, Some(t)) => format!("intuit_tid {t}"),
        _ => format!("{d}{tid_note}"),
    };
    match err.error() {
        BasicErrorResponseType::InvalidGrant => QboError::InvalidGrant(with_tid(desc)),
        BasicErrorResponseType::InvalidClient => QboError::InvalidClient(with_tid(desc)),
        other => {
            let fault = Box::new(FaultInfo {
                fault_type: Some("OAuth2".into()),
                code: Some(quote(other.as_ref(), secrets)),
                message: if desc.is_empty() { None } else { Some(desc) },
                detail: None,
            });
            by_status(status, Some(fault), tid, String::new())
        }
    }
}

/// Maps an oauth2 error of a non-2xx answer (or of no answer).
fn map_error(
    e: RequestTokenError<Fail, BasicErrorResponse>,
    seen: &Seen,
    secrets: &Secrets,
) -> QboError {
    let tid = seen.tid.clone();
    let tid_note = tid
        .as_ref()
        .map(|t| format!(" (intuit_tid {t})"))
        .unwrap_or_default();
    match (e, seen.status) {
        (RequestTokenError::Request(Fail(e)), _) => e,
        (RequestTokenError::ServerResponse(err), status) => {
            server_error(err, status.unwrap_or(400), tid, secrets)
        }
        (RequestTokenError::Parse(_, body), Some(s)) => {
            let fault =
                parse_fault_masked(seen.content_type.as_deref(), &body, secrets).map(Box::new);
            by_status(s, fault, tid, quote_bytes(&body, secrets))
        }
        (RequestTokenError::Other(msg), Some(s)) => by_status(s, None, tid, quote(&msg, secrets)),
        (RequestTokenError::Parse(..), None) => {
            QboError::BadResponse(format!("unreadable token endpoint response{tid_note}"))
        }
        (RequestTokenError::Other(msg), None) => QboError::BadResponse(format!(
            "token endpoint: {}{tid_note}",
            quote(&msg, secrets)
        )),
    }
}

fn by_status(
    status: u16,
    fault: Option<Box<FaultInfo>>,
    intuit_tid: Option<String>,
    body_snippet: String,
) -> QboError {
    match status {
        429 => QboError::Throttled {
            status,
            retry_after: None,
            fault,
            intuit_tid,
        },
        500 | 502 | 503 | 504 => QboError::Transient {
            status,
            retry_after: None,
            fault,
            intuit_tid,
            body_snippet,
        },
        401 => QboError::InvalidClient(
            fault
                .map(|f| f.to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "HTTP 401".into()),
        ),
        _ => QboError::Http {
            status,
            fault,
            intuit_tid,
            body_snippet,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{build_http_client, HttpConfig};
    use crate::error::tests::assert_no_window;
    use crate::fault::tests::sample;
    use wiremock::matchers::{body_string, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const CID: &str = "ABclientId123";
    const SECRET: &str = "sEcReT456";
    const RT: &str = "AB11600000000refreshTOKENold0000000000000000";

    fn http() -> reqwest::Client {
        build_http_client(&HttpConfig {
            request_timeout: Duration::from_secs(5),
            ..HttpConfig::default()
        })
        .unwrap()
    }

    async fn server_with(status: u16, body: &str) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/v1/tokens/bearer"))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_raw(body.as_bytes().to_vec(), "application/json;charset=UTF-8")
                    .insert_header("intuit_tid", "1234-1234-1234-123"),
            )
            .mount(&server)
            .await;
        server
    }

    async fn call(server: &MockServer) -> Result<TokenSet, QboError> {
        refresh(
            &http(),
            &format!("{}/oauth2/v1/tokens/bearer", server.uri()),
            CID,
            SECRET,
            RT,
            Duration::from_secs(3),
        )
        .await
    }

    fn no_secret(e: &QboError) {
        let s = format!("{e} {e:?}");
        assert!(!s.contains(SECRET) && !s.contains(RT), "{s}");
    }

    #[tokio::test]
    async fn sends_basic_auth_and_form_and_surfaces_rotation() {
        let server = MockServer::start().await;
        let body = String::from_utf8(sample("oauth-jsclient/refreshResponse.json")).unwrap();
        Mock::given(method("POST"))
            .and(path("/oauth2/v1/tokens/bearer"))
            .and(header(
                "authorization",
                "Basic QUJjbGllbnRJZDEyMzpzRWNSZVQ0NTY=",
            ))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(header("accept", "application/json"))
            .and(body_string(format!(
                "grant_type=refresh_token&refresh_token={RT}"
            )))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(body.into_bytes(), "application/json;charset=UTF-8"),
            )
            .expect(1)
            .mount(&server)
            .await;
        let t = call(&server).await.unwrap();
        assert_eq!(t.access_token, "sample_access_token");
        assert_eq!(t.refresh_token.as_deref(), Some("sample_refresh_token"));
        assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(
            t.x_refresh_token_expires_in,
            Some(Duration::from_secs(8_726_400))
        );
        assert_eq!(
            format!("{t:?}"),
            "TokenSet { access_token: \"[redacted]\", refresh_token: Some(\"[redacted]\"), expires_in: Some(3600s), x_refresh_token_expires_in: Some(8726400s) }"
        );
    }

    #[tokio::test]
    async fn real_dotnet_sample_with_bom_free_body() {
        // The SDK document starts with a UTF-8 BOM (as stored); the wire body has none.
        let raw = String::from_utf8(sample(
            "QuickBooks-V3-DotNET-SDK/success_refreshtoken_response.json",
        ))
        .unwrap();
        let body = raw.trim_start_matches('\u{feff}');
        let server = server_with(200, body).await;
        let t = call(&server).await.unwrap();
        assert_eq!(
            t.refresh_token.as_deref(),
            Some("L311478109728uVoOkDSUCl4s8FDRvjHR6kUKz0RHe3WtZQuBq")
        );
        assert_eq!(
            t.x_refresh_token_expires_in,
            Some(Duration::from_secs(15_552_000))
        );
        assert!(t
            .access_token
            .starts_with("eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0.."));
    }

    #[tokio::test]
    async fn no_rotation_when_absent() {
        let server = server_with(
            200,
            r#"{"access_token":"a1","token_type":"bearer","expires_in":3600}"#,
        )
        .await;
        let t = call(&server).await.unwrap();
        assert_eq!(
            (t.refresh_token, t.x_refresh_token_expires_in),
            (None, None)
        );
    }

    #[tokio::test]
    async fn invalid_grant_variants() {
        let server = server_with(400, r#"{"error":"invalid_grant"}"#).await;
        let e = call(&server).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the refresh token was rejected by Intuit (invalid_grant: intuit_tid 1234-1234-1234-123): the company must be re-authorized with qbo.connect"
        );
        assert_eq!(e.sqlstate(), "28000");
        assert!(!e.is_retryable());
        let server = server_with(
            400,
            r#"{"error_description":"Incorrect or invalid refresh token","error":"invalid_grant"}"#,
        )
        .await;
        let e = call(&server).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the refresh token was rejected by Intuit (invalid_grant: Incorrect or invalid refresh token (intuit_tid 1234-1234-1234-123)): the company must be re-authorized with qbo.connect"
        );
        // A server echoing the token in its description: redacted.
        let server = server_with(
            400,
            &format!(r#"{{"error_description":"token {RT} revoked","error":"invalid_grant"}}"#),
        )
        .await;
        let e = call(&server).await.unwrap_err();
        no_secret(&e);
        assert!(e.to_string().contains("token [redacted] revoked"));
    }

    #[tokio::test]
    async fn invalid_client() {
        let server = server_with(401, r#"{"error":"invalid_client"}"#).await;
        let e = call(&server).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "Intuit rejected the app's client credentials (invalid_client: intuit_tid 1234-1234-1234-123): check the client id and secret given to qbo.connect"
        );
        assert_eq!(e.sqlstate(), "28000");
        no_secret(&e);
    }

    #[tokio::test]
    async fn service_unavailable_is_retryable() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(503).set_body_raw(
                    b"<html><head><title>503 Service Temporarily Unavailable</title></head></html>"
                        .to_vec(),
                    "text/html",
                ),
            )
            .mount(&server)
            .await;
        let e = call(&server).await.unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        assert!(
            matches!(e, QboError::Transient { status: 503, .. }),
            "{e:?}"
        );
        let server = server_with(503, "").await;
        let e = call(&server).await.unwrap_err();
        assert!(
            matches!(e, QboError::Transient { status: 503, .. }),
            "{e:?}"
        );
        no_secret(&e);
    }

    #[tokio::test]
    async fn timeout_and_refused_are_network() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
            .mount(&server)
            .await;
        let e = refresh(
            &http(),
            &format!("{}/t", server.uri()),
            CID,
            SECRET,
            RT,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "network error talking to QuickBooks: token refresh timed out after 300 ms"
        );
        assert!(e.is_retryable());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = refresh(
            &http(),
            &format!("http://127.0.0.1:{port}/t"),
            CID,
            SECRET,
            RT,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, QboError::Network(_)) && e.is_retryable(),
            "{e:?}"
        );
        no_secret(&e);
    }

    #[tokio::test]
    async fn rejects_missing_credentials() {
        let e = refresh(
            &http(),
            "http://127.0.0.1:9/t",
            CID,
            "",
            RT,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        let e = refresh(
            &http(),
            "not a url",
            CID,
            SECRET,
            RT,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "token URL \"not a url\" is not a valid URL");
    }

    // --- Secrets of Intuit's real shapes, and every encoding an endpoint could echo. ---

    /// Client id (50 characters), as Intuit issues them.
    const REAL_CID: &str = "ABpQ2oMw7lQm6nP0x2dN1qvJ8sT5kZc3rY9wH4uL0eFgAiBjKl";
    /// Client secret (40 characters).
    const REAL_SECRET: &str = "x7Kd2Pq9Lm4Rt8Vw1Yz5Bn3Hc6Fg0Js2Ua9Ek7Qo";
    /// Refresh token: `AB11` + 10 digits + alphanumerics.
    const REAL_RT: &str = "AB11750000000Xk2m9Pq4Rt7Vw1Yz5Bn3Hc6Fg0Js2Ua9E";
    /// The rotated refresh token a response carries.
    const NEW_RT: &str = "AB11750003600Qw8e7Rt6Yu5Io4Pa3Sd2Fg1Hj0KlZxCvBn";
    /// A JWT-like access token (with dots).
    const NEW_AT: &str = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..Tm9wZUxvbmdJdlN0cmluZzEy.q1W2e3R4t5Y6u7I8o9P0aSdFgHjKlZxCvBnMqWeRtYuIoPaSdFgHjKlZx.Zm9vYmFyYmF6cXV4MTIzNDU2";
    /// Same shapes with characters that URL-encoding changes.
    const ODD_SECRET: &str = "x7Kd2Pq9/Lm4+Rt8Vw1 Yz5=Bn3Hc6Fg0Js2Ua9~Ek7Qo";
    const ODD_RT: &str = "AB11750000000Xk2m9Pq4/Rt7Vw1+Yz5Bn3Hc6=Fg0Js2Ua9E";

    /// Percent-encoding written independently of the code under test: `form` is
    /// application/x-www-form-urlencoded (space as `+`), otherwise RFC 3986.
    fn pct(s: &str, form: bool, lower: bool) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            let keep = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_')
                || (form && b == b'*')
                || (!form && b == b'~');
            if keep {
                out.push(char::from(b));
            } else if form && b == b' ' {
                out.push('+');
            } else if lower {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Every form of the secrets that must never show: raw, URL-encoded, and the base64 of the
    /// client pair (raw and form-encoded pair; standard and URL-safe alphabets, padded or not).
    fn forbidden(cid: &str, secret: &str, tokens: &[&str]) -> Vec<String> {
        use base64::Engine;
        let mut v: Vec<String> = Vec::new();
        for s in std::iter::once(secret).chain(tokens.iter().copied()) {
            v.push(s.to_string());
            for (form, lower) in [(true, false), (true, true), (false, false), (false, true)] {
                v.push(pct(s, form, lower));
            }
        }
        let pairs = [
            format!("{cid}:{secret}"),
            format!("{}:{}", pct(cid, true, false), pct(secret, true, false)),
        ];
        for pair in pairs {
            for engine in [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                let b = engine.encode(&pair);
                v.push(pct(&b, true, false));
                v.push(b);
            }
        }
        v
    }

    fn assert_clean(e: &QboError, forbidden: &[String]) {
        assert_no_window(&format!("{e}"), forbidden);
        assert_no_window(&format!("{e:?}"), forbidden);
    }

    async fn call_with(
        server: &MockServer,
        cid: &str,
        secret: &str,
        rt: &str,
    ) -> Result<TokenSet, QboError> {
        refresh(
            &http(),
            &format!("{}/oauth2/v1/tokens/bearer", server.uri()),
            cid,
            secret,
            rt,
            Duration::from_secs(3),
        )
        .await
    }

    fn rotated_body(expires_in: &str) -> String {
        format!(
            r#"{{"x_refresh_token_expires_in":8726400,"refresh_token":"{NEW_RT}","access_token":"{NEW_AT}","token_type":"bearer","expires_in":{expires_in}}}"#
        )
    }

    #[tokio::test]
    async fn unparseable_2xx_never_quotes_the_tokens() {
        for expires_in in [
            r#""3600""#,
            "-5",
            "3600.5",
            r#""soon""#,
            "null, \"scope\": 7",
        ] {
            let server = server_with(200, &rotated_body(expires_in)).await;
            let e = call_with(&server, REAL_CID, REAL_SECRET, REAL_RT)
                .await
                .unwrap_err();
            assert_clean(
                &e,
                &forbidden(REAL_CID, REAL_SECRET, &[REAL_RT, NEW_RT, NEW_AT]),
            );
            // The rotated refresh token is handed to the caller, not lost.
            let QboError::UnusableTokenResponse { salvaged, .. } = &e else {
                panic!("{e:?}")
            };
            let salvaged = salvaged.as_deref().expect("salvaged");
            assert_eq!(salvaged.refresh_token.as_deref(), Some(NEW_RT));
            assert_eq!(salvaged.access_token.as_deref(), Some(NEW_AT));
            assert_eq!(
                salvaged.x_refresh_token_expires_in,
                Some(Duration::from_secs(8_726_400))
            );
            assert_eq!(e.sqlstate(), "08P01");
            assert!(
                !e.is_retryable(),
                "a retry would present the superseded token"
            );
            assert_eq!(e.intuit_tid(), Some("1234-1234-1234-123"));
        }
    }

    #[tokio::test]
    async fn unusable_2xx_says_what_is_wrong_in_general_terms() {
        let cases: [(&str, &str, Option<u64>); 5] = [
            (
                r#""3600""#,
                "expires_in is not a number (a string)",
                Some(3600),
            ),
            ("-5", "expires_in is negative", None),
            (
                "3600.5",
                "expires_in is not a whole number of seconds",
                None,
            ),
            (r#""soon""#, "expires_in is not a number (a string)", None),
            ("[1]", "expires_in is not a number", None),
        ];
        for (expires_in, detail, salvaged_secs) in cases {
            let server = server_with(200, &rotated_body(expires_in)).await;
            let e = call_with(&server, REAL_CID, REAL_SECRET, REAL_RT)
                .await
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "unusable answer from Intuit's token endpoint (HTTP 200): {detail}; \
                     the new refresh token it carried is kept (intuit_tid 1234-1234-1234-123)"
                )
            );
            let QboError::UnusableTokenResponse { salvaged, .. } = &e else {
                panic!("{e:?}")
            };
            let s = salvaged.as_deref().unwrap();
            assert_eq!(s.expires_in, salvaged_secs.map(Duration::from_secs));
            assert_eq!(
                format!("{s:?}"),
                format!(
                    "SalvagedTokens {{ refresh_token: Some(\"[redacted]\"), x_refresh_token_expires_in: Some(8726400s), access_token: Some(\"[redacted]\"), expires_in: {:?} }}",
                    s.expires_in
                )
            );
        }
        // No token at all, not JSON, wrong content type, empty access token.
        let cases = [
            (
                r#"{"token_type":"bearer","expires_in":3600}"#,
                "application/json",
                "access_token is missing; it carried no refresh token to keep",
            ),
            (
                "<html>ok</html>",
                "text/html",
                "its Content-Type is not application/json, the 15-byte body is not JSON; it carried no refresh token to keep",
            ),
            (
                &format!(r#"{{"access_token":"","refresh_token":"{NEW_RT}","token_type":"bearer"}}"#),
                "application/json",
                "access_token is empty; the new refresh token it carried is kept",
            ),
            (
                &format!(r#"{{"access_token":"{NEW_AT}","refresh_token":"{NEW_RT}","token_type":"bearer","expires_in":3600}}"#),
                "text/plain",
                "its Content-Type is not application/json; the new refresh token it carried is kept",
            ),
        ];
        for (body, ct, want) in cases {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), ct))
                .mount(&server)
                .await;
            let e = call_with(&server, REAL_CID, REAL_SECRET, REAL_RT)
                .await
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("unusable answer from Intuit's token endpoint (HTTP 200): {want}")
            );
            assert_clean(
                &e,
                &forbidden(REAL_CID, REAL_SECRET, &[REAL_RT, NEW_RT, NEW_AT]),
            );
        }
        // A 201 with a perfect token set is still refused, but its tokens are kept.
        let server = server_with(201, &rotated_body("3600")).await;
        let e = call_with(&server, REAL_CID, REAL_SECRET, REAL_RT)
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("unusable answer from Intuit's token endpoint (HTTP 201): a token response must come with HTTP 200;"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_oauth_error_in_a_200_is_that_error() {
        let server = server_with(
            200,
            r#"{"error":"invalid_grant","error_description":"Token invalid"}"#,
        )
        .await;
        let e = call(&server).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the refresh token was rejected by Intuit (invalid_grant: Token invalid (intuit_tid 1234-1234-1234-123)): the company must be re-authorized with qbo.connect"
        );
    }

    #[tokio::test]
    async fn expires_in_zero_is_passed_on_for_the_expiry_policy() {
        let server = server_with(200, &rotated_body("0")).await;
        let t = call(&server).await.unwrap();
        assert_eq!(t.expires_in, Some(Duration::ZERO));
        assert_eq!(t.refresh_token.as_deref(), Some(NEW_RT));
    }

    #[tokio::test]
    async fn an_announced_large_body_is_not_read() {
        let big = format!(
            r#"{{"access_token":"{}"}}"#,
            "a".repeat(TOKEN_RESPONSE_MAX_BYTES)
        );
        let server = server_with(200, &big).await;
        let e = call(&server).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "Intuit's token endpoint sent a response larger than the 16384-byte cap (intuit_tid 1234-1234-1234-123): it was not read further (a token response is about 1 KB)"
        );
        assert_eq!(e.sqlstate(), "54000");
        assert!(!e.is_retryable());
        // Exactly at the cap is fine.
        let body = rotated_body("3600");
        let pad = TOKEN_RESPONSE_MAX_BYTES - body.len();
        let server = server_with(200, &format!("{body}{}", " ".repeat(pad))).await;
        assert!(call(&server).await.is_ok());
    }

    /// Answers 400 (or `status`) with an `error_description` (or a raw body) echoing the
    /// request's Authorization header and form body verbatim.
    struct Echo {
        status: u16,
        json: bool,
    }

    impl wiremock::Respond for Echo {
        fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let form = String::from_utf8_lossy(&req.body).to_string();
            let echo = format!("bad request: Authorization: {auth} body: {form}");
            let body = if self.json {
                serde_json::json!({"error": "invalid_request", "error_description": echo})
                    .to_string()
            } else {
                format!("<html><body>{echo}</body></html>")
            };
            ResponseTemplate::new(self.status).set_body_raw(
                body.into_bytes(),
                if self.json {
                    "application/json"
                } else {
                    "text/html"
                },
            )
        }
    }

    #[tokio::test]
    async fn echoed_credentials_are_masked_in_every_encoding() {
        for (secret, rt) in [(REAL_SECRET, REAL_RT), (ODD_SECRET, ODD_RT)] {
            for (status, json) in [(400, true), (400, false), (503, false), (401, true)] {
                let server = MockServer::start().await;
                Mock::given(method("POST"))
                    .respond_with(Echo { status, json })
                    .mount(&server)
                    .await;
                let e = call_with(&server, REAL_CID, secret, rt).await.unwrap_err();
                assert_clean(&e, &forbidden(REAL_CID, secret, &[rt]));
            }
        }
    }

    #[tokio::test]
    async fn static_echoes_of_other_encodings_are_masked() {
        use base64::Engine;
        let pair = format!("{REAL_CID}:{ODD_SECRET}");
        let urlsafe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&pair);
        let std_pct = pct(
            &base64::engine::general_purpose::STANDARD.encode(&pair),
            false,
            true,
        );
        let desc = format!(
            "basic {urlsafe} / BASIC%20{std_pct} / bearer {NEW_AT} / refresh_token={} / rt={} / {}",
            pct(ODD_RT, false, true),
            pct(ODD_RT, true, false),
            &ODD_SECRET[3..30],
        );
        let body = serde_json::json!({"error": "invalid_grant", "error_description": desc});
        let server = server_with(400, &body.to_string()).await;
        let e = call_with(&server, REAL_CID, ODD_SECRET, ODD_RT)
            .await
            .unwrap_err();
        assert_clean(&e, &forbidden(REAL_CID, ODD_SECRET, &[ODD_RT, NEW_AT]));
    }

    /// A token endpoint on a raw socket streaming a chunked 200 body without end (up to
    /// `max` bytes, so a client without a cap fails the test rather than the machine).
    /// Returns the URL and a handle giving the number of body bytes written.
    fn flood_server(max: usize) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/t", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => return 0,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if sock.write_all(head.as_bytes()).is_err() {
                return 0;
            }
            let mut written = 0;
            let mut first = true;
            let chunk = vec![b'x'; 8192];
            while written < max {
                let mut data = Vec::new();
                if first {
                    data.extend_from_slice(br#"{"access_token":""#);
                    first = false;
                }
                data.extend_from_slice(&chunk);
                let frame = [
                    format!("{:x}\r\n", data.len()).into_bytes(),
                    data,
                    b"\r\n".to_vec(),
                ]
                .concat();
                if sock.write_all(&frame).is_err() {
                    return written;
                }
                written += frame.len();
            }
            let _ = sock.write_all(b"0\r\n\r\n");
            written
        });
        (url, handle)
    }

    #[tokio::test]
    async fn an_endless_token_body_is_cut_at_the_cap() {
        let (url, handle) = flood_server(64 * 1024 * 1024);
        let e = refresh(&http(), &url, CID, SECRET, RT, Duration::from_secs(10))
            .await
            .unwrap_err();
        let written = tokio::task::spawn_blocking(move || handle.join().unwrap())
            .await
            .unwrap();
        assert_eq!(e.sqlstate(), "54000", "{e}");
        assert!(e.to_string().contains("16384"), "{e}");
        assert!(!e.to_string().contains("xxxx"), "{e}");
        // The client stopped reading: what was written is what the socket buffers held.
        assert!(written < 16 * 1024 * 1024, "{written} bytes were sent");
    }
}
