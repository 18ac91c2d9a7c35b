//! `Error`: why a PortOne call did not produce an answer.

use std::time::Duration;

use http::StatusCode;

use crate::id::InvalidId;

/// What went wrong talking to PortOne.
///
/// Messages name the failure, never a secret or a person's data: PortOne's own `message` is
/// kept (it is a fixed sentence such as "인증결과가 존재하지 않습니다."), JSON decoding errors
/// keep only the position, not the offending value.
///
/// `Debug` prints the same message as `Display`: an `Error` returned from `main` through `?`
/// reads "Error: the API key (IMP_KEY) is not set", not a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The id is not a valid PortOne id; nothing was sent.
    #[error("invalid verification id: {0}")]
    InvalidId(#[from] InvalidId),
    /// PortOne has no verification with this id (HTTP 404).
    #[error("PortOne has no verification with this id")]
    NotFound,
    /// PortOne v1 refused the API key and secret (HTTP 401 on `getToken`).
    #[error("PortOne rejected the API credentials (HTTP 401); check IMP_KEY and IMP_SECRET")]
    BadCredentials,
    /// PortOne v2 refused the API secret (HTTP 401).
    #[error("PortOne rejected the v2 API secret (HTTP 401); check PORTONE_API_SECRET")]
    BadApiSecret,
    /// PortOne refused a freshly issued access token (HTTP 401 twice in a row).
    #[error("PortOne refused a freshly issued access token (HTTP 401 after a token refresh)")]
    Unauthorized,
    /// PortOne answered an unexpected HTTP status (after retries, for 5xx).
    #[error("PortOne answered HTTP {status}{}", message_suffix(.message))]
    UpstreamStatus {
        /// The status PortOne sent.
        status: StatusCode,
        /// PortOne's own explanation, when it sent one.
        message: Option<String>,
    },
    /// PortOne answered HTTP 200 with a non-zero `code`.
    #[error("PortOne answered code {code}{}", message_suffix(.message))]
    Api {
        /// The envelope's `code`.
        code: i64,
        /// The envelope's `message`.
        message: Option<String>,
    },
    /// The whole call (token, lookup and retries) took longer than the configured timeout.
    #[error("PortOne did not answer within {0:?}")]
    Timeout(Duration),
    /// PortOne could not be reached (connection refused, reset or dropped), after retries.
    #[error("PortOne is unreachable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// PortOne answered something this crate cannot read.
    #[error("PortOne sent an unreadable response: {0}")]
    Malformed(String),
    /// A client or a secret is not configured correctly (the message names the setting or
    /// environment variable).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn message_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

/// The message of an error shared with waiters that did not run the call themselves.
#[derive(Debug)]
struct Shared(String);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Shared {}

impl Error {
    /// An equal error for another caller (one failed token fetch answers all its waiters).
    /// A boxed source keeps its message.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::InvalidId(e) => Self::InvalidId(e.clone()),
            Self::NotFound => Self::NotFound,
            Self::BadCredentials => Self::BadCredentials,
            Self::BadApiSecret => Self::BadApiSecret,
            Self::Unauthorized => Self::Unauthorized,
            Self::UpstreamStatus { status, message } => Self::UpstreamStatus {
                status: *status,
                message: message.clone(),
            },
            Self::Api { code, message } => Self::Api {
                code: *code,
                message: message.clone(),
            },
            Self::Timeout(d) => Self::Timeout(*d),
            Self::Unavailable(source) => Self::Unavailable(Box::new(Shared(source.to_string()))),
            Self::Malformed(m) => Self::Malformed(m.clone()),
            Self::Config(m) => Self::Config(m.clone()),
        }
    }

    /// The HTTP status PortOne answered with, when its answer is what failed (for logs).
    #[doc(hidden)]
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::NotFound => Some(404),
            Self::BadCredentials | Self::BadApiSecret | Self::Unauthorized => Some(401),
            Self::UpstreamStatus { status, .. } => Some(status.as_u16()),
            Self::Api { .. } => Some(200),
            _ => None,
        }
    }

    /// Describes a JSON decoding failure without quoting the input (which may hold personal
    /// data: serde_json's own message repeats the offending value).
    pub(crate) fn malformed_json(err: &serde_json::Error) -> Self {
        Self::Malformed(format!(
            "{:?} error in JSON at line {} column {}",
            err.classify(),
            err.line(),
            err.column()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `main` returning `Err` through `?` prints `Debug`: it must be the sentence.
    #[test]
    fn debug_is_the_message() {
        let config = Error::Config("the API key (IMP_KEY) is not set".into());
        assert_eq!(
            format!("{config:?}"),
            "invalid configuration: the API key (IMP_KEY) is not set"
        );
        assert_eq!(
            format!("{:?}", Error::BadCredentials),
            "PortOne rejected the API credentials (HTTP 401); check IMP_KEY and IMP_SECRET"
        );
        let unavailable = Error::Unavailable("cannot connect: connection refused".into());
        assert_eq!(format!("{unavailable:?}"), unavailable.to_string());
        let boxed: Box<dyn std::error::Error> = Box::new(Error::BadCredentials);
        assert_eq!(format!("{boxed:?}"), boxed.to_string());
    }
}
