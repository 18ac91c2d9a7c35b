//! The emulator's accept loop: plain HTTP/1.1 on a loopback socket, with the ability to drop
//! a connection mid-request (a fault real networks produce and `axum::serve` cannot).

use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

pub(crate) async fn serve(listener: TcpListener, router: Router) {
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
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = abort.0.notified() => {}
            }
        });
    }
}
