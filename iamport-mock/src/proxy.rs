//! A freezable TCP proxy: a stalled database or a network partition on demand, for the
//! unique-store fault tests and the chaos soak (`iamport-soak`). Loopback only.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy on a loopback port in front of `upstream` that can stop forwarding — a
/// stalled database or a network partition, with every socket still open. While frozen it
/// keeps accepting and reading, but holds what it read until [`thaw`](Self::thaw); then
/// everything held is delivered in order.
#[derive(Debug)]
pub struct FreezableProxy {
    /// Where to connect instead of the upstream.
    pub addr: SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    round_trips: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Let held connections go.
        let _ = self.frozen.send(false);
    }
}

impl FreezableProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (frozen, _) = tokio::sync::watch::channel(false);
        let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let round_trips = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, counter, trips) = (frozen.clone(), held.clone(), round_trips.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, counter) = (tx.clone(), counter.clone());
                let turn = Turn {
                    asked: std::sync::Arc::default(),
                    round_trips: trips.clone(),
                };
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(
                        client_read,
                        server_write,
                        tx.subscribe(),
                        counter.clone(),
                        (turn.clone(), false),
                    );
                    let down = pump(
                        server_read,
                        client_write,
                        tx.subscribe(),
                        counter,
                        (turn, true),
                    );
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(Self {
            addr,
            frozen,
            held,
            round_trips,
            task,
        })
    }

    /// Stops forwarding (reads go on, and are held).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Delivers what was held and forwards again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Bytes read while frozen so far: proof that the freeze stopped real traffic.
    pub fn bytes_held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Round trips so far, over every connection: each time the upstream answered after the
    /// client had sent something since its previous answer.
    pub fn round_trips(&self) -> usize {
        self.round_trips.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One connection's turn-taking, for counting round trips.
#[derive(Clone)]
struct Turn {
    /// The client sent something the upstream has not answered yet.
    asked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    round_trips: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Copies `from` to `to`, holding each chunk read while frozen until thawed, and counts the
/// upstream's answers as round trips (`answers`: this is the upstream-to-client side); on end of input
/// shuts `to`'s write side (the other direction keeps going).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    (turn, answers): (Turn, bool),
) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if *frozen.borrow_and_update() {
            held.fetch_add(n, SeqCst);
            if frozen.wait_for(|f| !*f).await.is_err() {
                return;
            }
        }
        // Counted before forwarding, so a caller that saw the answer sees the count.
        if !answers {
            turn.asked.store(true, SeqCst);
        } else if turn.asked.swap(false, SeqCst) {
            turn.round_trips.fetch_add(1, SeqCst);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
