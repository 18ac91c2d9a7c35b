//! The HTTP side both PortOne clients share: one `reqwest::Client`, a bound on each whole
//! call, a cap on every response body, and retries that are bounded per call *and* across
//! calls.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::error::Error;
use crate::metrics::{self, Answered, Endpoint};
pin_project! {
    /// [`Transport::bounded`]'s future: the call, or [`Error::Timeout`] once its time is up.
    pub(crate) struct Bounded<'a, F> {
        #[pin]
        call: tokio::time::Timeout<F>,
        limit: &'a Duration,
    }
}

impl<T, F: Future<Output = Result<T, Error>>> Future for Bounded<'_, F> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.call.poll(cx)) {
            Ok(Err(Error::Timeout(_))) | Err(_) => Err(Error::Timeout(**this.limit)),
            Ok(result) => result,
        })
    }
}

/// How often and how patiently to retry a failed call.
///
/// Retries happen on connection errors (refused, reset, dropped mid-response) and on 5xx
/// answers, never on 4xx, and only for requests that are safe to repeat: a lookup or a token
/// request is retried, `DELETE /certifications/{imp_uid}` only when the connection failed
/// before the request could be sent (a lost answer would turn a successful delete into a
/// `NotFound` on the retry). The wait before retry *n* is a random duration between zero and
/// `min(max_backoff, base_backoff * 2^n)` ("full jitter"), so a fleet of clients does not
/// retry in lock step. Across calls, retries also draw on a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 2: three attempts at most).
    pub max_retries: u32,
    /// Backoff before the first retry (default 50 ms).
    pub base_backoff: Duration,
    /// Upper bound of any single backoff (default 1 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const NONE: Self = Self {
        max_retries: 0,
        base_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A cap on retries across all calls of one client, so an outage cannot multiply the traffic
/// sent to PortOne: over any 10-second window, retries may add at most `ratio` times the
/// calls made in that window, plus a floor of `min_per_second` retries per second (so a
/// quiet client still retries). When the budget is spent, a failed attempt is final.
///
/// Kept by `tower::retry::budget::TpsBudget` (the budget reqwest's own retries use). The
/// default allows 20 % extra traffic plus 10 retries a second, as finagle's and tower's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
        }
    }
}

impl RetryBudget {
    /// A budget of `ratio` extra requests per call (clamped to `0.0..=1000.0`) plus
    /// `min_per_second` retries a second.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio: if ratio.is_finite() {
                ratio.clamp(0.0, 1000.0)
            } else {
                0.0
            },
            min_per_second,
        }
    }
}

impl RetryBudget {
    /// tower's budget (the one reqwest's own retries use): over a 10-second window.
    fn account(&self) -> TpsBudget {
        TpsBudget::new(
            Duration::from_secs(10),
            self.min_per_second.min(i32::MAX as u32 - 1),
            self.ratio as f32,
        )
    }
}

/// Whether repeating a request could do something twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Safe to send again whatever happened to the first attempt (GET, getToken).
    Idempotent,
    /// Retried only when the first attempt certainly never reached the server (DELETE).
    NotIdempotent,
}

/// A response that came back: status and the whole body (at most the configured cap).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// The default cap on an upstream response body: 1 MiB (a certification is about 1 KiB).
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

/// How long an idle pooled connection to PortOne is kept by the default HTTP client: 90 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The transport settings both client builders share, with their documented defaults.
pub(crate) struct TransportOptions {
    pub(crate) base_url: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) budget: RetryBudget,
    pub(crate) max_body_size: usize,
    pub(crate) idle_timeout: Duration,
    /// The app's own client, instead of the one built from the settings above.
    pub(crate) http: Option<reqwest::Client>,
}

impl fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportOptions")
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("max_body_size", &self.max_body_size)
            .field("idle_timeout", &self.idle_timeout)
            .field("app_client", &self.http.is_some())
            .finish()
    }
}

impl TransportOptions {
    pub(crate) fn new(default_url: &str) -> Self {
        Self {
            base_url: default_url.into(),
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http: None,
        }
    }

    /// Checks the URL and builds (or takes) the one HTTP client.
    pub(crate) fn build(self) -> Result<Transport, Error> {
        let base_url = normalize_base_url(&self.base_url)?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .tls_backend_preconfigured(tls_config()?)
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(self.connect_timeout)
                .pool_idle_timeout(self.idle_timeout)
                .build()
                .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?,
        };
        Ok(Transport {
            http,
            base_url,
            timeout: self.timeout,
            retry: self.retry,
            budget: Arc::new(self.budget.account()),
            budget_settings: self.budget,
            max_body_size: self.max_body_size,
        })
    }
}

/// The rustls crypto provider the default HTTP client uses: the process default when the app
/// installed one (`CryptoProvider::install_default`), else *ring*, the provider the rest of
/// this crate's tree uses (reqwest's own default would add aws-lc-rs, a second provider and a
/// C build).
///
/// This crate builds reqwest with `rustls-no-provider`, so in a tree where nothing else
/// enables reqwest's `rustls` feature, a `reqwest::Client` the app builds itself panics
/// unless a provider is installed: install this one at startup —
/// `let _ = iamport_tower::client::crypto_provider().install_default();` — or any other.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    match rustls::crypto::CryptoProvider::get_default() {
        Some(provider) => (**provider).clone(),
        // rustls 0.23.48 deprecates ring's provider (it has no post-quantum key exchange);
        // its non-deprecated routes to ring install a process-wide default or panic when the
        // app's tree also enables aws-lc-rs, neither of which a library may do. Install a
        // provider of your own to choose another.
        #[allow(deprecated)]
        None => rustls::crypto::ring::default_provider(),
    }
}

/// The default client's TLS: rustls on [`crypto_provider`], the Mozilla roots, ALPN offering
/// HTTP/2 and HTTP/1.1.
fn tls_config() -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(crypto_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("cannot configure TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Checks an API base URL; returns it as the WHATWG URL parser writes it (host in lower case
/// and punycode, no default port), without a trailing slash.
fn normalize_base_url(url: &str) -> Result<String, Error> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::Config(format!("the API URL is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
        return Err(Error::Config("the API URL must be an http(s) URL".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::Config(
            "the API URL must not carry a user name or password".into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::Config(
            "the API URL must not have a query or fragment".into(),
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// The builder methods both client builders share, word for word: one shape, one source.
/// The builder must have a `transport: TransportOptions` field.
macro_rules! transport_setters {
    () => {
        /// The API base URL (default: PortOne's production API for this version); e.g. the
        /// emulator's.
        pub fn base_url(mut self, url: impl Into<String>) -> Self {
            self.transport.base_url = url.into();
            self
        }

        /// Sends through the app's own `reqwest::Client` — its proxies, roots, resolver,
        /// TLS and pool — instead of the one this builder makes. That client's own settings
        /// then rule redirects (build it with `redirect(Policy::none())` to keep the token
        /// from following one; reqwest drops `Authorization` on a redirect to another host),
        /// the connect timeout and the idle pool, and
        /// [`connect_timeout`](Self::connect_timeout) and [`idle_timeout`](Self::idle_timeout)
        /// are not used. [`timeout`](Self::timeout), retries and the body cap still apply to
        /// every call.
        pub fn http_client(mut self, client: reqwest::Client) -> Self {
            self.transport.http = Some(client);
            self
        }

        /// Time allowed to open a connection — name resolution, TCP, a proxy, the TLS
        /// handshake (default 3 s). Not used with [`http_client`](Self::http_client).
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.transport.connect_timeout = timeout;
            self
        }

        /// Bound on one whole call — token, lookup and every retry (default 10 s).
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.transport.timeout = timeout;
            self
        }

        /// Retry policy per call (default [`RetryPolicy::default`](crate::client::RetryPolicy)).
        pub fn retry(mut self, retry: $crate::client::RetryPolicy) -> Self {
            self.transport.retry = retry;
            self
        }

        /// Retry budget across calls (default
        /// [`RetryBudget::default`](crate::client::RetryBudget)).
        pub fn retry_budget(mut self, budget: $crate::client::RetryBudget) -> Self {
            self.transport.budget = budget;
            self
        }

        /// The largest response body read from PortOne, in bytes (default
        /// [`DEFAULT_MAX_BODY_SIZE`](crate::client::DEFAULT_MAX_BODY_SIZE), 1 MiB). A larger
        /// answer is [`Error::Malformed`](crate::Error::Malformed) (the layer's 502) and is not
        /// read further.
        pub fn max_body_size(mut self, bytes: usize) -> Self {
            self.transport.max_body_size = bytes;
            self
        }

        /// How long a pooled connection to PortOne may sit idle before it is closed
        /// (default [`DEFAULT_IDLE_TIMEOUT`](crate::client::DEFAULT_IDLE_TIMEOUT), 90 s).
        /// Not used with [`http_client`](Self::http_client).
        pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.transport.idle_timeout = timeout;
            self
        }
    };
}
pub(crate) use transport_setters;

/// The built transport: see the module docs.
pub(crate) struct Transport {
    http: reqwest::Client,
    /// The API's URL, normalized once, without a trailing slash.
    pub(crate) base_url: String,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    budget: Arc<TpsBudget>,
    budget_settings: RetryBudget,
    max_body_size: usize,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("budget", &self.budget_settings)
            .field("max_body_size", &self.max_body_size)
            .finish_non_exhaustive()
    }
}

/// One call's request, made again for each attempt. Every lookup in flight holds one:
/// compact (the method as one byte, the rare body boxed).
pub(crate) struct Outgoing {
    method: Verb,
    url: Box<str>,
    authorization: Option<HeaderValue>,
    json: Option<Box<Bytes>>,
}

/// The methods PortOne's calls use.
#[derive(Clone, Copy)]
pub(crate) enum Verb {
    Get,
    Post,
    Delete,
}

impl Outgoing {
    pub(crate) fn new(method: Verb, url: String) -> Self {
        Self {
            method,
            url: url.into(),
            authorization: None,
            json: None,
        }
    }

    /// The `Authorization` header (mark it sensitive).
    pub(crate) fn authorization(mut self, value: HeaderValue) -> Self {
        self.set_authorization(value);
        self
    }

    /// Sets (or replaces) the `Authorization` header (mark it sensitive).
    pub(crate) fn set_authorization(&mut self, value: HeaderValue) {
        self.authorization = Some(value);
    }

    /// A JSON body.
    pub(crate) fn json(mut self, body: Vec<u8>) -> Self {
        self.json = Some(Box::new(body.into()));
        self
    }

    /// The request, without a timeout of reqwest's ([`Transport::bounded`] bounds the whole
    /// call, retries included) and without a `User-Agent`: reqwest's redirect and retry
    /// layers each keep a copy of the headers while the call is in flight, so every header
    /// beyond the ones the call needs costs about 400 bytes per call waiting for PortOne.
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let method = match self.method {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        };
        let mut request = http.request(method, &*self.url);
        if let Some(authorization) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization.clone());
        }
        if let Some(json) = &self.json {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(Bytes::clone(json));
        }
        request
    }
}

/// Why an attempt got no answer: reqwest's error, without the URL (it holds the id).
#[derive(Debug)]
struct Failure(reqwest::Error);

impl Failure {
    fn is_retryable(&self, idempotency: Idempotency) -> bool {
        match idempotency {
            Idempotency::Idempotent => true,
            // Only when no byte of the request can have reached the server.
            Idempotency::NotIdempotent => self.0.is_connect(),
        }
    }
}

impl fmt::Display for Failure {
    // The whole chain of causes (reqwest's own message is only the kind).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_connect() {
            "cannot connect"
        } else if self.0.is_body() || self.0.is_decode() {
            "the answer broke off"
        } else {
            "the request failed"
        })?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// What one attempt produced, before the retry decision.
enum Attempt {
    Answer(Answer),
    Failed(Failure),
    TooLarge(StatusCode),
}

/// Times one HTTP attempt for `iamport_upstream_request_duration_seconds`; an attempt
/// dropped unfinished (the whole-call timeout, or the caller went away) counts as
/// `cancelled`.
struct AttemptTimer {
    endpoint: Endpoint,
    started: Instant,
    done: bool,
}

impl AttemptTimer {
    fn start(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(mut self, attempt: &Attempt) -> Duration {
        self.done = true;
        let answered = match attempt {
            Attempt::Answer(answer) => Answered::Status(answer.status),
            Attempt::TooLarge(status) => Answered::Status(*status),
            Attempt::Failed(_) => Answered::Error,
        };
        let elapsed = self.started.elapsed();
        metrics::upstream_request(self.endpoint, answered, elapsed);
        elapsed
    }
}

impl Drop for AttemptTimer {
    fn drop(&mut self) {
        if !self.done {
            metrics::upstream_request(self.endpoint, Answered::Cancelled, self.started.elapsed());
        }
    }
}

impl Transport {
    /// `base_url` + `path` (which starts with `/` and is percent-encoded already).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Runs one whole call (token, lookup, retries) within the timeout, counted from now.
    /// A future of its own rather than an `async fn`, which would hold `call` twice (as its
    /// argument and inside the timeout) in every request's state.
    pub(crate) fn bounded<F: Future>(&self, call: F) -> Bounded<'_, F> {
        Bounded {
            call: tokio::time::timeout(self.timeout, call),
            limit: &self.timeout,
        }
    }

    async fn attempt(&self, outgoing: &Outgoing) -> Attempt {
        let response = match outgoing.request(&self.http).send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Failed(Failure(error.without_url())),
        };
        // Boxed: reading holds the response, which waiting for it does not; inline, every
        // call in flight would hold room for it.
        match Box::pin(read_capped(response, self.max_body_size)).await {
            Ok(Ok(answer)) => Attempt::Answer(answer),
            Ok(Err(status)) => Attempt::TooLarge(status),
            Err(error) => Attempt::Failed(Failure(error.without_url())),
        }
    }

    /// Sends `outgoing`, retrying per the policy and the budget. The caller bounds the total
    /// time (see [`bounded`](Self::bounded)).
    pub(crate) async fn send(
        &self,
        endpoint: Endpoint,
        idempotency: Idempotency,
        outgoing: &Outgoing,
    ) -> Result<Answer, Error> {
        self.budget.deposit();
        let mut retry = 0;
        loop {
            let timer = AttemptTimer::start(endpoint);
            let attempt = self.attempt(outgoing).await;
            let elapsed = timer.finish(&attempt);
            let may_retry = retry < self.retry.max_retries;
            let retry_wanted = match &attempt {
                Attempt::Answer(answer) => {
                    answer.status.is_server_error()
                        && idempotency == Idempotency::Idempotent
                        && may_retry
                }
                Attempt::Failed(failure) => failure.is_retryable(idempotency) && may_retry,
                Attempt::TooLarge(_) => false,
            };
            if retry_wanted && self.budget.withdraw() {
                match &attempt {
                    Attempt::Answer(answer) => tracing::debug!(
                        endpoint = endpoint.as_str(),
                        status = answer.status.as_u16(),
                        latency_ms = elapsed.as_millis(),
                        retry,
                        "PortOne answered 5xx; retrying"
                    ),
                    // The failure names no URL (which holds the verification id).
                    Attempt::Failed(failure) => tracing::debug!(
                        endpoint = endpoint.as_str(),
                        error = %failure,
                        latency_ms = elapsed.as_millis(),
                        retry,
                        "PortOne connection failed; retrying"
                    ),
                    Attempt::TooLarge(_) => {}
                }
                // Boxed: a timer is a large part of a call's state, and only a retry waits.
                Box::pin(tokio::time::sleep(self.retry.backoff(retry))).await;
                retry += 1;
                continue;
            }
            if retry_wanted {
                tracing::warn!(
                    retry,
                    "the PortOne retry budget is spent; not retrying this failure"
                );
            }
            return match attempt {
                Attempt::Answer(answer) => Ok(answer),
                Attempt::TooLarge(_) => {
                    tracing::warn!(
                        endpoint = endpoint.as_str(),
                        limit = self.max_body_size,
                        "PortOne's answer is larger than the body size limit; not reading it"
                    );
                    Err(Error::Malformed(format!(
                        "the response body is larger than the {}-byte limit",
                        self.max_body_size
                    )))
                }
                Attempt::Failed(failure) if failure.0.is_timeout() => {
                    Err(Error::Timeout(Duration::ZERO))
                }
                Attempt::Failed(failure) => Err(Error::Unavailable(Box::new(failure))),
            };
        }
    }
}

/// The whole body, or `Err(status)` as soon as it is known to exceed `limit` bytes
/// (announced by `Content-Length` or counted while reading, chunk by chunk): the rest is
/// never read, so a huge answer costs at most `limit` bytes of memory.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Result<Answer, StatusCode>, reqwest::Error> {
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|announced| announced > limit as u64)
    {
        return Ok(Err(status));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(Err(status));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    Ok(Ok(Answer { status, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_url_is_the_base_and_path_parsed_together() {
        let bases = [
            "http://127.0.0.1:8080",
            "https://api.iamport.kr/",
            "http://emulator.test/prefix",
            "http://emulator.test/prefix/",
            "https://API.Example.COM:443/a/b",
        ];
        let paths = [
            "/users/getToken",
            "/certifications/imp_123456789012",
            "/certifications/a%2Fb%3F%23",
            "/identity-verifications/%ED%95%9C",
        ];
        for base in bases {
            let mut options = TransportOptions::new("https://api.iamport.kr");
            options.base_url = base.into();
            let transport = options.build().unwrap();
            for path in paths {
                // The base as given (not normalized) and the path, parsed as one URL.
                let given = base.trim_end_matches('/');
                let joined = url::Url::parse(&format!("{given}{path}"))
                    .unwrap()
                    .to_string();
                assert_eq!(
                    url::Url::parse(&transport.url(path)).unwrap().to_string(),
                    joined,
                    "{base} + {path}"
                );
            }
        }
    }

    #[test]
    fn an_api_url_with_credentials_is_refused() {
        for url in [
            "https://user@api.iamport.kr",
            "https://user:pw@api.iamport.kr",
        ] {
            let mut options = TransportOptions::new("https://api.iamport.kr");
            options.base_url = url.into();
            let error = options.build().unwrap_err().to_string();
            assert!(error.contains("user name or password"), "{error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn backoff_is_bounded() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        for retry in 0..40 {
            assert!(policy.backoff(retry) <= Duration::from_millis(300));
        }
        assert!(policy.backoff(0) <= Duration::from_millis(100));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_budget_caps_retries_across_calls() {
        let account = RetryBudget::new(0.5, 1).account();
        // Floor: 1 retry/s over a 10 s window = 10 retries with no calls at all.
        let floor = (0..100).filter(|_| account.withdraw()).count();
        assert_eq!(floor, 10);
        // 40 calls earn 20 more.
        for _ in 0..40 {
            account.deposit();
        }
        assert_eq!((0..100).filter(|_| account.withdraw()).count(), 20);
    }

    #[test]
    fn budget_ratio_is_clamped() {
        assert_eq!(RetryBudget::new(f64::NAN, 0).ratio, 0.0);
        assert_eq!(RetryBudget::new(-1.0, 0).ratio, 0.0);
    }
}
