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
//! verification may still complete).
//!
//! Concurrent requests for an id that is not cached share one upstream call, whatever the
//! outcome, with the cache on or off: the layer keeps one map of the calls in flight. The
//! first request runs the call in its own future; the others wait for its answer and hold
//! nothing else (one that goes away takes its place in line with it). If that first request
//! goes away (its client hung up) before the answer, the call goes on in a task of its own —
//! bounded by the client's total timeout, and by 30 s for a source of your own — so the
//! requests still waiting, the cache and the next request for the id get its answer, and
//! PortOne is not asked twice; without a cache and with nobody waiting, the call is dropped
//! instead. The answer is stored before the call leaves the map, so a request finds it in
//! one place or the other.
//!
//! The cache lives in the layer (one per [`CertificationLayer`](crate::CertificationLayer),
//! bounded by [`LookupCache::max_entries`], default 10 000). Deleting a verification through
//! the client the layer was built from
//! ([`IamportClient::delete_certification`](crate::IamportClient::delete_certification))
//! evicts it from every layer built from that client or its clones, through the client's
//! [`Evictions`](crate::source::Evictions); a lookup that was in flight while the delete ran
//! is not kept either, and a request after the delete does not join it.
//!
//! The trade-offs: for up to 60 s after PortOne answered, a verified record — personal data —
//! stays in this process's memory (it is in the request's memory anyway while the handler
//! runs), and a change made at PortOne behind this process's back (a delete from PortOne's
//! console, from another process or another client) is seen only when the entry expires.
//! Set [`LookupCache::verified_for`] and [`LookupCache::not_found_for`] to zero (or use
//! [`LookupCache::disabled`]) to turn the cache off: concurrent lookups of one id are still
//! shared, and nothing is kept once the call has answered the requests waiting for it.
//!
//! moka stores the answers; its own single flight is not used (its loading future is several
//! times the size of a request's whole lookup state, and it needs a task per call to outlive
//! a request that goes away). When the cache is full, the least recently used entries make
//! room: an id's repeats come within seconds of its first lookup, so recency is what counts
//! (moka's default TinyLFU would refuse most new ids once full, each having been seen once
//! before it is stored). Under more than `max_entries` distinct ids within a repeat's delay,
//! an id may be looked up again.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::metrics::{self, CacheEffect, LookupResult};
use crate::rejection::Rejection;
use iamport_client::Certification;
use iamport_client::Error;
use iamport_client::escaped::Escaped;
use iamport_client::source::{BoxFuture, CertificationSource, Evict};

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
    fn evict(&self, id: &str) {
        // First the generation (a lookup answered before the delete and stored from now on
        // expires at once), then the entry (one stored before), then the call in flight: the
        // requests waiting for it still get its answer, a request from now on asks again.
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = &self.entries {
            entries.invalidate(id);
        }
        self.flights().remove(id);
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

/// What the layer's lookups share with the calls they start (which may outlive the request
/// that started them).
struct Core {
    /// The kept answers; `None` when the cache is off.
    entries: Option<moka::sync::Cache<Box<str>, Entry>>,
    generation: Arc<AtomicU64>,
    /// The calls in flight: one per id, however many requests wait for it.
    flights: Mutex<HashSet<InFlight>>,
    /// The source's label, for metrics.
    label: &'static str,
}

impl Core {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashSet<InFlight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Per-entry lifetimes: what kind of answer it is, and whether an eviction ran while it was
/// being looked up.
struct Lifetimes {
    settings: LookupCache,
    generation: Arc<AtomicU64>,
}

impl Expiry<Box<str>, Entry> for Lifetimes {
    fn expire_after_create(
        &self,
        _id: &Box<str>,
        entry: &Entry,
        _now: Instant,
    ) -> Option<Duration> {
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
}

/// One upstream call in flight, for every request that asks for its id meanwhile. The
/// request that started it runs it; the others wait for its answer, holding nothing but
/// their place in line.
struct Flight {
    id: Box<str>,
    /// The cache's eviction generation when the call started.
    generation: u64,
    answer: OnceLock<Result<Entry, Rejection>>,
    /// The requests waiting for the answer: made when the first one comes (most calls have
    /// none), taken when the answer is given.
    line: Mutex<Option<Box<Line>>>,
}

/// The wakers of the requests waiting for a flight. A request that goes away takes its
/// waker out (a waker keeps its task's memory alive) and leaves its place to the next one.
#[derive(Default)]
struct Line {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Flight {
    fn new(id: &str, generation: u64) -> Self {
        Self {
            id: id.into(),
            generation,
            answer: OnceLock::new(),
            line: Mutex::new(None),
        }
    }

    fn line(&self) -> std::sync::MutexGuard<'_, Option<Box<Line>>> {
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer, or `Pending` with `cx`'s waker in line (at `place`, once it has one).
    fn poll_answer(
        &self,
        cx: &mut Context<'_>,
        place: &mut Option<usize>,
    ) -> Poll<Result<Entry, Rejection>> {
        let mut line = self.line();
        // Read under the line's lock: `answer` sets it before it takes the line, so either
        // it is here, or this waker is in the line when the line is taken.
        if let Some(answer) = self.answer.get() {
            return Poll::Ready(answer.clone());
        }
        let line = line.get_or_insert_with(Box::default);
        match place.and_then(|i| line.wakers.get_mut(i)) {
            Some(waker) => *waker = Some(cx.waker().clone()),
            None => match line.free.pop() {
                Some(i) => {
                    line.wakers[i] = Some(cx.waker().clone());
                    *place = Some(i);
                }
                None => {
                    *place = Some(line.wakers.len());
                    line.wakers.push(Some(cx.waker().clone()));
                }
            },
        }
        Poll::Pending
    }

    /// A waiting request went away: its waker leaves the line.
    fn leave(&self, place: usize) {
        if let Some(line) = self.line().as_mut()
            && let Some(waker) = line.wakers.get_mut(place).and_then(Option::take)
        {
            drop(waker);
            line.free.push(place);
        }
    }

    /// Gives the answer (the first one given stands) and wakes every request waiting for it.
    fn answer(&self, answer: Result<Entry, Rejection>) {
        let _ = self.answer.set(answer);
        let line = self.line().take();
        line.into_iter()
            .flat_map(|line| line.wakers)
            .flatten()
            .for_each(Waker::wake);
    }
}

/// A flight in the map, found by its id.
struct InFlight(Arc<Flight>);

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for InFlight {}

impl std::hash::Hash for InFlight {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl std::borrow::Borrow<str> for InFlight {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// Where a call's answer goes when it comes: into the cache, then to the requests waiting
/// for it, and the flight out of the map (in that order, so a request always finds the
/// answer in one or the other). Dropped before the call answered (a panic, a runtime
/// shutting down), it answers the waiters with [`Rejection::UpstreamUnavailable`].
struct Landing {
    core: Arc<Core>,
    flight: Arc<Flight>,
}

impl Landing {
    fn land(self, outcome: Outcome) -> Result<Entry, Rejection> {
        let answer = Entry::of(outcome, self.flight.generation);
        if let (Ok(entry), Some(entries)) = (&answer, &self.core.entries) {
            entries.insert(self.flight.id.clone(), entry.clone());
        }
        self.flight.answer(answer.clone());
        answer
        // Dropped here: the flight leaves the map.
    }

    /// Without a cache and with nobody else waiting (only the map and this landing hold the
    /// flight), a call's answer would be for nobody: takes the flight out of the map, under
    /// its lock, so nobody can join it any more, and says so.
    fn for_nobody(&self) -> bool {
        if self.core.entries.is_some() {
            return false;
        }
        // Requests join under this lock: the count cannot grow meanwhile.
        let mut flights = self.core.flights();
        let nobody = Arc::strong_count(&self.flight) <= 2;
        if nobody {
            self.leave(&mut flights);
        }
        nobody
    }

    /// Takes this flight out of the map, unless a newer one for the id has taken its place
    /// (after an eviction).
    #[allow(
        clippy::mutable_key_type,
        reason = "a flight is hashed by its id, which never changes"
    )]
    fn leave(&self, flights: &mut HashSet<InFlight>) {
        let id = &*self.flight.id;
        if flights
            .get(id)
            .is_some_and(|in_flight| Arc::ptr_eq(&in_flight.0, &self.flight))
        {
            flights.remove(id);
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        // Unless landed: the call went away without an answer.
        self.flight.answer(Err(Rejection::UpstreamUnavailable));
        self.leave(&mut self.core.flights());
    }
}

/// The longest a call whose request went away may still take: the clients' own bound is
/// shorter (their total timeout, 10 s by default); this one is for a source of your own.
const DETACHED_CALL_LIMIT: Duration = Duration::from_secs(30);

/// The request leading a flight. If it goes away before the answer, the call goes on in a
/// task of its own (within `DETACHED_CALL_LIMIT`): the requests waiting for it, the cache and
/// the next request for the id still get its answer, and no second upstream call is made.
/// Without a cache and with nobody waiting, the call is dropped with it.
struct Leader(Option<(Lookup, Landing)>);

impl Drop for Leader {
    fn drop(&mut self) {
        let Some((lookup, landing)) = self.0.take() else {
            return;
        };
        // A panic in the call (or no runtime to finish it on): the landing's drop answers
        // the waiters.
        if std::thread::panicking() || landing.for_nobody() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(async move {
                let mut lookup = lookup;
                // The clients bound their calls; a source of your own might not.
                let result = tokio::time::timeout(DETACHED_CALL_LIMIT, &mut lookup)
                    .await
                    .unwrap_or(Err(Error::Timeout(DETACHED_CALL_LIMIT)));
                let outcome = lookup.conclude(result, landing.core.label);
                landing.land(outcome)
            }));
        }
    }
}

/// One upstream call: the source's future, polled in the lookup's span.
struct Lookup {
    call: BoxFuture<'static, Result<Certification, Error>>,
    started: tokio::time::Instant,
    span: tracing::Span,
}

impl Future for Lookup {
    type Output = Result<Certification, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.call.as_mut().poll(cx)
    }
}

impl Lookup {
    /// The call's outcome, counted and logged (at WARN with the upstream status and the
    /// latency when PortOne, or the way to it, failed). The error's text may quote PortOne's
    /// own message: it is logged [`Escaped`], so it cannot forge a log line.
    fn conclude(&self, result: Result<Certification, Error>, label: &'static str) -> Outcome {
        let _entered = self.span.enter();
        let (outcome, error) = match result {
            Ok(cert) => (Outcome::Verified(Arc::new(cert)), None),
            Err(error) => (
                Outcome::Refused(Rejection::from_lookup_error(&error)),
                Some(error),
            ),
        };
        let result = lookup_result(&outcome);
        let latency_ms = self.started.elapsed().as_millis();
        metrics::lookup(label, result);
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
}

/// A request's part in resolving its id ([`Lookups::resolve`]): an answer at hand, a place
/// in line for a call in flight, or the call it leads.
pub(crate) struct Resolving(Resolution);

enum Resolution {
    Done(Option<Outcome>),
    Waiting {
        flight: Arc<Flight>,
        place: Option<usize>,
    },
    Leading(Leader),
}

impl Drop for Resolving {
    fn drop(&mut self) {
        if let Resolution::Waiting {
            flight,
            place: Some(place),
        } = &self.0
        {
            flight.leave(*place);
        }
    }
}

impl Future for Resolving {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.0 {
            Resolution::Done(outcome) => {
                Poll::Ready(outcome.take().expect("a resolved outcome is taken once"))
            }
            Resolution::Waiting { flight, place } => {
                let answer = ready!(flight.poll_answer(cx, place));
                Poll::Ready(answer.map_or_else(Outcome::Refused, Entry::outcome))
            }
            Resolution::Leading(leader) => {
                let (lookup, landing) = leader.0.as_mut().expect("polled after it answered");
                let result = ready!(Pin::new(&mut *lookup).poll(cx));
                let outcome = lookup.conclude(result, landing.core.label);
                let (_, landing) = leader.0.take().expect("still leading");
                Poll::Ready(
                    landing
                        .land(outcome)
                        .map_or_else(Outcome::Refused, Entry::outcome),
                )
            }
        }
    }
}

impl Lookups {
    pub(crate) fn new(source: Arc<dyn CertificationSource>, settings: LookupCache) -> Self {
        let generation = Arc::new(AtomicU64::new(0));
        let entries = (!settings.keeps_nothing()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.max_entries)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(Lifetimes {
                    settings,
                    generation: generation.clone(),
                })
                .build()
        });
        let core = Arc::new(Core {
            entries,
            generation,
            flights: Mutex::default(),
            label: source.label(),
        });
        if let Some(evictions) = source.evictions() {
            let weak: Weak<dyn Evict> = Arc::downgrade(&core) as Weak<dyn Evict>;
            evictions.register(weak);
        }
        Self {
            source,
            core,
            settings,
        }
    }

    pub(crate) fn source(&self) -> &Arc<dyn CertificationSource> {
        &self.source
    }

    pub(crate) fn settings(&self) -> LookupCache {
        self.settings
    }

    /// A kept answer for `id`, counted as a hit.
    fn kept(&self, id: &str) -> Option<Outcome> {
        let entry = self.core.entries.as_ref()?.get(id)?;
        metrics::lookup_cache(match entry.record {
            Some(_) => CacheEffect::Hit,
            None => CacheEffect::NegativeHit,
        });
        Some(entry.outcome())
    }

    /// Resolves an id for a request to `route`: checks its syntax, then answers from the
    /// cache, else by joining the call in flight for the id, else by making it. Each upstream
    /// lookup runs in one `iamport_lookup` span and counts once in `iamport_lookups_total`;
    /// every other request counts in `iamport_lookup_cache_total` (a cached answer) or
    /// `iamport_lookup_dedup_total` (it joined one in flight).
    ///
    /// All but the waiting is done here, so the future keeps no arguments: every guarded
    /// request waiting for PortOne holds it.
    pub(crate) fn resolve(&self, id: &str, route: &str) -> Resolving {
        if let Err(invalid) = self.source.validate_id(id) {
            metrics::lookup(self.core.label, LookupResult::InvalidId);
            return Resolving(Resolution::Done(Some(Outcome::Refused(
                Rejection::InvalidId(invalid),
            ))));
        }
        if let Some(outcome) = self.kept(id) {
            return Resolving(Resolution::Done(Some(outcome)));
        }
        let landing = match self.join(id) {
            Ok(landing) => landing,
            Err(flight) => {
                tracing::debug!(route, "joined a lookup already in flight for the same id");
                metrics::lookup_joined();
                return Resolving(Resolution::Waiting {
                    flight,
                    place: None,
                });
            }
        };
        // Answered (and kept) between the cache's miss and the flight's start.
        if let Some(outcome) = self.kept(id) {
            landing.flight.answer(Entry::of(outcome.clone(), 0));
            return Resolving(Resolution::Done(Some(outcome)));
        }
        metrics::lookup_cache(CacheEffect::Miss);
        let label = self.core.label;
        Resolving(Resolution::Leading(Leader(Some((
            Lookup {
                call: self.source.lookup(id),
                started: tokio::time::Instant::now(),
                span: tracing::info_span!("iamport_lookup", source = label, route),
            },
            landing,
        )))))
    }

    /// The flight in the map for `id` to wait for (`Err`), or a new one this request leads.
    fn join(&self, id: &str) -> Result<Landing, Arc<Flight>> {
        let mut flights = self.core.flights();
        if let Some(in_flight) = flights.get(id) {
            return Err(in_flight.0.clone());
        }
        let flight = Arc::new(Flight::new(
            id,
            self.core.generation.load(Ordering::Acquire),
        ));
        flights.insert(InFlight(flight.clone()));
        Ok(Landing {
            core: self.core.clone(),
            flight,
        })
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

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    const ADULT: &str = "imp_100000000001";

    fn flights(lookups: &Lookups) -> usize {
        lookups.core.flights.lock().unwrap().len()
    }

    /// Every guarded request waiting for PortOne holds this state (the call itself is the
    /// source's own allocation): 104 bytes. A cache's loading future, a timer, or an `async
    /// fn` keeping its arguments would each double it.
    #[tokio::test]
    async fn a_request_waiting_for_a_lookup_holds_little_state() {
        let client = iamport_client::IamportClient::builder()
            .base_url("http://127.0.0.1:1")
            .key("k")
            .secret("s")
            .build()
            .expect("client");
        let lookups = Lookups::new(Arc::new(client), LookupCache::default());
        let size = size_of_val(&lookups.resolve(ADULT, "/"));
        eprintln!("a request's lookup state: {size} bytes");
        assert!(size <= 128, "a request's lookup state grew to {size} bytes");
    }

    /// The emulator, with a warmed-up client's lookups over it and `latency` on each answer.
    async fn over_emulator(
        cache: LookupCache,
        latency: Duration,
    ) -> (iamport_mock::Emulator, Lookups) {
        let emulator = iamport_mock::Emulator::start().await.expect("emulator");
        let client = emulator.client();
        client.warm_up().await.expect("token");
        emulator.set_latency(latency);
        (emulator, Lookups::new(Arc::new(client), cache))
    }

    /// Polls `future` once: it must be waiting.
    fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) {
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(future).poll(&mut cx).is_pending());
    }

    /// A call leaves the map once it has answered, also when the request that started it
    /// went away and its task finished it; the answer is kept for the next request.
    #[tokio::test]
    async fn no_flight_outlives_its_call() {
        let (emulator, lookups) =
            over_emulator(LookupCache::default(), Duration::from_millis(200)).await;
        let mut first = Box::pin(lookups.resolve(ADULT, "/"));
        poll_once(&mut first, Waker::noop());
        assert_eq!(flights(&lookups), 1, "the call is in flight");
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), async {
            while flights(&lookups) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the abandoned call is finished in its own task and leaves the map");
        assert!(matches!(
            lookups.resolve(ADULT, "/").await,
            Outcome::Verified(_)
        ));
        assert_eq!(emulator.calls_for(ADULT), 1, "its answer was kept");
        assert_eq!(flights(&lookups), 0);
    }

    /// Without a cache, a call whose request went away with nobody else waiting is dropped
    /// at once: its answer would be for nobody.
    #[tokio::test]
    async fn without_a_cache_a_call_for_nobody_is_dropped() {
        let (_emulator, lookups) =
            over_emulator(LookupCache::disabled(), Duration::from_millis(500)).await;
        let mut first = Box::pin(lookups.resolve(ADULT, "/"));
        poll_once(&mut first, Waker::noop());
        assert_eq!(flights(&lookups), 1);
        drop(first);
        assert_eq!(flights(&lookups), 0, "no task finishes a call for nobody");
    }

    /// A waiting request that goes away takes its waker out of the line at once (a waker
    /// keeps its task's memory), and its place is reused.
    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_the_line() {
        struct Counted;
        impl std::task::Wake for Counted {
            fn wake(self: Arc<Self>) {}
        }
        let (_emulator, lookups) =
            over_emulator(LookupCache::disabled(), Duration::from_millis(500)).await;
        let mut leader = Box::pin(lookups.resolve(ADULT, "/"));
        poll_once(&mut leader, Waker::noop());
        let wakes: Vec<Arc<Counted>> = (0..100).map(|_| Arc::new(Counted)).collect();
        for wake in &wakes {
            let mut waiter = lookups.resolve(ADULT, "/");
            poll_once(&mut waiter, &Waker::from(wake.clone()));
        }
        let held = wakes.iter().filter(|w| Arc::strong_count(w) > 1).count();
        assert_eq!(held, 0, "wakers of waiters that went away still held");
        let flight = lookups
            .core
            .flights
            .lock()
            .unwrap()
            .iter()
            .next()
            .map(|f| f.0.clone());
        let line = flight
            .expect("in flight")
            .line()
            .as_ref()
            .map(|l| l.wakers.len());
        assert_eq!(line, Some(1), "one place, reused by each waiter in turn");
    }

    /// An eviction takes the call in flight out of the map: the requests already waiting get
    /// its answer, a request after the eviction asks PortOne again.
    #[tokio::test]
    async fn a_request_after_an_eviction_does_not_join_the_old_call() {
        let (emulator, lookups) =
            over_emulator(LookupCache::default(), Duration::from_millis(300)).await;
        let mut first = Box::pin(lookups.resolve(ADULT, "/"));
        poll_once(&mut first, Waker::noop());
        lookups.core.evict(ADULT);
        let second = lookups.resolve(ADULT, "/");
        let (a, b) = tokio::join!(first, second);
        assert!(matches!(
            (a, b),
            (Outcome::Verified(_), Outcome::Verified(_))
        ));
        assert_eq!(
            emulator.calls_for(ADULT),
            2,
            "the second request asked again"
        );
    }

    /// A source of your own whose call never ends: once its request went away, the layer
    /// gives it `DETACHED_CALL_LIMIT`, then answers the waiters and frees the id.
    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_ends_is_given_up_once_its_request_went_away() {
        struct Stuck;
        impl CertificationSource for Stuck {
            fn validate_id(&self, _: &str) -> Result<(), iamport_client::id::InvalidId> {
                Ok(())
            }
            fn lookup(&self, _: &str) -> BoxFuture<'static, Result<Certification, Error>> {
                Box::pin(std::future::pending())
            }
        }
        let lookups = Lookups::new(Arc::new(Stuck), LookupCache::default());
        let mut first = Box::pin(lookups.resolve(ADULT, "/"));
        poll_once(&mut first, Waker::noop());
        let waiter = lookups.resolve(ADULT, "/");
        drop(first);
        // Virtual time (paused): a bound well past the limit, so a regression fails, not hangs.
        let outcome = tokio::time::timeout(DETACHED_CALL_LIMIT * 2, waiter)
            .await
            .expect("the waiter is answered once the limit has passed");
        assert!(
            matches!(outcome, Outcome::Refused(Rejection::UpstreamTimeout)),
            "{outcome:?}"
        );
        assert_eq!(flights(&lookups), 0);
    }
}
