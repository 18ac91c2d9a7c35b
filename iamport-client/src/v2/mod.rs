//! `PortOneClient`: the PortOne v2 identity-verification client, a second
//! [`CertificationSource`] next to the v1 [`IamportClient`](crate::IamportClient).
//!
//! PortOne's current API (v2) replaces `imp_uid` with a merchant-chosen
//! `identityVerificationId` and authenticates with the API secret itself (`Authorization:
//! PortOne <secret>`): no token to fetch. Behind the layer (`iamport_tower::CertificationLayer`)
//! it is a drop-in: the same [`Certification`], the same policies and the same macro, with
//! the id read from `identityVerificationId` (or `identity_verification_id`).
//!
//! ```no_run
//! # async fn run() -> Result<(), iamport_client::Error> {
//! use iamport_client::PortOneClient;
//! use iamport_client::v2::IdentityVerificationId;
//!
//! // PORTONE_API_SECRET, optional PORTONE_STORE_ID and PORTONE_API_URL.
//! let client = PortOneClient::from_env()?;
//! let id = IdentityVerificationId::parse("signup-2026-0001")?;
//! let person = client.identity_verification(&id).await?;
//! println!("verified: {}", person.certified);
//! # Ok(()) }
//! ```

mod id;
mod wire;

use std::fmt;
use std::sync::Arc;

use http::StatusCode;

pub use self::id::{IdentityVerificationId, MAX_IDENTITY_VERIFICATION_ID_LEN};
use self::wire::ErrorBody;
use crate::certification::Certification;
use crate::client::{
    Answer, Idempotency, Outgoing, Transport, TransportOptions, Verb, path_segment,
    transport_setters,
};
use crate::error::Error;
use crate::id::InvalidId;
use crate::metrics::Endpoint;
use crate::secret::Secret;
use crate::secret::env_var;
use crate::source::{BoxFuture, CertificationSource};

/// PortOne's production v2 API.
pub const DEFAULT_V2_API_URL: &str = "https://api.portone.io";

/// The PortOne v2 client. Cheap to clone. The same transport as
/// [`IamportClient`](crate::IamportClient) — connect 3 s, whole call 10 s, 2 jittered retries
/// on connection errors and 5xx (none on 4xx) within a [`RetryBudget`](crate::client::RetryBudget),
/// answers capped at 1 MiB — and the same tolerant reading: a field that cannot be read is
/// unknown (WARN naming it), a record for another id is refused.
#[derive(Clone)]
pub struct PortOneClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    authorization: Secret,
    store_id: Option<String>,
}

impl fmt::Debug for PortOneClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortOneClient")
            .field("secret", &self.inner.authorization)
            .field("store_id", &self.inner.store_id)
            .field("transport", &self.inner.transport)
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
        Self::builder().from_env()?.build()
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.inner.transport.base_url
    }

    /// `GET /identity-verifications/{id}`: `VERIFIED` gives a certified
    /// [`Certification`]; `READY`, `FAILED` and statuses this version does not know give one
    /// with `certified == false`.
    ///
    /// (A function returning the call rather than an `async fn`, which would keep its
    /// arguments beside the call in every lookup's state.)
    pub fn identity_verification<'a>(
        &'a self,
        id: &'a IdentityVerificationId,
    ) -> impl Future<Output = Result<Certification, Error>> + Send + 'a {
        self.inner.transport.bounded(self.fetch(id))
    }

    async fn fetch(&self, id: &IdentityVerificationId) -> Result<Certification, Error> {
        let segment = path_segment(id.as_str())?;
        let url = self.inner.transport.url(&match &self.inner.store_id {
            Some(store) => {
                let store: String = form_urlencoded::byte_serialize(store.as_bytes()).collect();
                format!("/identity-verifications/{segment}?storeId={store}")
            }
            None => format!("/identity-verifications/{segment}"),
        });
        let mut auth =
            http::HeaderValue::from_str(&format!("PortOne {}", self.inner.authorization.expose()))
                .map_err(|_| Error::Config("the API secret is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let Answer { status, body } = self
            .inner
            .transport
            .send(
                Endpoint::GetIdentityVerification,
                Idempotency::Idempotent,
                &Outgoing::new(Verb::Get, url).authorization(auth),
            )
            .await?;
        if status == StatusCode::OK {
            return wire::certification(&body, id.as_str());
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        match status {
            StatusCode::NOT_FOUND => Err(Error::NotFound),
            StatusCode::UNAUTHORIZED => Err(Error::BadApiSecret),
            status => Err(Error::UpstreamStatus {
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

    fn label(&self) -> &'static str {
        "v2"
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

    /// The request's id is its ticket: a `bound` route checks it before the lookup.
    fn request_ticket<'r>(
        &self,
        id: &'r str,
        _query: Option<&'r str>,
    ) -> Option<std::borrow::Cow<'r, str>> {
        Some(std::borrow::Cow::Borrowed(id))
    }

    fn validate_id(&self, raw: &str) -> Result<(), InvalidId> {
        IdentityVerificationId::parse(raw).map(drop)
    }

    fn lookup(&self, id: &str) -> BoxFuture<'static, Result<Certification, Error>> {
        match IdentityVerificationId::parse(id) {
            Ok(id) => {
                let client = self.clone();
                Box::pin(async move { client.identity_verification(&id).await })
            }
            Err(invalid) => Box::pin(std::future::ready(Err(invalid.into()))),
        }
    }
}

/// Configures a [`PortOneClient`]. The transport settings (URL, timeouts, retries, body
/// limit) are the same methods, with the same defaults, as on
/// [`IamportClientBuilder`](crate::client::IamportClientBuilder).
#[must_use]
pub struct PortOneClientBuilder {
    secret: Option<Secret>,
    store_id: Option<String>,
    transport: TransportOptions,
}

impl Default for PortOneClientBuilder {
    fn default() -> Self {
        Self {
            secret: None,
            store_id: None,
            transport: TransportOptions::new(DEFAULT_V2_API_URL),
        }
    }
}

impl fmt::Debug for PortOneClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortOneClientBuilder")
            .field("secret", &self.secret)
            .field("store_id", &self.store_id)
            .field("transport", &self.transport)
            .finish()
    }
}

impl PortOneClientBuilder {
    transport_setters!();

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

    /// Reads `PORTONE_API_SECRET`, `PORTONE_STORE_ID` and `PORTONE_API_URL`, each only if set
    /// and not blank; a value that is not UTF-8 is an [`Error::Config`] (as for
    /// [`IamportClientBuilder::from_env`](crate::client::IamportClientBuilder::from_env)).
    pub fn from_env(mut self) -> Result<Self, Error> {
        if let Some(secret) = env_var("PORTONE_API_SECRET")? {
            self.secret = Some(Secret::new(secret));
        }
        if let Some(store) = env_var("PORTONE_STORE_ID")? {
            self.store_id = Some(store);
        }
        if let Some(url) = env_var("PORTONE_API_URL")? {
            self.transport.base_url = url;
        }
        Ok(self)
    }

    /// Builds the client; fails when the secret is missing or the URL is not http(s).
    pub fn build(self) -> Result<PortOneClient, Error> {
        let secret = self.secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::Config("the v2 API secret (PORTONE_API_SECRET) is not set".into())
        })?;
        Ok(PortOneClient {
            inner: Arc::new(Inner {
                transport: self.transport.build()?,
                authorization: secret,
                store_id: self.store_id,
            }),
        })
    }
}
