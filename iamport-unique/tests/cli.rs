//! `iamport-unique` run as a process against real PostgreSQL, Redis and Redis Cluster (each
//! skipped with a notice when its variable is unset), checked through the store and through a
//! signup on the layer with the emulator.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use iamport_mock::Emulator;
use iamport_tower::unique::{
    KeyStatus, PostgresStore, RedisClusterStore, RedisStore, Reservation, ReservationToken,
    UniqueKeys, UniqueStore,
};
use iamport_tower::{CertificationLayer, Secret, require_certified};
use tokio::io::AsyncWriteExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_iamport-unique");
const ADULT: &str = "imp_100000000001";
const SECRET: &str = "cli-test-unique-key-secret-0123456789";

fn notice(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

fn var(name: &str, test: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            notice(&format!("SKIPPED {test}: {name} is not set"));
            None
        }
    }
}

fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the tool with `args`, `input` on stdin, only the environment given (plus PATH).
async fn run(args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = tokio::spawn(async move {
        stdin.write_all(input.as_bytes()).await.unwrap();
    });
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the tool finishes")
        .unwrap();
    writer.await.unwrap();
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup() -> StatusCode {
    StatusCode::CREATED
}

/// One signup of the emulator's adult through a fresh app on `store`: its status.
async fn signup_status(emulator: &Emulator, store: Arc<dyn UniqueStore>) -> u16 {
    use tower::ServiceExt as _;
    let app = Router::new()
        .route("/", post(signup))
        .layer(CertificationLayer::new(emulator.client()).unique_store(store, SECRET));
    let request = http::Request::post("/")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(format!(
            "{{\"imp_uid\":\"{ADULT}\"}}"
        )))
        .unwrap();
    app.oneshot(request).await.unwrap().status().as_u16()
}

/// import → the person's signup is 409; forget → it is admitted (and then 409 again);
/// import in a scope leaves the default scope alone; forget with a cooldown refuses until
/// the date; status reports each.
async fn lifecycle(name: &str, store_url: &str, extra: &[&str], store: Arc<dyn UniqueStore>) {
    let emulator = Emulator::start().await.unwrap();
    let cert = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    let ci = cert.unique_key.clone().unwrap();
    let key = UniqueKeys::new(&Secret::new(SECRET)).key_for(&ci);
    let env = [("UNIQUE_KEY_SECRET", SECRET)];
    let args = |command: &'static [&'static str]| {
        let mut args = vec!["--store", store_url];
        args.extend_from_slice(extra);
        args.extend_from_slice(command);
        args
    };
    let input = format!("{ci}\n\nOTHER-CI-NOT-IN-THE-EMULATOR\n");

    let out = run(&args(&["import"]), &env, &input).await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert!(
        out.stderr.contains("2 newly registered"),
        "{name}: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&ci) && !out.stdout.contains(&ci),
        "{name}: never the CI"
    );
    assert_eq!(
        store.status(&key).await.unwrap(),
        KeyStatus::Committed,
        "{name}"
    );
    assert_eq!(
        signup_status(&emulator, store.clone()).await,
        409,
        "{name}: imported"
    );

    let out = run(&args(&["import"]), &env, &input).await;
    assert!(
        out.stderr.contains("0 newly registered, 2 already were"),
        "{name}: {}",
        out.stderr
    );

    let out = run(&args(&["status"]), &env, &format!("{ci}\n")).await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert_eq!(
        out.stdout,
        format!("{} registered\n", key.to_hex()),
        "{name}"
    );

    let out = run(&args(&["forget"]), &env, &format!("{ci}\n")).await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Free, "{name}");
    assert_eq!(
        signup_status(&emulator, store.clone()).await,
        201,
        "{name}: forgotten"
    );
    assert_eq!(
        signup_status(&emulator, store.clone()).await,
        409,
        "{name}: signed up"
    );

    // A scope is its own keyspace.
    let scoped = UniqueKeys::new(&Secret::new(SECRET)).key_in(Some("newsletter"), &ci);
    let out = run(
        &args(&["--scope", "newsletter", "forget"]),
        &env,
        &format!("{ci}\n"),
    )
    .await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert_eq!(
        store.status(&key).await.unwrap(),
        KeyStatus::Committed,
        "{name}: default scope untouched"
    );
    let out = run(
        &args(&["--scope", "newsletter", "import"]),
        &env,
        &format!("{ci}\n"),
    )
    .await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert_eq!(
        store.status(&scoped).await.unwrap(),
        KeyStatus::Committed,
        "{name}"
    );

    // Forget with a cooldown, by hex key: refused until the date.
    let out = run(
        &args(&["--keys", "forget", "--cooldown", "30d"]),
        &[],
        &format!("{}\n", key.to_hex()),
    )
    .await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert!(
        matches!(
            store.status(&key).await.unwrap(),
            KeyStatus::CoolingDown { .. }
        ),
        "{name}"
    );
    assert_eq!(
        signup_status(&emulator, store.clone()).await,
        409,
        "{name}: cooling down"
    );
    let out = run(
        &args(&["--keys", "status"]),
        &[],
        &format!("{}\n", key.to_hex()),
    )
    .await;
    assert!(
        out.stdout
            .starts_with(&format!("{} cooling-down until ", key.to_hex())),
        "{name}: {}",
        out.stdout
    );
    let token = ReservationToken::random();
    assert_eq!(
        store
            .reserve(&key, token, Duration::from_secs(5))
            .await
            .unwrap(),
        Reservation::Taken
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_postgres() {
    let Some(url) = var("DATABASE_URL", "lifecycle_on_postgres") else {
        return;
    };
    let table = unique_name("iamport_cli");
    let store = PostgresStore::new(&url).unwrap().table(&table).unwrap();
    lifecycle("postgres", &url, &["--table", &table], Arc::new(store)).await;
    drop_table(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_redis() {
    let Some(url) = var("REDIS_URL", "lifecycle_on_redis") else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-cli"));
    let store = RedisStore::new(&url).unwrap().prefix(prefix.clone());
    lifecycle("redis", &url, &["--prefix", &prefix], Arc::new(store)).await;
    delete_prefix(&[url], &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_a_redis_cluster() {
    let Some(urls) = var("REDIS_CLUSTER_URLS", "lifecycle_on_a_redis_cluster") else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-cli"));
    let nodes: Vec<&str> = urls.split(',').collect();
    let store = RedisClusterStore::new(nodes.iter().copied())
        .unwrap()
        .prefix(prefix.clone());
    // The documented scheme: redis+cluster://host:port,host:port
    let url = format!(
        "redis+cluster://{}",
        nodes
            .iter()
            .map(|n| n.trim_start_matches("redis://"))
            .collect::<Vec<_>>()
            .join(",")
    );
    lifecycle(
        "redis cluster",
        &url,
        &["--prefix", &prefix],
        Arc::new(store),
    )
    .await;
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    delete_prefix(&nodes, &prefix).await;
}

/// Deletes the test's keys on each of `nodes` (each master of a cluster holds its own).
async fn delete_prefix(nodes: &[String], prefix: &str) {
    for node in nodes {
        let Ok(client) = redis::Client::open(node.as_str()) else {
            continue;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        for key in keys {
            let _: Result<i64, _> = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut connection)
                .await;
        }
    }
}

async fn drop_table(url: &str, table: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_100_000_people_into_postgres() {
    let Some(url) = var("DATABASE_URL", "importing_100_000_people_into_postgres") else {
        return;
    };
    let table = unique_name("iamport_cli_bulk");
    let input: String = (0..100_000).map(|i| format!("BULK-CI-{i:08}\n")).collect();
    let started = Instant::now();
    let out = run(
        &["--store", &url, "--table", &table, "import"],
        &[("UNIQUE_KEY_SECRET", SECRET)],
        &input,
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("imported 100000 people"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("100000 newly registered"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("… 50000 read"),
        "progress on stderr: {}",
        out.stderr
    );
    notice(&format!(
        "iamport-unique import: 100000 CIs into PostgreSQL in {elapsed:?}"
    ));
    let store = PostgresStore::new(&url).unwrap().table(&table).unwrap();
    let keys = UniqueKeys::new(&Secret::new(SECRET));
    for i in [0, 12_345, 99_999] {
        let key = keys.key_for(&format!("BULK-CI-{i:08}"));
        assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Committed);
    }
    drop_table(&url, &table).await;
}

#[tokio::test]
async fn mistakes_are_clear_messages_and_nonzero_exits() {
    // No store at all.
    let out = run(&["import"], &[("UNIQUE_KEY_SECRET", SECRET)], "CI\n").await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no store"), "{}", out.stderr);
    // No secret for CIs.
    let out = run(&["--store", "redis://127.0.0.1:1", "import"], &[], "CI\n").await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("UNIQUE_KEY_SECRET"), "{}", out.stderr);
    // A line that is not a key is named by number, never echoed.
    let out = run(
        &["--store", "redis://127.0.0.1:1", "--keys", "forget"],
        &[],
        "SECRET-LOOKING-CI-VALUE\n",
    )
    .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("SECRET-LOOKING-CI-VALUE"),
        "{}",
        out.stderr
    );
    // Unknown command, unknown scheme, bad cooldown.
    let out = run(&["--store", "redis://127.0.0.1:1", "erase"], &[], "").await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown command `erase`"),
        "{}",
        out.stderr
    );
    let out = run(&["--store", "mysql://x", "status"], &[], "").await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("must start with"), "{}", out.stderr);
    let out = run(
        &[
            "--store",
            "redis://127.0.0.1:1",
            "forget",
            "--cooldown",
            "30 days",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    // A store that is down: exit 1, saying so.
    let out = run(
        &[
            "--store",
            "redis://127.0.0.1:1",
            "--timeout",
            "2s",
            "import",
        ],
        &[("UNIQUE_KEY_SECRET", SECRET)],
        "SOME-CI\n",
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("the store failed"), "{}", out.stderr);
    assert!(!out.stderr.contains("SOME-CI"), "{}", out.stderr);
}
