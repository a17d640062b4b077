//! The QBO Accounting API HTTP client: one request per call, classified into a [`Page`], a count
//! or a [`QboError`]. Retry loops, token refresh and cancel checks belong to the caller.
//!
//! - One `reqwest::Client` (rustls), connect and request timeouts, redirects disabled (a
//!   configurable base URL must not become an open door elsewhere, and the OAuth exchange must not
//!   follow redirects either: the same client serves [`crate::oauth::refresh`]).
//! - `Authorization: Bearer ...` is marked sensitive; the token never appears in any error text
//!   (it is also redacted from echoed bodies, and token-like words in Intuit's fault details are
//!   masked).
//! - Bodies are read fully, in chunks, up to `max_response_bytes` (the buffer's capacity too),
//!   and the records parsed from a body may hold as much again at most
//!   ([`crate::budget::MemoryBudget::response_cap`] sets it from `qbo.max_buffer_mb`).
//! - Record JSON is kept byte-exact with `serde_json::value::RawValue`: nothing goes through
//!   `Value`/`f64`, so `"Amount":12.30` stays `12.30`.
//! - Cancel safety: the returned futures own nothing but the in-flight request; dropping one (e.g.
//!   the losing branch of `tokio::select!` against the cancel check) aborts the request and
//!   leaves no state behind.
//!
//! Tests use `wiremock` (dev-dependency): a maintained async HTTP mock server that runs on
//! 127.0.0.1, lets each test script exact responses (status, headers, body, delays) and asserts
//! on the requests received (path, query parameters, headers, form bodies), which is what these
//! classification tests need; it speaks plain HTTP so no TLS setup is involved.

use std::time::{Duration, SystemTime};

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{mask_upstream, quote_bytes, truncate_chars, QboError, Secrets};
use crate::fault::{is_throttle, parse_fault_masked, FaultInfo};
use crate::pager::RawRecord;
use crate::query::MAX_PAGE;
use crate::retry::parse_retry_after;

/// Intuit's documented limit of requests per minute per realm.
pub const DEFAULT_MAX_REQUESTS_PER_MINUTE: u32 = 500;
/// Intuit's documented limit of requests per second per realm and app.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u32 = 10;
/// Intuit's documented limit of concurrent requests per realm.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10;

/// Settings of the HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, and reading the full body).
    pub request_timeout: Duration,
    /// Largest response body accepted, in bytes, and largest its parsed records may hold
    /// (default: [`crate::budget::MemoryBudget::response_cap`] of the default settings).
    pub max_response_bytes: usize,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Convert each record to jsonb's binary format as the page is parsed (on the network
    /// thread; see [`crate::jsonb::encode`]). Only for a UTF-8 database: the bytes are UTF-8.
    pub jsonb_payloads: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            max_response_bytes: crate::budget::MemoryBudget::default().response_cap(),
            user_agent: concat!("pg_qbo/", env!("CARGO_PKG_VERSION")).to_string(),
            jsonb_payloads: false,
        }
    }
}

/// One page of a `SELECT *` query.
#[derive(Debug)]
pub struct Page {
    /// The records of `QueryResponse.<Entity>` (an absent key is an empty page).
    pub entity_records: Vec<RawRecord>,
    /// `QueryResponse.totalCount`, when present.
    pub total_count: Option<u64>,
    /// `QueryResponse.startPosition`, when present.
    pub start_position: Option<u64>,
    /// `QueryResponse.maxResults` (rows on this page), when present.
    pub max_results: Option<u64>,
    /// Intuit's transaction id.
    pub intuit_tid: Option<String>,
    /// Size of the response body in bytes.
    pub body_bytes: usize,
    /// The answer's `time` (QuickBooks' clock when it answered), when present as an ISO-8601
    /// timestamp (the lowercase fault variant's epoch milliseconds are not a page's).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

/// The QBO API client (cheap to clone: the connection pool is shared).
#[derive(Debug, Clone)]
pub struct QboClient {
    http: reqwest::Client,
    max_response_bytes: usize,
    jsonb_payloads: bool,
}

/// Builds the one `reqwest::Client` used for the API and the token endpoint: rustls, timeouts,
/// no redirects, no proxy from the environment.
pub fn build_http_client(cfg: &HttpConfig) -> Result<reqwest::Client, QboError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(cfg.user_agent.clone())
        .build()
        .map_err(|e| {
            QboError::InvalidParameter(format!(
                "cannot build the HTTP client: {}",
                QboError::from_reqwest(e)
            ))
        })
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
/// `{base}/v3/company/{realm}/{rest}`, once the realm id and the base URL are checked.
fn company_url(base_url: &str, realm: &str, rest: &str) -> Result<String, QboError> {
    if realm.is_empty() || !realm.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(QboError::InvalidParameter(format!(
            "realm id {:?} is not valid: letters and digits only",
            truncate_chars(realm, 40)
        )));
    }
    let base = base_url.trim_end_matches('/');
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(QboError::InvalidParameter(format!(
            "API base URL {:?} must start with https:// (or http:// for a local emulator)",
            truncate_chars(base, 100)
        )));
    }
    Ok(format!("{base}/v3/company/{realm}/{rest}"))
}

pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| truncate_chars(s.trim(), 100))
        .filter(|s| !s.is_empty())
}

/// The `intuit_tid` header (also spelled `Intuit-Tid`).
pub fn intuit_tid(h: &HeaderMap) -> Option<String> {
    header_str(h, "intuit_tid").or_else(|| header_str(h, "intuit-tid"))
}

/// A response read completely and not yet looked at: what [`QboClient::read_body`] hands over, for
/// [`QboClient::interpret`] to classify and parse (the network thread frees the request's slot in
/// between, see [`crate::net`]).
#[derive(Debug)]
pub struct RawResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "QueryResponse", borrow, default)]
    query_response: Option<&'a RawValue>,
    #[serde(rename = "Fault", alias = "fault", borrow, default)]
    fault: Option<&'a RawValue>,
    #[serde(rename = "time", borrow, default)]
    time: Option<&'a RawValue>,
}

impl QboClient {
    /// Builds the client (see [`build_http_client`]).
    pub fn new(cfg: HttpConfig) -> Result<Self, QboError> {
        if cfg.max_response_bytes == 0 {
            return Err(QboError::InvalidParameter(
                "max_response_bytes must be at least 1".into(),
            ));
        }
        Ok(QboClient {
            http: build_http_client(&cfg)?,
            max_response_bytes: cfg.max_response_bytes,
            jsonb_payloads: cfg.jsonb_payloads,
        })
    }

    /// The underlying `reqwest::Client`, to share with [`crate::oauth::refresh`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Runs one `SELECT *` query (one attempt, no retry) and returns its page.
    ///
    /// Classification: 2xx with a `QueryResponse` → `Ok`; 2xx with a Fault or unusable JSON →
    /// [`QboError::BadResponse`]; 401 → [`QboError::Unauthorized`]; 429 or a throttle fault
    /// (also on 403) → [`QboError::Throttled`]; 500/502/503/504 → [`QboError::Transient`];
    /// timeouts and connection errors → [`QboError::Network`]; any other status →
    /// [`QboError::Http`].
    pub async fn query(
        &self,
        base_url: &str,
        realm: &str,
        minor_version: u32,
        access_token: &str,
        query: &str,
    ) -> Result<Page, QboError> {
        let pending = self
            .send(base_url, realm, minor_version, access_token, query)
            .await?;
        let resp = self.read_body(pending).await?;
        self.interpret(resp, access_token, query)
    }

    /// The last step of [`QboClient::query`]: classifies a response [`QboClient::read_body`] read
    /// for `query`, sent with `access_token` (masked in every error), and parses its page. CPU
    /// only.
    pub fn interpret(
        &self,
        resp: RawResponse,
        access_token: &str,
        query: &str,
    ) -> Result<Page, QboError> {
        let tid = intuit_tid(&resp.headers);
        classify_status(&resp, access_token, tid.as_deref())?;
        parse_page(
            &resp.body,
            tid,
            access_token,
            self.jsonb_payloads,
            queried_entity(query),
            self.max_response_bytes,
        )
    }

    /// Runs one `SELECT count(*)` query and returns `totalCount` (absent → 0).
    pub async fn count(
        &self,
        base_url: &str,
        realm: &str,
        minor_version: u32,
        access_token: &str,
        query: &str,
    ) -> Result<u64, QboError> {
        let page = self
            .query(base_url, realm, minor_version, access_token, query)
            .await?;
        Ok(page.total_count.unwrap_or(0))
    }

    /// Sends the query and waits for the response's status and headers (a body announced
    /// larger than the cap is refused here); [`QboClient::read_body`] reads the rest.
    pub async fn send(
        &self,
        base_url: &str,
        realm: &str,
        minor_version: u32,
        access_token: &str,
        query: &str,
    ) -> Result<Pending, QboError> {
        let url = company_url(
            base_url,
            realm,
            &format!(
                "query?query={}&minorversion={minor_version}",
                encode_component(query)
            ),
        )?;
        self.send_get(url, access_token).await
    }

    /// Sends a Change Data Capture call ([`crate::cdc`]) and waits for its status and headers, as
    /// [`QboClient::send`] does for a query; [`QboClient::read_body`] reads the rest and
    /// [`QboClient::interpret_cdc`] parses it.
    pub async fn send_cdc(
        &self,
        base_url: &str,
        realm: &str,
        minor_version: u32,
        access_token: &str,
        call: &crate::cdc::CdcCall,
    ) -> Result<Pending, QboError> {
        let url = company_url(base_url, realm, &call.path_and_query(minor_version))?;
        self.send_get(url, access_token).await
    }

    /// Classifies a Change Data Capture response read for `call` and parses it (CPU only).
    pub fn interpret_cdc(
        &self,
        resp: RawResponse,
        access_token: &str,
        call: &crate::cdc::CdcCall,
    ) -> Result<crate::cdc::CdcAnswer, QboError> {
        let tid = intuit_tid(&resp.headers);
        classify_status(&resp, access_token, tid.as_deref())?;
        crate::cdc::parse_answer(
            &resp.body,
            tid,
            access_token,
            self.jsonb_payloads,
            call,
            self.max_response_bytes,
        )
    }

    /// One Change Data Capture call (one attempt, no retry), classified as [`QboClient::query`]
    /// classifies a query.
    pub async fn cdc(
        &self,
        base_url: &str,
        realm: &str,
        minor_version: u32,
        access_token: &str,
        call: &crate::cdc::CdcCall,
    ) -> Result<crate::cdc::CdcAnswer, QboError> {
        let pending = self
            .send_cdc(base_url, realm, minor_version, access_token, call)
            .await?;
        let resp = self.read_body(pending).await?;
        self.interpret_cdc(resp, access_token, call)
    }

    async fn send_get(&self, url: String, access_token: &str) -> Result<Pending, QboError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {access_token}")).map_err(|_| {
            QboError::InvalidParameter(
                "the access token contains characters not allowed in an HTTP header".into(),
            )
        })?;
        auth.set_sensitive(true);
        let resp = self
            .http
            .get(url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(QboError::from_reqwest)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let announced = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let pending = Pending {
            resp,
            status,
            headers,
            announced,
        };
        if announced.is_some_and(|len| len > self.max_response_bytes as u64) {
            return Err(pending.too_large(self.max_response_bytes));
        }
        Ok(pending)
    }

    /// Reads the body of a response [`QboClient::send`] got, within the cap.
    pub async fn read_body(&self, pending: Pending) -> Result<RawResponse, QboError> {
        let limit = self.max_response_bytes;
        let Pending {
            mut resp,
            status,
            headers,
            announced,
        } = pending;
        let too_large = || QboError::ResponseTooLarge {
            limit,
            parsed: false,
            intuit_tid: intuit_tid(&headers),
        };
        // an announced length is reserved at once (it is within the cap)
        let mut body: Vec<u8> = Vec::with_capacity(announced.unwrap_or(0) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(QboError::from_reqwest)? {
            if !append_within(&mut body, &chunk, limit) {
                return Err(too_large());
            }
        }
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

/// A response whose status and headers have arrived, its body not read yet (see
/// [`QboClient::send`]).
#[derive(Debug)]
pub struct Pending {
    resp: reqwest::Response,
    status: u16,
    headers: HeaderMap,
    announced: Option<u64>,
}

impl Pending {
    fn too_large(&self, limit: usize) -> QboError {
        QboError::ResponseTooLarge {
            limit,
            parsed: false,
            intuit_tid: intuit_tid(&self.headers),
        }
    }
}

/// Appends `chunk` to `body` unless the body would grow past `limit` bytes (then `false`). The
/// buffer's capacity, not only its length, stays within `limit`: it grows by doubling, but never
/// past the limit (a doubling `Vec` would otherwise hold up to twice what it was sent).
fn append_within(body: &mut Vec<u8>, chunk: &[u8], limit: usize) -> bool {
    let need = body.len() + chunk.len();
    if need > limit {
        return false;
    }
    if need > body.capacity() {
        let grown = (body.capacity() * 2).clamp(need, limit);
        body.reserve_exact(grown - body.len());
    }
    body.extend_from_slice(chunk);
    true
}

/// The fault of an error body, every text masked ([`mask_upstream`]: the access token in any
/// encoding, credentials, token-like words) before it is cut.
fn scrub_fault(ct: Option<&str>, body: &[u8], secret: &str) -> Option<Box<FaultInfo>> {
    parse_fault_masked(ct, body, &Secrets::new().with(secret)).map(Box::new)
}

fn snippet(body: &[u8], secret: &str) -> String {
    quote_bytes(body, &Secrets::new().with(secret))
}

/// Maps a non-2xx answer to its error; `Ok(())` for 2xx.
fn classify_status(resp: &RawResponse, secret: &str, tid: Option<&str>) -> Result<(), QboError> {
    let status = resp.status;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let ct = resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let fault = scrub_fault(ct, &resp.body, secret);
    let intuit_tid = tid.map(str::to_string);
    let retry_after = resp
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let err = if status == 401 {
        QboError::Unauthorized { fault, intuit_tid }
    } else if is_throttle(status, fault.as_deref(), &resp.body) {
        QboError::Throttled {
            status,
            retry_after,
            fault,
            intuit_tid,
        }
    } else if matches!(status, 500 | 502 | 503 | 504) {
        QboError::Transient {
            status,
            retry_after,
            fault,
            intuit_tid,
            body_snippet: snippet(&resp.body, secret),
        }
    } else {
        QboError::Http {
            status,
            fault,
            intuit_tid,
            body_snippet: snippet(&resp.body, secret),
        }
    };
    Err(err)
}

/// The error of a 2xx answer that cannot be used: `what` (serde texts may quote values of the
/// body) masked like any upstream text, with Intuit's transaction id.
pub(crate) fn unusable(what: &str, secret: &str, tid: &Option<String>) -> QboError {
    QboError::BadResponse(format!(
        "{}{}",
        mask_upstream(what, &Secrets::new().with(secret)),
        tid_text(tid)
    ))
}

/// What a 2xx answer carrying a Fault says, masked.
pub(crate) fn fault_in_ok(body: &[u8], secret: &str) -> String {
    let info = scrub_fault(Some("application/json"), body, secret);
    let text = info.map(|i| i.to_string()).unwrap_or_default();
    format!("HTTP 200 carrying a Fault: {text}")
}

fn tid_text(tid: &Option<String>) -> String {
    match tid {
        Some(t) => format!(" (intuit_tid {t})"),
        None => String::new(),
    }
}

/// The entity a query text asks for: the word after `FROM` (`SELECT * FROM Invoice WHERE ...`).
pub fn queried_entity(query: &str) -> Option<&str> {
    let upper = query.to_ascii_uppercase();
    let at = upper.find(" FROM ")? + " FROM ".len();
    let rest = query[at..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Most members of a `QueryResponse` accepted (QBO sends an entity list, `startPosition`,
/// `maxResults` and `totalCount`): millions of tiny members would take many times their text in
/// memory before anything else could refuse them.
const MAX_MEMBERS: usize = 64;

/// The members of a `QueryResponse`, in the order sent (a repeated key keeps its last value, as
/// a map would), refused beyond [`MAX_MEMBERS`].
pub(crate) struct Members<'a>(pub(crate) Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    let v: &'de RawValue = m.next_value()?;
                    if let Some(e) = out.iter_mut().find(|(key, _)| *key == k) {
                        e.1 = v;
                    } else if out.len() >= MAX_MEMBERS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_MEMBERS} members"
                        )));
                    } else {
                        out.push((k, v));
                    }
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The records of an entity list, refused beyond [`MAX_PAGE`] (QBO never serves more, and each
/// item costs a pointer before any record is read).
pub(crate) struct Records<'a>(pub(crate) Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for Records<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Records<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out: Vec<&'de RawValue> = Vec::new();
                while let Some(v) = s.next_element::<&'de RawValue>()? {
                    if out.len() >= MAX_PAGE as usize {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_PAGE} records"
                        )));
                    }
                    out.push(v);
                }
                Ok(Records(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Parses a 2xx query body into a [`Page`]. Records of another entity than `expected` (the one
/// the query asked for) are refused: they must never land in the queried entity's raw table.
/// The parsed records may hold at most `cap` bytes ([`RawRecord::held_bytes`]), as the body.
fn parse_page(
    body: &[u8],
    tid: Option<String>,
    secret: &str,
    jsonb_payloads: bool,
    expected: Option<&str>,
    cap: usize,
) -> Result<Page, QboError> {
    let bad = |what: String| unusable(&what, secret, &tid);
    let env: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid JSON in a {}-byte query response: {e}",
            body.len()
        ))
    })?;
    if env.fault.is_some() {
        return Err(bad(fault_in_ok(body, secret)));
    }
    let qr = env
        .query_response
        .ok_or_else(|| bad("no QueryResponse in the answer".into()))?;
    let Members(members) = serde_json::from_str(qr.get())
        .map_err(|e| bad(format!("QueryResponse is not an object: {e}")))?;
    let get = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    let num = |key: &str| -> Result<Option<u64>, QboError> {
        match get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_str::<u64>(v.get())
                .map(Some)
                .map_err(|e| bad(format!("QueryResponse.{key} is not a count: {e}"))),
        }
    };
    let total_count = num("totalCount")?;
    let start_position = num("startPosition")?;
    let max_results = num("maxResults")?;
    let mut lists = members
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "totalCount" | "startPosition" | "maxResults"))
        .filter(|(_, v)| v.get().starts_with('['));
    let mut entity_records = Vec::new();
    if let Some((key, list)) = lists.next() {
        if let Some((other, _)) = lists.next() {
            return Err(bad(format!(
                "QueryResponse has two entity lists ({key}, {other})"
            )));
        }
        if let Some(want) = expected.filter(|w| *w != key.as_str()) {
            return Err(bad(format!(
                "QuickBooks answered a query for {want} with a list of {} records (QueryResponse.{0})",
                crate::error::truncate_chars(key, 60)
            )));
        }
        let Records(items) = serde_json::from_str(list.get())
            .map_err(|e| bad(format!("QueryResponse.{key} is not a list of records: {e}")))?;
        entity_records.reserve_exact(items.len());
        // what the parsed records hold, checked as they are made: a page whose body fits may
        // still take more once parsed (jsonb's binary form of a number is larger than its text)
        let mut held = 0usize;
        for item in items {
            let rec = RawRecord::from_page(item, jsonb_payloads).map_err(|e| match e {
                QboError::BadResponse(m) => bad(m),
                other => other,
            })?;
            held += rec.held_bytes();
            if held > cap {
                return Err(QboError::ResponseTooLarge {
                    limit: cap,
                    parsed: true,
                    intuit_tid: tid,
                });
            }
            entity_records.push(rec);
        }
    }
    Ok(Page {
        entity_records,
        total_count,
        start_position,
        max_results,
        intuit_tid: tid,
        body_bytes: body.len(),
        time: env
            .time
            .and_then(|t| serde_json::from_str::<String>(t.get()).ok())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
    })
}

/// Whether a URL carries a user name or password (`https://user:pw@host/`).
pub fn url_has_credentials(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) => !u.username().is_empty() || u.password().is_some(),
        // not a URL the client could use either: look for userinfo by hand
        Err(_) => url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::tests::sample;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const TOKEN: &str = "eyJsecretACCESStoken0123456789abcdefXYZ";

    fn client() -> QboClient {
        QboClient::new(HttpConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(1500),
            max_response_bytes: 1024 * 1024,
            user_agent: "pg_qbo-test".into(),
            jsonb_payloads: false,
        })
        .unwrap()
    }

    async fn serve(status: u16, ct: &str, body: Vec<u8>, extra: &[(&str, &str)]) -> MockServer {
        let server = MockServer::start().await;
        let mut t = ResponseTemplate::new(status)
            .set_body_raw(body, ct)
            .insert_header("intuit_tid", "tid-123");
        for (k, v) in extra {
            t = t.insert_header(*k, *v);
        }
        Mock::given(method("GET"))
            .and(path("/v3/company/4620816365/query"))
            .respond_with(t)
            .mount(&server)
            .await;
        server
    }

    async fn run(server: &MockServer) -> Result<Page, QboError> {
        client()
            .query(
                &server.uri(),
                "4620816365",
                75,
                TOKEN,
                "SELECT * FROM Vendor",
            )
            .await
    }

    fn no_secret(e: &QboError) {
        let s = e.to_string();
        assert!(!s.contains(TOKEN) && !s.contains("secretACCESS"), "{s}");
    }

    #[tokio::test]
    async fn sends_the_right_request_and_parses_a_real_page() {
        let server = MockServer::start().await;
        let q = "SELECT * FROM Vendor WHERE MetaData.LastUpdatedTime >= '2025-01-01T00:00:00+00:00' ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 5";
        Mock::given(method("GET"))
            .and(path("/v3/company/4620816365/query"))
            .and(query_param("query", q))
            .and(query_param("minorversion", "75"))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(header("accept", "application/json"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(
                        sample("qbo_api/vcr/all/vendors_by_5__1.json"),
                        "application/json;charset=utf-8",
                    )
                    .insert_header("Intuit-Tid", "1-5f7330d5-605cad8e1a4a839ca24702eb"),
            )
            .expect(1)
            .mount(&server)
            .await;
        let page = client()
            .query(&format!("{}/", server.uri()), "4620816365", 75, TOKEN, q)
            .await
            .unwrap();
        assert_eq!(page.entity_records.len(), 5);
        assert_eq!(page.start_position, Some(1));
        assert_eq!(page.max_results, Some(5));
        assert_eq!(page.total_count, None);
        assert_eq!(
            page.intuit_tid.as_deref(),
            Some("1-5f7330d5-605cad8e1a4a839ca24702eb")
        );
        assert_eq!(page.entity_records[0].id, "56");
        assert_eq!(page.entity_records[0].sync_token, 0);
        assert_eq!(
            page.entity_records[0].last_updated.to_rfc3339(),
            "2015-10-23T21:28:52+00:00"
        );
        assert_eq!(
            page.body_bytes,
            sample("qbo_api/vcr/all/vendors_by_5__1.json").len()
        );
        // Every record's text is a verbatim slice of the body.
        let body = String::from_utf8(sample("qbo_api/vcr/all/vendors_by_5__1.json")).unwrap();
        for r in &page.entity_records {
            assert!(body.contains(r.text().unwrap()));
        }
        // With jsonb payloads on, the same records arrive as the encoder's bytes of those texts.
        let encoded =
            parse_page(body.as_bytes(), None, TOKEN, true, Some("Vendor"), 1 << 20).unwrap();
        assert_eq!(encoded.entity_records.len(), page.entity_records.len());
        for (e, t) in encoded.entity_records.iter().zip(&page.entity_records) {
            assert_eq!((&e.id, e.sync_token), (&t.id, t.sync_token));
            match &e.payload {
                crate::pager::Payload::Jsonb(b) => assert_eq!(
                    Some(b.to_vec()),
                    crate::jsonb::encode::encode(t.text().unwrap())
                ),
                crate::pager::Payload::Text(_) => panic!("record {} not encoded", e.id),
            }
        }
    }

    #[tokio::test]
    async fn a_cdc_call_sends_its_entities_and_start_and_is_classified_as_a_query() {
        let server = MockServer::start().await;
        let since = chrono::DateTime::parse_from_rfc3339("2020-09-01T00:00:00.700Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let call = crate::cdc::CdcCall::new(&["Estimate", "Customer"], since).unwrap();
        Mock::given(method("GET"))
            .and(path("/v3/company/4620816365/cdc"))
            .and(query_param("entities", "Customer,Estimate"))
            .and(query_param("changedSince", "2020-09-01T00:00:00+00:00"))
            .and(query_param("minorversion", "75"))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                sample("qbo_api/vcr/cdc/basic__0.json"),
                "application/json;charset=utf-8",
            ))
            .expect(1)
            .mount(&server)
            .await;
        let a = client()
            .cdc(&server.uri(), "4620816365", 75, TOKEN, &call)
            .await
            .unwrap();
        let counts: Vec<(&str, usize)> = a
            .changes
            .iter()
            .map(|c| (c.entity.name, c.records.len()))
            .collect();
        assert_eq!(counts[0], ("Customer", 0));
        assert_eq!(counts[1].0, "Estimate");
        assert!(counts[1].1 > 0);
        assert_eq!(a.body_bytes, sample("qbo_api/vcr/cdc/basic__0.json").len());

        // an error answer is the error a query would get (here: refused, not retried)
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v3/company/4620816365/cdc"))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_raw(sample("qbo_api/vcr/error/400__1.json"), "application/json")
                    .insert_header("intuit_tid", "tid-9"),
            )
            .mount(&server)
            .await;
        let e = client()
            .cdc(&server.uri(), "4620816365", 75, TOKEN, &call)
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("QuickBooks API error: HTTP 400: ValidationFault"),
            "{e}"
        );
        no_secret(&e);
    }

    #[tokio::test]
    async fn empty_page_and_count_samples() {
        let s = serve(
            200,
            "application/json",
            sample("qbo_api/vcr/all/alt_select__4.json"),
            &[],
        )
        .await;
        let p = run(&s).await.unwrap();
        assert!(p.entity_records.is_empty());
        assert_eq!((p.start_position, p.max_results), (None, None));
        let s = serve(
            200,
            "application/json",
            sample("qbo_api/vcr/all/vendors_by_5__0.json"),
            &[],
        )
        .await;
        let n = client()
            .count(
                &s.uri(),
                "4620816365",
                75,
                TOKEN,
                "SELECT count(*) FROM Vendor",
            )
            .await
            .unwrap();
        assert_eq!(n, 26);
    }

    #[tokio::test]
    async fn record_text_is_byte_exact() {
        let rec = "{\"Id\":\"9\",\"SyncToken\":\"12\",\"MetaData\":{\"LastUpdatedTime\":\"2025-01-01T00:00:00-07:00\"},\"TotalAmt\":12.30,\"Big\":12345678901234567890.000,\"Note\":\"caf\\u00e9 \u{65e5}\u{672c} \\\"q\\\"\",  \"Line\":[ {\"Amount\": 1e2} ]}";
        let body = format!("{{\"QueryResponse\":{{\"Vendor\":[{rec}],\"startPosition\":1,\"maxResults\":1}},\"time\":\"x\"}}");
        let s = serve(200, "application/json", body.into_bytes(), &[]).await;
        let p = run(&s).await.unwrap();
        assert_eq!(p.entity_records[0].text().unwrap(), rec);
        assert_eq!(p.entity_records[0].sync_token, 12);
    }

    #[tokio::test]
    async fn unauthorized_sample_hides_token() {
        let s = serve(
            401,
            "application/json",
            sample("qbo_api/vcr/error/401__0.json"),
            &[],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        assert!(matches!(e, QboError::Unauthorized { .. }));
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "QuickBooks API rejected the access token (HTTP 401): AUTHENTICATION code 3200: message=AuthenticationFailed; errorCode=003200; statusCode=401 (Token expired: [redacted]) (intuit_tid tid-123)"
        );
    }

    #[tokio::test]
    async fn throttles_xml_429_and_legacy_403() {
        let s = serve(
            429,
            "application/xml",
            sample("quickbooks-ruby/too_many_requests_error.xml"),
            &[("Retry-After", "7")],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        match &e {
            QboError::Throttled {
                status: 429,
                retry_after,
                fault: Some(f),
                intuit_tid: Some(t),
            } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(7)));
                assert_eq!(f.code.as_deref(), Some("3001"));
                assert_eq!(t, "tid-123");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let s = serve(
            403,
            "application/json",
            sample("quickbooks-ruby/throttle_exceeded_error.xml"),
            &[],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        assert!(
            matches!(
                e,
                QboError::Throttled {
                    status: 403,
                    retry_after: None,
                    ..
                }
            ),
            "{e:?}"
        );
        // JSON 429 with an HTTP-date far in the past.
        let s = serve(
            429,
            "application/json",
            br#"{"Fault":{"Error":[{"Message":"x","code":"3001"}],"type":"SERVICE"}}"#.to_vec(),
            &[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")],
        )
        .await;
        assert_eq!(
            run(&s).await.unwrap_err().retry_after(),
            Some(Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn forbidden_not_throttle_is_final() {
        let body = br#"{"Fault":{"Error":[{"Message":"message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403","Detail":"","code":"3100"}],"type":"SERVICE"}}"#;
        let s = serve(403, "application/json", body.to_vec(), &[]).await;
        let e = run(&s).await.unwrap_err();
        assert!(matches!(e, QboError::Http { status: 403, .. }));
        assert!(!e.is_retryable());
        assert_eq!(e.sqlstate(), "28000");
    }

    #[tokio::test]
    async fn server_errors_are_transient() {
        let html = b"<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>";
        for status in [500u16, 502, 503, 504] {
            let s = serve(status, "text/html", html.to_vec(), &[("Retry-After", "3")]).await;
            let e = run(&s).await.unwrap_err();
            assert!(e.is_retryable());
            assert_eq!(
                e.to_string(),
                format!("QuickBooks API transient error: HTTP {status}, Retry-After 3 s: 503 Service Temporarily Unavailable (intuit_tid tid-123)")
            );
        }
        let s = serve(
            500,
            "application/xml",
            sample("quickbooks-ruby/generic_error.xml"),
            &[],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        assert!(e.to_string().contains("SystemFault code 10000"), "{e}");
    }

    #[tokio::test]
    async fn bad_request_is_final_with_fault() {
        let s = serve(
            400,
            "application/json",
            sample("qbo_api/vcr/error/400__1.json"),
            &[],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "QuickBooks API error: HTTP 400: ValidationFault code 4001: Invalid query (QueryValidationError: invalid context declaration: Custmoer) (intuit_tid tid-123)"
        );
        let s = serve(404, "text/plain", b"not here".to_vec(), &[]).await;
        assert_eq!(
            run(&s).await.unwrap_err().to_string(),
            "QuickBooks API error: HTTP 404: not here (intuit_tid tid-123)"
        );
    }

    #[tokio::test]
    async fn ok_status_with_unusable_bodies() {
        let s = serve(
            200,
            "application/json",
            sample("qbo_api/vcr/error/400__1.json"),
            &[],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "unusable response from QuickBooks: HTTP 200 carrying a Fault: ValidationFault code 4001: Invalid query (QueryValidationError: invalid context declaration: Custmoer) (intuit_tid tid-123)"
        );
        let s = serve(
            200,
            "application/json",
            br#"{"QueryResponse":{"Vendor":[{"Id":"1","#.to_vec(),
            &[],
        )
        .await;
        let e = run(&s).await.unwrap_err();
        assert!(matches!(e, QboError::BadResponse(_)) && e.is_retryable());
        assert!(e.to_string().starts_with("unusable response from QuickBooks: invalid JSON in a 38-byte query response: EOF while parsing"), "{e}");
        let s = serve(200, "text/html", b"<html>maintenance</html>".to_vec(), &[]).await;
        assert!(matches!(
            run(&s).await.unwrap_err(),
            QboError::BadResponse(_)
        ));
        let s = serve(200, "application/json", br#"{"time":"x"}"#.to_vec(), &[]).await;
        assert_eq!(run(&s).await.unwrap_err().to_string(), "unusable response from QuickBooks: no QueryResponse in the answer (intuit_tid tid-123)");
        let s = serve(200, "application/json", br#"{"QueryResponse":{"Vendor":[{"Id":"1","SyncToken":"a","MetaData":{"LastUpdatedTime":"2020-09-29T06:04:21-07:00"}}]}}"#.to_vec(), &[]).await;
        assert_eq!(
            run(&s).await.unwrap_err().to_string(),
            "unusable response from QuickBooks: record Id 1 has a non-numeric SyncToken \"a\" (intuit_tid tid-123)"
        );
    }

    #[tokio::test]
    async fn response_size_cap() {
        let big = format!(
            "{{\"QueryResponse\":{{}},\"pad\":\"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        );
        let s = serve(200, "application/json", big.into_bytes(), &[]).await;
        let e = run(&s).await.unwrap_err();
        // the knobs it names exist
        assert_eq!(
            e.to_string(),
            "QuickBooks response larger than the 1048576-byte cap of one response (intuit_tid tid-123): lower page_size, or raise qbo.max_buffer_mb (one response may take three quarters of it over 2 x qbo.max_in_flight + 1), in a new run: a resume keeps the run's page_size and settings"
        );
        assert!(!e.is_retryable());
        assert_eq!(e.sqlstate(), "54000");
    }

    #[test]
    fn a_body_buffer_never_grows_past_its_cap() {
        let limit = 1_000_000;
        for chunk_len in [1usize, 8192, 16_384, 99_999, 250_000] {
            let mut body = Vec::new();
            let chunk = vec![b'x'; chunk_len];
            while append_within(&mut body, &chunk, limit) {
                assert!(body.capacity() <= limit, "{} > {limit}", body.capacity());
                if chunk_len == 1 && body.len() > 70_000 {
                    break;
                }
            }
            assert!(body.len() <= limit && body.capacity() <= limit);
            if chunk_len > 1 {
                // refused only when the next chunk would not fit
                assert!(body.len() + chunk_len > limit);
            }
        }
    }

    /// A page of `n` records, each with `extra` inside it, and the whole body.
    fn page_of(n: usize, extra: &str) -> String {
        let recs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"Id":"{i}","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2025-01-01T00:00:00Z"}}{extra}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"QueryResponse":{{"Vendor":[{}],"startPosition":1,"maxResults":{n}}},"time":"x"}}"#,
            recs.join(",")
        )
    }

    #[test]
    fn parsed_records_count_against_the_cap_too() {
        // a thousand small records: the body fits, the records once parsed hold more (each
        // record's own size, its Id and its text)
        let body = page_of(1000, "");
        let parse = |cap: usize, jsonb: bool| {
            parse_page(
                body.as_bytes(),
                Some("t".into()),
                TOKEN,
                jsonb,
                Some("Vendor"),
                cap,
            )
        };
        let cap = body.len() + 1;
        let e = parse(cap, false).unwrap_err();
        assert!(
            matches!(e, QboError::ResponseTooLarge { limit, parsed: true, .. } if limit == cap),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("QuickBooks response larger than the {cap}-byte cap of one response once its records are parsed (intuit_tid t): lower page_size, or raise qbo.max_buffer_mb (one response may take three quarters of it over 2 x qbo.max_in_flight + 1), in a new run: a resume keeps the run's page_size and settings")
        );
        let p = parse(4 * body.len(), false).unwrap();
        let held: usize = p.entity_records.iter().map(RawRecord::held_bytes).sum();
        assert!(held > body.len() && held <= 4 * body.len(), "{held}");
        // jsonb's binary numbers are larger than their text: a body of zeros grows when parsed
        let zeros = format!(r#","N":[{}]"#, vec!["0"; 2000].join(","));
        let body = page_of(10, &zeros);
        let cap = body.len() * 2;
        assert!(parse_page(body.as_bytes(), None, TOKEN, false, Some("Vendor"), cap).is_ok());
        let e = parse_page(body.as_bytes(), None, TOKEN, true, Some("Vendor"), cap).unwrap_err();
        assert!(
            matches!(e, QboError::ResponseTooLarge { parsed: true, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_page_holds_at_most_a_thousand_records_and_a_few_members() {
        let ok = page_of(1000, "");
        assert_eq!(
            parse_page(ok.as_bytes(), None, TOKEN, false, Some("Vendor"), 1 << 24)
                .unwrap()
                .entity_records
                .len(),
            1000
        );
        // more records than QBO ever serves are refused before any is parsed
        let e = parse_page(
            page_of(1001, "").as_bytes(),
            None,
            TOKEN,
            false,
            Some("Vendor"),
            1 << 24,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("unusable response from QuickBooks: QueryResponse.Vendor is not a list of records: more than 1000 records"),
            "{e}"
        );
        // so are more members than a QueryResponse has
        let members: Vec<String> = (0..65).map(|i| format!(r#""k{i}":1"#)).collect();
        let body = format!(r#"{{"QueryResponse":{{{}}}}}"#, members.join(","));
        let e =
            parse_page(body.as_bytes(), None, TOKEN, false, Some("Vendor"), 1 << 24).unwrap_err();
        assert!(
            e.to_string().starts_with("unusable response from QuickBooks: QueryResponse is not an object: more than 64 members"),
            "{e}"
        );
        // a repeated member keeps its last value, as the map did
        let body = r#"{"QueryResponse":{"totalCount":1,"totalCount":7}}"#;
        let p = parse_page(body.as_bytes(), None, TOKEN, false, Some("Vendor"), 1 << 24).unwrap();
        assert_eq!(p.total_count, Some(7));
    }

    #[test]
    fn a_pages_time_is_quickbooks_clock_in_utc_when_it_is_a_timestamp() {
        let body = r#"{"QueryResponse":{},"time":"2025-09-11T08:15:02.181-07:00"}"#;
        let p = parse_page(body.as_bytes(), None, TOKEN, false, Some("Vendor"), 1 << 24).unwrap();
        assert_eq!(
            p.time.map(|t| t.to_rfc3339()),
            Some("2025-09-11T15:15:02.181+00:00".to_owned())
        );
        for body in [
            r#"{"QueryResponse":{}}"#,
            r#"{"QueryResponse":{},"time":1757603702181}"#,
            r#"{"QueryResponse":{},"time":"yesterday"}"#,
        ] {
            let p =
                parse_page(body.as_bytes(), None, TOKEN, false, Some("Vendor"), 1 << 24).unwrap();
            assert_eq!(p.time, None, "{body}");
        }
    }

    #[tokio::test]
    async fn timeout_is_network_and_retryable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let e = run(&server).await.unwrap_err();
        assert!(matches!(e, QboError::Network(_)), "{e:?}");
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("network error talking to QuickBooks: timed out"),
            "{e}"
        );
        assert!(!e.to_string().contains("127.0.0.1"), "{e}");
        no_secret(&e);
    }

    #[tokio::test]
    async fn connection_refused_is_network() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = client()
            .query(
                &format!("http://127.0.0.1:{port}"),
                "1",
                75,
                TOKEN,
                "SELECT * FROM Item",
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("network error talking to QuickBooks: could not connect"),
            "{e}"
        );
        assert_eq!(e.sqlstate(), "08006");
        no_secret(&e);
    }

    #[tokio::test]
    async fn token_echoed_in_a_body_is_redacted() {
        let body = format!("<html><title>bad token {TOKEN}</title></html>");
        let s = serve(400, "text/html", body.into_bytes(), &[]).await;
        let e = run(&s).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "QuickBooks API error: HTTP 400: bad token [redacted] (intuit_tid tid-123)"
        );
    }

    #[tokio::test]
    async fn echoed_credentials_are_masked_in_every_quoted_text() {
        // An access token of Intuit's shape, echoed raw, URL-encoded, after `Bearer`, cut short,
        // in a fault detail, a body snippet and a 2xx fault, wherever the cut falls.
        const AT: &str = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..Tm9wZUxvbmdJdlN0cmluZzEy.q1W2e3R4t5Y6u7I8o9P0aSdFgHjKlZxCvBnMqWeRtYuIoPaSdFgHjKlZx.Zm9vYmFyYmF6cXV4MTIzNDU2";
        let encoded = AT.replace('.', "%2E");
        let echoes = [
            format!("Authorization: Bearer {AT}"),
            format!("access_token={encoded}"),
            format!("bad token {}", &AT[..40]),
            format!("{}{AT}", "pad ".repeat(70)),
        ];
        for echo in echoes {
            let xml = format!(
                "<IntuitResponse><Fault type=\"AUTHENTICATION\"><Error code=\"3200\"><Message>m</Message><Detail>{echo}</Detail></Error></Fault></IntuitResponse>"
            );
            let json200 =
                serde_json::json!({"Fault": {"Error": [{"Message": echo, "code": "10000"}]}})
                    .to_string();
            for (status, ct, body) in [
                (
                    400,
                    "text/html",
                    format!("<html><title>{echo}</title></html>"),
                ),
                (503, "text/plain", echo.clone()),
                (401, "application/xml", xml),
                (200, "application/json", json200),
            ] {
                let server = serve(status, ct, body.into_bytes(), &[]).await;
                let e = client()
                    .query(&server.uri(), "4620816365", 75, AT, "SELECT * FROM Vendor")
                    .await
                    .unwrap_err();
                let text = format!("{e} {e:?}");
                for w in AT
                    .as_bytes()
                    .windows(16)
                    .chain(encoded.as_bytes().windows(16))
                {
                    let w = std::str::from_utf8(w).unwrap();
                    assert!(!text.contains(w), "{w} leaked: {text}");
                }
            }
        }
    }

    #[tokio::test]
    async fn rejects_bad_inputs_before_sending() {
        let c = client();
        let e = c
            .query("http://127.0.0.1:9", "12/../x", 75, TOKEN, "q")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "realm id \"12/../x\" is not valid: letters and digits only"
        );
        let e = c.query("ftp://x", "1", 75, TOKEN, "q").await.unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        let e = c
            .query("http://127.0.0.1:9", "1", 75, "bad\ntoken", "q")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the access token contains characters not allowed in an HTTP header"
        );
    }

    #[test]
    fn encodes_query_like_the_real_clients() {
        assert_eq!(
            encode_component("SELECT * FROM Customer WHERE Id IN ('5')"),
            "SELECT%20%2A%20FROM%20Customer%20WHERE%20Id%20IN%20%28%275%27%29"
        );
        assert_eq!(encode_component("a>=b+c"), "a%3E%3Db%2Bc");
    }

    #[test]
    fn queried_entity_is_the_word_after_from() {
        assert_eq!(
            queried_entity("SELECT * FROM Invoice WHERE x = 1"),
            Some("Invoice")
        );
        assert_eq!(
            queried_entity("select count(*) from Customer"),
            Some("Customer")
        );
        assert_eq!(queried_entity("SELECT *"), None);
    }

    #[test]
    fn records_of_another_entity_are_refused() {
        // a Customer list answering an Invoice query once landed in raw.qb_invoices
        let rec =
            r#"{"Id":"1","SyncToken":"0","MetaData":{"LastUpdatedTime":"2025-01-01T00:00:00Z"}}"#;
        let body = format!(
            r#"{{"QueryResponse":{{"Customer":[{rec}],"startPosition":1,"maxResults":1}},"time":"x"}}"#
        );
        let e = parse_page(
            body.as_bytes(),
            Some("t-1".into()),
            TOKEN,
            false,
            Some("Invoice"),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(e.sqlstate(), "08P01");
        assert_eq!(
            e.to_string(),
            "unusable response from QuickBooks: QuickBooks answered a query for Invoice with a list of Customer records (QueryResponse.Customer) (intuit_tid t-1)"
        );
        let ok = parse_page(
            body.as_bytes(),
            None,
            TOKEN,
            false,
            Some("Customer"),
            1 << 20,
        )
        .unwrap();
        assert_eq!(ok.entity_records.len(), 1);
    }
}
