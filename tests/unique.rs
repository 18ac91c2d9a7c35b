//! One account per person: the conformance suite every `UniqueStore` passes, and `unique =
//! true` end to end — concurrent signups through two app instances sharing PostgreSQL or
//! Redis, retries after a failed handler, a store that is down, dropped and panicking
//! requests. PostgreSQL and Redis tests need `DATABASE_URL` / `REDIS_URL` and print a skip
//! notice without them; each run uses its own table / key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use iamport_e2e::{
    FreezableProxy, address_of, database_url, notice, redis_cluster_urls, redis_url, serve_axum,
    unique_name, with_address,
};
use iamport_mock::Emulator;
use iamport_tower::body::Body;
use iamport_tower::unique::MemoryStore;
use iamport_tower::unique::{
    KeyStatus, PostgresStore, RedisClusterStore, RedisStore, Reservation, ReservationToken,
    StoreError, UniqueCommit, UniqueKey, UniqueKeys, UniqueStore,
};
use iamport_tower::{CertificationLayer, IamportClient, Secret, require_certified};
use serde_json::json;
use tower::ServiceExt as _;

const ADULT: &str = "imp_100000000001";
const SECRET: &str = "test-unique-key-secret-0123456789";

// ---- the conformance suite ------------------------------------------------------------------

async fn reserve(store: &dyn UniqueStore, key: &UniqueKey, lease: Duration) -> Reservation {
    store
        .reserve(key, ReservationToken::random(), lease)
        .await
        .expect("store answers")
}

/// Reserves `key` with a fresh token, which it returns; panics if the key is taken.
async fn reserved(store: &dyn UniqueStore, key: &UniqueKey, lease: Duration) -> ReservationToken {
    let token = ReservationToken::random();
    let outcome = store
        .reserve(key, token, lease)
        .await
        .expect("store answers");
    assert_eq!(outcome, Reservation::Reserved, "{key:?} should be free");
    token
}

async fn status(store: &dyn UniqueStore, key: &UniqueKey) -> KeyStatus {
    store.status(key).await.expect("store answers")
}

async fn conformance(store: Arc<dyn UniqueStore>) {
    let keys = UniqueKeys::new(&Secret::new(unique_name("conformance")));
    let long = Duration::from_secs(30);
    let store = &*store;

    // Reserve twice → taken, even with the holder's own token.
    let a = keys.key_for("CI-A");
    assert_eq!(status(store, &a).await, KeyStatus::Free);
    let t = reserved(store, &a, long).await;
    assert_eq!(status(store, &a).await, KeyStatus::Reserved);
    assert_eq!(reserve(store, &a, long).await, Reservation::Taken);
    assert_eq!(
        store.reserve(&a, t, long).await.unwrap(),
        Reservation::Taken
    );

    // A wrong token changes nothing.
    let wrong = ReservationToken::random();
    assert!(!store.release(&a, wrong).await.unwrap());
    assert!(!store.commit(&a, wrong).await.unwrap());
    assert!(!store.renew(&a, wrong, long).await.unwrap());
    assert_eq!(reserve(store, &a, long).await, Reservation::Taken);

    // Release → reservable again; the old token is dead.
    assert!(store.release(&a, t).await.unwrap());
    assert_eq!(status(store, &a).await, KeyStatus::Free);
    let t2 = reserved(store, &a, long).await;
    assert!(!store.commit(&a, t).await.unwrap());

    // Commit → taken forever: neither the lease, nor a release, nor a second commit frees it.
    assert!(store.commit(&a, t2).await.unwrap());
    assert_eq!(status(store, &a).await, KeyStatus::Committed);
    assert!(!store.release(&a, t2).await.unwrap());
    assert!(!store.commit(&a, t2).await.unwrap());
    assert!(!store.renew(&a, t2, long).await.unwrap());
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

    // Renew → the lease runs from now: a short lease renewed long outlives its first end.
    let c = keys.key_for("CI-C");
    let short = reserved(store, &c, Duration::from_millis(300)).await;
    assert!(store.renew(&c, short, long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reserve(store, &c, long).await, Reservation::Taken);
    assert!(store.commit(&c, short).await.unwrap());

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
    // registering over a signup in progress wins over it.
    let e = keys.key_for("CI-E");
    assert!(store.register(&e).await.unwrap());
    assert_eq!(status(store, &e).await, KeyStatus::Committed);
    assert_eq!(reserve(store, &e, long).await, Reservation::Taken);
    assert!(!store.register(&e).await.unwrap());
    let f = keys.key_for("CI-F");
    let in_flight = reserved(store, &f, long).await;
    assert!(store.register(&f).await.unwrap());
    assert!(!store.commit(&f, in_flight).await.unwrap());
    assert!(!store.release(&f, in_flight).await.unwrap());
    assert_eq!(status(store, &f).await, KeyStatus::Committed);

    // Forget: a deleted account frees the person at once; forgetting a free key says so.
    assert!(store.forget(&e, None).await.unwrap());
    assert_eq!(status(store, &e).await, KeyStatus::Free);
    assert!(!store.forget(&e, None).await.unwrap());
    let again = reserved(store, &e, long).await;
    assert!(store.commit(&e, again).await.unwrap());
    // Forgetting a signup in progress removes it: its holder cannot commit.
    let g = keys.key_for("CI-G");
    let doomed = reserved(store, &g, long).await;
    assert!(store.forget(&g, None).await.unwrap());
    assert!(!store.commit(&g, doomed).await.unwrap());
    assert_eq!(status(store, &g).await, KeyStatus::Free);

    // Forget with a cooldown: taken until the date, then free by itself.
    let until = SystemTime::now() + Duration::from_millis(800);
    assert!(store.forget(&e, Some(until)).await.unwrap());
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
    assert!(store.forget(&e, Some(past)).await.unwrap());
    assert_eq!(status(store, &e).await, KeyStatus::Free);
    let h = keys.key_for("CI-H");
    let later = SystemTime::now() + Duration::from_secs(600);
    assert!(!store.forget(&h, Some(later)).await.unwrap());
    assert!(matches!(
        status(store, &h).await,
        KeyStatus::CoolingDown { .. }
    ));
    assert!(
        store.register(&h).await.unwrap(),
        "an import overrides a cooldown"
    );

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
    let many: Vec<UniqueKey> = (0..1000)
        .map(|i| keys.key_for(&format!("CI-BATCH-{i}")))
        .collect();
    let mut with_duplicates = many.clone();
    with_duplicates.extend_from_slice(&many[..10]);
    with_duplicates.push(a.clone());
    assert_eq!(store.register_all(&with_duplicates).await.unwrap(), 1000);
    assert_eq!(store.register_all(&many[..100]).await.unwrap(), 0);
    assert_eq!(status(store, &many[999]).await, KeyStatus::Committed);
    assert_eq!(store.forget_all(&many[..500], None).await.unwrap(), 500);
    assert_eq!(status(store, &many[0]).await, KeyStatus::Free);
    assert_eq!(status(store, &many[500]).await, KeyStatus::Committed);
    let later = SystemTime::now() + Duration::from_secs(600);
    assert_eq!(
        store.forget_all(&many[400..], Some(later)).await.unwrap(),
        500
    );
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

async fn drop_table(url: &str, table: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
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
    let table = unique_name("iamport_conformance");
    conformance(Arc::new(
        PostgresStore::new(&url).unwrap().table(&table).unwrap(),
    ))
    .await;
    drop_table(&url, &table).await;
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
    let (plain, _) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map(|(client, connection)| (client, tokio::spawn(connection)))
        .unwrap();
    let ssl_on: String = plain.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl_on != "on" {
        notice("SKIPPED postgres_tls_follows_libpq_sslmode: the server has ssl = off");
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
        let store = PostgresStore::new(&target).unwrap().table(&table).unwrap();
        let key = UniqueKeys::random().key_for("CI-TLS");
        let result = store.status(&key).await;
        assert_eq!(
            result.is_ok(),
            connects,
            "{params} via {host:?}: {result:?}"
        );
        if connects {
            let encrypted: bool = plain
                .query_one(
                    "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = $1",
                    &[&app],
                )
                .await
                .unwrap()
                .get(0);
            assert!(encrypted, "{params}: the store's connection is encrypted");
        }
    }
    drop_table(&url, &table).await;
}

// ---- end to end -------------------------------------------------------------------------------

/// Accounts created, across every app instance of a test.
#[derive(Clone, Default)]
struct Accounts {
    created: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    slow_first: Arc<AtomicUsize>,
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(State(accounts): State<Accounts>) -> (StatusCode, String) {
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
    // Committed: later attempts, on either instance, are refused.
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
    let table = unique_name("iamport_e2e");
    let (u, t) = (url.clone(), table.clone());
    two_instances_one_person(move || {
        let store = PostgresStore::new(&u).unwrap().table(&t).unwrap();
        Box::new(move |layer: CertificationLayer| layer.unique_store(store, SECRET))
    })
    .await;
    drop_table(&url, &table).await;
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
        Box::new(move |layer: CertificationLayer| layer.unique_store(store, SECRET))
    })
    .await;
    delete_prefix(&url, &prefix).await;
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
    let statuses = futures_util::future::join_all((0..200).map(|_| {
        http.post(format!("{}/certifications", server.url))
            .json(&json!({"imp_uid": ADULT}))
            .send()
    }))
    .await;
    let created = statuses
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 201)
        .count();
    assert_eq!(created, 1);
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1);
}

async fn post_signup(http: &reqwest::Client, url: &str) -> u16 {
    http.post(format!("{url}/certifications"))
        .json(&json!({"imp_uid": ADULT}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_failed_handler_releases_the_person_for_a_retry() {
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    accounts.fail_first.store(1, Ordering::SeqCst);
    let mut layers = vec![("memory", CertificationLayer::new(emulator.client()))];
    let table = unique_name("iamport_retry");
    let db = database_url("a_failed_handler_releases_the_person_for_a_retry (PostgreSQL part)");
    if let Some(url) = &db {
        let store = PostgresStore::new(url).unwrap().table(&table).unwrap();
        layers.push((
            "postgres",
            CertificationLayer::new(emulator.client()).unique_store(store, SECRET),
        ));
    }
    let http = iamport_e2e::http();
    for (name, layer) in layers {
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
    }
    if let Some(url) = db {
        drop_table(&url, &table).await;
    }
}

#[tokio::test]
async fn a_store_that_is_down_is_503_and_creates_nothing() {
    let emulator = Emulator::start().await.unwrap();
    let http = iamport_e2e::http();
    let down: Vec<(&str, CertificationLayer)> = vec![
        (
            "postgres",
            CertificationLayer::new(emulator.client()).unique_store(
                PostgresStore::new("postgres://postgres@127.0.0.1:1/test").unwrap(),
                SECRET,
            ),
        ),
        (
            "redis",
            CertificationLayer::new(emulator.client())
                .unique_store(RedisStore::new("redis://127.0.0.1:1").unwrap(), SECRET),
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
    // Unused import guard for the client type in this file.
    let _ = std::marker::PhantomData::<IamportClient>;
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
        Box::new(move |layer: CertificationLayer| layer.unique_store(store, SECRET))
    })
    .await;
    for url in &urls {
        delete_prefix(url, &prefix).await;
    }
}

// ---- faults -----------------------------------------------------------------------------------

/// The fault tests read process-wide counters: one at a time.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The store key of the emulator's adult test person under `SECRET`.
async fn adult_key(emulator: &Emulator) -> UniqueKey {
    let cert = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    UniqueKeys::new(&Secret::new(SECRET)).key_for(cert.unique_key.as_deref().unwrap())
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

/// A stalled store (a proxy that stops forwarding, sockets open): the signup is a 503 within
/// the bound and the handler never runs; the reservation the stalled call makes once the
/// store answers again is released by its token, and the person can then sign up.
async fn stalled_store_is_503_and_leaves_nothing(
    name: &str,
    proxies: &[&FreezableProxy],
    store: Arc<dyn UniqueStore>,
) {
    let _one_at_a_time = FAULTS.lock().await;
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    let bound = Duration::from_millis(800);
    let accounts = Accounts::default();
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store.clone(), SECRET)
        .unique_timeout(bound);
    let server = serve_axum(app(layer, accounts.clone())).await;
    // Warm: a pooled connection, the table and the prepared statements exist before the
    // stall, so the stalled `reserve` is sent whole and can land later.
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Free, "{name}");
    let other = UniqueKeys::random().key_for("CI-WARM-UP");
    let token = ReservationToken::random();
    assert_eq!(
        store
            .reserve(&other, token, Duration::from_secs(5))
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert!(store.release(&other, token).await.unwrap());
    let released_before = iamport_tower::unique::counters().abandoned_released;

    // 30 signups of the person during the stall (more than the PostgreSQL pool's 16
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

    proxies.iter().for_each(|p| p.thaw());
    // The stalled `reserve` lands now; the layer releases it by its token.
    eventually(
        Duration::from_secs(30),
        "the stray reservation is released",
        async || iamport_tower::unique::counters().abandoned_released > released_before,
    )
    .await;
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Free, "{name}");
    assert_eq!(
        post_signup(&http, &server.url).await,
        201,
        "{name}: signs up after the stall"
    );
    assert_eq!(post_signup(&http, &server.url).await, 409, "{name}");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1, "{name}");
}

/// PostgreSQL reached through a freezable proxy, in a table of its own: the proxy, the table's
/// name (to drop) and the store.
async fn postgres_behind_a_proxy(
    url: &str,
    prefix: &str,
) -> (FreezableProxy, String, PostgresStore) {
    let proxy = FreezableProxy::start(address_of(url)).await.expect("proxy");
    let table = unique_name(prefix);
    let store = PostgresStore::new(&with_address(url, proxy.addr))
        .unwrap()
        .table(&table)
        .unwrap();
    (proxy, table, store)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_postgres_is_503_and_leaves_nothing_reserved() {
    let Some(url) = database_url("a_stalled_postgres_is_503_and_leaves_nothing_reserved") else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_stall").await;
    stalled_store_is_503_and_leaves_nothing("postgres", &[&proxy], Arc::new(store)).await;
    drop_table(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_503_and_leaves_nothing_reserved() {
    let Some(url) = redis_url("a_stalled_redis_is_503_and_leaves_nothing_reserved") else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport-stall").await;
    stalled_store_is_503_and_leaves_nothing("redis", &[&proxy], Arc::new(store)).await;
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
    stalled_store_is_503_and_leaves_nothing("redis cluster", &proxies, Arc::new(store)).await;
    for url in &urls {
        delete_prefix(url, &prefix).await;
    }
}

/// A store whose first `failures` commits fail (as a commit lost to a stall would), and which
/// signals each successful commit.
struct FailingCommits {
    inner: MemoryStore,
    failures: AtomicUsize,
    committed: tokio::sync::Notify,
}

impl UniqueStore for FailingCommits {
    fn reserve<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> iamport_tower::source::BoxFuture<'a, Result<Reservation, StoreError>> {
        self.inner.reserve(key, token, lease)
    }
    fn renew<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
        lease: Duration,
    ) -> iamport_tower::source::BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.renew(key, token, lease)
    }
    fn commit<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> iamport_tower::source::BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if take_one(&self.failures) {
                return Err(StoreError::new("injected commit failure"));
            }
            let done = self.inner.commit(key, token).await?;
            self.committed.notify_one();
            Ok(done)
        })
    }
    fn release<'a>(
        &'a self,
        key: &'a UniqueKey,
        token: ReservationToken,
    ) -> iamport_tower::source::BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.release(key, token)
    }
    fn register<'a>(
        &'a self,
        key: &'a UniqueKey,
    ) -> iamport_tower::source::BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.register(key)
    }
    fn forget<'a>(
        &'a self,
        key: &'a UniqueKey,
        until: Option<SystemTime>,
    ) -> iamport_tower::source::BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.forget(key, until)
    }
    fn status<'a>(
        &'a self,
        key: &'a UniqueKey,
    ) -> iamport_tower::source::BoxFuture<'a, Result<KeyStatus, StoreError>> {
        self.inner.status(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_once_is_retried_and_keeps_one_account() {
    let _one_at_a_time = FAULTS.lock().await;
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    let store = Arc::new(FailingCommits {
        inner: MemoryStore::new(),
        failures: AtomicUsize::new(1),
        committed: tokio::sync::Notify::new(),
    });
    let before = iamport_tower::unique::counters();
    let accounts = Accounts::default();
    let layer = CertificationLayer::new(emulator.client()).unique_store(store.clone(), SECRET);
    let tasks = layer.unique_tasks();
    let server = serve_axum(app(layer, accounts.clone())).await;
    let http = iamport_e2e::http();

    assert_eq!(post_signup(&http, &server.url).await, 201);
    // The commit, its failure and the retry all run in the layer's counted tasks.
    tokio::time::timeout(Duration::from_secs(20), tasks.settled())
        .await
        .expect("the retry concludes");
    assert_eq!(
        store.failures.load(Ordering::SeqCst),
        0,
        "the first commit failed"
    );
    tokio::time::timeout(Duration::from_secs(1), store.committed.notified())
        .await
        .expect("the retry committed");
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Committed);
    let after = iamport_tower::unique::counters();
    assert!(after.commit_retries > before.commit_retries);
    assert!(after.commits_recovered > before.commits_recovered);
    assert_eq!(post_signup(&http, &server.url).await, 409);
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_that_keeps_failing_is_an_error_log_and_a_counter_without_personal_data() {
    let _one_at_a_time = FAULTS.lock().await;
    let (logs, _guard) = iamport_e2e::Captured::install();
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    let store = Arc::new(FailingCommits {
        inner: MemoryStore::new(),
        failures: AtomicUsize::new(usize::MAX),
        committed: tokio::sync::Notify::new(),
    });
    let failed_before = iamport_tower::unique::counters().commits_failed;
    let layer = CertificationLayer::new(emulator.client()).unique_store(store.clone(), SECRET);
    let settled = layer.settled();
    let service = app(layer, Accounts::default());
    let response = service
        .oneshot(signup_request("/certifications"))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "the account exists: the response says so"
    );
    // Every attempt (bounded: COMMIT_ATTEMPTS with backoff) runs in the layer's tasks.
    tokio::time::timeout(Duration::from_secs(30), settled)
        .await
        .expect("the commit is given up");
    assert!(
        iamport_tower::unique::counters().commits_failed > failed_before,
        "the commit was given up"
    );
    // Kept until the lease ends: nobody else gets the person meanwhile.
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Reserved);
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
    assert!(
        !text.contains(cert.unique_key.as_deref().unwrap()),
        "never the CI"
    );
}

#[require_certified(unique = true)]
async fn signup_keeping_the_key(cert: iamport_tower::Certified) -> (StatusCode, String) {
    let key = cert.unique_key().map(|k| k.to_hex()).unwrap_or_default();
    (StatusCode::CREATED, key)
}

#[tokio::test]
async fn certified_exposes_the_person_key_for_a_unique_constraint() {
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    let service = Router::new()
        .route("/", post(signup_keeping_the_key))
        .layer(CertificationLayer::new(emulator.client()).unique_store(MemoryStore::new(), SECRET));
    let response = service.oneshot(signup_request("/")).await.unwrap();
    assert_eq!(response.status(), 201);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(std::str::from_utf8(&body).unwrap(), key.to_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_postgres_on_a_cold_pool_is_503_then_recovers() {
    let Some(url) = database_url("a_stalled_postgres_on_a_cold_pool_is_503_then_recovers") else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_cold").await;
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store, SECRET)
        .unique_timeout(Duration::from_millis(800));
    let server = serve_axum(app(layer, accounts.clone())).await;
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // No connection yet: the pool connects through the stalled proxy.
    proxy.freeze();
    let started = std::time::Instant::now();
    let status = post_signup(&http, &server.url).await;
    notice(&format!(
        "postgres (cold pool): stalled store answered {status} in {:?}",
        started.elapsed()
    ));
    assert_eq!(status, 503);
    assert!(proxy.bytes_held() > 0, "the connection's startup was held");
    assert_eq!(accounts.created.load(Ordering::SeqCst), 0);
    proxy.thaw();
    assert_eq!(post_signup(&http, &server.url).await, 201);
    assert_eq!(post_signup(&http, &server.url).await, 409);
    drop_table(&url, &table).await;
}

#[derive(Clone)]
struct Stalling {
    proxy: Arc<FreezableProxy>,
    accounts: Accounts,
}

/// Creates the account, then stalls the store (once) before the layer commits.
#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup_then_stall(State(s): State<Stalling>) -> StatusCode {
    s.accounts.created.fetch_add(1, Ordering::SeqCst);
    if take_one(&s.accounts.slow_first) {
        s.proxy.freeze();
    }
    StatusCode::CREATED
}

/// The store stalls between the handler's success and the commit: the response is the
/// handler's 201 within the bound, and once the store answers the commit holds — one
/// account, later signups 409, no failed commit.
async fn commit_through_a_stall(
    name: &str,
    proxy: Arc<FreezableProxy>,
    store: Arc<dyn UniqueStore>,
) {
    let _one_at_a_time = FAULTS.lock().await;
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    // Warm: connection, table and statements/scripts ready, so the stalled commit is sent.
    warm_up(&*store).await;
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Free);

    let before = iamport_tower::unique::counters();
    let accounts = Accounts::default();
    accounts.slow_first.store(1, Ordering::SeqCst);
    let state = Stalling {
        proxy: proxy.clone(),
        accounts: accounts.clone(),
    };
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store.clone(), SECRET)
        .unique_timeout(Duration::from_millis(800));
    let tasks = layer.unique_tasks();
    let server = serve_axum(
        Router::new()
            .route("/certifications", post(signup_then_stall))
            .with_state(state)
            .layer(layer),
    )
    .await;
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let status = post_signup(&http, &server.url).await;
    notice(&format!(
        "{name}: signup whose commit stalled answered {status} in {:?}",
        started.elapsed()
    ));
    assert_eq!(status, 201, "{name}: the account exists");
    // The commit runs alongside the response: it times out on the stalled store (a store
    // error) and is retried (only a failed commit is).
    eventually(
        Duration::from_secs(30),
        "the stalled commit is retried",
        async || iamport_tower::unique::counters().commit_retries > before.commit_retries,
    )
    .await;
    assert!(proxy.bytes_held() > 0, "{name}: the commit was stalled");
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
    // The background retry concluded that the commit held; nothing was given up.
    assert!(
        iamport_tower::unique::counters().commits_recovered > before.commits_recovered,
        "{name}: the commit was recovered"
    );
    assert_eq!(
        iamport_tower::unique::counters().commits_failed,
        before.commits_failed,
        "{name}: no commit given up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_on_postgres_holds_once_it_answers() {
    let Some(url) = database_url("a_commit_stalled_on_postgres_holds_once_it_answers") else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_commit_stall").await;
    let proxy = Arc::new(proxy);
    commit_through_a_stall("postgres", proxy, Arc::new(store)).await;
    drop_table(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_on_redis_holds_once_it_answers() {
    let Some(url) = redis_url("a_commit_stalled_on_redis_holds_once_it_answers") else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport-commit-stall").await;
    commit_through_a_stall("redis", Arc::new(proxy), Arc::new(store)).await;
    delete_prefix(&url, &prefix).await;
}

/// Makes `store`'s connection, table and statements/scripts ready, so a call stalled later is
/// sent whole (and lands once the store answers).
async fn warm_up(store: &dyn UniqueStore) {
    let other = UniqueKeys::random().key_for("CI-WARM-UP");
    let token = ReservationToken::random();
    assert_eq!(
        store
            .reserve(&other, token, Duration::from_secs(5))
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert!(
        store
            .renew(&other, token, Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(store.commit(&other, token).await.unwrap());
}

/// A layer whose store (`proxied`, behind `proxy`) stalls after admission — the handler
/// freezes the proxy (once) — served with `commit`; `direct` reads the same store around the
/// proxy. The commit is slow, not failed: the bound (20 s) outlasts the stall.
async fn serve_with_a_slow_commit(
    proxy: &Arc<FreezableProxy>,
    proxied: Arc<dyn UniqueStore>,
    commit: UniqueCommit,
) -> (
    iamport_e2e::Served,
    Accounts,
    iamport_tower::unique::UniqueTasks,
    Emulator,
) {
    let emulator = Emulator::start().await.unwrap();
    let accounts = Accounts::default();
    accounts.slow_first.store(1, Ordering::SeqCst);
    let state = Stalling {
        proxy: proxy.clone(),
        accounts: accounts.clone(),
    };
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(proxied, SECRET)
        .unique_timeout(Duration::from_secs(20))
        .unique_commit(commit);
    let tasks = layer.unique_tasks();
    let server = serve_axum(
        Router::new()
            .route("/certifications", post(signup_then_stall))
            .with_state(state)
            .layer(layer),
    )
    .await;
    (server, accounts, tasks, emulator)
}

/// The default: a 2xx is answered while its commit is still held by a stalled store; the
/// person stays reserved meanwhile (another replica on the same store answers 409);
/// `settled()` waits for the commit, and the key is committed once it resolves — in one
/// attempt, nothing retried.
async fn a_2xx_is_answered_while_its_commit_runs(
    name: &str,
    proxy: Arc<FreezableProxy>,
    proxied: Arc<dyn UniqueStore>,
    direct: Arc<dyn UniqueStore>,
) {
    let _one_at_a_time = FAULTS.lock().await;
    warm_up(&*proxied).await;
    let (server, accounts, tasks, emulator) =
        serve_with_a_slow_commit(&proxy, proxied, UniqueCommit::AlongsideResponse).await;
    let key = adult_key(&emulator).await;
    assert_eq!(
        direct.status(&key).await.unwrap(),
        KeyStatus::Free,
        "{name}"
    );
    let before = iamport_tower::unique::counters();
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let started = std::time::Instant::now();
    assert_eq!(post_signup(&http, &server.url).await, 201, "{name}");
    notice(&format!(
        "{name}: 201 with the commit stalled behind it, in {:?}",
        started.elapsed()
    ));
    assert_eq!(accounts.created.load(Ordering::SeqCst), 1, "{name}");
    // The response came before the commit landed: the store still holds a reservation.
    assert_eq!(
        direct.status(&key).await.unwrap(),
        KeyStatus::Reserved,
        "{name}: answered before the commit"
    );
    assert!(tasks.running() >= 1, "{name}: the commit is running");
    assert!(
        futures_util::FutureExt::now_or_never(tasks.settled()).is_none(),
        "{name}: settled() waits for the commit"
    );
    eventually(Duration::from_secs(10), "the commit is sent", async || {
        proxy.bytes_held() > 0
    })
    .await;
    // Meanwhile the reservation keeps the person out, here and on another replica.
    let other = serve_axum(app(
        CertificationLayer::new(emulator.client()).unique_store(direct.clone(), SECRET),
        Accounts::default(),
    ))
    .await;
    assert_eq!(post_signup(&http, &other.url).await, 409, "{name}");

    proxy.thaw();
    tokio::time::timeout(Duration::from_secs(20), tasks.settled())
        .await
        .expect("the commit ends once the store answers");
    assert_eq!(tasks.running(), 0, "{name}");
    assert_eq!(
        direct.status(&key).await.unwrap(),
        KeyStatus::Committed,
        "{name}: committed once settled() resolved"
    );
    let after = iamport_tower::unique::counters();
    assert_eq!(
        (after.commit_retries, after.commits_failed),
        (before.commit_retries, before.commits_failed),
        "{name}: one commit attempt, slow but not failed"
    );
    assert_eq!(post_signup(&http, &server.url).await, 409, "{name}");
    assert_eq!(post_signup(&http, &other.url).await, 409, "{name}");
}

/// `UniqueCommit::BeforeResponse`: while the commit is stalled the response does not come;
/// once it does, the key is committed and nothing is left running.
async fn before_response_answers_after_the_commit(
    name: &str,
    proxy: Arc<FreezableProxy>,
    proxied: Arc<dyn UniqueStore>,
    direct: Arc<dyn UniqueStore>,
) {
    let _one_at_a_time = FAULTS.lock().await;
    warm_up(&*proxied).await;
    let (server, accounts, tasks, emulator) =
        serve_with_a_slow_commit(&proxy, proxied, UniqueCommit::BeforeResponse).await;
    let key = adult_key(&emulator).await;
    let http = iamport_e2e::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut response = tokio::spawn({
        let (http, url) = (http.clone(), server.url.clone());
        async move { post_signup(&http, &url).await }
    });
    eventually(
        Duration::from_secs(10),
        "the handler ran and the commit is sent",
        async || accounts.created.load(Ordering::SeqCst) == 1 && proxy.bytes_held() > 0,
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut response)
            .await
            .is_err(),
        "{name}: no response while the commit is stalled"
    );
    assert_eq!(direct.status(&key).await.unwrap(), KeyStatus::Reserved);
    proxy.thaw();
    assert_eq!(response.await.unwrap(), 201, "{name}");
    assert_eq!(
        direct.status(&key).await.unwrap(),
        KeyStatus::Committed,
        "{name}: committed when the response came"
    );
    assert_eq!(tasks.running(), 0, "{name}: nothing left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_on_postgres_is_answered_while_its_commit_runs_and_settled_waits_for_it() {
    let Some(url) = database_url(
        "a_2xx_on_postgres_is_answered_while_its_commit_runs_and_settled_waits_for_it",
    ) else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_alongside").await;
    let direct = PostgresStore::new(&url).unwrap().table(&table).unwrap();
    a_2xx_is_answered_while_its_commit_runs(
        "postgres",
        Arc::new(proxy),
        Arc::new(store),
        Arc::new(direct),
    )
    .await;
    drop_table(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_on_redis_is_answered_while_its_commit_runs_and_settled_waits_for_it() {
    let Some(url) =
        redis_url("a_2xx_on_redis_is_answered_while_its_commit_runs_and_settled_waits_for_it")
    else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport-alongside").await;
    let direct = RedisStore::new(&url).unwrap().prefix(prefix.clone());
    a_2xx_is_answered_while_its_commit_runs(
        "redis",
        Arc::new(proxy),
        Arc::new(store),
        Arc::new(direct),
    )
    .await;
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_response_on_postgres_answers_once_the_commit_landed() {
    let Some(url) = database_url("before_response_on_postgres_answers_once_the_commit_landed")
    else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_before").await;
    let direct = PostgresStore::new(&url).unwrap().table(&table).unwrap();
    before_response_answers_after_the_commit(
        "postgres",
        Arc::new(proxy),
        Arc::new(store),
        Arc::new(direct),
    )
    .await;
    drop_table(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_response_on_the_memory_store_answers_once_committed() {
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;
    let store = Arc::new(MemoryStore::new());
    let layer = CertificationLayer::new(emulator.client())
        .unique_store(store.clone(), SECRET)
        .unique_commit(UniqueCommit::BeforeResponse);
    let tasks = layer.unique_tasks();
    let server = serve_axum(app(layer, Accounts::default())).await;
    let http = iamport_e2e::http();
    assert_eq!(post_signup(&http, &server.url).await, 201);
    assert_eq!(store.status(&key).await.unwrap(), KeyStatus::Committed);
    assert_eq!(tasks.running(), 0, "the commit ended before the response");
    assert_eq!(post_signup(&http, &server.url).await, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_waits_for_the_commits_of_many_signups_on_the_memory_store() {
    let emulator = Emulator::builder()
        .without_sample_persons()
        .start()
        .await
        .unwrap();
    let id = |i: usize| format!("imp_{:012}", 500_000_000_000 + i as u64);
    let keys = UniqueKeys::new(&Secret::new(SECRET));
    let mut expected = Vec::new();
    for i in 0..50 {
        let ci = unique_name("settled-ci");
        let mut record = iamport_mock::person(&id(i), "정착", "1990-01-01");
        record["unique_key"] = json!(ci);
        emulator.add_person(record);
        expected.push(keys.key_for(&ci));
    }
    let store = Arc::new(MemoryStore::new());
    let layer = CertificationLayer::new(emulator.client()).unique_store(store.clone(), SECRET);
    // A clone's tasks are the layer's tasks.
    let settled = layer.clone().settled();
    let served = serve_axum(app(layer, Accounts::default())).await;
    let http = iamport_e2e::http();
    let statuses = futures_util::future::join_all((0..50).map(|i| {
        http.post(format!("{}/certifications", served.url))
            .json(&json!({ "imp_uid": id(i) }))
            .send()
    }))
    .await;
    assert!(statuses.iter().all(|r| r.as_ref().unwrap().status() == 201));
    tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .expect("settled");
    for key in &expected {
        assert_eq!(store.status(key).await.unwrap(), KeyStatus::Committed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purges_ended_leases_and_cooldowns_only() {
    let Some(url) = database_url("postgres_purges_ended_leases_and_cooldowns_only") else {
        return;
    };
    let table = unique_name("iamport_purge");
    let store = PostgresStore::new(&url).unwrap().table(&table).unwrap();
    let keys = UniqueKeys::random();
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
    assert!(store.register(&committed).await.unwrap());
    assert!(
        !store
            .forget(&cooled, Some(SystemTime::now() + short))
            .await
            .unwrap()
    );
    assert!(
        !store
            .forget(&cooling, Some(SystemTime::now() + Duration::from_secs(600)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.purge_expired(Duration::ZERO).await.unwrap(), 2);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 3,
        "the live reservation, the account and the running cooldown stay"
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
    drop_table(&url, &table).await;
}

/// The app's own guard, as the `unique` module documents it: the account row keeps
/// `Certified::unique_key` under a `UNIQUE` constraint.
#[derive(Clone)]
struct Users {
    db: Arc<tokio_postgres::Client>,
    table: String,
}

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup_with_key_column(
    State(users): State<Users>,
    cert: iamport_tower::Certified,
) -> StatusCode {
    let Some(key) = cert.unique_key() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let insert = format!("INSERT INTO \"{}\" (person_key) VALUES ($1)", users.table);
    match users.db.execute(&insert, &[&key.to_hex()]).await {
        Ok(_) => StatusCode::CREATED,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            StatusCode::CONFLICT
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A process killed between its handler's success and the commit leaves an account row and
/// a reservation that ends with its lease; the store then admits the person again, and the
/// users table's `UNIQUE` constraint on the key is what refuses the second account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_handler_and_commit_is_caught_by_the_unique_key_column() {
    let Some(url) =
        database_url("a_crash_between_handler_and_commit_is_caught_by_the_unique_key_column")
    else {
        return;
    };
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let users_table = unique_name("iamport_users");
    db.batch_execute(&format!(
        "CREATE TABLE \"{users_table}\" (id serial PRIMARY KEY, person_key CHAR(64) NOT NULL UNIQUE)"
    ))
    .await
    .unwrap();
    let store_table = unique_name("iamport_crash");
    let store = Arc::new(
        PostgresStore::new(&url)
            .unwrap()
            .table(&store_table)
            .unwrap(),
    );
    let emulator = Emulator::start().await.unwrap();
    let key = adult_key(&emulator).await;

    // What the crashed process left: its reservation (lease 300 ms) and the account row.
    let crashed = ReservationToken::random();
    assert_eq!(
        store
            .reserve(&key, crashed, Duration::from_millis(300))
            .await
            .unwrap(),
        Reservation::Reserved
    );
    db.execute(
        &format!("INSERT INTO \"{users_table}\" (person_key) VALUES ($1)"),
        &[&key.to_hex()],
    )
    .await
    .unwrap();
    let users = Users {
        db: Arc::new(db),
        table: users_table.clone(),
    };
    let server = serve_axum(
        Router::new()
            .route("/certifications", post(signup_with_key_column))
            .with_state(users.clone())
            .layer(CertificationLayer::new(emulator.client()).unique_store(store.clone(), SECRET)),
    )
    .await;
    let http = iamport_e2e::http();
    // While the dead process's lease runs, the store refuses the person.
    assert_eq!(post_signup(&http, &server.url).await, 409);
    // Once it ends, the store admits them again — the users table refuses the second account.
    eventually(
        Duration::from_secs(10),
        "the crashed lease ends",
        async || store.status(&key).await.ok() == Some(KeyStatus::Free),
    )
    .await;
    assert_eq!(post_signup(&http, &server.url).await, 409);
    let rows: i64 = users
        .db
        .query_one(&format!("SELECT count(*) FROM \"{users_table}\""), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one account");
    let _ = users
        .db
        .batch_execute(&format!("DROP TABLE \"{users_table}\""))
        .await;
    drop_table(&url, &store_table).await;
}

#[require_certified(unique = "newsletter")]
async fn newsletter_keeping_the_key(cert: iamport_tower::Certified) -> (StatusCode, String) {
    let key = cert.unique_key().map(|k| k.to_hex()).unwrap_or_default();
    (StatusCode::CREATED, key)
}

#[tokio::test]
async fn named_scopes_are_separate_keyspaces() {
    let emulator = Emulator::start().await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let app = Router::new()
        .route("/signup", post(signup_keeping_the_key))
        .route("/newsletter", post(newsletter_keeping_the_key))
        .layer(CertificationLayer::new(emulator.client()).unique_store(store.clone(), SECRET));
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
    assert_eq!(send("/signup").await.0, 409);
    assert_eq!(send("/newsletter").await.0, 409);
    // The keys are the documented derivations: HMAC(secret, CI) and
    // HMAC(secret, 0 || scope || 0 || CI).
    let keys = UniqueKeys::new(&Secret::new(SECRET));
    let cert = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    let ci = cert.unique_key.as_deref().unwrap();
    assert_eq!(default_key, keys.key_for(ci).to_hex());
    assert_eq!(scoped_key, keys.key_in(Some("newsletter"), ci).to_hex());
    assert_ne!(default_key, scoped_key);
}

// ---- round trips per admission -----------------------------------------------------------------

/// Signs up `n` new people (after one warm-up signup: connection, table, prepared statements,
/// script cache) through a layer whose store sits behind `proxy`; the store round trips the
/// `n` admissions took, as the proxy counted them.
async fn round_trips_for_signups(
    proxy: &FreezableProxy,
    store: impl UniqueStore,
    n: usize,
) -> usize {
    let emulator = Emulator::builder()
        .without_sample_persons()
        .start()
        .await
        .unwrap();
    let id = |i: usize| format!("imp_{:012}", 400_000_000_000 + i as u64);
    for i in 0..=n {
        let mut record = iamport_mock::person(&id(i), "왕복", "1990-01-01");
        record["unique_key"] = json!(unique_name("round-trip-ci"));
        emulator.add_person(record);
    }
    let layer = CertificationLayer::new(emulator.client()).unique_store(store, SECRET);
    let tasks = layer.unique_tasks();
    let served = serve_axum(app(layer, Accounts::default())).await;
    let http = iamport_e2e::http();
    let signup = |i: usize| {
        http.post(format!("{}/certifications", served.url))
            .json(&json!({ "imp_uid": id(i) }))
            .send()
    };
    assert_eq!(signup(0).await.unwrap().status(), 201, "warm-up");
    tokio::time::timeout(Duration::from_secs(10), tasks.settled())
        .await
        .expect("the warm-up's commit ends");
    let before = proxy.round_trips();
    for i in 1..=n {
        assert_eq!(signup(i).await.unwrap().status(), 201);
    }
    // The last commits run alongside their responses: count them once they ended.
    tokio::time::timeout(Duration::from_secs(10), tasks.settled())
        .await
        .expect("the commits end");
    let trips = proxy.round_trips() - before;
    notice(&format!("{n} admissions: {trips} store round trips"));
    trips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_admission_is_one_round_trip_to_reserve_and_one_to_commit() {
    let Some(url) =
        database_url("a_postgres_admission_is_one_round_trip_to_reserve_and_one_to_commit")
    else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_round_trips").await;
    let trips = round_trips_for_signups(&proxy, store, 20).await;
    // One after the other, each commit is alone in its batch statement — sequential commits
    // cannot share one, and none waits for company — so 20 signups are still 40 round trips
    // (concurrent commits share statements: the next test). The purge the first reservation
    // starts in the background may open and prepare a second connection (a few round trips,
    // once); a BEGIN/COMMIT pair or a re-prepared statement per admission would add 20 or
    // more.
    assert!((40..=48).contains(&trips), "{trips} round trips");
    drop_table(&url, &table).await;
}

/// Runs `burst` (many concurrent store calls) while the proxy holds what the store sends:
/// the first statements (each alone, as a call is while a slot is free) keep every statement
/// slot busy, so every other call queues for a batching task; then the proxy lets them all
/// through. Returns the burst's answers and the round trips it took.
async fn held_then_let_through<T: Send + 'static>(
    proxy: &FreezableProxy,
    burst: impl Future<Output = T> + Send + 'static,
) -> (T, usize) {
    let before = proxy.round_trips();
    proxy.freeze();
    let answers = tokio::spawn(burst);
    eventually(
        Duration::from_secs(10),
        "the first statements are sent",
        async || proxy.bytes_held() > 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.thaw();
    let answers = tokio::time::timeout(Duration::from_secs(30), answers)
        .await
        .expect("every call is answered")
        .unwrap();
    (answers, proxy.round_trips() - before)
}

/// What one concurrent commit in
/// `concurrent_postgres_commits_share_statements_and_each_caller_gets_its_own_answer` must
/// be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// The token holds the key: `true`.
    Committed,
    /// `false`: a wrong token, a key committed before, a key nobody reserved.
    NotHeld,
    /// The same key and token committed twice at once: exactly one of the pair is `true`.
    Twice(usize),
}

/// Concurrent commits on PostgreSQL share batch statements — far fewer round trips than
/// commits, counted by the proxy — and each caller gets its own answer, in batches mixing
/// valid tokens, wrong tokens, keys committed before, keys nobody reserved and a key
/// committed twice at once with its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_postgres_commits_share_statements_and_each_caller_gets_its_own_answer() {
    let Some(url) = database_url(
        "concurrent_postgres_commits_share_statements_and_each_caller_gets_its_own_answer",
    ) else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_batch").await;
    // The statements the proxy holds below must not time out meanwhile.
    let store = Arc::new(store.timeout(Duration::from_secs(20)));
    let keys = UniqueKeys::random();
    let long = Duration::from_secs(120);
    const PEOPLE: usize = 160;
    let people: Vec<UniqueKey> = (0..PEOPLE)
        .map(|i| keys.key_for(&format!("CI-BATCH-{i}")))
        .collect();
    let mut tokens = Vec::new();
    for key in &people {
        tokens.push(reserved(&*store, key, long).await);
    }
    for i in (3..PEOPLE).step_by(4) {
        assert!(store.commit(&people[i], tokens[i]).await.unwrap(), "{i}");
    }

    // Per four people, seven commits of every kind, interleaved: any seven consecutive
    // commits hold each kind.
    let mut calls: Vec<(UniqueKey, ReservationToken, Expected)> = Vec::new();
    for (i, (key, token)) in people.iter().zip(&tokens).enumerate() {
        match i % 4 {
            // Its own token, and a wrong one for the same key.
            0 => {
                calls.push((key.clone(), *token, Expected::Committed));
                calls.push((key.clone(), ReservationToken::random(), Expected::NotHeld));
            }
            // Only a wrong token: the key stays reserved.
            1 => calls.push((key.clone(), ReservationToken::random(), Expected::NotHeld)),
            // Its token twice at once.
            2 => {
                calls.push((key.clone(), *token, Expected::Twice(i)));
                calls.push((key.clone(), *token, Expected::Twice(i)));
            }
            // Committed before.
            _ => {
                calls.push((key.clone(), *token, Expected::NotHeld));
                let nobody = keys.key_for(&format!("CI-NOBODY-{i}"));
                calls.push((nobody, ReservationToken::random(), Expected::NotHeld));
            }
        }
    }
    let n = calls.len();

    let (answers, trips) = held_then_let_through(&proxy, {
        let (store, calls) = (store.clone(), calls.clone());
        async move {
            let commits = calls
                .iter()
                .map(|(key, token, _)| store.commit(key, *token));
            futures_util::future::join_all(commits).await
        }
    })
    .await;
    notice(&format!("{n} concurrent commits: {trips} round trips"));

    // Each caller's own answer.
    let mut twice = std::collections::HashMap::<usize, Vec<bool>>::new();
    for ((key, _, expected), answer) in calls.iter().zip(answers) {
        let answer = answer.unwrap_or_else(|e| panic!("{key:?} ({expected:?}): {e}"));
        match expected {
            Expected::Committed => assert!(answer, "{key:?} held by its token"),
            Expected::NotHeld => assert!(!answer, "{key:?} not held by that token"),
            Expected::Twice(i) => twice.entry(*i).or_default().push(answer),
        }
    }
    assert_eq!(twice.len(), PEOPLE / 4);
    for (i, answers) in &twice {
        assert_eq!(
            answers.iter().filter(|a| **a).count(),
            1,
            "person {i}, committed twice at once: {answers:?}"
        );
    }
    // What the store holds now.
    for (i, key) in people.iter().enumerate() {
        let expected = if i % 4 == 1 {
            KeyStatus::Reserved
        } else {
            KeyStatus::Committed
        };
        assert_eq!(status(&*store, key).await, expected, "person {i}");
    }
    for i in (3..PEOPLE).step_by(4) {
        let nobody = keys.key_for(&format!("CI-NOBODY-{i}"));
        assert_eq!(status(&*store, &nobody).await, KeyStatus::Free);
    }
    // The batching path was taken: at most 2 statements were in flight while the proxy held
    // them, and one more took every commit queued meanwhile. Each statement costs at most
    // three round trips (a new connection's startup, preparing the statement, running it);
    // a statement per commit would take `n` or more. With at most 20 statements for `n` =
    // 280 commits sent in order, one statement carried at least 14 consecutive commits:
    // every kind above, in one batch.
    assert!(trips <= 20, "{n} commits took {trips} round trips");

    // Alone, a commit is sent at once, in one statement: one round trip (two if its
    // connection had not prepared the statement yet).
    for i in (1..PEOPLE).step_by(4).take(5) {
        let before = proxy.round_trips();
        assert!(store.commit(&people[i], tokens[i]).await.unwrap());
        let trips = proxy.round_trips() - before;
        assert!(
            (1..=2).contains(&trips),
            "a lone commit: {trips} round trips"
        );
    }
    drop(store);
    drop_table(&url, &table).await;
}

/// Concurrent reservations on PostgreSQL share batch statements as commits do — far fewer
/// round trips than reservations, counted by the proxy — and each caller gets the answer it
/// would get alone: free keys are reserved, of several reservations of one free key exactly
/// one wins, a key whose lease ended is taken over, and committed, reserved and cooling-down
/// keys stay taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_postgres_reservations_share_statements_and_one_per_key_wins() {
    let Some(url) =
        database_url("concurrent_postgres_reservations_share_statements_and_one_per_key_wins")
    else {
        return;
    };
    let (proxy, table, store) = postgres_behind_a_proxy(&url, "iamport_batch_reserve").await;
    let store = Arc::new(store.timeout(Duration::from_secs(20)));
    let keys = UniqueKeys::random();
    let long = Duration::from_secs(120);
    let short = Duration::from_millis(200);
    const PEOPLE: usize = 200;
    let people: Vec<UniqueKey> = (0..PEOPLE)
        .map(|i| keys.key_for(&format!("CI-RESERVE-{i}")))
        .collect();
    // Before: per five people, one committed, one reserved by someone else, one whose lease
    // ends before the burst, one cooling down after a `forget`, one free.
    let cooldown = SystemTime::now() + Duration::from_secs(600);
    for (i, key) in people.iter().enumerate() {
        match i % 5 {
            0 => {
                let token = reserved(&*store, key, long).await;
                assert!(store.commit(key, token).await.unwrap());
            }
            1 => drop(reserved(&*store, key, long).await),
            2 => drop(reserved(&*store, key, short).await),
            3 => {
                let token = reserved(&*store, key, long).await;
                assert!(store.commit(key, token).await.unwrap());
                store.forget(key, Some(cooldown)).await.unwrap();
            }
            _ => {}
        }
    }
    tokio::time::sleep(short * 2).await;

    // The burst: every person three times, interleaved, each call with a token of its own.
    let calls: Vec<(usize, ReservationToken)> = (0..3)
        .flat_map(|_| (0..PEOPLE).map(|i| (i, ReservationToken::random())))
        .collect();
    let n = calls.len();
    let (answers, trips) = held_then_let_through(&proxy, {
        let (store, people, calls) = (store.clone(), people.clone(), calls.clone());
        async move {
            let reservations = calls
                .iter()
                .map(|(i, token)| store.reserve(&people[*i], *token, long));
            futures_util::future::join_all(reservations).await
        }
    })
    .await;
    notice(&format!("{n} concurrent reservations: {trips} round trips"));

    let mut winners = vec![Vec::new(); PEOPLE];
    for ((i, token), answer) in calls.iter().zip(answers) {
        match answer.unwrap_or_else(|e| panic!("person {i}: {e}")) {
            Reservation::Reserved => winners[*i].push(*token),
            Reservation::Taken => {}
        }
    }
    for (i, won) in winners.iter().enumerate() {
        // Free (4) or its lease ended (2): exactly one of the three wins; else none.
        let expected = usize::from(matches!(i % 5, 2 | 4));
        assert_eq!(won.len(), expected, "person {i}: {} winners", won.len());
    }
    // The winners hold their keys: their tokens commit them.
    for (i, won) in winners.iter().enumerate() {
        if let [token] = won[..] {
            assert!(store.commit(&people[i], token).await.unwrap(), "person {i}");
        }
    }
    for (i, key) in people.iter().enumerate() {
        let status = status(&*store, key).await;
        match i % 5 {
            1 => assert_eq!(status, KeyStatus::Reserved, "person {i}"),
            3 => assert!(
                matches!(status, KeyStatus::CoolingDown { .. }),
                "person {i}: {status:?}"
            ),
            _ => assert_eq!(status, KeyStatus::Committed, "person {i}"),
        }
    }
    // The batching path was taken: at most 2 statements were in flight while the proxy held
    // them, and the rest went in a few more, each carrying many reservations (at most three
    // round trips a statement: a new connection's startup, preparing, running it); a
    // statement per reservation would take `n` or more.
    assert!(trips <= 20, "{n} reservations took {trips} round trips");

    // Alone, a reservation is sent at once, in one statement: one round trip.
    for i in 0..5 {
        let key = keys.key_for(&format!("CI-ALONE-{i}"));
        let before = proxy.round_trips();
        reserved(&*store, &key, long).await;
        let trips = proxy.round_trips() - before;
        assert!(
            (1..=2).contains(&trips),
            "a lone reservation: {trips} round trips"
        );
    }
    drop(store);
    drop_table(&url, &table).await;
}

/// A store's pooled connections, and its batching tasks, run on the runtime that
/// started them; a signup on another runtime after that one shut down still commits (a
/// store kept in a static, or shared by tests that each have their own runtime).
#[test]
fn a_postgres_store_commits_on_a_second_runtime_after_the_first_shut_down() {
    let Some(url) =
        database_url("a_postgres_store_commits_on_a_second_runtime_after_the_first_shut_down")
    else {
        return;
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let table = unique_name("iamport_runtimes");
    let store = PostgresStore::new(&url).unwrap().table(&table).unwrap();
    let keys = UniqueKeys::random();
    let sign_up = |ci: &'static str| {
        let key = keys.key_for(ci);
        let store = &store;
        async move {
            let token = reserved(store, &key, Duration::from_secs(30)).await;
            assert!(store.commit(&key, token).await.unwrap(), "{ci}");
            assert_eq!(status(store, &key).await, KeyStatus::Committed);
        }
    };
    runtime().block_on(sign_up("CI-FIRST"));
    // The first runtime is gone, with the task and the connections it ran.
    runtime().block_on(sign_up("CI-SECOND"));
    runtime().block_on(async {
        drop(store);
        drop_table(&url, &table).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_admission_is_one_round_trip_to_reserve_and_one_to_commit() {
    let Some(url) = redis_url("a_redis_admission_is_one_round_trip_to_reserve_and_one_to_commit")
    else {
        return;
    };
    let (proxy, prefix, store) = redis_behind_a_proxy(&url, "iamport_round_trips").await;
    assert_eq!(round_trips_for_signups(&proxy, store, 20).await, 40);
    delete_prefix(&url, &prefix).await;
}
