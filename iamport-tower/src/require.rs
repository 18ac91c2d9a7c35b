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
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::guard::admit;
use crate::policy::Policy;
use crate::rejection::render;

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

impl<S: fmt::Debug> fmt::Debug for RequireCertified<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireCertified")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Response future of [`RequireCertified`].
pub type RequireCertifiedFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for RequireCertified<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: From<Bytes> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequireCertifiedFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let policy = self.policy;
        Box::pin(async move {
            match admit(request.extensions(), &policy).await {
                Ok(_) => inner.call(request).await,
                Err(rejection) => Ok(render(&rejection, request.extensions()).map(ResBody::from)),
            }
        })
    }
}
