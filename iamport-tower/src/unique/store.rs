//! The store traits: [`UniqueStore`] for admission (the layer's four calls) and
//! [`UniqueAdmin`] for operators (import, forget, status).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{ReservationToken, StoreKey};

/// The answer to [`UniqueStore::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The key is now held by the caller's token, until committed, released or the lease ends.
    Reserved,
    /// The person has an account (the key is committed, or in the accounts table), is cooling
    /// down after a [`forget`](UniqueAdmin::forget), or is reserved by someone else whose
    /// lease has not ended (an account is being created).
    Taken,
}

/// Where a key stands ([`UniqueAdmin::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Nobody holds it: a signup of this person would be admitted.
    Free,
    /// Reserved by a signup in progress, whose lease has not ended.
    Reserved,
    /// Committed: the person has an account.
    Committed,
    /// Forgotten with a cooldown: taken until `until`, then free.
    CoolingDown {
        /// When the key frees itself.
        until: SystemTime,
    },
}

/// The store could not answer (unreachable, timed out, refused). Admission fails closed: 503.
///
/// Its message names the store's address and the cause (never a key or a secret). `Debug`
/// prints the same message, so `store.migrate().await?` in `main` reads as a sentence.
#[derive(thiserror::Error)]
#[error("unique store unavailable: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Debug for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl StoreError {
    /// Wraps any error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }

    /// The store did not answer within `bound`.
    pub fn timed_out(bound: Duration) -> Self {
        Self::new(format!("no answer within {bound:?}"))
    }
}

/// Where "one account per person" is reserved, atomically: the four calls admission makes.
///
/// In the shape of tower-sessions' `SessionStore`: a small async trait (implement it with
/// [`async_trait`](super::async_trait)), shared as `Arc<dyn UniqueStore>`.
///
/// Implementations must make `reserve` atomic across every process sharing the store: of any
/// number of concurrent `reserve` calls for a key that is free, exactly one returns
/// [`Reservation::Reserved`]. `commit` and `release` with a token that does not hold the key
/// change nothing. Every call should be bounded in time by the store itself (the layer
/// bounds them too).
#[async_trait]
pub trait UniqueStore: Send + Sync + 'static {
    /// Reserves `key` for `token` for `lease`, unless the person has an account, is cooling
    /// down, or is validly reserved. Reserving again with the token that holds the key is
    /// `Taken` too.
    async fn reserve(
        &self,
        key: &StoreKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError>;

    /// Makes the reservation held by `token` permanent: `true` if the key is committed by
    /// this token now — by this call, or by an earlier one that timed out on our side but
    /// landed. `false` otherwise: released, forgotten, imported over it, or its lease ended
    /// (and someone else may hold it, or the store forgot it).
    async fn commit(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError>;

    /// Gives up the reservation held by `token`. `false` if `token` does not hold it.
    async fn release(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError>;

    /// Whether a signup of this person would be refused now: committed, cooling down, or
    /// validly reserved.
    async fn is_taken(&self, key: &StoreKey) -> Result<bool, StoreError>;

    /// The statement that writes an account's key in the handler's own transaction
    /// (`Certified::record_account`), for a store whose
    /// accounts table lives in the app's database. Only `PostgresStore` has one.
    #[doc(hidden)]
    fn account_statement(&self) -> Option<Arc<str>> {
        None
    }
}

/// What operators do to a [`UniqueStore`]: import people who already have accounts, forget
/// people whose accounts were deleted (at once, or after a cooldown), and look a key up. The
/// `iamport-unique` command speaks this trait.
#[async_trait]
pub trait UniqueAdmin: UniqueStore {
    /// Marks every key committed, whatever it was (people who already have accounts):
    /// how many were not committed before. Batched where the store can.
    async fn register(&self, keys: &[StoreKey]) -> Result<u64, StoreError>;

    /// Forgets every key (account deletion), whatever it was: free at once
    /// (`cooldown_until` `None`), or taken until `cooldown_until`, then free. How many were
    /// committed, reserved or cooling down before. Batched where the store can.
    async fn forget(
        &self,
        keys: &[StoreKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError>;

    /// Where `key` stands.
    async fn status(&self, key: &StoreKey) -> Result<KeyStatus, StoreError>;
}

/// A shared store is a store: keep a handle (to import people, inspect, or share one store
/// between layers) and give the layer a clone.
#[async_trait]
impl<S: UniqueStore + ?Sized> UniqueStore for Arc<S> {
    async fn reserve(
        &self,
        key: &StoreKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        (**self).reserve(key, token, lease).await
    }
    async fn commit(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        (**self).commit(key, token).await
    }
    async fn release(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        (**self).release(key, token).await
    }
    async fn is_taken(&self, key: &StoreKey) -> Result<bool, StoreError> {
        (**self).is_taken(key).await
    }
    fn account_statement(&self) -> Option<Arc<str>> {
        (**self).account_statement()
    }
}

#[async_trait]
impl<S: UniqueAdmin + ?Sized> UniqueAdmin for Arc<S> {
    async fn register(&self, keys: &[StoreKey]) -> Result<u64, StoreError> {
        (**self).register(keys).await
    }
    async fn forget(
        &self,
        keys: &[StoreKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        (**self).forget(keys, cooldown_until).await
    }
    async fn status(&self, key: &StoreKey) -> Result<KeyStatus, StoreError> {
        (**self).status(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn debug_is_the_message() {
        let error = StoreError::new("PostgreSQL at 127.0.0.1:1/test: connection refused");
        assert_eq!(
            format!("{error:?}"),
            "unique store unavailable: PostgreSQL at 127.0.0.1:1/test: connection refused"
        );
    }
}
