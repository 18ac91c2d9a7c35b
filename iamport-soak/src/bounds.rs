//! The time bounds the replicas are configured with, and the bound on one request's answer
//! derived from them — one place, so the replicas and the check cannot disagree.

use std::time::Duration;

/// Each call to PortOne (token or lookup), per attempt.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1000);
/// Connecting to PortOne.
pub(crate) const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts per upstream call: the client's default retry policy (two retries).
pub(crate) const UPSTREAM_ATTEMPTS: u32 = 3;
/// The client's default longest backoff between attempts.
pub(crate) const UPSTREAM_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Each unique store call (`CertificationLayer::unique_timeout`, and the store's own bound).
pub(crate) const STORE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Getting a connection from the app's pool (pool wait, connect).
pub(crate) const ACCOUNT_POOL_TIMEOUT: Duration = Duration::from_millis(1000);
/// PostgreSQL's own `statement_timeout` on the app's pool: the server aborts a statement the
/// handler would give up on (and the locks it holds go with it), rather than the handler
/// abandoning a statement that runs on.
pub(crate) const ACCOUNT_STATEMENT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The handler's backstop around the account's whole transaction (pool, statements, commit).
pub(crate) const ACCOUNT_WRITE_TIMEOUT: Duration = Duration::from_millis(3000);
/// Reading back whether a write whose outcome is unknown landed (Redis stores only: with
/// PostgreSQL the person's key is in the account's transaction, and a late write is harmless).
pub(crate) const ACCOUNT_CHECK_TIMEOUT: Duration = Duration::from_millis(1000);
/// Scheduling slack on a loaded, shared 2-core machine (four engineers' builds and tests run
/// beside the soak): a process descheduled for a while still answers late, not never.
pub(crate) const SLACK: Duration = Duration::from_secs(5);

/// The most one upstream call (token or lookup) can take: every attempt timing out, the
/// longest backoffs between them.
pub(crate) fn upstream_call() -> Duration {
    UPSTREAM_TIMEOUT * UPSTREAM_ATTEMPTS + UPSTREAM_MAX_BACKOFF * (UPSTREAM_ATTEMPTS - 1)
}

/// How long a replica stopping gracefully waits for the unique-store tasks still running
/// (under the fleet's 5 s before it kills a replica that does not exit).
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// The pauses between the layer's commit attempts before a 2xx (200 ms, then 400 ms: the
/// crate's backoff, doubled from 200 ms).
const COMMIT_BACKOFFS: Duration = Duration::from_millis(600);

/// The most the layer spends after the handler: committing before a 2xx (a handler that did
/// not record its account: Redis), every attempt timing out; or, after a failed write, the
/// read-back (Redis) and the release a non-2xx answer waits for. A recorded account's
/// release runs alongside the 201.
fn after_the_handler() -> Duration {
    let commit =
        STORE_TIMEOUT * iamport_tower::layer::COMMIT_ATTEMPTS_BEFORE_RESPONSE + COMMIT_BACKOFFS;
    commit.max(ACCOUNT_CHECK_TIMEOUT + STORE_TIMEOUT)
}

/// The bound on one request's answer: a token fetch and a lookup, each of which may be
/// repeated once after a 401 (revoked token), then the reserve, the account's transaction,
/// and what the layer does after the handler — plus slack.
pub(crate) fn request() -> Duration {
    upstream_call() * 4 + STORE_TIMEOUT + ACCOUNT_WRITE_TIMEOUT + after_the_handler() + SLACK
}

/// When the load generator stops waiting for an answer at all (then counted unanswered).
pub(crate) fn hard_cap() -> Duration {
    request() + Duration::from_secs(10)
}
