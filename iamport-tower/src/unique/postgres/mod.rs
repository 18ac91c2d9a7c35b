//! `PostgresStore`: reservations in a PostgreSQL table, shared by every app replica.

mod tls;

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{OnceCell, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{KeyStatus, Reservation, ReservationToken, StoreError, UniqueKey};
use crate::unique::DEFAULT_STORE_TIMEOUT;

/// The default table name.
pub const DEFAULT_POSTGRES_TABLE: &str = "iamport_unique_keys";

/// How often (at most) a `reserve` starts a background purge of ended leases and cooldowns.
const PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// Rows per purge statement, so a purge never holds many locks at once.
const PURGE_BATCH: i64 = 10_000;

/// The most commits one batch statement carries.
const COMMIT_BATCH: usize = 512;

/// Batch statements of one store in flight at once, each on a pooled connection of its own:
/// commits use at most this many of the pool's connections, the rest stay free for
/// reservations and releases.
const COMMIT_STATEMENTS_IN_FLIGHT: usize = 4;

/// Commits waiting for a batch statement, at most; a caller finding the queue full waits
/// for room within its timeout.
const COMMIT_QUEUE: usize = COMMIT_STATEMENTS_IN_FLIGHT * COMMIT_BATCH;

/// Reservations in PostgreSQL, for several app replicas.
///
/// - `reserve` is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE committed = false AND
///   lease_until <= now()`: atomic, so of any number of concurrent reservations of a free key
///   exactly one wins; an ended lease or cooldown is taken over in the same statement.
///   Leases use the database's clock, never the app servers'.
/// - `renew` / `release` are one `UPDATE` / `DELETE … WHERE key = $1 AND token = $2`;
///   `register` and `forget` are one statement each, batched with `unnest` for many keys
///   (the `iamport-unique` command). A cooldown is a row held by no token until its date.
/// - **Concurrent commits share one statement**, hence one WAL flush: `UPDATE … FROM
///   unnest($1::bytea[], $2::text[]) WITH ORDINALITY … WHERE key = c.key AND token = c.token
///   AND committed = false RETURNING c.i`, and each caller gets its own answer — `true` iff its
///   token held its key and the key is now committed, as if it had been alone. While fewer
///   than 4 commit statements are in flight a commit runs at once, alone (in a task that
///   holds its slot until the statement ends, even if the caller gives up): there is no
///   waiting window, and a commit alone costs one statement. Otherwise it waits in a queue,
///   and a task of the store's own (started by the first queued commit, ended when the store
///   is dropped) starts the next statement as soon as one ends, with every commit queued
///   meanwhile, up to 512. So commits hold at most 4 of the pool's connections for their
///   flushes, whatever the load, and reservations keep the others. The queue holds 2 048
///   commits; a caller finding it full waits for room, within its timeout. A batch that
///   fails or times out fails every caller in it (the layer retries each, as after any
///   failed commit); a caller that gave up (timed out, dropped) before its batch started is
///   left out of it.
/// - Leases are not worth a disk flush: `reserve`, `renew` and `release` commit without
///   waiting for the WAL (`synchronous_commit = off` for that one statement's transaction),
///   `commit`, `register` and `forget` wait for it. After a database crash, reservations
///   from its last moments may be gone; a signup whose reservation vanished fails its
///   commit (an ERROR log and [`UniqueCounters::commits_failed`](super::UniqueCounters)),
///   which the `UNIQUE` constraint pattern of the [module docs](super) covers. This is also
///   why only commits are batched: the other statements hold their connection for one round
///   trip, not for a disk flush, so sharing one would save little and add a hop through the
///   batching task — to `release` too, which the response of a failed signup waits for.
/// - Each call is one round trip on a pooled connection (a commit: its share of one;
///   prepared statements are cached per connection), bounded by [`timeout`](Self::timeout)
///   (default 2 s) including the wait for a connection — and for a commit, the wait in the
///   queue; each batch statement is bounded by the same timeout. A connection whose
///   statement timed out is dropped from the pool, never reused; closed ones are recycled.
/// - Ended leases and cooldowns are deleted in the background at most every five minutes
///   (started by a `reserve`), or by [`purge_expired`](Self::purge_expired).
/// - TLS (rustls) when the URL asks for it, with libpq's words: `sslmode=require`
///   (encrypted; the certificate is not checked, as in libpq, unless `sslrootcert` is
///   given), `sslmode=verify-ca` (the chain ends at a root from `sslrootcert=FILE.pem`, or
///   the Mozilla roots), `sslmode=verify-full` (the chain and the host name). Without
///   `sslmode`, or with `disable`/`prefer`, the connection is plain.
/// - The table is created on first use unless [`create_table(false)`](Self::create_table) —
///   then run [`PostgresStore::migration`] yourself.
///
/// The key is the HMAC of the CI (see [`UniqueKeys`](super::UniqueKeys)), never the CI.
pub struct PostgresStore {
    db: Arc<Db>,
    last_purge: Mutex<Option<Instant>>,
    /// The queue of the task that batches commits, once a commit started it.
    commits: Mutex<Option<mpsc::Sender<QueuedCommit>>>,
    /// One permit per commit statement in flight, shared by lone commits and the batching
    /// task.
    commit_slots: Arc<Semaphore>,
}

/// What running a statement takes, shared by the store, its background purge and its
/// commit-batching task.
#[derive(Clone)]
struct Db {
    pool: Pool,
    table: String,
    create_table: bool,
    ready: OnceCell<()>,
    sql: Arc<Statements>,
    timeout: Duration,
}

struct Statements {
    reserve: String,
    renew: String,
    commit: String,
    release: String,
    register: String,
    forget: String,
    forget_cooling: String,
    status: String,
    purge: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.db.table)
            .field("pool", &self.db.pool.status())
            .field("timeout", &self.db.timeout)
            .finish_non_exhaustive()
    }
}

/// `name` or `schema.name`, each an unquoted SQL identifier; returned quoted.
fn quoted_table(name: &str) -> Result<String, StoreError> {
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
        return Err(StoreError::new(format!(
            "`{name}` is not a valid table name (letters, digits and `_`, optionally `schema.table`)"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

/// Joined into the statements that only move leases (reserve, renew, release): their
/// transaction commits without waiting for the WAL flush (`SET LOCAL synchronous_commit =
/// off`, in the same single statement). Visibility and atomicity are unchanged; only a
/// database crash can lose the last moments' leases, which are temporary anyway. Commits,
/// imports and forgets stay durable.
const FAST: &str = "(SELECT set_config('synchronous_commit', 'off', true)) AS fast";

fn statements(t: &str) -> Statements {
    // A cooldown is a row with `committed = false`, no token ('') and `lease_until` = its end.
    let live = "(committed OR lease_until > now())";
    Statements {
        reserve: format!(
            "INSERT INTO {t} AS u (key, token, committed, lease_until) \
             SELECT $1, $2, false, now() + $3::float8 * interval '1 second' FROM {FAST} \
             ON CONFLICT (key) DO UPDATE \
               SET token = EXCLUDED.token, lease_until = EXCLUDED.lease_until, reserved_at = now() \
               WHERE u.committed = false AND u.lease_until <= now() \
             RETURNING 1"
        ),
        renew: format!(
            "UPDATE {t} SET lease_until = now() + $3::float8 * interval '1 second' FROM {FAST} \
             WHERE key = $1 AND token = $2 AND committed = false RETURNING 1"
        ),
        // Many commits: `$1` the keys, `$2` their tokens; returns the (1-based) positions of
        // the pairs that held their key. A pair given twice updates its row once, so only one
        // of its positions comes back.
        commit: format!(
            "UPDATE {t} AS u SET committed = true, lease_until = NULL, committed_at = now() \
             FROM unnest($1::bytea[], $2::text[]) WITH ORDINALITY AS c(key, token, i) \
             WHERE u.key = c.key AND u.token = c.token AND u.committed = false \
             RETURNING c.i"
        ),
        release: format!(
            "DELETE FROM {t} USING {FAST} \
             WHERE key = $1 AND token = $2 AND committed = false RETURNING 1"
        ),
        register: format!(
            "INSERT INTO {t} AS u (key, token, committed, lease_until, committed_at) \
             SELECT k, '', true, NULL, now() FROM unnest($1::bytea[]) AS k \
             ON CONFLICT (key) DO UPDATE \
               SET committed = true, token = '', lease_until = NULL, committed_at = now() \
               WHERE u.committed = false \
             RETURNING 1"
        ),
        forget: format!(
            "WITH gone AS (DELETE FROM {t} WHERE key = ANY($1::bytea[]) RETURNING {live} AS live) \
             SELECT count(*) FILTER (WHERE live) FROM gone"
        ),
        forget_cooling: format!(
            "WITH before AS (SELECT count(*) FILTER (WHERE {live}) AS n FROM {t} \
                             WHERE key = ANY($1::bytea[])), \
                  cooled AS (INSERT INTO {t} AS u (key, token, committed, lease_until) \
                             SELECT k, '', false, $2::timestamptz FROM unnest($1::bytea[]) AS k \
                             ON CONFLICT (key) DO UPDATE \
                               SET token = '', committed = false, \
                                   lease_until = EXCLUDED.lease_until, committed_at = NULL) \
             SELECT n FROM before"
        ),
        status: format!(
            "SELECT committed, token, lease_until, lease_until > now() FROM {t} WHERE key = $1"
        ),
        purge: format!(
            "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} \
               WHERE committed = false AND lease_until <= now() - $1::float8 * interval '1 second' \
               LIMIT {PURGE_BATCH}) \
             RETURNING 1"
        ),
    }
}

impl PostgresStore {
    /// A store for the database at `url` (`postgres://user@host:5432/db`, optionally with
    /// `?sslmode=require|verify-ca|verify-full&sslrootcert=ca.pem`), using the table
    /// [`DEFAULT_POSTGRES_TABLE`]. Nothing is connected until first use.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let (url, verify, root_cert) = tls::split_tls_params(url);
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::new(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_STORE_TIMEOUT);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match verify {
            None => Manager::from_config(config, NoTls, manager_config),
            Some(verify) => Manager::from_config(
                config,
                tls::connector(verify, root_cert.as_deref())?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(DEFAULT_STORE_TIMEOUT))
            .wait_timeout(Some(DEFAULT_STORE_TIMEOUT))
            .recycle_timeout(Some(DEFAULT_STORE_TIMEOUT))
            .build()
            .map_err(StoreError::new)?;
        Self::from_pool(pool, DEFAULT_POSTGRES_TABLE)
    }

    /// A store over an existing pool (bring your own TLS and pool settings). Commits use at
    /// most 4 of its connections at once (see [`PostgresStore`]); give it more than that.
    pub fn from_pool(pool: Pool, table: &str) -> Result<Self, StoreError> {
        let t = quoted_table(table)?;
        Ok(Self::with_db(Db {
            pool,
            table: table.to_owned(),
            create_table: true,
            ready: OnceCell::new(),
            sql: Arc::new(statements(&t)),
            timeout: DEFAULT_STORE_TIMEOUT,
        }))
    }

    fn with_db(db: Db) -> Self {
        Self {
            db: Arc::new(db),
            last_purge: Mutex::new(None),
            commits: Mutex::new(None),
            commit_slots: Arc::new(Semaphore::new(COMMIT_STATEMENTS_IN_FLIGHT)),
        }
    }

    /// A store like this one, with `change` made to what it runs statements with. A commit
    /// batching task already running ends with the old store, `self`.
    fn changed(self, change: impl FnOnce(&mut Db)) -> Self {
        let mut db = Db::clone(&self.db);
        change(&mut db);
        Self::with_db(db)
    }

    /// Uses `table` (`name` or `schema.name`) instead of [`DEFAULT_POSTGRES_TABLE`].
    pub fn table(self, table: &str) -> Result<Self, StoreError> {
        let t = quoted_table(table)?;
        Ok(self.changed(|db| {
            db.table = table.to_owned();
            db.ready = OnceCell::new();
            db.sql = Arc::new(statements(&t));
        }))
    }

    /// Whether to `CREATE TABLE IF NOT EXISTS` on first use (default `true`).
    #[must_use]
    pub fn create_table(self, create: bool) -> Self {
        self.changed(|db| db.create_table = create)
    }

    /// The most one call may take, waiting for a connection included (default
    /// [`DEFAULT_STORE_TIMEOUT`]); past it the call fails with a [`StoreError`]. A commit's
    /// wait for its batch statement counts too, and each batch statement has this bound.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.changed(|db| db.timeout = timeout)
    }

    /// The SQL that creates the table, for your migrations.
    pub fn migration(table: &str) -> Result<String, StoreError> {
        let t = quoted_table(table)?;
        Ok(format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n\
             \x20   key          BYTEA PRIMARY KEY,      -- HMAC-SHA256 of the CI, never the CI\n\
             \x20   token        TEXT NOT NULL,          -- the holder's reservation token ('' for none)\n\
             \x20   committed    BOOLEAN NOT NULL DEFAULT FALSE,\n\
             \x20   lease_until  TIMESTAMPTZ,            -- end of the lease or cooldown; NULL once committed\n\
             \x20   reserved_at  TIMESTAMPTZ NOT NULL DEFAULT now(),\n\
             \x20   committed_at TIMESTAMPTZ\n\
             )"
        ))
    }

    /// Deletes reservations and cooldowns that ended more than `grace` ago, in batches; how
    /// many rows went. A `reserve` runs it in the background every few minutes with a grace
    /// of ten minutes; call it from a timer of your own if you prefer.
    pub async fn purge_expired(&self, grace: Duration) -> Result<u64, StoreError> {
        self.db.purge_expired(grace).await
    }

    fn purge_due(&self) -> bool {
        let mut last = self
            .last_purge
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < PURGE_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    fn purge_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let db = self.db.clone();
        runtime.spawn(async move {
            match db.purge_expired(Duration::from_secs(600)).await {
                Ok(n) => tracing::debug!(rows = n, "purged ended unique reservations"),
                Err(error) => tracing::warn!(%error, "could not purge ended unique reservations"),
            }
        });
    }

    async fn reserve_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        let rows = self
            .db
            .query(
                &self.db.sql.reserve,
                &[&&key.as_bytes()[..], &token.to_hex(), &lease.as_secs_f64()],
            )
            .await?;
        if self.purge_due() {
            self.purge_in_background();
        }
        Ok(if rows.is_empty() {
            Reservation::Taken
        } else {
            Reservation::Reserved
        })
    }

    async fn renew_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                &self.db.sql.renew,
                &[&&key.as_bytes()[..], &token.to_hex(), &lease.as_secs_f64()],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    /// Runs the commit at once while a statement slot is free, else queues it for the
    /// batching task and waits for its answer, all within the timeout.
    async fn commit_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        let deadline = Instant::now() + self.db.timeout;
        // A free slot: the commit runs at once, alone, without the hop through the batching
        // task (which waits for a slot only with commits in hand, and gets a freed slot
        // before anyone else). The statement runs in a task of its own that holds the slot
        // until it ends, so a caller that gives up never leaves more statements running than
        // there are slots.
        if let Ok(slot) = self.commit_slots.clone().try_acquire_owned() {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| StoreError::new("no tokio runtime to commit on"))?;
            let db = self.db.clone();
            let key = key.as_bytes().to_vec();
            let statement = runtime.spawn(async move {
                let positions = run_commits(&db, &[&key[..]], &[token.to_hex()]).await;
                drop(slot);
                Ok(positions?.first() == Some(&1))
            });
            return match tokio::time::timeout_at(deadline, statement).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(panicked)) => Err(StoreError::new(format!(
                    "the commit statement's task failed: {panicked}"
                ))),
                Err(_) => Err(StoreError::timed_out(self.db.timeout)),
            };
        }
        let (answer, answered) = oneshot::channel();
        let commit = QueuedCommit {
            key: key.clone(),
            token,
            answer,
        };
        let run = async {
            self.queue_commit(commit).await?;
            answered
                .await
                .map_err(|_| StoreError::new("the commit batching task stopped"))?
        };
        tokio::time::timeout_at(deadline, run)
            .await
            .unwrap_or_else(|_| Err(StoreError::timed_out(self.db.timeout)))
    }

    /// Queues `commit`, waiting for room if the queue is full. A batching task that is gone
    /// (its runtime shut down) is replaced, once.
    async fn queue_commit(&self, mut commit: QueuedCommit) -> Result<(), StoreError> {
        for _ in 0..2 {
            match self.commit_queue()?.send(commit).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => commit = back,
            }
        }
        Err(StoreError::new("the commit batching task is not running"))
    }

    /// The batching task's queue, starting the task on the current runtime if it is not
    /// running (first commit, or its runtime shut down).
    fn commit_queue(&self) -> Result<mpsc::Sender<QueuedCommit>, StoreError> {
        let mut commits = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = commits.as_ref().filter(|queue| !queue.is_closed()) {
            return Ok(queue.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::new("no tokio runtime to commit on"))?;
        let (queue, queued) = mpsc::channel(COMMIT_QUEUE);
        runtime.spawn(batch_commits(
            self.db.clone(),
            queued,
            self.commit_slots.clone(),
        ));
        *commits = Some(queue.clone());
        Ok(queue)
    }

    async fn release_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                &self.db.sql.release,
                &[&&key.as_bytes()[..], &token.to_hex()],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    async fn register_key(&self, key: &UniqueKey) -> Result<bool, StoreError> {
        Ok(self.register_keys(std::slice::from_ref(key)).await? == 1)
    }

    async fn forget_key(
        &self,
        key: &UniqueKey,
        cooldown_until: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .forget_keys(std::slice::from_ref(key), cooldown_until)
            .await?
            == 1)
    }

    async fn key_status(&self, key: &UniqueKey) -> Result<KeyStatus, StoreError> {
        let rows = self
            .db
            .query(&self.db.sql.status, &[&&key.as_bytes()[..]])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(KeyStatus::Free);
        };
        let get = |e: tokio_postgres::Error| StoreError::new(e);
        let committed: bool = row.try_get(0).map_err(get)?;
        let token: String = row.try_get(1).map_err(get)?;
        let until: Option<SystemTime> = row.try_get(2).map_err(get)?;
        let live: Option<bool> = row.try_get(3).map_err(get)?;
        Ok(match (committed, until, live) {
            (true, _, _) => KeyStatus::Committed,
            (false, Some(until), Some(true)) if token.is_empty() => {
                KeyStatus::CoolingDown { until }
            }
            (false, _, Some(true)) => KeyStatus::Reserved,
            _ => KeyStatus::Free,
        })
    }

    async fn register_keys(&self, keys: &[UniqueKey]) -> Result<u64, StoreError> {
        let keys = distinct(keys);
        let rows = self.db.query(&self.db.sql.register, &[&keys]).await?;
        Ok(rows.len() as u64)
    }

    async fn forget_keys(
        &self,
        keys: &[UniqueKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        let keys = distinct(keys);
        let sql = &self.db.sql;
        let rows = match cooldown_until {
            None => self.db.query(&sql.forget, &[&keys]).await?,
            Some(until) => self.db.query(&sql.forget_cooling, &[&keys, &until]).await?,
        };
        let found: i64 = rows
            .first()
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(StoreError::new)?
            .unwrap_or(0);
        Ok(found.max(0) as u64)
    }
}

impl Db {
    /// A pooled connection (the table created on first use), held as in flight.
    async fn client(&self) -> Result<InFlight, StoreError> {
        let in_flight = InFlight(Some(self.pool.get().await.map_err(StoreError::new)?));
        let client = in_flight.0.as_ref().expect("just set");
        if self.create_table {
            self.ready
                .get_or_try_init(|| async {
                    let sql = PostgresStore::migration(&self.table)?;
                    // Two replicas creating the table at once can collide in the catalog:
                    // the loser's retry then finds it.
                    if client.batch_execute(&sql).await.is_err() {
                        client.batch_execute(&sql).await.map_err(StoreError::new)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await?;
        }
        Ok(in_flight)
    }

    /// Runs one statement within the timeout. A connection whose statement did not finish —
    /// it timed out here, or the caller dropped the call (the layer's own bound, a dropped
    /// request) — may still get an answer later: it is taken out of the pool and dropped,
    /// never handed to another call.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let in_flight = tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_| StoreError::timed_out(self.timeout))??;
        let client = in_flight.0.as_ref().expect("just set");
        let run = async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        };
        let result = tokio::time::timeout_at(deadline, run).await;
        match result {
            Ok(result) => {
                // Finished: the connection goes back to the pool (or, if closed, is recycled).
                in_flight.finish();
                result.map_err(StoreError::new)
            }
            Err(_) => Err(StoreError::timed_out(self.timeout)),
        }
    }

    async fn purge_expired(&self, grace: Duration) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let rows = self.query(&self.sql.purge, &[&grace.as_secs_f64()]).await?;
            total += rows.len() as u64;
            if (rows.len() as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }
}

/// A commit waiting for its batch statement, and where its caller waits for the answer.
struct QueuedCommit {
    key: UniqueKey,
    token: ReservationToken,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// The commit-batching task of a store: takes the next queued commit, waits for a statement
/// slot (fewer than [`COMMIT_STATEMENTS_IN_FLIGHT`] commit statements running), and puts it
/// with every other commit queued by then (up to [`COMMIT_BATCH`]) into one statement, run in
/// a task of its own. Ends once the store is dropped (its queue closed) and the queue is
/// empty; statements still running finish on their own, within the timeout.
async fn batch_commits(
    db: Arc<Db>,
    mut queue: mpsc::Receiver<QueuedCommit>,
    statements: Arc<Semaphore>,
) {
    let mut batch = Vec::with_capacity(COMMIT_BATCH);
    loop {
        // A commit first, then a slot: an idle task holds none, so commits alone get all of
        // them.
        let Some(first) = queue.recv().await else {
            return;
        };
        let Ok(slot) = statements.clone().acquire_owned().await else {
            return;
        };
        batch.push(first);
        while batch.len() < COMMIT_BATCH {
            match queue.try_recv() {
                Ok(commit) => batch.push(commit),
                Err(_) => break,
            }
        }
        // Callers that gave up (timed out, dropped) while queued: left out.
        batch.retain(|commit: &QueuedCommit| !commit.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let commits = std::mem::replace(&mut batch, Vec::with_capacity(COMMIT_BATCH));
        let db = db.clone();
        tokio::spawn(async move {
            commit_batch(&db, commits).await;
            drop(slot);
        });
    }
}

/// Runs one batch statement and answers each of its commits.
async fn commit_batch(db: &Db, mut batch: Vec<QueuedCommit>) {
    // In key order, as `forget`'s index scan visits its rows: with the usual plan (a lookup
    // of the primary key per pair, in the given order), statements that lock the same rows
    // lock them in the same order. (Two batches share a row only if one key is committed
    // twice at once, which the layer never does.) A deadlock PostgreSQL still detects fails
    // the batch, and the layer retries its callers as after any failed commit.
    batch.sort_unstable_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    let result = {
        let keys: Vec<&[u8]> = batch.iter().map(|c| &c.key.as_bytes()[..]).collect();
        let tokens: Vec<String> = batch.iter().map(|c| c.token.to_hex()).collect();
        run_commits(db, &keys, &tokens).await
    };
    match result {
        Ok(positions) => {
            let mut committed = vec![false; batch.len()];
            for position in positions {
                if let Some(done) = usize::try_from(position - 1)
                    .ok()
                    .and_then(|i| committed.get_mut(i))
                {
                    *done = true;
                }
            }
            for (commit, committed) in batch.into_iter().zip(committed) {
                // A caller that gave up meanwhile is not waiting any more: fine.
                let _ = commit.answer.send(Ok(committed));
            }
        }
        Err(error) => {
            tracing::debug!(%error, commits = batch.len(), "a batch of unique commits failed");
            let error = Arc::new(error);
            for commit in batch {
                let _ = commit
                    .answer
                    .send(Err(StoreError::new(SharedError(error.clone()))));
            }
        }
    }
}

/// Runs the commit statement for these (key, token) pairs: the 1-based positions of the
/// pairs that held their key, now committed.
async fn run_commits(db: &Db, keys: &[&[u8]], tokens: &[String]) -> Result<Vec<i64>, StoreError> {
    let rows = db.query(&db.sql.commit, &[&keys, &tokens]).await?;
    rows.iter()
        .map(|row| row.try_get::<_, i64>(0))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(StoreError::new)
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

/// A pooled connection with a statement in flight: dropped before [`finish`](Self::finish),
/// it leaves the pool for good.
struct InFlight(Option<Object>);

impl InFlight {
    fn finish(mut self) {
        drop(self.0.take());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// The keys as `bytea[]` parameters, each once (one statement may not change a row twice).
fn distinct(keys: &[UniqueKey]) -> Vec<&[u8]> {
    let mut bytes: Vec<&[u8]> = keys.iter().map(|k| &k.as_bytes()[..]).collect();
    bytes.sort_unstable();
    bytes.dedup();
    bytes
}

super::unique_store_via_inherent!(impl for PostgresStore);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unique::UniqueKeys;

    #[test]
    fn table_names_are_checked() {
        assert_eq!(
            quoted_table("iamport_unique_keys").unwrap(),
            "\"iamport_unique_keys\""
        );
        assert_eq!(quoted_table("app.keys").unwrap(), "\"app\".\"keys\"");
        for bad in ["", "1abc", "a-b", "a;drop table x", "a.b.c", "\"x\"", "a b"] {
            assert!(quoted_table(bad).is_err(), "{bad}");
        }
    }

    /// A store whose database refuses every connection at once (a port nobody listens on).
    async fn unreachable_store() -> PostgresStore {
        let port = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        PostgresStore::new(&format!("postgres://postgres@127.0.0.1:{port}/test"))
            .unwrap()
            .timeout(Duration::from_secs(10))
    }

    fn refused(error: &StoreError) -> bool {
        let text = error.to_string();
        !text.contains("batching task") && !text.contains("no answer within")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_fails_each_caller_and_the_task_ends_with_the_store() {
        let store = Arc::new(unreachable_store().await);
        let db = Arc::downgrade(&store.db);
        let keys = UniqueKeys::random();
        let mut commits = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (store, key) = (store.clone(), keys.key_for(&format!("CI-{i}")));
            commits.spawn(async move { store.commit_key(&key, ReservationToken::random()).await });
        }
        let mut answered = 0;
        while let Some(answer) = commits.join_next().await {
            let error = answer.unwrap().expect_err("the database is unreachable");
            assert!(refused(&error), "the statement's own error: {error}");
            answered += 1;
        }
        assert_eq!(answered, 50);
        assert!(
            store.commits.lock().unwrap().is_some(),
            "the batching task was started"
        );

        // The task (and any statement task) holds the store's `Db`; once the store is
        // dropped, the task ends and lets it go.
        drop(store);
        tokio::time::timeout(Duration::from_secs(5), async {
            while db.upgrade().is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the batching task ends when the store is dropped");
    }

    /// A commit that finds every slot busy, so that it queues for the batching task: the
    /// last free slot is held until the commit has queued, then given to the task.
    fn queued_commit(store: &PostgresStore, runtime: &tokio::runtime::Runtime) -> StoreError {
        let key = UniqueKeys::random().key_for("CI");
        let last = store
            .commit_slots
            .clone()
            .try_acquire_owned()
            .expect("one slot left");
        runtime.block_on(async {
            let commit = store.commit_key(&key, ReservationToken::random());
            let release = async {
                tokio::task::yield_now().await;
                drop(last);
            };
            let (result, ()) = tokio::join!(commit, release);
            result.unwrap_err()
        })
    }

    #[test]
    fn a_commit_on_a_second_runtime_restarts_the_batching_task() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        let store = first.block_on(unreachable_store());
        // Every slot but one stays busy throughout.
        let _busy = store
            .commit_slots
            .clone()
            .try_acquire_many_owned(COMMIT_STATEMENTS_IN_FLIGHT as u32 - 1)
            .unwrap();
        let error = queued_commit(&store, &first);
        assert!(refused(&error), "{error}");
        let queue = store.commits.lock().unwrap().clone();
        let old = queue.expect("the batching task was started");
        // The task died with its runtime, and gave its slot back.
        drop(first);
        assert!(old.is_closed());
        let error = queued_commit(&store, &runtime());
        assert!(refused(&error), "a new task ran the statement: {error}");
        let new = store.commits.lock().unwrap().clone().unwrap();
        assert!(!new.same_channel(&old), "a new batching task");
    }

    /// A caller that gives up on its commit (the layer's bound, a dropped request) leaves the
    /// statement running, and its slot held, until the statement ends: never more commit
    /// statements on the database than slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_given_up_holds_its_slot_until_its_statement_ends() {
        // A database that accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, mut connected) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                let _ = accepted.send(());
                held.push(socket);
            }
        });
        let store = PostgresStore::new(&format!("postgres://postgres@127.0.0.1:{port}/test"))
            .unwrap()
            .timeout(Duration::from_millis(800));
        let key = UniqueKeys::random().key_for("CI");
        let commit = store.commit_key(&key, ReservationToken::random());
        let gave_up = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                _ = commit => panic!("the database never answers"),
                _ = connected.recv() => {}
            }
        })
        .await;
        assert!(gave_up.is_ok(), "the statement reached the database");
        assert_eq!(
            store.commit_slots.available_permits(),
            COMMIT_STATEMENTS_IN_FLIGHT - 1,
            "the statement still holds its slot"
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.commit_slots.available_permits() < COMMIT_STATEMENTS_IN_FLIGHT {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the slot is given back once the statement timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_alone_runs_without_the_batching_task() {
        let store = unreachable_store().await;
        let key = UniqueKeys::random().key_for("CI");
        let error = store
            .commit_key(&key, ReservationToken::random())
            .await
            .unwrap_err();
        assert!(refused(&error), "{error}");
        assert!(
            store.commits.lock().unwrap().is_none(),
            "no batching task for a commit alone"
        );
        assert_eq!(
            store.commit_slots.available_permits(),
            COMMIT_STATEMENTS_IN_FLIGHT,
            "its slot given back"
        );
    }
}
