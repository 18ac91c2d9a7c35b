//! The access-token cache: one token per lifetime, renewed ahead of expiry, one refresh at a
//! time however many requests need it.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::escaped::Escaped;
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
///
/// One fetch at a time, and its outcome is shared: callers that waited for a fetch that
/// failed get a copy of that failure instead of fetching again, and for `retry_after` after a
/// failure every caller gets it at once. A token outage therefore costs one fetch (with its
/// own transport retries) per `retry_after`, however many requests arrive.
pub(crate) struct TokenCache {
    slot: Mutex<Slot>,
    /// Held by the one caller fetching a token; the others wait on it (single flight).
    refresh: tokio::sync::Mutex<()>,
    renew_before: Duration,
    retry_after: Duration,
}

#[derive(Default)]
struct Slot {
    token: Option<CachedToken>,
    /// The last fetch's failure, while no token was fetched since.
    failure: Option<Failure>,
    /// Counts finished fetches, successful or not.
    fetches: u64,
}

struct Failure {
    error: Error,
    at: Instant,
    /// `Slot::fetches` once this failure was recorded.
    fetch: u64,
}

impl TokenCache {
    pub(crate) fn new(renew_before: Duration, retry_after: Duration) -> Self {
        Self {
            slot: Mutex::new(Slot::default()),
            refresh: tokio::sync::Mutex::new(()),
            renew_before,
            retry_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn current(&self) -> Option<CachedToken> {
        self.lock().token.clone()
    }

    /// The cached token while it needs no renewal: the path of nearly every call, without
    /// the state of a fetch.
    pub(crate) fn fresh(&self) -> Option<Secret> {
        self.current()
            .filter(|token| Instant::now() < token.renew_at)
            .map(|token| token.value)
    }

    /// A valid token: the cached one, or one fetched by `fetch` (called at most once, and by
    /// at most one caller at a time across the whole cache). The fetch is boxed: it is rare,
    /// and inline it would make every lookup's state as large as a token request's.
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
                if self.recent_failure(u64::MAX).is_some() {
                    return Ok(token.value);
                }
                return match Box::pin(self.fetch_and_record(fetch)).await {
                    Ok(value) => Ok(value),
                    Err(error) => {
                        tracing::warn!(error = %Escaped(&error), "renewing the PortOne access token failed; using the current one until it expires");
                        Ok(token.value)
                    }
                };
            }
        }
        let seen = self.lock().fetches;
        if let Some(error) = self.recent_failure(seen) {
            return Err(error);
        }
        let _guard = self.refresh.lock().await;
        if let Some(fresh) = self.current().filter(|t| Instant::now() < t.renew_at) {
            return Ok(fresh.value);
        }
        // A fetch that finished while this caller waited failed: share its failure.
        if let Some(error) = self.recent_failure(seen) {
            return Err(error);
        }
        Box::pin(self.fetch_and_record(fetch)).await
    }

    /// A copy of the last failure when it is within `retry_after`, or when it comes from a
    /// fetch that finished after the caller saw `seen` fetches.
    fn recent_failure(&self, seen: u64) -> Option<Error> {
        let slot = self.lock();
        let failure = slot.failure.as_ref()?;
        (failure.fetch > seen || failure.at.elapsed() < self.retry_after)
            .then(|| failure.error.duplicate())
    }

    async fn fetch_and_record<F, Fut>(&self, fetch: F) -> Result<Secret, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IssuedToken, Error>>,
    {
        let outcome = fetch().await;
        let mut slot = self.lock();
        slot.fetches += 1;
        match outcome {
            Ok(issued) => {
                slot.failure = None;
                Ok(self.store(&mut slot, issued))
            }
            Err(error) => {
                slot.failure = Some(Failure {
                    error: error.duplicate(),
                    at: Instant::now(),
                    fetch: slot.fetches,
                });
                Err(error)
            }
        }
    }

    fn store(&self, slot: &mut Slot, issued: IssuedToken) -> Secret {
        // `now` is the server clock truncated to the second, so the true remaining life is
        // up to a second shorter than `expired_at - now`: count on the shorter one.
        let remaining = issued.server_expired_at - issued.server_now - 1;
        let lifetime = Duration::from_secs(u64::try_from(remaining).unwrap_or(0));
        // Renew `renew_before` ahead, but never later than half-way through a short lifetime,
        // so a token that comes back with little life left does not cause a refresh storm.
        let margin = self.renew_before.min(lifetime / 2);
        let expires_at = issued.requested_at + lifetime;
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "cached a PortOne access token"
        );
        slot.token = Some(CachedToken {
            value: issued.value.clone(),
            renew_at: expires_at - margin,
            expires_at,
        });
        issued.value
    }

    /// Forgets `rejected` (PortOne answered 401 with it). A newer token that another caller
    /// already fetched is kept.
    pub(crate) fn invalidate(&self, rejected: &Secret) {
        let mut slot = self.lock();
        if slot.token.as_ref().is_some_and(|t| &t.value == rejected) {
            slot.token = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn issued() -> IssuedToken {
        IssuedToken {
            value: Secret::new("token".to_owned()),
            server_now: 0,
            server_expired_at: 1800,
            requested_at: Instant::now(),
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn waiters_share_one_failed_fetch_and_back_off() {
        let cache = Arc::new(TokenCache::new(
            Duration::from_secs(60),
            Duration::from_secs(1),
        ));
        let fetches = Arc::new(AtomicU32::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cache, fetches, mut released) = (cache.clone(), fetches.clone(), released.clone());
            tasks.spawn(async move {
                cache
                    .get(|| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Err::<IssuedToken, _>(Error::Unavailable("down".into()))
                    })
                    .await
            });
        }
        // Let every task reach the cache, then let the one fetch fail.
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        while let Some(outcome) = tasks.join_next().await {
            assert!(matches!(outcome.unwrap(), Err(Error::Unavailable(_))));
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one fetch for 50 waiters"
        );

        // Within the back-off, nobody fetches.
        let again = cache
            .get(|| async { panic!("fetched during the back-off") })
            .await;
        assert!(matches!(again, Err(Error::Unavailable(_))));

        // After it, the next caller fetches again, and a success clears the failure.
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(cache.get(|| async { Ok(issued()) }).await.is_ok());
        assert!(cache.get(|| async { panic!("cached") }).await.is_ok());
    }
}
