//! `CertificationLayer`: finds the verification id of each request and records it as a lazy
//! [`Verification`] in the request extensions; guards look it up only when they run.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Json, Router, routing::post};
//! use iamport_tower::{CertificationLayer, Certified, require_certified};
//!
//! #[require_certified(max_birth_year = 1999)]
//! async fn signup(cert: Certified) -> Json<bool> {
//!     Json(cert.foreigner == Some(true))
//! }
//!
//! # let emulator = iamport_mock::Emulator::start().await?;
//! # let client = emulator.client();
//! let app: Router = Router::new()
//!     .route("/certifications", post(signup))
//!     .layer(CertificationLayer::new(client));
//! # Ok(()) }
//! ```

mod future;
mod service;
mod verification;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tower_layer::Layer;

pub use self::future::ResponseFuture;
pub use self::service::CertificationService;
use self::verification::Asked;
pub(crate) mod reservation;
use self::reservation::UniqueConfig;
pub use self::reservation::{
    COMMIT_ATTEMPTS, COMMIT_ATTEMPTS_BEFORE_RESPONSE, UniqueCounters, UniqueTasks,
};
pub use self::verification::Verification;
pub(crate) use self::verification::refuse;
use crate::binding::Binding;
use crate::budget::BodyBudget;
pub use crate::cache::Outcome;
use crate::cache::{LookupCache, Lookups};
use crate::rejection::{Rejection, RejectionHandler, RejectionRenderer};
use crate::unique::{MemoryStore, StoreKeys, UniqueStore};
use iamport_client::source::CertificationSource;

/// The default limit on a body read to find the id: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The default time a body read to find the id may take to arrive: 10 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default budget of body bytes the layer may hold buffered across all requests at once:
/// 16 MiB (256 bodies at the default limit).
pub const DEFAULT_BODY_BUDGET: usize = 16 * 1024 * 1024;

/// Finds the PortOne verification id of every request that passes through, and looks it up
/// when — and only when — a guard asks.
///
/// For each request it
/// 1. finds the id: in the query string (`?imp_uid=…`, the redirect flow; `success=false`
///    or `imp_success=false` there means the person cancelled) and in the body when it is
///    JSON or `application/x-www-form-urlencoded` (the popup flow) — the body is read even
///    when the query names the id, since the handler's `Json`/`Form` would read the body's.
///    An id named twice — in the query and the body, or under both of v2's spellings
///    (`identityVerificationId`, `identity_verification_id`) — with different values is a 400
///    `ambiguous-verification-id`; with the same value it is one id. Other bodies are never
///    read.
/// 2. reads such a body only up to the limit (default 64 KiB), within the body timeout
///    (default 10 s) and within the layer's budget across all requests (default 16 MiB, see
///    [Memory](#memory)), and hands the inner service the exact same bytes, so the handler's
///    own `Json`/`Form` extractors work. The id is parsed strictly, so the layer and the
///    handler can never read two different ids: a repeated id field, trailing bytes after the
///    JSON value, a JSON value that is not an object, or invalid UTF-8 is a 400
///    `malformed-body`. A body labelled JSON that is not JSON but a form with exactly one id
///    field (what PortOne's published jQuery snippet sends) is read as that form. A body
///    declared or found to be larger than the limit is not read further (413); one that does
///    not arrive in time is dropped (408); one that does not fit in the budget is not read
///    (503 `busy`). Any of these refuses the request even when the query names an id: the
///    unread body might name another. (With [`query_only`](Self::query_only) bodies are never
///    read: a handler there must not take the id from its body.)
/// 3. records a [`Verification`] in the request extensions — and does **not** call PortOne.
///    The first guard that asks (`#[require_certified]`,
///    [`RequireCertifiedLayer`](crate::RequireCertifiedLayer), the
///    [`Certified`](crate::Certified) extractor) triggers the lookup: the id's syntax is
///    checked (a bad one is refused without any network call), then it is resolved through
///    the [`CertificationSource`] — concurrent requests for one id share one upstream call,
///    and a `certified` answer is kept for 60 s (see [`lookup_cache`](Self::lookup_cache)).
///
/// The layer itself never refuses a request, and a request no guard looks at never reaches
/// PortOne: the layer may sit in front of a whole router (404s, 405s, unguarded pages) at the
/// cost of a look at a few headers (the query string is parsed when a guard asks, or at once
/// when a JSON/form body could carry the id instead, or a [`binding`](Self::binding) needs
/// to know whether there is an id to bind). `HEAD`, `OPTIONS` and loads that say they are
/// speculative (`Sec-Purpose: prefetch`, `Purpose: prefetch`, `X-Moz: prefetch`,
/// `X-Purpose: preview`) are never admitted by a guard (403 `speculative-request`, no
/// lookup, no reservation). A preview that says nothing is a `GET` like any other: an
/// unbound `GET` route can be consumed by anything that follows the link — bind it.
///
/// # Memory
///
/// A request waiting for PortOne holds, besides what its handler would hold anyway, the
/// layer's record of it (its [`Verification`], about 200 bytes), its place in the lookup
/// (about 100 bytes in the guard's future) and, for the one request per id that makes the
/// call, the call's own state (about 550 bytes, boxed behind [`CertificationSource`]; a
/// hand-written call holds the same) and its entry among the calls in flight. Measured with
/// the committed harness (`iamport-bench`: the app alone, 1 000 requests in flight, each for
/// another id, heap counted), that is 0.94 MiB per 1 000 requests over the same call made by
/// hand, with the layer around the app. On a route (`MethodRouter::layer`, or
/// `Router::layer`, which layers each route) axum adds 0.31 MiB per 1 000 for any layer: it
/// boxes the layered route's future, the route's own inside. The lookup cache adds nothing
/// per request (moka's tables take about 80 KB once).
///
/// Each buffered body is bounded on its own (the limit, the timeout); their sum is bounded by
/// the layer's [`body_budget`](Self::body_budget) (default [`DEFAULT_BODY_BUDGET`], 16 MiB),
/// shared by the layer's clones and the services they made. A body reserves its share before
/// it is read: its `Content-Length` whole, at once — so a refusal comes at once, not after
/// part of the body arrived — or, for a chunked body without one, its bytes as they arrive.
/// A body whose share does not fit is not read: guards answer 503 `busy` with `Retry-After`
/// (the body timeout, by which every body held now has arrived or been dropped), and the
/// connection is closed with the answer. The share is given back when the body's buffer is
/// dropped — once the handler has consumed the request, or the request ends.
///
/// The budget counts body bytes; the allocator and hyper's own read buffer come on top.
/// Measured (`cargo run --release -p iamport-bench --bin held-bodies`: the app alone, its
/// resident memory with N connections each holding 65 000 bytes of a 65 536-byte JSON body,
/// the default layer with a 5-minute body timeout, 2 cores, five runs each): 2 000
/// connections 50–53 MiB (256 held, 1 744 answered 503 at once), 10 000 connections 46–84
/// MiB, median 62 (9 744 answered 503) — 41–47 MiB of it what 10 000 such connections cost
/// with a `text/plain` body the layer never reads — against 293 MiB and 1 424 MiB without a
/// budget. Memory freed after the clients go
/// is kept by the allocator for reuse, not returned: it stays at the peak, which the budget
/// bounds. The budget turns a memory exhaustion into 503s for body-carrying requests while it
/// lasts: limit connections per client in front of the app (a proxy) so that one client
/// cannot hold all of it.
///
/// The inner service receives `Request<iamport_tower::body::Body>`: the layer must be able to
/// put back bytes it read, which hyper's `Incoming` cannot carry. A stack that only uses the
/// redirect flow can keep its own body type with [`query_only`](CertificationLayer::query_only).
pub struct CertificationLayer<M = ReadBodies> {
    shared: Arc<Shared>,
    mode: PhantomData<fn() -> M>,
}

/// Mode of [`CertificationLayer`] (the default): the id may come from the query string or a
/// JSON/form body, and the inner service receives `Request<iamport_tower::body::Body>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadBodies;

/// Mode of [`CertificationLayer::query_only`]: the id comes from the query string only (the
/// redirect flow); bodies are never touched, so the inner service receives the request
/// exactly as it came, body type included (`Request<hyper::body::Incoming>`, …).
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryOnly;

impl<M> Clone for CertificationLayer<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            mode: PhantomData,
        }
    }
}

pub(crate) struct Shared {
    body_limit: usize,
    body_timeout: Duration,
    body_budget: Arc<BodyBudget>,
    binding: Option<Binding>,
    renderer: Option<RejectionRenderer>,
    pub(super) unique: Arc<UniqueConfig>,
    lookups: Lookups,
}

/// The default lease of a `unique` reservation: how long a handler may take before another
/// request for the same person may try again.
pub const DEFAULT_UNIQUE_LEASE: Duration = Duration::from_secs(60);

impl<M> fmt::Debug for CertificationLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificationLayer")
            .field("id_fields", &self.shared.source().id_fields())
            .field("lookup_cache", &self.shared.lookups.settings())
            .field("body_limit", &self.shared.body_limit)
            .field("body_timeout", &self.shared.body_timeout)
            .field("body_budget", &self.shared.body_budget)
            .field("binding", &self.shared.binding)
            .field("custom_rejections", &self.shared.renderer.is_some())
            .field("mode", &std::any::type_name::<M>())
            .finish_non_exhaustive()
    }
}

impl CertificationLayer {
    /// A layer resolving ids through `source` (usually an [`IamportClient`](crate::IamportClient)).
    pub fn new(source: impl CertificationSource) -> Self {
        Self::from_shared_source(Arc::new(source))
    }

    /// A layer over a source that is already shared.
    pub fn from_shared_source(source: Arc<dyn CertificationSource>) -> Self {
        Self {
            shared: Arc::new(Shared {
                lookups: Lookups::new(source, LookupCache::default()),
                body_limit: DEFAULT_BODY_LIMIT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                body_budget: BodyBudget::new(DEFAULT_BODY_BUDGET),
                binding: None,
                renderer: None,
                unique: Arc::new(UniqueConfig {
                    store: Arc::new(MemoryStore::new()),
                    keys: StoreKeys::random(),
                    lease: DEFAULT_UNIQUE_LEASE,
                    timeout: crate::unique::DEFAULT_STORE_TIMEOUT,
                    #[cfg(feature = "postgres")]
                    record: None,
                    tasks: Arc::default(),
                    counters: Arc::default(),
                }),
            }),
            mode: PhantomData,
        }
    }

    /// Looks for the id in the query string only and passes requests through unchanged,
    /// body type included — for hyper or tower stacks whose handlers take
    /// `Request<Incoming>` and use PortOne's redirect flow. JSON/form bodies are not read
    /// (a popup flow POST without `?imp_uid=` is refused with 400 by the guard).
    pub fn query_only(self) -> CertificationLayer<QueryOnly> {
        CertificationLayer {
            shared: self.shared,
            mode: PhantomData,
        }
    }
}

impl<M> CertificationLayer<M> {
    fn shared_mut(&mut self) -> &mut Shared {
        // Configuration happens before the layer is cloned into services.
        if Arc::get_mut(&mut self.shared).is_none() {
            let s = &self.shared;
            self.shared = Arc::new(Shared {
                lookups: Lookups::new(s.source().clone(), s.lookups.settings()),
                body_limit: s.body_limit,
                body_timeout: s.body_timeout,
                body_budget: s.body_budget.clone(),
                binding: s.binding.clone(),
                renderer: s.renderer.clone(),
                unique: s.unique.clone(),
            });
        }
        Arc::get_mut(&mut self.shared).expect("just made unique")
    }

    /// The most bytes of a JSON or form body read to find the id (default
    /// [`DEFAULT_BODY_LIMIT`]).
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.shared_mut().body_limit = bytes;
        self
    }

    /// How long a JSON or form body read to find the id may take to arrive (default
    /// [`DEFAULT_BODY_TIMEOUT`]). A body still incomplete then is dropped — its memory freed —
    /// and guards answer 408 `body-timeout`; an unguarded inner service sees a body that
    /// fails.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.shared_mut().body_timeout = timeout;
        self
    }

    /// The most body bytes this layer (with its clones and the services they made) may hold
    /// buffered at once, across all requests (default [`DEFAULT_BODY_BUDGET`], 16 MiB). See
    /// [the layer's docs](Self#memory) for how a body takes its share and what a client gets
    /// when the budget is spent (503 `busy` with `Retry-After`, at once).
    #[must_use]
    pub fn body_budget(mut self, bytes: usize) -> Self {
        self.shared_mut().body_budget = BodyBudget::new(bytes);
        self
    }

    /// The body bytes this layer's buffers hold now (out of its
    /// [`body_budget`](Self::body_budget)): for a gauge, or a test.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.body_budget.in_use()
    }

    /// Checks `bound = true` policies with these tickets: the layer records each request's
    /// session key (the binding cookie, or the application's session id) so a guard can tell
    /// whether the verification's ticket was minted for this session. See [`binding`](crate::binding).
    /// Without it, a `bound` route refuses everything with 500 and an error log.
    #[must_use]
    pub fn binding(mut self, binding: Binding) -> Self {
        self.shared_mut().binding = Some(binding);
        self
    }

    /// How long resolved verifications are kept, so repeated requests for one id cost one
    /// upstream call (default [`LookupCache::default`]: `certified` records 60 s, "not found"
    /// 3 s, errors never, at most 10 000 ids). See [`cache`](crate::cache) for the
    /// trade-offs; [`LookupCache::disabled`] keeps nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use iamport_tower::{CertificationLayer, cache::LookupCache};
    ///
    /// # fn layer(client: iamport_tower::IamportClient) -> CertificationLayer {
    /// CertificationLayer::new(client)
    ///     .lookup_cache(LookupCache::default().verified_for(Duration::from_secs(30)))
    /// # }
    /// ```
    #[must_use]
    pub fn lookup_cache(mut self, settings: LookupCache) -> Self {
        let shared = self.shared_mut();
        shared.lookups = Lookups::new(shared.source().clone(), settings);
        self
    }

    /// Where `unique = true` policies reserve people, and the keys they are known by
    /// (HMAC-SHA256 of the CI under your secret — [`StoreKeys::from_env`] reads
    /// `UNIQUE_KEY_SECRET`; see [`unique`](crate::unique)). The default is a [`MemoryStore`]
    /// with a random secret: correct for one process.
    ///
    /// With a `PostgresStore` (also behind an `Arc<dyn
    /// UniqueStore>`), handlers can record the account's key in their own transaction with
    /// `Certified::record_account`.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run(client: iamport_tower::IamportClient, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// use iamport_tower::CertificationLayer;
    /// use iamport_tower::unique::{PostgresStore, StoreKeys};
    ///
    /// let layer = CertificationLayer::new(client)
    ///     .unique_store(PostgresStore::new(pool), StoreKeys::from_env()?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn unique_store<S: UniqueStore>(mut self, store: S, keys: StoreKeys) -> Self {
        let unique = Arc::make_mut(&mut self.shared_mut().unique);
        #[cfg(feature = "postgres")]
        {
            unique.record = store.account_statement();
        }
        unique.store = Arc::new(store);
        unique.keys = keys;
        self
    }

    /// How long a `unique` reservation lasts if it is neither committed nor released — the
    /// most a guarded handler may take (default [`DEFAULT_UNIQUE_LEASE`]).
    #[must_use]
    pub fn unique_lease(mut self, lease: Duration) -> Self {
        Arc::make_mut(&mut self.shared_mut().unique).lease = lease;
        self
    }

    /// The most one unique store call may take (default
    /// [`DEFAULT_STORE_TIMEOUT`](crate::unique::DEFAULT_STORE_TIMEOUT)): past it admission is
    /// a 503, and a commit is retried in the background (see [`unique`](crate::unique)).
    #[must_use]
    pub fn unique_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.shared_mut().unique).timeout = timeout;
        self
    }

    /// This layer's unique fault counters so far (shared with its clones and the services
    /// they made): what operators alert on, also recorded as `metrics` counters.
    pub fn unique_counters(&self) -> UniqueCounters {
        self.shared.unique.counters.snapshot()
    }

    /// The commit, release and retry tasks of this layer's `unique` reservations (shared
    /// with its clones and the services they made): how many are running, and a future that
    /// waits for them at shutdown. See [`unique`](crate::unique#shutdown).
    pub fn unique_tasks(&self) -> UniqueTasks {
        UniqueTasks(self.shared.unique.tasks.clone())
    }

    /// Resolves once every commit, release and retry task started by this layer (its clones,
    /// and the services they made) has finished — [`UniqueTasks::settled`]. Await it, bounded
    /// by a timeout, after a graceful shutdown: reservations of failed signups are then
    /// released rather than left to their lease. The future owns what it needs, so it may be
    /// made before the layer is moved into a router.
    ///
    /// ```no_run
    /// # async fn run(client: iamport_tower::IamportClient, listener: tokio::net::TcpListener)
    /// # -> std::io::Result<()> {
    /// # let shutdown = std::future::pending::<()>();
    /// use std::time::Duration;
    /// use iamport_tower::CertificationLayer;
    ///
    /// let layer = CertificationLayer::new(client);
    /// let settled = layer.settled();
    /// let app: axum::Router = axum::Router::new().layer(layer);
    /// axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    /// let _ = tokio::time::timeout(Duration::from_secs(10), settled).await;
    /// # Ok(()) }
    /// ```
    pub fn settled(&self) -> impl Future<Output = ()> + Send + use<M> {
        self.unique_tasks().settled()
    }

    /// Renders every rejection of the routes behind this layer with `handler` instead of the
    /// default problem+json ([`Rejection::problem_response`]).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Response;
    /// use iamport_tower::{CertificationLayer, Rejection};
    ///
    /// # fn layer(client: iamport_tower::IamportClient) -> CertificationLayer {
    /// CertificationLayer::new(client).on_rejection(|rejection: &Rejection| {
    ///     let body = format!(r#"{{"ok":false,"error":"{}"}}"#, rejection.code());
    ///     Response::builder()
    ///         .status(rejection.status())
    ///         .header("content-type", "application/json")
    ///         .body(Bytes::from(body))
    ///         .unwrap()
    /// })
    /// # }
    /// ```
    #[must_use]
    pub fn on_rejection<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
    {
        let handler: RejectionHandler = Arc::new(handler);
        self.shared_mut().renderer = Some(RejectionRenderer(handler));
        self
    }
}

impl<S, M> Layer<S> for CertificationLayer<M> {
    type Service = CertificationService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        CertificationService::new(inner, self.shared.clone())
    }
}

impl Shared {
    /// Puts what the layer found into the extensions: the lazy [`Verification`]. `id` is what
    /// the layer read — the one id of the query string and the body, when it read the body
    /// (`None`: the query string is read when a guard asks). Returns the
    /// verification whose `unique` reservation the response settles, unless the request can
    /// come to hold none.
    pub(crate) fn record(
        self: &Arc<Self>,
        parts: &mut http::request::Parts,
        id: Option<Result<String, Rejection>>,
        speculative: bool,
        query_only: bool,
    ) -> Option<Verification> {
        let asked = Asked::of(parts, query_only);
        // With a binding the id is read now: the session (a cookie, or the app's hook) is
        // only looked for when there is an id to bind.
        let id = match (id, &self.binding) {
            (None, Some(_)) => Some(
                self.id_from_query(parts.uri.query())
                    .unwrap_or(Err(Rejection::MissingId)),
            ),
            (id, _) => id,
        };
        let no_id = matches!(id, Some(Err(_)));
        let session = match &self.binding {
            Some(binding) if !no_id => binding.session_of(parts),
            _ => None,
        };
        // A layer without its own `on_rejection` keeps the one of a layer outside it.
        let renderer = self.renderer.clone().or_else(|| {
            parts
                .extensions
                .get::<Verification>()
                .and_then(|outer| outer.renderer().cloned())
        });
        let verification =
            Verification::new(self.clone(), id, speculative, session, renderer, asked);
        // A speculative request, or one already known to have no id, is never admitted: it
        // holds nothing.
        let held = (!no_id && !speculative).then(|| verification.clone());
        parts.extensions.insert(verification);
        held
    }

    /// Whether `cert`'s ticket was minted for `session` by this layer's binding.
    /// `Err(())` when no binding is configured.
    pub(crate) fn is_bound(
        &self,
        cert: &iamport_client::Certification,
        session: Option<&str>,
    ) -> Result<bool, ()> {
        let binding = self.binding.as_ref().ok_or(())?;
        Ok(match (self.source().binding_ticket(cert), session) {
            (Some(ticket), Some(session)) => binding.verify(ticket, session),
            _ => false,
        })
    }

    pub(crate) fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref()
    }

    pub(crate) fn source(&self) -> &Arc<dyn CertificationSource> {
        self.lookups.source()
    }
}
