//! `IamportClient`: the PortOne v1 REST client (token cache, timeouts, retries).
//!
//! ```no_run
//! # async fn run() -> Result<(), iamport_client::Error> {
//! use iamport_client::{IamportClient, ImpUid};
//!
//! // IMP_KEY, IMP_SECRET and optionally IAMPORT_API_URL.
//! let client = IamportClient::from_env()?;
//! let id: ImpUid = "imp_123456789012".parse()?;
//! let cert = client.certification(&id).await?;
//! println!("verified: {}, born {:?}", cert.certified, cert.birth_date.map(|d| d.year()));
//! # Ok(()) }
//! ```

mod lenient;
mod token;
mod transport;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub(crate) use self::lenient::{Lenient, Object, unreadable};
use self::token::{IssuedToken, TokenCache};
pub(crate) use self::transport::{
    Answer, Idempotency, Outgoing, Transport, TransportOptions, Verb, transport_setters,
};
pub use self::transport::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_SIZE, RetryBudget, RetryPolicy, crypto_provider,
};
use self::wire::{TokenResponse, error_message};
use crate::certification::Certification;
use crate::error::Error;
use crate::escaped::Escaped;
pub use crate::id::{ImpUid, InvalidId, MAX_IMP_UID_LEN};
use crate::metrics::{self, Endpoint};
use crate::secret::Secret;
use crate::secret::env_var;
use crate::source::{BoxFuture, CertificationSource, Evictions};

/// PortOne's production v1 API.
pub const DEFAULT_API_URL: &str = "https://api.iamport.kr";

/// Characters escaped in a path segment: everything but RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as exactly one percent-encoded URL path segment. `.` and `..` cannot be one (URL
/// parsers resolve them as dot segments even percent-encoded), so ids refuse them before they
/// get here ([`InvalidId::DotSegment`]); this refuses them again rather than send them.
pub(crate) fn path_segment(value: &str) -> Result<String, Error> {
    match value {
        "" => return Err(Error::InvalidId(InvalidId::Empty)),
        "." | ".." => return Err(Error::InvalidId(InvalidId::DotSegment)),
        _ => {}
    }
    Ok(utf8_percent_encode(value, PATH_SEGMENT).to_string())
}

/// The `Authorization` value of a call with `token`, marked sensitive (never logged).
fn bearer(token: &Secret) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(token.expose())
        .map_err(|_| Error::Malformed("the access token is not a valid header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The PortOne v1 REST client. Cheap to clone (one shared connection pool and token cache).
///
/// - **Token:** `POST /users/getToken` once per token lifetime. The token is renewed ahead of
///   expiry, computed from PortOne's own `now`/`expired_at` rather than the local clock, and
///   however many requests need a token at once, only one fetches it. When that fetch fails,
///   every request that waited for it gets its error, and for a short back-off (default 1 s,
///   [`token_retry_after`](IamportClientBuilder::token_retry_after)) so does every new one: a
///   token outage costs one fetch per back-off, not one per request. A 401 on a lookup drops
///   the token, fetches a new one and retries once.
/// - **Time:** a connect timeout (default 3 s) and a bound on the whole call, token and
///   retries included (default 10 s) → [`Error::Timeout`].
/// - **Retries:** see [`RetryPolicy`] (default: 2 retries with jittered backoff, on connection
///   errors and 5xx only, for lookups and token requests; a `DELETE` only when the
///   connection failed before it was sent) and [`RetryBudget`] (across calls).
/// - **Answers:** at most [`max_body_size`](IamportClientBuilder::max_body_size) bytes are
///   read (default 1 MiB); a record for another id than the one asked for is refused
///   ([`Error::Malformed`]); a field that cannot be read is unknown, with a WARN naming it.
/// - **Connections:** one [`reqwest::Client`], built by default with rustls (ring, the
///   Mozilla roots), HTTP/2 when the server offers it over TLS and HTTP/1.1 otherwise,
///   redirects off (a redirect is an answer, never followed: it would carry the token
///   elsewhere), the connect timeout, and whatever proxy the environment names
///   (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, as reqwest reads them). For
///   other roots, a proxy of your choosing, a resolver or a client certificate, build a
///   `reqwest::Client` and pass it to [`http_client`](IamportClientBuilder::http_client).
#[derive(Clone)]
pub struct IamportClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    key: String,
    secret: Secret,
    tokens: TokenCache,
    evictions: Evictions,
}

impl fmt::Debug for IamportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamportClient")
            .field("key", &self.inner.key)
            .field("secret", &self.inner.secret)
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

impl IamportClient {
    /// A client for PortOne's production API with these credentials and default settings.
    pub fn new(key: impl Into<String>, secret: impl Into<Secret>) -> Result<Self, Error> {
        Self::builder().key(key).secret(secret).build()
    }

    /// A builder with default settings; set at least the key and the secret.
    pub fn builder() -> IamportClientBuilder {
        IamportClientBuilder::default()
    }

    /// A client configured from the environment: `IMP_KEY` and `IMP_SECRET` (required) and
    /// `IAMPORT_API_URL` (optional; default [`DEFAULT_API_URL`]).
    pub fn from_env() -> Result<Self, Error> {
        Self::builder().from_env()?.build()
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.inner.transport.base_url
    }

    /// `GET /certifications/{imp_uid}`: the verification result.
    ///
    /// (A function returning the call rather than an `async fn`, which would keep its
    /// arguments beside the call in every lookup's state.)
    pub fn certification<'a>(
        &'a self,
        imp_uid: &'a ImpUid,
    ) -> impl Future<Output = Result<Certification, Error>> + Send + 'a {
        self.inner
            .transport
            .bounded(self.certification_call(Endpoint::GetCertification, imp_uid))
    }

    /// `DELETE /certifications/{imp_uid}`: removes the record at PortOne (do this once you
    /// stored what you need, to keep less personal data around) and returns it.
    ///
    /// Not retried once the request may have reached PortOne (a lost answer would make the
    /// retry a `NotFound` for a delete that succeeded): after a 5xx or a dropped connection
    /// the error is returned, and [`Error::NotFound`] from a later call means it is gone.
    ///
    /// Whatever the answer, the id is then evicted from the lookup cache of every
    /// `iamport_tower::CertificationLayer` built from this client or a clone
    /// (see `iamport_tower::cache`): a deleted verification admits nobody any more.
    pub async fn delete_certification(&self, imp_uid: &ImpUid) -> Result<Certification, Error> {
        let deleted = self
            .inner
            .transport
            .bounded(self.certification_call(Endpoint::DeleteCertification, imp_uid))
            .await;
        self.inner.evictions.evict(imp_uid.as_str()).await;
        deleted
    }

    /// Where this client announces deleted verifications to the layers built from it.
    pub fn evictions(&self) -> &Evictions {
        &self.inner.evictions
    }

    /// One call to `/certifications/{imp_uid}` (`GET`, or `DELETE`). Every guarded request
    /// waiting for PortOne holds this state: few named locals (each keeps its room for the
    /// whole call) and the method derived from `endpoint`.
    async fn certification_call(
        &self,
        endpoint: Endpoint,
        imp_uid: &ImpUid,
    ) -> Result<Certification, Error> {
        let (method, idempotency) = match endpoint {
            Endpoint::DeleteCertification => (Verb::Delete, Idempotency::NotIdempotent),
            _ => (Verb::Get, Idempotency::Idempotent),
        };
        let path = format!("/certifications/{}", path_segment(imp_uid.as_str())?);
        // Built once; each pass sets the current token.
        let mut outgoing = Outgoing::new(method, self.inner.transport.url(&path));
        drop(path);
        let mut refreshed = false;
        loop {
            // Boxed when it is not at hand: a fetch (or a wait for one) is rare, and inline
            // every lookup in flight would hold room for it.
            let token = match self.inner.tokens.fresh() {
                Some(token) => token,
                None => Box::pin(self.token()).await?,
            };
            outgoing.set_authorization(bearer(&token)?);
            let answer = self
                .inner
                .transport
                .send(endpoint, idempotency, &outgoing)
                .await?;
            match answer.status {
                StatusCode::OK => {
                    return wire::certification(
                        wire::decode_success(&answer.body)?,
                        imp_uid.as_str(),
                    );
                }
                StatusCode::UNAUTHORIZED if !refreshed => {
                    tracing::debug!("PortOne refused the cached access token; refreshing once");
                    self.inner.tokens.invalidate(&token);
                    refreshed = true;
                }
                StatusCode::UNAUTHORIZED => return Err(Error::Unauthorized),
                StatusCode::NOT_FOUND => return Err(Error::NotFound),
                status => {
                    return Err(Error::UpstreamStatus {
                        status,
                        message: error_message(&answer.body),
                    });
                }
            }
        }
    }

    /// Fetches the access token now, unless one is cached: call it once at startup so the
    /// first request costs one round trip to PortOne, not two. Every lookup then shares that
    /// token until it is renewed ahead of expiry. Bounded by the client's
    /// [`timeout`](IamportClientBuilder::timeout).
    ///
    /// Fails as a lookup would — [`Error::BadCredentials`] for a wrong `IMP_KEY`/`IMP_SECRET`,
    /// [`Error::Unavailable`] or [`Error::Timeout`] when PortOne cannot be reached — so a
    /// server can refuse to start with wrong credentials, or log the outage and start anyway
    /// (the first lookup fetches again after the token back-off).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emulator = iamport_mock::Emulator::start().await?;
    /// # let client = emulator.client();
    /// // let client = IamportClient::from_env()?;
    /// client.warm_up().await?; // one POST /users/getToken, now
    /// client.certification(&"imp_100000000001".parse()?).await?; // one GET, no token fetch
    /// # assert_eq!(emulator.calls(iamport_mock::Endpoint::GetToken), 1);
    /// # Ok(()) }
    /// ```
    pub async fn warm_up(&self) -> Result<(), Error> {
        self.inner.transport.bounded(self.token()).await.map(drop)
    }

    async fn token(&self) -> Result<Secret, Error> {
        self.inner.tokens.get(|| self.fetch_token()).await
    }

    /// One `POST /users/getToken`, counted in `iamport_token_fetches_total` and logged.
    async fn fetch_token(&self) -> Result<IssuedToken, Error> {
        let started = tokio::time::Instant::now();
        let result = self.request_token().await;
        let latency_ms = started.elapsed().as_millis();
        metrics::token_fetch(result.is_ok());
        match &result {
            Ok(token) => tracing::info!(
                lifetime_secs = token.server_expired_at - token.server_now,
                latency_ms,
                "fetched a PortOne access token"
            ),
            Err(error) => tracing::warn!(
                error = %Escaped(error),
                status = error.upstream_status(),
                latency_ms,
                "fetching a PortOne access token failed"
            ),
        }
        result
    }

    async fn request_token(&self) -> Result<IssuedToken, Error> {
        let url = self.inner.transport.url("/users/getToken");
        let credentials = serde_json::to_vec(&serde_json::json!({
            "imp_key": self.inner.key,
            "imp_secret": self.inner.secret.expose(),
        }))
        .map_err(|e| Error::Config(format!("cannot write the token request: {e}")))?;
        let request = Outgoing::new(Verb::Post, url).json(credentials);
        let requested_at = tokio::time::Instant::now();
        // PortOne answers a repeated getToken with the same token: safe to retry.
        let Answer { status, body } = self
            .inner
            .transport
            .send(Endpoint::GetToken, Idempotency::Idempotent, &request)
            .await?;
        match status {
            StatusCode::OK => {
                let token = TokenResponse::decode(&body)?;
                Ok(IssuedToken {
                    value: Secret::new(token.access_token),
                    server_now: token.now,
                    server_expired_at: token.expired_at,
                    requested_at,
                })
            }
            StatusCode::UNAUTHORIZED => Err(Error::BadCredentials),
            status => Err(Error::UpstreamStatus {
                status,
                message: error_message(&body),
            }),
        }
    }
}

/// Configures an [`IamportClient`]. Every setting has a documented default. The transport
/// settings (URL, timeouts, retries, body limit) are the same methods, with the same
/// defaults, as on [`PortOneClientBuilder`](crate::v2::PortOneClientBuilder).
#[must_use]
pub struct IamportClientBuilder {
    key: Option<String>,
    secret: Option<Secret>,
    transport: TransportOptions,
    renew_before: Duration,
    token_retry_after: Duration,
}

impl Default for IamportClientBuilder {
    fn default() -> Self {
        Self {
            key: None,
            secret: None,
            transport: TransportOptions::new(DEFAULT_API_URL),
            renew_before: Duration::from_secs(60),
            token_retry_after: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for IamportClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamportClientBuilder")
            .field("key", &self.key)
            .field("secret", &self.secret)
            .field("transport", &self.transport)
            .field("renew_before", &self.renew_before)
            .field("token_retry_after", &self.token_retry_after)
            .finish()
    }
}

impl IamportClientBuilder {
    transport_setters!();

    /// The REST API key (`imp_key`).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The REST API secret (`imp_secret`).
    pub fn secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Reads `IMP_KEY`, `IMP_SECRET` and `IAMPORT_API_URL`, each only if set and not blank;
    /// a value that is not UTF-8 is an [`Error::Config`].
    pub fn from_env(mut self) -> Result<Self, Error> {
        if let Some(key) = env_var("IMP_KEY")? {
            self.key = Some(key);
        }
        if let Some(secret) = env_var("IMP_SECRET")? {
            self.secret = Some(Secret::new(secret));
        }
        if let Some(url) = env_var("IAMPORT_API_URL")? {
            self.transport.base_url = url;
        }
        Ok(self)
    }

    /// How long before its expiry a token is renewed (default 60 s — PortOne extends a token
    /// asked for in its last minute; capped at half the token's lifetime).
    pub fn renew_before(mut self, ahead: Duration) -> Self {
        self.renew_before = ahead;
        self
    }

    /// After a failed token fetch, how long every caller gets that failure instead of
    /// fetching again (default 1 s; zero still shares one failed fetch among the callers
    /// that waited for it).
    pub fn token_retry_after(mut self, back_off: Duration) -> Self {
        self.token_retry_after = back_off;
        self
    }

    /// Builds the client; fails when the key or secret is missing or the URL is not http(s).
    pub fn build(self) -> Result<IamportClient, Error> {
        let key = self
            .key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::Config("the API key (IMP_KEY) is not set".into()))?;
        let secret = self
            .secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Config("the API secret (IMP_SECRET) is not set".into()))?;
        Ok(IamportClient {
            inner: Arc::new(Inner {
                transport: self.transport.build()?,
                key,
                secret,
                tokens: TokenCache::new(self.renew_before, self.token_retry_after),
                evictions: Evictions::new(),
            }),
        })
    }
}

/// PortOne v1 as the layer's source: ids are `imp_uid`s, checked by [`ImpUid::parse`].
impl CertificationSource for IamportClient {
    fn label(&self) -> &'static str {
        "v1"
    }

    fn warm_up(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(IamportClient::warm_up(self))
    }

    fn validate_id(&self, raw: &str) -> Result<(), InvalidId> {
        ImpUid::parse(raw).map(drop)
    }

    fn evictions(&self) -> Option<&Evictions> {
        Some(IamportClient::evictions(self))
    }

    fn lookup(&self, id: &str) -> BoxFuture<'static, Result<Certification, Error>> {
        match ImpUid::parse(id) {
            Ok(id) => {
                let client = self.clone();
                Box::pin(async move { client.certification(&id).await })
            }
            Err(invalid) => Box::pin(std::future::ready(Err(invalid.into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        let segment = |s| path_segment(s).unwrap();
        assert_eq!(segment("imp_1/../x"), "imp_1%2F..%2Fx");
        assert_eq!(segment("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(segment("order-1.2_x~"), "order-1.2_x~");
        assert_eq!(segment("..."), "...");
        for dots in [".", ".."] {
            assert!(matches!(
                path_segment(dots),
                Err(Error::InvalidId(InvalidId::DotSegment))
            ));
        }
    }

    #[test]
    fn builder_requires_credentials() {
        assert!(matches!(
            IamportClient::builder().secret("s").build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            IamportClient::builder().key("k").build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            IamportClient::builder()
                .key("k")
                .secret("s")
                .base_url("ftp://x")
                .build(),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let client = IamportClient::new("imp_apikey", "top-secret-value").unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("top-secret-value"), "{shown}");
        assert!(shown.contains("imp_apikey"));
    }
}

#[cfg(test)]
mod state_size {
    use crate::CertificationSource as _;

    /// Every guarded request in flight holds one lookup's state: keep it small. An `async fn`
    /// wrapper that holds its argument future twice, or a token fetch inlined beside the
    /// lookup, each more than double it; a named local or argument kept beside the call adds
    /// its size for the whole call (544 bytes in a release build).
    #[tokio::test]
    async fn a_lookup_in_flight_holds_little_state() {
        let client = super::IamportClient::builder()
            .base_url("http://127.0.0.1:1")
            .key("k")
            .secret("s")
            .build()
            .unwrap();
        let lookup = client.lookup("imp_123456789012");
        let size = size_of_val(&*lookup);
        eprintln!("a lookup's state: {size} bytes");
        assert!(size <= 640, "a lookup's state grew to {size} bytes");
    }
}

#[cfg(test)]
mod zz {
    use super::*;
    #[tokio::test]
    async fn zz_sizes() {
        let client = IamportClient::builder()
            .key("k")
            .secret("s")
            .base_url("http://127.0.0.1:1")
            .build()
            .unwrap();
        let id = ImpUid::parse("imp_1").unwrap();
        eprintln!(
            "certification_call {}",
            size_of_val(&client.certification_call(Endpoint::GetCertification, &id))
        );
        eprintln!("certification {}", size_of_val(&client.certification(&id)));
        let o = Outgoing::new(Verb::Get, String::new());
        eprintln!(
            "send {}",
            size_of_val(&client.inner.transport.send(
                Endpoint::GetCertification,
                Idempotency::Idempotent,
                &o
            ))
        );
        let f = CertificationSource::lookup(&client, "imp_1");
        eprintln!("boxed lookup {}", size_of_val(&*f));
    }
}
