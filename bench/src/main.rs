//! Load benchmark: `cargo run --release -p iamport-bench [-- --rounds 3 --seconds 2
//! --connections 32,256,1024,4096 --upstream-latency-ms 20 --in-flight 1000
//! --scenarios plain,guarded --cold-start no]`
//!
//! Axum routes answer the same question — "is the person behind this `imp_uid` an adult by
//! PortOne's guide (born 1999 or earlier)?" — against the PortOne emulator over loopback HTTP:
//!
//! - `guarded`: `#[require_certified(max_birth_year = 1999)]` behind `CertificationLayer`.
//! - `guarded-h2`: the same with the client on HTTP/2 (a `reqwest::Client` with prior
//!   knowledge, h2c to the emulator; over TLS reqwest picks HTTP/2 when the server offers
//!   it): every lookup on one upstream
//!   connection, at most 200 at once (the emulator's limit of concurrent streams, as
//!   servers announce one).
//! - `plain`: a hand-written handler making the same single upstream call (one lookup with a
//!   token fetched once at startup) with a pooled `reqwest::Client`: what a user would write by
//!   hand, the reference the ratios are taken against.
//! - `client`: a hand-written handler calling this crate's `IamportClient` directly (no layer,
//!   no guard): what the client costs apart from the layer.
//! - `guide`: PortOne's guide as written: a token request, then the lookup, on every request.
//! - `direct`: the driver asks the emulator itself (with a token): one upstream round trip as
//!   a client sees it, the latency floor of any route that must ask PortOne.
//!
//! Scenarios run interleaved, round after round, so machine noise hits them alike; the report
//! gives the median over rounds of throughput and latency, the ratio to `plain`, and upstream
//! calls per request counted by the emulator. Each request names a different person, so the
//! single-flight deduplication of concurrent lookups of one id does not flatter `guarded`.
//! `--scenarios` runs only the named ones (e.g. under a profiler); `BENCH_TRACE=1` prints
//! every round's figure on stderr.
//!
//! With `unique = true` the same guarded route becomes a signup: `unique-memory` always, and
//! `unique-postgres` / `unique-redis` when `DATABASE_URL` / `REDIS_URL` are set. Every person
//! has their own CI, each admission reserves and each 200 commits the person's key; between
//! rounds the keys are forgotten, so every measured request is a first signup.
//!
//! The measured routes keep no lookup cache ([`LookupCache::disabled`]): each request costs
//! its own upstream call, as in the hand-written handlers. The cache's effect is measured
//! apart, on a workload where each person submits twice in a row (the popup's POST, then the
//! redirect page): `twice-cached` (the default cache) against `twice-uncached`.
//!
//! Three processes share the machine: the app (this process), the emulator
//! ([`EmulatorProcess`], steered over a pipe) and the load driver (a child per scenario run),
//! so that each holds only its own sockets. Two measurements run in further child processes,
//! so nothing else lives in their memory: the app's resident memory per 1 000 in-flight
//! requests (`--in-flight`; an app process of its own, with its emulator and its driver in
//! theirs; the upstream holds every answer until all requests are in flight), and a
//! cold process's first guarded request (a new client, no token yet) at the upstream latency.
//!
//! 4 096 connections need about 8 200 file descriptors in the app (the inbound sockets and its
//! end of the upstream pool) and as many in the emulator: the harness raises its
//! `RLIMIT_NOFILE` soft limit to the hard limit (and the hard limit too, when it may); without
//! that, run `ulimit -n 65536` first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use iamport_mock::{DEFAULT_HTTP2_STREAMS, Emulator, Endpoint, TEST_KEY, TEST_SECRET, person};
use iamport_tower::cache::LookupCache;
use iamport_tower::unique::{PostgresStore, RedisStore, StoreKey, StoreKeys, UniqueAdmin};
use iamport_tower::{CertificationLayer, Certified, IamportClient, Secret, require_certified};
use serde::Deserialize;

/// The heap bytes this process holds, counted only where [`HEAP_COUNTING`] is switched on (the
/// `rss` child): resident memory also moves with the allocator's arenas and trimming, the
/// heap count only with what the app keeps.
struct CountingAllocator;

static HEAP_COUNTING: AtomicBool = AtomicBool::new(false);
static HEAP_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to `System` unchanged; the counter only observes sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if HEAP_COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if HEAP_COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if HEAP_COUNTING.load(Ordering::Relaxed) {
            HEAP_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Enough that no run of the fastest signup scenario names a person twice (8 s at 4 096
/// connections, about 10 000 signups/s on two cores).
const PERSONS: usize = 120_000;
/// Idle timeout of the upstream pools.
const IDLE: Duration = Duration::from_secs(30);
const UNIQUE_SECRET: &str = "bench-unique-key-secret-0123456789";

fn ci(n: usize) -> String {
    format!("BENCH-CI-{n:080}")
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(person: Certified) -> (StatusCode, String) {
    let year = person.birth_date.map(|d| d.year()).unwrap_or_default();
    (StatusCode::OK, format!("signed up, born {year}"))
}

#[require_certified(max_birth_year = 1999)]
async fn guarded(person: Certified) -> (StatusCode, String) {
    let year = person.birth_date.map(|d| d.year()).unwrap_or_default();
    (StatusCode::OK, format!("adult, born {year}"))
}

#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    /// Shared, as an app's state would be: axum clones the state for every request (twice
    /// behind a layer), and a `String` would cost an allocation each time.
    base: Arc<str>,
    token: Arc<str>,
    /// The crate's client, for `client`: a hand-written handler calling it directly.
    client: IamportClient,
}

/// The crate's client called by hand, without the layer: what the client costs apart from
/// the layer and the guard.
async fn by_client(State(up): State<Upstream>, Query(p): Query<Params>) -> (StatusCode, String) {
    let Ok(id) = iamport_tower::ImpUid::parse(&p.imp_uid) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    match up.client.certification(&id).await {
        Ok(cert) => match cert.birth_date.map(|d| d.year()) {
            Some(year) if year <= 1999 => (StatusCode::OK, format!("adult, born {year}")),
            _ => (StatusCode::FORBIDDEN, String::new()),
        },
        Err(_) => (StatusCode::BAD_GATEWAY, String::new()),
    }
}

#[derive(Deserialize)]
struct Params {
    imp_uid: String,
}

async fn lookup(up: &Upstream, token: &str, imp_uid: &str) -> (StatusCode, String) {
    let Ok(response) = up
        .http
        .get(format!("{}/certifications/{imp_uid}", up.base))
        .header("Authorization", token)
        .send()
        .await
    else {
        return (StatusCode::BAD_GATEWAY, String::new());
    };
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return (StatusCode::BAD_GATEWAY, String::new());
    };
    let year: i32 = body["response"]["birthday"]
        .as_str()
        .and_then(|b| b.get(..4))
        .and_then(|y| y.parse().ok())
        .unwrap_or(9999);
    if year <= 1999 {
        (StatusCode::OK, format!("adult, born {year}"))
    } else {
        (StatusCode::FORBIDDEN, String::new())
    }
}

async fn fetch_token(http: &reqwest::Client, base: &str) -> Option<String> {
    let body: serde_json::Value = http
        .post(format!("{base}/users/getToken"))
        .json(&serde_json::json!({"imp_key": TEST_KEY, "imp_secret": TEST_SECRET}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["response"]["access_token"].as_str().map(str::to_owned)
}

/// The same upstream call, by hand, with a token fetched once.
async fn plain(State(up): State<Upstream>, Query(p): Query<Params>) -> (StatusCode, String) {
    let token = up.token.clone();
    lookup(&up, &token, &p.imp_uid).await
}

/// PortOne's guide: a token per request, then the lookup.
async fn guide(State(up): State<Upstream>, Query(p): Query<Params>) -> (StatusCode, String) {
    let Some(token) = fetch_token(&up.http, &up.base).await else {
        return (StatusCode::BAD_GATEWAY, String::new());
    };
    lookup(&up, &token, &p.imp_uid).await
}

struct Options {
    rounds: usize,
    seconds: f64,
    connections: Vec<usize>,
    latencies_ms: Vec<u64>,
    in_flight: Vec<usize>,
    /// Only these scenarios (`--scenarios plain,guarded`; default all), e.g. for a profiler.
    scenarios: Option<Vec<String>>,
    /// Measure a cold process's first request (`--cold-start no` skips it).
    cold_start: bool,
    /// Run one child measurement and exit: `rss ROUTE N` or `cold LATENCY_MS`.
    child: Option<Vec<String>>,
}

fn list<T: std::str::FromStr>(value: &str, what: &str) -> Vec<T> {
    value
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{what}")))
        .collect()
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        seconds: 2.0,
        connections: vec![32, 256, 1024, 4096],
        latencies_ms: vec![20],
        // Each run opens thousands of loopback connections, whose ports then wait out
        // TIME_WAIT: more counts in one run can run out of ports.
        in_flight: vec![1000],
        scenarios: None,
        cold_start: true,
        child: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        o.child = Some(args[1..].to_vec());
        return o;
    }
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--connections" => o.connections = list(value, "--connections 32,256"),
            "--upstream-latency-ms" => o.latencies_ms = list(value, "--upstream-latency-ms 0,20"),
            "--in-flight" => o.in_flight = list(value, "--in-flight 1000"),
            "--scenarios" => o.scenarios = Some(list(value, "--scenarios plain,guarded")),
            "--cold-start" => o.cold_start = value != "no",
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Raises the soft `RLIMIT_NOFILE` as far as allowed (and the hard one, as root).
fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    let wanted = 65_536;
    if let Ok((soft, hard)) = Resource::NOFILE.get() {
        if hard < wanted && Resource::NOFILE.set(wanted, wanted).is_ok() {
            return wanted;
        }
        let _ = Resource::NOFILE.set(hard.max(soft), hard);
    }
    Resource::NOFILE.get().map_or(0, |(soft, _)| soft)
}

/// CPU time this process has used, user and system, all threads (`/proc/self/stat`, in
/// clock ticks of 10 ms; zero where there is none).
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start at `state` (3);
            // utime and stime are fields 14 and 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// This process's resident memory, from `/proc/self/status` (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs this binary with `--child ARGS` and returns the line it prints.
fn child(args: &[String]) -> String {
    let output = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--child")
        .args(args)
        .output()
        .expect("child measurement");
    assert!(
        output.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `rss ROUTE N`: this process is the app alone — the emulator and the driver run in processes
/// of their own — and prints its resident-memory growth in bytes per request with N requests
/// in flight at once on `held`, `plain`, `plain-layered` (a do-nothing layer on the route),
/// `client`, `guarded`, `guarded-cached` (the layer's default lookup cache on), `guarded-h2`
/// (the client speaking HTTP/2 to the emulator), or — served as an app of their own, the layer
/// around it — `plain-app`, `guarded-app`, `guarded-cached-app`; then
/// the connections the emulator accepted meanwhile (the app's upstream ones, with its
/// warm-up's); then its heap growth in bytes per request. The emulator holds every answer
/// until all N lookups have arrived (a long latency), so all N are in flight when it is read.
async fn child_rss(route: &str, n: usize) {
    use std::io::{BufRead as _, Write as _};
    // No limit of HTTP/2 streams: all N lookups in flight on the one connection.
    let emulator = EmulatorProcess::start(n + 1, None);
    let client = upstream_client(&emulator.url(), false);
    let h2 = upstream_client(&emulator.url(), true);
    let http = http_builder().build().unwrap();
    let upstream_token: Arc<str> = fetch_token(&http, &emulator.url())
        .await
        .expect("token")
        .into();
    let upstream = Upstream {
        token: upstream_token,
        http,
        base: emulator.url().into(),
        client: client.clone(),
    };
    let arrived = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/guarded",
            get(guarded).layer(
                CertificationLayer::new(client.clone()).lookup_cache(LookupCache::disabled()),
            ),
        )
        // The same over HTTP/2 (h2c: the emulator speaks it without TLS): every lookup on
        // one upstream connection.
        .route(
            "/guarded-h2",
            get(guarded).layer(CertificationLayer::new(h2).lookup_cache(LookupCache::disabled())),
        )
        // The layer as built by default: the lookup cache on.
        .route(
            "/guarded-cached",
            get(guarded).layer(CertificationLayer::new(client.clone())),
        )
        .route("/plain", get(plain))
        // `plain-layered`: the same with a layer that does nothing on its route — what axum's
        // box of a route layer's future (with the route's own inside) costs any layer.
        .route(
            "/plain-layered",
            get(plain).layer(tower_layer::Identity::new()),
        )
        // `client`: this crate's client called by hand, without the layer.
        .route("/client", get(by_client))
        // `held`: a handler that never answers and asks nothing upstream — what the inbound
        // connection and the request alone cost.
        .route(
            "/held",
            get({
                let arrived = arrived.clone();
                move || async move {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
            }),
        )
        .route("/ok", get(|| async { "ok" }))
        .with_state(upstream.clone());
    let upstream_state = upstream;
    let listener = deep_listener();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // `*-app`: the routes served as a service of their own (`into_make_service`), the layer
    // around the whole app rather than on a route: axum then boxes no future of its own for
    // it (a route layer's future, with the route's inside, is one box per request in flight).
    if route.ends_with("-app") {
        let app = Router::new()
            .route("/plain-app", get(plain))
            .with_state(upstream_state.clone())
            .merge(
                Router::new()
                    .route("/guarded-app", get(guarded))
                    .route("/guarded-cached-app", get(guarded))
                    .with_state(upstream_state),
            );
        if route.starts_with("guarded") {
            let layer = match route {
                "guarded-cached-app" => CertificationLayer::new(client.clone()),
                _ => CertificationLayer::new(client.clone()).lookup_cache(LookupCache::disabled()),
            };
            tokio::spawn(serve_app(listener, tower_layer::Layer::layer(&layer, app)));
        } else {
            tokio::spawn(serve_app(listener, app));
        }
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    // Warm-up (one request, not measured): the token, the first connections, the allocator's
    // first arenas.
    let warm = match route {
        "held" => format!("{base}/ok"),
        _ => format!("{base}/{route}?imp_uid={}", imp_uid(n)),
    };
    let url = format!("{base}/{route}");
    let mut driver = KillOnDrop(
        std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["--child", "hold", &url, &warm, &n.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("driver process"),
    );
    let mut to_driver = driver.0.stdin.take().expect("piped");
    let mut from_driver = std::io::BufReader::new(driver.0.stdout.take().expect("piped"));
    let mut line = String::new();
    let read_line = |from: &mut std::io::BufReader<_>, line: &mut String| {
        line.clear();
        from.read_line(line).expect("the driver's answer");
    };
    tokio::task::block_in_place(|| read_line(&mut from_driver, &mut line));
    assert_eq!(line.trim(), "warm", "the warm-up request failed");
    emulator.reset_counters();
    emulator.set_latency(Duration::from_secs(30));
    HEAP_COUNTING.store(true, Ordering::SeqCst);
    let before = rss_bytes();
    writeln!(to_driver, "go").expect("driver command");
    to_driver.flush().expect("driver command");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reached = || match route {
        "held" => arrived.load(Ordering::SeqCst),
        _ => emulator.calls().1 as usize,
    };
    loop {
        let reached = tokio::task::block_in_place(reached);
        if reached >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{reached} of {n} requests reached the upstream within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = rss_bytes();
    let heap = HEAP_BYTES.load(Ordering::SeqCst).max(0) as u64;
    let connections = tokio::task::block_in_place(|| emulator.connections());
    drop(driver);
    println!(
        "{} {connections} {}",
        during.saturating_sub(before) / n as u64,
        heap / n as u64
    );
}

/// Serves `app` as a service of its own — not through the `Router`'s own make-service, which
/// turns every route into a `Route` anew for each connection (per-connection memory that
/// grows with the routes, and in these measurements one connection carries one request).
async fn serve_app<S>(listener: tokio::net::TcpListener, app: S)
where
    S: tower_service::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .await
    .unwrap();
}

/// A child process killed when this is dropped — also when a measurement panics, so that
/// no driver outlives it holding the parent's pipes.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hold URL WARM_URL N`: the driver of [`child_rss`]. Sends one request to `WARM_URL` and
/// prints `warm`; on a line on stdin, sends N requests to `URL` at once (each naming its own
/// person, on a connection of its own) and waits until it is killed.
async fn child_hold(url: &str, warm: &str, n: usize) {
    use std::io::{BufRead as _, Write as _};
    let driver = http_builder().pool_max_idle_per_host(n).build().unwrap();
    let status = driver.get(warm).send().await.expect("warm-up").status();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", if status == 200 { "warm" } else { "failed" }).unwrap();
    out.flush().unwrap();
    drop(out);
    tokio::task::block_in_place(|| {
        let mut go = String::new();
        std::io::stdin().lock().read_line(&mut go).expect("go");
    });
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let request = driver.get(format!("{url}?imp_uid={}", imp_uid(i)));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    std::future::pending::<()>().await;
    drop(requests);
}

/// `cold LATENCY_MS WARM_UP`: a new process's first guarded request, at that upstream
/// latency, with the token fetched at startup (`WARM_UP` = 1, what the demo does:
/// `CertificationSource::warm_up` before serving) or not; prints `first_request_ms
/// startup_ms token_calls lookups`.
async fn child_cold(latency_ms: u64, warm_up: bool) {
    let emulator = emulator_with(1, Some(DEFAULT_HTTP2_STREAMS)).await;
    emulator.set_latency(Duration::from_millis(latency_ms));
    let started = Instant::now();
    let client: IamportClient = emulator.client();
    if warm_up {
        client.warm_up().await.expect("token at startup");
    }
    let app = Router::new().route(
        "/guarded",
        get(guarded).layer(CertificationLayer::new(client)),
    );
    let listener = deep_listener();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let ready = started.elapsed();
    let t = Instant::now();
    let response = http_builder()
        .build()
        .unwrap()
        .get(format!("{base}/guarded?imp_uid={}", imp_uid(0)))
        .send()
        .await
        .expect("first request");
    assert_eq!(response.status(), 200);
    println!(
        "{:.2} {:.2} {} {}",
        t.elapsed().as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0,
        emulator.calls(Endpoint::GetToken),
        emulator.calls(Endpoint::GetCertification)
    );
}

fn imp_uid(n: usize) -> String {
    format!("imp_{:012}", 300_000_000_000 + n as u64)
}

/// The emulator of the load scenarios, in a child process of its own: at thousands of
/// connections its sockets (the server side of every upstream connection) count against its
/// own descriptor limit, not the app's. Steered over the child's stdin/stdout (one command
/// line, one answer line); see [`child_emulator`].
struct EmulatorProcess {
    url: String,
    channel: std::sync::Mutex<(
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    )>,
    _child: std::process::Child,
}

impl EmulatorProcess {
    /// An emulator holding `persons` people, allowing `streams` concurrent HTTP/2 streams
    /// per connection (`None`: no limit).
    fn start(persons: usize, streams: Option<u32>) -> Self {
        use std::io::BufRead as _;
        let streams = streams.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["--child", "emulator", &persons.to_string(), &streams])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("emulator process");
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut url = String::new();
        stdout.read_line(&mut url).expect("the emulator's URL");
        Self {
            url: url.trim().to_owned(),
            channel: std::sync::Mutex::new((stdin, stdout)),
            _child: child,
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn command(&self, line: &str) -> String {
        use std::io::{BufRead as _, Write as _};
        let mut channel = self.channel.lock().expect("emulator channel");
        let (stdin, stdout) = &mut *channel;
        writeln!(stdin, "{line}").expect("emulator command");
        stdin.flush().expect("emulator command");
        let mut answer = String::new();
        stdout.read_line(&mut answer).expect("emulator answer");
        answer.trim().to_owned()
    }

    fn set_latency(&self, latency: Duration) {
        self.command(&format!("latency {}", latency.as_millis()));
    }

    fn reset_counters(&self) {
        self.command("reset");
    }

    /// Token calls and lookups since the last reset.
    fn calls(&self) -> (u64, u64) {
        let answer = self.command("calls");
        let mut numbers = answer
            .split_whitespace()
            .map(|n| n.parse().expect("a count"));
        (
            numbers.next().expect("token"),
            numbers.next().expect("lookups"),
        )
    }

    /// Connections the emulator has accepted since it started.
    fn connections(&self) -> u64 {
        self.command("connections").parse().expect("a count")
    }
}

/// `emulator PERSONS STREAMS`: serves an emulator holding that many persons (allowing
/// `STREAMS` concurrent HTTP/2 streams per connection, or `unlimited`), prints its URL, then
/// answers commands on stdin — `latency MS`, `reset`, `calls` (prints `TOKEN LOOKUPS`),
/// `connections` (accepted since it started) — until stdin closes.
async fn child_emulator(persons: usize, streams: Option<u32>) {
    let emulator = emulator_with(persons, streams).await;
    // The commands are read on a blocking thread; the emulator serves on the runtime.
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead as _, Write as _};
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", emulator.url()).unwrap();
        out.flush().unwrap();
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["latency", ms] => {
                    emulator.set_latency(Duration::from_millis(ms.parse().expect("latency MS")));
                    "ok".to_owned()
                }
                ["reset"] => {
                    emulator.reset_counters();
                    "ok".to_owned()
                }
                ["calls"] => format!(
                    "{} {}",
                    emulator.calls(Endpoint::GetToken),
                    emulator.calls(Endpoint::GetCertification)
                ),
                ["connections"] => emulator.connections().to_string(),
                _ => panic!("unknown emulator command {line:?}"),
            };
            writeln!(out, "{answer}").unwrap();
            out.flush().unwrap();
        }
    })
    .await
    .expect("emulator commands");
}

/// The crate's client for the emulator at `url`, its idle connections kept for [`IDLE`]; with
/// `h2`, through a `reqwest::Client` speaking HTTP/2 with prior knowledge (h2c).
fn upstream_client(url: &str, h2: bool) -> IamportClient {
    let builder = IamportClient::builder()
        .base_url(url)
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .idle_timeout(IDLE);
    let builder = if h2 {
        builder.http_client(
            http_builder()
                .http2_prior_knowledge()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(IDLE)
                .build()
                .expect("an HTTP/2 client"),
        )
    } else {
        builder
    };
    builder.build().expect("client")
}

/// A `reqwest::ClientBuilder`: this workspace builds reqwest with `rustls-no-provider` (ring
/// is the tree's one crypto provider), so the crate's provider is installed first.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}

/// An emulator holding `persons` adults, each with their own CI.
async fn emulator_with(persons: usize, streams: Option<u32>) -> Emulator {
    let emulator = Emulator::builder()
        .without_sample_persons()
        .http2_max_concurrent_streams(streams)
        .start()
        .await
        .expect("emulator");
    for n in 0..persons {
        let mut record = person(&imp_uid(n), "부하시험", "1990-01-01");
        record["unique_key"] = serde_json::Value::String(ci(n));
        emulator.add_person(record);
    }
    emulator
}

struct Sample {
    requests: usize,
    /// CPU time the app's process (this one: the server, the layer, its upstream client)
    /// spent in the window, user and system.
    app_cpu: Duration,
    errors: usize,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    upstream_token_calls: u64,
    upstream_lookups: u64,
}

/// What one scenario's run measured.
struct Driven {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs one scenario's load from a child process (its sockets count against its own
/// descriptor limit, not the server's): see [`child_drive`]. Advances `next` past the
/// persons it named.
fn drive(
    url: &str,
    warm_url: &str,
    connections: usize,
    seconds: f64,
    next: &AtomicUsize,
    twice: bool,
    authorization: Option<&str>,
) -> Driven {
    let start = next.load(Ordering::Relaxed);
    let line = child(&[
        "drive".into(),
        url.into(),
        warm_url.into(),
        connections.to_string(),
        seconds.to_string(),
        start.to_string(),
        u8::from(twice).to_string(),
        authorization.unwrap_or("-").into(),
    ]);
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    next.fetch_add(v[5] as usize, Ordering::Relaxed);
    Driven {
        requests: v[0] as usize,
        errors: v[1] as usize,
        elapsed: Duration::from_secs_f64(v[2]),
        p50_ms: v[3],
        p99_ms: v[4],
    }
}

/// `drive URL WARM_URL CONNECTIONS SECONDS START TWICE AUTHORIZATION`: opens `connections`
/// keep-alive connections (one request each to `WARM_URL`, not measured), then sends requests
/// to `URL` over them for `SECONDS`; each names the next person from `START`, or — `TWICE` = 1
/// — the same person twice in a row (the second after the first was answered). The person's
/// id replaces `{imp_uid}` in `URL`, or goes in its query string; `AUTHORIZATION` (`-` for
/// none) is sent as that header. Prints `requests errors seconds p50_ms p99_ms
/// persons_named`.
async fn child_drive(args: &[&str]) {
    let [
        url,
        warm_url,
        connections,
        seconds,
        start,
        twice,
        authorization,
    ] = args
    else {
        panic!("drive URL WARM_URL CONNECTIONS SECONDS START TWICE AUTHORIZATION");
    };
    let authorization = (*authorization != "-").then(|| authorization.to_string());
    let connections: usize = connections.parse().expect("connections");
    let seconds: f64 = seconds.parse().expect("seconds");
    let start: usize = start.parse().expect("start");
    let twice = *twice == "1";
    let http = http_builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(start));
    let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let http = http.clone();
            let (url, warm_url) = (url.to_string(), warm_url.to_string());
            let authorization = authorization.clone();
            let (next, ready) = (next.clone(), ready.clone());
            tokio::spawn(async move {
                if let Ok(r) = http.get(&warm_url).send().await {
                    let _ = r.bytes().await;
                }
                ready.wait().await;
                let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut n = 0;
                let mut sent = 0_usize;
                while Instant::now() < deadline {
                    if !twice || sent.is_multiple_of(2) {
                        n = next.fetch_add(1, Ordering::Relaxed) % PERSONS;
                    }
                    sent += 1;
                    let t = Instant::now();
                    let target = if url.contains("{imp_uid}") {
                        url.replace("{imp_uid}", &imp_uid(n))
                    } else {
                        format!("{url}?imp_uid={}", imp_uid(n))
                    };
                    let mut request = http.get(target);
                    if let Some(authorization) = &authorization {
                        request = request.header("authorization", authorization);
                    }
                    match request.send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                        }
                        _ => errors += 1,
                    }
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                (latencies, errors)
            })
        })
        .collect();
    ready.wait().await;
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, e) = worker.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    println!(
        "{} {errors} {} {} {} {}",
        all.len(),
        elapsed.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        next.load(Ordering::Relaxed) - start
    );
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let o = options();
    let fd_limit = raise_fd_limit();
    if let Some(args) = &o.child {
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["rss", route, n] => child_rss(route, n.parse().expect("rss ROUTE N")).await,
            ["cold", latency, warm] => {
                child_cold(
                    latency.parse().expect("cold LATENCY_MS WARM_UP"),
                    warm == "1",
                )
                .await;
            }
            ["drive", ref rest @ ..] => child_drive(rest).await,
            ["hold", url, warm, n] => {
                child_hold(url, warm, n.parse().expect("hold URL WARM N")).await;
            }
            ["emulator", persons, streams] => {
                let streams = (streams != "unlimited").then(|| streams.parse().expect("STREAMS"));
                child_emulator(persons.parse().expect("emulator N"), streams).await;
            }
            _ => panic!("unknown child measurement {args:?}"),
        }
        return;
    }
    // HTTP/2 streams limited as by default (and as real servers limit them): `guarded-h2`
    // has at most that many lookups in flight.
    let emulator = EmulatorProcess::start(PERSONS, Some(DEFAULT_HTTP2_STREAMS));
    // One client (one connection pool, one token) for every guarded route, as an app would
    // have: separate pools would hold idle connections per route.
    // Idle upstream connections stay open across scenarios (the emulator's sockets are in its
    // own process: at 4 096 connections the app holds the inbound ones and two pools' worth of
    // upstream ones, about 12 300 descriptors).
    let client = upstream_client(&emulator.url(), false);
    let uncached = || CertificationLayer::new(client.clone()).lookup_cache(LookupCache::disabled());
    // The same client speaking HTTP/2 to the emulator (h2c): every lookup on one connection.
    let h2 = upstream_client(&emulator.url(), true);
    let http = http_builder().pool_idle_timeout(IDLE).build().unwrap();
    let token: Arc<str> = fetch_token(&http, &emulator.url())
        .await
        .expect("token")
        .into();
    let upstream_token = token.clone();
    let upstream = Upstream {
        http,
        base: emulator.url().into(),
        token,
        client: client.clone(),
    };
    let mut stores: Vec<(&str, Arc<dyn UniqueAdmin>)> = vec![(
        "unique-memory",
        Arc::new(iamport_tower::unique::MemoryStore::new()),
    )];
    let table = format!("iamport_bench_{}", std::process::id());
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = PostgresStore::connect_lazy(&url)
            .expect("DATABASE_URL")
            .table(&table)
            .expect("table")
            .accounts_table(&format!("{table}_accounts"))
            .expect("table");
        stores.push(("unique-postgres", Arc::new(store)));
    }
    if let Ok(url) = std::env::var("REDIS_URL") {
        let store = RedisStore::new(&url)
            .expect("REDIS_URL")
            .prefix(format!("{table}:"));
        stores.push(("unique-redis", Arc::new(store)));
    }
    let keys = StoreKeys::new(&Secret::new(UNIQUE_SECRET)).expect("a 32-byte secret");
    let all_keys: Vec<StoreKey> = (0..PERSONS).map(|n| keys.key_for(&ci(n))).collect();
    let mut app = Router::new()
        .route("/guarded", get(guarded).layer(uncached()))
        .route(
            "/guarded-h2",
            get(guarded).layer(CertificationLayer::new(h2).lookup_cache(LookupCache::disabled())),
        )
        .route("/twice-uncached", get(guarded).layer(uncached()))
        .route(
            "/twice-cached",
            get(guarded).layer(CertificationLayer::new(client.clone())),
        )
        .route("/plain", get(plain))
        .route("/client", get(by_client))
        .route("/guide", get(guide))
        // An unguarded route with and without the layer in front: the cost of the layer for
        // requests no guard asks about (the id in the query string is never looked up).
        .route("/bare", get(|| async { "ok" }))
        .route("/unguarded", get(|| async { "ok" }).layer(uncached()));
    for (name, store) in &stores {
        app = app.route(
            &format!("/{name}"),
            get(signup).layer(uncached().unique_store(store.clone(), keys.clone())),
        );
    }
    let app = app.with_state(upstream);
    let listener = deep_listener();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut scenarios = vec![
        "plain",
        "client",
        "guarded",
        "guarded-h2",
        "guide",
        "direct",
        "bare",
        "unguarded",
    ];
    scenarios.extend(stores.iter().map(|(name, _)| *name));
    scenarios.extend(["twice-uncached", "twice-cached"]);
    if let Some(only) = &o.scenarios {
        scenarios.retain(|s| only.iter().any(|o| o == s));
    }
    let twice = |scenario: &str| scenario.starts_with("twice");
    let store_of = |scenario: &str| {
        stores
            .iter()
            .find(|(name, _)| *name == scenario)
            .map(|(_, store)| store.clone())
    };
    let next = Arc::new(AtomicUsize::new(0));
    println!(
        "machine: {} cores, load average {}; rounds {}, {} s each, {} persons, RLIMIT_NOFILE {fd_limit}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        o.rounds,
        o.seconds,
        PERSONS
    );
    for &latency in &o.latencies_ms {
        for &connections in &o.connections {
            emulator.set_latency(Duration::from_millis(latency));
            // The load comes from a child process; waiting for it must not block a worker
            // thread of the server's runtime.
            let run = |s: &'static str, seconds: f64| {
                // `direct`: the emulator itself, with the token — one upstream round trip.
                let (url, warm, authorization) = if s == "direct" {
                    let upstream = emulator.url();
                    let url = format!("{upstream}/certifications/{{imp_uid}}");
                    (
                        url,
                        format!("{upstream}/"),
                        Some(upstream_token.to_string()),
                    )
                } else {
                    (format!("{base}/{s}"), format!("{base}/bare"), None)
                };
                let next = next.clone();
                let twice = twice(s);
                tokio::task::spawn_blocking(move || {
                    let authorization = authorization.as_deref();
                    drive(
                        &url,
                        &warm,
                        connections,
                        seconds,
                        &next,
                        twice,
                        authorization,
                    )
                })
            };
            // Warm-up: connections, the guarded client's token.
            for &s in &scenarios {
                let first = next.load(Ordering::Relaxed);
                run(s, 0.3).await.expect("warm-up");
                if let Some(store) = store_of(s) {
                    forget_named(&*store, &all_keys, first, next.load(Ordering::Relaxed)).await;
                }
            }
            let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
            for round in 0..o.rounds {
                // Each round starts one scenario later, so no scenario always follows the same
                // one (at saturation, what ran just before shows in the next window).
                for k in 0..scenarios.len() {
                    let i = (k + round) % scenarios.len();
                    let s = scenarios[i];
                    emulator.reset_counters();
                    // A request at thousands of connections takes a second on two cores:
                    // longer windows, so requests cut off at the end weigh little.
                    let seconds = o.seconds * (connections as f64 / 1024.0).max(1.0);
                    let first = next.load(Ordering::Relaxed);
                    let cpu_before = process_cpu();
                    let driven = run(s, seconds).await.expect("a run");
                    let app_cpu = process_cpu().saturating_sub(cpu_before);
                    let (upstream_token_calls, upstream_lookups) = emulator.calls();
                    if let Some(store) = store_of(s) {
                        // Outside the measured window: everyone it named may sign up again.
                        let named = next.load(Ordering::Relaxed);
                        forget_named(&*store, &all_keys, first, named).await;
                    }
                    if std::env::var_os("BENCH_TRACE").is_some() {
                        eprintln!(
                            "round {round} {s}: {:.0} req/s",
                            driven.requests as f64 / driven.elapsed.as_secs_f64()
                        );
                    }
                    samples[i].push(Sample {
                        requests: driven.requests,
                        app_cpu,
                        errors: driven.errors,
                        elapsed: driven.elapsed,
                        p50_ms: driven.p50_ms,
                        p99_ms: driven.p99_ms,
                        upstream_token_calls,
                        upstream_lookups,
                    });
                }
            }
            println!(
                "\nupstream latency {latency} ms (added by the emulator), {connections} connections, load average {}",
                load_average()
            );
            println!(
                "| route | req/s (median) | vs plain | app CPU µs/req | vs plain | p50 ms | p99 ms | token calls/req | lookups/req | errors |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|");
            let round_rps = |i: usize, round: usize| {
                let r = &samples[i][round];
                r.requests as f64 / r.elapsed.as_secs_f64()
            };
            // Ratios per round (the two scenarios ran seconds apart), then their median.
            let ratio = |i: usize, to: usize| {
                median(
                    (0..o.rounds)
                        .map(|round| round_rps(i, round) / round_rps(to, round))
                        .collect(),
                )
            };
            // The app's CPU time per request: what the process serving the routes spends on
            // one, whatever the other processes (driver, emulator) did meanwhile — far steadier
            // on a shared machine than req/s. Per-round ratios, then their median.
            let cpu_us = |i: usize, round: usize| {
                let r = &samples[i][round];
                r.app_cpu.as_secs_f64() * 1e6 / r.requests.max(1) as f64
            };
            let cpu_ratio = |i: usize, to: usize| {
                median(
                    (0..o.rounds)
                        .map(|round| cpu_us(i, round) / cpu_us(to, round))
                        .collect(),
                )
            };
            let index = |name: &str| scenarios.iter().position(|s| *s == name);
            let plain = index("plain");
            for (i, s) in scenarios.iter().enumerate() {
                let rows = &samples[i];
                let rps = median(
                    rows.iter()
                        .map(|r| r.requests as f64 / r.elapsed.as_secs_f64())
                        .collect(),
                );
                let p50 = median(rows.iter().map(|r| r.p50_ms).collect());
                let p99 = median(rows.iter().map(|r| r.p99_ms).collect());
                let requests: usize = rows.iter().map(|r| r.requests).sum();
                let tokens: u64 = rows.iter().map(|r| r.upstream_token_calls).sum();
                let lookups: u64 = rows.iter().map(|r| r.upstream_lookups).sum();
                let errors: usize = rows.iter().map(|r| r.errors).sum();
                // `direct` does not go through the app.
                let cpu = (*s != "direct")
                    .then(|| median((0..o.rounds).map(|round| cpu_us(i, round)).collect()));
                println!(
                    "| {s} | {rps:.0} | {} | {} | {} | {p50:.2} | {p99:.2} | {:.4} | {:.3} | {errors} |",
                    plain.map_or("—".into(), |p| format!("{:.2}×", ratio(i, p))),
                    cpu.map_or("—".into(), |cpu| format!("{cpu:.1}")),
                    match (plain, cpu) {
                        (Some(p), Some(_)) => format!("{:.3}×", cpu_ratio(i, p)),
                        _ => "—".into(),
                    },
                    tokens as f64 / requests as f64,
                    lookups as f64 / requests as f64,
                );
            }
            if let (Some(guarded), Some(direct)) = (index("guarded"), index("direct")) {
                let p50 = |i: usize| median(samples[i].iter().map(|r| r.p50_ms).collect());
                println!(
                    "\nguarded p50 over one upstream round trip (direct): {:+.1} %",
                    (p50(guarded) / p50(direct) - 1.0) * 100.0
                );
            }
            if let (Some(unguarded), Some(bare)) = (index("unguarded"), index("bare")) {
                println!(
                    "\nunguarded route behind the layer vs without it (bare): {:.3}× throughput, {:.3}× app CPU per request",
                    ratio(unguarded, bare),
                    cpu_ratio(unguarded, bare)
                );
            }
            for store in ["unique-postgres", "unique-redis"] {
                if let (Some(i), Some(memory)) = (index(store), index("unique-memory")) {
                    println!("{store} vs unique-memory: {:.3}×", ratio(i, memory));
                }
            }
            if let (Some(cached), Some(uncached)) = (index("twice-cached"), index("twice-uncached"))
            {
                println!(
                    "each person twice, cached vs uncached: {:.3}× throughput",
                    ratio(cached, uncached)
                );
            }
        }
    }
    in_flight_memory(&o.in_flight);
    if o.cold_start {
        cold_start(&o.latencies_ms, o.rounds);
    }
    if let Ok(url) = std::env::var("DATABASE_URL")
        && let Ok(pool) = sqlx::PgPool::connect(&url).await
    {
        let drop = format!("DROP TABLE IF EXISTS \"{table}\", \"{table}_accounts\"");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&pool)
            .await;
    }
    if let Some(store) = store_of("unique-redis") {
        forget_named(&*store, &all_keys, 0, all_keys.len()).await;
    }
}

/// The app's memory per 1 000 requests in flight (MiB: resident and heap), each measured in a
/// fresh app process (the driver and the emulator in processes of their own), median of
/// three, each over its baseline: a route whose handler never answers nor calls upstream
/// (`held`: what the inbound connection and the request cost any route), then `plain` and the
/// routes beside it in one router (the layer on a route: axum boxes a route layer's future),
/// then `plain-app` and the layer around the whole app (what the layer itself holds).
fn in_flight_memory(counts: &[usize]) {
    const ROUTES: [(&str, &str); 10] = [
        (
            "held",
            "a route that never answers (the inbound connection alone)",
        ),
        ("plain", "plain (a hand-written reqwest handler)"),
        ("client", "client (this crate's client by hand)"),
        (
            "guarded",
            "guarded (the lookup cache off, as measured above)",
        ),
        ("guarded-cached", "guarded, the default lookup cache on"),
        ("guarded-h2", "guarded, HTTP/2 upstream"),
        (
            "plain-layered",
            "plain with a layer that does nothing (axum's box of a route layer)",
        ),
        (
            "plain-app",
            "plain, in an app of its own (the baseline below)",
        ),
        (
            "guarded-app",
            "guarded, the layer around the app (lookup cache off)",
        ),
        (
            "guarded-cached-app",
            "guarded, the layer around the app (default lookup cache)",
        ),
    ];
    for &n in counts {
        println!(
            "\nmemory of the app alone with {n} requests in flight, per 1 000 (MiB; median of 3)"
        );
        println!(
            "| route | resident | heap | over its plain: resident / heap | upstream connections |"
        );
        println!("|---|---|---|---|---|");
        let per_1000 = |route: &str| {
            let runs: Vec<[f64; 3]> = (0..3)
                .map(|_| {
                    let line = child(&["rss".into(), route.into(), n.to_string()]);
                    let mut numbers = line
                        .split_whitespace()
                        .map(|v| v.parse::<f64>().expect("a number"));
                    let mut next = || numbers.next().expect("rss, connections, heap");
                    let mib = |bytes: f64| bytes * 1000.0 / (1024.0 * 1024.0);
                    let rss = mib(next());
                    let connections = next();
                    [rss, connections, mib(next())]
                })
                .collect();
            let at = |i: usize| median(runs.iter().map(|r| r[i]).collect());
            Measured {
                rss: at(0),
                connections: at(1),
                heap: at(2),
            }
        };
        let measured: Vec<Measured> = ROUTES.iter().map(|(route, _)| per_1000(route)).collect();
        let baseline = |route: &str| {
            let plain = if route.ends_with("-app") {
                "plain-app"
            } else {
                "plain"
            };
            let i = ROUTES
                .iter()
                .position(|(r, _)| *r == plain)
                .expect("a baseline");
            &measured[i]
        };
        for ((route, label), m) in ROUTES.iter().zip(&measured) {
            let base = baseline(route);
            let over = if *route == "held" || std::ptr::eq(base, m) {
                "—".to_owned()
            } else {
                format!("{:+.2} / {:+.2}", m.rss - base.rss, m.heap - base.heap)
            };
            println!(
                "| {label} | {:.2} | {:.2} | {over} | {:.0} |",
                m.rss, m.heap, m.connections
            );
        }
    }
}

/// One route's memory per 1 000 requests in flight (MiB) and its upstream connections.
struct Measured {
    rss: f64,
    heap: f64,
    connections: f64,
}

/// A cold process's first guarded request, in upstream round trips, without and with the
/// token fetched at startup; median of `rounds` (at least 3) child processes each.
fn cold_start(latencies_ms: &[u64], rounds: usize) {
    println!("\na cold process's first guarded request (new client, new layer)");
    println!(
        "| upstream latency ms | token at startup | startup ms | first request ms (median) | in upstream round trips | token calls | lookups |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &latency in latencies_ms.iter().filter(|&&l| l > 0) {
        for warm_up in [false, true] {
            let runs: Vec<Vec<f64>> = (0..rounds.max(3))
                .map(|_| {
                    child(&[
                        "cold".into(),
                        latency.to_string(),
                        u8::from(warm_up).to_string(),
                    ])
                    .split_whitespace()
                    .map(|v| v.parse().expect("number"))
                    .collect()
                })
                .collect();
            let ms = median(runs.iter().map(|r| r[0]).collect());
            let startup = median(runs.iter().map(|r| r[1]).collect());
            println!(
                "| {latency} | {} | {startup:.1} | {ms:.1} | {:.2} | {} | {} |",
                if warm_up { "yes (`warm_up`)" } else { "no" },
                ms / latency as f64,
                runs[0][2],
                runs[0][3]
            );
        }
    }
}

/// Frees every person's key for the next round (outside the measured window); a store still
/// busy with the last window's backlog may time out, so this tries a few times.
/// Forgets the keys of the persons named from `first` to `named` (cycled): all of them that
/// a run may have signed up.
async fn forget_named(store: &dyn UniqueAdmin, keys: &[StoreKey], first: usize, named: usize) {
    let named: Vec<StoreKey> = if named - first >= keys.len() {
        keys.to_vec()
    } else {
        (first..named)
            .map(|n| keys[n % keys.len()].clone())
            .collect()
    };
    for chunk in named.chunks(10_000) {
        for attempt in 1.. {
            match store.forget(chunk, None).await {
                Ok(_) => break,
                Err(error) if attempt < 10 => {
                    eprintln!("forget: {error}; again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => panic!("forget: {error}"),
            }
        }
    }
}

/// A loopback listener with a backlog for thousands of connections opened at once (the
/// default 1 024 drops the rest of a burst, and their retransmitted SYNs stall a second).
fn deep_listener() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    socket.listen(8192).expect("listen")
}

/// The 1-minute load average, as `/proc/loadavg` has it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
