//! A PortOne emulator: a real HTTP server on a loopback port that speaks PortOne's v1 API
//! with the real JSON shapes and statuses, for tests, benchmarks and examples. Production
//! code never uses it: it is a crate of its own, a dev-dependency of whatever tests against
//! it (the examples use it for their demo mode only).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iamport_mock::{Emulator, Endpoint};
//!
//! let emulator = Emulator::start().await?;            // sample persons, test credentials
//! let client = emulator.client();                     // an IamportClient pointed at it
//! let cert = client.certification(&"imp_100000000001".parse()?).await?;
//! assert!(cert.certified);
//! assert_eq!(emulator.calls(Endpoint::GetToken), 1);
//! # Ok(()) }
//! ```
//!
//! What it emulates:
//! - `POST /users/getToken` (JSON or form): 401 on bad credentials; one token per lifetime
//!   (30 min by default), the same token and expiry while it lives, +5 min when asked in its
//!   last minute, a new one after expiry. `now` is the emulator's clock, which
//!   [`Emulator::set_clock_offset`] can skew from the host's.
//! - `GET`/`DELETE /certifications/{imp_uid}` with `Authorization: <token>` or `Bearer
//!   <token>`: the envelope, 401 for a missing/expired/revoked token, 404 with PortOne's
//!   message for an unknown id. `DELETE` removes the person.
//!
//! - v2 `GET /identity-verifications/{id}` with `Authorization: PortOne <secret>`
//!   ([`TEST_V2_SECRET`] by default; the scheme case-insensitive) or `Bearer <token>` from
//!   `POST /login/api-secret` (and `/token/refresh`): every person by its id, `VERIFIED` (or
//!   `FAILED` when not certified), plus `READY`/`FAILED` ones from [`Emulator::set_pending`]
//!   and the v2 browser SDK stand-in; the list `GET /identity-verifications` (filter, sort,
//!   page); PortOne's error bodies (`INVALID_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN` for
//!   another store, `IDENTITY_VERIFICATION_NOT_FOUND`) on every v2 path, faults included.
//!   Unknown paths answer in the shape of the API they sit under.
//!
//! Faults for tests: [`set_latency`](Emulator::set_latency),
//! [`fail_next`](Emulator::fail_next), [`drop_next`](Emulator::drop_next),
//! [`garbage_next`](Emulator::garbage_next), [`revoke_token`](Emulator::revoke_token); call
//! counters per endpoint and per id.

mod browser;
mod guide;
pub mod html;
mod persons;
pub mod proxy;
mod server;
mod state;
mod v1;
mod v2;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;

pub use self::persons::{Label, SAMPLE_GUIDE, labeled_sample_persons, person, sample_persons};
pub use self::state::{Endpoint, PendingStatus};
use self::state::{FaultKind, State, TokenRules};
use iamport_tower::IamportClient;
use iamport_tower::client::IamportClientBuilder;

/// The REST API key published in PortOne's guide for testing; the emulator accepts it.
pub const TEST_KEY: &str = "imp_apikey";
/// The REST API secret published in PortOne's guide for testing; the emulator accepts it.
pub const TEST_SECRET: &str =
    "ekKoeW8RyKuT0zgaZsUtXXTLQ4AhPFW3ZGseDA6bkA5lamv9OqDMnxyeB9wqOsuO9W3Mx9YSJ4dTqJ3f";

/// The v2 API secret the emulator accepts by default (`Authorization: PortOne <secret>`).
pub const TEST_V2_SECRET: &str = "portone-v2-emulator-api-secret";

/// A running emulator. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<State>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Starts an emulator on a free loopback port with the sample persons and the test
    /// credentials.
    pub async fn start() -> std::io::Result<Self> {
        Self::builder().start().await
    }

    /// Configures an emulator.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:41234` (what `IAMPORT_API_URL` would be).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client builder already pointed at the emulator with its credentials.
    pub fn client_builder(&self) -> IamportClientBuilder {
        IamportClient::builder()
            .base_url(self.url())
            .key(self.state.key.clone())
            .secret(self.state.secret.clone())
    }

    /// A v2 client builder already pointed at the emulator with its v2 secret.
    pub fn v2_client_builder(&self) -> iamport_tower::v2::PortOneClientBuilder {
        iamport_tower::PortOneClient::builder()
            .base_url(self.url())
            .secret(self.state.v2_secret.clone())
    }

    /// A v2 client with default settings pointed at the emulator.
    pub fn v2_client(&self) -> iamport_tower::PortOneClient {
        self.v2_client_builder()
            .build()
            .expect("an emulator client configuration is always valid")
    }

    /// Makes `id` a v2 verification that is `READY` (requested, unfinished) or `FAILED`.
    pub fn set_pending(&self, id: &str, status: PendingStatus) {
        self.state.set_pending(id, status);
    }

    /// A client with default settings pointed at the emulator.
    pub fn client(&self) -> IamportClient {
        self.client_builder()
            .build()
            .expect("an emulator client configuration is always valid")
    }

    /// Adds (or replaces, by `imp_uid`) a person: a v1 certification object in wire shape.
    pub fn add_person(&self, person: Value) {
        self.state.add_person(None, person);
    }

    /// The URL of the v2 browser SDK stand-in (`PortOne.requestIdentityVerification`): load it
    /// instead of PortOne's `https://cdn.portone.io/v2/browser-sdk.js`.
    pub fn sdk_v2_url(&self) -> String {
        format!("{}/sdk/portone-v2.js", self.url())
    }

    /// The URL of the browser SDK stand-in (`IMP.init`, `IMP.certification`): load it with a
    /// `<script src>` instead of PortOne's `https://cdn.iamport.kr/v1/iamport.js`.
    pub fn sdk_url(&self) -> String {
        format!("{}/sdk/iamport.js", self.url())
    }

    /// How many requests reached `endpoint` (faulted ones included).
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.state.calls(endpoint)
    }

    /// How many certification requests (`GET` and `DELETE`) named `id`.
    pub fn calls_for(&self, id: &str) -> u64 {
        self.state.calls_for(id)
    }

    /// How many TCP connections it has accepted since it started (not reset by
    /// [`reset_counters`](Self::reset_counters)): HTTP/1.1 clients open one per call in
    /// flight, HTTP/2 clients share one.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// How many requests were refused for a missing, wrong or expired token.
    pub fn rejected_tokens(&self) -> u64 {
        self.state.rejected_tokens()
    }

    /// What an app needs to use this emulator — the variables for v1 and v2
    /// (`IMP_KEY`, `IMP_SECRET`, `IAMPORT_API_URL`, `IMP_CODE`, `PORTONE_API_SECRET`,
    /// `PORTONE_API_URL`, `PORTONE_STORE_ID`, `PORTONE_CHANNEL_KEY`), the browser SDK
    /// stand-ins and the sample people — as the `iamport-mock` binary prints it. `GET /`
    /// serves the same as a page.
    pub fn banner(&self) -> String {
        guide::banner(&self.state, &self.url())
    }

    /// Zeroes every counter.
    pub fn reset_counters(&self) {
        self.state.reset_counters();
    }

    /// Delays every answer by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    /// The next `times` requests to `endpoint` get `status` with PortOne's error body for that
    /// API: v1's envelope `{code, message, response}` on v1 endpoints, v2's `{type, message}`
    /// on v2 ones (`type` from the status: `INVALID_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN`,
    /// `IDENTITY_VERIFICATION_NOT_FOUND`, `INTERNAL_SERVER_ERROR` for 5xx).
    pub fn fail_next(&self, endpoint: Endpoint, times: u32, status: StatusCode) {
        self.state
            .queue_fault(endpoint, FaultKind::Status(status), times);
    }

    /// The next `times` requests to `endpoint` have their connection closed unanswered (over
    /// HTTP/2, with every other call sharing it, as a real connection reset would).
    pub fn drop_next(&self, endpoint: Endpoint, times: u32) {
        self.state.queue_fault(endpoint, FaultKind::Drop, times);
    }

    /// The next `times` requests to `endpoint` get HTTP 200 with a body that is not JSON.
    pub fn garbage_next(&self, endpoint: Endpoint, times: u32) {
        self.state.queue_fault(endpoint, FaultKind::Garbage, times);
    }

    /// How many queued faults (`fail_next`, `drop_next`, `garbage_next`) have not hit a
    /// request yet: what was queued minus this is what was actually injected.
    pub fn pending_faults(&self) -> u64 {
        self.state.pending_faults()
    }

    /// Removes queued faults and latency.
    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// Invalidates the issued token at once (lookups with it get 401; `getToken` issues a
    /// new one), as when PortOne revokes tokens.
    pub fn revoke_token(&self) {
        self.state.revoke_token();
    }

    /// Skews the emulator's clock (its `now`, token expiry) by `seconds` from the host's.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.state.set_clock_offset(seconds);
    }

    /// Changes token lifetime; see [`EmulatorBuilder::token_lifetime`].
    pub fn set_token_lifetime(
        &self,
        lifetime: Duration,
        extend_window: Duration,
        extend_by: Duration,
    ) {
        self.state
            .set_token_rules(token_rules(lifetime, extend_window, extend_by));
    }
}

fn token_rules(lifetime: Duration, extend_window: Duration, extend_by: Duration) -> TokenRules {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    TokenRules {
        lifetime: secs(lifetime).max(1),
        extend_window: secs(extend_window),
        extend_by: secs(extend_by),
    }
}

/// `GET /`: what an app needs, as a page (the URL from the request's `Host`).
async fn index(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: http::HeaderMap,
) -> axum::response::Html<String> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    axum::response::Html(guide::index_page(&state, &format!("http://{host}")))
}

/// `GET /favicon.ico`: the pages' icon, so a browser's automatic request finds one.
async fn favicon() -> impl axum::response::IntoResponse {
    (
        [
            (http::header::CONTENT_TYPE, "image/svg+xml"),
            (http::header::CACHE_CONTROL, "max-age=86400"),
        ],
        html::FAVICON_SVG,
    )
}

/// Configures an [`Emulator`].
#[derive(Debug)]
#[must_use]
pub struct EmulatorBuilder {
    listen: SocketAddr,
    key: String,
    secret: String,
    v2_secret: String,
    v2_store_id: Option<String>,
    persons: Vec<(Option<Label>, Value)>,
    rules: TokenRules,
    http2_streams: Option<u32>,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            key: TEST_KEY.into(),
            secret: TEST_SECRET.into(),
            v2_secret: TEST_V2_SECRET.into(),
            v2_store_id: None,
            persons: labeled_sample_persons()
                .into_iter()
                .map(|(label, p)| (Some(label), p))
                .collect(),
            rules: TokenRules::default(),
            http2_streams: Some(DEFAULT_HTTP2_STREAMS),
        }
    }
}

/// Concurrent HTTP/2 streams the emulator allows per connection by default: hyper's
/// default, of the order real servers announce (nginx 128, AWS load balancers 128). A client
/// with more calls in flight on one connection waits for a stream.
pub const DEFAULT_HTTP2_STREAMS: u32 = 200;

impl EmulatorBuilder {
    /// Concurrent HTTP/2 streams allowed per connection (default
    /// [`DEFAULT_HTTP2_STREAMS`]; `None`: no limit), announced in its `SETTINGS`.
    pub fn http2_max_concurrent_streams(mut self, streams: Option<u32>) -> Self {
        self.http2_streams = streams;
        self
    }

    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Accepted credentials (default [`TEST_KEY`] / [`TEST_SECRET`]).
    pub fn credentials(mut self, key: impl Into<String>, secret: impl Into<String>) -> Self {
        self.key = key.into();
        self.secret = secret.into();
        self
    }

    /// The accepted v2 API secret (default [`TEST_V2_SECRET`]).
    pub fn v2_secret(mut self, secret: impl Into<String>) -> Self {
        self.v2_secret = secret.into();
        self
    }

    /// The store the v2 secret belongs to: a request naming another `storeId` (query string,
    /// or the list's filter) is `403 FORBIDDEN`, as PortOne answers for a store the secret
    /// may not access. Default: none (every `storeId` is accepted).
    pub fn v2_store_id(mut self, store_id: impl Into<String>) -> Self {
        self.v2_store_id = Some(store_id.into());
        self
    }

    /// Starts with no persons at all instead of [`sample_persons`].
    pub fn without_sample_persons(mut self) -> Self {
        self.persons.clear();
        self
    }

    /// Adds a person: a v1 certification object in wire shape (see [`person`]).
    pub fn person(mut self, person: Value) -> Self {
        self.persons.push((None, person));
        self
    }

    /// Adds the persons of a JSON file holding an array of v1 certification objects in the
    /// exact wire shape (what `GET /certifications/{imp_uid}` returns in `response`).
    pub fn persons_file(mut self, path: impl AsRef<Path>) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path.as_ref())?;
        let persons: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: expected a JSON array of v1 certification objects ({:?} error at line {} column {})",
                    path.as_ref().display(),
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if let Some(index) = persons
            .iter()
            .position(|p| p.get("imp_uid").and_then(Value::as_str).is_none())
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: entry {index} has no string `imp_uid`",
                    path.as_ref().display()
                ),
            ));
        }
        self.persons.extend(persons.into_iter().map(|p| (None, p)));
        Ok(self)
    }

    /// Token lifetime (default 30 min), the final window in which asking again extends it
    /// (default 60 s; zero disables) and by how much (default 5 min).
    pub fn token_lifetime(
        mut self,
        lifetime: Duration,
        extend_window: Duration,
        extend_by: Duration,
    ) -> Self {
        self.rules = token_rules(lifetime, extend_window, extend_by);
        self
    }

    /// Binds and starts serving in the background of the current tokio runtime.
    pub async fn start(self) -> std::io::Result<Emulator> {
        // A backlog like a busy server's (the kernel caps it at `net.core.somaxconn`): a pool
        // that opens thousands of connections at once must not see its SYNs dropped.
        let socket = if self.listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(self.listen)?;
        let listener = socket.listen(8192)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(
            self.key,
            self.secret,
            self.v2_secret,
            self.v2_store_id,
            self.persons,
            self.rules,
        ));
        let router = v1::routes()
            .merge(v2::routes())
            .merge(browser::routes())
            .route("/", axum::routing::get(index))
            .route("/favicon.ico", axum::routing::get(favicon))
            .fallback(|uri: http::Uri| async move {
                // Unknown paths answer in the shape of the API they sit under.
                if v2::is_v2_path(uri.path()) {
                    v2::unknown_path()
                } else {
                    v1::envelope_error(StatusCode::NOT_FOUND, "Not Found")
                }
            })
            .with_state(state.clone());
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(server::serve(
            listener,
            router,
            accepted.clone(),
            self.http2_streams,
        ));
        Ok(Emulator {
            addr,
            state,
            accepted,
            task,
        })
    }
}
