//! The PortOne (i'mport) identity verification clients beneath
//! [`iamport-tower`](https://docs.rs/iamport-tower): PortOne v1's REST API
//! ([`IamportClient`]) and v2's ([`PortOneClient`]) on `reqwest`, the [`Certification`] both
//! map to, and the [`CertificationSource`] trait the layer looks ids up through.
//!
//! This crate knows nothing of layers, caches, stores or policies: it turns an id into a
//! verified person, with a cached access token, timeouts, bounded retries and capped answers.
//! Use it through `iamport-tower`, which re-exports everything here under the same paths
//! (`iamport_tower::IamportClient`, `iamport_tower::client::RetryPolicy`, …); depend on it
//! alone to call PortOne by hand.
//!
//! ```no_run
//! # async fn run() -> Result<(), iamport_client::Error> {
//! use iamport_client::{IamportClient, ImpUid};
//!
//! let client = IamportClient::from_env()?; // IMP_KEY, IMP_SECRET
//! let person = client.certification(&ImpUid::parse("imp_123456789012")?).await?;
//! println!("born {:?}", person.birth_date);
//! # Ok(()) }
//! ```

#![deny(unreachable_pub)]
#![warn(missing_docs)]

mod certification;
pub mod client;
mod error;
#[doc(hidden)]
pub mod escaped;
pub mod id;
pub mod korea;
pub mod metrics;
mod secret;
pub mod source;
pub mod v2;

pub use crate::certification::{Carrier, Certification, Gender};
pub use crate::client::{IamportClient, ImpUid};
pub use crate::error::Error;
pub use crate::secret::{MIN_KEY_SECRET_LEN, Secret};
pub use crate::source::CertificationSource;
pub use crate::v2::PortOneClient;
