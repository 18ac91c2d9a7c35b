//! `MemoryStore`: reservations in this process's memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;

use super::{
    KeyStatus, Reservation, ReservationToken, StoreError, StoreKey, UniqueAdmin, UniqueStore,
};

enum Entry {
    Reserved {
        token: ReservationToken,
        until: Instant,
    },
    /// By this token's signup, or `None`: imported.
    Committed(Option<ReservationToken>),
    CoolingDown {
        until: SystemTime,
    },
}

impl Entry {
    /// Whether the entry still holds its key.
    fn live(&self, now: Instant) -> bool {
        match self {
            Entry::Reserved { until, .. } => *until > now,
            Entry::Committed(_) => true,
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
    entries: Mutex<HashMap<StoreKey, Entry>>,
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

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<StoreKey, Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn status_of(&self, key: &StoreKey) -> KeyStatus {
        self.with(|entries| match entries.get(key) {
            Some(e) if !e.live(Instant::now()) => KeyStatus::Free,
            Some(Entry::Reserved { .. }) => KeyStatus::Reserved,
            Some(Entry::Committed(_)) => KeyStatus::Committed,
            Some(Entry::CoolingDown { until }) => KeyStatus::CoolingDown { until: *until },
            None => KeyStatus::Free,
        })
    }
}

#[async_trait]
impl UniqueStore for MemoryStore {
    async fn reserve(
        &self,
        key: &StoreKey,
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

    async fn commit(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        Ok(self.with(|entries| match entries.get(key) {
            Some(Entry::Committed(by)) => *by == Some(token),
            Some(entry) if entry.held_by(token) => {
                entries.insert(key.clone(), Entry::Committed(Some(token)));
                true
            }
            _ => false,
        }))
    }

    async fn release(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        Ok(self.with(|entries| {
            let holds = entries.get(key).is_some_and(|e| e.held_by(token));
            if holds {
                entries.remove(key);
            }
            holds
        }))
    }

    async fn is_taken(&self, key: &StoreKey) -> Result<bool, StoreError> {
        Ok(self.status_of(key) != KeyStatus::Free)
    }
}

#[async_trait]
impl UniqueAdmin for MemoryStore {
    async fn register(&self, keys: &[StoreKey]) -> Result<u64, StoreError> {
        Ok(self.with(|entries| {
            keys.iter()
                .filter(|key| {
                    !matches!(
                        entries.insert((*key).clone(), Entry::Committed(None)),
                        Some(Entry::Committed(_))
                    )
                })
                .count() as u64
        }))
    }

    async fn forget(
        &self,
        keys: &[StoreKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        Ok(self.with(|entries| {
            let now = Instant::now();
            keys.iter()
                .filter(|key| {
                    let before = match cooldown_until {
                        Some(until) => entries.insert((*key).clone(), Entry::CoolingDown { until }),
                        None => entries.remove(*key),
                    };
                    before.is_some_and(|e| e.live(now))
                })
                .count() as u64
        }))
    }

    async fn status(&self, key: &StoreKey) -> Result<KeyStatus, StoreError> {
        Ok(self.status_of(key))
    }
}
