//! The emulator's accept loop on a loopback socket: plain HTTP/1.1, or HTTP/2 for a client
//! that starts with its preface (h2c with prior knowledge: there is no TLS to negotiate it
//! in), with the ability to drop a connection mid-request (a fault real networks produce and
//! `axum::serve` cannot). Over HTTP/2 that drops every call sharing the connection, as a
//! real connection reset would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower_service::Service;

/// Handed to every request (as an extension) so a handler can kill its own connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnAbort(Arc<Notify>);

impl ConnAbort {
    /// Closes the connection without an answer; never returns.
    pub(crate) async fn drop_connection(&self) -> Option<Response> {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// Serves `router` on `listener`, counting accepted connections in `accepted`, allowing
/// `http2_streams` concurrent streams per HTTP/2 connection.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    accepted: Arc<AtomicU64>,
    http2_streams: Option<u32>,
) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "emulator: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        connections.spawn(async move {
            let abort = ConnAbort(Arc::new(Notify::new()));
            let handle = abort.clone();
            let service =
                hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(handle.clone());
                    let mut router = router.clone();
                    async move { router.call(request).await }
                });
            let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            server.http2().max_concurrent_streams(http2_streams);
            let connection = server.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = abort.0.notified() => {}
            }
        });
    }
}
