//! One account per person: the conformance suite every `UniqueStore` passes, and `unique =
//! true` end to end — concurrent signups through two app instances sharing PostgreSQL or
//! Redis, retries after a failed handler, a store that is down, dropped and panicking
//! requests. PostgreSQL and Redis tests need `DATABASE_URL` / `REDIS_URL` and print a skip
//! notice without them; each run uses its own table / key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use iamport_e2e::{database_url, redis_url, serve_axum, unique_name};
use iamport_mock::Emulator;
use iamport_tower::body::Body;
use iamport_tower::unique::MemoryStore;
use iamport_tower::unique::{
    PostgresStore, RedisStore, Reservation, ReservationToken, UniqueKeys, UniqueStore,
};
use iamport_tower::{CertificationLayer, IamportClient, Secret, require_certified};
use serde_json::json;
use tower::ServiceExt as _;

const ADULT: &str = "imp_100000000001";
const SECRET: &str = "test-unique-key-secret-0123456789";

// ---- the conformance suite ------------------------------------------------------------------

async fn reserve(
    store: &dyn UniqueStore,
    key: &iamport_tower::unique::UniqueKey,
    lease: Duration,
) -> Reservation {
    store.reserve(key, lease).await.expect("store answers")
}

fn reserved(r: Reservation) -> ReservationToken {
    match r {
        Reservation::Reserved(token) => token,
        Reservation::Taken => panic!("expected Reserved, got Taken"),
    }
}

async fn conformance(store: Arc<dyn UniqueStore>) {
    let keys = UniqueKeys::new(&Secret::new(unique_name("conformance")));
    let long = Duration::from_secs(30);

    // Reserve twice → taken.
    let a = keys.key_for("CI-A");
    let t = reserved(reserve(&*store, &a, long).await);
    assert_eq!(reserve(&*store, &a, long).await, Reservation::Taken);

    // A wrong token changes nothing.
    let wrong = ReservationToken::random();
    assert!(!store.release(&a, wrong).await.unwrap());
    assert!(!store.commit(&a, wrong).await.unwrap());
    assert_eq!(reserve(&*store, &a, long).await, Reservation::Taken);

    // Release → reservable again; the old token is dead.
    assert!(store.release(&a, t).await.unwrap());
    let t2 = reserved(reserve(&*store, &a, long).await);
    assert!(!store.commit(&a, t).await.unwrap());

    // Commit → taken forever: neither the lease, nor a release, nor a second commit frees it.
    assert!(store.commit(&a, t2).await.unwrap());
    assert!(!store.release(&a, t2).await.unwrap());
    assert!(!store.commit(&a, t2).await.unwrap());
    assert_eq!(
        reserve(&*store, &a, Duration::from_millis(1)).await,
        Reservation::Taken
    );

    // Lease expiry → reservable; the expired holder can neither commit nor release.
    let b = keys.key_for("CI-B");
    let expired = reserved(reserve(&*store, &b, Duration::from_millis(300)).await);
    assert_eq!(reserve(&*store, &b, long).await, Reservation::Taken);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fresh = reserved(reserve(&*store, &b, long).await);
    assert!(!store.commit(&b, expired).await.unwrap());
    assert!(!store.release(&b, expired).await.unwrap());
    assert!(store.commit(&b, fresh).await.unwrap());

    // 200 concurrent reservations of one key → exactly one.
    let d = keys.key_for("CI-D");
    let attempts = (0..200).map(|_| {
        let store = store.clone();
        let d = d.clone();
        tokio::spawn(async move { store.reserve(&d, long).await.unwrap() })
    });
    let results = futures_util::future::join_all(attempts).await;
    let winners = results
        .into_iter()
        .filter(|r| matches!(r.as_ref().unwrap(), Reservation::Reserved(_)))
        .count();
    assert_eq!(winners, 1);
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
    let http = reqwest::Client::new();
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
    let http = reqwest::Client::new();
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
    let http = reqwest::Client::new();
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
    let http = reqwest::Client::new();
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
    let service = app(CertificationLayer::new(emulator.client()), accounts.clone());
    // The client gives up while the handler is still working: the future is dropped.
    let first = tokio::time::timeout(
        Duration::from_millis(500),
        service.clone().oneshot(signup_request("/certifications")),
    )
    .await;
    assert!(first.is_err(), "the first request was cut off");
    tokio::time::sleep(Duration::from_millis(100)).await; // the background release
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
    let service = app(CertificationLayer::new(emulator.client()), accounts.clone());
    let crashed = tokio::spawn(service.clone().oneshot(signup_request("/panicking"))).await;
    assert!(crashed.unwrap_err().is_panic());
    tokio::time::sleep(Duration::from_millis(100)).await;
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
