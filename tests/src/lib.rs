//! Helpers shared by the end-to-end tests: serving apps on loopback ports and speaking raw
//! HTTP/1.1 where a client library would hide what is being tested.

use std::convert::Infallible;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A `reqwest::ClientBuilder` for test requests. This workspace builds reqwest with
/// `rustls-no-provider` (ring is the tree's one crypto provider, passed to reqwest by the
/// PortOne clients), so a client built here needs ring installed as the process default.
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}

/// A plain `reqwest::Client` for test requests (see [`http_builder`]).
pub fn http() -> reqwest::Client {
    http_builder().build().expect("a test HTTP client")
}

/// A server running in the background; dropping it stops the accept loop.
#[derive(Debug)]
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The socket address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves an axum router on a free loopback port.
pub async fn serve_axum(app: axum::Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Served {
        url: format!("http://{addr}"),
        addr,
        task,
    }
}

/// Serves any tower service of `Request<Incoming>` with hyper 1 directly (`http1` +
/// `TowerToHyperService`), the way a hyper user would.
pub async fn serve_hyper<S, ResBody>(service: S) -> Served
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ResBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Served {
        url: format!("http://{addr}"),
        addr,
        task,
    }
}

/// Sends `head` (request line and headers, without the blank line), then `body_chunks` with
/// chunked transfer encoding, and returns the response status. Stops sending if the server
/// answers early.
pub async fn post_chunked(addr: SocketAddr, head: &str, body_chunks: &[&[u8]]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("{head}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for chunk in body_chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer (and close) before reading everything: that is allowed.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// Prints a line that `cargo test`'s output capture does not swallow (a skip notice must be
/// seen even when the test passes).
pub fn notice(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// `DATABASE_URL`, or a printed skip notice naming the test.
pub fn database_url(test: &str) -> Option<String> {
    env_or_skip("DATABASE_URL", test)
}

/// `REDIS_URL`, or a printed skip notice naming the test.
pub fn redis_url(test: &str) -> Option<String> {
    env_or_skip("REDIS_URL", test)
}

/// What to run to enable the PostgreSQL tests (the README lists it too).
pub const ENABLE_POSTGRES: &str = "createdb -h 127.0.0.1 -U postgres test; export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test";

/// What to run to enable the Redis tests.
pub const ENABLE_REDIS: &str =
    "redis-server --daemonize yes; export REDIS_URL=redis://127.0.0.1:6379";

/// What to run to enable the Redis Cluster tests.
pub const ENABLE_REDIS_CLUSTER: &str = "eval \"$(.ci/redis-cluster)\"";

fn env_or_skip(name: &str, test: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            let run = match name {
                "DATABASE_URL" => ENABLE_POSTGRES,
                _ => ENABLE_REDIS,
            };
            notice(&format!("SKIPPED {test}: {name} is not set — run: {run}"));
            None
        }
    }
}

/// A name no other test run uses: process id, time and a counter.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends `request` and returns the response status (panics if the server is unreachable).
pub async fn status(request: reqwest::RequestBuilder) -> u16 {
    request
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

/// A `tracing` writer that keeps everything written, for asserting on log lines.
#[derive(Debug, Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Captures every log line of this thread, at every level, until the guard drops (use a
    /// current-thread runtime, or a test whose work stays on its thread).
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The usual end-to-end setup: the emulator (sample persons), an axum app made from a client
/// pointed at it, and an HTTP client.
#[derive(Debug)]
pub struct World {
    /// The PortOne emulator.
    pub emulator: iamport_mock::Emulator,
    /// The app under test.
    pub app: Served,
    /// A plain client for requests to the app.
    pub http: reqwest::Client,
}

impl World {
    /// Starts the emulator and serves `router(client)`. The client's timeout is generous: a
    /// loaded CI machine must not turn a slow answer into a 504.
    pub async fn start(router: impl FnOnce(iamport_tower::IamportClient) -> axum::Router) -> Self {
        let emulator = iamport_mock::Emulator::start().await.expect("emulator");
        let client = emulator
            .client_builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .expect("client");
        let app = serve_axum(router(client)).await;
        Self {
            emulator,
            app,
            http: http(),
        }
    }

    /// The app's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.url)
    }

    /// Sends `request`; the status and the body text.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.expect("the app answers");
        (
            response.status().as_u16(),
            response.text().await.expect("a body"),
        )
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, String) {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    /// Certification lookups the emulator has served.
    pub fn lookups(&self) -> u64 {
        self.emulator
            .calls(iamport_mock::Endpoint::GetCertification)
    }

    /// Token and certification calls the emulator has served.
    pub fn upstream_calls(&self) -> u64 {
        use iamport_mock::Endpoint;
        self.emulator.calls(Endpoint::GetToken) + self.emulator.calls(Endpoint::GetCertification)
    }
}

/// `REDIS_CLUSTER_URLS` (comma-separated node URLs, as `.ci/redis-cluster` prints), or a
/// printed skip notice naming the test.
pub fn redis_cluster_urls(test: &str) -> Option<Vec<String>> {
    match std::env::var("REDIS_CLUSTER_URLS") {
        Ok(value) if !value.is_empty() => {
            Some(value.split(',').map(|s| s.trim().to_owned()).collect())
        }
        _ => {
            notice(&format!(
                "SKIPPED {test}: REDIS_CLUSTER_URLS is not set — run: {ENABLE_REDIS_CLUSTER}"
            ));
            None
        }
    }
}

/// `url` with its `host:port` replaced by `addr` (for pointing a store at a [`FreezableProxy`]).
pub fn with_address(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"));
    format!("{scheme}://{}{addr}{tail}", user.unwrap_or_default())
}

/// The `host:port` of a URL, resolved.
pub fn address_of(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs as _;
    let rest = url.split_once("://").expect("a URL with a scheme").1;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .to_socket_addrs()
        .expect("a resolvable host:port")
        .next()
        .expect("an address")
}

pub use iamport_mock::proxy::FreezableProxy;
