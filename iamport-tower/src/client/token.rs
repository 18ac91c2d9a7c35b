//! The access-token cache: one token per lifetime, renewed ahead of expiry, one refresh at a
//! time however many requests need it.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::secret::Secret;

/// A token as PortOne issued it, with the local instant the request for it was sent.
pub(crate) struct IssuedToken {
    pub(crate) value: Secret,
    /// Server clock when issuing (`now`).
    pub(crate) server_now: i64,
    /// Server clock at expiry (`expired_at`).
    pub(crate) server_expired_at: i64,
    /// Local instant just before the request went out: a conservative start of the lifetime.
    pub(crate) requested_at: Instant,
}

#[derive(Clone)]
struct CachedToken {
    value: Secret,
    renew_at: Instant,
    expires_at: Instant,
}

/// Caches the token against the *server's* notion of its lifetime (`expired_at - now`),
/// mapped onto the local monotonic clock, so a skewed local wall clock changes nothing.
pub(crate) struct TokenCache {
    slot: Mutex<Option<CachedToken>>,
    /// Held by the one caller fetching a token; the others wait on it (single flight).
    refresh: tokio::sync::Mutex<()>,
    renew_before: Duration,
}

impl TokenCache {
    pub(crate) fn new(renew_before: Duration) -> Self {
        Self {
            slot: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            renew_before,
        }
    }

    fn current(&self) -> Option<CachedToken> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A valid token: the cached one, or one fetched by `fetch` (called at most once, and by
    /// at most one caller at a time across the whole cache).
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IssuedToken, Error>>,
    {
        if let Some(token) = self.current() {
            let now = Instant::now();
            if now < token.renew_at {
                return Ok(token.value);
            }
            if now < token.expires_at {
                // Due for renewal but still valid: one caller renews, nobody waits for it.
                let Ok(_guard) = self.refresh.try_lock() else {
                    return Ok(token.value);
                };
                if let Some(fresh) = self.current().filter(|t| Instant::now() < t.renew_at) {
                    return Ok(fresh.value);
                }
                return match fetch().await {
                    Ok(issued) => Ok(self.store(issued)),
                    Err(error) => {
                        tracing::warn!(%error, "renewing the PortOne access token failed; using the current one until it expires");
                        Ok(token.value)
                    }
                };
            }
        }
        let _guard = self.refresh.lock().await;
        if let Some(fresh) = self.current().filter(|t| Instant::now() < t.renew_at) {
            return Ok(fresh.value);
        }
        Ok(self.store(fetch().await?))
    }

    fn store(&self, issued: IssuedToken) -> Secret {
        // `now` is the server clock truncated to the second, so the true remaining life is
        // up to a second shorter than `expired_at - now`: count on the shorter one.
        let remaining = issued.server_expired_at - issued.server_now - 1;
        let lifetime = Duration::from_secs(u64::try_from(remaining).unwrap_or(0));
        // Renew `renew_before` ahead, but never later than half-way through a short lifetime,
        // so a token that comes back with little life left does not cause a refresh storm.
        let margin = self.renew_before.min(lifetime / 2);
        let expires_at = issued.requested_at + lifetime;
        let token = CachedToken {
            value: issued.value.clone(),
            renew_at: expires_at - margin,
            expires_at,
        };
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "cached a PortOne access token"
        );
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        issued.value
    }

    /// Forgets `rejected` (PortOne answered 401 with it). A newer token that another caller
    /// already fetched is kept.
    pub(crate) fn invalidate(&self, rejected: &Secret) {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|t| &t.value == rejected) {
            *slot = None;
        }
    }
}
