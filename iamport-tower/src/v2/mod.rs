//! `PortOneClient`: the PortOne v2 identity-verification client, a second
//! [`CertificationSource`] next to the v1 [`IamportClient`](crate::IamportClient).
//!
//! PortOne's current API (v2) replaces `imp_uid` with a merchant-chosen
//! `identityVerificationId` and authenticates with the API secret itself (`Authorization:
//! PortOne <secret>`): no token to fetch. Behind the layer it is a drop-in: the same
//! [`Certification`], the same policies and the same macro.
//!
//! ```no_run
//! # fn run() -> Result<(), iamport_tower::Error> {
//! use iamport_tower::{CertificationLayer, PortOneClient};
//!
//! // PORTONE_API_SECRET, optional PORTONE_STORE_ID and PORTONE_API_URL.
//! let layer = CertificationLayer::new(PortOneClient::from_env()?);
//! // The layer now reads `identityVerificationId` (or `identity_verification_id`) from the
//! // query string or a JSON/form body.
//! # Ok(()) }
//! ```

mod id;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::AUTHORIZATION;

pub use self::id::{IdentityVerificationId, MAX_IDENTITY_VERIFICATION_ID_LEN};
use self::wire::{ErrorBody, IdentityVerification};
use crate::certification::Certification;
use crate::client::InvalidId;
use crate::client::{
    Answer, RetryPolicy, Transport, TransportOptions, normalize_base_url, path_segment,
};
use crate::error::Error;
use crate::secret::Secret;
use crate::source::{BoxFuture, CertificationSource};

/// PortOne's production v2 API.
pub const DEFAULT_V2_API_URL: &str = "https://api.portone.io";

/// The PortOne v2 client. Cheap to clone. Timeouts and retries as for
/// [`IamportClient`](crate::IamportClient): connect 3 s, whole call 10 s, 2 jittered retries
/// on connection errors and 5xx, none on 4xx.
#[derive(Clone)]
pub struct PortOneClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    base_url: String,
    authorization: Secret,
    store_id: Option<String>,
}

impl fmt::Debug for PortOneClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortOneClient")
            .field("base_url", &self.inner.base_url)
            .field("secret", &self.inner.authorization)
            .field("store_id", &self.inner.store_id)
            .finish_non_exhaustive()
    }
}

impl PortOneClient {
    /// A client for PortOne's production v2 API with this API secret.
    pub fn new(api_secret: impl Into<Secret>) -> Result<Self, Error> {
        Self::builder().secret(api_secret).build()
    }

    /// A builder with default settings; set at least the secret.
    pub fn builder() -> PortOneClientBuilder {
        PortOneClientBuilder::default()
    }

    /// A client from `PORTONE_API_SECRET` (required), `PORTONE_STORE_ID` and
    /// `PORTONE_API_URL` (optional; default [`DEFAULT_V2_API_URL`]).
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut builder = Self::builder();
        if let Some(secret) = var("PORTONE_API_SECRET") {
            builder = builder.secret(secret.trim().to_owned());
        }
        if let Some(store) = var("PORTONE_STORE_ID") {
            builder = builder.store_id(store.trim());
        }
        if let Some(url) = var("PORTONE_API_URL") {
            builder = builder.base_url(url.trim());
        }
        builder.build()
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// `GET /identity-verifications/{id}`: `VERIFIED` gives a certified
    /// [`Certification`]; `READY`, `FAILED` and statuses this version does not know give one
    /// with `certified == false`.
    pub async fn identity_verification(
        &self,
        id: &IdentityVerificationId,
    ) -> Result<Certification, Error> {
        self.inner.transport.bounded(self.fetch(id)).await
    }

    async fn fetch(&self, id: &IdentityVerificationId) -> Result<Certification, Error> {
        let url = format!(
            "{}/identity-verifications/{}",
            self.inner.base_url,
            path_segment(id.as_str())
        );
        let mut auth =
            http::HeaderValue::from_str(&format!("PortOne {}", self.inner.authorization.expose()))
                .map_err(|_| Error::Config("the API secret is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let Answer { status, body } = self
            .inner
            .transport
            .send(|http| {
                let request = http.get(&url).header(AUTHORIZATION, auth.clone());
                match &self.inner.store_id {
                    Some(store) => request.query(&[("storeId", store)]),
                    None => request,
                }
            })
            .await?;
        if status == StatusCode::OK {
            return serde_json::from_slice::<IdentityVerification>(&body)
                .map_err(|e| Error::malformed_json(&e))?
                .into_certification(id.as_str());
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let kind = error.as_ref().and_then(|e| e.kind.as_deref());
        match (status, kind) {
            (StatusCode::NOT_FOUND, _) => Err(Error::NotFound),
            (StatusCode::UNAUTHORIZED, _) => Err(Error::BadCredentials),
            (status, _) => Err(Error::UpstreamStatus {
                status,
                message: error.and_then(|e| match (e.kind, e.message) {
                    (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
                    (kind, message) => kind.or(message),
                }),
            }),
        }
    }
}

impl CertificationSource for PortOneClient {
    fn id_fields(&self) -> &'static [&'static str] {
        &["identityVerificationId", "identity_verification_id"]
    }

    /// PortOne v2's redirect appends `code` (and `message`) when the verification failed or
    /// was cancelled.
    fn is_cancellation(&self, key: &str, _value: &str) -> bool {
        key == "code"
    }

    /// In v2 the merchant chooses the verification's id itself: the ticket *is* the id.
    fn binding_ticket<'c>(&self, cert: &'c Certification) -> Option<&'c str> {
        Some(&cert.id)
    }

    fn validate_id(&self, raw: &str) -> Result<(), InvalidId> {
        IdentityVerificationId::parse(raw).map(drop)
    }

    fn lookup<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Certification, Error>> {
        Box::pin(async move {
            self.identity_verification(&IdentityVerificationId::parse(id)?)
                .await
        })
    }
}

/// Configures a [`PortOneClient`].
#[must_use]
pub struct PortOneClientBuilder {
    secret: Option<Secret>,
    store_id: Option<String>,
    base_url: String,
    transport: TransportOptions,
}

impl Default for PortOneClientBuilder {
    fn default() -> Self {
        Self {
            secret: None,
            store_id: None,
            base_url: DEFAULT_V2_API_URL.into(),
            transport: TransportOptions::default(),
        }
    }
}

impl fmt::Debug for PortOneClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortOneClientBuilder")
            .field("secret", &self.secret)
            .field("store_id", &self.store_id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl PortOneClientBuilder {
    /// The v2 API secret (sent as `Authorization: PortOne <secret>`).
    pub fn secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The store to look in (`?storeId=`); by default the secret's own store.
    pub fn store_id(mut self, store_id: impl Into<String>) -> Self {
        self.store_id = Some(store_id.into());
        self
    }

    /// The API base URL (default [`DEFAULT_V2_API_URL`]); e.g. the emulator's.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Time allowed to open a connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.transport.connect_timeout = timeout;
        self
    }

    /// Bound on one whole call, retries included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.transport.retry = retry;
        self
    }

    /// Builds the client; fails when the secret is missing or the URL is not http(s).
    pub fn build(self) -> Result<PortOneClient, Error> {
        let secret = self.secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::Config("the v2 API secret (PORTONE_API_SECRET) is not set".into())
        })?;
        let base_url = normalize_base_url(&self.base_url)?;
        let transport = self.transport.build()?;
        Ok(PortOneClient {
            inner: Arc::new(Inner {
                transport,
                base_url,
                authorization: secret,
                store_id: self.store_id,
            }),
        })
    }
}
