//! Admission: applying a [`Policy`] to the layer's [`Outcome`] — for the `Certified`
//! extractor, the macro's hidden extractor, `RequireCertifiedLayer` and request-style
//! handlers.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use http::Extensions;

use crate::layer::refuse;
use crate::layer::reservation::{SlotHolder as _, UniqueSlot};
use crate::layer::{Outcome, Verification};
use crate::policy::{Policy, PolicyViolation};
use crate::rejection::Rejection;
use crate::unique::StoreKey;
use iamport_client::Certification;

/// The verified person, as a handler argument (axum extractor) or read from a request's
/// extensions. Derefs to [`Certification`].
///
/// As an extractor on its own it admits any certified person and refuses the rest with the
/// layer's rejection; `Option<Certified>` never refuses. Under `#[require_certified(...)]`
/// the policy has already been applied when it runs.
#[derive(Clone)]
pub struct Certified(Arc<Certification>, Option<StoreKey>, Recorder);

/// What `record_account` needs: the request's reservation.
#[derive(Clone)]
struct Recorder {
    #[cfg(feature = "postgres")]
    slot: Option<UniqueSlot>,
}

impl Certified {
    fn new(cert: Arc<Certification>, verification: &Verification) -> Self {
        let slot = verification.slot();
        let key = slot.and_then(UniqueSlot::key);
        let recorder = Recorder {
            #[cfg(feature = "postgres")]
            slot: slot.cloned(),
        };
        Self(cert, key, recorder)
    }

    /// The person's key in the unique store (HMAC-SHA256 of the CI under your secret; no
    /// personal data), once a `unique` policy admitted this request; `None` otherwise.
    pub fn store_key(&self) -> Option<&StoreKey> {
        self.1.as_ref()
    }

    /// Records that this person now has an account, in the transaction that creates it: one
    /// `INSERT` of the person's key into the [`PostgresStore`](crate::unique::PostgresStore)'s
    /// accounts table on your connection, under its primary key. Commit your transaction and
    /// the account and its person are one fact; roll it back (or crash) and neither exists.
    ///
    /// Call it after your own inserts, before `commit`. A 2xx then needs no further write by
    /// the layer (its reservation is released alongside the response), and admission refuses
    /// this person from then on — whatever happens to any reservation.
    ///
    /// [`RecordError::AlreadyRegistered`](crate::unique::RecordError::AlreadyRegistered) means
    /// the table holds the person already (roll back, answer 409 — with the `axum` feature the
    /// error is that response); `NotReserved` means this request was not admitted under
    /// `unique = true` behind a layer whose store is a `PostgresStore`.
    ///
    /// ```no_run
    /// # async fn signup(pool: sqlx::PgPool, person: iamport_tower::Certified) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO users (nickname) VALUES ($1)").bind("k").execute(&mut *tx).await?;
    /// person.record_account(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn record_account(
        &self,
        connection: &mut sqlx::PgConnection,
    ) -> Result<(), crate::unique::RecordError> {
        let slot = self
            .2
            .slot
            .as_ref()
            .ok_or(crate::unique::RecordError::NotReserved)?;
        let (statement, key) = slot
            .record_statement()
            .ok_or(crate::unique::RecordError::NotReserved)?;
        crate::unique::record(statement, &key, connection).await?;
        slot.mark_recorded();
        Ok(())
    }

    /// The certification shared with the request.
    pub fn certification(&self) -> &Arc<Certification> {
        &self.0
    }

    /// The verified certification from a request's extensions, if a guard already looked it
    /// up (the `#[require_certified]` check at the top of a request-style handler does) and
    /// it is `certified`. Never triggers a lookup and applies no other policy.
    pub fn from_extensions(extensions: &Extensions) -> Option<Self> {
        let verification = extensions.get::<Verification>()?;
        match verification.get()? {
            Outcome::Verified(cert) if cert.certified => {
                Some(Self::new(cert.clone(), verification))
            }
            _ => None,
        }
    }
}

impl Deref for Certified {
    type Target = Certification;

    fn deref(&self) -> &Certification {
        &self.0
    }
}

impl fmt::Debug for Certified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Certified")
            .field(&self.0)
            .field(&self.1)
            .finish()
    }
}

/// What admission needs from a request's extensions, owned, so the check can run while the
/// request itself waits in a future's state (`RequireCertified`).
pub(crate) struct Admission {
    verification: Option<Verification>,
}

impl Admission {
    pub(crate) fn of(extensions: &Extensions) -> Self {
        Self {
            verification: extensions.get::<Verification>().cloned(),
        }
    }

    /// Applies `policy` to the request's verification, looking it up if nobody has yet.
    /// Fails closed: no verification recorded (no layer) is a 500 with an error log; a
    /// speculative request is refused before any lookup.
    pub(crate) async fn admit(self, policy: &Policy) -> Result<Certified, Rejection> {
        let Some(verification) = self.verification else {
            tracing::error!(
                "a handler guarded by #[require_certified], RequireCertifiedLayer or the \
                 Certified extractor ran without CertificationLayer in front of it; add \
                 `.layer(CertificationLayer::new(client))` around the guarded routes"
            );
            return Err(Rejection::LayerMissing);
        };
        if verification.is_speculative() {
            return Err(Rejection::SpeculativeRequest);
        }
        // Bound: no session, or a ticket of the request's own that fails, is refused before
        // any PortOne call.
        if policy.is_bound() {
            bound(verification.may_be_bound())?;
        }
        match verification.outcome().await {
            Outcome::Refused(rejection) => Err(rejection.clone()),
            Outcome::Verified(cert) => {
                // The record's own ticket, first: someone replaying another person's id
                // learns nothing about that person from which rule refused them.
                if policy.is_bound() {
                    bound(verification.is_bound(cert))?;
                }
                policy.check(cert).map_err(Rejection::Policy)?;
                if policy.is_unique() {
                    let ci = cert
                        .ci
                        .as_deref()
                        .ok_or(Rejection::Policy(PolicyViolation::CiUnknown))?;
                    // Reserved last, so a refused person never holds a reservation. Boxed: only
                    // `unique` routes reserve, and inline every guarded request waiting for
                    // PortOne would hold room for a store call.
                    Box::pin(
                        verification
                            .unique_slot()
                            .reserve(policy.unique_scope(), ci),
                    )
                    .await?;
                }
                Ok(Certified::new(cert.clone(), &verification))
            }
        }
    }
}

/// A binding check's answer as admission's: refused, or — without a binding on the layer — a
/// misconfiguration, logged with its fix.
fn bound(answer: Result<bool, ()>) -> Result<(), Rejection> {
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => Err(Rejection::UnboundVerification),
        Err(()) => {
            tracing::error!(
                "a `bound` policy runs behind a CertificationLayer without a binding; add \
                 `.binding(Binding::new(secret))` to the layer"
            );
            Err(Rejection::LayerMissing)
        }
    }
}

/// Applies `policy` to the verification recorded in `extensions` (see [`Admission::admit`]).
pub(crate) async fn admit(
    extensions: &Extensions,
    policy: &Policy,
) -> Result<Certified, Rejection> {
    Admission::of(extensions).admit(policy).await
}

/// What a request-style handler (`async fn(Request<B>) -> R`) can return a rejection as:
/// `http::Response<B>` for any body `B: From<Bytes>` (hyper's `Full<Bytes>`, axum's `Body`, …)
/// and `Result` of one.
#[diagnostic::on_unimplemented(
    message = "a `#[require_certified]` handler that takes the whole `Request` must return `Response<B>` or `Result<Response<B>, E>`, not `{Self}`",
    label = "the rejection cannot be returned as this type",
    note = "the body type `B` must implement `From<Bytes>` (hyper's `Full<Bytes>`, `iamport_tower::body::Body`, …)",
    note = "an axum handler that takes `axum::extract::Request` is guessed to be request style: write `#[require_certified(…, style = axum)]`"
)]
pub trait FromRejection {
    /// Converts the rendered rejection.
    fn from_rejection(response: http::Response<Bytes>) -> Self;
}

impl<B: From<Bytes>> FromRejection for http::Response<B> {
    fn from_rejection(response: http::Response<Bytes>) -> Self {
        response.map(B::from)
    }
}

impl<T: FromRejection, E> FromRejection for Result<T, E> {
    fn from_rejection(response: http::Response<Bytes>) -> Self {
        Ok(T::from_rejection(response))
    }
}

/// The request-style parameter: `http::Request<B>` for any body.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`#[require_certified]` treats this parameter as the request, but `{Self}` is not an `http::Request<B>`",
    label = "not an `http::Request<B>`",
    note = "request style needs a parameter of type `http::Request<B>` (hyper, tower `service_fn`); for an axum handler write `style = axum`"
)]
pub trait RequestParam {
    /// The request's extensions.
    fn request_extensions(&self) -> &Extensions;
}

impl<B> RequestParam for http::Request<B> {
    fn request_extensions(&self) -> &Extensions {
        self.extensions()
    }
}

/// The check `#[require_certified]` runs first in a request-style handler. It takes the
/// extensions, not the request, so the handler's future stays `Send` with `!Sync` bodies.
#[doc(hidden)]
pub async fn admit_request(
    extensions: &Extensions,
    policy: &Policy,
) -> Result<Certified, http::Response<Bytes>> {
    admit(extensions, policy)
        .await
        .map_err(|rejection| refuse(&rejection, extensions))
}

#[cfg(feature = "axum")]
pub use self::axum::Guard;

/// The axum side: `Certified` and the macro's guard as extractors, rejections as responses.
#[cfg(feature = "axum")]
mod axum {
    use std::fmt;
    use std::marker::PhantomData;

    use axum_core::body::Body;
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use bytes::Bytes;
    use http::request::Parts;

    use super::{Certified, admit};
    use crate::layer::refuse;
    use crate::policy::{Policy, Words, policy_of};
    use crate::rejection::Rejection;

    fn into_axum(response: http::Response<Bytes>) -> Response {
        response.map(Body::from)
    }

    /// `Certified` on its own: certified, nothing else (a static, so no request waiting for
    /// its lookup holds a copy).
    static ANY_CERTIFIED: Policy = Policy::new();

    impl<S: Send + Sync> FromRequestParts<S> for Certified {
        type Rejection = Response;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
            admit(&parts.extensions, &ANY_CERTIFIED)
                .await
                .map_err(|rejection| into_axum(refuse(&rejection, &parts.extensions)))
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Certified {
        type Rejection = Response;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Response> {
            match admit(&parts.extensions, &ANY_CERTIFIED).await {
                Ok(certified) => Ok(Some(certified)),
                Err(Rejection::LayerMissing) => Err(into_axum(refuse(
                    &Rejection::LayerMissing,
                    &parts.extensions,
                ))),
                Err(_) => Ok(None),
            }
        }
    }

    impl IntoResponse for Rejection {
        fn into_response(self) -> Response {
            into_axum(self.problem_response())
        }
    }

    /// `AlreadyRegistered` is the 409 a second signup gets at admission; a database error the
    /// 503 of an unavailable store; `NotReserved` (a programming error) a 500. The cause is
    /// logged (WARN / ERROR, escaped, without personal data), never put in the body.
    #[cfg(feature = "postgres")]
    impl IntoResponse for crate::unique::RecordError {
        fn into_response(self) -> Response {
            let rejection = match self {
                Self::AlreadyRegistered => Rejection::AlreadyRegistered,
                Self::Database(error) => {
                    tracing::warn!(error = ?error.to_string(), "could not write an account's transaction");
                    Rejection::StoreUnavailable
                }
                other => {
                    tracing::error!(error = ?other.to_string(), "could not record an account's key");
                    Rejection::LayerMissing
                }
            };
            rejection.into_response()
        }
    }

    /// The extractor `#[require_certified]` adds as an axum handler's first argument: it
    /// applies the policy `W`, written as a type (see [`policy::Words`](crate::policy::Words)),
    /// before any other extractor runs, and refuses through `IntoResponse`.
    ///
    /// `#[require_certified(max_birth_year = 1999, unique = true)]` adds
    /// `_: Guard<(MaxBirthYear<1999>, Unique<true>)>`, which is also how compiler messages name
    /// it. The macro checks the values where you wrote them, in `VALID` (`true`, left out when
    /// printed; its value is not used). Written by hand — put it first among the handler's
    /// extractors, so none runs before the policy — a guard's words are checked when the
    /// handler is built into a router (`cargo build`; `cargo check` does not evaluate them).
    ///
    /// ```
    /// use iamport_tower::Guard;
    /// use iamport_tower::policy::{MinAge, Unique};
    ///
    /// async fn signup(_: Guard<(MinAge<19>, Unique<true>)>) -> &'static str {
    ///     "welcome"
    /// }
    /// # let _: axum::Router = axum::Router::new().route("/", axum::routing::post(signup));
    /// ```
    pub struct Guard<W: Words, const VALID: bool = true>(PhantomData<fn() -> W>);

    impl<W: Words, const VALID: bool> fmt::Debug for Guard<W, VALID> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&policy_of::<W>(), f)
        }
    }

    impl<S: Send + Sync, W: Words, const VALID: bool> FromRequestParts<S> for Guard<W, VALID> {
        type Rejection = Response;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
            let policy = policy_of::<W>();
            match admit(&parts.extensions, &policy).await {
                Ok(_) => Ok(Self(PhantomData)),
                Err(rejection) => Err(into_axum(refuse(&rejection, &parts.extensions))),
            }
        }
    }
}
