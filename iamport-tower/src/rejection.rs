//! `Rejection`: why a guarded request was refused, rendered as RFC 9457 problem+json.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::client::InvalidId;
use crate::error::Error;
use crate::policy::PolicyViolation;

/// Why a request did not reach a guarded handler. Each variant has one HTTP status (the crate docs'
/// table) and renders as `application/problem+json` with no personal data and no upstream
/// detail (those go to the log, at `warn`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No verification id in the query string or body. 400.
    MissingId,
    /// The id is malformed (never sent to PortOne). 400.
    InvalidId(InvalidId),
    /// The query string names the id more than once. 400.
    AmbiguousId,
    /// The JSON or form body holding the id could not be read, names the id twice, or has
    /// bytes after the JSON value. 400.
    MalformedBody,
    /// The body holding the id did not arrive within the layer's body timeout. 408.
    BodyTimeout,
    /// A `HEAD`, `OPTIONS` or speculative (prefetch) request reached a guard: such requests
    /// must have no side effects, so they are never admitted. 403.
    SpeculativeRequest,
    /// The person cancelled the verification (`success=false` / `imp_success=false`). 400.
    Cancelled,
    /// The body is larger than the layer's extraction limit. 413.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// PortOne does not know the id. 403.
    UnknownId,
    /// The verification did not succeed, or the person does not meet the route's policy. 403.
    Policy(PolicyViolation),
    /// `bound` and the verification was not started by this browser session (no ticket, a
    /// forged or expired one, or another session's). 403.
    UnboundVerification,
    /// `unique` and the person already has an account, or one is being created. 409.
    AlreadyRegistered,
    /// PortOne answered 5xx, garbage, or refused our credentials. 502.
    UpstreamFailed,
    /// PortOne could not be reached. 503.
    UpstreamUnavailable,
    /// PortOne did not answer in time. 504.
    UpstreamTimeout,
    /// The unique store could not be reached; nothing was admitted. 503.
    StoreUnavailable,
    /// A guarded handler runs without `CertificationLayer` in front of it. 500.
    LayerMissing,
}

impl Rejection {
    /// The HTTP status for this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingId
            | Self::InvalidId(_)
            | Self::AmbiguousId
            | Self::MalformedBody
            | Self::Cancelled => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::SpeculativeRequest => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownId | Self::Policy(_) | Self::UnboundVerification => StatusCode::FORBIDDEN,
            Self::AlreadyRegistered => StatusCode::CONFLICT,
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnavailable | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable name (the last part of the problem `type`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingId => "missing-verification-id",
            Self::InvalidId(_) => "invalid-verification-id",
            Self::AmbiguousId => "ambiguous-verification-id",
            Self::MalformedBody => "malformed-body",
            Self::BodyTimeout => "body-timeout",
            Self::SpeculativeRequest => "speculative-request",
            Self::Cancelled => "verification-cancelled",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnknownId => "unknown-verification",
            Self::Policy(PolicyViolation::NotCertified) => "not-certified",
            Self::Policy(_) => "policy-not-met",
            Self::UnboundVerification => "unbound-verification",
            Self::AlreadyRegistered => "already-registered",
            Self::UpstreamFailed => "upstream-failed",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::StoreUnavailable => "store-unavailable",
            Self::LayerMissing => "layer-missing",
        }
    }

    /// A short human summary (the problem `title`).
    pub fn title(&self) -> &'static str {
        match self {
            Self::MissingId => "No identity verification id in the request",
            Self::InvalidId(_) => "Malformed identity verification id",
            Self::AmbiguousId => "More than one identity verification id",
            Self::MalformedBody => "Unreadable request body",
            Self::BodyTimeout => "Request body too slow",
            Self::SpeculativeRequest => "Not admitted without a real visit",
            Self::Cancelled => "Identity verification cancelled",
            Self::PayloadTooLarge { .. } => "Request body too large",
            Self::UnknownId => "Unknown identity verification",
            Self::Policy(PolicyViolation::NotCertified) => "Identity verification not completed",
            Self::Policy(_) => "Verified person does not meet this route's requirements",
            Self::UnboundVerification => "Identity verification not started here",
            Self::AlreadyRegistered => "This person already has an account",
            Self::UpstreamFailed => "Identity verification service failed",
            Self::UpstreamUnavailable => "Identity verification service unavailable",
            Self::UpstreamTimeout => "Identity verification service timed out",
            Self::StoreUnavailable => "Account uniqueness check unavailable",
            Self::LayerMissing => "Server misconfiguration",
        }
    }

    /// A sentence for the person (the problem `detail`): the rule, never their data.
    pub fn detail(&self) -> String {
        match self {
            Self::MissingId => "Send the identity verification id (`imp_uid`, or `identityVerificationId` for PortOne v2) in the query string or in a JSON or form body.".into(),
            Self::InvalidId(e) => sentence(&e.to_string()),
            Self::AmbiguousId => "Send the identity verification id once.".into(),
            Self::MalformedBody => "The JSON or form body could not be parsed, or it names the identity verification id more than once.".into(),
            Self::BodyTimeout => "The request body did not arrive in time.".into(),
            Self::SpeculativeRequest => "HEAD, OPTIONS and prefetch requests are never admitted here; open the page itself.".into(),
            Self::Cancelled => "The identity verification was cancelled before it completed.".into(),
            Self::PayloadTooLarge { limit } => format!("The request body exceeds {limit} bytes."),
            Self::UnknownId => "No completed identity verification has this id.".into(),
            Self::Policy(v) => sentence(&v.to_string()),
            Self::UnboundVerification => "This identity verification was not started in this browser session. Please verify again.".into(),
            Self::AlreadyRegistered => "An account already exists for this person, or is being created right now.".into(),
            Self::UpstreamFailed | Self::UpstreamUnavailable | Self::UpstreamTimeout => {
                "The identity could not be checked right now. Please try again shortly.".into()
            }
            Self::StoreUnavailable => "Account uniqueness could not be checked right now. Please try again shortly.".into(),
            Self::LayerMissing => "The server is misconfigured; the incident was logged.".into(),
        }
    }

    /// The default rendering: `application/problem+json` per RFC 9457.
    pub fn problem_response(&self) -> Response<Bytes> {
        let body = serde_json::json!({
            "type": format!("urn:iamport-tower:problem:{}", self.code()),
            "title": self.title(),
            "status": self.status().as_u16(),
            "detail": self.detail(),
        });
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }

    /// Classifies a lookup failure, logging what the response will not say.
    pub(crate) fn from_lookup_error(error: &Error) -> Self {
        let rejection = match error {
            Error::NotFound => return Self::UnknownId,
            Error::InvalidId(e) => return Self::InvalidId(e.clone()),
            Error::Timeout(_) => Self::UpstreamTimeout,
            Error::Unavailable(_) => Self::UpstreamUnavailable,
            _ => Self::UpstreamFailed,
        };
        tracing::warn!(%error, status = %rejection.status(), "identity verification lookup failed");
        rejection
    }
}

/// `"the rule"` → `"The rule."`
fn sentence(text: &str) -> String {
    let mut s = text.to_owned();
    if let Some(first) = s.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    s + "."
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.title(), self.status())
    }
}

impl std::error::Error for Rejection {}

/// Renders rejections; set one with
/// [`CertificationLayer::on_rejection`](crate::CertificationLayer::on_rejection) to replace
/// the problem+json body with your own shape.
pub type RejectionHandler = Arc<dyn Fn(&Rejection) -> Response<Bytes> + Send + Sync>;

/// The handler the layer put in the request extensions, if any.
#[derive(Clone)]
pub(crate) struct RejectionRenderer(pub(crate) RejectionHandler);

impl fmt::Debug for RejectionRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RejectionRenderer")
    }
}

/// Renders `rejection` with the layer's handler when there is one.
pub(crate) fn render(rejection: &Rejection, extensions: &http::Extensions) -> Response<Bytes> {
    match extensions.get::<RejectionRenderer>() {
        Some(RejectionRenderer(handler)) => handler(rejection),
        None => rejection.problem_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_json_shape() {
        let response =
            Rejection::Policy(PolicyViolation::TooYoung { min_age: 19 }).problem_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["status"], 403);
        assert_eq!(body["type"], "urn:iamport-tower:problem:policy-not-met");
        assert_eq!(
            body["detail"],
            "This route admits people at least 19 years old."
        );
    }
}
