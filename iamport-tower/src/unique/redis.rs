//! `RedisStore` and `RedisClusterStore`: reservations in Redis, shared by every app replica.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::OnceCell;

use async_trait::async_trait;

use super::{
    DEFAULT_STORE_TIMEOUT, KeyStatus, Reservation, ReservationToken, StoreError, StoreKey,
    UniqueAdmin, UniqueStore,
};

/// The default key prefix.
pub const DEFAULT_REDIS_PREFIX: &str = "iamport:unique:";

/// Keys handled concurrently by `register` / `forget` (pipelined on the connection).
const BATCH_IN_FLIGHT: usize = 512;

/// Values: the holder's token (a reservation, with an expiry), `committed…` (no expiry), or
/// `cooldown` (expiring at the cooldown's end).
///
/// `GET` = token → replace the value (which clears the expiry) with a committed marker;
/// already committed by this token → 1 too (an earlier attempt landed).
const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('SET', KEYS[1], 'committed:' .. ARGV[1])
  return 1
end
if v == 'committed:' .. ARGV[1] then
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

const REGISTER: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 9) == 'committed' then
  return 0
end
redis.call('SET', KEYS[1], 'committed')
return 1
";

/// ARGV[1]: the cooldown's end in Unix milliseconds, or '' to free the key now.
const FORGET: &str = r"
local v = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], 'cooldown', 'PXAT', ARGV[1])
end
if v then return 1 end
return 0
";

const STATUS: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return {'', -2} end
return {v, redis.call('PTTL', KEYS[1])}
";

struct Scripts {
    commit: Script,
    release: Script,
    register: Script,
    forget: Script,
    status: Script,
}

enum Backend {
    Single {
        client: redis::Client,
        connection: OnceCell<ConnectionManager>,
    },
    Cluster {
        client: Box<ClusterClient>,
        connection: OnceCell<ClusterConnection>,
    },
}

/// A connection of either kind.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// What both Redis stores share: naming, scripts, timeouts.
struct Core {
    backend: Backend,
    /// `Redis at host:port` (or the cluster's nodes), for error messages; never credentials.
    name: String,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

impl Core {
    fn new(backend: Backend, name: String) -> Self {
        Self {
            backend,
            name,
            prefix: DEFAULT_REDIS_PREFIX.into(),
            timeout: DEFAULT_STORE_TIMEOUT,
            scripts: Scripts {
                commit: Script::new(COMMIT),
                release: Script::new(RELEASE),
                register: Script::new(REGISTER),
                forget: Script::new(FORGET),
                status: Script::new(STATUS),
            },
        }
    }

    /// `prefix{hex}`: the hash tag puts everything about one person in one cluster slot.
    fn name(&self, key: &StoreKey) -> String {
        format!("{}{{{}}}", self.prefix, key.to_hex())
    }

    fn connected(&self) -> bool {
        match &self.backend {
            Backend::Single { connection, .. } => connection.initialized(),
            Backend::Cluster { connection, .. } => connection.initialized(),
        }
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.backend {
            Backend::Single { client, connection } => connection
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1);
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map_err(StoreError::new)
                })
                .await
                .cloned()
                .map(Connection::Single),
            Backend::Cluster { client, connection } => connection
                .get_or_try_init(|| async {
                    client.get_async_connection().await.map_err(StoreError::new)
                })
                .await
                .cloned()
                .map(Connection::Cluster),
        }
    }

    /// Runs `f` on a connection within the timeout.
    async fn bounded<T, F>(&self, f: impl FnOnce(Connection) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let run = async {
            let connection = self.connection().await?;
            f(connection).await.map_err(StoreError::new)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::new(format!("{}: {error}", self.name))),
            Err(_) => Err(StoreError::new(format!(
                "{}: no answer within {:?}",
                self.name, self.timeout
            ))),
        }
    }

    async fn script(
        &self,
        script: &Script,
        key: &StoreKey,
        args: &[String],
    ) -> Result<i64, StoreError> {
        let mut invocation = script.key(self.name(key));
        for arg in args {
            invocation.arg(arg);
        }
        self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    async fn reserve_key(
        &self,
        key: &StoreKey,
        token: ReservationToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        let name = self.name(key);
        let set: Option<String> = self
            .bounded(|mut c| async move {
                redis::cmd("SET")
                    .arg(name)
                    .arg(token.to_hex())
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(lease))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match set {
            Some(_) => Reservation::Reserved,
            None => Reservation::Taken,
        })
    }

    async fn commit_key(
        &self,
        key: &StoreKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        Ok(self
            .script(&self.scripts.commit, key, &[token.to_hex()])
            .await?
            == 1)
    }

    async fn release_key(
        &self,
        key: &StoreKey,
        token: ReservationToken,
    ) -> Result<bool, StoreError> {
        Ok(self
            .script(&self.scripts.release, key, &[token.to_hex()])
            .await?
            == 1)
    }

    async fn register_key(&self, key: &StoreKey) -> Result<bool, StoreError> {
        Ok(self.script(&self.scripts.register, key, &[]).await? == 1)
    }

    async fn forget_key(
        &self,
        key: &StoreKey,
        cooldown_until: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        let until = match cooldown_until {
            None => String::new(),
            Some(until) => {
                let ms = until
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                ms.max(1).to_string()
            }
        };
        Ok(self.script(&self.scripts.forget, key, &[until]).await? == 1)
    }

    async fn key_status(&self, key: &StoreKey) -> Result<KeyStatus, StoreError> {
        let invocation = self.scripts.status.key(self.name(key));
        let (value, pttl): (String, i64) = self
            .bounded(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(if value.is_empty() || pttl == -2 {
            KeyStatus::Free
        } else if value.starts_with("committed") {
            KeyStatus::Committed
        } else if value == "cooldown" {
            KeyStatus::CoolingDown {
                until: SystemTime::now() + Duration::from_millis(pttl.max(0) as u64),
            }
        } else {
            KeyStatus::Reserved
        })
    }

    async fn register_keys(&self, keys: &[StoreKey]) -> Result<u64, StoreError> {
        let mut new = 0;
        for chunk in keys.chunks(BATCH_IN_FLIGHT) {
            let results =
                futures_util::future::join_all(chunk.iter().map(|k| self.register_key(k))).await;
            for result in results {
                new += u64::from(result?);
            }
        }
        Ok(new)
    }

    async fn forget_keys(
        &self,
        keys: &[StoreKey],
        cooldown_until: Option<SystemTime>,
    ) -> Result<u64, StoreError> {
        let mut found = 0;
        for chunk in keys.chunks(BATCH_IN_FLIGHT) {
            let results = futures_util::future::join_all(
                chunk.iter().map(|k| self.forget_key(k, cooldown_until)),
            )
            .await;
            for result in results {
                found += u64::from(result?);
            }
        }
        Ok(found)
    }
}

/// `host:port` (or a socket path) of a `redis://` URL, without credentials, path or query:
/// what error messages name.
fn address(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    if scheme == "unix" || scheme == "redis+unix" {
        return rest.split('?').next().unwrap_or(rest).to_owned();
    }
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let has_port = match host.rsplit_once(':') {
        Some((_, port)) => !port.contains(']'),
        None => false,
    };
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:6379")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Reservations in one Redis, for several app replicas.
///
/// - `reserve` is `SET key token NX PX lease`: atomic; the lease is Redis's own expiry.
/// - `commit` and `release` are Lua scripts that act only if the key still holds the
///   caller's token; `commit` rewrites the value without an expiry, so it stays forever.
///   `register` and `forget` are scripts too; a cooldown is a value expiring at its end
///   (`PXAT`). Every operation is one atomic command or script on one key.
/// - One multiplexed, auto-reconnecting connection, opened on first use; every call is
///   bounded by [`timeout`](Self::timeout) (default 2 s): a hung Redis is a 503, not a hung
///   request.
///
/// Keys are `prefix{hex}` — the hex HMAC of the CI (see [`StoreKeys`](super::StoreKeys))
/// in a hash tag, named as [`RedisClusterStore`] names them, so keys move to a cluster as
/// they are. With persistence off, a Redis restart forgets every account: use Redis with
/// AOF/RDB, or `PostgresStore`, when that matters.
pub struct RedisStore {
    core: Core,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.core.prefix)
            .field("connected", &self.core.connected())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://127.0.0.1:6379`, `rediss://` for TLS is not
    /// built in), with key prefix [`DEFAULT_REDIS_PREFIX`]. Nothing is connected until
    /// first use.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::new(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            core: Core::new(
                Backend::Single {
                    client,
                    connection: OnceCell::new(),
                },
                format!("Redis at {}", address(url)),
            ),
        })
    }

    /// Uses `prefix` for every key (isolate apps or test runs sharing one Redis). It must
    /// not contain `{` or `}` (they would change the cluster hash tag).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.core.prefix = prefix.into().replace(['{', '}'], "");
        self
    }

    /// The most one call may take (default [`DEFAULT_STORE_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.core.timeout = timeout;
        self
    }
}

/// Reservations in a Redis Cluster, for sites that outgrew one Redis.
///
/// The same operations, scripts and key names as [`RedisStore`]: every key is
/// `prefix{hex}`, whose hash tag is the person's hex key, so each operation is one atomic
/// command or script on the one node that owns the person's slot. The client follows
/// `MOVED`/`ASK` redirections and reconnects; every call is bounded by
/// the timeout given to [`with_timeout`](Self::with_timeout) (default 2 s).
pub struct RedisClusterStore {
    core: Core,
}

impl std::fmt::Debug for RedisClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterStore")
            .field("prefix", &self.core.prefix)
            .field("connected", &self.core.connected())
            .finish_non_exhaustive()
    }
}

impl RedisClusterStore {
    /// A store for the cluster reachable at any of `nodes` (`redis://127.0.0.1:7001`, …;
    /// one is enough, the rest are discovered), with key prefix [`DEFAULT_REDIS_PREFIX`].
    /// Nothing is connected until first use.
    pub fn new<'n>(nodes: impl IntoIterator<Item = &'n str>) -> Result<Self, StoreError> {
        Self::with_timeout(nodes, DEFAULT_STORE_TIMEOUT)
    }

    /// [`new`](Self::new) with a bound for each call other than the default.
    pub fn with_timeout<'n>(
        nodes: impl IntoIterator<Item = &'n str>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let nodes: Vec<&str> = nodes.into_iter().collect();
        if nodes.is_empty() {
            return Err(StoreError::new(
                "a Redis Cluster store needs at least one node",
            ));
        }
        let addresses: Vec<String> = nodes.iter().map(|node| address(node)).collect();
        let client = ClusterClient::builder(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(|e| StoreError::new(format!("invalid Redis Cluster nodes: {e}")))?;
        let mut store = Self::from_client(client, timeout);
        store.core.name = format!("Redis Cluster at {}", addresses.join(","));
        Ok(store)
    }

    /// A store over a cluster client you built (TLS, credentials, address maps, read
    /// routing…); every call is bounded by `timeout`.
    pub fn from_client(client: ClusterClient, timeout: Duration) -> Self {
        let mut core = Core::new(
            Backend::Cluster {
                client: Box::new(client),
                connection: OnceCell::new(),
            },
            "Redis Cluster".to_owned(),
        );
        core.timeout = timeout;
        Self { core }
    }

    /// Uses `prefix` for every key. It must not contain `{` or `}` (they would change the
    /// hash tag); they are removed.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.core.prefix = prefix.into().replace(['{', '}'], "");
        self
    }
}

/// Both stores are their [`Core`].
macro_rules! via_core {
    ($($store:ty),*) => {$(
        #[async_trait]
        impl UniqueStore for $store {
            async fn reserve(
                &self,
                key: &StoreKey,
                token: ReservationToken,
                lease: Duration,
            ) -> Result<Reservation, StoreError> {
                self.core.reserve_key(key, token, lease).await
            }
            async fn commit(
                &self,
                key: &StoreKey,
                token: ReservationToken,
            ) -> Result<bool, StoreError> {
                self.core.commit_key(key, token).await
            }
            async fn release(
                &self,
                key: &StoreKey,
                token: ReservationToken,
            ) -> Result<bool, StoreError> {
                self.core.release_key(key, token).await
            }
            async fn is_taken(&self, key: &StoreKey) -> Result<bool, StoreError> {
                Ok(self.core.key_status(key).await? != KeyStatus::Free)
            }
        }

        #[async_trait]
        impl UniqueAdmin for $store {
            async fn register(&self, keys: &[StoreKey]) -> Result<u64, StoreError> {
                self.core.register_keys(keys).await
            }
            async fn forget(
                &self,
                keys: &[StoreKey],
                cooldown_until: Option<SystemTime>,
            ) -> Result<u64, StoreError> {
                self.core.forget_keys(keys, cooldown_until).await
            }
            async fn status(&self, key: &StoreKey) -> Result<KeyStatus, StoreError> {
                self.core.key_status(key).await
            }
        }
    )*};
}
via_core!(RedisStore, RedisClusterStore);

#[cfg(test)]
mod address_tests {
    use super::address;

    #[test]
    fn addresses_never_carry_credentials() {
        assert_eq!(address("redis://127.0.0.1:1"), "127.0.0.1:1");
        assert_eq!(address("redis://cache"), "cache:6379");
        assert_eq!(
            address("rediss://user:p%40ss@cache.internal:6380/2?protocol=resp3"),
            "cache.internal:6380"
        );
        assert_eq!(address("redis://[::1]:7001"), "[::1]:7001");
        assert_eq!(address("redis://[::1]"), "[::1]:6379");
        assert_eq!(address("unix:///run/redis.sock"), "/run/redis.sock");
    }
}
