//! `PostgresStore`: reservations in a PostgreSQL table, shared by every app replica.

mod batch;
mod tls;

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{KeyStatus, Reservation, ReservationToken, StoreError, UniqueKey};
use crate::unique::DEFAULT_STORE_TIMEOUT;
use batch::{Batched, Batcher};

/// The default table name.
pub const DEFAULT_POSTGRES_TABLE: &str = "iamport_unique_keys";

/// How often (at most) a `reserve` starts a background purge of ended leases and cooldowns.
const PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// Rows per purge statement, so a purge never holds many locks at once.
const PURGE_BATCH: i64 = 10_000;

/// Reservations in PostgreSQL, for several app replicas.
///
/// - `reserve` is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE committed = false AND
///   lease_until <= now()`: atomic, so of any number of concurrent reservations of a free key
///   exactly one wins; an ended lease or cooldown is taken over in the same statement.
///   Leases use the database's clock, never the app servers'.
/// - `commit` is one `UPDATE … WHERE key = c.key AND token = c.token AND committed = false`,
///   with its WAL flush.
/// - **Concurrent reservations share one statement, and so do concurrent commits** (each
///   kind with `unnest` over arrays: `INSERT … SELECT … FROM unnest($1::bytea[],
///   $2::text[], $3::float8[]) … RETURNING u.key`, `UPDATE … FROM unnest(…) WITH ORDINALITY
///   … RETURNING c.i`), and each caller gets the answer it would get alone. Of several
///   reservations of one key in a batch, the first queued goes in (one statement may not
///   change a row twice) and the others are `Taken`, which they would be after it anyway.
///   While fewer than 2 statements of its kind are in flight a call runs at once, alone:
///   there is no waiting window, and a call alone costs one statement (a commit in a task
///   that holds its slot until the statement ends, even if the caller gives up; a
///   reservation in the request's own task, which a new task would only delay). Otherwise
///   it waits in a queue, and a task of the store's own (started by the first queued call,
///   ended when the store is dropped) starts the next statement as soon as one ends, with
///   every call queued meanwhile, up to 512. So under load the database runs one statement
///   — one round trip, one transaction, one WAL flush for commits — per batch instead of
///   one per signup; reservations and commits each hold at most 2 of the pool's 16
///   connections, whatever the load, and the rest stay free for releases. (Two rather than
///   more: on two cores shared with the database, signups per second at 256 and 1 024
///   connections rose from 0.64× and 0.50× of the memory store's with one statement per
///   reservation to 0.77× and 0.72× with four slots and 0.85× and 0.80× with two; one
///   gained no more and would let one statement waiting on a row lock hold up every
///   reservation.) Each queue holds 1 024 calls; a caller finding it full waits for room,
///   within its timeout. A batch statement is given up at the first of its callers'
///   deadlines (none of them has its call land later than a call alone could), and one
///   that fails or times out fails every caller in it (the layer answers 503 for a reservation
///   and releases whatever it may have reserved, and retries a commit, as after any failed
///   call); a caller that gave up (timed out, dropped) before its batch started is left out
///   of it.
/// - `renew` / `release` are one `UPDATE` / `DELETE … WHERE key = $1 AND token = $2`, not
///   batched (a failed signup's response waits for its `release`, and they are rare);
///   `register` and `forget` are one statement each, batched with `unnest` for many keys
///   (the `iamport-unique` command). A cooldown is a row held by no token until its date.
/// - Leases are not worth a disk flush: `reserve`, `renew` and `release` commit without
///   waiting for the WAL (`synchronous_commit = off` for that one statement's transaction),
///   `commit`, `register` and `forget` wait for it. After a database crash, reservations
///   from its last moments may be gone; a signup whose reservation vanished fails its
///   commit (an ERROR log and [`UniqueCounters::commits_failed`](super::UniqueCounters)),
///   which the `UNIQUE` constraint pattern of the [module docs](super) covers.
/// - Each call is one round trip on a pooled connection (a reservation or a commit: its
///   share of one; prepared statements are cached per connection), bounded by
///   [`timeout`](Self::timeout) (default 2 s) including the wait for a connection — and
///   for a reservation or a commit, the wait in the queue and for its batch statement. A
///   connection whose statement timed out is dropped from the pool, never reused; closed
///   ones are recycled.
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
    reservations: Batcher<Reservations>,
    commits: Batcher<Commits>,
}

/// What running a statement takes, shared by the store, its background purge and its
/// batching tasks.
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
        // Many reservations: `$1` the keys (each once), `$2` their tokens, `$3` their leases
        // in seconds; returns the keys reserved.
        reserve: format!(
            "INSERT INTO {t} AS u (key, token, committed, lease_until) \
             SELECT r.key, r.token, false, now() + r.lease * interval '1 second' \
             FROM unnest($1::bytea[], $2::text[], $3::float8[]) AS r(key, token, lease), {FAST} \
             ON CONFLICT (key) DO UPDATE \
               SET token = EXCLUDED.token, lease_until = EXCLUDED.lease_until, reserved_at = now() \
               WHERE u.committed = false AND u.lease_until <= now() \
             RETURNING u.key"
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
        // Locks the rows it deletes first, in key order as batches of reservations and
        // commits do, skipping any row another statement holds (a reservation taking an ended
        // lease over): it never waits, so never deadlocks with them, and a row that changed
        // meanwhile is checked again under its lock, never deleted live.
        purge: format!(
            "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} \
               WHERE committed = false AND lease_until <= now() - $1::float8 * interval '1 second' \
               ORDER BY key LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED) \
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

    /// A store over an existing pool (bring your own TLS and pool settings). Reservations
    /// and commits each use at most 2 of its connections at once (see [`PostgresStore`]);
    /// give it more than 4.
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
            reservations: Batcher::new(),
            commits: Batcher::new(),
        }
    }

    /// A store like this one, with `change` made to what it runs statements with. Batching
    /// tasks already running end with the old store, `self`.
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
    /// [`DEFAULT_STORE_TIMEOUT`]); past it the call fails with a [`StoreError`]. For a
    /// reservation or a commit, the wait for its batch statement and the statement count
    /// too.
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
        let call = ReserveCall {
            key: key.clone(),
            token,
            lease,
        };
        let reservation = self.reservations.call(&self.db, call).await?;
        if self.purge_due() {
            self.purge_in_background();
        }
        Ok(reservation)
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

    async fn commit_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        let call = CommitCall {
            key: key.clone(),
            token,
        };
        self.commits.call(&self.db, call).await
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
        self.query_until(sql, params, Instant::now() + self.timeout)
            .await
    }

    /// [`query`](Self::query), given up at `deadline`.
    async fn query_until(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        deadline: Instant,
    ) -> Result<Vec<Row>, StoreError> {
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

/// A reservation: the key, for a token, for a lease.
struct ReserveCall {
    key: UniqueKey,
    token: ReservationToken,
    lease: Duration,
}

/// Reservations, alone or batched: one `INSERT … SELECT … FROM unnest(…) ON CONFLICT …`.
struct Reservations;

impl Batched for Reservations {
    type Call = ReserveCall;
    type Answer = Reservation;
    const NAME: &'static str = "reserve";
    const ALONE_IN_A_TASK: bool = false;

    fn key(call: &ReserveCall) -> &[u8] {
        call.key.as_bytes()
    }

    async fn run(
        db: &Db,
        calls: &[ReserveCall],
        deadline: Instant,
    ) -> Result<Vec<Reservation>, StoreError> {
        // One statement may not change a row twice: each key goes in once, for the first
        // of its calls (they come in key order); the others are `Taken` whatever it gets —
        // of concurrent reservations of one key, one at most wins.
        let first = |i: usize| i == 0 || calls[i - 1].key != calls[i].key;
        let mut keys: Vec<&[u8]> = Vec::with_capacity(calls.len());
        let mut tokens = Vec::with_capacity(calls.len());
        let mut leases = Vec::with_capacity(calls.len());
        for (i, call) in calls.iter().enumerate() {
            if first(i) {
                keys.push(call.key.as_bytes());
                tokens.push(call.token.to_hex());
                leases.push(call.lease.as_secs_f64());
            }
        }
        debug_assert!(keys.is_sorted(), "calls come in key order");
        let rows = db
            .query_until(&db.sql.reserve, &[&keys, &tokens, &leases], deadline)
            .await?;
        let mut won = vec![false; keys.len()];
        for row in &rows {
            let key: &[u8] = row.try_get(0).map_err(StoreError::new)?;
            if let Ok(i) = keys.binary_search(&key) {
                won[i] = true;
            }
        }
        let mut position = 0;
        Ok((0..calls.len())
            .map(|i| {
                if !first(i) {
                    return Reservation::Taken;
                }
                position += 1;
                if won[position - 1] {
                    Reservation::Reserved
                } else {
                    Reservation::Taken
                }
            })
            .collect())
    }
}

/// A commit: the key, held by a token.
struct CommitCall {
    key: UniqueKey,
    token: ReservationToken,
}

/// Commits, alone or batched: one `UPDATE … FROM unnest(…)`, with its WAL flush.
struct Commits;

impl Batched for Commits {
    type Call = CommitCall;
    type Answer = bool;
    const NAME: &'static str = "commit";
    const ALONE_IN_A_TASK: bool = true;

    fn key(call: &CommitCall) -> &[u8] {
        call.key.as_bytes()
    }

    async fn run(
        db: &Db,
        calls: &[CommitCall],
        deadline: Instant,
    ) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<&[u8]> = calls.iter().map(|c| &c.key.as_bytes()[..]).collect();
        let tokens: Vec<String> = calls.iter().map(|c| c.token.to_hex()).collect();
        let rows = db
            .query_until(&db.sql.commit, &[&keys, &tokens], deadline)
            .await?;
        // The 1-based positions of the pairs that held their key, now committed.
        let mut committed = vec![false; calls.len()];
        for row in &rows {
            let position: i64 = row.try_get(0).map_err(StoreError::new)?;
            if let Some(done) = usize::try_from(position - 1)
                .ok()
                .and_then(|i| committed.get_mut(i))
            {
                *done = true;
            }
        }
        Ok(committed)
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
    use super::batch::STATEMENTS_IN_FLIGHT;
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
            store.commits.queue.lock().unwrap().is_some(),
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
            .commits
            .slots
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
            .commits
            .slots
            .clone()
            .try_acquire_many_owned(STATEMENTS_IN_FLIGHT as u32 - 1)
            .unwrap();
        let error = queued_commit(&store, &first);
        assert!(refused(&error), "{error}");
        let queue = store.commits.queue.lock().unwrap().clone();
        let old = queue.expect("the batching task was started");
        // The task died with its runtime, and gave its slot back.
        drop(first);
        assert!(old.is_closed());
        let error = queued_commit(&store, &runtime());
        assert!(refused(&error), "a new task ran the statement: {error}");
        let new = store.commits.queue.lock().unwrap().clone().unwrap();
        assert!(!new.same_channel(&old), "a new batching task");
    }

    /// A database that accepts connections and never says a word: a store on it (its
    /// statements time out after 800 ms), and a signal per connection it accepted.
    async fn silent_database() -> (PostgresStore, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, connected) = tokio::sync::mpsc::unbounded_channel();
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
        (store, connected)
    }

    /// A caller that gives up on its commit (the layer's bound, a dropped request) leaves the
    /// statement running, and its slot held, until the statement ends: never more commit
    /// statements on the database than slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_given_up_holds_its_slot_until_its_statement_ends() {
        let (store, mut connected) = silent_database().await;
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
            store.commits.slots.available_permits(),
            STATEMENTS_IN_FLIGHT - 1,
            "the statement still holds its slot"
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.commits.slots.available_permits() < STATEMENTS_IN_FLIGHT {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the slot is given back once the statement timed out");
    }

    /// A reservation alone runs in its caller's task: a caller that gives up (a dropped
    /// request) frees its slot at once, and one the database does not answer fails at the
    /// store's timeout, its slot given back too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reservation_given_up_frees_its_slot() {
        let (store, mut connected) = silent_database().await;
        let key = UniqueKeys::random().key_for("CI");
        let lease = Duration::from_secs(60);
        let reserve = store.reserve_key(&key, ReservationToken::random(), lease);
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                _ = reserve => panic!("the database never answers"),
                _ = connected.recv() => {}
            }
        })
        .await
        .expect("the statement reached the database");
        assert_eq!(
            store.reservations.slots.available_permits(),
            STATEMENTS_IN_FLIGHT,
            "the dropped reservation's slot is free"
        );

        let reserve = store.reserve_key(&key, ReservationToken::random(), lease);
        let error = tokio::time::timeout(Duration::from_secs(5), reserve)
            .await
            .expect("bounded by the store's timeout")
            .unwrap_err();
        assert!(error.to_string().contains("no answer within"), "{error}");
        assert_eq!(
            store.reservations.slots.available_permits(),
            STATEMENTS_IN_FLIGHT
        );
        assert!(
            store.reservations.queue.lock().unwrap().is_none(),
            "a reservation alone never queued"
        );
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
            store.commits.queue.lock().unwrap().is_none(),
            "no batching task for a commit alone"
        );
        assert_eq!(
            store.commits.slots.available_permits(),
            STATEMENTS_IN_FLIGHT,
            "its slot given back"
        );
    }
}
