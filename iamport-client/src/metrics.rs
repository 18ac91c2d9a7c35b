//! The metrics the PortOne clients record, through the [`metrics`](https://docs.rs/metrics)
//! facade: the time of each HTTP request to PortOne and the access-token fetches. The tower
//! crate (`iamport-tower`) describes them with its own (`iamport_tower::metrics`).

use std::time::Duration;

use ::metrics::{counter, histogram};

/// Time of each HTTP request to PortOne, by `endpoint` and `status`.
pub const UPSTREAM_REQUEST_DURATION_SECONDS: &str = "iamport_upstream_request_duration_seconds";
/// Access-token fetches (PortOne v1 `POST /users/getToken`), by `result`.
pub const TOKEN_FETCHES_TOTAL: &str = "iamport_token_fetches_total";

/// The PortOne endpoint of an HTTP request.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    GetToken,
    GetCertification,
    DeleteCertification,
    GetIdentityVerification,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetToken => "get_token",
            Self::GetCertification => "get_certification",
            Self::DeleteCertification => "delete_certification",
            Self::GetIdentityVerification => "get_identity_verification",
        }
    }
}

/// How one HTTP request to PortOne ended, for the `status` label.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Status(http::StatusCode),
    /// No answer: the connection failed, or the body could not be read.
    Error,
    /// The call was abandoned while this request was in flight.
    Cancelled,
}

/// One HTTP request to `endpoint` took `elapsed` and ended `answered`.
#[doc(hidden)]
pub fn upstream_request(endpoint: Endpoint, answered: Answered, elapsed: Duration) {
    use http::StatusCode;
    macro_rules! by_endpoint_and_status {
        ($($endpoint:ident => $label:literal),*) => {
            match (endpoint, answered) {
                $(
                    (Endpoint::$endpoint, Answered::Status(StatusCode::OK)) => histogram!(
                        UPSTREAM_REQUEST_DURATION_SECONDS, "endpoint" => $label, "status" => "200"
                    ),
                )*
                (endpoint, answered) => histogram!(
                    UPSTREAM_REQUEST_DURATION_SECONDS,
                    "endpoint" => endpoint.as_str(),
                    "status" => match answered {
                        Answered::Status(status) => status.as_u16().to_string(),
                        Answered::Error => "error".to_owned(),
                        Answered::Cancelled => "cancelled".to_owned(),
                    }
                ),
            }
        };
    }
    by_endpoint_and_status!(
        GetToken => "get_token",
        GetCertification => "get_certification",
        DeleteCertification => "delete_certification",
        GetIdentityVerification => "get_identity_verification"
    )
    .record(elapsed);
}

/// One access-token fetch succeeded (`ok`) or failed.
#[doc(hidden)]
pub fn token_fetch(ok: bool) {
    counter!(TOKEN_FETCHES_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}
