//! [`ResponseFuture`]: prepares the request, calls the inner service, then settles a
//! `unique` reservation by the response's status.
//!
//! Settling runs in a task of its own, counted by the layer's
//! [`UniqueTasks`](crate::layer::UniqueTasks), and the future waits for it (state
//! `Settling`): after a 2xx for the commit — a 2xx whose commit did not land becomes a 503 —
//! and after anything else for the release, so a retry right after a failure finds the
//! person free. Only a 2xx whose handler recorded the account in its own transaction
//! (`Certified::record_account`) is returned at once, its reservation released alongside.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Extensions, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::Verification;
use crate::layer::refuse;
use crate::layer::reservation::HeldReservation;
use crate::rejection::Rejection;

type Preparing<R> = Pin<Box<dyn Future<Output = (R, Option<Verification>)> + Send>>;

pin_project! {
    /// Response future of [`CertificationService`](super::CertificationService): reads the
    /// body when the id is in it, calls the inner service, then settles a `unique`
    /// reservation — commit on a 2xx response before it is returned (a 503 instead if the
    /// commit cannot land), release otherwise (before the response), and release in the
    /// background if this future is dropped first.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, S::Future, S::Response, S::Error, R>,
        reservation: HeldReservation<Verification>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, T, E, R> {
        // Reading the body; then `inner` (ready) is called.
        Preparing { future: Preparing<R>, inner: Option<S> },
        Calling { #[pin] future: F },
        // Waiting for a commit or a release. Boxed: only `unique` routes settle, and inline
        // every request in flight would hold room for a response.
        Settling { settling: Box<Settling<T, E>> },
    }
}

/// A response waiting for its reservation's commit or release (`true`: the response may
/// stand).
struct Settling<T, E> {
    settle: tokio::task::JoinHandle<bool>,
    verification: Verification,
    result: Option<Result<T, E>>,
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    /// The inner service was called already.
    pub(super) fn calling(future: S::Future, held: Option<Verification>) -> Self {
        Self {
            state: State::Calling { future },
            reservation: HeldReservation::new(held),
        }
    }

    /// The body is read first, then `inner` (ready) is called.
    pub(super) fn reading(inner: S, future: Preparing<R>) -> Self {
        Self {
            state: State::Preparing {
                future,
                inner: Some(inner),
            },
            reservation: HeldReservation::new(None),
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
    ResBody: From<Bytes>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Preparing { future, inner } => {
                    let (request, held) = ready!(future.as_mut().poll(cx));
                    this.reservation.hold(held);
                    let mut inner = inner
                        .take()
                        .expect("the inner service is kept until the body is read");
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let success = matches!(&result, Ok(response) if response.status().is_success());
                    // `None`: nothing held, or a recorded account's release alongside.
                    let Some((settle, verification)) = this.reservation.settle(success) else {
                        return Poll::Ready(result);
                    };
                    this.state.set(State::Settling {
                        settling: Box::new(Settling {
                            settle,
                            verification,
                            result: Some(result),
                        }),
                    });
                }
                StateProj::Settling { settling } => {
                    let Settling {
                        settle,
                        verification,
                        result,
                    } = &mut **settling;
                    // A panic inside `settle` is already logged by the runtime: fail closed.
                    let stands = ready!(Pin::new(settle).poll(cx)).unwrap_or(false);
                    let result = result
                        .take()
                        .expect("settling holds the result until it completes");
                    if stands || !matches!(&result, Ok(r) if r.status().is_success()) {
                        return Poll::Ready(result);
                    }
                    // A success whose uniqueness is not durable is not a success.
                    let mut extensions = Extensions::new();
                    extensions.insert(verification.clone());
                    let refused = refuse(&Rejection::StoreUnavailable, &extensions);
                    return Poll::Ready(Ok(refused.map(ResBody::from)));
                }
            }
        }
    }
}
