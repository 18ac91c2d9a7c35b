//! Statements shared by concurrent calls: the reservations and the commits of a
//! [`PostgresStore`](super::PostgresStore).
//!
//! Each kind of call has a few statement slots ([`STATEMENTS_IN_FLIGHT`]). A call that finds
//! a slot free runs at once, alone: no waiting window, and a call alone costs one statement.
//! Otherwise it queues, and a task of the store's own (one per kind, started by the first
//! queued call, ended when the store is dropped) starts the next statement as soon as a slot
//! is free, with every call queued meanwhile, up to [`BATCH`]. So under load each statement
//! carries many calls: one round trip, one transaction, one wake-up of a backend for all of
//! them. A caller that gave up (timed out, dropped) before its batch started is left out of
//! it; a batch statement is given up at the first of its callers' deadlines, and one that
//! fails or times out fails every call in it.
//!
//! The slots bound the statements the store starts. A commit alone holds its slot until its
//! statement ends, whatever its caller does; a reservation alone runs in its caller's task,
//! so a caller that gives up frees the slot at once, and drops the statement's connection
//! (the database may still finish that one statement).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::Db;
use crate::unique::StoreError;

/// Statements of one kind in flight at once, each on a pooled connection of its own:
/// reservations and commits each use at most this many of the pool's connections, the rest
/// stay free for releases, renewals and imports.
pub(super) const STATEMENTS_IN_FLIGHT: usize = 2;

/// The most calls one statement carries.
pub(super) const BATCH: usize = 512;

/// Calls waiting for a statement, at most; a caller finding the queue full waits for room
/// within its timeout.
const QUEUE: usize = STATEMENTS_IN_FLIGHT * BATCH;

/// One kind of call that concurrent callers can share a statement for.
pub(super) trait Batched: Send + Sync + 'static {
    /// What one caller asks.
    type Call: Send + 'static;
    /// What one caller gets.
    type Answer: Send + 'static;
    /// For error messages: "commit", "reserve".
    const NAME: &'static str;
    /// Whether a call alone runs in a task of its own that holds its slot until the
    /// statement ends, even if the caller gives up (a commit: it waits for a WAL flush, and
    /// a caller that gave up must not leave more of them running than there are slots), or
    /// in the caller's own task (a reservation: it is on the request's path, where a new
    /// task would first wait behind the runtime's others; a caller that gives up drops the
    /// statement's connection).
    const ALONE_IN_A_TASK: bool;

    /// The key a call is about: a batch runs in key order, so that statements locking the
    /// same rows lock them in the same order.
    fn key(call: &Self::Call) -> &[u8];

    /// Runs one statement for `calls` (in key order; a key may come more than once) and
    /// answers each, in the same order; gives up at `deadline` (waiting for a connection
    /// included) with a timeout error.
    fn run(
        db: &Db,
        calls: &[Self::Call],
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Self::Answer>, StoreError>> + Send;
}

/// The statement slots and the batching task's queue of one kind of call.
pub(super) struct Batcher<B: Batched> {
    /// One permit per statement in flight, shared by calls alone and the batching task.
    pub(super) slots: Arc<Semaphore>,
    /// The batching task's queue, once a queued call started it.
    pub(super) queue: Mutex<Option<mpsc::Sender<Queued<B>>>>,
}

/// A call waiting for its batch statement, where its caller waits for the answer, and when
/// the caller gives up.
pub(super) struct Queued<B: Batched> {
    call: B::Call,
    answer: oneshot::Sender<Result<B::Answer, StoreError>>,
    deadline: Instant,
}

impl<B: Batched> Batcher<B> {
    pub(super) fn new() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(STATEMENTS_IN_FLIGHT)),
            queue: Mutex::new(None),
        }
    }

    /// Runs `call` at once while a slot is free, else queues it for the batching task and
    /// waits for its answer; all within the store's timeout.
    pub(super) async fn call(&self, db: &Arc<Db>, call: B::Call) -> Result<B::Answer, StoreError> {
        let deadline = Instant::now() + db.timeout;
        let timed_out = || StoreError::timed_out(db.timeout);
        // A free slot: the call runs at once, alone, without the hop through the batching
        // task (which waits for a slot only with calls in hand, and gets a freed slot before
        // anyone else).
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            if !B::ALONE_IN_A_TASK {
                // `run` gives up at the deadline itself: no second timer on the request's path.
                let answer = run_alone::<B>(db, call, deadline).await;
                drop(slot);
                return answer;
            }
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| StoreError::new(format!("no tokio runtime to {} on", B::NAME)))?;
            let db = db.clone();
            let statement = runtime.spawn(async move {
                let answer = run_alone::<B>(&db, call, deadline).await;
                drop(slot);
                answer
            });
            return match tokio::time::timeout_at(deadline, statement).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(panicked)) => Err(StoreError::new(format!(
                    "the {} statement's task failed: {panicked}",
                    B::NAME
                ))),
                Err(_) => Err(timed_out()),
            };
        }
        let (answer, answered) = oneshot::channel();
        let run = async {
            let queued = Queued {
                call,
                answer,
                deadline,
            };
            self.enqueue(db, queued).await?;
            answered
                .await
                .map_err(|_| StoreError::new(format!("the {} batching task stopped", B::NAME)))?
        };
        tokio::time::timeout_at(deadline, run)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// Queues `queued`, waiting for room if the queue is full. A batching task that is gone
    /// (its runtime shut down) is replaced, once.
    async fn enqueue(&self, db: &Arc<Db>, mut queued: Queued<B>) -> Result<(), StoreError> {
        for _ in 0..2 {
            match self.sender(db)?.send(queued).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => queued = back,
            }
        }
        Err(StoreError::new(format!(
            "the {} batching task is not running",
            B::NAME
        )))
    }

    /// The batching task's queue, starting the task on the current runtime if it is not
    /// running (first queued call, or its runtime shut down).
    fn sender(&self, db: &Arc<Db>) -> Result<mpsc::Sender<Queued<B>>, StoreError> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = queue.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok(sender.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::new(format!("no tokio runtime to {} on", B::NAME)))?;
        let (sender, queued) = mpsc::channel(QUEUE);
        runtime.spawn(run_batches::<B>(db.clone(), queued, self.slots.clone()));
        *queue = Some(sender.clone());
        Ok(sender)
    }
}

/// One call's statement, alone.
async fn run_alone<B: Batched>(
    db: &Db,
    call: B::Call,
    deadline: Instant,
) -> Result<B::Answer, StoreError> {
    B::run(db, std::slice::from_ref(&call), deadline)
        .await?
        .pop()
        .ok_or_else(|| StoreError::new(format!("the {} statement gave no answer", B::NAME)))
}

/// The batching task of one kind of call: takes the next queued call, waits for a statement
/// slot, and puts it with every other call queued by then (up to [`BATCH`]) into one
/// statement, run in a task of its own. Ends once the store is dropped (its queue closed) and
/// the queue is empty; statements still running finish on their own, within the timeout.
async fn run_batches<B: Batched>(
    db: Arc<Db>,
    mut queue: mpsc::Receiver<Queued<B>>,
    slots: Arc<Semaphore>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // A call first, then a slot: an idle task holds none, so calls alone get all of them.
        let Some(first) = queue.recv().await else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        // Callers that gave up (timed out, dropped) while queued: left out.
        let now = Instant::now();
        batch.retain(|queued: &Queued<B>| !queued.answer.is_closed() && queued.deadline > now);
        if batch.is_empty() {
            continue;
        }
        let calls = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let db = db.clone();
        tokio::spawn(async move {
            run_batch::<B>(&db, calls).await;
            drop(slot);
        });
    }
}

/// Runs one batch statement and answers each of its callers. The statement is given up at
/// the first of their deadlines, as if it were that caller's own: none of them may have its
/// call land (a reservation made) later than a call of its own could, after it was told the
/// store failed — the layer's release of what a failed call may still do counts on that.
async fn run_batch<B: Batched>(db: &Db, mut batch: Vec<Queued<B>>) {
    // In key order (stable: of calls for one key, the first queued comes first), as
    // `forget`'s index scan visits its rows: with the usual plan (a lookup of the primary
    // key per row, in the given order), statements that lock the same rows lock them in the
    // same order. A deadlock PostgreSQL still detects fails the batch, as any failure.
    batch.sort_by(|a, b| B::key(&a.call).cmp(B::key(&b.call)));
    let Some(deadline) = batch.iter().map(|queued| queued.deadline).min() else {
        return;
    };
    let (calls, answers): (Vec<B::Call>, Vec<_>) =
        batch.into_iter().map(|q| (q.call, q.answer)).unzip();
    match B::run(db, &calls, deadline).await {
        Ok(results) if results.len() == answers.len() => {
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that gave up meanwhile is not waiting any more: fine.
                let _ = answer.send(Ok(result));
            }
        }
        outcome => {
            let error = match outcome {
                Err(error) => error,
                Ok(_) => StoreError::new(format!(
                    "the {} statement answered a different number of calls",
                    B::NAME
                )),
            };
            tracing::debug!(%error, calls = answers.len(), "a batch of unique {}s failed", B::NAME);
            let error = Arc::new(error);
            for answer in answers {
                let _ = answer.send(Err(StoreError::new(SharedError(error.clone()))));
            }
        }
    }
}

/// One batch statement's error, given to each of its callers.
#[derive(Debug)]
struct SharedError(Arc<StoreError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.0.source()
    }
}
