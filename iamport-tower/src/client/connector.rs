//! The pooled HTTP client both PortOne clients send through: hyper's client over rustls
//! (ring, the Mozilla roots of `webpki-roots`), TCP_NODELAY, TCP keepalive (15 s, as reqwest
//! sets it), one connect timeout over everything a new connection takes (DNS, TCP, a proxy's
//! `CONNECT`, the TLS handshake), and — when the environment names a proxy for the API's URL
//! — a `CONNECT` tunnel through it.
//!
//! HTTP versions ([`HttpVersions`]): HTTP/1.1 by default, one connection — a socket, hyper's
//! two 8 KiB buffers, a task — per call in flight. With HTTP/2 every concurrent call shares
//! one connection, up to the server's limit of concurrent streams, pinged every 5 s (a
//! connection silent for 5 s more is closed, and its calls fail as a dropped connection's).
//!
//! The proxy is read when the client is built, by hyper-util's matcher (the one reqwest
//! uses): `HTTPS_PROXY` for an `https` API, `HTTP_PROXY` for an `http` one (ignored when
//! `REQUEST_METHOD` is set, as under CGI), else `ALL_PROXY`; upper or lower case; not for
//! hosts in `NO_PROXY`. It must be an `http://` proxy (credentials in its URL become
//! `Proxy-Authorization`); an `https://` or SOCKS proxy is refused when the client is built
//! rather than spoken to in clear text.
//!
//! hyper's client rather than a general-purpose one: every call goes to one host with one of
//! three request shapes, so redirect following, cookie and retry machinery would be work per
//! request for nothing (the transport has its own, budgeted retries; a redirect from the API
//! is an answer, never followed with the token). BENCHMARKS.md has what it saves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tower_service::Service;

use crate::error::Error;

/// The request body type: a whole body in memory (a JSON document, or nothing).
pub(crate) type RequestBody = Full<Bytes>;

/// The pooled client.
pub(crate) type HttpClient = Client<Connector, RequestBody>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a connection reaches the API: directly, or tunnelled through a proxy.
#[derive(Clone)]
pub(crate) enum Route {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Service<Uri> for Route {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    // Boxed: a connection is opened once and then pooled, so this is off the request path.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Direct(direct) => direct.poll_ready(cx).map_err(Into::into),
            Self::Tunnel(tunnel) => tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        match self {
            Self::Direct(direct) => {
                let connecting = direct.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Self::Tunnel(tunnel) => {
                // The tunnel asks for port 443 when the URI names none; an `http` API's
                // default port is 80.
                let destination = match (destination.scheme_str(), destination.port()) {
                    (Some("http"), None) => match with_port(&destination, 80) {
                        Ok(uri) => uri,
                        Err(error) => return Box::pin(async move { Err(error) }),
                    },
                    _ => destination,
                };
                let connecting = tunnel.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}

fn with_port(uri: &Uri, port: u16) -> Result<Uri, BoxError> {
    let authority = uri.authority().map_or("", |a| a.as_str());
    Ok(Uri::builder()
        .scheme("http")
        .authority(format!("{authority}:{port}"))
        .path_and_query("/")
        .build()?)
}

/// The TLS connector under one timeout: a new connection is ready within `timeout` — name
/// resolved, TCP connected, tunnel opened, TLS handshake done — or fails as timed out.
#[derive(Clone)]
pub(crate) struct Connector {
    https: hyper_rustls::HttpsConnector<Route>,
    timeout: Duration,
}

impl Service<Uri> for Connector {
    type Response = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let connecting = self.https.call(destination);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(_elapsed) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )) as BoxError),
            }
        })
    }
}

/// The HTTP versions the client speaks to the API.
///
/// The trade-off. Over HTTP/1.1 (the default) each call in flight holds a connection of its
/// own: a burst of N concurrent lookups opens up to N connections — N TLS handshakes, about
/// 25 KiB each while in flight (BENCHMARKS.md) — and nothing caps their concurrency but the
/// call timeout. Over HTTP/2 the burst shares one connection: one handshake, about 12 KiB
/// per call in flight; but hyper's pool opens no second connection to the same API, so
/// calls beyond the server's limit of concurrent streams (announced by the server, commonly
/// 100–200) wait for a stream, within their timeout — throughput is at most that limit per
/// round trip — and a connection lost with calls on it fails them all at once (each then
/// retried within the [retry budget](crate::client::RetryBudget)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVersions {
    /// HTTP/1.1 only, a connection per call in flight. The default.
    #[default]
    Http1Only,
    /// Over TLS, offer HTTP/2 and HTTP/1.1 in the handshake (ALPN) and speak what the server
    /// picks; over plain `http`, HTTP/1.1. Call
    /// [`warm_up`](crate::IamportClient::warm_up) at startup: until the first connection has
    /// negotiated, each concurrent call opens its own.
    Negotiated,
    /// HTTP/2 only: offered alone in the TLS handshake, or spoken without negotiation on a
    /// plain `http` URL ("h2c with prior knowledge": for an emulator or a gateway known to
    /// speak it — a server that does not fails every call).
    Http2Only,
}

/// Builds the client for an API at `base` (already checked to be an http(s) URL).
pub(crate) fn build(
    base: &Uri,
    connect_timeout: Duration,
    idle_timeout: Duration,
    versions: HttpVersions,
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<HttpClient, Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_keepalive(Some(KEEPALIVE));
    tcp.set_keepalive_interval(Some(KEEPALIVE));
    tcp.set_keepalive_retries(Some(3));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    tcp.set_tcp_user_timeout(Some(2 * KEEPALIVE));
    let route = match Matcher::from_env().intercept(base) {
        None => Route::Direct(tcp),
        Some(proxy) if proxy.uri().scheme_str() != Some("http") => {
            return Err(Error::Config(format!(
                "the proxy the environment names for the PortOne API must be an http:// URL, \
                 not {}:// (set NO_PROXY to the API's host to connect directly)",
                proxy.uri().scheme_str().unwrap_or("?")
            )));
        }
        Some(proxy) => {
            let tunnel = Tunnel::new(proxy.uri().clone(), tcp);
            Route::Tunnel(match proxy.basic_auth() {
                Some(auth) => tunnel.with_auth(auth.clone()),
                None => tunnel,
            })
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        roots
            .add(root)
            .map_err(|e| Error::Config(format!("a root certificate is not usable: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match versions {
        HttpVersions::Negotiated => https.enable_all_versions().wrap_connector(route),
        HttpVersions::Http1Only => https.enable_http1().wrap_connector(route),
        HttpVersions::Http2Only => https.enable_http2().wrap_connector(route),
    };
    let connector = Connector {
        https,
        timeout: connect_timeout,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(versions == HttpVersions::Http2Only)
        // A dead HTTP/2 connection would stall every call on it: pinged, in use or idle, and
        // closed when a ping goes unanswered — well within a call's default 10 s bound.
        .http2_keep_alive_interval(HTTP2_PING)
        .http2_keep_alive_timeout(HTTP2_PING)
        .http2_keep_alive_while_idle(true)
        .build(connector))
}

/// The certificates of each PEM document given to `root_certificate`.
pub(crate) fn extra_roots(pems: &[Vec<u8>]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut roots = Vec::new();
    for pem in pems {
        let before = roots.len();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            roots.push(certificate.map_err(|e| {
                Error::Config(format!("a root certificate's PEM is not readable: {e}"))
            })?);
        }
        if roots.len() == before {
            return Err(Error::Config(
                "a PEM given as a root certificate holds no certificate".into(),
            ));
        }
    }
    Ok(roots)
}

/// HTTP/2 keep-alive: a ping after this long without a frame, and the time allowed for its
/// answer.
const HTTP2_PING: Duration = Duration::from_secs(5);

/// TCP keepalive: idle time before the first probe and between probes (reqwest's default).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Whether `error` or one of its sources is an I/O time-out (a connect timeout).
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = error.source();
    }
    false
}
