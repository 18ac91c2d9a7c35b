//! PortOne (i'mport) mobile identity verification for tower services: one
//! [`CertificationLayer`] plus one attribute.
//!
//! Korean sites must know who signs up: real name, age, one account per person. PortOne runs
//! the verification in the browser and hands the server an id; the server must turn that id
//! into a verified person and enforce a policy. This crate does that once, correctly and fast.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Json, Router, http::StatusCode, routing::post};
//! use iamport_tower::{CertificationLayer, Certified, IamportClient, require_certified};
//!
//! #[derive(serde::Deserialize)]
//! struct SignupForm { nickname: String }
//!
//! #[require_certified(max_birth_year = 1999)]
//! async fn signup(cert: Certified, Json(form): Json<SignupForm>) -> StatusCode {
//!     // Only certified people born in 1999 or earlier get here.
//!     StatusCode::CREATED
//! }
//!
//! # let emulator = iamport_tower::mock::Emulator::start().await?;
//! # let client = emulator.client();
//! // let client = IamportClient::from_env()?;   // IMP_KEY, IMP_SECRET
//! let app: Router = Router::new()
//!     .route("/certifications", post(signup))
//!     .layer(CertificationLayer::new(client));
//! # Ok(()) }
//! ```
//!
//! # How a request flows
//!
//! 1. [`CertificationLayer`] finds the verification id — `?imp_uid=` first (the redirect
//!    flow; `success=false`/`imp_success=false` means cancelled), else a JSON or form body
//!    (the popup flow), read up to 64 KiB and handed back byte for byte — checks its syntax,
//!    looks it up through a [`CertificationSource`] ([`IamportClient`] by default; concurrent
//!    requests for one id share one upstream call) and stores the [`Outcome`] in the request
//!    extensions. The layer never refuses a request itself, so it can sit in front of a whole
//!    router.
//! 2. The policy check — `#[require_certified(...)]`, [`RequireCertifiedLayer`], or the
//!    [`Certified`] extractor — reads the outcome, applies the [`Policy`], and either admits
//!    or answers a [`Rejection`] as `application/problem+json` (RFC 9457).
//!
//! Fail closed: whatever fails (PortOne down, malformed input, the layer missing), a guarded
//! handler never runs for an unverified request.
//!
//! # Status codes
//!
//! | case | status |
//! |---|---|
//! | no id; malformed id; unreadable body; verification cancelled | 400 |
//! | body over the extraction limit | 413 |
//! | id unknown to PortOne; `certified == false`; policy not met | 403 |
//! | `unique` and the person already has an account (or one is being created) | 409 |
//! | PortOne answered 5xx, garbage, or refused our credentials, after retries | 502 |
//! | PortOne unreachable / timed out | 503 / 504 |
//! | a guarded handler without the layer in front of it | 500, and an error log naming the fix |
//!
//! Replace the body shape for all of them with [`CertificationLayer::on_rejection`].
//!
//! # The pieces
//!
//! - [`IamportClient`]: the PortOne v1 REST client — one access token per lifetime (shared
//!   refresh, renewed from the server's own clock), timeouts, jittered retries, ids parsed
//!   ([`ImpUid`]) and percent-encoded before they touch a URL.
//! - [`Certification`]: one normalized verification result; birth dates are civil dates in
//!   Korea ([`korea`]), and `Debug` masks every personal field.
//! - [`Policy`]: the rules, const-constructible, with the macro's words.
//! - [`mock`] (feature `mock`): a PortOne emulator on a loopback port, for tests and demos.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` are redacted. No log line of this
//! crate prints a secret, a token, or a person's name, phone, birth date, CI or DI; rejection
//! bodies state the rule, never the person's data or PortOne's answer.

#![deny(unreachable_pub)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod certification;
mod client;
mod error;
mod extract;
mod guard;
mod imp_uid;
pub mod korea;
mod layer;
mod policy;
mod rejection;
mod require;
mod secret;
mod single_flight;
mod source;
pub mod unique;
mod v2;

#[cfg(feature = "mock")]
pub mod mock;

pub use crate::certification::{Carrier, Certification, Gender};
pub use crate::client::{DEFAULT_API_URL, IamportClient, IamportClientBuilder, RetryPolicy};
pub use crate::error::Error;
pub use crate::guard::{Certified, FromRejection};
pub use crate::imp_uid::{ImpUid, InvalidId, MAX_IMP_UID_LEN};
pub use crate::layer::{
    CertificationLayer, CertificationService, DEFAULT_BODY_LIMIT, DEFAULT_UNIQUE_LEASE, Outcome,
    QueryOnly, ReadBodies, ResponseFuture,
};
pub use crate::policy::{MAX_POLICY_YEAR, MIN_POLICY_YEAR, Policy, PolicyViolation};
pub use crate::rejection::{Rejection, RejectionHandler};
pub use crate::require::{RequireCertified, RequireCertifiedFuture, RequireCertifiedLayer};
pub use crate::secret::Secret;
pub use crate::source::{BoxFuture, CertificationSource};
pub use crate::unique::{MemoryStore, UniqueStore};
pub use crate::v2::{
    DEFAULT_V2_API_URL, IdentityVerificationId, MAX_IDENTITY_VERIFICATION_ID_LEN, PortOneClient,
    PortOneClientBuilder,
};

/// Guards an `async fn` handler with a [`Policy`] written in the same words.
///
/// ```text
/// #[require_certified(min_birth_year = Y, max_birth_year = Y, min_age = N,
///                     unique = true, fresh_within = "10m", foreigners = false)]
/// ```
/// Every key is optional; `certified == true` is always required. Mistakes — unknown or
/// repeated keys, wrong literal types, years outside 1900–2100, `min_birth_year` after
/// `max_birth_year`, bad durations (`"90s"`, `"10m"`, `"1h30m"`, `"1d"`), a non-async fn —
/// are compile errors pointing at the offending token.
///
/// - **axum handlers**: the macro adds a hidden first argument, an extractor that applies the
///   policy before any other extractor runs and rejects through `IntoResponse`. Nothing else
///   about the function changes: signature, generics, attributes, visibility, body (`return`
///   and `?` work as written). Take [`Certified`] to read the person.
/// - **handlers taking the whole `http::Request<B>`** (hyper `service_fn`, plain tower): the
///   check runs first in the body on `req.extensions()`, and a rejection is returned as the
///   function's own return type, which must be `Response<B>` or `Result<Response<B>, E>`
///   with `B: From<Bytes>` (see [`FromRejection`]). Read the person with
///   [`Certified::from_extensions`].
///
/// Both need [`CertificationLayer`] in front; without it every request is refused with 500.
/// The generated code names only `::iamport_tower::…` paths.
pub use iamport_macros::require_certified;

/// The request body type handed to services behind [`CertificationLayer`] (axum's).
pub use axum_core::body::Body;

#[doc(hidden)]
pub mod __private {
    pub use crate::guard::{Guard, admit_request};
    pub use core::time::Duration;
}

/// The date/time crate used in this API (`Certification::birth_date` is a
/// [`jiff::civil::Date`]).
pub use jiff;
