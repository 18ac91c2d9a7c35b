//! The per-request record the layer leaves in the extensions: where the id is (read from the
//! body by the layer, or from the query string when first asked) and, once something asks,
//! the [`Outcome`] of looking it up.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::VARY;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Response};

use super::Shared;
use crate::cache::Outcome;
use crate::layer::reservation::{SlotHolder, UniqueSlot};
use crate::metrics;
use crate::rejection::{IdHint, Language, Rejection, RejectionRenderer};
use iamport_client::Certification;

/// What [`CertificationLayer`](super::CertificationLayer) found in a request, in its
/// extensions. The lookup is **lazy**: PortOne is asked only when something calls
/// [`outcome`](Self::outcome) — the macro's guard, `RequireCertifiedLayer`, the `Certified`
/// extractor — and later askers in the request get that result (two asking at the very same
/// time each ask, and share one upstream call as any two requests for the id do). A request
/// no guard looks at (an unguarded route, a 404, a 405, one refused by other middleware) costs
/// no upstream call.
#[derive(Clone)]
pub struct Verification {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The id, or why there is none: set by the layer when it read the body, otherwise read
    /// from the query string when first needed (a request nobody asks about is never parsed).
    id: OnceLock<Result<Box<str>, Rejection>>,
    speculative: bool,
    /// The request's binding session key (only recorded when the layer has a binding).
    session: Option<Box<str>>,
    /// How refusals are rendered: this layer's `on_rejection`, else an outer layer's.
    renderer: Option<RejectionRenderer>,
    outcome: OnceLock<Outcome>,
    /// The request's `unique` reservation, made when a `unique` guard first asks: requests
    /// no such guard looks at pay nothing for it.
    unique: OnceLock<UniqueSlot>,
    asked: Asked,
}

/// What a refusal needs to know about the request: where it went (for the log) and how to
/// speak to whoever sent it.
pub(crate) struct Asked {
    /// For logs: the method's name (one byte where a `Method` takes twenty-four).
    method: u8,
    /// The request target (path and query; 48 bytes smaller than the whole `Uri`). Logged by
    /// its path only: the query string holds the id.
    target: Option<PathAndQuery>,
    /// The language its `Accept-Language` prefers, read now: one byte where the header's
    /// value would take forty for as long as the request is in flight.
    language: Language,
    query_only: bool,
}

/// The methods a refusal's log line names; any other is logged as "other".
const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

impl Asked {
    pub(crate) fn of(parts: &Parts, query_only: bool) -> Self {
        let mut languages = parts.headers.get_all(http::header::ACCEPT_LANGUAGE).iter();
        let language = match (languages.next(), languages.next()) {
            (None, _) => Language::English,
            (Some(one), None) => one.to_str().map_or(Language::English, Language::negotiate),
            // Several lines are one list; rare enough to pay for joining them.
            (Some(_), Some(_)) => {
                let joined: Vec<&str> = parts
                    .headers
                    .get_all(http::header::ACCEPT_LANGUAGE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                Language::negotiate(&joined.join(","))
            }
        };
        Self {
            method: METHODS
                .iter()
                .position(|name| *name == parts.method.as_str())
                .map_or(u8::MAX, |i| i as u8),
            target: parts.uri.path_and_query().cloned(),
            language,
            query_only,
        }
    }
}

impl Asked {
    fn query(&self) -> Option<&str> {
        self.target.as_ref().and_then(PathAndQuery::query)
    }
}

impl Verification {
    /// `id`: what the layer found in the body, or `None` to read the query string when asked.
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: Option<Result<String, Rejection>>,
        speculative: bool,
        session: Option<Box<str>>,
        renderer: Option<RejectionRenderer>,
        asked: Asked,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                id: id.map_or_else(OnceLock::new, |id| OnceLock::from(id.map(Box::from))),
                speculative,
                session,
                renderer,
                outcome: OnceLock::new(),
                unique: OnceLock::new(),
                asked,
            }),
        }
    }

    /// Looks the id up (the first call; later ones share its result) and returns the outcome.
    ///
    /// Two calls racing in one request (rare: guards run one after another) both ask, and
    /// join one upstream call like any two requests for the id do; the first answer is kept.
    pub async fn outcome(&self) -> &Outcome {
        let inner = &*self.inner;
        if let Some(outcome) = inner.outcome.get() {
            return outcome;
        }
        let outcome = match self.id() {
            Ok(id) => inner.shared.lookups.resolve(id, self.route()).await,
            Err(rejection) => Outcome::Refused(rejection.clone()),
        };
        inner.outcome.get_or_init(|| outcome)
    }

    /// The outcome if something already asked for it; never triggers a lookup.
    pub fn get(&self) -> Option<&Outcome> {
        self.inner.outcome.get()
    }

    /// Whether the request may not be admitted whatever its id: a `HEAD` or `OPTIONS`, or a
    /// speculative load (`Sec-Purpose`/`Purpose`/`X-Moz: prefetch`, `X-Purpose: preview`). Guards refuse it
    /// without a lookup.
    pub fn is_speculative(&self) -> bool {
        self.inner.speculative
    }

    /// Whether `cert` was started by this request's browser session (its ticket is genuine,
    /// unexpired and minted for the session). `Err(())` when the layer has no binding.
    pub(crate) fn is_bound(&self, cert: &Certification) -> Result<bool, ()> {
        self.inner
            .shared
            .is_bound(cert, self.inner.session.as_deref())
    }

    /// Whether a `bound` route may look this request up at all: it has a session, and the
    /// ticket it carries itself (v1's redirect `merchant_uid`, v2's id) is genuine,
    /// unexpired and the session's. A request whose id is missing or malformed passes: its
    /// lookup refuses it without a call. `Err(())` when the layer has no binding.
    pub(crate) fn may_be_bound(&self) -> Result<bool, ()> {
        let inner = &*self.inner;
        let binding = inner.shared.binding().ok_or(())?;
        let source = inner.shared.source();
        let Ok(id) = self.id() else {
            return Ok(true);
        };
        if source.validate_id(id).is_err() {
            return Ok(true);
        }
        let Some(session) = inner.session.as_deref() else {
            return Ok(false);
        };
        Ok(match source.request_ticket(id, inner.asked.query()) {
            Some(ticket) => binding.verify(&ticket, session),
            None => true,
        })
    }

    /// Where a `unique` guard reserves the person for this request (made on first use).
    pub(crate) fn unique_slot(&self) -> &UniqueSlot {
        self.inner
            .unique
            .get_or_init(|| UniqueSlot::new(self.inner.shared.unique.clone()))
    }

    /// The request's id, or why it has none.
    fn id(&self) -> &Result<Box<str>, Rejection> {
        let inner = &*self.inner;
        inner.id.get_or_init(|| {
            inner
                .shared
                .id_from_query(inner.asked.query())
                .unwrap_or(Err(Rejection::MissingId))
                .map(Box::from)
        })
    }

    /// Whether the request carried an id (well-formed or not) to look up.
    pub(crate) fn has_id(&self) -> bool {
        self.id().is_ok()
    }

    /// How refusals are rendered, if a layer was given an `on_rejection`.
    pub(crate) fn renderer(&self) -> Option<&RejectionRenderer> {
        self.inner.renderer.as_ref()
    }

    /// The request's path (never its query string, which holds the id): the route logs name.
    pub fn route(&self) -> &str {
        self.inner
            .asked
            .target
            .as_ref()
            .map_or("/", PathAndQuery::path)
    }

    /// The request's method, for logs.
    pub(crate) fn method(&self) -> &str {
        METHODS
            .get(usize::from(self.inner.asked.method))
            .copied()
            .unwrap_or("other")
    }

    /// The language the request's `Accept-Language` prefers: what its refusals are written in.
    pub fn language(&self) -> Language {
        self.inner.asked.language
    }

    /// Where the layer looks for the id, for the missing-id sentence.
    pub(crate) fn id_hint(&self) -> IdHint {
        IdHint {
            field: self.inner.shared.source().id_fields().first().copied(),
            query_only: self.inner.asked.query_only,
        }
    }
}

impl SlotHolder for Verification {
    fn slot(&self) -> Option<&UniqueSlot> {
        self.inner.unique.get()
    }
}

impl fmt::Debug for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the id: in v2 the merchant chooses it and it may carry anything.
        f.debug_struct("Verification")
            .field("has_id", &self.has_id())
            .field("speculative", &self.inner.speculative)
            .field("has_session", &self.inner.session.is_some())
            .field("resolved", &self.inner.outcome.get().is_some())
            .field("route", &self.route())
            .finish()
    }
}

/// Refuses a request: logs the refusal (INFO: its kind, status and route — never the
/// person's data or the id), counts it (`iamport_rejections_total`) and renders it with the
/// layer's handler, or as problem+json in the language the request prefers.
pub(crate) fn refuse(rejection: &Rejection, extensions: &http::Extensions) -> Response<Bytes> {
    let verification = extensions.get::<Verification>();
    let route = verification.map_or("", Verification::route);
    let method = verification.map_or("", Verification::method);
    tracing::info!(
        kind = rejection.code(),
        status = rejection.status().as_u16(),
        route,
        method,
        "refused a request"
    );
    metrics::rejection(rejection.code());
    let Some(verification) = verification else {
        return rejection.problem_response();
    };
    if let Some(RejectionRenderer(handler)) = verification.renderer() {
        let mut response = handler(rejection);
        rejection.add_retry_after(&mut response);
        return response;
    }
    let mut response = rejection.problem(verification.language(), verification.id_hint());
    response
        .headers_mut()
        .append(VARY, HeaderValue::from_static("accept-language"));
    response
}
