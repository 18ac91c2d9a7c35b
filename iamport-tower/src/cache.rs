//! The lookup cache: resolved verifications kept for a short time, so a burst of requests for
//! one id — a double-click, the redirect page after the popup, a retry after a handler's
//! 5xx — costs one upstream call.
//!
//! A verification PortOne reports as `certified` does not change any more, so the layer keeps
//! it for [`LookupCache::verified_for`] (default 60 s) and answers every request for that id
//! from memory meanwhile. "Not found" is kept for [`LookupCache::not_found_for`] (default 3 s):
//! long enough to blunt someone spraying made-up ids, short enough that an id PortOne had not
//! yet published is soon looked up again. Everything else is never kept — errors (a timeout,
//! a 5xx, refused credentials), and records that are not `certified` (a v2 `READY`
//! verification may still complete). Concurrent requests for an id that is not cached share
//! one upstream call, whatever the outcome, and that call runs to its end even when the request
//! that started it goes away, so the next request finds its result.
//!
//! The cache lives in the layer (one per [`CertificationLayer`](crate::CertificationLayer),
//! bounded by [`LookupCache::max_entries`], default 10 000). Deleting a verification through
//! the client the layer was built from
//! ([`IamportClient::delete_certification`](crate::IamportClient::delete_certification))
//! evicts it from every layer built from that client or its clones, through the client's
//! [`Evictions`](crate::source::Evictions); a lookup that was in flight while the delete ran is not kept either.
//!
//! The trade-offs: for up to 60 s after PortOne answered, a verified record — personal data —
//! stays in this process's memory (it is in the request's memory anyway while the handler
//! runs), and a change made at PortOne behind this process's back (a delete from PortOne's
//! console, from another process or another client) is seen only when the entry expires.
//! Set [`LookupCache::verified_for`] and [`LookupCache::not_found_for`] to zero (or use
//! [`LookupCache::disabled`]) to turn the cache off: concurrent lookups of one id are still
//! shared, through one plain map of the calls in flight (no cache machinery, whose futures
//! are twice the size, and no task of its own on the request path), and a call whose every
//! waiting request went away is dropped with them — there is nothing to keep its answer for.
//! With the cache on, moka's own single flight (`try_get_with`) shares them. When the cache is full, the least recently used entries make room: an id's
//! repeats come within seconds of its first lookup, so recency is what counts (moka's default
//! TinyLFU would refuse most new ids once full, each having been seen once before it is
//! stored). Under more than `max_entries` distinct ids within a repeat's delay, an id may be
//! looked up again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use moka::Expiry;
use tokio::sync::OnceCell;
use tracing::Instrument as _;

use crate::certification::Certification;
use crate::escaped::Escaped;
use crate::metrics::{self, CacheEffect, LookupResult};
use crate::rejection::Rejection;
use crate::source::{BoxFuture, CertificationSource, Evict};

/// How long the layer keeps resolved verifications; set it with
/// [`CertificationLayer::lookup_cache`](crate::CertificationLayer::lookup_cache). See the
/// [module docs](self) for what is kept and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct LookupCache {
    verified_for: Duration,
    not_found_for: Duration,
    max_entries: u64,
}

/// The default lifetime of a cached `certified` verification: 60 s.
pub const DEFAULT_VERIFIED_FOR: Duration = Duration::from_secs(60);
/// The default lifetime of a cached "not found": 3 s.
pub const DEFAULT_NOT_FOUND_FOR: Duration = Duration::from_secs(3);
/// The default bound on cached ids: 10 000 (a verification takes about 1 KiB).
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

impl Default for LookupCache {
    fn default() -> Self {
        Self {
            verified_for: DEFAULT_VERIFIED_FOR,
            not_found_for: DEFAULT_NOT_FOUND_FOR,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

impl LookupCache {
    /// Nothing kept: every request that is not concurrent with another for the same id asks
    /// PortOne (concurrent ones still share one call).
    pub fn disabled() -> Self {
        Self {
            verified_for: Duration::ZERO,
            not_found_for: Duration::ZERO,
            ..Self::default()
        }
    }

    /// How long a `certified` verification is kept (default [`DEFAULT_VERIFIED_FOR`]).
    pub fn verified_for(mut self, lifetime: Duration) -> Self {
        self.verified_for = lifetime;
        self
    }

    /// How long PortOne's "not found" for an id is kept (default [`DEFAULT_NOT_FOUND_FOR`]).
    pub fn not_found_for(mut self, lifetime: Duration) -> Self {
        self.not_found_for = lifetime;
        self
    }

    /// The most ids kept at once (default [`DEFAULT_MAX_ENTRIES`]).
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }

    /// Whether nothing is ever kept (both lifetimes zero).
    fn keeps_nothing(&self) -> bool {
        self.verified_for.is_zero() && self.not_found_for.is_zero()
    }
}

/// Forgets evicted ids: what [`Evictions`] calls on each cache built over a source.
impl Evict for Core {
    fn evict<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // First the generation (a lookup answered before the delete and stored from now
            // on expires at once), then the entry (one stored before).
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.entries.invalidate(id).await;
        })
    }
}

/// A kept answer: the verification, or `None` for "not found"; `generation` is the cache's
/// eviction generation when the lookup started.
#[derive(Clone)]
struct Entry {
    record: Option<Arc<Certification>>,
    generation: u64,
}

impl Entry {
    fn outcome(self) -> Outcome {
        match self.record {
            Some(cert) => Outcome::Verified(cert),
            None => Outcome::Refused(Rejection::UnknownId),
        }
    }

    /// What may be kept of an upstream answer: a verification, or PortOne's "not found" (the
    /// only way to [`Rejection::UnknownId`]); any other refusal is an error, never kept.
    fn of(outcome: Outcome, generation: u64) -> Result<Self, Rejection> {
        match outcome {
            Outcome::Verified(cert) => Ok(Self {
                record: Some(cert),
                generation,
            }),
            Outcome::Refused(Rejection::UnknownId) => Ok(Self {
                record: None,
                generation,
            }),
            Outcome::Refused(rejection) => Err(rejection),
        }
    }
}

struct Core {
    entries: moka::future::Cache<String, Entry>,
    generation: Arc<AtomicU64>,
}

/// Per-entry lifetimes: what kind of answer it is, and whether an eviction ran while it was
/// being looked up.
struct Lifetimes {
    settings: LookupCache,
    generation: Arc<AtomicU64>,
}

impl Expiry<String, Entry> for Lifetimes {
    fn expire_after_create(&self, _id: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        if entry.generation != self.generation.load(Ordering::Acquire) {
            return Some(Duration::ZERO);
        }
        Some(match &entry.record {
            Some(cert) if cert.certified => self.settings.verified_for,
            Some(_) => Duration::ZERO,
            None => self.settings.not_found_for,
        })
    }
}

/// The layer's lookups: cache plus in-flight sharing, over one source.
pub(crate) struct Lookups {
    source: Arc<dyn CertificationSource>,
    core: Arc<Core>,
    settings: LookupCache,
    /// Without a cache: the calls in flight, by id.
    in_flight: Mutex<HashMap<Box<str>, Call>>,
}

/// The answer of one upstream call, for everyone who waits for it.
type Call = Arc<OnceCell<Result<Entry, Rejection>>>;

/// A request's share in a [`Call`]: the last one to leave removes the call from the map,
/// answered or not (a call whose waiters all went away is dropped with them, and the next
/// request for the id starts afresh).
struct Waiting<'a> {
    in_flight: &'a Mutex<HashMap<Box<str>, Call>>,
    id: &'a str,
    call: Call,
}

impl<'a> Waiting<'a> {
    fn join(in_flight: &'a Mutex<HashMap<Box<str>, Call>>, id: &'a str) -> Self {
        let mut calls = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let call = calls.entry(id.into()).or_default().clone();
        Self {
            in_flight,
            id,
            call,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut calls = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Clones are made under the lock: the map's and ours are the last two.
        if Arc::strong_count(&self.call) == 2
            && calls
                .get(self.id)
                .is_some_and(|call| Arc::ptr_eq(call, &self.call))
        {
            calls.remove(self.id);
        }
    }
}

impl Lookups {
    pub(crate) fn new(source: Arc<dyn CertificationSource>, settings: LookupCache) -> Self {
        let generation = Arc::new(AtomicU64::new(0));
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_entries)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(Lifetimes {
                settings,
                generation: generation.clone(),
            })
            .build();
        let core = Arc::new(Core {
            entries,
            generation,
        });
        if let Some(evictions) = source.evictions() {
            let weak: Weak<dyn Evict> = Arc::downgrade(&core) as Weak<dyn Evict>;
            evictions.register(weak);
        }
        Self {
            source,
            core,
            settings,
            in_flight: Mutex::default(),
        }
    }

    pub(crate) fn source(&self) -> &Arc<dyn CertificationSource> {
        &self.source
    }

    pub(crate) fn settings(&self) -> LookupCache {
        self.settings
    }

    /// Resolves an id that passed the source's syntax check, for a request to `route`.
    pub(crate) async fn resolve(&self, id: &str, route: &str) -> Outcome {
        let (answer, led) = if self.settings.keeps_nothing() {
            self.share(id, route).await
        // Boxed: moka's `get` is several times the size of the rest of a lookup's state, and
        // ends at once; inline, every request in flight would hold room for it.
        } else if let Some(entry) = Box::pin(self.core.entries.get(id)).await {
            metrics::lookup_cache(match entry.record {
                Some(_) => CacheEffect::Hit,
                None => CacheEffect::NegativeHit,
            });
            return entry.outcome();
        } else {
            self.spawn_look_up(id, route).await
        };
        if led {
            metrics::lookup_cache(CacheEffect::Miss);
        } else {
            tracing::debug!(route, "joined a lookup already in flight for the same id");
            metrics::lookup_joined();
        }
        answer.map_or_else(Outcome::Refused, Entry::outcome)
    }

    /// Without a cache: joins the call in flight for `id`, or makes it (then `true`), in the
    /// request's own task.
    async fn share(&self, id: &str, route: &str) -> (Result<Entry, Rejection>, bool) {
        let waiting = Waiting::join(&self.in_flight, id);
        let mut led = false;
        let answer = waiting
            .call
            .get_or_init(|| {
                led = true;
                let span =
                    tracing::info_span!("iamport_lookup", source = self.source.label(), route);
                async move {
                    let outcome = upstream_lookup(&*self.source, id).instrument(span).await;
                    Entry::of(outcome, 0)
                }
            })
            .await
            .clone();
        (answer, led)
    }

    /// Joins the lookup in flight for `id`, or makes it (then `true`): moka runs one
    /// initializer per key at a time, and the others wait for its answer.
    async fn look_up(
        core: Arc<Core>,
        source: Arc<dyn CertificationSource>,
        id: String,
        route: &str,
    ) -> (Result<Entry, Rejection>, bool) {
        let span = tracing::info_span!("iamport_lookup", source = source.label(), route);
        let generation = core.generation.load(Ordering::Acquire);
        let mut led = false;
        let answer = core
            .entries
            .try_get_with_by_ref(id.as_str(), async {
                led = true;
                let outcome = upstream_lookup(&*source, &id).instrument(span).await;
                Entry::of(outcome, generation)
            })
            .await
            .map_err(|shared| Rejection::clone(&shared));
        (answer, led)
    }

    /// [`look_up`](Self::look_up) in a task of its own, so it completes — and its answer is
    /// kept — even if every request waiting for it is dropped; another request then finds
    /// the answer instead of calling again. The source bounds the call in time (the
    /// clients' total timeout).
    async fn spawn_look_up(&self, id: &str, route: &str) -> (Result<Entry, Rejection>, bool) {
        let (core, source, id) = (self.core.clone(), self.source.clone(), id.to_owned());
        let route = route.to_owned();
        let task = tokio::spawn(
            async move { Self::look_up(core, source, id, &route).await }
                // Its log lines belong to the request that started it.
                .instrument(tracing::Span::current()),
        );
        match task.await {
            Ok(answer) => answer,
            Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
            // The runtime is shutting down.
            Err(_) => (Err(Rejection::UpstreamUnavailable), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_waiter_of_a_call_removes_it() {
        let in_flight = Mutex::default();
        let a = Waiting::join(&in_flight, "imp_100000000001");
        let again = Waiting::join(&in_flight, "imp_100000000001");
        assert!(Arc::ptr_eq(&a.call, &again.call), "one id, one call");
        let b = Waiting::join(&in_flight, "imp_100000000002");
        assert!(!Arc::ptr_eq(&a.call, &b.call));
        let len = || in_flight.lock().unwrap().len();
        drop(again);
        assert_eq!(len(), 2, "a waiter of the first is left");
        drop(a);
        assert_eq!(len(), 1);
        drop(b);
        assert_eq!(len(), 0);
    }
}

/// The looked-up verification of a request, as the policy checks see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// PortOne returned this verification. Policies still decide whether it is enough
    /// (`certified` may be false).
    Verified(Arc<Certification>),
    /// No verification could be had; a guarded handler is refused with this.
    Refused(Rejection),
}

/// The `result` label of a lookup's outcome.
fn lookup_result(outcome: &Outcome) -> LookupResult {
    match outcome {
        Outcome::Verified(cert) if cert.certified => LookupResult::Verified,
        Outcome::Verified(_) => LookupResult::Unverified,
        Outcome::Refused(Rejection::UnknownId) => LookupResult::NotFound,
        Outcome::Refused(Rejection::InvalidId(_)) => LookupResult::InvalidId,
        Outcome::Refused(Rejection::UpstreamUnavailable) => LookupResult::Unavailable,
        Outcome::Refused(Rejection::UpstreamTimeout) => LookupResult::Timeout,
        Outcome::Refused(_) => LookupResult::Failed,
    }
}

/// One upstream lookup: counted, and logged — at WARN with the upstream status and the
/// latency when PortOne (or the way to it) failed. The error's text may quote PortOne's own
/// message: it is logged [`Escaped`], so it cannot forge a log line.
pub(crate) async fn upstream_lookup(source: &dyn CertificationSource, id: &str) -> Outcome {
    let started = tokio::time::Instant::now();
    let (outcome, error) = match source.lookup(id).await {
        Ok(cert) => (Outcome::Verified(Arc::new(cert)), None),
        Err(error) => (
            Outcome::Refused(Rejection::from_lookup_error(&error)),
            Some(error),
        ),
    };
    let result = lookup_result(&outcome);
    let latency_ms = started.elapsed().as_millis();
    metrics::lookup(source.label(), result);
    match error {
        Some(error) if result.is_upstream_failure() => tracing::warn!(
            result = result.as_str(),
            status = error.upstream_status(),
            latency_ms,
            error = %Escaped(&error),
            "identity verification lookup failed"
        ),
        _ => tracing::debug!(
            result = result.as_str(),
            latency_ms,
            "identity verification lookup finished"
        ),
    }
    outcome
}
