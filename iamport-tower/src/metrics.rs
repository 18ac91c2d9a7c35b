//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: this crate records
//! them and never exports them. Install a recorder in the application
//! (`metrics-exporter-prometheus`, `metrics-exporter-statsd`, …) and they appear; without
//! one, recording costs a check of the global recorder (and, for the rare label values that
//! are not spelled out as literals, building the label list).
//!
//! Every name starts with `iamport_`, and no label carries personal data or an id:
//!
//! | name | type | labels |
//! |---|---|---|
//! | [`iamport_lookups_total`](LOOKUPS_TOTAL) | counter | `source` (`v1`, `v2`, or a custom source's [`label`](crate::CertificationSource::label)), `result` (`verified`, `unverified`, `not_found`, `invalid_id`, `failed`, `unavailable`, `timeout`) |
//! | [`iamport_upstream_request_duration_seconds`](UPSTREAM_REQUEST_DURATION_SECONDS) | histogram | `endpoint` (`get_token`, `get_certification`, `delete_certification`, `get_identity_verification`), `status` (the HTTP status, or `error` when no answer came, `cancelled` when the call was abandoned — its whole-call timeout, or the request went away) |
//! | [`iamport_token_fetches_total`](TOKEN_FETCHES_TOTAL) | counter | `result` (`ok`, `error`) |
//! | [`iamport_rejections_total`](REJECTIONS_TOTAL) | counter | `kind` ([`Rejection::code`](crate::Rejection::code)) |
//! | [`iamport_unique_operations_total`](UNIQUE_OPERATIONS_TOTAL) | counter | `op` (`reserve`, `commit`, `release`, `renew`, `status`), `result` (`reserved`, `taken`; `ok`; `not_held` when the reservation's token no longer held the key; `error`, `timeout`) |
//! | [`iamport_unique_operation_duration_seconds`](UNIQUE_OPERATION_DURATION_SECONDS) | histogram | `op` |
//! | [`iamport_lookup_dedup_total`](LOOKUP_DEDUP_TOTAL) | counter | `effect` (`joined`: a request that shared a lookup already in flight instead of calling PortOne) |
//! | [`iamport_lookup_cache_total`](LOOKUP_CACHE_TOTAL) | counter | `effect` (`hit`, `miss`, `negative_hit`) |
//!
//! One upstream lookup counts once in `iamport_lookups_total`, however many requests shared
//! it (those count in `iamport_lookup_dedup_total`); each HTTP attempt, retries included, is
//! one observation of the duration histogram. Call [`describe`] once after installing the
//! recorder to give every metric its help text and unit.
//!
//! ```
//! // With metrics-exporter-prometheus (in the application, not in this crate):
//! // let handle = PrometheusBuilder::new().install_recorder()?;
//! iamport_tower::metrics::describe();
//! // … serve handle.render() at GET /metrics.
//! ```

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Identity-verification lookups, by `source` and `result`.
pub const LOOKUPS_TOTAL: &str = "iamport_lookups_total";
/// Access-token fetches (PortOne v1 `POST /users/getToken`), by `result` (recorded by the
/// v1 client).
pub use iamport_client::metrics::TOKEN_FETCHES_TOTAL;
/// Time of each HTTP request to PortOne, by `endpoint` and `status` (recorded by the clients).
pub use iamport_client::metrics::UPSTREAM_REQUEST_DURATION_SECONDS;
/// Refused requests, by `kind`.
pub const REJECTIONS_TOTAL: &str = "iamport_rejections_total";
/// Unique-store calls the layer makes (`op`: `reserve`, `commit`, `release`, `renew`,
/// `status`), by `result`.
pub const UNIQUE_OPERATIONS_TOTAL: &str = "iamport_unique_operations_total";
/// Counter: faults of the unique machinery operators alert on, by `fault`: `commit_retry`,
/// `commit_recovered`, `commit_failed` (a 2xx turned into a 503; alert on it),
/// `abandoned_released` (a reservation left by a failed call, released later).
pub const UNIQUE_FAULTS_TOTAL: &str = "iamport_unique_faults_total";
/// Time of each unique-store operation, by `op`.
pub const UNIQUE_OPERATION_DURATION_SECONDS: &str = "iamport_unique_operation_duration_seconds";
/// Requests that joined a lookup already in flight for the same id.
pub const LOOKUP_DEDUP_TOTAL: &str = "iamport_lookup_dedup_total";
/// Lookups answered from (or missing) the layer's result cache, by `effect`.
pub const LOOKUP_CACHE_TOTAL: &str = "iamport_lookup_cache_total";

/// Registers each metric's help text and unit with the installed recorder (call it once,
/// after installing the recorder; harmless without one).
pub fn describe() {
    describe_counter!(
        LOOKUPS_TOTAL,
        Unit::Count,
        "Identity-verification lookups by source (v1, v2) and result"
    );
    describe_histogram!(
        UPSTREAM_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each HTTP request to PortOne by endpoint and HTTP status"
    );
    describe_counter!(
        TOKEN_FETCHES_TOTAL,
        Unit::Count,
        "PortOne access-token fetches by result"
    );
    describe_counter!(
        REJECTIONS_TOTAL,
        Unit::Count,
        "Requests refused by an iamport-tower guard, by rejection kind"
    );
    describe_counter!(
        UNIQUE_OPERATIONS_TOTAL,
        Unit::Count,
        "Unique-store operations by operation and result"
    );
    describe_histogram!(
        UNIQUE_OPERATION_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of unique-store operations by operation"
    );
    describe_counter!(
        LOOKUP_DEDUP_TOTAL,
        Unit::Count,
        "Requests that shared a lookup already in flight for the same id"
    );
    describe_counter!(
        LOOKUP_CACHE_TOTAL,
        Unit::Count,
        "Lookups answered from the layer's result cache, by effect"
    );
    describe_counter!(
        UNIQUE_FAULTS_TOTAL,
        Unit::Count,
        "Faults of the unique machinery, by fault (alert on commit_failed)"
    );
}

/// The `result` of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupResult {
    Verified,
    Unverified,
    NotFound,
    InvalidId,
    Failed,
    Unavailable,
    Timeout,
}

impl LookupResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unverified => "unverified",
            Self::NotFound => "not_found",
            Self::InvalidId => "invalid_id",
            Self::Failed => "failed",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
        }
    }

    /// Whether PortOne (or the way to it) failed, rather than answering.
    pub(crate) fn is_upstream_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Unavailable | Self::Timeout)
    }
}

// Labels written as literals make `counter!`/`histogram!` build their key from static parts;
// a label computed at run time costs an allocation per recording, recorder or not. The
// frequent label values are therefore spelled out below, and only the rare ones computed.

/// One lookup of `source` ended with `result`.
pub(crate) fn lookup(source: &'static str, result: LookupResult) {
    macro_rules! by_source_and_result {
        ($($variant:ident => $label:literal),*) => {
            match (source, result) {
                $(
                    ("v1", LookupResult::$variant) => counter!(LOOKUPS_TOTAL, "source" => "v1", "result" => $label),
                    ("v2", LookupResult::$variant) => counter!(LOOKUPS_TOTAL, "source" => "v2", "result" => $label),
                )*
                (source, result) => counter!(LOOKUPS_TOTAL, "source" => source, "result" => result.as_str()),
            }
        };
    }
    by_source_and_result!(
        Verified => "verified",
        Unverified => "unverified",
        NotFound => "not_found",
        InvalidId => "invalid_id",
        Failed => "failed",
        Unavailable => "unavailable",
        Timeout => "timeout"
    )
    .increment(1);
}

/// A guard refused a request with this [`Rejection::code`].
pub(crate) fn rejection(kind: &'static str) {
    counter!(REJECTIONS_TOTAL, "kind" => kind).increment(1);
}

/// One fault of the unique machinery (`UniqueCounters` holds the layer's own count).
pub(crate) fn unique_fault(fault: &'static str) {
    counter!(UNIQUE_FAULTS_TOTAL, "fault" => fault).increment(1);
}

/// One unique-store operation `op` ended with `result` after `elapsed`.
pub(crate) fn unique_operation(op: &'static str, result: &'static str, elapsed: Duration) {
    // The two calls of every signup, with their usual answers, from static labels.
    match (op, result) {
        ("reserve", "reserved") => {
            counter!(UNIQUE_OPERATIONS_TOTAL, "op" => "reserve", "result" => "reserved")
                .increment(1);
            histogram!(UNIQUE_OPERATION_DURATION_SECONDS, "op" => "reserve").record(elapsed);
        }
        ("commit", "ok") => {
            counter!(UNIQUE_OPERATIONS_TOTAL, "op" => "commit", "result" => "ok").increment(1);
            histogram!(UNIQUE_OPERATION_DURATION_SECONDS, "op" => "commit").record(elapsed);
        }
        _ => {
            counter!(UNIQUE_OPERATIONS_TOTAL, "op" => op, "result" => result).increment(1);
            histogram!(UNIQUE_OPERATION_DURATION_SECONDS, "op" => op).record(elapsed);
        }
    }
}

/// A request joined a lookup already in flight instead of starting one.
pub(crate) fn lookup_joined() {
    counter!(LOOKUP_DEDUP_TOTAL, "effect" => "joined").increment(1);
}

/// What the layer's result cache did for one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheEffect {
    /// A cached verification answered.
    Hit,
    /// Nothing cached: the lookup went upstream.
    Miss,
    /// A cached "not found" answered.
    NegativeHit,
}

/// The layer's result cache had this `effect` on one lookup.
pub(crate) fn lookup_cache(effect: CacheEffect) {
    match effect {
        CacheEffect::Hit => counter!(LOOKUP_CACHE_TOTAL, "effect" => "hit"),
        CacheEffect::Miss => counter!(LOOKUP_CACHE_TOTAL, "effect" => "miss"),
        CacheEffect::NegativeHit => counter!(LOOKUP_CACHE_TOTAL, "effect" => "negative_hit"),
    }
    .increment(1);
}
