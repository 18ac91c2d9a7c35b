//! The unique store the replicas share, by kind, and the names of this run's tables and
//! keys (one run's leftovers never meet another's, and another engineer's concurrent run
//! never meets ours).

use std::str::FromStr;

/// Which unique store the replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Postgres,
    Redis,
    RedisCluster,
}

impl StoreKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
        }
    }
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "postgres" => Ok(Self::Postgres),
            "redis" => Ok(Self::Redis),
            "redis-cluster" => Ok(Self::RedisCluster),
            other => Err(format!(
                "unknown store {other:?} (postgres, redis, redis-cluster)"
            )),
        }
    }
}

/// This run's names: `soak_<run>_…`.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) run: String,
}

impl Names {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            run: format!("{}_{:x}", std::process::id(), seed & 0xffff_ffff),
        }
    }

    /// The PostgreSQL unique store's reservations table.
    pub(crate) fn unique_table(&self) -> String {
        format!("soak_{}_unique", self.run)
    }

    /// The PostgreSQL store's accounts' keys table (both replicas record accounts there).
    pub(crate) fn keys_table(&self) -> String {
        format!("soak_{}_keys", self.run)
    }

    /// Replica `name`'s accounts table.
    pub(crate) fn accounts_table(&self, name: &str) -> String {
        format!("soak_{}_accounts_{name}", self.run)
    }

    /// The Redis key prefix.
    pub(crate) fn redis_prefix(&self) -> String {
        format!("soak:{}:", self.run)
    }
}

/// `url` with its `host:port` replaced by `addr` (to point a store at the freezable proxy).
pub(crate) fn with_address(url: &str, addr: std::net::SocketAddr) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"));
    Some(format!(
        "{scheme}://{}{addr}{tail}",
        user.unwrap_or_default()
    ))
}

/// The `host:port` of a URL, resolved.
pub(crate) fn address_of(url: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.to_socket_addrs().ok()?.next()
}
