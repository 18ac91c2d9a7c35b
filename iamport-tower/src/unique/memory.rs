//! `MemoryStore`: reservations in this process's memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{KeyStatus, Reservation, ReservationToken, StoreError, UniqueKey};

enum Entry {
    Reserved {
        token: ReservationToken,
        until: Instant,
    },
    Committed,
    CoolingDown {
        until: SystemTime,
    },
}

impl Entry {
    /// Whether the entry still holds its key.
    fn live(&self, now: Instant) -> bool {
        match self {
            Entry::Reserved { until, .. } => *until > now,
            Entry::Committed => true,
            Entry::CoolingDown { until } => *until > SystemTime::now(),
        }
    }

    fn held_by(&self, token: ReservationToken) -> bool {
        matches!(self, Entry::Reserved { token: t, .. } if *t == token)
    }
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

    async fn reserve_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        Ok(self.with(|entries| {
            let now = Instant::now();
            if entries.get(key).is_some_and(|e| e.live(now)) {
                return Reservation::Taken;
            }
            let until = now + lease;
            entries.insert(key.clone(), Entry::Reserved { token, until });
            Reservation::Reserved
        }))
    }

    async fn renew_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|entries| match entries.get_mut(key) {
            Some(Entry::Reserved { token: t, until }) if *t == token => {
                *until = Instant::now() + lease;
                true
            }
            _ => false,
        }))
    }

    async fn commit_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|entries| {
            let holds = entries.get(key).is_some_and(|e| e.held_by(token));
            if holds {
                entries.insert(key.clone(), Entry::Committed);
            }
            holds
        }))
    }

    async fn release_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|entries| {
            let holds = entries.get(key).is_some_and(|e| e.held_by(token));
            if holds {
                entries.remove(key);
            }
            holds
        }))
    }

    async fn register_key(&self, key: &UniqueKey) -> Result<bool, StoreError> {
        Ok(self.with(|entries| {
            !matches!(
                entries.insert(key.clone(), Entry::Committed),
                Some(Entry::Committed)
            )
        }))
    }

    async fn forget_key(
        &self,
        key: &UniqueKey,
        cooldown_until: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|entries| {
            let before = match cooldown_until {
                Some(until) => entries.insert(key.clone(), Entry::CoolingDown { until }),
                None => entries.remove(key),
            };
            before.is_some_and(|e| e.live(Instant::now()))
        }))
    }

    async fn key_status(&self, key: &UniqueKey) -> Result<KeyStatus, StoreError> {
        Ok(self.with(|entries| {
            let now = Instant::now();
            match entries.get(key) {
                Some(e) if !e.live(now) => KeyStatus::Free,
                Some(Entry::Reserved { .. }) => KeyStatus::Reserved,
                Some(Entry::Committed) => KeyStatus::Committed,
                Some(Entry::CoolingDown { until }) => KeyStatus::CoolingDown { until: *until },
                None => KeyStatus::Free,
            }
        }))
    }

    async fn register_keys(&self, keys: &[UniqueKey]) -> Result<u64, StoreError> {
        let mut new = 0;
        for key in keys {
            new += u64::from(self.register_key(key).await?);
        }
        Ok(new)
    }

    async fn forget_keys(
        &self,
        keys: &[UniqueKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        let mut found = 0;
        for key in keys {
            found += u64::from(self.forget_key(key, cooldown_until).await?);
        }
        Ok(found)
    }
}

super::unique_store_via_inherent!(impl for MemoryStore);
