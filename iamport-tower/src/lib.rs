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
//! # let emulator = iamport_mock::Emulator::start().await?;
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
//!    (the popup flow), read up to 64 KiB within 10 s, parsed strictly and handed back byte
//!    for byte — and records it as a [`Verification`] in the request extensions. It does not
//!    call PortOne, and it never refuses a request itself: it can sit in front of a whole
//!    router, and a request no guard looks at (an unguarded page, a 404, a 405) costs no
//!    upstream call.
//! 2. The policy check — `#[require_certified(...)]`, [`RequireCertifiedLayer`], or the
//!    [`Certified`] extractor — asks for the [`Outcome`]: the first asker triggers the lookup
//!    through a [`CertificationSource`] ([`IamportClient`] by default; the id's syntax is
//!    checked first, and concurrent requests for one id share one upstream call, whose
//!    `certified` answer the [`cache`] keeps for a minute), later
//!    askers in the request get its result. It applies the [`Policy`], and either admits or answers a
//!    [`Rejection`] as `application/problem+json` (RFC 9457).
//! 3. Under `unique = true` admission reserves the person's key in a [`unique`] store. On
//!    PostgreSQL the handler writes the key in the account's own transaction
//!    (`Certified::record_account`, feature `postgres`); otherwise a 2xx commits the reservation before the
//!    response leaves the layer (a 503 if the commit cannot land). Any other status releases
//!    it before the response is sent, and a dropped request releases it in the background.
//!
//! Safe requests have no side effects: a guard never admits `HEAD`, `OPTIONS` or a load that
//! says it is speculative (`Sec-Purpose: prefetch`, `Purpose: prefetch`, `X-Moz: prefetch`,
//! `X-Purpose: preview`) — 403 `speculative-request`, no lookup, no reservation — and the
//! real `GET` afterwards works. But most link previews (chat apps unfurling a URL) and
//! crawlers say nothing: **an unbound `GET` route can be consumed by anything that follows
//! the link**, so the redirect flow's return URL, pasted into a chat, signs the person up for
//! whoever fetches it first. Binding is the fix: under `bound = true` only the browser session
//! that started the verification is admitted ([`binding`]).
//!
//! Fail closed: whatever fails (PortOne down, malformed input, the layer missing), a guarded
//! handler never runs for an unverified request.
//!
//! # Status codes
//!
//! | case | status |
//! |---|---|
//! | no id; malformed id; the id named twice with different values; unreadable body; verification cancelled | 400 |
//! | the body did not arrive within the body timeout (default 10 s) | 408 |
//! | body over the extraction limit (default 64 KiB) | 413 |
//! | the layer's budget of buffered body bytes across all requests is spent (default 16 MiB) | 503 with `Retry-After` |
//! | id unknown to PortOne; `certified == false`; policy not met | 403 |
//! | `HEAD`, `OPTIONS`, or a prefetch or preview that says so, on a guarded route | 403 |
//! | `bound` and the verification was not started by this browser session | 403 |
//! | `unique` and the person already has an account (or one is being created) | 409 |
//! | PortOne answered 5xx or garbage after retries, or refused our credentials | 502 |
//! | PortOne unreachable / timed out | 503 / 504 |
//! | the unique store unreachable (nothing is admitted) | 503 |
//! | a guarded handler without `CertificationLayer` in front | 500, and an error log naming the fix |
//!
//! The `title` and `detail` are in Korean or English, as the request's `Accept-Language`
//! prefers ([`Language`]; English when it names neither); `type` and `status` never change.
//! Replace the body shape for all of them with [`CertificationLayer::on_rejection`].
//!
//! # Operating it
//!
//! Every refusal is logged at INFO with its kind and route — never the person's data or the
//! id; each PortOne lookup runs in one `iamport_lookup` span, and a failure on the way to
//! PortOne is a WARN with PortOne's status and the latency. Metrics go through the
//! [`metrics`](https://docs.rs/metrics) facade (names and labels in [the `metrics` module](crate::metrics));
//! the crate exports nothing itself. [`IamportClient::warm_up`] fetches the access token at
//! startup, so the first request costs one round trip.
//!
//! # Modules
//!
//! The crate reads bottom-up; no module imports one above it (`module_cycles.py` finds no
//! cycle). The two lower layers are a crate of their own, `iamport-client`, re-exported here
//! under the same paths: the compiler, not a convention, keeps the PortOne clients from
//! reaching into layers, caches, stores or policies (and an app that only calls PortOne by
//! hand can depend on it alone).
//!
//! | layer | module | what it holds | everyday names (also at the root) |
//! |---|---|---|---|
//! | domain (`iamport-client`) | [`id`], [`korea`] | id syntax ([`ImpUid`]); Korea's calendar; [`Certification`], [`Error`], [`Secret`] | [`ImpUid`] |
//! | PortOne (`iamport-client`) | [`source`], [`client`], [`v2`] | the trait both clients implement; the v1 and v2 clients on reqwest | [`CertificationSource`], [`IamportClient`], [`PortOneClient`] |
//! | rules | [`policy`], [`metrics`] | the rules, in the macro's words; metric names, recorded with plain values | [`Policy`] |
//! | stores | [`unique`] | one account per person: keys, store traits, memory / PostgreSQL / Redis | — |
//! | request side | [`rejection`], [`binding`], [`body`], [`cache`] | refusals as problem+json (Korean / English); binding tickets and sessions; the body handed on; the lookup cache and its [`Outcome`] | [`Rejection`], [`Language`] |
//! | tower glue | [`layer`], [`require`] (+ the guard) | the middleware (id, lookup, `unique` settling); the policy check for whole routers | [`CertificationLayer`], [`RequireCertifiedLayer`] |
//!
//! Also at the root: [`Certification`] (one normalized verification; birth dates are civil
//! dates in Korea, and `Debug` masks every personal field), [`Certified`] (the admitted
//! person, an extractor), [`Error`], [`Secret`] and the [`require_certified`] attribute.
//!
//! Features: `axum` (default) — [`Certified`] and the macro's guard as axum extractors,
//! [`Rejection`] as `IntoResponse`; without it the crate serves hyper and plain tower
//! stacks and axum is not in the dependency tree. `postgres` and `redis` — the shared
//! [`unique`] stores. The PortOne emulator is the separate `iamport-mock` crate, a
//! dev-dependency: production builds never contain it.
//!
//! # Other crates' types in this API
//!
//! Only where they are the point, and then behind the feature that brings them: `http` and
//! `http-body` (requests, responses, bodies), `tower-layer`/`tower-service` (the middleware),
//! `jiff` 0.2 for dates (`Certification::birth_date` is a `jiff::civil::Date` — a calendar
//! date in Korea, which is what an age rule needs; `certified_at` a `jiff::Timestamp`; the
//! [`korea`] functions; [`Policy::check_at`]) — add `jiff` to your own dependencies to name
//! those types; methods such as `.year()` need nothing. Behind features: `axum-core`
//! (`axum`), `sqlx::PgPool` in `PostgresStore::new` and `sqlx::PgConnection` in
//! `Certified::record_account` (`postgres`: your own pool and transaction),
//! `redis::cluster::ClusterClient` in `RedisClusterStore::from_client` (`redis`, for TLS or
//! auth settings of your own), `reqwest` 0.13 in the clients' `http_client` builder method
//! (to pass the app's own client), and `rustls`'s `CryptoProvider` in
//! [`client::crypto_provider`].
//!
//! Upstream data is checked for plausibility: a birth date before
//! [`korea::EARLIEST_BIRTH_DATE`] or after today in Korea, or a completion time later than
//! now plus [`korea::COMPLETION_CLOCK_SKEW`], is unknown (WARN naming the field), so an age
//! or freshness rule refuses rather than admits a broken record.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` are redacted. No log line of this
//! crate prints a secret, a token, or a person's name, phone, birth date, CI or DI; rejection
//! bodies state the rule, never the person's data or PortOne's answer.

#![deny(unreachable_pub)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod binding;
pub mod body;
mod budget;
pub mod cache;
mod extract;
mod guard;
pub mod layer;
pub mod metrics;
pub mod policy;
pub mod rejection;
pub mod require;
pub mod unique;

#[cfg(test)]
mod proptests;

// The PortOne clients and the domain types live in `iamport-client`; their modules keep
// their paths here.
pub use iamport_client::{client, id, korea, source, v2};

#[cfg(feature = "axum")]
pub use crate::guard::Guard;
pub use crate::guard::{Certified, FromRejection};
pub use crate::layer::{CertificationLayer, Outcome, Verification};
pub use crate::policy::Policy;
pub use crate::rejection::{Language, Rejection};
pub use crate::require::RequireCertifiedLayer;
pub use iamport_client::CertificationSource;
pub use iamport_client::Error;
pub use iamport_client::PortOneClient;
pub use iamport_client::{Carrier, Certification, Gender};
pub use iamport_client::{IamportClient, ImpUid};
pub use iamport_client::{MIN_KEY_SECRET_LEN, Secret};

/// Guards an `async fn` handler with a [`Policy`] written in the same words.
///
/// ```text
/// #[require_certified(min_birth_year = Y, max_birth_year = Y, min_age = N,
///                     unique = true, bound = true, fresh_within = "10m", foreigners = false,
///                     style = axum | request)]
/// ```
/// Every key is optional; `certified == true` is always required. Mistakes — unknown or
/// repeated keys, wrong literal types, years outside 1900–2100, `min_birth_year` after
/// `max_birth_year`, bad durations (`"90s"`, `"10m"`, `"1h30m"`, `"1d"`), a non-async fn —
/// are compile errors pointing at the offending token.
///
/// What it changes, honestly:
///
/// - **axum handlers** (feature `axum`): the macro adds a hidden first argument (after
///   `self`), an extractor that applies the policy before any other extractor runs and
///   rejects through `IntoResponse`. The body, generics, attributes and visibility are
///   untouched (`return` and `?` work as written), but the function now has one more
///   parameter: call it directly only through axum (a unit test goes through the router,
///   as below). Take [`Certified`] to read the person. That argument is a `Guard` whose
///   type spells your words — `Guard<(MaxBirthYear<1999>, Unique<true>)>` — which is how
///   compiler messages name it.
/// - **handlers taking the whole `http::Request<B>`** (hyper `service_fn`, plain tower): the
///   signature is unchanged; the check runs first in the body on `req.extensions()`, and a
///   rejection is returned as the function's own return type, which must be `Response<B>` or
///   `Result<Response<B>, E>` with `B: From<Bytes>` (see [`FromRejection`]). Read the person
///   with [`Certified::from_extensions`].
///
/// The style is guessed from the parameters: a parameter whose type's last path segment is
/// `Request` makes it request style. Say `style = axum` or `style = request` when the guess
/// is wrong (an axum handler taking `axum::extract::Request`, or a request type under
/// another name).
///
/// Both need [`CertificationLayer`] in front; without it every request is refused with 500.
/// The generated code names only `::iamport_tower::…` paths, so no direct `axum` or `http`
/// dependency is needed for it.
///
/// Unit-testing a guarded axum handler: drive it through a `Router` with the layer and the
/// emulator (`iamport-mock`), as a real request would arrive:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, body::Body, http::Request, routing::get};
/// use iamport_tower::{CertificationLayer, Certified, require_certified};
/// use tower::ServiceExt as _;
///
/// #[require_certified(min_age = 19)]
/// async fn adults(person: Certified) -> String {
///     format!("born {}", person.birth_date.map_or(0, |d| d.year()))
/// }
///
/// let emulator = iamport_mock::Emulator::start().await?;
/// let app = Router::new()
///     .route("/adults", get(adults))
///     .layer(CertificationLayer::new(emulator.client()));
/// let request = Request::get("/adults?imp_uid=imp_100000000001").body(Body::empty())?;
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(()) }
/// ```
pub use iamport_macros::require_certified;

/// What the macro's generated code names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::guard::{RequestParam, admit_request};
    pub use core::time::Duration;

    /// Where the macro checks a policy's values at compile time: `Guard<W, { valid(policy) }>`
    /// (the builder's asserts run in that `const`, spanned at each value).
    pub const fn valid(_: crate::Policy) -> bool {
        true
    }
}
