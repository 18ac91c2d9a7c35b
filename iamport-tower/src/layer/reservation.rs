//! The per-request link between admission (which reserves) and the layer's response future
//! (which commits or releases), with the fault handling described in [`unique`](crate::unique).
//!
//! Every commit, release and retry runs in a task of its own, counted by the layer's
//! [`UniqueTasks`]: after a 2xx the response waits for the commit (unless the handler
//! recorded the account in PostgreSQL, the permanent fact already); after anything else it
//! waits for the release, so a person who retries at once finds themselves free.
//! [`UniqueTasks::settled`] waits for all of them at shutdown.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::metrics;
use crate::rejection::Rejection;
use crate::unique::{Reservation, ReservationToken, StoreError, StoreKey, StoreKeys, UniqueStore};

/// How many times a commit after a successful response is attempted in all: the first
/// [`COMMIT_ATTEMPTS_BEFORE_RESPONSE`] before the response leaves, the rest in the
/// background after a 503 (the person stays reserved meanwhile).
pub const COMMIT_ATTEMPTS: u32 = 6;

/// How many commit attempts a 2xx waits for before it is turned into a 503.
pub const COMMIT_ATTEMPTS_BEFORE_RESPONSE: u32 = 3;

/// How long a reservation left by a failed call is chased with releases while the store
/// does not answer at all: a stall of any length up to this still frees the person within
/// about a second and a store timeout of the store answering again.
const ABANDONED_BUDGET: Duration = Duration::from_secs(3600);

/// The first pause between retries; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Counters of one layer's unique faults — what operators alert on. Each is also a
/// `metrics` counter, `iamport_unique_faults_total{fault=…}` (see [`crate::metrics`]).
/// Read them with
/// [`CertificationLayer::unique_counters`](crate::CertificationLayer::unique_counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UniqueCounters {
    /// Store calls that failed or timed out (each is a 503 at admission, or a retry).
    pub store_errors: u64,
    /// Reservations left by a failed or timed-out call, later released by their token
    /// (`fault="abandoned_released"`).
    pub abandoned_released: u64,
    /// Commit attempts after the first one (`fault="commit_retry"`).
    pub commit_retries: u64,
    /// Commits that failed at first and then held (`fault="commit_recovered"`).
    pub commits_recovered: u64,
    /// Commits given up (`fault="commit_failed"`): the 2xx was turned into a 503, the
    /// handler's work may exist, and the person may sign up again once the lease ends.
    /// Alert on it.
    pub commits_failed: u64,
}

/// The live counters behind [`UniqueCounters`], shared by a layer and its clones.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    store_errors: AtomicU64,
    abandoned_released: AtomicU64,
    commit_retries: AtomicU64,
    commits_recovered: AtomicU64,
    commits_failed: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> UniqueCounters {
        UniqueCounters {
            store_errors: self.store_errors.load(Ordering::Relaxed),
            abandoned_released: self.abandoned_released.load(Ordering::Relaxed),
            commit_retries: self.commit_retries.load(Ordering::Relaxed),
            commits_recovered: self.commits_recovered.load(Ordering::Relaxed),
            commits_failed: self.commits_failed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, fault: Fault) {
        let counter = match fault {
            Fault::AbandonedReleased => &self.abandoned_released,
            Fault::CommitRetry => &self.commit_retries,
            Fault::CommitRecovered => &self.commits_recovered,
            Fault::CommitFailed => &self.commits_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::unique_fault(fault.label());
    }
}

#[derive(Clone, Copy)]
enum Fault {
    AbandonedReleased,
    CommitRetry,
    CommitRecovered,
    CommitFailed,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Self::AbandonedReleased => "abandoned_released",
            Self::CommitRetry => "commit_retry",
            Self::CommitRecovered => "commit_recovered",
            Self::CommitFailed => "commit_failed",
        }
    }
}

/// What the layer was configured with.
#[derive(Clone)]
pub(crate) struct UniqueConfig {
    pub(crate) store: Arc<dyn UniqueStore>,
    pub(crate) keys: StoreKeys,
    pub(crate) lease: Duration,
    pub(crate) timeout: Duration,
    /// The statement that records an account's key in the handler's transaction, when the
    /// store is a `PostgresStore`.
    #[cfg(feature = "postgres")]
    pub(crate) record: Option<Arc<str>>,
    /// Shared by every configuration made from one layer (its clones, and layers configured
    /// from them).
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) counters: Arc<Counters>,
}

/// The running commit, release and retry tasks of a layer's reservations.
#[derive(Default)]
pub(crate) struct Tasks {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One counted task; uncounted when dropped (finished, panicked, or cancelled with its runtime).
struct Running(Arc<Tasks>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tasks {
    /// Spawns `task`, counted until it ends. `None` (and a warning) without a tokio runtime:
    /// the reservation then ends with its lease.
    fn spawn<T: Send + 'static>(
        self: &Arc<Self>,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<T>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "no tokio runtime to settle a unique reservation; it ends with its lease"
            );
            return None;
        };
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        Some(runtime.spawn(async move {
            let _running = running;
            task.await
        }))
    }

    async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Registered before the count is read: a task ending in between still wakes us.
            idle.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// The background work of a layer's `unique` reservations — commits, releases, and their
/// retries — to wait for at shutdown ([`CertificationLayer::unique_tasks`](crate::CertificationLayer::unique_tasks)).
///
/// One handle counts the tasks started by the layer it came from, its clones, and the
/// services they made. See [`unique`](crate::unique#shutdown).
#[derive(Clone)]
pub struct UniqueTasks(pub(crate) Arc<Tasks>);

impl UniqueTasks {
    /// How many tasks are running now.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::Acquire)
    }

    /// Resolves once no task is running (at once if none is). Call it after the server stopped
    /// taking requests — after `axum::serve(…).with_graceful_shutdown(…)` returns — and bound
    /// it with a timeout: against a store that stays down, a commit is tried up to
    /// [`COMMIT_ATTEMPTS`] times (about 3 s of pauses plus each attempt's timeout), and a
    /// reservation left by a failed call is released for up to about 21 s of pauses plus
    /// the attempts' timeouts. A task started after it resolved is not waited for.
    pub fn settled(&self) -> impl Future<Output = ()> + Send + use<> {
        let tasks = self.0.clone();
        async move { tasks.settled().await }
    }
}

impl fmt::Debug for UniqueTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UniqueTasks")
            .field("running", &self.running())
            .finish()
    }
}

impl UniqueConfig {
    /// Runs one store call (`op`) within the configured bound, counted and timed in
    /// `iamport_unique_operations_total` / `iamport_unique_operation_duration_seconds`.
    async fn bounded<T: Answered>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = tokio::time::Instant::now();
        let (result, label) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => {
                let label = answer.label();
                (Ok(answer), label)
            }
            Ok(Err(error)) => (Err(error), "error"),
            Err(_) => (Err(StoreError::timed_out(self.timeout)), "timeout"),
        };
        metrics::unique_operation(op, label, started.elapsed());
        if result.is_err() {
            self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn commit(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        self.bounded("commit", self.store.commit(key, token)).await
    }

    async fn release(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        self.bounded("release", self.store.release(key, token))
            .await
    }
}

/// The `result` label of a store call that answered.
trait Answered {
    fn label(&self) -> &'static str;
}

impl Answered for Reservation {
    fn label(&self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Taken => "taken",
        }
    }
}

/// `commit`, `release`: whether the token still held the key.
impl Answered for bool {
    fn label(&self) -> &'static str {
        if *self { "ok" } else { "not_held" }
    }
}

fn backoff(retry: u32, cap: Duration) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << retry.min(10)).min(cap)
}

#[derive(Default)]
struct State {
    /// The reservation this request holds, until settled.
    held: Option<(StoreKey, ReservationToken)>,
    /// The key reserved for this request (kept after settling, for `Certified::store_key`).
    key: Option<StoreKey>,
    /// The handler recorded the account's key in its own transaction.
    recorded: bool,
}

/// Shared by the request (as an extension) and the layer's response future.
#[derive(Clone)]
pub(crate) struct UniqueSlot {
    config: Arc<UniqueConfig>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for UniqueSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UniqueSlot").finish_non_exhaustive()
    }
}

impl UniqueSlot {
    pub(crate) fn new(config: Arc<UniqueConfig>) -> Self {
        Self {
            config,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the person with this CI in `scope` (`None`: the default scope) for this
    /// request (once, however many guards ask).
    ///
    /// The token is chosen before the call: if the store fails or does not answer in time
    /// (503), a background task releases whatever the call may still do later.
    pub(crate) async fn reserve(&self, scope: Option<&str>, ci: &str) -> Result<(), Rejection> {
        if self.lock().held.is_some() {
            return Ok(());
        }
        let key = self.config.keys.key_in(scope, ci);
        let token = ReservationToken::random();
        let store = &self.config.store;
        match self
            .config
            .bounded("reserve", store.reserve(&key, token, self.config.lease))
            .await
        {
            Ok(Reservation::Reserved) => {
                let mut state = self.lock();
                state.held = Some((key.clone(), token));
                state.key = Some(key);
                Ok(())
            }
            Ok(Reservation::Taken) => Err(Rejection::AlreadyRegistered),
            Err(error) => {
                tracing::warn!(error = ?error.to_string(), "unique store unavailable; refusing the request (503)");
                release_abandoned(self.config.clone(), key, token);
                Err(Rejection::StoreUnavailable)
            }
        }
    }

    /// The person's store key, once a `unique` guard reserved it for this request.
    pub(crate) fn key(&self) -> Option<StoreKey> {
        self.lock().key.clone()
    }

    /// The statement that records the account's key, and the key, if this request holds a
    /// reservation behind a `PostgresStore`.
    #[cfg(feature = "postgres")]
    pub(crate) fn record_statement(&self) -> Option<(Arc<str>, StoreKey)> {
        let record = self.config.record.clone()?;
        let key = self.lock().held.as_ref()?.0.clone();
        Some((record, key))
    }

    /// The handler wrote the key in its account's transaction: a 2xx needs no commit.
    #[cfg(feature = "postgres")]
    pub(crate) fn mark_recorded(&self) {
        self.lock().recorded = true;
    }

    /// Whether this request holds a reservation that still needs settling.
    fn is_held(&self) -> bool {
        self.lock().held.is_some()
    }

    /// Settles the reservation, if one is held, and tells whether the response may stand:
    ///
    /// - after a 2xx whose handler recorded the account (PostgreSQL): the account's row is
    ///   the permanent fact; the reservation is released and the response stands;
    /// - after any other 2xx: commits, with up to [`COMMIT_ATTEMPTS_BEFORE_RESPONSE`]
    ///   attempts; `false` if none landed (the response becomes a 503, and the commit goes
    ///   on being retried in the background while the reservation keeps the person out);
    /// - otherwise: releases (retried in the background if the store fails).
    pub(crate) async fn settle(&self, success: bool) -> bool {
        let Some((key, token, recorded)) = ({
            let mut state = self.lock();
            let recorded = state.recorded;
            state.held.take().map(|(key, token)| (key, token, recorded))
        }) else {
            return true;
        };
        let config = &self.config;
        if !success || recorded {
            if let Err(error) = config.release(&key, token).await {
                tracing::warn!(error = ?error.to_string(), key = %key.prefix(), "could not release a unique reservation; retrying in the background");
                release_abandoned(config.clone(), key, token);
            }
            return true;
        }
        for attempt in 0..COMMIT_ATTEMPTS_BEFORE_RESPONSE {
            if attempt > 0 {
                config.counters.count(Fault::CommitRetry);
                tokio::time::sleep(backoff(attempt - 1, MAX_BACKOFF)).await;
            }
            match config.commit(&key, token).await {
                Ok(true) => {
                    if attempt > 0 {
                        config.counters.count(Fault::CommitRecovered);
                    }
                    return true;
                }
                Ok(false) => {
                    lease_lost(config, &key);
                    return false;
                }
                Err(error) => {
                    tracing::warn!(error = ?error.to_string(), key = %key.prefix(), attempt, "could not commit a unique reservation after a successful response");
                }
            }
        }
        tracing::error!(
            key = %key.prefix(),
            "the unique store did not record a successful signup; answering 503 instead of the \
             handler's success and retrying the commit in the background"
        );
        let retry = config.clone();
        config
            .tasks
            .spawn(async move { retry_commit(&retry, key, token).await });
        false
    }

    /// Releases in the background (the request was dropped before it finished).
    fn release_detached(self) {
        let tasks = self.config.tasks.clone();
        tasks.spawn(async move {
            self.settle(false).await;
        });
    }
}

/// The token no longer holds the key and it is not committed: the lease ended first (and
/// someone else may hold it now), or the store forgot it.
fn lease_lost(config: &UniqueConfig, key: &StoreKey) {
    config.counters.count(Fault::CommitFailed);
    tracing::error!(
        key = %key.prefix(),
        "the reservation's lease ended before the handler's success was committed; answering \
         503. Raise `unique_lease` above your handler's worst-case time"
    );
}

/// Retries a commit in the background after the response was turned into a 503, so a
/// signup whose handler did create an account still ends up recorded.
async fn retry_commit(config: &UniqueConfig, key: StoreKey, token: ReservationToken) {
    for retry in COMMIT_ATTEMPTS_BEFORE_RESPONSE..COMMIT_ATTEMPTS {
        tokio::time::sleep(backoff(retry, MAX_BACKOFF)).await;
        config.counters.count(Fault::CommitRetry);
        match config.commit(&key, token).await {
            Ok(true) => {
                config.counters.count(Fault::CommitRecovered);
                tracing::info!(key = %key.prefix(), retry, "committed a unique reservation on a retry");
                return;
            }
            Ok(false) => return lease_lost(config, &key),
            Err(error) => {
                tracing::warn!(error = ?error.to_string(), key = %key.prefix(), retry, "unique commit retry failed");
            }
        }
    }
    config.counters.count(Fault::CommitFailed);
    tracing::error!(
        key = %key.prefix(),
        attempts = COMMIT_ATTEMPTS,
        "gave up committing a unique reservation after a successful handler; it ends with its \
         lease and the person may then sign up again"
    );
}

/// Releases, in the background, a reservation that a failed or timed-out call may have made
/// (or failed to release).
///
/// A call given up on our side may still land when the store answers again — after a stall
/// of any length, with a fresh lease. So this keeps trying, pausing at most a second between
/// attempts, for as long as the store does not answer at all (up to an hour), and once it
/// answers, until it released the reservation or answered three times that the token holds
/// nothing (a call queued on a connection we gave up may land just after the first answer).
fn release_abandoned(config: Arc<UniqueConfig>, key: StoreKey, token: ReservationToken) {
    let tasks = config.tasks.clone();
    tasks.spawn(async move {
        let started = tokio::time::Instant::now();
        let cap = config.timeout.min(Duration::from_secs(1));
        let mut answered_empty = 0;
        for retry in 0.. {
            tokio::time::sleep(backoff(retry, cap)).await;
            match config.release(&key, token).await {
                Ok(true) => {
                    config.counters.count(Fault::AbandonedReleased);
                    tracing::info!(key = %key.prefix(), "released a reservation left by a failed store call");
                    return;
                }
                Ok(false) => {
                    answered_empty += 1;
                    if answered_empty == 3 {
                        return;
                    }
                }
                Err(_) if started.elapsed() > ABANDONED_BUDGET => break,
                Err(_) => {}
            }
        }
        tracing::warn!(key = %key.prefix(), "could not release a reservation left by a failed store call; it ends with its lease");
    });
}

/// What holds a request's [`UniqueSlot`], if a `unique` guard made one: the request's
/// verification record.
pub(crate) trait SlotHolder {
    fn slot(&self) -> Option<&UniqueSlot>;
}

/// The reservation a request may hold, from the layer's response future: settled by the
/// response's status, or released in the background if the future is dropped first (client
/// gone, timeout, panic in the handler).
pub(crate) struct HeldReservation<H: SlotHolder>(Option<H>);

impl<H: SlotHolder> HeldReservation<H> {
    pub(crate) fn new(holder: Option<H>) -> Self {
        Self(holder)
    }

    pub(crate) fn hold(&mut self, holder: Option<H>) {
        self.0 = holder;
    }

    /// The slot, if a reservation was made and still needs settling, and its holder.
    fn take_held(&mut self) -> Option<(UniqueSlot, H)> {
        let holder = self.0.take()?;
        let slot = holder.slot().filter(|slot| slot.is_held()).cloned()?;
        Some((slot, holder))
    }

    /// Commits (`success`) or releases in a counted task of its own, so it completes even if
    /// the client goes away while it runs. Returns the task, whose answer says whether the
    /// response may stand (see [`UniqueSlot::settle`]), and the holder (to render a 503 with).
    /// `None` when nothing is held, or when a recorded account's reservation is released
    /// alongside the response.
    pub(crate) fn settle(&mut self, success: bool) -> Option<(tokio::task::JoinHandle<bool>, H)> {
        let (slot, holder) = self.take_held()?;
        let wait = !(success && slot.lock().recorded);
        let tasks = slot.config.tasks.clone();
        let task = tasks.spawn(async move { slot.settle(success).await })?;
        wait.then_some((task, holder))
    }
}

impl<H: SlotHolder> Drop for HeldReservation<H> {
    fn drop(&mut self) {
        if let Some((slot, _)) = self.take_held() {
            slot.release_detached();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[tokio::test]
    async fn settled_waits_for_every_counted_task_and_the_tasks_they_start() {
        let tasks = Arc::new(Tasks::default());
        let handle = UniqueTasks(tasks.clone());
        handle.settled().await; // nothing running: at once

        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let nested_ran = Arc::new(AtomicBool::new(false));
        let (inner, flag) = (tasks.clone(), nested_ran.clone());
        tasks.spawn(async move {
            let _ = wait.await;
            // A retry started by a settling task is counted before its parent ends.
            inner.spawn(async move {
                tokio::task::yield_now().await;
                flag.store(true, Ordering::SeqCst);
            });
        });
        assert_eq!(handle.running(), 1);
        let settled = tokio::spawn(handle.settled());
        tokio::task::yield_now().await;
        assert!(!settled.is_finished(), "a task is still running");
        go.send(()).unwrap();
        settled.await.unwrap();
        assert!(
            nested_ran.load(Ordering::SeqCst),
            "the nested task ran first"
        );
        assert_eq!(handle.running(), 0);

        // A task that panics is uncounted too.
        let panicked = tasks.spawn(async { panic!("settling bug") }).unwrap();
        assert!(panicked.await.unwrap_err().is_panic());
        tokio::time::timeout(Duration::from_secs(5), handle.settled())
            .await
            .expect("a panicked task does not hold settled() forever");
    }
}
