//! HTTPS listener (rustls, HTTP/1.1 and HTTP/2), health endpoints, request limits and
//! graceful drain. It routes request bodies to a `ReviewHandler` by path and knows nothing
//! of registries or pods.

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cluster::BoxFuture;

/// What the server serves. Implemented by the webhook; tests may implement it too.
pub trait ReviewHandler: Send + Sync + 'static {
    /// `None` when `path` is not a review endpoint (404); `Err` is a bad request (400).
    fn handle<'a>(
        &'a self,
        path: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Option<Result<Vec<u8>, String>>>;
    fn ready(&self) -> bool;
    fn metrics_text(&self) -> String;
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Larger bodies get 413. The API server caps objects at 3 MiB.
    pub max_body_bytes: usize,
    /// Time allowed for the TLS handshake and for request headers to arrive.
    pub handshake_timeout: Duration,
    /// After shutdown is requested, in-flight reviews get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// The routes of the webhook port.
pub fn router<H: ReviewHandler>(handler: Arc<H>, limits: &Limits) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<H>))
        .route("/mutate", post(review::<H>))
        .route("/validate", post(review::<H>))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(handler)
}

/// The routes of the plain-HTTP metrics port.
pub fn metrics_router<H: ReviewHandler>(handler: Arc<H>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Arc<H>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    h.metrics_text(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(handler)
}

async fn readyz<H: ReviewHandler>(State(h): State<Arc<H>>) -> Response {
    if h.ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

fn bad(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

async fn review<H: ReviewHandler>(
    State(h): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return bad(e.status(), e.body_text()),
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {ct:?} is not supported; send application/json"),
            );
        }
    }
    match h.handle(uri.path(), &body).await {
        None => bad(StatusCode::NOT_FOUND, "not found"),
        Some(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Some(Err(reason)) => bad(StatusCode::BAD_REQUEST, reason),
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish (bounded by `limits.drain_timeout`).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    Ok(())
}

/// Plain HTTP for `/metrics`, stopped with the same signal.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Binds, reporting the address in the error (a busy port is the usual first-run problem).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
