//! One account per person: a race-free reservation at admission, and a permanent fact that
//! lives with the account.
//!
//! PortOne's guide checks "one account per person" by querying the users table by CI and then
//! inserting — two concurrent signups of one person both pass the query. Here the job is
//! split in two, each where it belongs:
//!
//! - **The reservation** ([`UniqueStore`]): admission under a `unique` policy *reserves* the
//!   person's key atomically, so only one request can be creating that person's account, and
//!   a second signup is a fast 409 before its handler runs. Each reservation carries a lease,
//!   so a crashed process cannot block a person forever.
//! - **The permanent fact**: "this person has an account". With `PostgresStore` (feature
//!   `postgres`, on the app's own `sqlx::PgPool`) the handler writes the person's key *in
//!   the transaction that creates the account* —
//!   `Certified::record_account` — under a primary key,
//!   and admission checks that table too. A crash at any instant leaves both or neither.
//!   With any other store (memory, Redis), the layer commits the reservation **before** a
//!   2xx leaves it; if the commit cannot land, the 2xx becomes a 503.
//!
//! No default answers 2xx before the person's uniqueness is durable, so no crash — not even
//! `kill -9` right after the response — lets an acknowledged person sign up twice. (Without
//! `record_account`, a crash between your own account write and the layer's commit leaves an
//! account whose person was never told: that person may sign up again once the lease ends.
//! Only the account's own transaction closes that window.)
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # mod app {
//! use axum::{Json, extract::State, http::StatusCode};
//! use iamport_tower::{Certified, require_certified};
//!
//! #[require_certified(unique = true)]
//! async fn signup(State(pool): State<sqlx::PgPool>, person: Certified) -> Result<StatusCode, StatusCode> {
//!     let mut tx = pool.begin().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
//!     sqlx::query("INSERT INTO users (name) VALUES ($1)")
//!         .bind(person.name.as_deref())
//!         .execute(&mut *tx)
//!         .await
//!         .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
//!     // The person's key, in the account's own transaction.
//!     person.record_account(&mut tx).await.map_err(|_| StatusCode::CONFLICT)?;
//!     tx.commit().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
//!     Ok(StatusCode::CREATED)
//! }
//! # }
//! ```
//!
//! Keys are an HMAC-SHA256 of the CI under an application secret ([`StoreKeys`]), never the
//! CI itself: the CI is personal data under Korea's Personal Information Protection Act (a
//! lifelong national identifier for the person), so a store that leaks, or a log of its
//! keys, must not be a list of CIs — and without the secret the keys cannot be matched
//! against CIs from another source. The app, the `iamport-unique` command and the soak read
//! the secret from `UNIQUE_KEY_SECRET` by one function, [`StoreKeys::from_env`]; keep it in
//! a secret manager or a file only the app reads, never generated at startup (a new secret
//! makes every existing account look new). A route may name a *scope* (`unique = "signup"`):
//! the key is then HMAC-SHA256(secret, `0x00` ‖ scope ‖ `0x00` ‖ CI)
//! ([`StoreKeys::key_in`]), a keyspace of its own in the same store.
//!
//! Stores: [`MemoryStore`] (one process; the default), `PostgresStore` (feature `postgres`),
//! `RedisStore` and `RedisClusterStore` (feature `redis`) for several app replicas. All pass
//! one conformance suite (`tests/unique.rs`). An admission is one store round trip to
//! reserve, and one more to commit or release after the handler.
//!
//! # Faults
//!
//! - **Every store call is bounded** ([`DEFAULT_STORE_TIMEOUT`], 2 s, configurable with
//!   [`CertificationLayer::unique_timeout`](crate::CertificationLayer::unique_timeout); the
//!   stores bound their own calls too). A store that does not answer in time makes admission a
//!   503 (`store-unavailable`) — never a hang, and the handler does not run.
//! - **A stalled store frees the person when it comes back.** The reservation token is chosen
//!   before the call, so when a timed-out `reserve` lands later — after a stall of any length
//!   — the layer releases it: a background task retries `release(key, token)` at most a
//!   second apart for as long as the store does not answer (up to an hour), and once it
//!   answers, until the release lands or the store said three times that nothing is held
//!   ([`UniqueCounters::abandoned_released`](crate::layer::UniqueCounters::abandoned_released)).
//! - **A 2xx waits for the commit.** After a 2xx whose handler did not record the account in
//!   PostgreSQL, the layer commits before the response leaves, up to
//!   [`COMMIT_ATTEMPTS_BEFORE_RESPONSE`](crate::layer::COMMIT_ATTEMPTS_BEFORE_RESPONSE) attempts. If none lands, the client gets a 503
//!   instead of the handler's 2xx (never a success that a crash could undo), the commit is
//!   retried in the background while the reservation keeps the person out, and
//!   [`UniqueCounters::commits_failed`](crate::layer::UniqueCounters::commits_failed) counts the ones given up: alert on it. A signup
//!   costs the store's durable write (a WAL flush on PostgreSQL) on its response time; with
//!   `record_account` it costs one release instead, answered alongside the response.
//! - **After anything else the response waits for the release**, so a person who retries
//!   right after a 4xx or 5xx finds themselves free; a dropped request releases in the
//!   background.
//!
//! # Shutdown
//!
//! Releases and retries run in tasks counted per layer ([`UniqueTasks`](crate::layer::UniqueTasks), from
//! [`CertificationLayer::unique_tasks`](crate::CertificationLayer::unique_tasks)). When the
//! server has stopped taking requests, wait for them, bounded, before the process exits:
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
//!     tracing::warn!(running = tasks.running(), "exiting with unique tasks still running");
//! }
//! # Ok(()) }
//! ```
//!
//! Nothing a 2xx promised depends on these tasks: they free people whose signup failed
//! sooner than their lease would.
//!
//! # Your handler's own writes
//!
//! Bound your account write, and do not trust its error: if the write times out on your side
//! it may still land. With `record_account` that is harmless — the person's key landed with
//! the account, and admission refuses them next time. Give the transaction a server-side
//! `statement_timeout` shorter than your handler's own timeout.
//!
//! # Lifecycle
//!
//! [`UniqueAdmin::register`] imports people who already have accounts (the `iamport-unique
//! import` command reads CIs from a file), [`UniqueAdmin::forget`] removes people whose
//! accounts were deleted — at once, or with a re-registration cooldown: the key stays taken
//! until a date, then frees itself. [`UniqueAdmin::status`] tells where a key stands.

mod key;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod store;

pub use async_trait::async_trait;

pub use self::key::{KEY_SECRET_ENV, ReservationToken, StoreKey, StoreKeys};
pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub(crate) use self::postgres::record;
#[cfg(feature = "postgres")]
pub use self::postgres::{
    DEFAULT_ACCOUNTS_TABLE, DEFAULT_POSTGRES_TABLE, PostgresStore, RecordError,
};
#[cfg(feature = "redis")]
pub use self::redis::{DEFAULT_REDIS_PREFIX, RedisClusterStore, RedisStore};
/// The default bound of every unique store call (the stores' own, and the layer's:
/// [`CertificationLayer::unique_timeout`](crate::CertificationLayer::unique_timeout)).
pub const DEFAULT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
pub use self::store::{KeyStatus, Reservation, StoreError, UniqueAdmin, UniqueStore};
