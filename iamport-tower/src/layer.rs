//! `CertificationLayer`: resolves the verification id of each request into an [`Outcome`]
//! in the request extensions, before the inner service runs.
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

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as HttpBody;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::certification::Certification;
use crate::extract::{Buffered, body_format, buffer, content_length, id_from_body, id_from_query};
use crate::rejection::{Rejection, RejectionHandler, RejectionRenderer};
use crate::secret::Secret;
use crate::single_flight::SingleFlight;
use crate::source::CertificationSource;
use crate::unique::reservation::{UniqueConfig, UniqueSlot};
use crate::unique::{MemoryStore, UniqueKeys, UniqueStore};

/// The default limit on a body read to find the id: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// What the layer found out about a request; read it from the request extensions (the
/// [`Certified`](crate::Certified) extractor and the policy checks do).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// PortOne returned this verification. Policies still decide whether it is enough
    /// (`certified` may be false).
    Verified(Arc<Certification>),
    /// No verification could be had; a guarded handler will be refused with this.
    Refused(Rejection),
}

/// Resolves PortOne verification ids for every request that passes through.
///
/// For each request it
/// 1. finds the id: the query string first (`?imp_uid=…`, the redirect flow; `success=false`
///    or `imp_success=false` there means the person cancelled), else the body when it is JSON
///    or `application/x-www-form-urlencoded` (the popup flow). Other bodies are never read.
/// 2. reads such a body only up to the limit (default 64 KiB) and hands the inner service the
///    exact same bytes, so the handler's own `Json`/`Form` extractors work. A body declared or
///    found to be larger is not read further; its outcome is a 413 rejection, and the body is
///    passed on untouched (unguarded routes behind the same layer keep working).
/// 3. checks the id's syntax (a bad one is refused without any network call), then looks it
///    up through the [`CertificationSource`] — concurrent requests for one id share one
///    upstream call — and stores the [`Outcome`] in the request extensions.
///
/// The layer itself never refuses a request: `#[require_certified]`,
/// [`RequireCertifiedLayer`](crate::RequireCertifiedLayer) and the
/// [`Certified`](crate::Certified) extractor do, from the outcome. Requests without an id cost
/// nothing beyond a look at the query string and `Content-Type`.
///
/// The inner service receives `Request<iamport_tower::body::Body>`: the layer
/// must be able to put back bytes it read, which hyper's `Incoming` cannot carry. A stack that
/// only uses the redirect flow can keep its own body type with
/// [`query_only`](CertificationLayer::query_only).
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

struct Shared {
    source: Arc<dyn CertificationSource>,
    body_limit: usize,
    renderer: Option<RejectionRenderer>,
    unique: Arc<UniqueConfig>,
    lookups: SingleFlight<Outcome>,
}

/// The default lease of a `unique` reservation: how long a handler may take before another
/// request for the same person may try again.
pub const DEFAULT_UNIQUE_LEASE: Duration = Duration::from_secs(60);

impl<M> fmt::Debug for CertificationLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificationLayer")
            .field("id_fields", &self.shared.source.id_fields())
            .field("body_limit", &self.shared.body_limit)
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
                source,
                body_limit: DEFAULT_BODY_LIMIT,
                renderer: None,
                unique: Arc::new(UniqueConfig {
                    store: Arc::new(MemoryStore::new()),
                    keys: UniqueKeys::random(),
                    lease: DEFAULT_UNIQUE_LEASE,
                }),
                lookups: SingleFlight::new(),
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
                source: s.source.clone(),
                body_limit: s.body_limit,
                renderer: s.renderer.clone(),
                unique: s.unique.clone(),
                lookups: SingleFlight::new(),
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

    /// Where `unique = true` policies reserve people, and the secret that keys them
    /// (HMAC-SHA256 of the CI; keep it stable and secret — see [`unique`](crate::unique)).
    /// The default is a [`MemoryStore`] with a random secret: correct for one process.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn run(client: iamport_tower::IamportClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use iamport_tower::{CertificationLayer, unique::PostgresStore};
    ///
    /// let store = PostgresStore::new(&std::env::var("DATABASE_URL")?)?;
    /// let layer = CertificationLayer::new(client)
    ///     .unique_store(store, std::env::var("UNIQUE_KEY_SECRET")?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn unique_store(mut self, store: impl UniqueStore, key_secret: impl Into<Secret>) -> Self {
        let unique = Arc::make_mut(&mut self.shared_mut().unique);
        unique.store = Arc::new(store);
        unique.keys = UniqueKeys::new(&key_secret.into());
        self
    }

    /// How long a `unique` reservation lasts if it is neither committed nor released — the
    /// most a guarded handler may take (default [`DEFAULT_UNIQUE_LEASE`]).
    #[must_use]
    pub fn unique_lease(mut self, lease: Duration) -> Self {
        Arc::make_mut(&mut self.shared_mut().unique).lease = lease;
        self
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
        CertificationService {
            inner,
            shared: self.shared.clone(),
            mode: PhantomData,
        }
    }
}

/// The service made by [`CertificationLayer`].
pub struct CertificationService<S, M = ReadBodies> {
    inner: S,
    shared: Arc<Shared>,
    mode: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for CertificationService<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            mode: PhantomData,
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for CertificationService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificationService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type Preparing<R> = Pin<Box<dyn Future<Output = (R, Option<UniqueSlot>)> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for CertificationService<S, ReadBodies>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone may not be ready; the original is. Keep the clone, use the original.
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let fields = shared.source.id_fields();
        let source = &shared.source;
        let query = id_from_query(request.uri().query(), fields, |k, v| {
            source.is_cancellation(k, v)
        });
        let format = body_format(request.headers());
        let state = match (query, format) {
            (None, None) => {
                // Nothing to look up: no allocation, no await.
                let mut request = request.map(Body::new);
                shared.record(
                    request.extensions_mut(),
                    Outcome::Refused(Rejection::MissingId),
                );
                State::Calling {
                    future: inner.call(request),
                }
            }
            (query, _) => State::Preparing {
                future: Box::pin(shared.prepare(request, query)),
            },
        };
        ResponseFuture {
            state,
            inner,
            reservation: Reservation(None),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for CertificationService<S, QueryOnly>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let source = &shared.source;
        let query = id_from_query(request.uri().query(), source.id_fields(), |k, v| {
            source.is_cancellation(k, v)
        });
        let state = match query {
            None => {
                shared.record(
                    request.extensions_mut(),
                    Outcome::Refused(Rejection::MissingId),
                );
                State::Calling {
                    future: inner.call(request),
                }
            }
            Some(found) => State::Preparing {
                future: Box::pin(async move {
                    let (mut parts, body) = request.into_parts();
                    let slot = shared.conclude(&mut parts.extensions, found).await;
                    (Request::from_parts(parts, body), slot)
                }),
            },
        };
        ResponseFuture {
            state,
            inner,
            reservation: Reservation(None),
        }
    }
}

impl Shared {
    /// Resolves the id (or keeps the refusal) and records the outcome; returns the unique
    /// slot of a verified request.
    async fn conclude(
        &self,
        extensions: &mut http::Extensions,
        id: Result<String, Rejection>,
    ) -> Option<UniqueSlot> {
        let outcome = match id {
            Ok(id) => self.resolve(&id).await,
            Err(rejection) => Outcome::Refused(rejection),
        };
        let slot = matches!(outcome, Outcome::Verified(_)).then(|| {
            let slot = UniqueSlot::new(self.unique.clone());
            extensions.insert(slot.clone());
            slot
        });
        self.record(extensions, outcome);
        slot
    }

    fn record(&self, extensions: &mut http::Extensions, outcome: Outcome) {
        extensions.insert(outcome);
        if let Some(renderer) = &self.renderer {
            extensions.insert(renderer.clone());
        }
    }

    async fn prepare<B>(
        self: Arc<Self>,
        request: Request<B>,
        query: Option<Result<String, Rejection>>,
    ) -> (Request<Body>, Option<UniqueSlot>)
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut parts, body) = request.into_parts();
        let (id, body) = match query {
            Some(found) => (found, Body::new(body)),
            None => self.read_body(&parts.headers, body).await,
        };
        let slot = self.conclude(&mut parts.extensions, id).await;
        (Request::from_parts(parts, body), slot)
    }

    async fn read_body<B>(
        &self,
        headers: &http::HeaderMap,
        body: B,
    ) -> (Result<String, Rejection>, Body)
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = Rejection::PayloadTooLarge {
            limit: self.body_limit,
        };
        let Some(format) = body_format(headers) else {
            return (Err(Rejection::MissingId), Body::new(body));
        };
        if content_length(headers).is_some_and(|len| len > self.body_limit as u64) {
            return (Err(too_large), Body::new(body));
        }
        match buffer(body, self.body_limit).await {
            Buffered::Complete(replay, bytes) => (
                id_from_body(format, &bytes, self.source.id_fields()),
                Body::new(replay),
            ),
            Buffered::TooLarge(replay) => (Err(too_large), Body::new(replay)),
            Buffered::Failed(replay) => (Err(Rejection::MalformedBody), Body::new(replay)),
        }
    }

    async fn resolve(&self, id: &str) -> Outcome {
        if let Err(invalid) = self.source.validate_id(id) {
            return Outcome::Refused(Rejection::InvalidId(invalid));
        }
        self.lookups
            .run(id, || async {
                match self.source.lookup(id).await {
                    Ok(cert) => Outcome::Verified(Arc::new(cert)),
                    Err(error) => Outcome::Refused(Rejection::from_lookup_error(&error)),
                }
            })
            .await
    }
}

pin_project! {
    /// Response future of [`CertificationService`]: prepares the request (finds and resolves
    /// the id), calls the inner service, then settles a `unique` reservation — commit on a
    /// 2xx response, release otherwise, and release too if this future is dropped first.
    pub struct ResponseFuture<S, R = Request<Body>>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S::Future, S::Response, S::Error, R>,
        inner: S,
        reservation: Reservation,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T, E, R> {
        Preparing { future: Preparing<R> },
        Calling { #[pin] future: F },
        Settling {
            settle: tokio::task::JoinHandle<()>,
            result: Option<Result<T, E>>,
        },
    }
}

/// The reservation a request may hold; released in the background if the response future is
/// dropped before settling it (client gone, timeout, panic in the handler).
struct Reservation(Option<UniqueSlot>);

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.release_detached();
        }
    }
}

impl<S, R> fmt::Debug for ResponseFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, R, ResBody> Future for ResponseFuture<S, R>
where
    S: Service<R, Response = Response<ResBody>>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Preparing { future } => {
                    let (request, slot) = ready!(future.as_mut().poll(cx));
                    this.reservation.0 = slot;
                    let future = this.inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let Some(slot) = this.reservation.0.take().filter(UniqueSlot::is_held) else {
                        return Poll::Ready(result);
                    };
                    let success = matches!(&result, Ok(response) if response.status().is_success());
                    // A task of its own: the commit completes even if the client goes away
                    // while it runs.
                    let settle = tokio::spawn(async move { slot.settle(success).await });
                    this.state.set(State::Settling {
                        settle,
                        result: Some(result),
                    });
                }
                StateProj::Settling { settle, result } => {
                    // A panic inside `settle` is already logged by the runtime; the response
                    // stands either way.
                    let _ = ready!(Pin::new(settle).poll(cx));
                    return Poll::Ready(
                        result
                            .take()
                            .expect("settling holds the result until it completes"),
                    );
                }
            }
        }
    }
}
