//! `RequireCertifiedLayer`: the policy check of `#[require_certified]` for whole routers or
//! any tower service, without the macro.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::post};
//! use iamport_tower::{CertificationLayer, Policy, RequireCertifiedLayer};
//!
//! const ADULTS: Policy = Policy::new().min_age(19);
//!
//! # let client = iamport_mock::Emulator::start().await?.client();
//! let adults_only: Router = Router::new()
//!     .route("/orders", post(|| async { "ok" }))
//!     .route_layer(RequireCertifiedLayer::new(ADULTS));
//! let app: Router = Router::new()
//!     .merge(adults_only)
//!     .layer(CertificationLayer::new(client)); // outside: it must run first
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::guard::Admission;
use crate::layer::refuse;
use crate::policy::Policy;
use crate::rejection::Rejection;

/// Refuses requests whose verification does not meet a [`Policy`], with the same responses
/// as `#[require_certified]`. Put [`CertificationLayer`](crate::CertificationLayer) outside
/// (before) it; without one, every request is refused with 500 and an error log.
#[derive(Debug, Clone, Copy)]
pub struct RequireCertifiedLayer {
    policy: Policy,
}

impl RequireCertifiedLayer {
    /// Requires `policy`.
    pub const fn new(policy: Policy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for RequireCertifiedLayer {
    type Service = RequireCertified<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireCertified {
            inner,
            policy: self.policy,
        }
    }
}

/// The service made by [`RequireCertifiedLayer`].
#[derive(Clone)]
pub struct RequireCertified<S> {
    inner: S,
    policy: Policy,
}

impl<S> RequireCertified<S> {
    inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for RequireCertified<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireCertified")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequireCertified<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let policy = self.policy;
        let admission = Admission::of(request.extensions());
        ResponseFuture {
            state: State::Checking {
                check: Box::pin(async move { admission.admit(&policy).await.map(drop) }),
                request: Some(request),
                inner: Some(inner),
            },
        }
    }
}

type Check = Pin<Box<dyn Future<Output = Result<(), Rejection>> + Send>>;

pin_project! {
    /// Response future of [`RequireCertified`]: the policy check (boxed: it may await the
    /// lookup and the unique store), then the inner service's own future, unboxed.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking {
            check: Check,
            request: Option<Request<B>>,
            inner: Option<S>,
        },
        Calling { #[pin] future: S::Future },
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking {
                    check,
                    request,
                    inner,
                } => {
                    let checked = ready!(check.as_mut().poll(cx));
                    let request = request.take().expect("polled after completion");
                    if let Err(rejection) = checked {
                        let response = refuse(&rejection, request.extensions());
                        return Poll::Ready(Ok(response.map(ResBody::from)));
                    }
                    let mut inner = inner.take().expect("polled after completion");
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}
