//! HTTP plumbing: the accept loop (one hyper HTTP/1.1 connection task per socket, with a kill
//! switch so a handler can reset its connection), the router, the `intuit_tid` layer, and a
//! response body that holds the throttle slot until it has been fully written.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::faults::ErrorAnswer;
use crate::state::App;
use crate::throttle::Slot;
use crate::{api, control, oauth_http};

/// Lets a handler close its own connection at once (fault `reset`).
#[derive(Clone, Debug)]
pub struct ConnKill(pub Arc<Notify>);

/// A running emulator.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server stops (it does not, unless aborted).
    pub async fn wait(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        self.app.stop_mutator();
    }
}

/// Builds the router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/oauth2/v1/tokens/bearer", post(oauth_http::token))
        .route(
            "/.well-known/openid-configuration",
            get(oauth_http::discovery),
        )
        .route(
            "/.well-known/openid_sandbox_configuration",
            get(oauth_http::discovery),
        )
        .route(
            "/.well-known/openid_sandbox_configuration/",
            get(oauth_http::discovery),
        )
        .route(
            "/.well-known/openid_configuration",
            get(oauth_http::discovery),
        )
        .route(
            "/.well-known/openid_configuration/",
            get(oauth_http::discovery),
        )
        .route("/v2/oauth2/tokens/revoke", post(oauth_http::revoke))
        .route(
            "/v3/company/{realm}/query",
            get(api::query_get).post(api::query_post),
        )
        .route("/v3/company/{realm}/cdc", get(api::cdc))
        .route("/v3/company/{realm}/batch", post(api::batch))
        .route(
            "/v3/company/{realm}/companyinfo/{id}",
            get(api::company_info),
        )
        .merge(control::routes())
        .fallback(api::not_found)
        .layer(axum::middleware::map_response(add_tid))
        .with_state(app)
}

static TID: AtomicU64 = AtomicU64::new(0);

async fn add_tid(mut res: Response) -> Response {
    let n = TID.fetch_add(1, Ordering::Relaxed);
    let tid = crate::util::intuit_tid(n, 0x7717);
    if let Ok(v) = HeaderValue::from_str(&tid) {
        let h = res.headers_mut();
        if !h.contains_key("intuit_tid") {
            h.insert("intuit_tid", v.clone());
        }
        h.insert("intuit-tid", v);
    }
    res
}

/// Starts the emulator on `app.cfg.listen`; returns once it accepts connections.
pub async fn start(app: Arc<App>) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(app.cfg.listen).await?;
    let addr = listener.local_addr()?;
    let router = router(Arc::clone(&app));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            tokio::spawn(serve_conn(stream, router));
        }
    });
    Ok(Server {
        addr,
        app,
        task: Some(task),
    })
}

async fn serve_conn(stream: tokio::net::TcpStream, router: Router) {
    let kill = Arc::new(Notify::new());
    let std = match stream.into_std() {
        Ok(s) => s,
        Err(_) => return,
    };
    let dup = std.try_clone().ok();
    let Ok(stream) = tokio::net::TcpStream::from_std(std) else {
        return;
    };
    let k = ConnKill(Arc::clone(&kill));
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(k.clone());
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {
            // Abortive close: RST instead of FIN, like a dropped upstream connection.
            if let Some(d) = &dup {
                let _ = socket2::SockRef::from(d).set_linger(Some(std::time::Duration::ZERO));
            }
        }
    }
}

/// A response body that keeps the throttle slot until the last byte has been handed to hyper,
/// and can fail half way (fault `truncated-conn`) so the connection is cut.
pub struct SlotBody {
    data: Option<Bytes>,
    fail_after: bool,
    failed: bool,
    len: u64,
    slot: Option<Slot>,
    /// Pause between the half body and the cut, so the half is flushed to the client first.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SlotBody {
    pub fn new(data: Bytes, slot: Option<Slot>) -> Self {
        SlotBody {
            len: data.len() as u64,
            data: Some(data),
            fail_after: false,
            failed: false,
            slot,
            pause: None,
        }
    }

    /// Announces the full length, sends the first half, then errors (cutting the connection).
    pub fn cut(data: Bytes, slot: Option<Slot>) -> Self {
        let len = data.len() as u64;
        let half = data.slice(..data.len() / 2);
        SlotBody {
            len,
            data: Some(half),
            fail_after: true,
            failed: false,
            slot,
            pause: None,
        }
    }
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        self.slot = None;
        if self.fail_after && !self.failed {
            let pause = self.pause.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep(std::time::Duration::from_millis(50)))
            });
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.failed = true;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "emulator fault: truncated-conn",
            ))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && (!self.fail_after || self.failed)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// The bytes every `FloodBody` frame is cut from (no allocation per response).
static FLOOD_CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A body that looks endless (fault `token:flood`): a JSON start, then `x` after `x`, without
/// Content-Length (chunked), until `limit` bytes were sent or the client hung up (hyper then
/// drops the body). Memory stays constant whatever the size.
pub struct FloodBody {
    left: u64,
    started: bool,
}

impl FloodBody {
    pub fn new(limit: u64) -> Self {
        FloodBody {
            left: limit,
            started: false,
        }
    }
}

impl http_body::Body for FloodBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let data = if self.started {
            Bytes::from_static(&FLOOD_CHUNK)
        } else {
            self.started = true;
            Bytes::from_static(b"{\"access_token\":\"")
        };
        let n = data
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(data.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Builds a response with a body and content type.
pub fn respond(status: u16, content_type: &str, body: SlotBody) -> Response {
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert("content-type", v);
    }
    r
}

/// Builds the response of an error answer.
pub fn error_response(a: &ErrorAnswer, slot: Option<Slot>) -> Response {
    let mut r = respond(
        a.status,
        a.content_type,
        SlotBody::new(Bytes::from(a.body.clone()), slot),
    );
    for (k, v) in &a.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}
