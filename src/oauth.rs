//! OAuth2 refresh against Intuit's token endpoint, with the `oauth2` crate driven by our own
//! `reqwest::Client` (one HTTP/TLS stack; built by [`crate::qbo::build_http_client`] with
//! redirects disabled, as the `oauth2` docs advise against SSRF).
//!
//! - `POST token_url`, `Authorization: Basic base64(client_id:client_secret)`, form body
//!   `grant_type=refresh_token&refresh_token=...`.
//! - The refresh token ROTATES: [`TokenSet::refresh_token`] is the new one when Intuit sent one;
//!   the caller must store it durably at once, before using the access token.
//! - `invalid_grant` → [`QboError::InvalidGrant`] (re-authorize with `qbo.connect`),
//!   `invalid_client` → [`QboError::InvalidClient`], 5xx → [`QboError::Transient`], 429 →
//!   [`QboError::Throttled`], timeouts and connection errors → [`QboError::Network`] (retryable).
//! - No message ever contains the client secret or a token: server texts are redacted.
//! - The whole exchange is bounded by `timeout` (needs a tokio runtime with time enabled); the
//!   future is cancel-safe in the sense that dropping it aborts the request, but callers should
//!   let a refresh finish (a rotated token lost in flight disconnects the company).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, ExtraTokenFields, HttpClientError,
    HttpRequest, HttpResponse, RefreshToken, RequestTokenError, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::error::{redact, truncate_chars, QboError, SNIPPET_CHARS};
use crate::fault::{collapse_ws, parse_fault, FaultInfo};

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
    /// Lifetime of the access token.
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

/// What the HTTP layer saw of the token endpoint's answer (the `oauth2` errors drop the status).
#[derive(Default)]
struct Seen {
    status: Option<u16>,
    tid: Option<String>,
}

/// Exchanges `refresh_token` for new tokens at `token_url` (one attempt, bounded by `timeout`).
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
    let recording = |req: HttpRequest| {
        let seen = &seen;
        async move {
            let resp: Result<HttpResponse, HttpClientError<reqwest::Error>> = http.call(req).await;
            if let Ok(r) = &resp {
                if let Ok(mut s) = seen.lock() {
                    s.status = Some(r.status().as_u16());
                    s.tid = r
                        .headers()
                        .get("intuit_tid")
                        .or_else(|| r.headers().get("intuit-tid"))
                        .and_then(|v| v.to_str().ok())
                        .map(|v| truncate_chars(v, 100));
                }
            }
            resp
        }
    };
    let rt = RefreshToken::new(refresh_token.to_string());
    let fut = client.exchange_refresh_token(&rt).request_async(&recording);
    let result = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => {
            return Err(QboError::Network(format!(
                "token refresh timed out after {} ms",
                timeout.as_millis()
            )))
        }
    };
    let (status, tid) = match seen.lock() {
        Ok(s) => (s.status, s.tid.clone()),
        Err(_) => (None, None),
    };
    let secrets = [client_secret, refresh_token];
    match result {
        Ok(tok) => Ok(TokenSet {
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
        Err(e) => Err(map_error(e, status, tid, &secrets)),
    }
}

fn clean(s: &str, secrets: &[&str]) -> String {
    truncate_chars(&redact(&collapse_ws(s), secrets), SNIPPET_CHARS)
}

fn map_error(
    e: RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
    status: Option<u16>,
    tid: Option<String>,
    secrets: &[&str],
) -> QboError {
    let tid_note = tid
        .as_ref()
        .map(|t| format!(" (intuit_tid {t})"))
        .unwrap_or_default();
    match e {
        RequestTokenError::ServerResponse(err) => {
            let desc = err
                .error_description()
                .map(|d| clean(d, secrets))
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
                        code: Some(clean(other.as_ref(), secrets)),
                        message: if desc.is_empty() { None } else { Some(desc) },
                        detail: None,
                    });
                    by_status(status.unwrap_or(400), Some(fault), tid, String::new())
                }
            }
        }
        RequestTokenError::Parse(_, body) => {
            let snippet = clean(
                &String::from_utf8_lossy(&body[..body.len().min(4096)]),
                secrets,
            );
            let fault = parse_fault(None, &body).map(|f| {
                Box::new(FaultInfo {
                    fault_type: f.fault_type.map(|x| clean(&x, secrets)),
                    code: f.code.map(|x| clean(&x, secrets)),
                    message: f.message.map(|x| clean(&x, secrets)),
                    detail: f.detail.map(|x| clean(&x, secrets)),
                })
            });
            match status {
                Some(s) if (200..300).contains(&s) => QboError::BadResponse(format!(
                    "unreadable token endpoint response: {snippet}{tid_note}"
                )),
                Some(s) => by_status(s, fault, tid, snippet),
                None => QboError::BadResponse(format!(
                    "unreadable token endpoint response: {snippet}{tid_note}"
                )),
            }
        }
        RequestTokenError::Other(msg) => match status {
            Some(s) if !(200..300).contains(&s) => by_status(s, None, tid, clean(&msg, secrets)),
            _ => QboError::BadResponse(format!(
                "token endpoint: {}{tid_note}",
                clean(&msg, secrets)
            )),
        },
        RequestTokenError::Request(HttpClientError::Reqwest(re)) => QboError::from_reqwest(*re),
        RequestTokenError::Request(other) => QboError::Network(format!(
            "token endpoint: {}",
            clean(&other.to_string(), secrets)
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
    use crate::fault::tests::sample;
    use crate::qbo::{build_http_client, HttpConfig};
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
}
