//! `CertificationSource`: where the layer turns a verification id into a `Certification`.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::certification::Certification;
use crate::error::Error;
use crate::id::InvalidId;

/// A boxed, `Send` future: what [`CertificationSource::lookup`] returns, so sources can be
/// used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves verification ids. [`IamportClient`](crate::IamportClient) (PortOne v1) implements it; implement it to
/// plug in another API version, a cache, or a fixed set of people for tests.
///
/// The layer calls [`validate_id`](Self::validate_id) on every id taken from a request and
/// answers 400 without calling [`lookup`](Self::lookup) when it fails.
pub trait CertificationSource: Send + Sync + 'static {
    /// Names of the request parameter holding the id (query string, JSON or form body), in
    /// order of preference.
    fn id_fields(&self) -> &'static [&'static str] {
        &["imp_uid"]
    }

    /// Whether a query-string pair says the person cancelled or the verification failed
    /// before completing (then the layer answers 400 without a lookup). Default: PortOne v1's
    /// redirect, `success=false` or `imp_success=false`.
    fn is_cancellation(&self, key: &str, value: &str) -> bool {
        (key == "success" || key == "imp_success") && value.eq_ignore_ascii_case("false")
    }

    /// The binding ticket a verification carries: the merchant-chosen id the page passed to
    /// PortOne (see `iamport_tower::binding`). Default: PortOne v1's `merchant_uid`.
    fn binding_ticket<'c>(&self, cert: &'c Certification) -> Option<&'c str> {
        cert.merchant_uid.as_deref()
    }

    /// The binding ticket the request itself carries, if any: a `bound` route refuses a
    /// request whose ticket is not genuine, unexpired and the session's before any lookup
    /// (see `iamport_tower::binding`, "refused before any lookup"). `id` is the request's id,
    /// `query` its query string. Default: PortOne v1's redirect, whose query string carries
    /// the `merchant_uid` the page passed (`?imp_uid=…&merchant_uid=…`); the popup flow's
    /// body carries none the layer reads, and the record's ticket decides after the lookup.
    /// A source that overrides [`binding_ticket`](Self::binding_ticket) overrides this too
    /// (`None` when its requests carry no ticket), or genuine requests may be refused.
    fn request_ticket<'r>(&self, id: &'r str, query: Option<&'r str>) -> Option<Cow<'r, str>> {
        let _ = id;
        form_urlencoded::parse(query?.as_bytes())
            .find(|(key, _)| key == "merchant_uid")
            .map(|(_, value)| value)
    }

    /// Checks an id's syntax before any network call.
    fn validate_id(&self, raw: &str) -> Result<(), InvalidId>;

    /// Fetches the verification for an id that passed [`validate_id`](Self::validate_id).
    ///
    /// The future owns what it needs (clone the client into it): when the request that
    /// started a lookup goes away, the layer finishes the call in a task of its own, so the
    /// requests waiting for the same id — and its cache — still get the answer without a
    /// second call. It must end in bounded time, as the clients' calls do (their total
    /// timeout); a call finished that way is given at most 30 s more, then answers
    /// [`Error::Timeout`].
    fn lookup(&self, id: &str) -> BoxFuture<'static, Result<Certification, Error>>;

    /// A short name for logs and metrics (the `source` label of `iamport_lookups_total`):
    /// `"v1"` for [`IamportClient`](crate::IamportClient), `"v2"` for [`PortOneClient`](crate::PortOneClient).
    /// Default: `"custom"`.
    fn label(&self) -> &'static str {
        "custom"
    }

    /// Gets ready to answer the first request at full speed — for [`IamportClient`](crate::IamportClient), fetches
    /// the access token now, so the first lookup costs one round trip, not two. Call it once
    /// at startup; the token is then shared by every lookup until it is renewed. Default:
    /// nothing to do.
    fn warm_up(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    /// Where this source announces deleted verifications, so the layers' lookup caches built
    /// over it forget them (see `iamport_tower::cache`). Default: none — a source that
    /// cannot delete records has nothing to announce.
    fn evictions(&self) -> Option<&Evictions> {
        None
    }
}

impl<S: CertificationSource + ?Sized> CertificationSource for Arc<S> {
    fn id_fields(&self) -> &'static [&'static str] {
        (**self).id_fields()
    }

    fn is_cancellation(&self, key: &str, value: &str) -> bool {
        (**self).is_cancellation(key, value)
    }

    fn binding_ticket<'c>(&self, cert: &'c Certification) -> Option<&'c str> {
        (**self).binding_ticket(cert)
    }

    fn request_ticket<'r>(&self, id: &'r str, query: Option<&'r str>) -> Option<Cow<'r, str>> {
        (**self).request_ticket(id, query)
    }

    fn validate_id(&self, raw: &str) -> Result<(), InvalidId> {
        (**self).validate_id(raw)
    }

    fn lookup(&self, id: &str) -> BoxFuture<'static, Result<Certification, Error>> {
        (**self).lookup(id)
    }

    fn label(&self) -> &'static str {
        (**self).label()
    }

    fn warm_up(&self) -> BoxFuture<'_, Result<(), Error>> {
        (**self).warm_up()
    }

    fn evictions(&self) -> Option<&Evictions> {
        (**self).evictions()
    }
}

/// Where a [`CertificationSource`] announces that a verification is gone, so the lookup
/// caches of the layers built over it forget it. [`IamportClient`](crate::IamportClient)
/// holds one (shared by its clones) and evicts after every
/// [`delete_certification`](crate::IamportClient::delete_certification); a source of your own
/// that can delete records returns its own from [`CertificationSource::evictions`].
#[derive(Default)]
pub struct Evictions {
    caches: Mutex<Vec<Weak<dyn Evict>>>,
}

/// A cache that can forget an id (the layer's lookup cache).
#[doc(hidden)]
pub trait Evict: Send + Sync {
    /// Forgets `id`.
    fn evict(&self, id: &str);
}

impl fmt::Debug for Evictions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evictions")
            .field("caches", &self.lock().len())
            .finish()
    }
}

impl Evictions {
    /// No cache registered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets `id` in every cache built over this source, and keeps lookups of any id that
    /// were in flight meanwhile from being kept. Call it once the record is gone upstream.
    pub async fn evict(&self, id: &str) {
        let live: Vec<Arc<dyn Evict>> = {
            let mut caches = self.lock();
            caches.retain(|cache| cache.strong_count() > 0);
            caches.iter().filter_map(Weak::upgrade).collect()
        };
        for cache in live {
            cache.evict(id);
        }
    }

    /// A cache built over this source, to tell about evictions while it lives.
    #[doc(hidden)]
    pub fn register(&self, cache: Weak<dyn Evict>) {
        let mut caches = self.lock();
        caches.retain(|cache| cache.strong_count() > 0);
        caches.push(cache);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Evict>>> {
        self.caches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
