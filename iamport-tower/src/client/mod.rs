//! `IamportClient`: the PortOne v1 REST client (token cache, timeouts, retries).
//!
//! ```no_run
//! # async fn run() -> Result<(), iamport_tower::Error> {
//! use iamport_tower::{IamportClient, ImpUid};
//!
//! // IMP_KEY, IMP_SECRET and optionally IAMPORT_API_URL.
//! let client = IamportClient::from_env()?;
//! let id: ImpUid = "imp_123456789012".parse()?;
//! let cert = client.certification(&id).await?;
//! println!("verified: {}, born {:?}", cert.certified, cert.birth_date.map(|d| d.year()));
//! # Ok(()) }
//! ```

mod retry;
mod token;
pub(crate) mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

mod imp_uid;

pub use self::imp_uid::{ImpUid, InvalidId, MAX_IMP_UID_LEN};
pub use self::retry::RetryPolicy;
pub(crate) use self::retry::{Answer, Transport, TransportOptions};
use self::token::{IssuedToken, TokenCache};
use self::wire::{Envelope, TokenResponse, V1Certification, error_message};
use crate::certification::Certification;
use crate::error::Error;

use crate::secret::Secret;

/// PortOne's production v1 API.
pub const DEFAULT_API_URL: &str = "https://api.iamport.kr";

/// Characters escaped in a path segment: everything but RFC 3986's unreserved characters.
pub(crate) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as exactly one percent-encoded URL path segment.
pub(crate) fn path_segment(value: &str) -> String {
    let encoded = utf8_percent_encode(value, PATH_SEGMENT).to_string();
    // "." and ".." are unreserved yet still mean something in a path.
    match encoded.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => encoded,
    }
}

/// The PortOne v1 REST client. Cheap to clone (one shared connection pool and token cache).
///
/// - **Token:** `POST /users/getToken` once per token lifetime. The token is renewed ahead of
///   expiry, computed from PortOne's own `now`/`expired_at` rather than the local clock, and
///   however many requests need a token at once, only one fetches it. A 401 on a lookup drops
///   the token, fetches a new one and retries once.
/// - **Time:** a connect timeout (default 3 s) and a bound on the whole call, token and
///   retries included (default 10 s) → [`Error::Timeout`].
/// - **Retries:** see [`RetryPolicy`] (default: 2 retries with jittered backoff, on connection
///   errors and 5xx only).
#[derive(Clone)]
pub struct IamportClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    base_url: String,
    key: String,
    secret: Secret,
    tokens: TokenCache,
}

impl fmt::Debug for IamportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamportClient")
            .field("base_url", &self.inner.base_url)
            .field("key", &self.inner.key)
            .field("secret", &self.inner.secret)
            .field("timeout", &self.inner.transport.timeout)
            .field("retry", &self.inner.transport.retry)
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
        &self.inner.base_url
    }

    /// `GET /certifications/{imp_uid}`: the verification result.
    pub async fn certification(&self, imp_uid: &ImpUid) -> Result<Certification, Error> {
        self.inner
            .transport
            .bounded(self.certification_call(Method::GET, imp_uid))
            .await
    }

    /// `DELETE /certifications/{imp_uid}`: removes the record at PortOne (do this once you
    /// stored what you need, to keep less personal data around) and returns it.
    pub async fn delete_certification(&self, imp_uid: &ImpUid) -> Result<Certification, Error> {
        self.inner
            .transport
            .bounded(self.certification_call(Method::DELETE, imp_uid))
            .await
    }

    async fn certification_call(
        &self,
        method: Method,
        imp_uid: &ImpUid,
    ) -> Result<Certification, Error> {
        let url = format!(
            "{}/certifications/{}",
            self.inner.base_url,
            path_segment(imp_uid.as_str())
        );
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            let mut auth = HeaderValue::from_str(token.expose())
                .map_err(|_| Error::Malformed("the access token is not a valid header".into()))?;
            auth.set_sensitive(true);
            let Answer { status, body } = self
                .inner
                .transport
                .send(|http| {
                    http.request(method.clone(), &url)
                        .header(AUTHORIZATION, auth.clone())
                })
                .await?;
            match status {
                StatusCode::OK => {
                    return Envelope::<V1Certification>::decode_success(&body)?
                        .into_certification();
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
                        message: error_message(&body),
                    });
                }
            }
        }
    }

    async fn token(&self) -> Result<Secret, Error> {
        self.inner.tokens.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<IssuedToken, Error> {
        let url = format!("{}/users/getToken", self.inner.base_url);
        let credentials = serde_json::json!({
            "imp_key": self.inner.key,
            "imp_secret": self.inner.secret.expose(),
        });
        let requested_at = tokio::time::Instant::now();
        let Answer { status, body } = self
            .inner
            .transport
            .send(|http| http.post(&url).json(&credentials))
            .await?;
        match status {
            StatusCode::OK => {
                let token = Envelope::<TokenResponse>::decode_success(&body)?;
                tracing::debug!("fetched a PortOne access token");
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

/// Configures an [`IamportClient`]. Every setting has a documented default.
#[must_use]
pub struct IamportClientBuilder {
    key: Option<String>,
    secret: Option<Secret>,
    base_url: String,
    transport: TransportOptions,
    renew_before: Duration,
}

impl Default for IamportClientBuilder {
    fn default() -> Self {
        Self {
            key: None,
            secret: None,
            base_url: DEFAULT_API_URL.into(),
            transport: TransportOptions::default(),
            renew_before: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for IamportClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamportClientBuilder")
            .field("key", &self.key)
            .field("secret", &self.secret)
            .field("base_url", &self.base_url)
            .field("transport", &self.transport)
            .field("renew_before", &self.renew_before)
            .finish_non_exhaustive()
    }
}

impl IamportClientBuilder {
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

    /// The API base URL (default [`DEFAULT_API_URL`]); e.g. the emulator's.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Reads `IMP_KEY`, `IMP_SECRET` and `IAMPORT_API_URL` (each only if set).
    pub fn from_env(mut self) -> Result<Self, Error> {
        fn var(name: &str) -> Result<Option<String>, Error> {
            match std::env::var(name) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
                Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(Error::Config(format!("{name} is not valid UTF-8")))
                }
            }
        }
        if let Some(key) = var("IMP_KEY")? {
            self.key = Some(key);
        }
        if let Some(secret) = var("IMP_SECRET")? {
            self.secret = Some(Secret::new(secret));
        }
        if let Some(url) = var("IAMPORT_API_URL")? {
            self.base_url = url;
        }
        Ok(self)
    }

    /// Time allowed to open a TCP/TLS connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.transport.connect_timeout = timeout;
        self
    }

    /// Bound on one whole call — token, lookup and every retry (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.transport.retry = retry;
        self
    }

    /// How long before its expiry a token is renewed (default 60 s — PortOne extends a token
    /// asked for in its last minute; capped at half the token's lifetime).
    pub fn renew_before(mut self, ahead: Duration) -> Self {
        self.renew_before = ahead;
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
        let base_url = normalize_base_url(&self.base_url)?;
        let transport = self.transport.build()?;
        Ok(IamportClient {
            inner: Arc::new(Inner {
                transport,
                base_url,
                key,
                secret,
                tokens: TokenCache::new(self.renew_before),
            }),
        })
    }
}

/// Checks an API base URL and drops a trailing slash.
pub(crate) fn normalize_base_url(url: &str) -> Result<String, Error> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::Config(format!("the API URL is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
        return Err(Error::Config("the API URL must be an http(s) URL".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::Config(
            "the API URL must not have a query or fragment".into(),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(path_segment("imp_1/../x"), "imp_1%2F..%2Fx");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(path_segment("order-1.2_x~"), "order-1.2_x~");
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
