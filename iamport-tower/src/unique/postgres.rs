//! `PostgresStore`: reservations and accounts' keys in the app's own PostgreSQL, through sqlx.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{
    DEFAULT_STORE_TIMEOUT, KeyStatus, Reservation, ReservationToken, StoreError, StoreKey,
    UniqueAdmin, UniqueStore,
};

/// The default table of reservations (and of committed keys when no handler records them).
pub const DEFAULT_POSTGRES_TABLE: &str = "iamport_unique_keys";

/// The default table of accounts' keys, written by handlers in the account's transaction
/// ([`Certified::record_account`](crate::Certified::record_account)).
pub const DEFAULT_ACCOUNTS_TABLE: &str = "iamport_accounts";

/// How often (at most) a `reserve` starts a background purge of ended leases and cooldowns.
const PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// The bound of an explicit [`PostgresStore::migrate`] (DDL at startup, on a cold pool).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows per purge statement, so a purge never holds many locks at once.
const PURGE_BATCH: i64 = 10_000;

/// "One account per person" in the app's own PostgreSQL, on the app's `sqlx::PgPool`.
///
/// Two tables, two jobs:
///
/// - **Accounts' keys** ([`DEFAULT_ACCOUNTS_TABLE`], `key BYTEA PRIMARY KEY`): the permanent
///   fact. The handler writes the person's key there *in the transaction that creates the
///   account* ([`Certified::record_account`](crate::Certified::record_account)), so a crash
///   at any instant leaves both or neither, and the primary key refuses a second account
///   whatever happened to any reservation.
/// - **Reservations** ([`DEFAULT_POSTGRES_TABLE`]): a race-free, leased claim taken at
///   admission, so a second signup of the same person is a fast 409 before the handler runs.
///   A reservation whose handler answered 2xx without recording the account is committed
///   here by the layer before the 2xx leaves it.
///
/// Every statement is one round trip on a pooled connection, bounded by
/// [`timeout`](Self::timeout) (default 2 s) including the wait for a connection:
///
/// - `reserve` is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE committed = false AND
///   lease_until <= now()` that also checks the accounts table (`WHERE NOT EXISTS`): atomic,
///   so of any number of concurrent reservations of a free key exactly one wins, and a person
///   with an account never gets one. Leases use the database's clock, never the app's.
/// - `commit` / `release` are one `UPDATE` / `DELETE … WHERE key = $1 AND token = $2`.
/// - Leases are not worth a disk flush: `reserve` and `release` commit without waiting for
///   the WAL (`synchronous_commit = off` for that one statement); commits, imports and
///   forgets wait for it.
/// - Ended leases and cooldowns are deleted in the background at most every five minutes
///   (started by a `reserve`), or by [`purge_expired`](Self::purge_expired).
/// - The tables are created on first use unless [`create_tables(false)`](Self::create_tables)
///   — then run [`PostgresStore::migration`] yourself.
/// - TLS is the pool's: sqlx with rustls follows libpq's `sslmode` (`require`, `verify-ca`,
///   `verify-full`) and `sslrootcert` in the URL.
///
/// Keys are the HMAC of the CI (see [`StoreKeys`](super::StoreKeys)), never the CI.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use iamport_tower::unique::{PostgresStore, StoreKeys};
///
/// let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?; // the app's pool
/// let store = PostgresStore::new(pool.clone());
/// store.migrate().await?; // or run PostgresStore::migration(…) in your migrations
/// let layer = iamport_tower::CertificationLayer::new(iamport_tower::IamportClient::from_env()?)
///     .unique_store(store, StoreKeys::from_env()?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    table: String,
    accounts: String,
    /// `host:port/database`, for error messages (never credentials).
    address: String,
    create_tables: bool,
    ready: OnceCell<()>,
    sql: Statements,
    timeout: Duration,
    last_purge: Mutex<Option<Instant>>,
}

struct Statements {
    reserve: Arc<str>,
    commit: Arc<str>,
    release: Arc<str>,
    status: Arc<str>,
    register: Arc<str>,
    forget: Arc<str>,
    forget_cooling: Arc<str>,
    purge: Arc<str>,
    /// Run in the handler's transaction: the account's key.
    record: Arc<str>,
    migration: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("address", &self.inner.address)
            .field("table", &self.inner.table)
            .field("accounts", &self.inner.accounts)
            .field("timeout", &self.inner.timeout)
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

/// Joined into the statements that only move leases (reserve, release): their transaction
/// commits without waiting for the WAL flush. Only a database crash can lose the last
/// moments' leases, which are temporary anyway.
const FAST: &str = "(SELECT set_config('synchronous_commit', 'off', true)) AS fast";

fn statements(t: &str, a: &str) -> Statements {
    // A cooldown is a row with `committed = false`, no token ('') and `lease_until` = its end.
    let live = "(committed OR lease_until > now())";
    Statements {
        reserve: format!(
            "INSERT INTO {t} AS u (key, token, committed, lease_until) \
             SELECT $1, $2, false, now() + $3::float8 * interval '1 second' FROM {FAST} \
             WHERE NOT EXISTS (SELECT 1 FROM {a} WHERE key = $1) \
             ON CONFLICT (key) DO UPDATE \
               SET token = EXCLUDED.token, lease_until = EXCLUDED.lease_until, reserved_at = now() \
               WHERE u.committed = false AND u.lease_until <= now() \
             RETURNING 1"
        )
        .into(),
        commit: format!(
            "WITH done AS (UPDATE {t} SET committed = true, lease_until = NULL, committed_at = now() \
                           WHERE key = $1 AND token = $2 AND committed = false RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM done) \
                 OR EXISTS (SELECT 1 FROM {t} WHERE key = $1 AND token = $2 AND committed)"
        )
        .into(),
        release: format!(
            "DELETE FROM {t} USING {FAST} \
             WHERE key = $1 AND token = $2 AND committed = false RETURNING 1"
        )
        .into(),
        status: format!(
            "SELECT EXISTS (SELECT 1 FROM {a} WHERE key = $1), r.committed, r.token, \
                    extract(epoch FROM r.lease_until)::float8, r.lease_until > now() \
             FROM (SELECT 1) AS one LEFT JOIN {t} AS r ON r.key = $1"
        )
        .into(),
        // The accounts table is the fact; a reservation or cooldown in its way goes (its
        // holder can no longer commit), and a committed reservation is not "new".
        register: format!(
            "WITH cleared AS (DELETE FROM {t} WHERE key = ANY($1::bytea[]) AND NOT committed), \
                  new AS (INSERT INTO {a} (key) SELECT DISTINCT k FROM unnest($1::bytea[]) AS k \
                          ON CONFLICT (key) DO NOTHING RETURNING key) \
             SELECT count(*) FROM new \
             WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {t}.key = new.key AND committed)"
        )
        .into(),
        forget: format!(
            "WITH accounts AS (DELETE FROM {a} WHERE key = ANY($1::bytea[]) RETURNING key), \
                  gone AS (DELETE FROM {t} WHERE key = ANY($1::bytea[]) RETURNING key, {live} AS live) \
             SELECT count(*) FROM (SELECT key FROM accounts UNION SELECT key FROM gone WHERE live) AS k"
        )
        .into(),
        forget_cooling: format!(
            "WITH accounts AS (DELETE FROM {a} WHERE key = ANY($1::bytea[]) RETURNING key), \
                  before AS (SELECT key FROM {t} WHERE key = ANY($1::bytea[]) AND {live}), \
                  cooled AS (INSERT INTO {t} AS u (key, token, committed, lease_until) \
                             SELECT DISTINCT k, '', false, $2::timestamptz FROM unnest($1::bytea[]) AS k \
                             ON CONFLICT (key) DO UPDATE \
                               SET token = '', committed = false, \
                                   lease_until = EXCLUDED.lease_until, committed_at = NULL) \
             SELECT count(*) FROM (SELECT key FROM accounts UNION SELECT key FROM before) AS k"
        )
        .into(),
        // Locks the rows it deletes, skipping any row another statement holds: it never
        // waits, and a row that changed meanwhile is checked again under its lock.
        purge: format!(
            "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} \
               WHERE committed = false AND lease_until <= now() - $1::float8 * interval '1 second' \
               ORDER BY key LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED) \
             RETURNING 1"
        )
        .into(),
        record: format!("INSERT INTO {a} (key) VALUES ($1)").into(),
        migration: format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n\
             \x20   key          BYTEA PRIMARY KEY,      -- HMAC-SHA256 of the CI, never the CI\n\
             \x20   token        TEXT NOT NULL,          -- the holder's reservation token ('' for none)\n\
             \x20   committed    BOOLEAN NOT NULL DEFAULT FALSE,\n\
             \x20   lease_until  TIMESTAMPTZ,            -- end of the lease or cooldown; NULL once committed\n\
             \x20   reserved_at  TIMESTAMPTZ NOT NULL DEFAULT now(),\n\
             \x20   committed_at TIMESTAMPTZ\n\
             );\n\
             CREATE TABLE IF NOT EXISTS {a} (\n\
             \x20   key          BYTEA PRIMARY KEY,      -- the account's person: HMAC-SHA256 of the CI\n\
             \x20   created_at   TIMESTAMPTZ NOT NULL DEFAULT now()\n\
             );"
        ),
    }
}

impl PostgresStore {
    /// A store on the app's pool, with the tables [`DEFAULT_POSTGRES_TABLE`] and
    /// [`DEFAULT_ACCOUNTS_TABLE`]. Give the pool an `acquire_timeout` no longer than the
    /// store's [`timeout`](Self::timeout) (the store bounds every call either way).
    pub fn new(pool: PgPool) -> Self {
        Self::build(
            pool,
            DEFAULT_POSTGRES_TABLE,
            DEFAULT_ACCOUNTS_TABLE,
            true,
            DEFAULT_STORE_TIMEOUT,
        )
        .expect("the default table names are valid")
    }

    /// A store with a small pool of its own for the database at `url`, connected on first
    /// use — for tools such as the `iamport-unique` command. An app passes its own pool to
    /// [`new`](Self::new) instead.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // Half the store's bound: a database that refuses connections is reported as
            // such, with its address, before any bound around the call (the store's own, the
            // layer's) runs out and can say only that it timed out.
            .acquire_timeout(DEFAULT_STORE_TIMEOUT / 2)
            .connect_lazy(url)
            .map_err(|e| StoreError::new(format!("invalid PostgreSQL URL: {e}")))?;
        Ok(Self::new(pool))
    }

    fn build(
        pool: PgPool,
        table: &str,
        accounts: &str,
        create_tables: bool,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let sql = statements(&quoted_table(table)?, &quoted_table(accounts)?);
        let options = pool.connect_options();
        let address = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                table: table.to_owned(),
                accounts: accounts.to_owned(),
                address,
                create_tables,
                ready: OnceCell::new(),
                sql,
                timeout,
                last_purge: Mutex::new(None),
            }),
        })
    }

    fn rebuilt(
        &self,
        table: Option<&str>,
        accounts: Option<&str>,
        create_tables: Option<bool>,
        timeout: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let i = &self.inner;
        Self::build(
            i.pool.clone(),
            table.unwrap_or(&i.table),
            accounts.unwrap_or(&i.accounts),
            create_tables.unwrap_or(i.create_tables),
            timeout.unwrap_or(i.timeout),
        )
    }

    /// Uses `table` (`name` or `schema.name`) for reservations instead of
    /// [`DEFAULT_POSTGRES_TABLE`].
    pub fn table(self, table: &str) -> Result<Self, StoreError> {
        self.rebuilt(Some(table), None, None, None)
    }

    /// Uses `table` (`name` or `schema.name`) for accounts' keys instead of
    /// [`DEFAULT_ACCOUNTS_TABLE`].
    pub fn accounts_table(self, table: &str) -> Result<Self, StoreError> {
        self.rebuilt(None, Some(table), None, None)
    }

    /// Whether to `CREATE TABLE IF NOT EXISTS` both tables on first use (default `true`).
    #[must_use]
    pub fn create_tables(self, create: bool) -> Self {
        self.rebuilt(None, None, Some(create), None)
            .expect("the names were checked")
    }

    /// The most one call may take, waiting for a connection included (default
    /// [`DEFAULT_STORE_TIMEOUT`]); past it the call fails with a [`StoreError`].
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.rebuilt(None, None, None, Some(timeout))
            .expect("the names were checked")
    }

    /// The SQL that creates both tables, for your migrations.
    pub fn migration(&self) -> &str {
        &self.inner.sql.migration
    }

    /// Creates both tables if they do not exist (what the first call does unless
    /// [`create_tables(false)`](Self::create_tables)), within 30 s: run it at startup, where
    /// a database that cannot be reached should stop the app with its address and cause.
    ///
    /// Beside the pool it opens one connection of its own: a pool that cannot connect says
    /// only that it timed out, after its acquire timeout, while this says at once why the
    /// server cannot be reached — "PostgreSQL at 127.0.0.1:5432/app: error communicating with
    /// database: Connection refused (os error 111)". A server that answers but refuses (too
    /// many clients, a password) is left to the pool's own retries.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use std::task::Poll;
        let mut migrate = std::pin::pin!(self.migrate_within(MIGRATION_TIMEOUT));
        let mut probe = std::pin::pin!(self.reachable());
        let mut probing = true;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = migrate.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if probing && let Poll::Ready(outcome) = probe.as_mut().poll(cx) {
                probing = false;
                if let Err(unreachable) = outcome {
                    return Poll::Ready(Err(unreachable));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// `Err` only when one connection with the pool's settings cannot reach the server (an
    /// I/O or TLS failure); `Ok` when it connects or the server answers with an error.
    async fn reachable(&self) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        let options = self.inner.pool.connect_options();
        match PgConnection::connect_with(&options).await {
            Ok(connection) => {
                let _ = connection.close().await;
                Ok(())
            }
            Err(error @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_))) => Err(self.failed(error)),
            Err(_) => Ok(()),
        }
    }

    async fn migrate_within(&self, bound: Duration) -> Result<(), StoreError> {
        let migrate = async {
            sqlx::raw_sql(AssertSqlSafe(self.inner.sql.migration.clone()))
                .execute(&self.inner.pool)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(bound, migrate).await {
            Ok(result) => result.map_err(|error| self.failed(error)),
            Err(_) => Err(self.silent(bound)),
        }
    }

    /// Deletes reservations and cooldowns that ended more than `grace` ago, in batches; how
    /// many rows went. A `reserve` runs it in the background every few minutes with a grace
    /// of ten minutes; call it from a timer of your own if you prefer.
    pub async fn purge_expired(&self, grace: Duration) -> Result<u64, StoreError> {
        self.ready().await?;
        let mut total = 0;
        loop {
            let rows = self
                .bounded(async {
                    let sql = AssertSqlSafe(self.inner.sql.purge.clone());
                    Ok(sqlx::query(sql)
                        .bind(grace.as_secs_f64())
                        .execute(&self.inner.pool)
                        .await?
                        .rows_affected())
                })
                .await?;
            total += rows;
            if rows < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Runs `call` within the timeout; errors name the database's address and the cause.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(result) => result.map_err(|error| self.failed(error)),
            Err(_) => Err(self.silent(self.inner.timeout)),
        }
    }

    fn failed(&self, error: sqlx::Error) -> StoreError {
        let address = &self.inner.address;
        match error {
            // sqlx's word for "no connection could be opened in time".
            sqlx::Error::PoolTimedOut => StoreError::new(format!(
                "PostgreSQL at {address}: no connection could be opened (refused, or not \
                 answering; is the server running there?)"
            )),
            error => StoreError::new(format!("PostgreSQL at {address}: {error}")),
        }
    }

    fn silent(&self, bound: Duration) -> StoreError {
        StoreError::new(format!(
            "PostgreSQL at {}: no answer within {bound:?}",
            self.inner.address
        ))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if !self.inner.create_tables {
            return Ok(());
        }
        self.inner
            .ready
            .get_or_try_init(|| self.migrate_within(self.inner.timeout))
            .await
            .map(|_| ())
    }

    /// One row (or none) of `sql` with `key` (and `token`) bound.
    async fn fetch(
        &self,
        sql: &Arc<str>,
        key: &StoreKey,
        token: Option<ReservationToken>,
        float: Option<f64>,
    ) -> Result<Option<sqlx::postgres::PgRow>, StoreError> {
        self.ready().await?;
        self.bounded(async {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone())).bind(key.as_bytes().as_slice());
            if let Some(token) = token {
                query = query.bind(token.to_hex());
            }
            if let Some(float) = float {
                query = query.bind(float);
            }
            query.fetch_optional(&self.inner.pool).await
        })
        .await
    }

    fn purge_due(&self) -> bool {
        let mut last = self
            .inner
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
        let store = self.clone();
        runtime.spawn(async move {
            match store.purge_expired(Duration::from_secs(600)).await {
                Ok(n) => tracing::debug!(rows = n, "purged ended unique reservations"),
                Err(error) => tracing::warn!(error = %iamport_client::escaped::Escaped(&error), "could not purge ended unique reservations"),
            }
        });
    }

    async fn keys_statement(
        &self,
        sql: &Arc<str>,
        keys: &[StoreKey],
        until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        self.ready().await?;
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes().as_slice()).collect();
        let mut total = 0;
        // Chunks keep each statement's locks and WAL record modest.
        for chunk in keys.chunks(10_000) {
            total += self
                .bounded(async {
                    let mut query = sqlx::query(AssertSqlSafe(sql.clone())).bind(chunk);
                    if let Some(until) = until {
                        query = query.bind(jiff_timestamp(until));
                    }
                    let row = query.fetch_one(&self.inner.pool).await?;
                    row.try_get::<i64, _>(0)
                })
                .await? as u64;
        }
        Ok(total)
    }
}

/// A `SystemTime` as PostgreSQL's `timestamptz` text (sqlx without a time crate feature).
fn jiff_timestamp(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .unwrap_or(jiff::Timestamp::MAX)
        .to_string()
}

#[async_trait]
impl UniqueStore for PostgresStore {
    async fn reserve(
        &self,
        key: &StoreKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        if self.purge_due() {
            self.purge_in_background();
        }
        let sql = &self.inner.sql.reserve;
        let row = self
            .fetch(sql, key, Some(token), Some(lease.as_secs_f64()))
            .await?;
        Ok(if row.is_some() {
            Reservation::Reserved
        } else {
            Reservation::Taken
        })
    }

    async fn commit(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        let row = self
            .fetch(&self.inner.sql.commit, key, Some(token), None)
            .await?;
        Ok(row.is_some_and(|row| row.try_get::<bool, _>(0).unwrap_or(false)))
    }

    async fn release(&self, key: &StoreKey, token: ReservationToken) -> Result<bool, StoreError> {
        let row = self
            .fetch(&self.inner.sql.release, key, Some(token), None)
            .await?;
        Ok(row.is_some())
    }

    async fn is_taken(&self, key: &StoreKey) -> Result<bool, StoreError> {
        Ok(self.status(key).await? != KeyStatus::Free)
    }

    fn account_statement(&self) -> Option<Arc<str>> {
        Some(self.inner.sql.record.clone())
    }
}

#[async_trait]
impl UniqueAdmin for PostgresStore {
    async fn register(&self, keys: &[StoreKey]) -> Result<u64, StoreError> {
        self.keys_statement(&self.inner.sql.register, keys, None)
            .await
    }

    async fn forget(
        &self,
        keys: &[StoreKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        match cooldown_until {
            None => {
                self.keys_statement(&self.inner.sql.forget, keys, None)
                    .await
            }
            Some(until) => {
                self.keys_statement(&self.inner.sql.forget_cooling, keys, Some(until))
                    .await
            }
        }
    }

    async fn status(&self, key: &StoreKey) -> Result<KeyStatus, StoreError> {
        let row = self
            .fetch(&self.inner.sql.status, key, None, None)
            .await?
            .ok_or_else(|| StoreError::new("PostgreSQL answered no row to a status query"))?;
        let account: bool = row.try_get(0).map_err(StoreError::new)?;
        let committed: Option<bool> = row.try_get(1).map_err(StoreError::new)?;
        let token: Option<String> = row.try_get(2).map_err(StoreError::new)?;
        let until: Option<f64> = row.try_get(3).map_err(StoreError::new)?;
        let live: Option<bool> = row.try_get(4).map_err(StoreError::new)?;
        Ok(match (account, committed, live) {
            (true, _, _) | (false, Some(true), _) => KeyStatus::Committed,
            (false, Some(false), Some(true)) if token.as_deref() == Some("") => {
                let seconds = until.unwrap_or_default().max(0.0);
                KeyStatus::CoolingDown {
                    until: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds),
                }
            }
            (false, Some(false), Some(true)) => KeyStatus::Reserved,
            _ => KeyStatus::Free,
        })
    }
}

/// Why [`Certified::record_account`](crate::Certified::record_account) did not record the
/// person's key. `Debug` prints the same message as `Display`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The accounts table already holds this person: roll the transaction back and answer
    /// 409 (with the `axum` feature this error is that response).
    #[error("this person already has an account")]
    AlreadyRegistered,
    /// This request was not admitted under `unique = true` behind a layer whose unique store
    /// is a [`PostgresStore`]: a programming error (500).
    #[error(
        "record_account needs a `unique = true` admission behind a CertificationLayer whose \
         unique store is a PostgresStore"
    )]
    NotReserved,
    /// The statement failed (the transaction is then aborted; roll it back).
    #[error("could not record the account's key: {0}")]
    Database(#[source] sqlx::Error),
}

impl std::fmt::Debug for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Writes `key` with `statement` on the handler's connection (its transaction).
pub(crate) async fn record(
    statement: Arc<str>,
    key: &StoreKey,
    connection: &mut PgConnection,
) -> Result<(), RecordError> {
    match sqlx::query(AssertSqlSafe(statement))
        .bind(key.as_bytes().as_slice())
        .execute(connection)
        .await
    {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation()) =>
        {
            Err(RecordError::AlreadyRegistered)
        }
        Err(error) => Err(RecordError::Database(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert_eq!(quoted_table("t").unwrap(), "\"t\"");
        assert_eq!(quoted_table("s.t_1").unwrap(), "\"s\".\"t_1\"");
        for bad in ["", "a.b.c", "1t", "t;drop", "t\"", "a b", &"x".repeat(64)] {
            assert!(quoted_table(bad).is_err(), "{bad}");
        }
    }
}
