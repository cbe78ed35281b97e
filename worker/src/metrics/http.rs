//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (alive),
//! `/readyz` (model loaded, group joined, labels loaded).
//!
//! Served by hyper's HTTP/1.1 server with every input treated as hostile:
//!
//! * at most [`HttpConfig::max_connections`] connections are served at once;
//!   the accept loop takes a connection only when a slot is free, so excess
//!   clients wait in the kernel's backlog instead of being served;
//! * a request head must arrive within [`HttpConfig::header_timeout`] (this
//!   also bounds how long an idle keep-alive connection is kept), and a whole
//!   connection, keep-alive included, lasts at most
//!   [`HttpConfig::connection_timeout`];
//! * request heads are limited to [`MAX_BUF`] bytes (larger ones get 431);
//! * accept errors (descriptor exhaustion, aborted handshakes, ...) back off
//!   exponentially and are logged at WARN at most once per [`WARN_EVERY`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Metrics;

/// The Prometheus text exposition format's content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The largest request head (request line and headers) a connection buffers,
/// in bytes; a larger one is answered with 431 and the connection closed.
pub const MAX_BUF: usize = 16 * 1024;

/// The shortest pause after an accept error; it doubles per consecutive error.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause after an accept error.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one WARN line about accept errors per this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

const TEXT: &str = "text/plain; charset=utf-8";

/// What /healthz and /readyz answer: Ok(text) → 200 with the text (e.g.
/// "ok", "ready", or "ready" with a note); Err(reason) → 503 with the reason.
///
/// Bodies end with a newline (added when the text has none). Both methods are called once per request on
/// the server's tasks, so they must be quick and must not block.
pub trait Probes: Send + Sync + 'static {
    /// Liveness (`/healthz`): `Err` means the process should be restarted.
    fn live(&self) -> Result<String, String>;
    /// Readiness (`/readyz`): `Err` means the instance should not get traffic yet.
    fn ready(&self) -> Result<String, String>;
}

/// [`Probes`] backed by one readiness flag: always live, ready while the flag
/// is set.
#[derive(Debug, Clone, Default)]
pub struct FlagProbes {
    /// Set once the model is loaded, the group joined and label history read.
    pub ready: Arc<AtomicBool>,
}

impl FlagProbes {
    /// The reason `/readyz` gives while the flag is clear.
    pub const NOT_READY: &'static str =
        "not ready: model loading, group join or label history pending";
}

impl Probes for FlagProbes {
    fn live(&self) -> Result<String, String> {
        Ok("ok".into())
    }

    fn ready(&self) -> Result<String, String> {
        if self.ready.load(Ordering::Acquire) {
            Ok("ready".into())
        } else {
            Err(Self::NOT_READY.to_string())
        }
    }
}

/// Limits of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Connections served at once (default 64); further clients wait in the
    /// kernel's listen backlog until one ends. At least 1.
    pub max_connections: usize,
    /// Time a client has to send a complete request head, counted from when
    /// the server starts waiting for it (connection start, or the end of the
    /// previous response on a keep-alive connection). Default 5 s.
    pub header_timeout: Duration,
    /// Lifetime of a whole connection, keep-alive included. Default 10 s.
    pub connection_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// Binds the endpoint, spawns its accept loop on the current tokio runtime
/// and returns the bound address (port 0 picks one).
///
/// Fails with `InvalidInput` when `cfg.max_connections` is 0 or a timeout is
/// zero, and with the bind error when the address cannot be bound. Must be
/// called within a tokio runtime with the time driver enabled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    probes: Arc<dyn Probes>,
    cfg: HttpConfig,
) -> std::io::Result<SocketAddr> {
    if cfg.max_connections == 0 {
        return Err(invalid("max_connections must be at least 1"));
    }
    if cfg.header_timeout.is_zero() || cfg.connection_timeout.is_zero() {
        return Err(invalid(
            "header_timeout and connection_timeout must be positive",
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .max_buf_size(MAX_BUF)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        metrics,
        probes,
        http,
        connection_timeout: cfg.connection_timeout,
    });
    let permits = Arc::new(Semaphore::new(
        cfg.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    tokio::spawn(accept_loop(listener, permits, shared));
    Ok(local)
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg.to_string())
}

/// What every connection task needs.
struct Shared {
    metrics: Arc<Metrics>,
    probes: Arc<dyn Probes>,
    http: http1::Builder,
    connection_timeout: Duration,
}

async fn accept_loop(listener: TcpListener, permits: Arc<Semaphore>, shared: Arc<Shared>) {
    let mut backoff = AcceptBackoff::default();
    loop {
        // Take a slot first: while none is free, clients queue in the backlog.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return; // never closed; nothing sensible left to do
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Some(errors) = backoff.on_success(Instant::now()) {
                    tracing::warn!(
                        errors,
                        "accept failed (since the last report); accepting again"
                    );
                }
                tokio::spawn(serve_connection(stream, peer, permit, shared.clone()));
            }
            Err(e) => {
                drop(permit);
                let (pause, report) = backoff.on_error(Instant::now());
                if let Some(errors) = report {
                    tracing::warn!(
                        errors, error = %e, pause_ms = pause.as_millis() as u64,
                        "accept failed (count since the last report); backing off"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let state = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let response = respond(&req, &state.metrics, state.probes.as_ref());
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let conn = shared.http.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(shared.connection_timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http connection ended with an error"),
        Err(_) => tracing::debug!(%peer, "http connection closed: connection timeout"),
    }
    drop(permit);
}

/// Routes one request. Unknown paths are 404 whatever the method; known
/// paths answer GET and HEAD (hyper omits the body for HEAD) and 405 otherwise.
fn respond<B>(req: &Request<B>, metrics: &Metrics, probes: &dyn Probes) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, TEXT, "not found\n".to_string());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".to_string(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => text(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, metrics.render()),
        "/healthz" => probe(probes.live()),
        _ => probe(probes.ready()),
    }
}

fn probe(result: Result<String, String>) -> Response<Full<Bytes>> {
    let (status, mut body) = match result {
        Ok(note) => (StatusCode::OK, note),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    };
    if !body.ends_with('\n') {
        body.push('\n');
    }
    text(status, TEXT, body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Pause and report policy for accept errors: the pause starts at
/// [`BACKOFF_MIN`], doubles per consecutive error up to [`BACKOFF_MAX`] and
/// resets on a successful accept; errors are counted and reported at most
/// once per [`WARN_EVERY`].
#[derive(Debug)]
struct AcceptBackoff {
    pause: Duration,
    unreported: u64,
    last_report: Option<Instant>,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            pause: BACKOFF_MIN,
            unreported: 0,
            last_report: None,
        }
    }
}

impl AcceptBackoff {
    /// Records an error; returns how long to pause and, when a report is
    /// due, the number of errors since the last one (this one included).
    fn on_error(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.unreported += 1;
        let pause = self.pause;
        self.pause = (self.pause * 2).min(BACKOFF_MAX);
        (pause, self.report(now))
    }

    /// Records a success: resets the pause; returns the count of errors not
    /// reported yet when a report is due.
    fn on_success(&mut self, now: Instant) -> Option<u64> {
        self.pause = BACKOFF_MIN;
        if self.unreported == 0 {
            return None;
        }
        self.report(now)
    }

    fn report(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Long enough for any answer on a loaded 2-core machine.
    const ANSWER: Duration = Duration::from_secs(2);

    async fn start(probes: Arc<dyn Probes>, cfg: HttpConfig) -> (SocketAddr, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let addr = serve(
            "127.0.0.1:0".parse().expect("addr"),
            metrics.clone(),
            probes,
            cfg,
        )
        .await
        .expect("bind");
        (addr, metrics)
    }

    fn ready_flag(ready: bool) -> (Arc<dyn Probes>, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(ready));
        (
            Arc::new(FlagProbes {
                ready: flag.clone(),
            }),
            flag,
        )
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn body(&self) -> &str {
            std::str::from_utf8(&self.body).expect("utf-8 body")
        }
    }

    /// A raw HTTP/1.1 client over one connection.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Self {
            let stream = TcpStream::connect(addr).await.expect("connect");
            Self {
                stream,
                buf: Vec::new(),
            }
        }

        async fn send(&mut self, raw: &str) {
            self.stream.write_all(raw.as_bytes()).await.expect("write");
        }

        async fn get(&mut self, method: &str, path: &str) -> Reply {
            self.send(&format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
                .await;
            self.reply(method == "HEAD").await.expect("a reply")
        }

        /// Reads more bytes; `Ok(0)` on end of stream.
        async fn fill(&mut self) -> std::io::Result<usize> {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            self.buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }

        /// One response (None: the connection closed or failed before a
        /// complete one, or none came within [`ANSWER`]).
        async fn reply(&mut self, head: bool) -> Option<Reply> {
            tokio::time::timeout(ANSWER, self.read_reply(head))
                .await
                .ok()
                .flatten()
        }

        async fn read_reply(&mut self, head: bool) -> Option<Reply> {
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                if self.fill().await.ok()? == 0 {
                    return None;
                }
            };
            let text = String::from_utf8(self.buf[..end].to_vec()).ok()?;
            let mut lines = text.split("\r\n");
            let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            self.buf.drain(..end + 4);
            let mut reply = Reply {
                status,
                headers,
                body: Vec::new(),
            };
            let len: usize = if head {
                0
            } else {
                reply.header("content-length")?.parse().ok()?
            };
            while self.buf.len() < len {
                if self.fill().await.ok()? == 0 {
                    return None;
                }
            }
            reply.body = self.buf.drain(..len).collect();
            Some(reply)
        }

        /// Waits up to `within` for the server to close; true if it did
        /// (end of stream or reset) without sending anything.
        async fn closed_within(&mut self, within: Duration) -> bool {
            match tokio::time::timeout(within, self.fill()).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.buf.is_empty(),
                Ok(Ok(_)) | Err(_) => false,
            }
        }
    }

    #[tokio::test]
    async fn metrics_answers_prometheus_text() {
        let (probes, _) = ready_flag(true);
        let (addr, metrics) = start(probes, HttpConfig::default()).await;
        metrics.consumed.increment(42);
        let mut c = Client::connect(addr).await;
        let r = c.get("GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
        assert!(r
            .body()
            .contains("# TYPE riskstream_records_consumed_total counter"));
        assert!(r.body().contains("riskstream_records_consumed_total 42\n"));

        // HEAD: same status and length, no body (the next reply parses cleanly).
        let h = c.get("HEAD", "/metrics").await;
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
        assert_eq!(
            h.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        let again = c.get("GET", "/healthz").await;
        assert_eq!((again.status, again.body()), (200, "ok\n"));
    }

    #[tokio::test]
    async fn readyz_gives_the_reason_until_ready() {
        let (probes, flag) = ready_flag(false);
        let (addr, _) = start(probes, HttpConfig::default()).await;
        let mut c = Client::connect(addr).await;
        let r = c.get("GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body(), format!("{}\n", FlagProbes::NOT_READY));
        flag.store(true, Ordering::Release);
        let r = c.get("GET", "/readyz").await;
        assert_eq!((r.status, r.body()), (200, "ready\n"));
        // A flag-only probe is always live.
        let r = c.get("GET", "/healthz").await;
        assert_eq!((r.status, r.body()), (200, "ok\n"));
    }

    struct Scripted {
        live: Mutex<Result<String, String>>,
        ready: Mutex<Result<String, String>>,
    }

    impl Probes for Scripted {
        fn live(&self) -> Result<String, String> {
            self.live.lock().expect("lock").clone()
        }
        fn ready(&self) -> Result<String, String> {
            self.ready.lock().expect("lock").clone()
        }
    }

    #[tokio::test]
    async fn healthz_fails_when_live_fails() {
        let probes = Arc::new(Scripted {
            live: Mutex::new(Err("scoring thread stalled for 31 s".to_string())),
            ready: Mutex::new(Ok("ready".to_string())),
        });
        let (addr, _) = start(probes.clone(), HttpConfig::default()).await;
        let mut c = Client::connect(addr).await;
        let r = c.get("GET", "/healthz").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body(), "scoring thread stalled for 31 s\n");
        *probes.live.lock().expect("lock") = Ok("ok".into());
        let r = c.get("GET", "/healthz").await;
        assert_eq!((r.status, r.body()), (200, "ok\n"));
    }

    #[tokio::test]
    async fn a_ready_note_is_the_200_body() {
        let probes = Arc::new(Scripted {
            live: Mutex::new(Ok("ok".to_string())),
            ready: Mutex::new(Ok("ready (labels: 3600 s behind)\n".to_string())),
        });
        let (addr, _) = start(probes.clone(), HttpConfig::default()).await;
        let mut c = Client::connect(addr).await;
        let r = c.get("GET", "/readyz").await;
        assert_eq!(r.status, 200);
        // Passed through as is, without a second newline.
        assert_eq!(r.body(), "ready (labels: 3600 s behind)\n");
        *probes.ready.lock().expect("lock") = Err("not ready: rebuilding".to_string());
        let r = c.get("GET", "/readyz").await;
        assert_eq!((r.status, r.body()), (503, "not ready: rebuilding\n"));
    }

    #[tokio::test]
    async fn unknown_paths_404_other_methods_405() {
        let (probes, _) = ready_flag(true);
        let (addr, _) = start(probes, HttpConfig::default()).await;
        let mut c = Client::connect(addr).await;
        for path in ["/", "/metricsx", "/healthz/", "/../metrics"] {
            let r = c.get("GET", path).await;
            assert_eq!(r.status, 404, "{path}");
        }
        for (method, path) in [
            ("POST", "/metrics"),
            ("DELETE", "/healthz"),
            ("PUT", "/readyz"),
        ] {
            let r = c.get(method, path).await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
        // Still the same connection, still serving.
        let r = c.get("GET", "/readyz").await;
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn excess_connections_wait_until_one_closes() {
        let (probes, _) = ready_flag(true);
        let cfg = HttpConfig {
            max_connections: 2,
            ..HttpConfig::default()
        };
        let (addr, _) = start(probes, cfg).await;
        // Two connections, served once each, then held open and idle.
        let mut a = Client::connect(addr).await;
        let mut b = Client::connect(addr).await;
        assert_eq!(a.get("GET", "/healthz").await.status, 200);
        assert_eq!(b.get("GET", "/healthz").await.status, 200);

        // The third connects (kernel backlog) but is not served...
        let mut c = Client::connect(addr).await;
        c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let early = tokio::time::timeout(Duration::from_millis(300), c.read_reply(false)).await;
        assert!(early.is_err(), "served beyond the limit: {early:?}");

        // ...until one of the two closes.
        drop(a);
        let r = c.reply(false).await.expect("served after a slot freed");
        assert_eq!((r.status, r.body()), (200, "ok\n"));
        assert_eq!(b.get("GET", "/healthz").await.status, 200);
    }

    #[tokio::test]
    async fn slow_request_head_is_cut_off() {
        let (probes, _) = ready_flag(true);
        let cfg = HttpConfig {
            header_timeout: Duration::from_millis(200),
            ..HttpConfig::default()
        };
        let (addr, _) = start(probes, cfg).await;
        let mut c = Client::connect(addr).await;
        let t0 = Instant::now();
        c.send("GET /metrics HTTP/1.1\r\nHost: t\r\n").await;
        assert!(c.closed_within(ANSWER).await, "still open or answered");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(150),
            "closed early: {waited:?}"
        );
    }

    #[tokio::test]
    async fn connection_lifetime_is_bounded() {
        let (probes, _) = ready_flag(true);
        let cfg = HttpConfig {
            connection_timeout: Duration::from_millis(300),
            ..HttpConfig::default()
        };
        let (addr, _) = start(probes, cfg).await;
        let mut c = Client::connect(addr).await;
        let t0 = Instant::now();
        assert_eq!(c.get("GET", "/healthz").await.status, 200);
        // Idle keep-alive, well within header_timeout (5 s): closed at 300 ms.
        assert!(
            c.closed_within(ANSWER).await,
            "connection outlived its limit"
        );
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "closed early: {waited:?}"
        );
    }

    #[tokio::test]
    async fn keep_alive_serves_two_requests_on_one_connection() {
        let (probes, _) = ready_flag(true);
        let (addr, metrics) = start(probes, HttpConfig::default()).await;
        let mut c = Client::connect(addr).await;
        let first = c.get("GET", "/metrics").await;
        assert_eq!(first.status, 200);
        assert_ne!(first.header("connection"), Some("close"));
        metrics.consumed.increment(7);
        let second = c.get("GET", "/metrics").await;
        assert_eq!(second.status, 200);
        assert!(second
            .body()
            .contains("riskstream_records_consumed_total 7\n"));
    }

    #[tokio::test]
    async fn oversized_request_head_gets_431() {
        let (probes, _) = ready_flag(true);
        let (addr, _) = start(probes, HttpConfig::default()).await;
        let mut c = Client::connect(addr).await;
        let filler = "a".repeat(MAX_BUF * 2);
        c.send(&format!(
            "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n"
        ))
        .await;
        let r = c.reply(false).await.expect("a reply");
        assert_eq!(r.status, 431);
    }

    #[tokio::test]
    async fn rejects_unusable_config() {
        let (probes, _) = ready_flag(true);
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        for cfg in [
            HttpConfig {
                max_connections: 0,
                ..HttpConfig::default()
            },
            HttpConfig {
                header_timeout: Duration::ZERO,
                ..HttpConfig::default()
            },
        ] {
            let err = serve(addr, Arc::new(Metrics::default()), probes.clone(), cfg)
                .await
                .expect_err("accepted");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn accept_backoff_doubles_caps_and_resets() {
        let mut b = AcceptBackoff::default();
        let t = Instant::now();
        let pauses: Vec<u64> = (0..9).map(|_| b.on_error(t).0.as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.on_success(t);
        assert_eq!(b.on_error(t).0, BACKOFF_MIN);
    }

    #[test]
    fn accept_errors_are_reported_once_per_interval_with_a_count() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        // The first error is reported at once.
        assert_eq!(b.on_error(t0).1, Some(1));
        // The next ones within the interval are only counted...
        for i in 1..=5 {
            assert_eq!(b.on_error(t0 + Duration::from_secs(i)).1, None);
        }
        // ...also across a success.
        assert_eq!(b.on_success(t0 + Duration::from_secs(6)), None);
        // Once the interval passed, the next error reports all since the last line.
        assert_eq!(b.on_error(t0 + WARN_EVERY).1, Some(6));
        // Errors left unreported are reported by the first success after the interval.
        assert_eq!(b.on_error(t0 + WARN_EVERY + Duration::from_secs(1)).1, None);
        assert_eq!(b.on_success(t0 + WARN_EVERY * 2), Some(1));
        // No errors, nothing to report.
        assert_eq!(b.on_success(t0 + WARN_EVERY * 4), None);
    }
}
