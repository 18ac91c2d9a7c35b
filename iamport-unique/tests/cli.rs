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
use base64::Engine as _;
use iamport_mock::Emulator;
use iamport_tower::unique::{
    KeyStatus, PostgresStore, RedisClusterStore, RedisStore, Reservation, ReservationToken,
    StoreKeys, UniqueAdmin, UniqueStore,
};
use iamport_tower::{CertificationLayer, Secret, require_certified};
use tokio::io::AsyncWriteExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_iamport-unique");
const ADULT: &str = "imp_100000000001";
const SECRET: &str = "cli-test-unique-key-secret-0123456789";

fn notice(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// `name`'s value, or a printed notice saying what to set to run `test`.
fn var(name: &str, test: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            // The same commands as the README's and the workspace tests'.
            let run = match name {
                "DATABASE_URL" => {
                    "createdb -h 127.0.0.1 -U postgres test; \
                     export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
                }
                "REDIS_URL" => {
                    "redis-server --daemonize yes; export REDIS_URL=redis://127.0.0.1:6379"
                }
                _ => "eval \"$(.ci/redis-cluster)\"",
            };
            notice(&format!("SKIPPED {test}: {name} is not set — run: {run}"));
            None
        }
    }
}

/// The keys the app derives from [`SECRET`].
fn keys() -> StoreKeys {
    StoreKeys::new(&Secret::new(SECRET)).unwrap()
}

/// A well-formed CI (64 bytes in standard base64, as PortOne's), distinct per `seed`.
fn make_ci(seed: &str) -> String {
    let mut bytes = [0u8; 64];
    bytes[..seed.len()].copy_from_slice(seed.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
        // The tool may exit before reading it all (a usage error): a broken pipe is fine.
        match stdin.write_all(input.as_bytes()).await {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("stdin: {e}"),
            _ => {}
        }
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
/// The layer's keys come from [`SECRET`] as the app gives it, without a newline.
async fn signup_status(emulator: &Emulator, store: Arc<dyn UniqueAdmin>) -> u16 {
    use tower::ServiceExt as _;
    let app = Router::new()
        .route("/", post(signup))
        .layer(CertificationLayer::new(emulator.client()).unique_store(store, keys()));
    let request = http::Request::post("/")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(format!(
            "{{\"imp_uid\":\"{ADULT}\"}}"
        )))
        .unwrap();
    app.oneshot(request).await.unwrap().status().as_u16()
}

/// import → the person's signup is 409, even when the CI's secret ends in a newline (a
/// secret file) and the app's does not; forget → it is admitted (and then 409 again);
/// import in a scope leaves the default scope alone; forget with a cooldown refuses until
/// the date; status reports each; every summary counts "1 person", "2 people".
async fn lifecycle(name: &str, store_url: &str, extra: &[&str], store: Arc<dyn UniqueAdmin>) {
    let emulator = Emulator::start().await.unwrap();
    let cert = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    let ci = cert.ci.clone().unwrap();
    let key = keys().key_for(&ci);
    let env = [("UNIQUE_KEY_SECRET", SECRET)];
    // The secret as a file gives it: ending in a newline, which both sides trim.
    let secret_file = format!("{SECRET}\n");
    let env_from_file = [("UNIQUE_KEY_SECRET", secret_file.as_str())];
    let args = |command: &'static [&'static str]| {
        let mut args = vec!["--store", store_url];
        args.extend_from_slice(extra);
        args.extend_from_slice(command);
        args
    };
    let input = format!("{ci}\n\n{}\n", make_ci("someone else"));

    let out = run(&args(&["import"]), &env_from_file, &input).await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert!(
        out.stderr.contains("imported 2 people in ") && out.stderr.contains("2 newly registered"),
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
        "{name}: imported with the secret's newline, refused by the app without it"
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
    assert!(
        out.stderr.contains("1 person looked up"),
        "{name}: {}",
        out.stderr
    );

    let out = run(&args(&["forget"]), &env, &format!("{ci}\n")).await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    assert!(
        out.stderr.contains("forgot 1 person in ") && out.stderr.contains("(1 was registered"),
        "{name}: {}",
        out.stderr
    );
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
    let scoped = keys().key_in(Some("newsletter"), &ci);
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
    assert!(
        out.stderr.contains("imported 1 person in ")
            && out.stderr.contains("1 newly registered, 0 already were"),
        "{name}: {}",
        out.stderr
    );
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

/// A line that is not a CI (or, with `--keys`, not a key) refuses the whole input: exit 2
/// naming its line, never its content, and the store is untouched — even for lines before
/// it, in batches of one.
async fn bad_lines_change_nothing(
    name: &str,
    store_url: &str,
    extra: &[&str],
    store: Arc<dyn UniqueAdmin>,
) {
    let env = [("UNIQUE_KEY_SECRET", SECRET)];
    let args = |command: &[&'static str]| {
        let mut args = vec!["--store", store_url, "--batch", "1"];
        args.extend_from_slice(extra);
        args.extend_from_slice(command);
        args
    };
    let (a, b) = (make_ci("bad-lines-a"), make_ci("bad-lines-b"));
    let (key_a, key_b) = (keys().key_for(&a), keys().key_for(&b));
    let status = async |key| store.status(key).await.unwrap();

    // import: a good line before the bad one, and one after.
    let out = run(&args(&["import"]), &env, &format!("{a}\nnot a ci\n{b}\n")).await;
    assert_eq!(out.code, 2, "{name}: {}", out.stderr);
    assert!(
        out.stderr
            .contains("line 2 is not a CI (8 characters, not 88)")
            && out.stderr.contains("nothing was imported"),
        "{name}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("not a ci"), "{name}: never the line");
    assert_eq!(status(&key_a).await, KeyStatus::Free, "{name}: line 1");
    assert_eq!(status(&key_b).await, KeyStatus::Free, "{name}: line 3");

    // forget: a's account stays while a line is a store key given without --keys.
    let out = run(&args(&["import"]), &env, &format!("{a}\n")).await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    let input = format!("{a}\n{}\n", key_b.to_hex());
    let out = run(&args(&["forget"]), &env, &input).await;
    assert_eq!(out.code, 2, "{name}: {}", out.stderr);
    assert!(
        out.stderr.contains("line 2 is not a CI") && out.stderr.contains("pass --keys"),
        "{name}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing was forgotten"),
        "{name}: {}",
        out.stderr
    );
    assert_eq!(status(&key_a).await, KeyStatus::Committed, "{name}: kept");

    // --keys: a CI where a key belongs, or a short key.
    let input = format!("{}\n\n{a}\n", key_a.to_hex());
    let out = run(&args(&["--keys", "forget"]), &[], &input).await;
    assert_eq!(out.code, 2, "{name}: {}", out.stderr);
    assert!(
        out.stderr
            .contains("line 3 is not a store key (88 characters, not 64)"),
        "{name}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains(&a), "{name}: never the CI");
    assert_eq!(status(&key_a).await, KeyStatus::Committed, "{name}: kept");
    let input = format!("{}\nabc\n", key_b.to_hex());
    let out = run(&args(&["--keys", "import"]), &[], &input).await;
    assert_eq!(out.code, 2, "{name}: {}", out.stderr);
    assert!(
        out.stderr.contains("line 2 is not a store key"),
        "{name}: {}",
        out.stderr
    );
    assert_eq!(
        status(&key_b).await,
        KeyStatus::Free,
        "{name}: not imported"
    );
}

/// A PostgreSQL store on tables of its own, and the CLI options naming them.
struct PostgresTables {
    url: String,
    table: String,
    accounts: String,
}

impl PostgresTables {
    fn new(url: String, prefix: &str) -> Self {
        let table = unique_name(prefix);
        let accounts = format!("{table}_accounts");
        Self {
            url,
            table,
            accounts,
        }
    }

    fn store(&self) -> PostgresStore {
        PostgresStore::connect_lazy(&self.url)
            .unwrap()
            .table(&self.table)
            .unwrap()
            .accounts_table(&self.accounts)
            .unwrap()
    }

    fn args(&self) -> [&str; 4] {
        ["--table", &self.table, "--accounts-table", &self.accounts]
    }

    async fn connection(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }

    /// Rows in the accounts table.
    async fn accounts(&self) -> i64 {
        let sql = format!("SELECT count(*) FROM \"{}\"", self.accounts);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.connection().await)
            .await
            .unwrap()
    }

    async fn drop(self) {
        let sql = format!(
            "DROP TABLE IF EXISTS \"{}\", \"{}\"",
            self.table, self.accounts
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.connection().await)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_postgres() {
    let Some(url) = var("DATABASE_URL", "lifecycle_on_postgres") else {
        return;
    };
    let tables = PostgresTables::new(url, "iamport_cli");
    lifecycle(
        "postgres",
        &tables.url,
        &tables.args(),
        Arc::new(tables.store()),
    )
    .await;
    tables.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_change_nothing_on_postgres() {
    let Some(url) = var("DATABASE_URL", "bad_lines_change_nothing_on_postgres") else {
        return;
    };
    let tables = PostgresTables::new(url, "iamport_cli_bad");
    let store = Arc::new(tables.store());
    bad_lines_change_nothing("postgres", &tables.url, &tables.args(), store).await;
    assert_eq!(tables.accounts().await, 1, "only the one good import");
    tables.drop().await;
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
async fn bad_lines_change_nothing_on_redis() {
    let Some(url) = var("REDIS_URL", "bad_lines_change_nothing_on_redis") else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-cli-bad"));
    let store = RedisStore::new(&url).unwrap().prefix(prefix.clone());
    bad_lines_change_nothing("redis", &url, &["--prefix", &prefix], Arc::new(store)).await;
    delete_prefix(&[url], &prefix).await;
}

/// A Redis Cluster store with a fresh prefix, its nodes, and its documented CLI URL
/// (`redis+cluster://host:port,host:port`).
fn cluster(urls: &str) -> (RedisClusterStore, Vec<String>, String, String) {
    let prefix = format!("{}:", unique_name("iamport-cli"));
    let nodes: Vec<String> = urls.split(',').map(|n| n.trim().to_owned()).collect();
    let store = RedisClusterStore::new(nodes.iter().map(String::as_str))
        .unwrap()
        .prefix(prefix.clone());
    let url = format!(
        "redis+cluster://{}",
        nodes
            .iter()
            .map(|n| n.trim_start_matches("redis://"))
            .collect::<Vec<_>>()
            .join(",")
    );
    (store, nodes, url, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_a_redis_cluster() {
    let Some(urls) = var("REDIS_CLUSTER_URLS", "lifecycle_on_a_redis_cluster") else {
        return;
    };
    let (store, nodes, url, prefix) = cluster(&urls);
    let extra = ["--prefix", prefix.as_str()];
    lifecycle("redis cluster", &url, &extra, Arc::new(store)).await;
    delete_prefix(&nodes, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_change_nothing_on_a_redis_cluster() {
    let Some(urls) = var(
        "REDIS_CLUSTER_URLS",
        "bad_lines_change_nothing_on_a_redis_cluster",
    ) else {
        return;
    };
    let (store, nodes, url, prefix) = cluster(&urls);
    let extra = ["--prefix", prefix.as_str()];
    bad_lines_change_nothing("redis cluster", &url, &extra, Arc::new(store)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_100_000_people_into_postgres() {
    let Some(url) = var("DATABASE_URL", "importing_100_000_people_into_postgres") else {
        return;
    };
    let tables = PostgresTables::new(url, "iamport_cli_bulk");
    let bulk = |i: u32| make_ci(&format!("bulk-{i:08}"));
    let input: String = (0..100_000).map(|i| bulk(i) + "\n").collect();
    let mut args = vec!["--store", tables.url.as_str()];
    args.extend_from_slice(&tables.args());
    args.push("import");
    let started = Instant::now();
    let out = run(&args, &[("UNIQUE_KEY_SECRET", SECRET)], &input).await;
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
        out.stderr.contains("… 50000 of 100000 done"),
        "progress on stderr: {}",
        out.stderr
    );
    notice(&format!(
        "iamport-unique import: 100000 CIs into PostgreSQL in {elapsed:?}"
    ));
    // Imported into the accounts table, where handlers record accounts.
    assert_eq!(tables.accounts().await, 100_000);
    let store = tables.store();
    for i in [0, 12_345, 99_999] {
        let key = keys().key_for(&bulk(i));
        assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Committed);
    }
    tables.drop().await;
}

#[tokio::test]
async fn mistakes_are_clear_messages_and_nonzero_exits() {
    let some_ci = make_ci("some");
    let some_ci = format!("{some_ci}\n");
    // No store at all.
    let out = run(&["import"], &[("UNIQUE_KEY_SECRET", SECRET)], &some_ci).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no store"), "{}", out.stderr);
    // No secret for CIs.
    let out = run(&["--store", "redis://127.0.0.1:1", "import"], &[], &some_ci).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("UNIQUE_KEY_SECRET is not set"),
        "{}",
        out.stderr
    );
    // A short secret: the library's refusal, as the app gets it.
    let out = run(
        &["--store", "redis://127.0.0.1:1", "import"],
        &[("UNIQUE_KEY_SECRET", "too short\n")],
        &some_ci,
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("UNIQUE_KEY_SECRET is 9 bytes long; a key secret needs at least 32"),
        "{}",
        out.stderr
    );
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
    // A store that is down: exit 1, naming its address and the cause, never the CI.
    for (url, address, cause) in [
        ("redis://127.0.0.1:1", "Redis at 127.0.0.1:1", "refused"),
        (
            "postgres://postgres@127.0.0.1:1/test",
            "PostgreSQL at 127.0.0.1:1",
            "no connection could be opened",
        ),
    ] {
        let out = run(
            &["--store", url, "--timeout", "2s", "import"],
            &[("UNIQUE_KEY_SECRET", SECRET)],
            &some_ci,
        )
        .await;
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("the store failed after 0 of 1 person"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(address), "{}", out.stderr);
        assert!(out.stderr.contains(cause), "the cause: {}", out.stderr);
        notice(&format!("a store that is down: {}", out.stderr.trim()));
        assert!(!out.stderr.contains(some_ci.trim()), "{}", out.stderr);
    }
}
