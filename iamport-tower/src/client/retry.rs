//! Sending one HTTP request with bounded, jittered retries on connection errors and 5xx.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::error::Error;

/// How often and how patiently to retry a failed call.
///
/// Retries happen on connection errors (refused, reset, dropped mid-response) and on 5xx
/// answers, never on 4xx. The wait before retry *n* is a random duration between zero and
/// `min(max_backoff, base_backoff * 2^n)` ("full jitter"), so a fleet of clients does not
/// retry in lock step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 2: three attempts at most).
    pub max_retries: u32,
    /// Backoff before the first retry (default 50 ms).
    pub base_backoff: Duration,
    /// Upper bound of any single backoff (default 1 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const NONE: Self = Self {
        max_retries: 0,
        base_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A response that came back: status and the whole body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

fn is_retryable(error: &reqwest::Error) -> bool {
    // Connection refused/reset, or the connection closed before a whole response arrived.
    error.is_connect() || error.is_request() || error.is_body()
}

/// The HTTP side both PortOne clients share: one pooled client, a bound on each whole call,
/// and the retry policy.
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

/// The transport settings both client builders share, with their documented defaults.
#[derive(Debug)]
pub(crate) struct TransportOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl TransportOptions {
    /// Builds the one pooled HTTP client (rustls, HTTP/1.1) with the connect timeout.
    pub(crate) fn build(self) -> Result<Transport, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("iamport-tower/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            timeout: self.timeout,
            retry: self.retry,
        })
    }
}

impl Transport {
    /// Sends the request `build` makes, retrying per the policy.
    pub(crate) async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, Error> {
        send_with_retries(&self.http, &self.retry, build).await
    }

    /// Runs one whole call (token, lookup, retries) within the timeout.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Err(Error::Timeout(_))) | Err(_) => Err(Error::Timeout(self.timeout)),
            Ok(result) => result,
        }
    }
}

/// Sends the request `build` makes, retrying per `policy`. The caller bounds the total time.
async fn send_with_retries(
    http: &reqwest::Client,
    policy: &RetryPolicy,
    build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<Answer, Error> {
    let mut retry = 0;
    loop {
        let attempt = async {
            let response = build(http).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Answer { status, body })
        }
        .await;
        let retries_left = retry < policy.max_retries;
        match attempt {
            Ok(answer) if answer.status.is_server_error() && retries_left => {
                tracing::debug!(status = %answer.status, retry, "PortOne answered 5xx; retrying");
            }
            Ok(answer) => return Ok(answer),
            Err(error) if is_retryable(&error) && retries_left => {
                tracing::debug!(%error, retry, "PortOne connection failed; retrying");
            }
            Err(error) if error.is_timeout() => return Err(Error::Timeout(Duration::ZERO)),
            Err(error) if error.is_decode() => {
                return Err(Error::Malformed(
                    "the response body could not be read".into(),
                ));
            }
            Err(error) => return Err(Error::Unavailable(Box::new(error.without_url()))),
        }
        tokio::time::sleep(policy.backoff(retry)).await;
        retry += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        for retry in 0..40 {
            assert!(policy.backoff(retry) <= Duration::from_millis(300));
        }
        assert!(policy.backoff(0) <= Duration::from_millis(100));
    }
}
