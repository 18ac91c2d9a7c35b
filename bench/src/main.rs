//! Load benchmark: `cargo run --release -p iamport-bench [-- --rounds 5 --seconds 2 --connections 32]`
//!
//! Three axum routes answer the same question — "is the person behind this `imp_uid` an
//! adult by PortOne's guide (born 1999 or earlier)?" — against the PortOne emulator over
//! loopback HTTP:
//!
//! - `guarded`: `#[require_certified(max_birth_year = 1999)]` behind `CertificationLayer`.
//! - `plain`: a hand-written handler making the same single upstream call (one lookup with a
//!   token fetched once at startup) with a pooled `reqwest::Client` — the floor.
//! - `guide`: PortOne's guide as written: a token request, then the lookup, on every request.
//!
//! Scenarios run interleaved, round after round, so machine noise hits them alike; the report
//! gives the median over rounds of throughput and latency, the ratio to `plain`, and upstream
//! calls per request counted by the emulator. Each request names a different person, so the
//! single-flight deduplication of concurrent lookups of one id does not flatter `guarded`.
//!
//! With `unique = true` the same guarded route becomes a signup: `unique-memory` always, and
//! `unique-postgres` / `unique-redis` when `DATABASE_URL` / `REDIS_URL` are set. Every person
//! has their own CI, each admission reserves and each 200 commits the person's key; between
//! rounds the keys are forgotten, so every measured request is a first signup.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use iamport_mock::{Emulator, Endpoint, TEST_KEY, TEST_SECRET, person};
use iamport_tower::unique::{PostgresStore, RedisStore, UniqueKey, UniqueKeys, UniqueStore};
use iamport_tower::{CertificationLayer, Certified, Secret, require_certified};
use serde::Deserialize;

/// Enough that no round of the fastest signup scenario names a person twice.
const PERSONS: usize = 60_000;
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
    base: String,
    token: Arc<str>,
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
    connections: usize,
    latencies_ms: Vec<u64>,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 5,
        seconds: 2.0,
        connections: 32,
        latencies_ms: vec![0, 20],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--upstream-latency-ms" => {
                o.latencies_ms = value
                    .split(',')
                    .map(|v| v.parse().expect("--upstream-latency-ms 0,20"))
                    .collect();
            }
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

struct Sample {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    upstream_token_calls: u64,
    upstream_lookups: u64,
}

async fn drive(
    url: &str,
    connections: usize,
    seconds: f64,
    next: &Arc<AtomicUsize>,
) -> (usize, usize, Duration, Vec<u64>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let http = http.clone();
            let url = url.to_owned();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed) % PERSONS;
                    let t = Instant::now();
                    match http
                        .get(format!(
                            "{url}?imp_uid=imp_{:012}",
                            300_000_000_000 + n as u64
                        ))
                        .send()
                        .await
                    {
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
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, e) = worker.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    (all.len(), errors, started.elapsed(), all)
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
    let emulator = Emulator::builder()
        .without_sample_persons()
        .start()
        .await
        .expect("emulator");
    for n in 0..PERSONS {
        let birthday = if n % 10 == 0 {
            "2012-05-05"
        } else {
            "1990-01-01"
        };
        // Adults only on the measured path (every 10th would be a minor: excluded below).
        let _ = birthday;
        let mut record = person(
            &format!("imp_{:012}", 300_000_000_000 + n as u64),
            "부하시험",
            "1990-01-01",
        );
        record["unique_key"] = serde_json::Value::String(ci(n));
        emulator.add_person(record);
    }
    let http = reqwest::Client::new();
    let token: Arc<str> = fetch_token(&http, &emulator.url())
        .await
        .expect("token")
        .into();
    let upstream = Upstream {
        http,
        base: emulator.url(),
        token,
    };
    let mut stores: Vec<(&str, Arc<dyn UniqueStore>)> = vec![(
        "unique-memory",
        Arc::new(iamport_tower::unique::MemoryStore::new()),
    )];
    let table = format!("iamport_bench_{}", std::process::id());
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = PostgresStore::new(&url)
            .expect("DATABASE_URL")
            .table(&table)
            .expect("table");
        stores.push(("unique-postgres", Arc::new(store)));
    }
    if let Ok(url) = std::env::var("REDIS_URL") {
        let store = RedisStore::new(&url)
            .expect("REDIS_URL")
            .prefix(format!("{table}:"));
        stores.push(("unique-redis", Arc::new(store)));
    }
    let keys = UniqueKeys::new(&Secret::new(UNIQUE_SECRET));
    let all_keys: Vec<UniqueKey> = (0..PERSONS).map(|n| keys.key_for(&ci(n))).collect();
    let mut app = Router::new()
        .route(
            "/guarded",
            get(guarded).layer(CertificationLayer::new(emulator.client())),
        )
        .route("/plain", get(plain))
        .route("/guide", get(guide))
        // An unguarded route with and without the layer in front: the cost of the layer for
        // requests no guard asks about (the id in the query string is never looked up).
        .route("/bare", get(|| async { "ok" }))
        .route(
            "/unguarded",
            get(|| async { "ok" }).layer(CertificationLayer::new(emulator.client())),
        );
    for (name, store) in &stores {
        app = app.route(
            &format!("/{name}"),
            get(signup).layer(
                CertificationLayer::new(emulator.client())
                    .unique_store(store.clone(), UNIQUE_SECRET),
            ),
        );
    }
    let app = app.with_state(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut scenarios = vec!["plain", "guarded", "guide", "bare", "unguarded"];
    scenarios.extend(stores.iter().map(|(name, _)| *name));
    let store_of = |scenario: &str| {
        stores
            .iter()
            .find(|(name, _)| *name == scenario)
            .map(|(_, store)| store.clone())
    };
    let next = Arc::new(AtomicUsize::new(0));
    println!(
        "machine: {} cores; rounds {}, {} s each, {} connections, {} persons",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.rounds,
        o.seconds,
        o.connections,
        PERSONS
    );
    for &latency in &o.latencies_ms {
        emulator.set_latency(Duration::from_millis(latency));
        // Warm-up: connections, the guarded client's token.
        for &s in &scenarios {
            drive(&format!("{base}/{s}"), o.connections, 0.3, &next).await;
            if let Some(store) = store_of(s) {
                store.forget_all(&all_keys, None).await.expect("forget");
            }
        }
        let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
        for _ in 0..o.rounds {
            for (i, s) in scenarios.iter().enumerate() {
                emulator.reset_counters();
                let (requests, errors, elapsed, mut latencies) =
                    drive(&format!("{base}/{s}"), o.connections, o.seconds, &next).await;
                latencies.sort_unstable();
                if let Some(store) = store_of(s) {
                    // Outside the measured window: everyone may sign up again.
                    store.forget_all(&all_keys, None).await.expect("forget");
                }
                samples[i].push(Sample {
                    requests,
                    errors,
                    elapsed,
                    latencies_us: latencies,
                    upstream_token_calls: emulator.calls(Endpoint::GetToken),
                    upstream_lookups: emulator.calls(Endpoint::GetCertification),
                });
            }
        }
        println!("\nupstream latency {latency} ms (added by the emulator)");
        println!(
            "| route | req/s (median) | vs plain | p50 ms | p99 ms | token calls/req | lookups/req | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let plain_rps = median(
            samples[0]
                .iter()
                .map(|s| s.requests as f64 / s.elapsed.as_secs_f64())
                .collect(),
        );
        let rps_of = |i: usize| {
            median(
                samples[i]
                    .iter()
                    .map(|s| s.requests as f64 / s.elapsed.as_secs_f64())
                    .collect(),
            )
        };
        for (i, s) in scenarios.iter().enumerate() {
            let rows = &samples[i];
            let rps = median(
                rows.iter()
                    .map(|r| r.requests as f64 / r.elapsed.as_secs_f64())
                    .collect(),
            );
            let p50 = median(
                rows.iter()
                    .map(|r| percentile(&r.latencies_us, 0.5))
                    .collect(),
            );
            let p99 = median(
                rows.iter()
                    .map(|r| percentile(&r.latencies_us, 0.99))
                    .collect(),
            );
            let requests: usize = rows.iter().map(|r| r.requests).sum();
            let tokens: u64 = rows.iter().map(|r| r.upstream_token_calls).sum();
            let lookups: u64 = rows.iter().map(|r| r.upstream_lookups).sum();
            let errors: usize = rows.iter().map(|r| r.errors).sum();
            println!(
                "| {s} | {rps:.0} | {:.2}× | {p50:.2} | {p99:.2} | {:.4} | {:.3} | {errors} |",
                rps / plain_rps,
                tokens as f64 / requests as f64,
                lookups as f64 / requests as f64,
            );
        }
        println!(
            "\nunguarded route behind the layer vs without it (bare): {:.3}×",
            rps_of(4) / rps_of(3)
        );
    }
    if let Ok(url) = std::env::var("DATABASE_URL")
        && let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
            .await;
    }
    if let Some(store) = store_of("unique-redis") {
        let _ = store.forget_all(&all_keys, None).await;
    }
}
