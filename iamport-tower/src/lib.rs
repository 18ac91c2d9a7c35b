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
mod imp_uid;
pub mod korea;
mod secret;
mod source;

#[cfg(feature = "mock")]
pub mod mock;

pub use crate::certification::{Carrier, Certification, Gender};
pub use crate::client::{DEFAULT_API_URL, IamportClient, IamportClientBuilder, RetryPolicy};
pub use crate::error::Error;
pub use crate::imp_uid::{ImpUid, InvalidId, MAX_IMP_UID_LEN};
pub use crate::secret::Secret;
pub use crate::source::{BoxFuture, CertificationSource};

/// The date/time crate used in this API (`Certification::birth_date` is a
/// [`jiff::civil::Date`]).
pub use jiff;
