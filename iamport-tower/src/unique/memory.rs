//! `MemoryStore`: reservations in this process's memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{Reservation, ReservationToken, StoreError, UniqueKey, UniqueStore};
use crate::source::BoxFuture;

enum Entry {
    Reserved {
        token: ReservationToken,
        until: Instant,
    },
    Committed,
}

/// Reservations in memory: correct within one process, forgotten on restart. The default
/// store; use `PostgresStore` or `RedisStore` when several replicas serve the same users.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<UniqueKey, Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("MemoryStore").field("keys", &len).finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<UniqueKey, Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl UniqueStore for MemoryStore {
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        let outcome = self.with(|entries| {
            let now = Instant::now();
            match entries.get(key) {
                Some(Entry::Committed) => Reservation::Taken,
                Some(Entry::Reserved { until, .. }) if *until > now => Reservation::Taken,
                _ => {
                    let token = ReservationToken::random();
                    entries.insert(
                        key.clone(),
                        Entry::Reserved {
                            token,
                            until: now + lease,
                        },
                    );
                    Reservation::Reserved(token)
                }
            }
        });
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let done = self.with(|entries| {
            let holds =
                matches!(entries.get(key), Some(Entry::Reserved { token: t, .. }) if *t == token);
            if holds {
                entries.insert(key.clone(), Entry::Committed);
            }
            holds
        });
        Box::pin(std::future::ready(Ok(done)))
    }

    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let done = self.with(|entries| {
            if matches!(entries.get(key), Some(Entry::Reserved { token: t, .. }) if *t == token) {
                entries.remove(key);
                true
            } else {
                false
            }
        });
        Box::pin(std::future::ready(Ok(done)))
    }
}
