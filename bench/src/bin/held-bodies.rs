//! Held bodies: what N clients that each send most of a JSON body and then hold it cost the
//! app's memory. `cargo run --release -p iamport-bench --bin held-bodies [-- 2000 10000]`
//!
//! The app (a process of its own, with the emulator in it) serves one guarded route behind
//! the default `CertificationLayer` — 64 KiB per body, the 16 MiB budget of buffered bytes —
//! with the body timeout raised to 5 minutes, so a held body stays held while it is measured.
//! The driver (this process) opens N loopback connections, each sending the head and 65 000
//! bytes of a 65 536-byte JSON body, then holding. Once the app's resident memory has settled
//! it is read (with the number of connections answered 503 at once); then the driver closes
//! every connection and it is read again. `text/plain` bodies, which the layer never reads,
//! give the floor: what the connections and requests cost by themselves.
//!
//! Prints a Markdown table: `| content type | held connections | RSS before | while held |
//! after release | answered 503 |` (MiB).

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use iamport_tower::{CertificationLayer, Certified, require_certified};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const DECLARED: usize = 65_536;
const SENT: usize = 65_000;

#[require_certified(max_birth_year = 1999)]
async fn signup(cert: Certified) -> String {
    cert.id.clone()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn raise_fd_limit() {
    use rlimit::Resource;
    let wanted = 65_536;
    if let Ok((soft, hard)) = Resource::NOFILE.get()
        && Resource::NOFILE.set(wanted, wanted).is_err()
    {
        let _ = Resource::NOFILE.set(hard.max(soft), hard);
    }
}

/// The app: prints its port, then answers each line on stdin with its RSS in KiB.
async fn app() {
    raise_fd_limit();
    let emulator = iamport_mock::Emulator::start().await.expect("emulator");
    let layer = CertificationLayer::new(emulator.client()).body_timeout(Duration::from_secs(300));
    let router = Router::new().route("/signup", post(signup)).layer(layer);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener = socket.listen(16_384).expect("listen");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    // Warm-up: the token, the first connections.
    let _ = iamport_tower::client::crypto_provider().install_default();
    let warm = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/signup"))
        .json(&serde_json::json!({ "imp_uid": "imp_100000000001" }))
        .send()
        .await
        .expect("warm-up");
    assert_eq!(warm.status(), 200, "warm-up");
    println!("{port}");
    tokio::task::spawn_blocking(|| {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
            println!("{}", rss_kib());
        }
    })
    .await
    .unwrap();
}

/// One held connection: sends the head and `SENT` bytes; counts a 503 if one comes.
async fn hold(port: u16, content_type: &'static str, refused: Arc<AtomicUsize>) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST /signup HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {DECLARED}\r\n\r\n"
    );
    let mut body = br#"{"imp_uid":"imp_100000000001","pad":""#.to_vec();
    body.resize(SENT, b'a');
    // The app may answer 503 and close before reading it all: that is the point.
    if stream.write_all(head.as_bytes()).await.is_ok() {
        let _ = stream.write_all(&body).await;
    }
    let mut answer = [0u8; 12];
    if let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(1), stream.read(&mut answer)).await
        && answer[..n].starts_with(b"HTTP/1.1 503")
    {
        refused.fetch_add(1, Ordering::Relaxed);
    }
    stream
}

/// Asks the app for its RSS until it stops moving (two readings 1 s apart within 1 MiB).
fn settled_rss(ask: &mut impl FnMut() -> u64) -> u64 {
    let mut last = ask();
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = ask();
        if now.abs_diff(last) < 1024 || started.elapsed() > Duration::from_secs(60) {
            return now;
        }
        last = now;
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

async fn measure(n: usize, content_type: &'static str) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--app")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("app process");
    let mut to_app = child.stdin.take().unwrap();
    let mut from_app = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    from_app.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().expect("the app's port");
    let mut ask = move || {
        writeln!(to_app, "rss").unwrap();
        to_app.flush().unwrap();
        let mut line = String::new();
        from_app.read_line(&mut line).unwrap();
        line.trim().parse::<u64>().expect("RSS")
    };
    let before = ask();
    let refused = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::with_capacity(n);
    // In waves, so the listen backlog keeps up.
    for wave in (0..n).collect::<Vec<_>>().chunks(500) {
        let tasks: Vec<_> = wave
            .iter()
            .map(|_| tokio::spawn(hold(port, content_type, refused.clone())))
            .collect();
        for task in tasks {
            held.push(task.await.unwrap());
        }
    }
    let during = tokio::task::block_in_place(|| settled_rss(&mut ask));
    // Late 503s (answered after the 1 ms look): read what each connection got.
    for stream in &mut held {
        let mut answer = [0u8; 12];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut answer)).await
            && answer[..n].starts_with(b"HTTP/1.1 503")
        {
            refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(held);
    let after = tokio::task::block_in_place(|| settled_rss(&mut ask));
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "| {content_type} | {n} | {} | {} | {} | {} |",
        mib(before),
        mib(during),
        mib(after),
        refused.load(Ordering::Relaxed)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--app") {
        return app().await;
    }
    raise_fd_limit();
    let counts: Vec<usize> = if args.is_empty() {
        vec![2_000, 10_000]
    } else {
        args.iter().map(|a| a.parse().expect("a count")).collect()
    };
    println!(
        "| content type | held connections | RSS before (MiB) | while held | after release | answered 503 |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &counts {
        for content_type in ["application/json", "text/plain"] {
            measure(n, content_type).await;
        }
    }
}
