//! HTTPS listener (rustls, HTTP/1.1 and HTTP/2), health endpoints, request limits and
//! graceful drain. It routes request bodies to a `ReviewHandler` by path and knows nothing
//! of registries or pods.

pub mod listen;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Request, State};
use axum::http::{StatusCode, header};
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
    /// Time allowed for a whole request, body included, and its answer; a stalled body
    /// gets 408. The API server gives up on a webhook after at most 30 s
    /// (`timeoutSeconds`), so nothing useful ever takes longer than that.
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed: after the TLS
    /// handshake with nothing sent, between keep-alive requests, or an idle HTTP/2
    /// connection. Shorter than the 90 s the API server's client keeps idle connections
    /// (Go's `net/http` default `IdleConnTimeout`), which notices the close and redials.
    pub idle_timeout: Duration,
    /// At most this many connections at once. The accept loop waits for a free slot
    /// (back-pressure in the kernel's backlog) instead of accepting and failing.
    pub max_connections: usize,
    /// After shutdown is requested, in-flight reviews get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// The routes of the webhook port.
pub fn router<H: ReviewHandler>(handler: Arc<H>, limits: &Limits) -> Router {
    let timeout = limits.request_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<H>))
        // The path is known per route, so the handler takes the request whole and borrows
        // its headers: no per-request copy of the URI or the header map.
        .route(
            "/mutate",
            post(move |h: State<Arc<H>>, req: Request| review(h, "/mutate", timeout, req)),
        )
        .route(
            "/validate",
            post(move |h: State<Arc<H>>, req: Request| review(h, "/validate", timeout, req)),
        )
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
        .route("/readyz", get(readyz::<H>))
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

/// Reads the body and answers the review, all within `timeout`: a client that stalls
/// mid-body gets 408. The reviews are the only routes that read a body, so the bound
/// lives here rather than in a middleware layer around every route (which cost a boxed
/// future and a service clone per request).
async fn review<H: ReviewHandler>(
    State(h): State<Arc<H>>,
    path: &'static str,
    timeout: Duration,
    req: Request,
) -> Response {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {ct:?} is not supported; send application/json"),
            );
        }
    }
    let answer = async {
        // `Bytes` as an extractor honours `DefaultBodyLimit` (413 beyond it).
        let body = match Bytes::from_request(req, &()).await {
            Ok(b) => b,
            Err(e) => return bad(e.status(), e.body_text()),
        };
        match h.handle(path, &body).await {
            None => bad(StatusCode::NOT_FOUND, "not found"),
            Some(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Some(Err(reason)) => bad(StatusCode::BAD_REQUEST, reason),
        }
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(r) => r,
        Err(_) => bad(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not received and answered within {} s",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish (bounded by `limits.drain_timeout`). Connections are
/// capped at `limits.max_connections` and closed after `limits.idle_timeout` without a
/// request in flight.
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
        .max_concurrent_streams(250)
        // Pings find peers that vanished without a FIN (a node gone, a NAT entry
        // dropped); the idle timeout below handles peers that are there but silent.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: excess clients wait in the listen
        // backlog instead of taking file descriptors the server then cannot use.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
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
        let activity = Arc::new(Activity::default());
        let svc = TowerToHyperService::new(Tracked {
            inner: app.clone(),
            activity: activity.clone(),
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let (handshake_timeout, idle_timeout) = (limits.handshake_timeout, limits.idle_timeout);
        tokio::spawn(async move {
            let _slot = slot;
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
            let served = watcher.watch(conn.into_owned());
            tokio::pin!(served);
            loop {
                tokio::select! {
                    r = &mut served => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with error");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(activity.idle_check(idle_timeout)) => {
                        if activity.idle_for() >= idle_timeout {
                            // Nothing in flight: dropping the connection loses nothing.
                            tracing::debug!(%peer, "closing idle connection");
                            return;
                        }
                    }
                }
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

/// Requests in flight on one connection, and when the connection last finished one (or
/// opened), for the idle timeout.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Activity {
    /// How long the connection has been idle; zero while a request is in flight.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last.lock().expect("not poisoned").elapsed()
    }

    /// How long to sleep before the connection could next have been idle for `limit`.
    fn idle_check(&self, limit: Duration) -> Duration {
        limit
            .saturating_sub(self.idle_for())
            .max(Duration::from_millis(50))
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight; dropping it (answered, or the request abandoned) marks the
/// connection active now.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().expect("not poisoned") = tokio::time::Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The router, counting its requests into the connection's [`Activity`].
#[derive(Clone)]
struct Tracked {
    inner: Router,
    activity: Arc<Activity>,
}

impl<B> tower::Service<axum::http::Request<B>> for Tracked
where
    Router: tower::Service<axum::http::Request<B>>,
    <Router as tower::Service<axum::http::Request<B>>>::Future: Send + 'static,
{
    type Response = <Router as tower::Service<axum::http::Request<B>>>::Response;
    type Error = <Router as tower::Service<axum::http::Request<B>>>::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let guard = self.activity.start();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
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
    listen::bind(listen::ListenAddr::Ip(addr)).await
}

/// File descriptors kept back from the connection cap for everything else the process
/// opens (listeners, the metrics port, the Kubernetes client, watched files, logs).
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard limit (a container's soft limit is often
/// 1,024 while the hard one is far higher), and returns how many connections fit under
/// it: `wanted`, or fewer when the limit leaves less room.
pub fn connection_budget(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return wanted;
        }
    };
    let room = limit.saturating_sub(RESERVED_FDS).max(1);
    let budget = (wanted as u64).min(room) as usize;
    if budget < wanted {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = budget,
            "open-file limit allows fewer connections than --max-connections"
        );
    }
    budget
}
