//! `PostgresStore`: reservations in a PostgreSQL table, shared by every app replica.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

use super::{Reservation, ReservationToken, StoreError, UniqueKey, UniqueStore};
use crate::source::BoxFuture;

/// The default table name.
pub const DEFAULT_POSTGRES_TABLE: &str = "iamport_unique_keys";

/// Reservations in PostgreSQL, for several app replicas.
///
/// - `reserve` is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE committed = false AND
///   lease_until <= now()`: atomic, so of any number of concurrent reservations of a free key
///   exactly one wins; an expired lease is taken over in the same statement. Leases use the
///   database's clock, never the app servers'.
/// - `commit` / `release` are `UPDATE` / `DELETE … WHERE key = $1 AND token = $2`.
/// - Connections come from a pool (default 16); the table is created on first use unless
///   [`create_table(false)`](Self::create_table) — then run [`PostgresStore::migration`]
///   yourself.
///
/// The key is the HMAC of the CI (see [`UniqueKeys`](super::UniqueKeys)), never the CI.
pub struct PostgresStore {
    pool: Pool,
    table: String,
    create_table: bool,
    ready: OnceCell<()>,
    sql: Statements,
}

struct Statements {
    reserve: String,
    commit: String,
    release: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table)
            .field("pool", &self.pool.status())
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

impl PostgresStore {
    /// A store for the database at `url` (`postgres://user@host:5432/db`), using the table
    /// [`DEFAULT_POSTGRES_TABLE`]. Nothing is connected until first use.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::new(format!("invalid PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(3)))
            .wait_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(3)))
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
            sql: Statements {
                reserve: format!(
                    "INSERT INTO {t} AS u (key, token, committed, lease_until) \
                     VALUES ($1, $2, false, now() + $3::float8 * interval '1 second') \
                     ON CONFLICT (key) DO UPDATE \
                       SET token = EXCLUDED.token, lease_until = EXCLUDED.lease_until, reserved_at = now() \
                       WHERE u.committed = false AND u.lease_until <= now() \
                     RETURNING u.token"
                ),
                commit: format!(
                    "UPDATE {t} SET committed = true, lease_until = NULL, committed_at = now() \
                     WHERE key = $1 AND token = $2 AND committed = false"
                ),
                release: format!(
                    "DELETE FROM {t} WHERE key = $1 AND token = $2 AND committed = false"
                ),
            },
        })
    }

    /// Uses `table` (`name` or `schema.name`) instead of [`DEFAULT_POSTGRES_TABLE`].
    pub fn table(self, table: &str) -> Result<Self, StoreError> {
        let mut store = Self::from_pool(self.pool, table)?;
        store.create_table = self.create_table;
        Ok(store)
    }

    /// Whether to `CREATE TABLE IF NOT EXISTS` on first use (default `true`).
    #[must_use]
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// The SQL that creates the table, for your migrations.
    pub fn migration(table: &str) -> Result<String, StoreError> {
        let t = quoted_table(table)?;
        Ok(format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n\
             \x20   key          BYTEA PRIMARY KEY,      -- HMAC-SHA256 of the CI, never the CI\n\
             \x20   token        TEXT NOT NULL,          -- the current holder's reservation token\n\
             \x20   committed    BOOLEAN NOT NULL DEFAULT FALSE,\n\
             \x20   lease_until  TIMESTAMPTZ,            -- NULL once committed\n\
             \x20   reserved_at  TIMESTAMPTZ NOT NULL DEFAULT now(),\n\
             \x20   committed_at TIMESTAMPTZ\n\
             )"
        ))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        let client = self.pool.get().await.map_err(StoreError::new)?;
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
        Ok(client)
    }
}

impl UniqueStore for PostgresStore {
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.sql.reserve)
                .await
                .map_err(StoreError::new)?;
            let token = ReservationToken::random();
            let row = client
                .query_opt(
                    &statement,
                    &[&&key.as_bytes()[..], &token.to_hex(), &lease.as_secs_f64()],
                )
                .await
                .map_err(StoreError::new)?;
            Ok(match row {
                Some(_) => Reservation::Reserved(token),
                None => Reservation::Taken,
            })
        })
    }

    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.held_by(&self.sql.commit, key, token))
    }

    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.held_by(&self.sql.release, key, token))
    }
}

impl PostgresStore {
    /// Runs `sql` (commit or release) for `key` held by `token`: whether one row changed.
    async fn held_by(
        &self,
        sql: &str,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(StoreError::new)?;
        let rows = client
            .execute(&statement, &[&&key.as_bytes()[..], &token.to_hex()])
            .await
            .map_err(StoreError::new)?;
        Ok(rows == 1)
    }
}

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
