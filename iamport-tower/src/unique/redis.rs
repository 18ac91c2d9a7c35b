//! `RedisStore`: reservations in Redis, shared by every app replica.

use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{Reservation, ReservationToken, StoreError, UniqueKey, UniqueStore};
use crate::source::BoxFuture;

/// The default key prefix.
pub const DEFAULT_REDIS_PREFIX: &str = "iamport:unique:";

/// `GET` = token → replace the value (which clears the expiry) with a committed marker.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'committed:' .. ARGV[1])
  return 1
end
return 0
";

/// `GET` = token → delete.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Reservations in Redis, for several app replicas.
///
/// - `reserve` is `SET key token NX PX lease`: atomic; the lease is Redis's own expiry.
/// - `commit` and `release` are Lua scripts that act only if the key still holds the caller's
///   token; `commit` rewrites the value without an expiry, so it stays forever.
/// - One multiplexed, auto-reconnecting connection, opened on first use; connection and
///   response timeouts (default 2 s) make a hung Redis a 503, not a hung request.
///
/// Keys are `prefix` + the hex HMAC of the CI (see [`UniqueKeys`](super::UniqueKeys)). With
/// persistence off, a Redis restart forgets every account: use Redis with AOF/RDB, or
/// `PostgresStore`, when that matters.
pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    commit: Script,
    release: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connected", &self.connection.initialized())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://127.0.0.1:6379`), with key prefix
    /// [`DEFAULT_REDIS_PREFIX`]. Nothing is connected until first use.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::new(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            prefix: DEFAULT_REDIS_PREFIX.into(),
            timeout: Duration::from_secs(2),
            commit: Script::new(COMMIT),
            release: Script::new(RELEASE),
        })
    }

    /// Uses `prefix` for every key (isolate apps or test runs sharing one Redis).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connection and response timeout (default 2 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn name(&self, key: &UniqueKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        self.connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(StoreError::new)
            })
            .await
            .cloned()
    }
}

impl UniqueStore for RedisStore {
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let token = ReservationToken::random();
            let millis = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
            let set: Option<String> = redis::cmd("SET")
                .arg(self.name(key))
                .arg(token.to_hex())
                .arg("NX")
                .arg("PX")
                .arg(millis)
                .query_async(&mut connection)
                .await
                .map_err(StoreError::new)?;
            Ok(match set {
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
        Box::pin(self.held_by(&self.commit, key, token))
    }

    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.held_by(&self.release, key, token))
    }
}

impl RedisStore {
    /// Runs `script` (commit or release) for `key` held by `token`: whether it acted.
    async fn held_by(
        &self,
        script: &Script,
        key: &UniqueKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection().await?;
        let done: i64 = script
            .key(self.name(key))
            .arg(token.to_hex())
            .invoke_async(&mut connection)
            .await
            .map_err(StoreError::new)?;
        Ok(done == 1)
    }
}
