//! The per-request link between admission (which reserves) and the layer's response future
//! (which commits or releases).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Reservation, ReservationToken, UniqueKey, UniqueKeys, UniqueStore};
use crate::rejection::Rejection;

/// What the layer was configured with.
#[derive(Clone)]
pub(crate) struct UniqueConfig {
    pub(crate) store: Arc<dyn UniqueStore>,
    pub(crate) keys: UniqueKeys,
    pub(crate) lease: Duration,
}

struct Held {
    key: UniqueKey,
    token: ReservationToken,
}

/// Shared by the request (as an extension) and the layer's response future.
#[derive(Clone)]
pub(crate) struct UniqueSlot {
    config: Arc<UniqueConfig>,
    held: Arc<Mutex<Option<Held>>>,
}

impl std::fmt::Debug for UniqueSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueSlot").finish_non_exhaustive()
    }
}

impl UniqueSlot {
    pub(crate) fn new(config: Arc<UniqueConfig>) -> Self {
        Self {
            config,
            held: Arc::new(Mutex::new(None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the person with this CI for this request (once, however many guards ask).
    pub(crate) async fn reserve(&self, ci: &str) -> Result<(), Rejection> {
        if self.lock().is_some() {
            return Ok(());
        }
        let key = self.config.keys.key_for(ci);
        match self.config.store.reserve(&key, self.config.lease).await {
            Ok(Reservation::Reserved(token)) => {
                *self.lock() = Some(Held { key, token });
                Ok(())
            }
            Ok(Reservation::Taken) => Err(Rejection::AlreadyRegistered),
            Err(error) => {
                tracing::warn!(%error, "unique store unavailable; refusing the request (503)");
                Err(Rejection::StoreUnavailable)
            }
        }
    }

    /// Whether this request holds a reservation that still needs settling.
    pub(crate) fn is_held(&self) -> bool {
        self.lock().is_some()
    }

    /// Commits (`success`) or releases the reservation, if one is held.
    pub(crate) async fn settle(&self, success: bool) {
        let Some(Held { key, token }) = self.lock().take() else {
            return;
        };
        let store = &self.config.store;
        if success {
            match store.commit(&key, token).await {
                Ok(true) => {}
                Ok(false) => tracing::error!(
                    ?key,
                    "the reservation's lease ended before the handler succeeded; raise \
                     `unique_lease` above your handler's worst-case time"
                ),
                Err(error) => tracing::error!(
                    %error, ?key,
                    "could not commit a unique reservation after a successful response; the \
                     person may register again once the lease ends"
                ),
            }
        } else if let Err(error) = store.release(&key, token).await {
            tracing::warn!(%error, ?key, "could not release a unique reservation; it ends with its lease");
        }
    }

    /// Releases in the background (the request was dropped before it finished).
    pub(crate) fn release_detached(&self) {
        if !self.is_held() {
            return;
        }
        let slot = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { slot.settle(false).await });
            }
            Err(_) => tracing::warn!(
                "no tokio runtime to release a unique reservation; it ends with its lease"
            ),
        }
    }
}

/// The reservation a request may hold, from the layer's response future: settled by the
/// response's status, or released in the background if the future is dropped first (client
/// gone, timeout, panic in the handler).
pub(crate) struct HeldReservation(Option<UniqueSlot>);

impl HeldReservation {
    pub(crate) fn new(slot: Option<UniqueSlot>) -> Self {
        Self(slot)
    }

    pub(crate) fn hold(&mut self, slot: Option<UniqueSlot>) {
        self.0 = slot;
    }

    /// Commits (`success`) or releases in a task of its own, so the commit completes even if
    /// the client goes away while it runs. `None` when nothing is held.
    pub(crate) fn settle(&mut self, success: bool) -> Option<tokio::task::JoinHandle<()>> {
        let slot = self.0.take().filter(UniqueSlot::is_held)?;
        Some(tokio::spawn(async move { slot.settle(success).await }))
    }
}

impl Drop for HeldReservation {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.release_detached();
        }
    }
}
