//! HTTP side of OAuth2: the token endpoint, the OpenID discovery document and token revocation.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::Extension;

use crate::api::{apply_fault, FaultAction};
use crate::faults::{Kind, Target, CT_JSON_OK, FLOOD_DEFAULT_BYTES};
use crate::oauth::TokenError;
use crate::server::{respond, ConnKill, FloodBody, SlotBody};
use crate::state::{App, LogEntry};

fn json(status: u16, body: String) -> Response {
    let mut r = respond(status, CT_JSON_OK, SlotBody::new(Bytes::from(body), None));
    let h = r.headers_mut();
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, no-store"),
    );
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    r
}

/// The 200 of fault `token:flood`: a JSON start, then bytes without end (up to `limit`).
fn respond_flood(limit: u64) -> Response {
    let mut r = Response::new(axum::body::Body::new(FloodBody::new(limit)));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(CT_JSON_OK));
    r
}

/// `POST /oauth2/v1/tokens/bearer`
pub async fn token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    kill: Option<Extension<ConnKill>>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    let key = format!("token|{rt}");
    let attempt = app.bump_attempt(&key);
    let mut entry = LogEntry {
        seq: app.next_seq(),
        method: "POST".into(),
        endpoint: "token",
        realm: None,
        query: form.get("grant_type").map(|g| format!("grant_type={g}")),
        start_position: None,
        max_results: None,
        status: 0,
        fault: None,
        attempt,
        at_us: crate::util::now_us(),
    };
    // Token-endpoint fault kinds that change the answer of a refresh that does happen.
    let mut answer_fault: Option<Kind> = None;
    if let Some(rule) = app.decide_fault(Target::Token, &key, attempt) {
        entry.fault = Some(rule.label.clone());
        match rule.kind {
            Kind::Truncated | Kind::TruncatedConn => {}
            Kind::Hang(Some(ms)) => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Kind::BadExpires | Kind::Expires0 => answer_fault = Some(rule.kind),
            Kind::EchoAuth => {
                let auth = headers
                    .get("authorization")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                let e = TokenError::InvalidRequest(format!(
                    "Invalid request. Authorization: {auth}; body: {}",
                    String::from_utf8_lossy(&body)
                ));
                entry.status = e.status();
                app.record(entry);
                return json(e.status(), e.body());
            }
            Kind::Flood(limit) => {
                entry.status = 200;
                app.record(entry);
                return respond_flood(limit.unwrap_or(FLOOD_DEFAULT_BYTES));
            }
            kind => {
                match apply_fault(&app, kind, kill.as_ref().map(|k| &k.0), None, &mut entry).await {
                    FaultAction::Answer(r) => return r,
                    FaultAction::Proceed(_) => {}
                }
            }
        }
    }
    let basic = headers.get("authorization").and_then(|v| v.to_str().ok());
    let result = {
        let mut tokens = app.tokens.lock().unwrap();
        if !tokens.check_client(
            basic,
            form.get("client_id").map(String::as_str),
            form.get("client_secret").map(String::as_str),
        ) {
            Err(TokenError::InvalidClient)
        } else {
            match form.get("grant_type").map(String::as_str) {
                Some("refresh_token") if rt.is_empty() => Err(TokenError::InvalidRequest(
                    "refresh_token is required".into(),
                )),
                Some("refresh_token") => {
                    tokens.refresh_rotating(&rt, answer_fault == Some(Kind::BadExpires))
                }
                None => Err(TokenError::InvalidRequest("grant_type is required".into())),
                Some(_) => Err(TokenError::UnsupportedGrantType),
            }
        }
    };
    let (status, body) = match result {
        Ok(issued) => {
            app.count_stat(|s| s.token_refreshes += 1);
            let body = match answer_fault {
                Some(Kind::BadExpires) => issued
                    .body_with_expires_in(&crate::util::json_str(&issued.expires_in.to_string())),
                Some(Kind::Expires0) => issued.body_with_expires_in("0"),
                _ => issued.body(),
            };
            (200, body)
        }
        Err(e) => {
            app.count_stat(|s| match e {
                TokenError::InvalidClient => s.invalid_client += 1,
                TokenError::InvalidGrant(_) => s.invalid_grant += 1,
                _ => {}
            });
            (e.status(), e.body())
        }
    };
    entry.status = status;
    app.record(entry);
    json(status, body)
}

/// `GET /.well-known/openid-configuration`: Intuit's discovery document, pointing at us.
pub async fn discovery(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| app.cfg.listen.to_string());
    let base = format!("http://{host}");
    let body = serde_json::json!({
        "issuer": format!("{base}/op/v1"),
        "authorization_endpoint": format!("{base}/connect/oauth2"),
        "token_endpoint": format!("{base}/oauth2/v1/tokens/bearer"),
        "userinfo_endpoint": format!("{base}/v1/openid_connect/userinfo"),
        "revocation_endpoint": format!("{base}/v2/oauth2/tokens/revoke"),
        "jwks_uri": format!("{base}/op/v1/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    });
    app.record(LogEntry {
        seq: app.next_seq(),
        method: "GET".into(),
        endpoint: "discovery",
        realm: None,
        query: None,
        start_position: None,
        max_results: None,
        status: 200,
        fault: None,
        attempt: 1,
        at_us: crate::util::now_us(),
    });
    json(200, body.to_string())
}

/// `POST /v2/oauth2/tokens/revoke`: accepted and ignored.
pub async fn revoke() -> Response {
    json(200, String::new())
}
