//! One account per person: [`UniqueStore`]s that reserve, commit and release a person's key.
//!
//! PortOne's guide checks "one account per person" by querying the users table by CI and then
//! inserting — two concurrent signups of one person both pass the query. Here admission under
//! a `unique` policy *reserves* the person's key atomically in a store; only one request can
//! hold it. When the response is a success (2xx) the reservation is committed forever;
//! anything else, or a dropped request (client gone, panic, cancelled future), releases it.
//! Each reservation carries a lease, so a crashed process cannot block a person forever.
//!
//! Keys are an HMAC-SHA256 of the CI under an application secret ([`UniqueKeys`]), never the
//! CI itself: the CI is personal data under Korea's Personal Information Protection Act (a
//! lifelong national identifier for the person), so a store that leaks, or a log of its
//! keys, must not be a list of CIs — and without the secret the keys cannot be matched
//! against CIs from another source. A route may name a *scope* (`unique = "signup"`): the
//! key is then HMAC-SHA256(secret, `0x00` ‖ scope ‖ `0x00` ‖ CI) ([`UniqueKeys::key_in`]), a
//! keyspace of its own in the same store; the default scope is HMAC-SHA256(secret, CI).
//!
//! Stores: [`MemoryStore`] (one process; the default), `PostgresStore` (feature `postgres`),
//! `RedisStore` and `RedisClusterStore` (feature `redis`) for several app replicas. All pass
//! one conformance suite (`tests/unique.rs`). An admission is one store round trip to
//! reserve and one to commit; on PostgreSQL, reservations and commits that arrive while
//! others of their kind are being written share one statement (a call alone is sent at
//! once), so under load an admission costs the database a share of one statement to reserve
//! and a share of one statement and WAL flush to commit.
//!
//! # Faults
//!
//! - **Every store call is bounded** ([`DEFAULT_STORE_TIMEOUT`], 2 s, configurable with
//!   [`CertificationLayer::unique_timeout`](crate::CertificationLayer::unique_timeout); the
//!   PostgreSQL and Redis stores bound their own calls too). A store that does not answer in time makes admission a 503
//!   (`store-unavailable`) — never a hang, and the handler does not run.
//! - **A reserve that timed out leaves nothing behind.** The reservation token is chosen
//!   before the call, so when a timed-out `reserve` is executed by the store later, the
//!   layer can release it: a background task retries `release(key, token)` with backoff
//!   until the store answers again (a few attempts, bounded by the lease) and counts
//!   [`UniqueCounters::abandoned_released`].
//! - **The commit runs alongside the response.** After a 2xx the layer starts the commit in a
//!   task of its own and returns the handler's response at once ([`UniqueCommit`]'s default,
//!   [`AlongsideResponse`](UniqueCommit::AlongsideResponse)): a signup does not wait for the
//!   store's durable write (a WAL flush on PostgreSQL). Waiting would change nothing the
//!   response says — it is the handler's whatever the commit does — and while the commit runs
//!   the reservation already keeps the person out: a concurrent or later signup of the same
//!   person is a 409 either way. After anything else the response *does* wait for the release
//!   (bounded by the timeout), so a person who retries right after a 4xx or 5xx finds
//!   themselves free. [`CertificationLayer::unique_commit`](crate::CertificationLayer::unique_commit)
//!   with [`UniqueCommit::BeforeResponse`] makes a 2xx wait for one commit attempt too.
//! - **A commit that fails is retried.** If the commit fails, the response is (or was) sent
//!   as the handler made it (the account exists in your database; turning it into an error
//!   would invite a retry that the store then refuses), and a background task retries the
//!   commit with backoff — renewing the lease before each retry so the person stays reserved
//!   meanwhile — up to [`COMMIT_ATTEMPTS`] attempts ([`UniqueCounters::commit_retries`]). If
//!   every attempt fails, the reservation stays until its lease ends, an ERROR is logged with
//!   only the key's prefix, and [`UniqueCounters::commits_failed`] is incremented: alert on
//!   it.
//! - **A process killed between the response and the commit's end loses that commit** (with
//!   the default, the client may already hold its 2xx): the reservation then ends with its
//!   lease, and the person could be admitted again — which the key under a `UNIQUE`
//!   constraint ([below](#the-belt-and-braces-the-key-under-a-unique-constraint)) refuses.
//!   A *graceful* shutdown loses nothing if it waits for the layer's tasks
//!   ([Shutdown](#shutdown)).
//!
//! # Shutdown
//!
//! Commits, releases and their retries run in tasks counted per layer
//! ([`UniqueTasks`], from [`CertificationLayer::unique_tasks`](crate::CertificationLayer::unique_tasks)).
//! When the server has stopped taking requests, wait for them — bounded, since retries
//! against a store that stays down take a while — before the process exits:
//!
//! ```no_run
//! # async fn run(
//! #     client: iamport_tower::IamportClient,
//! #     listener: tokio::net::TcpListener,
//! #     shutdown: impl Future<Output = ()> + Send + 'static,
//! # ) -> std::io::Result<()> {
//! use std::time::Duration;
//! use axum::Router;
//! use iamport_tower::CertificationLayer;
//!
//! let layer = CertificationLayer::new(client);
//! let tasks = layer.unique_tasks();
//! let app: Router = Router::new() /* .route(…) */ .layer(layer);
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(shutdown) // e.g. Ctrl-C or SIGTERM
//!     .await?;
//! if tokio::time::timeout(Duration::from_secs(10), tasks.settled()).await.is_err() {
//!     tracing::warn!(running = tasks.running(), "exiting with unique commits still running");
//! }
//! # Ok(()) }
//! ```
//!
//! [`CertificationLayer::settled`](crate::CertificationLayer::settled) is the same wait
//! without keeping the handle. A process killed without a graceful shutdown (SIGKILL, a
//! crash, the machine gone) can still lose the commits of its last responses: keep the key
//! under a `UNIQUE` constraint. In tests, await `settled()` before reading the store after a
//! 2xx: the commit may still be running when the response arrives (`tests/unique.rs`,
//! `a_2xx_on_postgres_is_answered_while_its_commit_runs_and_settled_waits_for_it`).
//!
//! # The belt and braces: the key under a `UNIQUE` constraint
//!
//! No store can make a crash between your handler's success and the commit's end harmless
//! (the process is gone; its reservation ends with the lease) — and with the commit running
//! alongside the response, the client may already have its 2xx when that happens. Keep the
//! person's store key on your users row under a `UNIQUE` constraint, in the same transaction
//! that creates the account: [`Certified::unique_key`](crate::Certified::unique_key) gives it (64 hex
//! characters, no personal data). A second account for the same person then fails in
//! your own database, whatever happened to the store.
//!
//! ```sql
//! ALTER TABLE users ADD COLUMN person_key CHAR(64) UNIQUE;
//! ```
//!
//! When that constraint refuses a signup the store had admitted, answer 409 yourself (the
//! reservation is then released), and you may heal the store with
//! [`UniqueStore::register`] of the key, so the next attempt is refused before your handler.
//! `tests/unique.rs` (`a_crash_between_handler_and_commit_is_caught_by_the_unique_key_column`)
//! plays this through.
//!
//! Bound your account write, and do not trust its error: if the write times out on your side
//! it may still land, and answering non-2xx then releases the reservation — the person could
//! sign up again through a replica whose table does not hold the first row. Give the write a
//! server-side `statement_timeout` shorter than your handler's own timeout, and when it fails,
//! read the row back before answering (the `iamport-soak` chaos run found exactly this; its
//! replica app shows the pattern).
//!
//! # Lifecycle
//!
//! [`UniqueStore::register`] imports people who already have accounts (the `iamport-unique
//! import` command reads CIs from a file), [`UniqueStore::forget`] removes a person whose
//! account was deleted — at once, or with a re-registration cooldown: the key stays taken
//! until a date, then frees itself. [`UniqueStore::status`] tells where a key stands.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod reservation;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::{DEFAULT_POSTGRES_TABLE, PostgresStore};
#[cfg(feature = "redis")]
pub use self::redis::{DEFAULT_REDIS_PREFIX, RedisClusterStore, RedisStore};
pub use self::reservation::{COMMIT_ATTEMPTS, DEFAULT_STORE_TIMEOUT, UniqueCommit, UniqueTasks};
use crate::secret::Secret;
use crate::source::BoxFuture;

/// A person's key in a unique store: HMAC-SHA256(secret, CI). `Debug` shows only a prefix.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UniqueKey([u8; 32]);

impl UniqueKey {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters (how the Redis stores name keys, and what an app keeps on
    /// its users row).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (either case), as printed by [`to_hex`](Self::to_hex).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(bytes))
    }

    /// A key from raw bytes (for stores reading keys back, and tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The first 8 hex digits: enough to find the key in a store, useless to find the person.
    pub fn prefix(&self) -> String {
        self.to_hex()[..8].to_owned()
    }
}

impl fmt::Debug for UniqueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UniqueKey({}…)", self.prefix())
    }
}

/// Random bytes from the operating system's CSPRNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

/// Turns CIs into [`UniqueKey`]s with an application secret. Keep the secret stable (changing
/// it makes every existing account look new) and out of the source code.
#[derive(Clone)]
pub struct UniqueKeys {
    mac: Hmac<Sha256>,
}

impl UniqueKeys {
    /// Keys under `secret` (at least 16 bytes recommended; use a random 32-byte value).
    pub fn new(secret: &Secret) -> Self {
        Self::from_bytes(secret.expose().as_bytes())
    }

    fn from_bytes(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Keys under a random secret: fine for a [`MemoryStore`], whose keys die with the process.
    pub fn random() -> Self {
        Self::from_bytes(&random_bytes::<32>())
    }

    /// The key of the person with this CI in the default scope: HMAC-SHA256(secret, CI).
    pub fn key_for(&self, ci: &str) -> UniqueKey {
        self.key_in(None, ci)
    }

    /// The key of the person with this CI in `scope` (`None`: the default scope, the same as
    /// [`key_for`](Self::key_for)). A named scope `s` keys HMAC-SHA256(secret, `0x00` ‖ s ‖
    /// `0x00` ‖ CI): no CI can collide with a scoped input, as a CI never starts with `0x00`.
    pub fn key_in(&self, scope: Option<&str>, ci: &str) -> UniqueKey {
        let mut mac = self.mac.clone();
        if let Some(scope) = scope {
            mac.update(&[0]);
            mac.update(scope.as_bytes());
            mac.update(&[0]);
        }
        mac.update(ci.as_bytes());
        UniqueKey(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for UniqueKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UniqueKeys(<redacted>)")
    }
}

/// Proof of holding a reservation: only its holder can commit, renew or release it. Chosen by
/// the caller *before* [`UniqueStore::reserve`], so a reservation whose answer was lost can
/// still be released.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationToken(u128);

impl ReservationToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn random() -> Self {
        Self(u128::from_le_bytes(random_bytes::<16>()))
    }

    /// The token as 32 hex digits (how stores persist it).
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses [`to_hex`](Self::to_hex)'s output.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 32 {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(Self)
    }
}

impl fmt::Debug for ReservationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReservationToken({:08x}…)", (self.0 >> 96) as u32)
    }
}

/// The answer to [`UniqueStore::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The key is now held by the caller's token, until committed, released or the lease ends.
    Reserved,
    /// The key is committed (the person has an account), cooling down after a
    /// [`forget`](UniqueStore::forget), or reserved by someone else whose lease has not ended
    /// (an account is being created).
    Taken,
}

/// Where a key stands ([`UniqueStore::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Nobody holds it: a signup of this person would be admitted.
    Free,
    /// Reserved by a signup in progress, whose lease has not ended.
    Reserved,
    /// Committed: the person has an account.
    Committed,
    /// Forgotten with a cooldown: taken until `until`, then free.
    CoolingDown {
        /// When the key frees itself.
        until: SystemTime,
    },
}

/// The store could not answer (unreachable, timed out, refused). Admission fails closed: 503.
#[derive(Debug, thiserror::Error)]
#[error("unique store unavailable: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps any error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }

    /// The store did not answer within `bound`.
    pub fn timed_out(bound: Duration) -> Self {
        Self::new(format!("no answer within {bound:?}"))
    }
}

/// Where "one account per person" is decided, atomically.
///
/// Implementations must make `reserve` atomic across every process sharing the store: of any
/// number of concurrent `reserve` calls for a key that is free, exactly one returns
/// [`Reservation::Reserved`]. `commit`, `renew` and `release` with a token that does not hold
/// the key change nothing and return `false`. Every call should be bounded in time by the
/// store itself (the layer bounds them too).
pub trait UniqueStore: Send + Sync + 'static {
    /// Reserves `key` for `token` for `lease`, unless it is committed, cooling down or validly
    /// reserved. Reserving again with the token that holds the key is `Taken` too.
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>>;

    /// Extends the reservation held by `token` to `lease` from now. `false` if `token` does
    /// not hold it.
    fn renew<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Makes the reservation held by `token` permanent. `false` if `token` does not hold it
    /// (it was released or forgotten, or its lease ended — after which a store may forget
    /// it, as Redis does, or keep it until someone else reserves the key, as PostgreSQL and
    /// memory do).
    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives up the reservation held by `token`. `false` if `token` does not hold it.
    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Marks `key` committed, whatever it was (import of a person who already has an
    /// account). `true` if it was not committed before.
    fn register<'a>(&'a self, key: &'a UniqueKey) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Forgets `key` (account deletion), whatever it was: free at once (`cooldown_until`
    /// `None`), or taken until `cooldown_until`, then free. `true` if the key was committed,
    /// reserved or cooling down before.
    fn forget<'a>(
        &'a self,
        key: &'a UniqueKey,
        cooldown_until: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Where `key` stands.
    fn status<'a>(&'a self, key: &'a UniqueKey) -> BoxFuture<'a, Result<KeyStatus, StoreError>>;

    /// [`register`](Self::register) for many keys, batched where the store can: how many were
    /// not committed before.
    fn register_all<'a>(&'a self, keys: &'a [UniqueKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut new = 0;
            for key in keys {
                new += u64::from(self.register(key).await?);
            }
            Ok(new)
        })
    }

    /// [`forget`](Self::forget) for many keys, batched where the store can: how many were
    /// there before.
    fn forget_all<'a>(
        &'a self,
        keys: &'a [UniqueKey],
        cooldown_until: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut found = 0;
            for key in keys {
                found += u64::from(self.forget(key, cooldown_until).await?);
            }
            Ok(found)
        })
    }
}

/// Implements [`UniqueStore`] for a type with inherent `async fn`s of the same names and
/// signatures (`reserve_key`, `renew_key`, …): the boxing lives here once.
macro_rules! unique_store_via_inherent {
    (impl for $ty:ty $(=> $field:ident)?) => {
        impl $crate::unique::UniqueStore for $ty {
            fn reserve<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
                token: $crate::unique::ReservationToken,
                lease: ::std::time::Duration,
            ) -> $crate::source::BoxFuture<'a, Result<$crate::unique::Reservation, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.reserve_key(key, token, lease))
            }
            fn renew<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
                token: $crate::unique::ReservationToken,
                lease: ::std::time::Duration,
            ) -> $crate::source::BoxFuture<'a, Result<bool, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.renew_key(key, token, lease))
            }
            fn commit<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
                token: $crate::unique::ReservationToken,
            ) -> $crate::source::BoxFuture<'a, Result<bool, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.commit_key(key, token))
            }
            fn release<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
                token: $crate::unique::ReservationToken,
            ) -> $crate::source::BoxFuture<'a, Result<bool, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.release_key(key, token))
            }
            fn register<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
            ) -> $crate::source::BoxFuture<'a, Result<bool, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.register_key(key))
            }
            fn forget<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
                cooldown_until: Option<::std::time::SystemTime>,
            ) -> $crate::source::BoxFuture<'a, Result<bool, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.forget_key(key, cooldown_until))
            }
            fn status<'a>(
                &'a self,
                key: &'a $crate::unique::UniqueKey,
            ) -> $crate::source::BoxFuture<'a, Result<$crate::unique::KeyStatus, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.key_status(key))
            }
            fn register_all<'a>(
                &'a self,
                keys: &'a [$crate::unique::UniqueKey],
            ) -> $crate::source::BoxFuture<'a, Result<u64, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.register_keys(keys))
            }
            fn forget_all<'a>(
                &'a self,
                keys: &'a [$crate::unique::UniqueKey],
                cooldown_until: Option<::std::time::SystemTime>,
            ) -> $crate::source::BoxFuture<'a, Result<u64, $crate::unique::StoreError>> {
                Box::pin(self$(.$field)?.forget_keys(keys, cooldown_until))
            }
        }
    };
}
pub(crate) use unique_store_via_inherent;

/// A shared store is a store: keep a handle (to pre-register people, inspect, or share one
/// store between layers) and give the layer a clone.
impl<S: UniqueStore + ?Sized> UniqueStore for std::sync::Arc<S> {
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        (**self).reserve(key, token, lease)
    }
    fn renew<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).renew(key, token, lease)
    }
    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).commit(key, token)
    }
    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).release(key, token)
    }
    fn register<'a>(&'a self, key: &'a UniqueKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).register(key)
    }
    fn forget<'a>(
        &'a self,
        key: &'a UniqueKey,
        cooldown_until: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).forget(key, cooldown_until)
    }
    fn status<'a>(&'a self, key: &'a UniqueKey) -> BoxFuture<'a, Result<KeyStatus, StoreError>> {
        (**self).status(key)
    }
    fn register_all<'a>(&'a self, keys: &'a [UniqueKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).register_all(keys)
    }
    fn forget_all<'a>(
        &'a self,
        keys: &'a [UniqueKey],
        cooldown_until: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).forget_all(keys, cooldown_until)
    }
}

/// Process-wide counters of the unique machinery's faults, for metrics and alerts (read them
/// with [`counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UniqueCounters {
    /// Store calls that failed or timed out (each is a 503 at admission, or a retry).
    pub store_errors: u64,
    /// Reservations whose `reserve` timed out on our side and were later released by token.
    pub abandoned_released: u64,
    /// Commit attempts after the first one (a 2xx whose commit failed at first).
    pub commit_retries: u64,
    /// Commits that failed at first and then held: committed on a retry, or found committed
    /// (an attempt that timed out on our side landed).
    pub commits_recovered: u64,
    /// Commits given up after [`COMMIT_ATTEMPTS`] attempts: the person may register again once
    /// the lease ends, unless the app keeps the key under a `UNIQUE` constraint. Alert on it.
    pub commits_failed: u64,
}

struct Counters {
    store_errors: AtomicU64,
    abandoned_released: AtomicU64,
    commit_retries: AtomicU64,
    commits_recovered: AtomicU64,
    commits_failed: AtomicU64,
}

static COUNTERS: Counters = Counters {
    store_errors: AtomicU64::new(0),
    abandoned_released: AtomicU64::new(0),
    commit_retries: AtomicU64::new(0),
    commits_recovered: AtomicU64::new(0),
    commits_failed: AtomicU64::new(0),
};

/// The process-wide [`UniqueCounters`] so far.
pub fn counters() -> UniqueCounters {
    let c = &COUNTERS;
    UniqueCounters {
        store_errors: c.store_errors.load(Ordering::Relaxed),
        abandoned_released: c.abandoned_released.load(Ordering::Relaxed),
        commit_retries: c.commit_retries.load(Ordering::Relaxed),
        commits_recovered: c.commits_recovered.load(Ordering::Relaxed),
        commits_failed: c.commits_failed.load(Ordering::Relaxed),
    }
}

fn count(counter: fn(&Counters) -> &AtomicU64) {
    counter(&COUNTERS).fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_keyed_and_stable() {
        let a = UniqueKeys::new(&Secret::new("secret-a"));
        let b = UniqueKeys::new(&Secret::new("secret-b"));
        let ci = "CI-VALUE-88-CHARS";
        assert_eq!(a.key_for(ci), a.key_for(ci));
        assert_ne!(a.key_for(ci), b.key_for(ci));
        assert_ne!(a.key_for(ci), a.key_for("other"));
        // RFC 4231-style check against a known HMAC-SHA256 value.
        let k = UniqueKeys::new(&Secret::new("key"))
            .key_for("The quick brown fox jumps over the lazy dog");
        assert_eq!(
            k.to_hex(),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert!(!format!("{a:?} {:?}", a.key_for(ci)).contains(ci));
    }

    #[test]
    fn scopes_are_separate_keyspaces() {
        let keys = UniqueKeys::new(&Secret::new("secret"));
        let ci = "CI-VALUE";
        assert_eq!(keys.key_in(None, ci), keys.key_for(ci));
        assert_ne!(keys.key_in(Some("signup"), ci), keys.key_for(ci));
        assert_ne!(
            keys.key_in(Some("signup"), ci),
            keys.key_in(Some("vote"), ci)
        );
        // The derivation is HMAC(secret, 0x00 || scope || 0x00 || CI), independently computed.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(b"\0signup\0CI-VALUE");
        let expected = UniqueKey(mac.finalize().into_bytes().into());
        assert_eq!(keys.key_in(Some("signup"), ci), expected);
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let key = UniqueKeys::random().key_for("x");
        assert_eq!(UniqueKey::from_hex(&key.to_hex()), Some(key.clone()));
        assert_eq!(UniqueKey::from_hex(&key.to_hex().to_uppercase()), Some(key));
        assert_eq!(UniqueKey::from_hex("abc"), None);
        assert_eq!(UniqueKey::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn tokens_round_trip() {
        assert_ne!(ReservationToken::random(), ReservationToken::random());
        let t = ReservationToken::random();
        assert_eq!(ReservationToken::from_hex(&t.to_hex()), Some(t));
    }
}
