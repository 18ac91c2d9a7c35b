//! The per-request link between admission (which reserves) and the layer's response future
//! (which commits or releases), with the fault handling described in [`unique`](super).
//!
//! Every commit, release and retry runs in a task of its own, counted by the layer's
//! [`UniqueTasks`]: after a 2xx the commit runs alongside the response by default
//! ([`UniqueCommit::AlongsideResponse`]), or before it ([`UniqueCommit::BeforeResponse`]);
//! after anything else the response waits for the release, so a person who retries at once
//! finds themselves free. [`UniqueTasks::settled`] waits for all of them at shutdown.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{
    Counters, KeyStatus, Reservation, ReservationToken, StoreError, UniqueKey, UniqueKeys,
    UniqueStore, count,
};
use crate::metrics;
use crate::rejection::Rejection;

/// The default bound of every unique store call made by the layer.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a commit after a successful response is attempted before giving up.
pub const COMMIT_ATTEMPTS: u32 = 5;

/// How many times a reservation whose `reserve` failed is released before giving up (it then
/// ends with its lease).
const RELEASE_ATTEMPTS: u32 = 8;

/// The first pause between retries; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When the layer commits a `unique` reservation after a successful (2xx) response
/// ([`CertificationLayer::unique_commit`](crate::CertificationLayer::unique_commit)).
///
/// Either way the commit runs in a task of its own (it completes if the client goes away),
/// failed commits are retried in the background, and the response is the handler's whatever
/// the commit does. While the commit runs the reservation keeps the person out, so a
/// concurrent or later signup of the same person is refused (409) under both settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UniqueCommit {
    /// The response is returned at once; the commit runs alongside it (the default). A signup
    /// does not wait for the store's durable write (a WAL flush on PostgreSQL). A process
    /// killed between the response and the commit's end loses that commit — the reservation
    /// then ends with its lease (see [`unique`](super#faults)); a graceful shutdown loses
    /// nothing if it waits for [`CertificationLayer::settled`](crate::CertificationLayer::settled).
    #[default]
    AlongsideResponse,
    /// The response waits for one commit attempt (bounded by the store timeout) before it is
    /// returned: once a client has its 2xx, the commit has been tried, even if the process is
    /// killed right after.
    BeforeResponse,
}

/// What the layer was configured with.
#[derive(Clone)]
pub(crate) struct UniqueConfig {
    pub(crate) store: Arc<dyn UniqueStore>,
    pub(crate) keys: UniqueKeys,
    pub(crate) lease: Duration,
    pub(crate) timeout: Duration,
    pub(crate) commit: UniqueCommit,
    /// Shared by every configuration made from one layer (its clones, and layers configured
    /// from them).
    pub(crate) tasks: Arc<Tasks>,
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
    fn spawn(
        self: &Arc<Self>,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
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
            task.await;
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
/// services they made. See [`unique`](super#shutdown).
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
            count(|c: &Counters| &c.store_errors);
        }
        result
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

/// `commit`, `renew`, `release`: whether the token still held the key.
impl Answered for bool {
    fn label(&self) -> &'static str {
        if *self { "ok" } else { "not_held" }
    }
}

impl Answered for KeyStatus {
    fn label(&self) -> &'static str {
        "ok"
    }
}

fn backoff(retry: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << retry.min(10))
        .min(MAX_BACKOFF)
}

#[derive(Default)]
struct State {
    /// The reservation this request holds, until settled.
    held: Option<(UniqueKey, ReservationToken)>,
    /// The key reserved for this request (kept after settling, for `Certified::unique_key`).
    key: Option<UniqueKey>,
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
                tracing::warn!(%error, "unique store unavailable; refusing the request (503)");
                release_abandoned(self.config.clone(), key, token);
                Err(Rejection::StoreUnavailable)
            }
        }
    }

    /// The person's store key, once a `unique` guard reserved it for this request.
    pub(crate) fn key(&self) -> Option<UniqueKey> {
        self.lock().key.clone()
    }

    /// Whether this request holds a reservation that still needs settling.
    fn is_held(&self) -> bool {
        self.lock().held.is_some()
    }

    /// Commits (`success`) or releases the reservation, if one is held. Returns after one
    /// attempt (bounded by the store timeout); retries continue in counted background tasks.
    pub(crate) async fn settle(&self, success: bool) {
        let Some((key, token)) = self.lock().held.take() else {
            return;
        };
        let config = &self.config;
        if !success {
            if let Err(error) = config
                .bounded("release", config.store.release(&key, token))
                .await
            {
                tracing::warn!(%error, key = %key.prefix(), "could not release a unique reservation; retrying in the background");
                release_abandoned(config.clone(), key, token);
            }
            return;
        }
        match config
            .bounded("commit", config.store.commit(&key, token))
            .await
        {
            Ok(true) => {}
            Ok(false) => lease_lost(config, &key).await,
            Err(error) => {
                tracing::warn!(%error, key = %key.prefix(), "could not commit a unique reservation after a successful response; retrying in the background");
                let retry = config.clone();
                config
                    .tasks
                    .spawn(async move { retry_commit(&retry, key, token).await });
            }
        }
    }

    /// Releases in the background (the request was dropped before it finished).
    fn release_detached(self) {
        let tasks = self.config.tasks.clone();
        tasks.spawn(async move { self.settle(false).await });
    }
}

/// The token no longer holds the key. Fine if the key is committed all the same (an earlier
/// attempt that timed out on our side landed, or an import); otherwise the lease ended first.
async fn lease_lost(config: &UniqueConfig, key: &UniqueKey) {
    if let Ok(KeyStatus::Committed) = config.bounded("status", config.store.status(key)).await {
        count(|c: &Counters| &c.commits_recovered);
        tracing::info!(key = %key.prefix(), "the unique reservation is committed (an earlier attempt landed)");
        return;
    }
    count(|c: &Counters| &c.commits_failed);
    tracing::error!(
        key = %key.prefix(),
        "the reservation's lease ended before the handler's success was committed; the person \
         may register again. Raise `unique_lease` above your handler's worst-case time"
    );
}

/// Retries a commit after a successful response, renewing the lease before each attempt so
/// the person stays reserved meanwhile.
async fn retry_commit(config: &UniqueConfig, key: UniqueKey, token: ReservationToken) {
    for retry in 1..COMMIT_ATTEMPTS {
        tokio::time::sleep(backoff(retry - 1)).await;
        count(|c: &Counters| &c.commit_retries);
        if let Ok(false) = config
            .bounded("renew", config.store.renew(&key, token, config.lease))
            .await
        {
            // The store answered: our reservation is gone — committed by an earlier attempt,
            // or lost (lease ended, forgotten).
            return lease_lost(config, &key).await;
        }
        match config
            .bounded("commit", config.store.commit(&key, token))
            .await
        {
            Ok(true) => {
                count(|c: &Counters| &c.commits_recovered);
                tracing::info!(key = %key.prefix(), retry, "committed a unique reservation on a retry");
                return;
            }
            Ok(false) => return lease_lost(config, &key).await,
            Err(error) => {
                tracing::warn!(%error, key = %key.prefix(), retry, "unique commit retry failed");
            }
        }
    }
    count(|c: &Counters| &c.commits_failed);
    tracing::error!(
        key = %key.prefix(),
        attempts = COMMIT_ATTEMPTS,
        "gave up committing a unique reservation after a successful response; it ends with \
         its lease and the person may then register again unless the app keeps the key under \
         a UNIQUE constraint"
    );
}

/// Releases, in the background, a reservation that a failed or timed-out call may have made
/// (or failed to release): retries until it released it, or until the store answered three
/// times, with growing pauses, that the token holds nothing — a call sent on a connection
/// that was given up may still land after the first answers.
fn release_abandoned(config: Arc<UniqueConfig>, key: UniqueKey, token: ReservationToken) {
    let tasks = config.tasks.clone();
    tasks.spawn(async move {
        let mut answered_empty = 0;
        for retry in 0..RELEASE_ATTEMPTS {
            tokio::time::sleep(backoff(retry)).await;
            match config
                .bounded("release", config.store.release(&key, token))
                .await
            {
                Ok(true) => {
                    count(|c: &Counters| &c.abandoned_released);
                    tracing::info!(key = %key.prefix(), "released a reservation left by a failed store call");
                    return;
                }
                Ok(false) => {
                    answered_empty += 1;
                    if answered_empty == 3 {
                        return;
                    }
                }
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

    /// The slot, if a reservation was made and still needs settling.
    fn take_held(&mut self) -> Option<UniqueSlot> {
        self.0.take()?.slot().filter(|slot| slot.is_held()).cloned()
    }

    /// Commits (`success`) or releases in a counted task of its own, so it completes even if
    /// the client goes away while it runs. Returns the task when the response must wait for
    /// it: a release (a person retrying right after a failure must find themselves free), or
    /// a commit under [`UniqueCommit::BeforeResponse`]. `None` when nothing is held or the
    /// commit runs alongside the response.
    pub(crate) fn settle(&mut self, success: bool) -> Option<tokio::task::JoinHandle<()>> {
        let slot = self.take_held()?;
        let wait = !success || slot.config.commit == UniqueCommit::BeforeResponse;
        let tasks = slot.config.tasks.clone();
        let task = tasks.spawn(async move { slot.settle(success).await })?;
        wait.then_some(task)
    }
}

impl<H: SlotHolder> Drop for HeldReservation<H> {
    fn drop(&mut self) {
        if let Some(slot) = self.take_held() {
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
