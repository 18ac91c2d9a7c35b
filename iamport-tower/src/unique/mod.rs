//! One account per person: [`UniqueStore`]s that reserve, commit and release a person's key.
//!
//! PortOne's guide checks "one account per person" by querying the users table by CI and then
//! inserting — two concurrent signups of one person both pass the query. Here admission under
//! a `unique` policy *reserves* the person's key atomically in a store; only one request can
//! hold it. When the response is a success (2xx) the reservation is committed forever;
//! anything else, or a dropped request (client gone, panic, cancelled future), releases it.
//! Each reservation carries a lease, so a crashed process cannot block a person forever.
//!
//! Keys are an HMAC-SHA256 of the CI under an application secret ([`UniqueKeys`]), never the
//! CI itself: the CI is personal data under Korea's Personal Information Protection Act (a
//! lifelong national identifier for the person), so a store that leaks, or a log of its
//! keys, must not be a list of CIs — and without the secret the keys cannot be matched
//! against CIs from another source.
//!
//! Stores: [`MemoryStore`] (one process; the default), `PostgresStore` (feature `postgres`)
//! and `RedisStore` (feature `redis`) for several app replicas. All pass one conformance
//! suite (`tests/unique.rs`).

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod reservation;

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::{DEFAULT_POSTGRES_TABLE, PostgresStore};
#[cfg(feature = "redis")]
pub use self::redis::{DEFAULT_REDIS_PREFIX, RedisStore};
use crate::secret::Secret;
use crate::source::BoxFuture;

/// A person's key in a unique store: HMAC-SHA256(secret, CI). `Debug` shows only a prefix.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UniqueKey([u8; 32]);

impl UniqueKey {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters (how the Redis store names keys).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key from raw bytes (for stores reading keys back, and tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for UniqueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UniqueKey({}…)", &self.to_hex()[..8])
    }
}

/// Turns CIs into [`UniqueKey`]s with an application secret. Keep the secret stable (changing
/// it makes every existing account look new) and out of the source code.
#[derive(Clone)]
pub struct UniqueKeys {
    mac: Hmac<Sha256>,
}

impl UniqueKeys {
    /// Keys under `secret` (at least 16 bytes recommended; use a random 32-byte value).
    pub fn new(secret: &Secret) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC takes keys of any length"),
        }
    }

    /// Keys under a random secret: fine for a [`MemoryStore`], whose keys die with the process.
    pub fn random() -> Self {
        let secret: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
        Self::new(&Secret::new(secret))
    }

    /// The key of the person with this CI.
    pub fn key_for(&self, ci: &str) -> UniqueKey {
        let mut mac = self.mac.clone();
        mac.update(ci.as_bytes());
        UniqueKey(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for UniqueKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UniqueKeys(<redacted>)")
    }
}

/// Proof of holding a reservation: only its holder can commit or release it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationToken(u128);

impl ReservationToken {
    /// A fresh random token.
    pub fn random() -> Self {
        Self(fastrand::u128(..))
    }

    /// The token as 32 hex digits (how stores persist it).
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses [`to_hex`](Self::to_hex)'s output.
    pub fn from_hex(hex: &str) -> Option<Self> {
        u128::from_str_radix(hex, 16).ok().map(Self)
    }
}

impl fmt::Debug for ReservationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReservationToken({:08x}…)", (self.0 >> 96) as u32)
    }
}

/// The answer to [`UniqueStore::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The key is now held by the caller, until committed, released or the lease ends.
    Reserved(ReservationToken),
    /// The key is committed (the person has an account) or reserved by someone else whose
    /// lease has not ended (an account is being created).
    Taken,
}

/// The store could not answer (unreachable, timed out, refused). Admission fails closed: 503.
#[derive(Debug, thiserror::Error)]
#[error("unique store unavailable: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps any error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Where "one account per person" is decided, atomically.
///
/// Implementations must make `reserve` atomic across every process sharing the store: of any
/// number of concurrent `reserve` calls for a key that is free, exactly one returns
/// [`Reservation::Reserved`]. `commit` and `release` with a token that does not hold the key
/// change nothing and return `false`.
pub trait UniqueStore: Send + Sync + 'static {
    /// Reserves `key` for `lease` unless it is committed or validly reserved.
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>>;

    /// Makes the reservation held by `token` permanent. `false` if `token` does not hold it
    /// (it was released, or its lease ended — after which a store may forget it, as Redis
    /// does, or keep it until someone else reserves the key, as PostgreSQL and memory do).
    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives up the reservation held by `token`. `false` if `token` does not hold it.
    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// A shared store is a store: keep a handle (to pre-register people, inspect, or share one
/// store between layers) and give the layer a clone.
impl<S: UniqueStore + ?Sized> UniqueStore for std::sync::Arc<S> {
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        (**self).reserve(key, lease)
    }

    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).commit(key, token)
    }

    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).release(key, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_keyed_and_stable() {
        let a = UniqueKeys::new(&Secret::new("secret-a"));
        let b = UniqueKeys::new(&Secret::new("secret-b"));
        let ci = "CI-VALUE-88-CHARS";
        assert_eq!(a.key_for(ci), a.key_for(ci));
        assert_ne!(a.key_for(ci), b.key_for(ci));
        assert_ne!(a.key_for(ci), a.key_for("other"));
        // RFC 4231-style check against a known HMAC-SHA256 value.
        let k = UniqueKeys::new(&Secret::new("key"))
            .key_for("The quick brown fox jumps over the lazy dog");
        assert_eq!(
            k.to_hex(),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert!(!format!("{a:?} {:?}", a.key_for(ci)).contains(ci));
    }

    #[test]
    fn tokens_round_trip() {
        let t = ReservationToken::random();
        assert_eq!(ReservationToken::from_hex(&t.to_hex()), Some(t));
    }
}
