//! Helpers shared by the end-to-end tests: serving apps on loopback ports and speaking raw
//! HTTP/1.1 where a client library would hide what is being tested.

use std::convert::Infallible;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server running in the background; dropping it stops the accept loop.
#[derive(Debug)]
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The socket address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves an axum router on a free loopback port.
pub async fn serve_axum(app: axum::Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Served {
        url: format!("http://{addr}"),
        addr,
        task,
    }
}

/// Serves any tower service of `Request<Incoming>` with hyper 1 directly (`http1` +
/// `TowerToHyperService`), the way a hyper user would.
pub async fn serve_hyper<S, ResBody>(service: S) -> Served
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ResBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Served {
        url: format!("http://{addr}"),
        addr,
        task,
    }
}

/// Sends `head` (request line and headers, without the blank line), then `body_chunks` with
/// chunked transfer encoding, and returns the response status. Stops sending if the server
/// answers early.
pub async fn post_chunked(addr: SocketAddr, head: &str, body_chunks: &[&[u8]]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("{head}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for chunk in body_chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer (and close) before reading everything: that is allowed.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}
