//! `Rejection`: why a guarded request was refused, rendered as RFC 9457 problem+json in
//! English or Korean ([`Language`], chosen by the request's `Accept-Language`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use http::header::{CONTENT_LANGUAGE, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::policy::PolicyViolation;
use iamport_client::Error;
use iamport_client::id::InvalidId;

mod language;
mod text;

pub use self::language::Language;
pub(crate) use self::text::IdHint;

/// Why a request did not reach a guarded handler. Each variant has one HTTP status (the crate docs'
/// table) and renders as `application/problem+json` with no personal data and no upstream
/// detail (those go to the log, at `warn`), its `title` and `detail` in English or Korean
/// ([`title_in`](Self::title_in), [`detail_in`](Self::detail_in)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No verification id in the query string or body. 400.
    MissingId,
    /// The id is malformed (never sent to PortOne). 400.
    InvalidId(InvalidId),
    /// The request names the id more than once with different values (the query string and
    /// the body, or two spellings of the field), or repeats the field in the query string.
    /// 400.
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
    /// The layer's budget of buffered body bytes, across all requests, is spent: the body
    /// was not read. 503, with `Retry-After`.
    Busy {
        /// When to try again (the `Retry-After` header): the layer's body timeout, by which
        /// every body held now has arrived or been dropped.
        retry_after: Duration,
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
            Self::UpstreamUnavailable | Self::StoreUnavailable | Self::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            Self::Busy { .. } => "busy",
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

    /// When the client may try again (the `Retry-After` header every rendering carries), for
    /// the refusals that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short human summary (the problem `title`), in English.
    pub fn title(&self) -> &'static str {
        self.title_in(Language::English)
    }

    /// A sentence for the person (the problem `detail`), in English: the rule, never their
    /// data.
    pub fn detail(&self) -> String {
        self.detail_in(Language::English)
    }

    /// The problem `title` in `language`.
    ///
    /// ```
    /// use iamport_tower::{Language, Rejection};
    ///
    /// assert_eq!(Rejection::AlreadyRegistered.title_in(Language::Korean), "이미 가입된 회원입니다");
    /// ```
    pub fn title_in(&self, language: Language) -> &'static str {
        text::title(self, language)
    }

    /// The problem `detail` in `language`.
    ///
    /// ```
    /// use iamport_tower::policy::PolicyViolation;
    /// use iamport_tower::{Language, Rejection};
    ///
    /// let too_young = Rejection::Policy(PolicyViolation::TooYoung { min_age: 19 });
    /// assert_eq!(too_young.detail_in(Language::Korean), "만 19세 이상인 분만 이용할 수 있습니다.");
    /// assert_eq!(too_young.detail_in(Language::English), "Only people aged 19 or older can use this service.");
    /// ```
    pub fn detail_in(&self, language: Language) -> String {
        text::detail(self, language, IdHint::default())
    }

    /// The default rendering in English: `application/problem+json` per RFC 9457.
    pub fn problem_response(&self) -> Response<Bytes> {
        self.problem_response_in(Language::English)
    }

    /// `application/problem+json` per RFC 9457 with `title` and `detail` in `language`
    /// (and `Content-Language` saying so). `type` and `status` are the same in every
    /// language. Behind [`CertificationLayer`](crate::CertificationLayer) the language is
    /// the one the request's `Accept-Language` prefers ([`Language::negotiate`]).
    pub fn problem_response_in(&self, language: Language) -> Response<Bytes> {
        self.problem(language, IdHint::default())
    }

    pub(crate) fn problem(&self, language: Language, hint: IdHint) -> Response<Bytes> {
        let body = serde_json::json!({
            "type": format!("urn:iamport-tower:problem:{}", self.code()),
            "title": self.title_in(language),
            "status": self.status().as_u16(),
            "detail": text::detail(self, language, hint),
        });
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CONTENT_LANGUAGE, HeaderValue::from_static(language.tag()));
        self.add_retry_after(&mut response);
        response
    }

    /// `Retry-After` in whole seconds (at least 1), unless the response has one already.
    pub(crate) fn add_retry_after(&self, response: &mut Response<Bytes>) {
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .entry(RETRY_AFTER)
                .or_insert_with(|| HeaderValue::from(secs.max(1)));
        }
    }

    /// Classifies a lookup failure (the layer logs what the response will not say).
    pub(crate) fn from_lookup_error(error: &Error) -> Self {
        match error {
            Error::NotFound => Self::UnknownId,
            Error::InvalidId(e) => Self::InvalidId(e.clone()),
            Error::Timeout(_) => Self::UpstreamTimeout,
            Error::Unavailable(_) => Self::UpstreamUnavailable,
            _ => Self::UpstreamFailed,
        }
    }
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

/// A layer's `on_rejection` handler, carried by the request's
/// [`Verification`](crate::Verification).
#[derive(Clone)]
pub(crate) struct RejectionRenderer(pub(crate) RejectionHandler);

impl fmt::Debug for RejectionRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RejectionRenderer")
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
            "Only people aged 19 or older can use this service."
        );
    }
}
