//! `PostgresStore`: reservations in a PostgreSQL table, shared by every app replica.

mod tls;

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
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

/// Reservations in PostgreSQL, for several app replicas.
///
/// - `reserve` is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE committed = false AND
///   lease_until <= now()`: atomic, so of any number of concurrent reservations of a free key
///   exactly one wins; an ended lease or cooldown is taken over in the same statement.
///   Leases use the database's clock, never the app servers'.
/// - `commit` / `renew` / `release` are one `UPDATE` / `DELETE … WHERE key = $1 AND token =
///   $2`; `register` and `forget` are one statement each, batched with `unnest` for many keys
///   (the `iamport-unique` command). A cooldown is a row held by no token until its date.
/// - Leases are not worth a disk flush: `reserve`, `renew` and `release` commit without
///   waiting for the WAL (`synchronous_commit = off` for that one statement's transaction),
///   `commit`, `register` and `forget` wait for it. After a database crash, reservations
///   from its last moments may be gone; a signup whose reservation vanished fails its
///   commit (an ERROR log and [`UniqueCounters::commits_failed`](super::UniqueCounters)),
///   which the `UNIQUE` constraint pattern of the [module docs](super) covers.
/// - Each call is one round trip on a pooled connection (prepared statements are cached per
///   connection), bounded by [`timeout`](Self::timeout) (default 2 s) including the wait
///   for a connection. A connection whose call timed out is dropped from the pool, never
///   reused; closed ones are recycled.
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
    pool: Pool,
    table: String,
    create_table: bool,
    ready: OnceCell<()>,
    sql: Statements,
    timeout: Duration,
    last_purge: Mutex<Option<Instant>>,
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
            .field("table", &self.table)
            .field("pool", &self.pool.status())
            .field("timeout", &self.timeout)
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
        commit: format!(
            "UPDATE {t} SET committed = true, lease_until = NULL, committed_at = now() \
             WHERE key = $1 AND token = $2 AND committed = false RETURNING 1"
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

    /// A store over an existing pool (bring your own TLS and pool settings).
    pub fn from_pool(pool: Pool, table: &str) -> Result<Self, StoreError> {
        let t = quoted_table(table)?;
        Ok(Self {
            pool,
            table: table.to_owned(),
            create_table: true,
            ready: OnceCell::new(),
            sql: statements(&t),
            timeout: DEFAULT_STORE_TIMEOUT,
            last_purge: Mutex::new(None),
        })
    }

    /// Uses `table` (`name` or `schema.name`) instead of [`DEFAULT_POSTGRES_TABLE`].
    pub fn table(self, table: &str) -> Result<Self, StoreError> {
        let mut store = Self::from_pool(self.pool, table)?;
        store.create_table = self.create_table;
        store.timeout = self.timeout;
        Ok(store)
    }

    /// Whether to `CREATE TABLE IF NOT EXISTS` on first use (default `true`).
    #[must_use]
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// The most one call may take, waiting for a connection included (default
    /// [`DEFAULT_STORE_TIMEOUT`]); past it the call fails with a [`StoreError`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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
        let mut total = 0;
        loop {
            let rows = self.query(&self.sql.purge, &[&grace.as_secs_f64()]).await?;
            total += rows.len() as u64;
            if (rows.len() as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// A pooled connection (the table created on first use), held as in flight.
    async fn client(&self) -> Result<InFlight, StoreError> {
        let in_flight = InFlight(Some(self.pool.get().await.map_err(StoreError::new)?));
        let client = in_flight.0.as_ref().expect("just set");
        if self.create_table {
            self.ready
                .get_or_try_init(|| async {
                    let sql = Self::migration(&self.table)?;
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

    fn purge_due(&self) -> bool {
        let mut last = self
            .last_purge
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let store = Self {
            pool: self.pool.clone(),
            table: self.table.clone(),
            create_table: false,
            ready: OnceCell::new(),
            sql: statements(&quoted_table(&self.table).unwrap_or_default()),
            timeout: self.timeout,
            last_purge: Mutex::new(None),
        };
        runtime.spawn(async move {
            match store.purge_expired(Duration::from_secs(600)).await {
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
            .query(
                &self.sql.reserve,
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
            .query(
                &self.sql.renew,
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
        self.held_by(&self.sql.commit, key, token).await
    }

    async fn release_key(
        &self,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        self.held_by(&self.sql.release, key, token).await
    }

    /// Runs `sql` (commit or release) for `key` held by `token`: whether one row changed.
    async fn held_by(
        &self,
        sql: &str,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        let rows = self
            .query(sql, &[&&key.as_bytes()[..], &token.to_hex()])
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
            .query(&self.sql.status, &[&&key.as_bytes()[..]])
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
        let rows = self.query(&self.sql.register, &[&keys]).await?;
        Ok(rows.len() as u64)
    }

    async fn forget_keys(
        &self,
        keys: &[UniqueKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        let keys = distinct(keys);
        let rows = match cooldown_until {
            None => self.query(&self.sql.forget, &[&keys]).await?,
            Some(until) => {
                self.query(&self.sql.forget_cooling, &[&keys, &until])
                    .await?
            }
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
    use super::quoted_table;

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
}
