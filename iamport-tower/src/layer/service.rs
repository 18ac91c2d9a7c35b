//! [`CertificationService`]: finds the id of each request and records it, then calls the
//! inner service through a [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response};
use http_body::Body as HttpBody;
use tower_service::Service;

use super::future::ResponseFuture;
use super::{QueryOnly, ReadBodies, Shared, Verification};
use crate::body::Body;
use crate::extract::{self, BodyFormat, Buffered, body_format, content_length};
use crate::rejection::Rejection;

/// The service made by [`CertificationLayer`](super::CertificationLayer).
pub struct CertificationService<S, M = ReadBodies> {
    inner: S,
    shared: Arc<Shared>,
    mode: PhantomData<fn() -> M>,
}

impl<S, M> CertificationService<S, M> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            mode: PhantomData,
        }
    }

    inner_service_accessors!();

    /// The one body of both modes' `call`. A request that is ready goes to the service that
    /// `poll_ready` readied, now; one whose body must be read first takes that service along
    /// and leaves its clone (which may not be ready) for the next call — tower's rule for a
    /// call made later than `call` itself.
    fn dispatch<R>(&mut self, prepared: Prepared<R>) -> ResponseFuture<S, R>
    where
        S: Service<R> + Clone,
    {
        match prepared {
            Prepared::Ready(request, held) => {
                ResponseFuture::calling(self.inner.call(request), held)
            }
            Prepared::Reading(reading) => {
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture::reading(inner, reading)
            }
        }
    }
}

impl<S: Clone, M> Clone for CertificationService<S, M> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, M> fmt::Debug for CertificationService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificationService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A request ready for the inner service (with the verification whose reservation its
/// response settles, if it may hold one), or the
/// work of reading its body first.
pub(crate) enum Prepared<R> {
    Ready(R, Option<Verification>),
    Reading(Pin<Box<dyn Future<Output = (R, Option<Verification>)> + Send>>),
}

impl<S, B, ResBody> Service<Request<B>> for CertificationService<S, ReadBodies>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
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
        let shared = self.shared.clone();
        let (mut parts, body) = request.into_parts();
        let speculative = is_speculative(&parts.method, &parts.headers);
        // The query string is parsed now only when it decides whether to read the body;
        // otherwise when (if ever) a guard asks.
        let body_format = body_format(&parts.headers).filter(|_| !body.is_end_stream());
        let query = body_format.and_then(|_| shared.id_from_query(parts.uri.query()));
        let prepared = match (query, body_format) {
            // The body is read even when the query names the id: it might name another, and
            // the handler's `Json`/`Form` would read that one.
            (query @ (None | Some(Ok(_))), Some(format)) => {
                Prepared::Reading(Box::pin(async move {
                    let (id, body) = shared.read_body(format, &parts.headers, body).await;
                    let id = extract::one_id(query, id);
                    let held = shared.record(&mut parts, Some(id), speculative, false);
                    (Request::from_parts(parts, body), held)
                }))
            }
            (query, _) => {
                let held = shared.record(&mut parts, query, speculative, false);
                // A body that has ended already (a GET's) is handed on without wrapping it.
                let body = if body.is_end_stream() {
                    Body::empty()
                } else {
                    Body::new(body)
                };
                Prepared::Ready(Request::from_parts(parts, body), held)
            }
        };
        self.dispatch(prepared)
    }
}

impl<S, B, ResBody> Service<Request<B>> for CertificationService<S, QueryOnly>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let speculative = is_speculative(&parts.method, &parts.headers);
        let held = self.shared.record(&mut parts, None, speculative, true);
        self.dispatch(Prepared::Ready(Request::from_parts(parts, body), held))
    }
}

/// `HEAD`, `OPTIONS`, and loads made on speculation — a browser's prefetch or prerender
/// (`Sec-Purpose: prefetch`, the older `Purpose: prefetch`, Firefox's `X-Moz: prefetch`) or a
/// link preview that says so (`X-Purpose: preview`): requests that must have no side effects,
/// so no guard admits them. Previews that say nothing cannot be told from a visit; only
/// binding stops those (see [`binding`](crate::binding)).
fn is_speculative(method: &Method, headers: &HeaderMap) -> bool {
    // One walk over the (few) names instead of hashing four that are rarely there.
    let purpose = |name: &HeaderName| {
        matches!(
            name.as_str(),
            "sec-purpose" | "purpose" | "x-purpose" | "x-moz"
        )
    };
    *method == Method::HEAD
        || *method == Method::OPTIONS
        || headers.keys().filter(|name| purpose(name)).any(|name| {
            headers.get_all(name).iter().any(|value| {
                value.to_str().is_ok_and(|v| {
                    v.split([';', ',', ' ']).any(|token| {
                        token.eq_ignore_ascii_case("prefetch")
                            || token.eq_ignore_ascii_case("prerender")
                            || token.eq_ignore_ascii_case("preview")
                    })
                })
            })
        })
}

impl Shared {
    /// What the query string says, if it settles the matter.
    pub(super) fn id_from_query(&self, query: Option<&str>) -> Option<Result<String, Rejection>> {
        let source = self.source();
        extract::id_from_query(query, source.id_fields(), |k, v| {
            source.is_cancellation(k, v)
        })
    }

    /// Reads a JSON or form body, within the limit, the timeout and the budget, for the id;
    /// returns the body to hand on (the same bytes; the unread body when it was not read; or —
    /// after a timeout or with the budget spent mid-way — one that fails).
    async fn read_body<B>(
        &self,
        format: BodyFormat,
        headers: &HeaderMap,
        body: B,
    ) -> (Result<String, Rejection>, Body)
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = Rejection::PayloadTooLarge {
            limit: self.body_limit,
        };
        let declared = content_length(headers);
        if declared.is_some_and(|len| len > self.body_limit as u64) {
            return (Err(too_large), Body::new(body));
        }
        let busy = Rejection::Busy {
            retry_after: self.body_timeout,
        };
        // A declared length is reserved whole, now; a chunked body reserves as it arrives.
        let declared = declared.map_or(0, |len| usize::try_from(len).unwrap_or(usize::MAX));
        let Some(reserved) = self.body_budget.reserve(declared) else {
            return (Err(busy), Body::new(body));
        };
        let read = extract::buffer(body, self.body_limit, reserved);
        match tokio::time::timeout(self.body_timeout, read).await {
            // The partial body is dropped with the read: nothing of it stays in memory.
            Err(_elapsed) => (Err(Rejection::BodyTimeout), extract::failed_body()),
            Ok(Buffered::Complete(replay, bytes)) => (
                extract::id_from_body(format, &bytes, self.source().id_fields()),
                Body::new(replay),
            ),
            Ok(Buffered::TooLarge(replay)) => (Err(too_large), Body::new(replay)),
            Ok(Buffered::Failed(replay)) => (Err(Rejection::MalformedBody), Body::new(replay)),
            Ok(Buffered::OverBudget) => (Err(busy), extract::failed_body()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculative_requests() {
        let mut h = HeaderMap::new();
        assert!(!is_speculative(&Method::GET, &h));
        assert!(!is_speculative(&Method::POST, &h));
        assert!(is_speculative(&Method::HEAD, &h));
        assert!(is_speculative(&Method::OPTIONS, &h));
        h.insert("sec-purpose", "prefetch;prerender".parse().unwrap());
        assert!(is_speculative(&Method::GET, &h));
        h.clear();
        h.insert("purpose", "Prefetch".parse().unwrap());
        assert!(is_speculative(&Method::GET, &h));
        h.clear();
        h.insert("sec-purpose", "something-else".parse().unwrap());
        assert!(!is_speculative(&Method::GET, &h));
        // Link previews and Firefox's old prefetch header.
        h.clear();
        h.insert("x-purpose", "preview".parse().unwrap());
        assert!(is_speculative(&Method::GET, &h));
        h.clear();
        h.insert("x-moz", "prefetch".parse().unwrap());
        assert!(is_speculative(&Method::GET, &h));
        h.clear();
        h.insert("x-moz", "something-else".parse().unwrap());
        assert!(!is_speculative(&Method::GET, &h));
    }
}
