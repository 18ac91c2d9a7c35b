//! One account per person: the conformance suite every `UniqueStore` passes, and `unique =
//! true` end to end — the account and the person's key in one PostgreSQL transaction, a 2xx
//! that waits for the commit elsewhere, concurrent signups through two app instances, retries
//! after a failed handler, stores that are down or stall, dropped and panicking requests.
//! PostgreSQL and Redis tests need `DATABASE_URL` / `REDIS_URL` and print a skip notice
//! without them; each run uses its own tables / key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use iamport_e2e::{
    FreezableProxy, address_of, database_url, notice, redis_cluster_urls, redis_url, serve_axum,
    unique_name, with_address,
};
use iamport_mock::Emulator;
use iamport_tower::body::Body;
use iamport_tower::unique::{
    KeyStatus, MemoryStore, PostgresStore, RecordError, RedisClusterStore, RedisStore, Reservation,
    ReservationToken, StoreKey, StoreKeys, UniqueAdmin, UniqueStore,
};
use iamport_tower::{CertificationLayer, Certified, Secret, require_certified};
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceExt as _;

const ADULT: &str = "imp_100000000001";
const SECRET: &str = "test-unique-key-secret-0123456789";

/// The store bound of tests that are not about time: generous, as a machine running the whole
/// suite on two cores can hold a first PostgreSQL connection for seconds.
const PATIENT: Duration = Duration::from_secs(15);

fn keys() -> StoreKeys {
    StoreKeys::new(&Secret::new(SECRET)).expect("a 32-byte secret")
}

// ---- the conformance suite ------------------------------------------------------------------

async fn reserve(store: &dyn UniqueAdmin, key: &StoreKey, lease: Duration) -> Reservation {
    store
        .reserve(key, ReservationToken::random(), lease)
        .await
        .expect("store answers")
}

/// Reserves `key` with a fresh token, which it returns; panics if the key is taken.
async fn reserved(store: &dyn UniqueAdmin, key: &StoreKey, lease: Duration) -> ReservationToken {
    let token = ReservationToken::random();
    let outcome = store
        .reserve(key, token, lease)
        .await
        .expect("store answers");
    assert_eq!(outcome, Reservation::Reserved, "{key:?} should be free");
    token
}

async fn status(store: &dyn UniqueAdmin, key: &StoreKey) -> KeyStatus {
    store.status(key).await.expect("store answers")
}

async fn conformance(store: Arc<dyn UniqueAdmin>) {
    let keys = StoreKeys::new(&Secret::new(unique_name("conformance-secret-of-32-bytes"))).unwrap();
    let long = Duration::from_secs(30);
    let store = &*store;

    // Reserve twice → taken, even with the holder's own token.
    let a = keys.key_for("CI-A");
    assert_eq!(status(store, &a).await, KeyStatus::Free);
    assert!(!store.is_taken(&a).await.unwrap());
    let t = reserved(store, &a, long).await;
    assert_eq!(status(store, &a).await, KeyStatus::Reserved);
    assert!(store.is_taken(&a).await.unwrap());
    assert_eq!(reserve(store, &a, long).await, Reservation::Taken);
    assert_eq!(
        store.reserve(&a, t, long).await.unwrap(),
        Reservation::Taken
    );

    // A wrong token changes nothing.
    let wrong = ReservationToken::random();
    assert!(!store.release(&a, wrong).await.unwrap());
    assert!(!store.commit(&a, wrong).await.unwrap());
    assert_eq!(reserve(store, &a, long).await, Reservation::Taken);

    // Release → reservable again; the old token is dead.
    assert!(store.release(&a, t).await.unwrap());
    assert_eq!(status(store, &a).await, KeyStatus::Free);
    let t2 = reserved(store, &a, long).await;
    assert!(!store.commit(&a, t).await.unwrap());

    // Commit → taken forever: neither the lease nor a release frees it; committing again
    // with the same token says it holds (an attempt that timed out on our side but landed),
    // with another token that it does not.
    assert!(store.commit(&a, t2).await.unwrap());
    assert_eq!(status(store, &a).await, KeyStatus::Committed);
    assert!(!store.release(&a, t2).await.unwrap());
    assert!(
        store.commit(&a, t2).await.unwrap(),
        "idempotent for its token"
    );
    assert!(!store.commit(&a, t).await.unwrap());
    assert_eq!(
        reserve(store, &a, Duration::from_millis(1)).await,
        Reservation::Taken
    );

    // Lease expiry → reservable; the expired holder can neither commit nor release.
    let b = keys.key_for("CI-B");
    let expired = reserved(store, &b, Duration::from_millis(300)).await;
    assert_eq!(reserve(store, &b, long).await, Reservation::Taken);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(status(store, &b).await, KeyStatus::Free);
    let fresh = reserved(store, &b, long).await;
    assert!(!store.commit(&b, expired).await.unwrap());
    assert!(!store.release(&b, expired).await.unwrap());
    assert!(store.commit(&b, fresh).await.unwrap());

    // 200 concurrent reservations of one key → exactly one.
    let d = keys.key_for("CI-D");
    let attempts = (0..200).map(|_| reserve(store, &d, long));
    let results = futures_util::future::join_all(attempts).await;
    let winners = results
        .iter()
        .filter(|r| **r == Reservation::Reserved)
        .count();
    assert_eq!(winners, 1);

    // Register: a person who already has an account is taken; registering twice says so;
    // registering over a signup in progress wins over it (its holder cannot commit).
    let e = keys.key_for("CI-E");
    assert_eq!(store.register(std::slice::from_ref(&e)).await.unwrap(), 1);
    assert_eq!(status(store, &e).await, KeyStatus::Committed);
    assert_eq!(reserve(store, &e, long).await, Reservation::Taken);
    assert_eq!(store.register(std::slice::from_ref(&e)).await.unwrap(), 0);
    let f = keys.key_for("CI-F");
    let in_flight = reserved(store, &f, long).await;
    assert_eq!(store.register(std::slice::from_ref(&f)).await.unwrap(), 1);
    assert!(!store.commit(&f, in_flight).await.unwrap());
    assert!(!store.release(&f, in_flight).await.unwrap());
    assert_eq!(status(store, &f).await, KeyStatus::Committed);

    // Forget: a deleted account frees the person at once; forgetting a free key says so.
    assert_eq!(
        store.forget(std::slice::from_ref(&e), None).await.unwrap(),
        1
    );
    assert_eq!(status(store, &e).await, KeyStatus::Free);
    assert_eq!(
        store.forget(std::slice::from_ref(&e), None).await.unwrap(),
        0
    );
    let again = reserved(store, &e, long).await;
    assert!(store.commit(&e, again).await.unwrap());
    // Forgetting a signup in progress removes it: its holder cannot commit.
    let g = keys.key_for("CI-G");
    let doomed = reserved(store, &g, long).await;
    assert_eq!(
        store.forget(std::slice::from_ref(&g), None).await.unwrap(),
        1
    );
    assert!(!store.commit(&g, doomed).await.unwrap());
    assert_eq!(status(store, &g).await, KeyStatus::Free);

    // Forget with a cooldown: taken until the date, then free by itself.
    let until = SystemTime::now() + Duration::from_millis(800);
    assert_eq!(
        store
            .forget(std::slice::from_ref(&e), Some(until))
            .await
            .unwrap(),
        1
    );
    match status(store, &e).await {
        KeyStatus::CoolingDown { until: reported } => {
            let drift = reported
                .duration_since(until)
                .unwrap_or_else(|e| e.duration());
            assert!(drift < Duration::from_secs(1), "cooldown end {drift:?} off");
        }
        other => panic!("expected a cooldown, got {other:?}"),
    }
    assert_eq!(reserve(store, &e, long).await, Reservation::Taken);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status(store, &e).await, KeyStatus::Free);
    let after = reserved(store, &e, long).await;
    assert!(store.commit(&e, after).await.unwrap());
    // A cooldown that already ended frees at once; a cooldown over a free key takes it.
    let past = SystemTime::now() - Duration::from_secs(60);
    assert_eq!(
        store
            .forget(std::slice::from_ref(&e), Some(past))
            .await
            .unwrap(),
        1
    );
    assert_eq!(status(store, &e).await, KeyStatus::Free);
    let h = keys.key_for("CI-H");
    let later = SystemTime::now() + Duration::from_secs(600);
    assert_eq!(
        store
            .forget(std::slice::from_ref(&h), Some(later))
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        status(store, &h).await,
        KeyStatus::CoolingDown { .. }
    ));
    assert_eq!(
        store.register(std::slice::from_ref(&h)).await.unwrap(),
        1,
        "an import overrides a cooldown"
    );
    assert_eq!(status(store, &h).await, KeyStatus::Committed);

    // Scopes: the same person is a different key in another scope of the same store.
    let signup = keys.key_in(Some("signup"), "CI-A");
    let vote = keys.key_in(Some("vote"), "CI-A");
    assert_eq!(status(store, &signup).await, KeyStatus::Free);
    let s = reserved(store, &signup, long).await;
    assert!(store.commit(&signup, s).await.unwrap());
    assert_eq!(status(store, &signup).await, KeyStatus::Committed);
    assert_eq!(reserve(store, &vote, long).await, Reservation::Reserved);
    assert_eq!(status(store, &a).await, KeyStatus::Committed);

    // Batches: duplicates count once; what was already committed is not new.
    let many: Vec<StoreKey> = (0..1000)
        .map(|i| keys.key_for(&format!("CI-BATCH-{i}")))
        .collect();
    let mut with_duplicates = many.clone();
    with_duplicates.extend_from_slice(&many[..10]);
    with_duplicates.push(a.clone());
    assert_eq!(store.register(&with_duplicates).await.unwrap(), 1000);
    assert_eq!(store.register(&many[..100]).await.unwrap(), 0);
    assert_eq!(status(store, &many[999]).await, KeyStatus::Committed);
    assert_eq!(store.forget(&many[..500], None).await.unwrap(), 500);
    assert_eq!(status(store, &many[0]).await, KeyStatus::Free);
    assert_eq!(status(store, &many[500]).await, KeyStatus::Committed);
    let later = SystemTime::now() + Duration::from_secs(600);
    assert_eq!(store.forget(&many[400..], Some(later)).await.unwrap(), 500);
    assert!(matches!(
        status(store, &many[999]).await,
        KeyStatus::CoolingDown { .. }
    ));
    assert_eq!(reserve(store, &many[450], long).await, Reservation::Taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conformance() {
    conformance(Arc::new(MemoryStore::new())).await;
}

/// A PostgreSQL store in tables of its own on a pool of the test's own (the app's, in an
/// app): the store, the pool, and the tables to drop.
async fn postgres(url: &str, prefix: &str) -> (PostgresStore, PgPool, Tables) {
    // A few connections per test: the suite runs many at once on one server.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy(url)
        .expect("DATABASE_URL");
    let tables = Tables(pool.clone(), unique_name(prefix));
    let store = PostgresStore::new(pool.clone())
        .table(&tables.1)
        .unwrap()
        .accounts_table(&tables.accounts())
        .unwrap()
        .timeout(PATIENT);
    store.migrate().await.expect("PostgreSQL answers");
    (store, pool, tables)
}

/// A test's PostgreSQL tables: the reservations' name; `_accounts`, `_users` beside it.
struct Tables(PgPool, String);

impl Tables {
    fn accounts(&self) -> String {
        format!("{}_accounts", self.1)
    }

    fn users(&self) -> String {
        format!("{}_users", self.1)
    }

    async fn drop(self) {
        let drop = format!(
            "DROP TABLE IF EXISTS \"{0}\", \"{0}_accounts\", \"{0}_users\"",
            self.1
        );
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&self.0)
            .await;
    }
}

async fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conformance() {
    let Some(url) = database_url("postgres_store_conformance") else {
        return;
    };
    let (store, _, tables) = postgres(&url, "iamport_conformance").await;
    conformance(Arc::new(store)).await;
    tables.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conformance() {
    let Some(url) = redis_url("redis_store_conformance") else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-conformance"));
    conformance(Arc::new(
        RedisStore::new(&url).unwrap().prefix(prefix.clone()),
    ))
    .await;
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_conformance() {
    let Some(urls) = redis_cluster_urls("redis_cluster_store_conformance") else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-conformance"));
    let store = RedisClusterStore::new(urls.iter().map(String::as_str))
        .unwrap()
        .prefix(prefix.clone());
    conformance(Arc::new(store)).await;
    // The batch keys spread over every master: the hash tag is the person, not the prefix.
    let mut masters_used = 0;
    for url in &urls {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        masters_used += usize::from(!keys.is_empty());
        for key in keys {
            let _: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }
    assert_eq!(masters_used, urls.len(), "keys should live on every master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_follows_libpq_sslmode() {
    let Some(url) = database_url("postgres_tls_follows_libpq_sslmode") else {
        return;
    };
    let plain = PgPool::connect(&url).await.unwrap();
    let ssl_on: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&plain)
        .await
        .unwrap();
    if ssl_on != "on" {
        notice(
            "SKIPPED postgres_tls_follows_libpq_sslmode: the server has ssl = off — run: \
             psql -h 127.0.0.1 -U postgres -c \"ALTER SYSTEM SET ssl_cert_file = \
             '/etc/ssl/certs/ssl-cert-snakeoil.pem'\" -c \"ALTER SYSTEM SET ssl_key_file = \
             '/etc/ssl/private/ssl-cert-snakeoil.key'\" -c \"ALTER SYSTEM SET ssl = on\" \
             -c \"SELECT pg_reload_conf()\" (Debian's snakeoil certificate: apt-get install \
             ssl-cert; the key must be readable by the postgres user)",
        );
        return;
    }
    let table = unique_name("iamport_tls");
    let sep = if url.contains('?') { '&' } else { '?' };
    // (sslmode + root, host, connects?)
    let root = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let mut cases = vec![("sslmode=require".to_owned(), None, true)];
    if std::path::Path::new(root).exists() {
        cases.extend([
            (format!("sslmode=verify-ca&sslrootcert={root}"), None, true),
            (
                format!("sslmode=verify-full&sslrootcert={root}"),
                Some("localhost"),
                true,
            ),
            // The snakeoil certificate names `localhost`, not 127.0.0.1.
            (
                format!("sslmode=verify-full&sslrootcert={root}"),
                Some("127.0.0.1"),
                false,
            ),
        ]);
    }
    // The Mozilla roots do not vouch for a self-signed certificate.
    cases.push(("sslmode=verify-ca".to_owned(), None, false));
    for (i, (params, host, connects)) in cases.into_iter().enumerate() {
        let app = format!("iamport_tls_{}_{i}", std::process::id());
        let mut target = format!("{url}{sep}{params}&application_name={app}");
        if let Some(host) = host {
            let port = address_of(&url).port();
            target = target.replacen(&address_of(&url).to_string(), &format!("{host}:{port}"), 1);
        }
        let store = PostgresStore::connect_lazy(&target)
            .unwrap()
            .table(&table)
            .unwrap()
            .accounts_table(&format!("{table}_accounts"))
            .unwrap();
        let key = StoreKeys::random().key_for("CI-TLS");
        let result = store.status(&key).await;
        assert_eq!(
            result.is_ok(),
            connects,
            "{params} via {host:?}: {result:?}"
        );
        if connects {
            let encrypted: Option<bool> = sqlx::query_scalar(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
            )
            .bind(&app)
            .fetch_one(&plain)
            .await
            .unwrap();
            assert_eq!(
                encrypted,
                Some(true),
                "{params}: the store's connection is encrypted"
            );
        }
    }
    Tables(plain, table).drop().await;
}

// ---- end to end -------------------------------------------------------------------------------

/// Accounts created, across every app instance of a test.
#[derive(Clone, Default)]
struct Accounts {
    created: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    slow_first: Arc<AtomicUsize>,
    /// Signalled when a handler starts (the test freezes a store then).
    started: Arc<tokio::sync::Notify>,
    /// Handlers wait for this once `hold_first` is set.
    hold_first: Arc<AtomicUsize>,
    go: Arc<tokio::sync::Notify>,
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(State(accounts): State<Accounts>) -> (StatusCode, String) {
    accounts.started.notify_one();
    if take_one(&accounts.hold_first) {
        accounts.go.notified().await;
    }
    if take_one(&accounts.fail_first) {
        // The database insert failed: nothing was created.
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again".into());
    }
    if take_one(&accounts.slow_first) {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    // Hold the reservation a moment, as a real insert would.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let n = accounts.created.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, format!("account {n}"))
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn panicking_signup(State(accounts): State<Accounts>) -> StatusCode {
    if take_one(&accounts.fail_first) {
        panic!("handler bug");
    }
    accounts.created.fetch_add(1, Ordering::SeqCst);
    StatusCode::CREATED
}

fn app(layer: CertificationLayer, accounts: Accounts) -> Router {
    Router::new()
        .route("/certifications", post(signup))
        .route("/panicking", post(panicking_signup))
        .with_state(accounts)
        .layer(layer)
}

/// Two app instances (own client, own layer, own store handle) sharing one backing store.
async fn two_instances_one_person(
    make_store: impl Fn() -> Box<dyn FnOnce(CertificationLayer) -> CertificationLayer>,
) {
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    let a = serve_axum(app(
        make_store()(CertificationLayer::new(emulator.client())),
        accounts.clone(),
    ))
    .await;
    let b = serve_axum(app(
        make_store()(CertificationLayer::new(emulator.client())),
        accounts.clone(),
    ))
    .await;
    let http = iamport_e2e::http();
    let signups = (0..200).map(|i| {
        let url = format!(
            "{}/certifications",
            if i % 2 == 0 { &a.url } else { &b.url }
        );
        let http = http.clone();
        async move {
            http.post(url)
                .json(&json!({"imp_uid": ADULT}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(signups).await;
    let created = statuses.iter().filter(|s| **s == 201).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, conflicts), (1, 199), "{statuses:?}");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1);
    // Committed before the 201 left: later attempts, on either instance, are refused.
    for url in [&a.url, &b.url] {
        let status = http
            .post(format!("{url}/certifications"))
            .json(&json!({"imp_uid": ADULT}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 409);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_through_two_instances_sharing_postgres() {
    let Some(url) = database_url("concurrent_signups_through_two_instances_sharing_postgres")
    else {
        return;
    };
    let (store, _, tables) = postgres(&url, "iamport_e2e").await;
    two_instances_one_person(move || {
        let store = store.clone();
        Box::new(move |layer: CertificationLayer| {
            layer.unique_store(store, keys()).unique_timeout(PATIENT)
        })
    })
    .await;
    tables.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_through_two_instances_sharing_redis() {
    let Some(url) = redis_url("concurrent_signups_through_two_instances_sharing_redis") else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-e2e"));
    let (u, p) = (url.clone(), prefix.clone());
    two_instances_one_person(move || {
        let store = RedisStore::new(&u).unwrap().prefix(p.clone());
        Box::new(move |layer: CertificationLayer| layer.unique_store(store, keys()))
    })
    .await;
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_through_two_instances_sharing_a_redis_cluster() {
    let Some(urls) =
        redis_cluster_urls("concurrent_signups_through_two_instances_sharing_a_redis_cluster")
    else {
        return;
    };
    let prefix = format!("{}:", unique_name("iamport-e2e"));
    let (u, p) = (urls.clone(), prefix.clone());
    two_instances_one_person(move || {
        let store = RedisClusterStore::new(u.iter().map(String::as_str))
            .unwrap()
            .prefix(p.clone());
        Box::new(move |layer: CertificationLayer| layer.unique_store(store, keys()))
    })
    .await;
    for url in &urls {
        delete_prefix(url, &prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_on_the_default_memory_store() {
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    let server = serve_axum(app(
        CertificationLayer::new(emulator.client()),
        accounts.clone(),
    ))
    .await;
    let http = iamport_e2e::http();
    let statuses =
        futures_util::future::join_all((0..100).map(|_| post_signup(&http, &server.url))).await;
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(created, 1, "{statuses:?}");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1);
}

/// Posts a signup for `ADULT` and returns the status; a 5xx's problem body goes to stderr, so
/// a failing test shows which refusal it was.
async fn post_signup(http: &reqwest::Client, url: &str) -> u16 {
    let response = http
        .post(format!("{url}/certifications"))
        .json(&json!({"imp_uid": ADULT}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status >= 500 {
        eprintln!("{status}: {}", response.text().await.unwrap_or_default());
    }
    status
}

#[tokio::test]
async fn a_failed_handler_releases_the_person_for_a_retry() {
    let emulator = Emulator::start().await.unwrap();
    let mut layers = vec![("memory", CertificationLayer::new(emulator.client()), None)];
    let db = database_url("a_failed_handler_releases_the_person_for_a_retry (PostgreSQL part)");
    if let Some(url) = &db {
        let (store, _, tables) = postgres(url, "iamport_retry").await;
        layers.push((
            "postgres",
            CertificationLayer::new(emulator.client())
                .unique_store(store, keys())
                .unique_timeout(PATIENT),
            Some(tables),
        ));
    }
    let http = iamport_e2e::http();
    for (name, layer, tables) in layers {
        let accounts = Accounts::default();
        accounts.fail_first.store(1, Ordering::SeqCst);
        let server = serve_axum(app(layer, accounts.clone())).await;
        assert_eq!(post_signup(&http, &server.url).await, 500, "{name}");
        assert_eq!(
            post_signup(&http, &server.url).await,
            201,
            "{name}: the retry succeeds"
        );
        assert_eq!(post_signup(&http, &server.url).await, 409, "{name}");
        assert_eq!(accounts.created.load(Ordering::SeqCst), 1, "{name}");
        if let Some(tables) = tables {
            tables.drop().await;
        }
    }
}

#[tokio::test]
async fn a_store_that_is_down_is_503_names_it_and_creates_nothing() {
    let (logs, _guard) = iamport_e2e::Captured::install();
    let emulator = Emulator::start().await.unwrap();
    let http = iamport_e2e::http();
    let down: Vec<(&str, CertificationLayer)> = vec![
        (
            "postgres",
            CertificationLayer::new(emulator.client()).unique_store(
                PostgresStore::connect_lazy("postgres://postgres@127.0.0.1:1/test").unwrap(),
                keys(),
            ),
        ),
        (
            "redis",
            CertificationLayer::new(emulator.client())
                .unique_store(RedisStore::new("redis://127.0.0.1:1").unwrap(), keys()),
        ),
    ];
    for (name, layer) in down {
        let accounts = Accounts::default();
        let server = serve_axum(app(layer, accounts.clone())).await;
        let response = http
            .post(format!("{}/certifications", server.url))
            .json(&json!({"imp_uid": ADULT}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["type"], "urn:iamport-tower:problem:store-unavailable",
            "{name}"
        );
        assert_eq!(
            accounts.created.load(Ordering::SeqCst),
            0,
            "{name}: the handler never ran"
        );
    }
    // The operator reads where and why: the PostgreSQL store names its address and cause.
    let text = logs.text();
    assert!(
        text.contains("PostgreSQL at 127.0.0.1:1/test"),
        "the warning names the database: {text}"
    );
}

fn signup_request(path: &str) -> http::Request<Body> {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(json!({"imp_uid": ADULT}).to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_releases_its_reservation() {
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    accounts.slow_first.store(1, Ordering::SeqCst);
    let layer = CertificationLayer::new(emulator.client());
    let tasks = layer.unique_tasks();
    let service = app(layer, accounts.clone());
    // The client gives up while the handler is still working: the future is dropped.
    let first = tokio::time::timeout(
        Duration::from_millis(500),
        service.clone().oneshot(signup_request("/certifications")),
    )
    .await;
    assert!(first.is_err(), "the first request was cut off");
    // The release runs in the background, counted by the layer.
    tokio::time::timeout(Duration::from_secs(10), tasks.settled())
        .await
        .expect("the background release ends");
    let second = service
        .clone()
        .oneshot(signup_request("/certifications"))
        .await
        .unwrap();
    assert_eq!(second.status(), 201);
    let third = service
        .oneshot(signup_request("/certifications"))
        .await
        .unwrap();
    assert_eq!(third.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_releases_its_reservation() {
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    accounts.fail_first.store(1, Ordering::SeqCst);
    let layer = CertificationLayer::new(emulator.client());
    let settled = layer.settled();
    let service = app(layer, accounts.clone());
    let crashed = tokio::spawn(service.clone().oneshot(signup_request("/panicking"))).await;
    assert!(crashed.unwrap_err().is_panic());
    tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .expect("the background release ends");
    let retry = service
        .clone()
        .oneshot(signup_request("/panicking"))
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(
        service
            .oneshot(signup_request("/panicking"))
            .await
            .unwrap()
            .status(),
        409
    );
}

#[require_certified(min_age = 19, unique = true)]
async fn hyper_signup(
    req: http::Request<Body>,
) -> Result<http::Response<Body>, std::convert::Infallible> {
    let _ = req;
    Ok(http::Response::builder()
        .status(201)
        .body(Body::empty())
        .unwrap())
}

#[tokio::test]
async fn request_style_handlers_reserve_and_commit_too() {
    let emulator = Emulator::start().await.unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(CertificationLayer::new(emulator.client()))
        .service_fn(hyper_signup);
    let first = service.clone().oneshot(signup_request("/")).await.unwrap();
    assert_eq!(first.status(), 201);
    let second = service.oneshot(signup_request("/")).await.unwrap();
    assert_eq!(second.status(), 409);
}

// ---- the account and its person in one transaction (PostgreSQL) -------------------------------

/// The app: a users table on the app's pool, and a handler that creates the user and records
/// the person's key in the same transaction — what the `unique` module documents.
#[derive(Clone)]
struct Users {
    pool: PgPool,
    table: String,
    /// Handlers that ran.
    ran: Arc<AtomicUsize>,
    /// Commits the transaction, then answers 500 (an ambiguous failure: the account exists).
    fail_after_commit: Arc<AtomicUsize>,
    /// Commits the transaction, then waits forever (a process that dies after it).
    hang_after_commit: Arc<AtomicUsize>,
    /// Creates the user without `record_account` (the layer then commits before the 2xx).
    skip_record: Arc<AtomicUsize>,
    committed: Arc<tokio::sync::Notify>,
}

impl Users {
    async fn new(pool: PgPool, table: String) -> Self {
        let create = format!("CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, name TEXT)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await
            .unwrap();
        Self {
            pool,
            table,
            ran: Arc::default(),
            fail_after_commit: Arc::default(),
            hang_after_commit: Arc::default(),
            skip_record: Arc::default(),
            committed: Arc::default(),
        }
    }

    async fn count(&self) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\"",
            self.table
        )))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup_in_a_transaction(State(users): State<Users>, person: Certified) -> Response {
    users.ran.fetch_add(1, Ordering::SeqCst);
    let mut tx = users.pool.begin().await.unwrap();
    let insert = format!("INSERT INTO \"{}\" (name) VALUES ($1)", users.table);
    sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(person.name.as_deref().map(|_| "masked"))
        .execute(&mut *tx)
        .await
        .unwrap();
    if !take_one(&users.skip_record)
        && let Err(error) = person.record_account(&mut tx).await
    {
        return error.into_response();
    }
    tx.commit().await.unwrap();
    users.committed.notify_one();
    if take_one(&users.hang_after_commit) {
        std::future::pending::<()>().await;
    }
    if take_one(&users.fail_after_commit) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    StatusCode::CREATED.into_response()
}

/// A layer on `store` (one app replica), the users table, and the emulator.
async fn users_app(
    store: PostgresStore,
    pool: &PgPool,
    tables: &Tables,
    lease: Duration,
) -> (CertificationLayer, Users, Emulator) {
    let emulator = Emulator::start().await.unwrap();
    let users = Users::new(pool.clone(), tables.users()).await;
    (replica(store, &emulator, lease), users, emulator)
}

/// One app replica's layer on `store`.
fn replica(store: PostgresStore, emulator: &Emulator, lease: Duration) -> CertificationLayer {
    CertificationLayer::new(emulator.client())
        .unique_store(store, keys())
        .unique_lease(lease)
        .unique_timeout(PATIENT)
}

fn users_router(layer: CertificationLayer, users: Users) -> Router {
    Router::new()
        .route("/certifications", post(signup_in_a_transaction))
        .with_state(users)
        .layer(layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_and_its_person_are_one_transaction() {
    let Some(url) = database_url("the_account_and_its_person_are_one_transaction") else {
        return;
    };
    let (store, pool, tables) = postgres(&url, "iamport_tx").await;
    let (layer, users, emulator) =
        users_app(store.clone(), &pool, &tables, Duration::from_secs(60)).await;
    let counters = layer.clone();
    let server = serve_axum(users_router(layer, users.clone())).await;
    let http = iamport_e2e::http();
    assert_eq!(post_signup(&http, &server.url).await, 201);
    // The person's key is in the accounts table, written with the user; the reservation is
    // released, not committed: the account is the one fact.
    let key = adult_key(&emulator).await;
    let in_accounts: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\" WHERE key = $1",
        tables.accounts()
    )))
    .bind(key.as_bytes().as_slice())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(in_accounts, 1);
    let mut reservations = 1;
    for _ in 0..100 {
        reservations = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\"",
            tables.1
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        if reservations == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reservations, 0,
        "the reservation was released alongside the 201"
    );
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Committed);
    // The next signup is refused at admission: the handler does not run again.
    assert_eq!(post_signup(&http, &server.url).await, 409);
    assert_eq!(users.ran.load(Ordering::SeqCst), 1);
    assert_eq!(users.count().await, 1);
    assert_eq!(counters.unique_counters().commits_failed, 0);
    tables.drop().await;
}

/// The process dies after the handler's transaction committed and before anything after it
/// (here: the handler never returns, and its reservation is gone — released when the
/// request is dropped, as after a crash its lease would end). The account's row holds the
/// person: a retry, on this replica or another, is 409, before and after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_accounts_transaction_cannot_give_a_second_account() {
    let Some(url) =
        database_url("a_kill_after_the_accounts_transaction_cannot_give_a_second_account")
    else {
        return;
    };
    let (store, pool, tables) = postgres(&url, "iamport_kill").await;
    // A short lease, as if the dead process's reservation had run out.
    let (layer, users, emulator) =
        users_app(store.clone(), &pool, &tables, Duration::from_millis(300)).await;
    users.hang_after_commit.store(1, Ordering::SeqCst);
    let first = serve_axum(users_router(layer.clone(), users.clone())).await;
    let committed = users.committed.notified();
    let http = iamport_e2e::http();
    let dying = tokio::spawn({
        let (http, url) = (http.clone(), first.url.clone());
        async move { post_signup(&http, &url).await }
    });
    committed.await;
    // Past the lease, with the first request still "dead" in its handler: another replica.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let other = replica(store.clone(), &emulator, Duration::from_secs(60));
    let second = serve_axum(users_router(other, users.clone())).await;
    assert_eq!(
        post_signup(&http, &second.url).await,
        409,
        "after the lease"
    );
    dying.abort();
    drop(first);
    assert_eq!(
        post_signup(&http, &second.url).await,
        409,
        "after the release"
    );
    assert_eq!(
        users.ran.load(Ordering::SeqCst),
        1,
        "refused before the handler"
    );
    assert_eq!(users.count().await, 1);
    tables.drop().await;
}

/// The handler's transaction committed, but it answered 500 (as after a timeout of its own):
/// the reservation is released — and the person, who does have an account, is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_failure_after_the_transaction_keeps_one_account() {
    let Some(url) = database_url("an_ambiguous_failure_after_the_transaction_keeps_one_account")
    else {
        return;
    };
    let (store, pool, tables) = postgres(&url, "iamport_ambiguous").await;
    let (layer, users, _emulator) = users_app(store, &pool, &tables, Duration::from_secs(60)).await;
    users.fail_after_commit.store(1, Ordering::SeqCst);
    let server = serve_axum(users_router(layer, users.clone())).await;
    let http = iamport_e2e::http();
    assert_eq!(post_signup(&http, &server.url).await, 500);
    assert_eq!(post_signup(&http, &server.url).await, 409);
    assert_eq!(users.count().await, 1);
    tables.drop().await;
}

/// A handler that never calls `record_account` is still safe: the layer commits the
/// reservation before the 201 leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_does_not_record_the_account_is_committed_before_the_2xx() {
    let Some(url) =
        database_url("a_handler_that_does_not_record_the_account_is_committed_before_the_2xx")
    else {
        return;
    };
    let (store, pool, tables) = postgres(&url, "iamport_norecord").await;
    let (layer, users, emulator) =
        users_app(store.clone(), &pool, &tables, Duration::from_secs(60)).await;
    users.skip_record.store(1, Ordering::SeqCst);
    let server = serve_axum(users_router(layer, users.clone())).await;
    let http = iamport_e2e::http();
    assert_eq!(post_signup(&http, &server.url).await, 201);
    // At the moment the 201 arrived the key was already committed (nothing runs after it).
    let key = adult_key(&emulator).await;
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Committed);
    assert_eq!(post_signup(&http, &server.url).await, 409);
    tables.drop().await;
}

/// An account recorded directly in the accounts table (an import by the `iamport-unique`
/// command, or another replica's transaction) is refused at admission by the reservation's
/// own statement, and `record_account` itself refuses a person already there (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accounts_table_is_checked_at_admission_and_by_its_primary_key() {
    let Some(url) =
        database_url("the_accounts_table_is_checked_at_admission_and_by_its_primary_key")
    else {
        return;
    };
    let (store, pool, tables) = postgres(&url, "iamport_pk").await;
    let (layer, users, emulator) =
        users_app(store.clone(), &pool, &tables, Duration::from_secs(60)).await;
    let key = adult_key(&emulator).await;
    let server = serve_axum(users_router(layer, users.clone())).await;
    let http = iamport_e2e::http();
    // The person's key goes into the accounts table in a transaction still open, as another
    // replica's signup would put it there.
    let insert = format!("INSERT INTO \"{}\" (key) VALUES ($1)", tables.accounts());
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
        .bind(key.as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .unwrap();
    // The signup is admitted (the row is not committed yet) and its record_account waits on
    // the row's lock; once the other transaction commits, the primary key refuses it: 409.
    let signup = tokio::spawn({
        let (http, url) = (http.clone(), server.url.clone());
        async move { post_signup(&http, &url).await }
    });
    while users.ran.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.commit().await.unwrap();
    assert_eq!(
        signup.await.unwrap(),
        409,
        "record_account refused the person"
    );
    assert_eq!(users.count().await, 0, "the user's row rolled back with it");
    // From now on admission itself refuses: the handler does not run again.
    assert_eq!(post_signup(&http, &server.url).await, 409);
    assert_eq!(users.ran.load(Ordering::SeqCst), 1);
    // `record_account` outside a unique admission is a programming error, said plainly.
    assert!(
        RecordError::NotReserved
            .to_string()
            .contains("unique = true"),
        "{}",
        RecordError::NotReserved
    );
    tables.drop().await;
}

// ---- faults -----------------------------------------------------------------------------------

/// The store key of the emulator's adult test person under `SECRET`.
async fn adult_key(emulator: &Emulator) -> StoreKey {
    let cert = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    keys().key_for(cert.ci.as_deref().unwrap())
}

/// Waits (at most `limit`) until `done` holds, checking every 20 ms.
async fn eventually(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(limit, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not within {limit:?}: {what}"));
}

/// Warm: a pooled connection, the tables and the prepared statements or scripts exist before
/// a stall, so a stalled call is sent whole and can land later.
async fn warm_up(store: &dyn UniqueAdmin) {
    let other = StoreKeys::random().key_for("CI-WARM-UP");
    let token = ReservationToken::random();
    assert_eq!(
        store
            .reserve(&other, token, Duration::from_secs(5))
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert!(store.commit(&other, token).await.unwrap());
    assert_eq!(store.status(&other).await.unwrap(), KeyStatus::Committed);
    let again = ReservationToken::random();
    let third = StoreKeys::random().key_for("CI-WARM-UP-2");
    store
        .reserve(&third, again, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(store.release(&third, again).await.unwrap());
}

/// A stalled store (a proxy that stops forwarding, sockets open) for `stall`: signups are
/// 503 within the bound and the handler never runs; the reservations the stalled calls make
/// once the store answers again are released by their tokens within a few seconds of it —
/// however long the stall was — and the person can then sign up.
async fn stalled_store_is_503_and_leaves_nothing(
    name: &str,
    proxies: &[&FreezableProxy],
    store: Arc<dyn UniqueAdmin>,
    stall: Duration,
    lands_late: bool,
) {
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    let bound = Duration::from_millis(800);
    let accounts = Accounts::default();
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store.clone(), keys())
        .unique_timeout(bound);
    let counters = layer.clone();
    let server = serve_axum(app(layer, accounts.clone())).await;
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Free, "{name}");
    warm_up(&*store).await;

    // 30 signups of the person during the stall (more than the PostgreSQL pool's
    // connections): every one is answered 503, none hangs, the handler never runs.
    proxies.iter().for_each(|p| p.freeze());
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let statuses = futures_util::future::join_all((0..30).map(|_| {
        http.post(format!("{}/certifications", server.url))
            .json(&json!({"imp_uid": ADULT}))
            .send()
    }))
    .await;
    let elapsed = started.elapsed();
    let statuses: Vec<u16> = statuses
        .into_iter()
        .map(|r| r.expect("an answer, not a hang").status().as_u16())
        .collect();
    notice(&format!(
        "{name}: 30 signups on a stalled store answered {:?} in {elapsed:?} (bound {bound:?})",
        statuses.iter().collect::<std::collections::BTreeSet<_>>()
    ));
    assert!(statuses.iter().all(|s| *s == 503), "{name}: {statuses:?}");
    let held: usize = proxies.iter().map(|p| p.bytes_held()).sum();
    assert!(held > 0, "{name}: the stall held real traffic");
    assert_eq!(
        accounts.created.load(Ordering::SeqCst),
        0,
        "{name}: nothing admitted"
    );

    tokio::time::sleep(stall.saturating_sub(started.elapsed())).await;
    proxies.iter().for_each(|p| p.thaw());
    let thawed = std::time::Instant::now();
    // The stalled `reserve`s land now, with a fresh lease; the layer releases them by their
    // tokens within about a second and a store timeout — not when the lease ends.
    let mut seen = Vec::new();
    eventually(Duration::from_secs(5), "the person is free", async || {
        let now = store.status(&key).await.ok();
        seen.push(now);
        now == Some(KeyStatus::Free)
    })
    .await;
    notice(&format!(
        "{name}: after a {stall:?} stall the person was free {:?} after the store answered \
         again ({:?}; seen {:?})",
        thawed.elapsed(),
        counters.unique_counters(),
        {
            seen.dedup();
            seen
        },
    ));
    // Whether the stalled reservation was released by a retry sent after the store came back
    // (counted) or by one sent during the stall and delivered behind it (not counted: its
    // caller had given up) depends on which connection each went on; both free the person.
    let _ = lands_late;
    assert_eq!(
        post_signup(&http, &server.url).await,
        201,
        "{name}: signs up after the stall"
    );
    assert_eq!(post_signup(&http, &server.url).await, 409, "{name}");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1, "{name}");
}

/// PostgreSQL reached through a freezable proxy, in tables of their own.
async fn postgres_behind_a_proxy(
    url: &str,
    prefix: &str,
) -> (FreezableProxy, Tables, PostgresStore) {
    let proxy = FreezableProxy::start(address_of(url)).await.expect("proxy");
    let (_, _, tables) = postgres(url, prefix).await;
    // Without a ping before each use (a common setting, and what a stall that begins after
    // a statement was sent looks like): the stalled statements are really on the wire.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_lazy(&with_address(url, proxy.addr))
        .unwrap();
    let store = PostgresStore::new(pool)
        .table(&tables.1)
        .unwrap()
        .accounts_table(&tables.accounts())
        .unwrap();
    (proxy, tables, store)
}

/// A Redis store whose connections go through a freezable proxy, under a fresh key prefix.
async fn redis_behind_a_proxy(url: &str, name: &str) -> (FreezableProxy, String, RedisStore) {
    let proxy = FreezableProxy::start(address_of(url)).await.expect("proxy");
    let prefix = format!("{}:", unique_name(name));
    let store = RedisStore::new(&with_address(url, proxy.addr))
        .unwrap()
        .prefix(prefix.clone());
    (proxy, prefix, store)
}

/// The 45 s stall: past every retry schedule the layer had, shorter than the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_45_second_postgres_stall_frees_the_person_when_it_answers_again() {
    let Some(url) =
        database_url("a_45_second_postgres_stall_frees_the_person_when_it_answers_again")
    else {
        return;
    };
    let (proxy, tables, store) = postgres_behind_a_proxy(&url, "iamport_stall").await;
    stalled_store_is_503_and_leaves_nothing(
        "postgres",
        &[&proxy],
        Arc::new(store),
        Duration::from_secs(45),
        true,
    )
    .await;
    tables.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_503_and_leaves_nothing_reserved() {
    let Some(url) = redis_url("a_stalled_redis_is_503_and_leaves_nothing_reserved") else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport-stall").await;
    stalled_store_is_503_and_leaves_nothing(
        "redis",
        &[&proxy],
        Arc::new(store),
        Duration::from_secs(3),
        false,
    )
    .await;
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_cluster_is_503_and_leaves_nothing_reserved() {
    let Some(urls) =
        redis_cluster_urls("a_stalled_redis_cluster_is_503_and_leaves_nothing_reserved")
    else {
        return;
    };
    // One proxy per master; the client reaches each node the cluster advertises through it.
    let mut proxies = Vec::new();
    let mut map = std::collections::HashMap::new();
    for url in &urls {
        let node = address_of(url);
        let proxy = FreezableProxy::start(node).await.expect("proxy");
        map.insert(
            redis::cluster::NodeAddress::new(node.ip().to_string(), node.port()),
            redis::cluster::NodeAddress::new(proxy.addr.ip().to_string(), proxy.addr.port()),
        );
        proxies.push(proxy);
    }
    let client = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
        .node_address_map(map)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let prefix = format!("{}:", unique_name("iamport-stall"));
    let store =
        RedisClusterStore::from_client(client, Duration::from_secs(2)).prefix(prefix.clone());
    let proxies: Vec<&FreezableProxy> = proxies.iter().collect();
    stalled_store_is_503_and_leaves_nothing(
        "redis cluster",
        &proxies,
        Arc::new(store),
        Duration::from_secs(3),
        false,
    )
    .await;
    for url in &urls {
        delete_prefix(url, &prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_postgres_on_a_cold_pool_is_503_then_recovers() {
    let Some(url) = database_url("a_stalled_postgres_on_a_cold_pool_is_503_then_recovers") else {
        return;
    };
    let (proxy, tables, store) = postgres_behind_a_proxy(&url, "iamport_cold").await;
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store, keys())
        .unique_timeout(Duration::from_millis(800));
    let server = serve_axum(app(layer, accounts.clone())).await;
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // No connection yet: the pool connects through the stalled proxy.
    proxy.freeze();
    let status = post_signup(&http, &server.url).await;
    assert_eq!(status, 503);
    assert!(proxy.bytes_held() > 0, "the connection's startup was held");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 0);
    proxy.thaw();
    eventually(
        Duration::from_secs(10),
        "a signup after the stall",
        async || post_signup(&http, &server.url).await == 201,
    )
    .await;
    assert_eq!(post_signup(&http, &server.url).await, 409);
    tables.drop().await;
}

/// The store stalls between the handler's success and the commit. The 2xx is not sent: after
/// its commit attempts the client gets a 503 (nothing a crash could undo was promised), the
/// reservation keeps the person out, and once the store answers the background retry lands
/// the commit — one account, later signups 409. With the stall outlasting every retry, the
/// commit is given up: an ERROR line and `commits_failed`, no personal data.
async fn a_commit_through_a_stall(
    name: &str,
    proxy: &FreezableProxy,
    store: Arc<dyn UniqueAdmin>,
    outlast_retries: bool,
) {
    let (logs, _guard) = iamport_e2e::Captured::install();
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    warm_up(&*store).await;
    let accounts = Accounts::default();
    accounts.hold_first.store(1, Ordering::SeqCst);
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store.clone(), keys())
        .unique_timeout(Duration::from_millis(300));
    let counters = layer.clone();
    let tasks = layer.unique_tasks();
    let server = serve_axum(app(layer, accounts.clone())).await;
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = accounts.started.notified();
    let signup = tokio::spawn({
        let (http, url) = (http.clone(), server.url.clone());
        async move {
            let response = http
                .post(format!("{url}/certifications"))
                .json(&json!({"imp_uid": ADULT}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    started.await;
    proxy.freeze();
    accounts.go.notify_one();
    let (status, body) = signup.await.unwrap();
    assert_eq!(
        accounts.created.load(Ordering::SeqCst),
        1,
        "{name}: the handler made it"
    );
    assert_eq!(
        status, 503,
        "{name}: a success that is not durable is not sent: {body}"
    );
    assert!(body.contains("store-unavailable"), "{name}: {body}");
    assert!(proxy.bytes_held() > 0, "{name}: the commit was stalled");
    let retries = counters.unique_counters().commit_retries;
    assert!(retries >= 2, "{name}: retried before answering ({retries})");
    if outlast_retries {
        tokio::time::timeout(Duration::from_secs(60), tasks.settled())
            .await
            .expect("the commit is given up");
        assert_eq!(counters.unique_counters().commits_failed, 1, "{name}");
        proxy.thaw();
        let text = logs.text();
        let given_up = text
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("gave up committing"))
            .unwrap_or_else(|| panic!("an ERROR line: {text}"));
        assert!(given_up.contains(&key.prefix()), "{given_up}");
        assert!(!text.contains(&key.to_hex()), "never the whole key");
        let cert = emulator
            .client()
            .certification(&ADULT.parse().unwrap())
            .await
            .unwrap();
        assert!(!text.contains(cert.ci.as_deref().unwrap()), "never the CI");
        assert!(
            !text.contains(cert.name.as_deref().unwrap()),
            "never the name"
        );
        // Kept (until the lease ends, or committed by an attempt that landed after the
        // thaw): nobody else gets the person meanwhile.
        assert!(store.is_taken(&key).await.unwrap(), "{name}");
        return;
    }
    proxy.thaw();
    tokio::time::timeout(Duration::from_secs(30), tasks.settled())
        .await
        .expect("the retry concludes");
    assert_eq!(
        store.status(&key).await.unwrap(),
        KeyStatus::Committed,
        "{name}: the commit holds"
    );
    assert_eq!(post_signup(&http, &server.url).await, 409, "{name}");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1, "{name}");
    let counted = counters.unique_counters();
    assert_eq!(counted.commits_recovered, 1, "{name}: {counted:?}");
    assert_eq!(counted.commits_failed, 0, "{name}: {counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_on_redis_is_a_503_then_holds_once_it_answers() {
    let Some(url) = redis_url("a_commit_stalled_on_redis_is_a_503_then_holds_once_it_answers")
    else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport-commit-stall").await;
    a_commit_through_a_stall("redis", &proxy, Arc::new(store), false).await;
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_on_postgres_is_a_503_then_holds_once_it_answers() {
    let Some(url) =
        database_url("a_commit_stalled_on_postgres_is_a_503_then_holds_once_it_answers")
    else {
        return;
    };
    let (proxy, tables, store) = postgres_behind_a_proxy(&url, "iamport_commit_stall").await;
    a_commit_through_a_stall("postgres", &proxy, Arc::new(store), false).await;
    tables.drop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_that_keeps_failing_is_an_error_log_and_a_counter_without_personal_data() {
    let Some(url) = redis_url(
        "a_commit_that_keeps_failing_is_an_error_log_and_a_counter_without_personal_data",
    ) else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport-commit-fails").await;
    a_commit_through_a_stall("redis", &proxy, Arc::new(store), true).await;
    delete_prefix(&url, &prefix).await;
}

#[require_certified(unique = true)]
async fn signup_keeping_the_key(cert: Certified) -> (StatusCode, String) {
    let key = cert.store_key().map(|k| k.to_hex()).unwrap_or_default();
    (StatusCode::CREATED, key)
}

#[require_certified(unique = "newsletter")]
async fn newsletter_keeping_the_key(cert: Certified) -> (StatusCode, String) {
    let key = cert.store_key().map(|k| k.to_hex()).unwrap_or_default();
    (StatusCode::CREATED, key)
}

/// A name longer than a chunk of the type-level spelling (eight characters) and than any
/// fixed buffer: no length limit.
#[require_certified(unique = "newsletter-for-members_of-the-club-2026")]
async fn long_scope_keeping_the_key(cert: Certified) -> (StatusCode, String) {
    let key = cert.store_key().map(|k| k.to_hex()).unwrap_or_default();
    (StatusCode::CREATED, key)
}

#[tokio::test]
async fn named_scopes_are_separate_keyspaces() {
    let emulator = Emulator::start().await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let app = Router::new()
        .route("/signup", post(signup_keeping_the_key))
        .route("/newsletter", post(newsletter_keeping_the_key))
        .route("/long", post(long_scope_keeping_the_key))
        .layer(CertificationLayer::new(emulator.client()).unique_store(store.clone(), keys()));
    let served = serve_axum(app).await;
    let http = iamport_e2e::http();
    let send = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", served.url);
        async move {
            let response = http
                .post(url)
                .json(&json!({"imp_uid": ADULT}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // The same person, once in each keyspace.
    let (status, default_key) = send("/signup").await;
    assert_eq!(status, 201);
    let (status, scoped_key) = send("/newsletter").await;
    assert_eq!(status, 201, "another scope admits the person again");
    let (status, long_key) = send("/long").await;
    assert_eq!(status, 201, "and a third");
    assert_eq!(send("/signup").await.0, 409);
    assert_eq!(send("/newsletter").await.0, 409);
    assert_eq!(send("/long").await.0, 409);
    // The keys are the documented derivations: HMAC(secret, CI) and
    // HMAC(secret, 0 || scope || 0 || CI).
    let cert = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    let ci = cert.ci.as_deref().unwrap();
    assert_eq!(default_key, keys().key_for(ci).to_hex());
    assert_eq!(scoped_key, keys().key_in(Some("newsletter"), ci).to_hex());
    assert_ne!(default_key, scoped_key);
    assert_eq!(
        long_key,
        keys()
            .key_in(Some("newsletter-for-members_of-the-club-2026"), ci)
            .to_hex()
    );
}

/// The app and `iamport-unique` read `UNIQUE_KEY_SECRET` by one function: a secret file's
/// trailing newline gives the same keys as the trimmed value, and every other way of making
/// keys refuses such a secret instead of keying people differently.
#[test]
fn one_secret_read_one_way() {
    let value = "0123456789abcdef0123456789abcdef";
    with_secret_in_a_child(&format!("{value}\n"), || {
        let from_env = StoreKeys::from_env().unwrap();
        let direct = StoreKeys::new(&Secret::new(value)).unwrap();
        assert_eq!(from_env.key_for("CI"), direct.key_for("CI"));
    });
    let padded = StoreKeys::new(&Secret::new(format!("{value}\n"))).unwrap_err();
    assert!(padded.to_string().contains("whitespace"), "{padded}");
    let short = StoreKeys::new(&Secret::new("short")).unwrap_err();
    assert!(short.to_string().contains("at least 32"), "{short}");
}

/// Runs `f` in a child process of this test binary with `UNIQUE_KEY_SECRET` set to `value`
/// (the environment of the test process itself is never changed).
fn with_secret_in_a_child(value: &str, f: impl FnOnce()) {
    const CHILD: &str = "IAMPORT_E2E_SECRET_CHILD";
    if std::env::var_os(CHILD).is_some() {
        f();
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "one_secret_read_one_way", "--nocapture"])
        .env(CHILD, "1")
        .env("UNIQUE_KEY_SECRET", value)
        .status()
        .unwrap();
    assert!(status.success(), "the child run failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purges_ended_leases_and_cooldowns_only() {
    let Some(url) = database_url("postgres_purges_ended_leases_and_cooldowns_only") else {
        return;
    };
    let (store, pool, tables) = postgres(&url, "iamport_purge").await;
    let keys = StoreKeys::random();
    let (ended, live, committed, cooled, cooling) = (
        keys.key_for("ended"),
        keys.key_for("live"),
        keys.key_for("committed"),
        keys.key_for("cooled"),
        keys.key_for("cooling"),
    );
    let short = Duration::from_millis(200);
    assert_eq!(
        store
            .reserve(&ended, ReservationToken::random(), short)
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert_eq!(
        store
            .reserve(&live, ReservationToken::random(), Duration::from_secs(60))
            .await
            .unwrap(),
        Reservation::Reserved
    );
    let token = ReservationToken::random();
    store
        .reserve(&committed, token, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.commit(&committed, token).await.unwrap());
    assert_eq!(
        store
            .forget(&[cooled], Some(SystemTime::now() + short))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .forget(
                std::slice::from_ref(&cooling),
                Some(SystemTime::now() + Duration::from_secs(600))
            )
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.purge_expired(Duration::ZERO).await.unwrap(), 2);
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\"",
        tables.1
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows, 3,
        "the live reservation, the committed key and the running cooldown stay"
    );
    assert_eq!(store.status(&live).await.unwrap(), KeyStatus::Reserved);
    assert_eq!(
        store.status(&committed).await.unwrap(),
        KeyStatus::Committed
    );
    assert!(matches!(
        store.status(&cooling).await.unwrap(),
        KeyStatus::CoolingDown { .. }
    ));
    tables.drop().await;
}
