//! PortOne (i'mport) mobile identity verification for tower services.
//!
//! Korean sites must know who signs up: real name, age, one account per person. PortOne runs
//! the verification in the browser and hands the server an id; the server must turn that id
//! into a verified person and enforce a policy. This crate does that once, correctly and
//! fast:
//!
//! - [`IamportClient`]: the PortOne v1 REST client — one access token per lifetime (shared
//!   refresh, renewed from the server's own clock), timeouts, jittered retries, ids parsed
//!   ([`ImpUid`]) and percent-encoded before they touch a URL.
//! - [`Certification`]: one normalized verification result; birth dates are civil dates in
//!   Korea ([`korea`]), and `Debug` masks every personal field.
//! - [`mock`] (feature `mock`): a PortOne emulator on a loopback port, for tests and demos.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` are redacted. No log line of this
//! crate prints a secret, a token, or a person's name, phone, birth date, CI or DI.

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

#[cfg(feature = "mock")]
pub mod mock;

pub use crate::certification::{Carrier, Certification, Gender};
pub use crate::client::{DEFAULT_API_URL, IamportClient, IamportClientBuilder, RetryPolicy};
pub use crate::error::Error;
pub use crate::guard::{Certified, FromRejection};
pub use crate::imp_uid::{ImpUid, InvalidId, MAX_IMP_UID_LEN};
pub use crate::layer::{
    CertificationLayer, CertificationService, DEFAULT_BODY_LIMIT, Outcome, ResponseFuture,
};
pub use crate::policy::{MAX_POLICY_YEAR, MIN_POLICY_YEAR, Policy, PolicyViolation};
pub use crate::rejection::{Rejection, RejectionHandler};
pub use crate::require::{RequireCertified, RequireCertifiedFuture, RequireCertifiedLayer};
pub use crate::secret::Secret;
pub use crate::source::{BoxFuture, CertificationSource};

/// Guards a handler with a [`Policy`]; see the crate docs.
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
