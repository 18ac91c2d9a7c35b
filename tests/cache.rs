//! The layer's lookup cache, end to end: an axum app in front of the PortOne emulator over
//! loopback sockets, with the emulator counting every upstream call.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use iamport_e2e::World;
use iamport_mock::Endpoint;
use iamport_tower::cache::LookupCache;
use iamport_tower::{CertificationLayer, IamportClient, ImpUid, require_certified};
use serde_json::json;
use tower::ServiceExt as _;

const ADULT: &str = "imp_100000000001";
const NOT_CERTIFIED: &str = "imp_100000000005";
const UNKNOWN: &str = "imp_999999999999";

#[require_certified(max_birth_year = 1999)]
async fn signup() -> StatusCode {
    StatusCode::CREATED
}

fn app(client: IamportClient, cache: LookupCache) -> Router {
    Router::new()
        .route("/certifications", post(signup))
        .layer(CertificationLayer::new(client).lookup_cache(cache))
}

async fn world(cache: LookupCache) -> World {
    World::start(|client| app(client, cache)).await
}

async fn submit(w: &World, id: &str) -> u16 {
    w.post_json("/certifications", json!({ "imp_uid": id }))
        .await
        .0
}

/// Waits (at most 10 s) until the emulator has seen `calls` lookups of `id`.
async fn until_called(w: &World, id: &str, calls: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while w.emulator.calls_for(id) < calls {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the emulator sees the lookup");
}

/// Three waves of submissions of one id: 20 at once, 20 more while the first lookup is in
/// flight, then 20 one after another once it has been answered. Returns the upstream lookups.
async fn burst(w: &World) -> u64 {
    w.emulator.set_latency(Duration::from_millis(300));
    let wave = |n| futures_util::future::join_all((0..n).map(|_| submit(w, ADULT)));
    let first = tokio::spawn({
        let http = w.http.clone();
        let url = w.url("/certifications");
        async move {
            let sends = (0..20).map(|_| http.post(&url).json(&json!({ "imp_uid": ADULT })).send());
            futures_util::future::join_all(sends)
                .await
                .into_iter()
                .map(|r| r.expect("the app answers").status().as_u16())
                .collect::<Vec<_>>()
        }
    });
    until_called(w, ADULT, 1).await;
    let second = wave(20).await;
    let first = first.await.expect("first wave");
    w.emulator.set_latency(Duration::ZERO);
    let mut third = Vec::new();
    for _ in 0..20 {
        third.push(submit(w, ADULT).await);
    }
    for status in first.iter().chain(&second).chain(&third) {
        assert_eq!(*status, 201);
    }
    w.emulator.calls_for(ADULT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_submissions_of_one_id_in_three_waves_make_one_lookup() {
    let w = world(LookupCache::default()).await;
    assert_eq!(burst(&w).await, 1);
    assert_eq!(w.emulator.calls(Endpoint::GetToken), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_only_concurrent_submissions_share_a_lookup() {
    let w = world(LookupCache::disabled()).await;
    // Each sequential submission makes its own call (the overlapping waves share one, unless
    // a loaded machine delays some of them past its answer).
    assert!(burst(&w).await > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_requests_during_a_lookup_join_it_and_nothing_is_kept() {
    let w = world(LookupCache::disabled()).await;
    // The token first (the world's client gives up after 3 s), then a latency long enough
    // that the joiners surely arrive while the first lookup is in flight.
    assert_eq!(submit(&w, NOT_CERTIFIED).await, 403);
    w.emulator.set_latency(Duration::from_millis(1500));
    let first = tokio::spawn({
        let http = w.http.clone();
        let url = w.url("/certifications");
        async move {
            let response = http.post(&url).json(&json!({ "imp_uid": ADULT })).send();
            response.await.expect("the app answers").status().as_u16()
        }
    });
    until_called(&w, ADULT, 1).await;
    let joiners = futures_util::future::join_all((0..20).map(|_| submit(&w, ADULT))).await;
    assert_eq!(first.await.expect("first"), 201);
    assert!(joiners.iter().all(|status| *status == 201), "{joiners:?}");
    assert_eq!(
        w.emulator.calls_for(ADULT),
        1,
        "the joiners shared the first lookup"
    );
    // Nothing is kept once the lookup's waiters are gone: the next request asks again.
    w.emulator.set_latency(Duration::ZERO);
    assert_eq!(submit(&w, ADULT).await, 201);
    assert_eq!(w.emulator.calls_for(ADULT), 2);
}

/// A signup request for `ADULT`, to send in-process.
fn request() -> Request<Body> {
    Request::post("/certifications")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "imp_uid": ADULT }).to_string()))
        .unwrap()
}

/// Polls `first` (a request that must not answer yet) until the emulator has seen `calls`
/// lookups of `ADULT` (at most 10 s).
async fn started<F: Future + Unpin>(first: &mut F, emulator: &iamport_mock::Emulator, calls: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                _ = &mut *first => panic!("answered before the emulator saw the lookup"),
                () = tokio::time::sleep(Duration::from_millis(2)) => {
                    if emulator.calls_for(ADULT) == calls {
                        break;
                    }
                }
            }
        }
    })
    .await
    .expect("the lookup starts");
}

#[tokio::test]
async fn a_lookup_whose_request_went_away_still_serves_the_next_one() {
    let emulator = iamport_mock::Emulator::start().await.expect("emulator");
    emulator.set_latency(Duration::from_millis(300));
    let app = app(emulator.client(), LookupCache::default());
    // The first request starts the lookup, then is dropped (a client that hung up).
    let mut first = Box::pin(app.clone().oneshot(request()));
    started(&mut first, &emulator, 1).await;
    drop(first);
    let second = app.oneshot(request()).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(emulator.calls_for(ADULT), 1);
}

/// Without the cache too: the requests that joined a lookup get its answer when the request
/// that started it goes away, and PortOne is asked once.
#[tokio::test]
async fn joiners_get_the_answer_of_a_lookup_whose_first_request_went_away() {
    let emulator = iamport_mock::Emulator::start().await.expect("emulator");
    let app = app(emulator.client(), LookupCache::disabled());
    // The token first, so that the lookup is the only call in flight.
    let warm = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(warm.status(), StatusCode::CREATED);
    emulator.set_latency(Duration::from_millis(500));
    let mut first = Box::pin(app.clone().oneshot(request()));
    started(&mut first, &emulator, 2).await;
    // Each joiner, polled once, reads its body and joins the lookup in flight.
    let mut joiners: Vec<_> = (0..5)
        .map(|_| Box::pin(app.clone().oneshot(request())))
        .collect();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for joiner in &mut joiners {
        assert!(joiner.as_mut().poll(&mut cx).is_pending());
    }
    drop(first);
    for joiner in joiners {
        assert_eq!(joiner.await.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(
        emulator.calls_for(ADULT),
        2,
        "the joiners got the first request's lookup, not one of their own"
    );
}

#[tokio::test]
async fn not_found_is_kept_briefly() {
    let w = world(LookupCache::default()).await;
    assert_eq!(submit(&w, UNKNOWN).await, 403);
    assert_eq!(submit(&w, UNKNOWN).await, 403);
    assert_eq!(w.emulator.calls_for(UNKNOWN), 1);

    let w = world(LookupCache::default().not_found_for(Duration::ZERO)).await;
    assert_eq!(submit(&w, UNKNOWN).await, 403);
    assert_eq!(submit(&w, UNKNOWN).await, 403);
    assert_eq!(w.emulator.calls_for(UNKNOWN), 2);
}

#[tokio::test]
async fn errors_and_uncertified_records_are_never_kept() {
    let w = world(LookupCache::default()).await;
    // Every attempt of the first lookup (the client retries 5xx) fails.
    w.emulator.fail_next(
        Endpoint::GetCertification,
        10,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    assert_eq!(submit(&w, ADULT).await, 502);
    let failed = w.emulator.calls_for(ADULT);
    assert!(failed >= 1);
    w.emulator.clear_faults();
    assert_eq!(submit(&w, ADULT).await, 201);
    assert_eq!(w.emulator.calls_for(ADULT), failed + 1);
    assert_eq!(submit(&w, ADULT).await, 201);
    assert_eq!(w.emulator.calls_for(ADULT), failed + 1, "now it is kept");

    assert_eq!(submit(&w, NOT_CERTIFIED).await, 403);
    assert_eq!(submit(&w, NOT_CERTIFIED).await, 403);
    assert_eq!(w.emulator.calls_for(NOT_CERTIFIED), 2);
}

#[tokio::test]
async fn deleting_through_the_client_evicts_the_verification() {
    let emulator = iamport_mock::Emulator::start().await.expect("emulator");
    let client = emulator.client();
    let app = iamport_e2e::serve_axum(app(client.clone(), LookupCache::default())).await;
    let http = iamport_e2e::http();
    let submit = || async {
        http.post(format!("{}/certifications", app.url))
            .json(&json!({ "imp_uid": ADULT }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(submit().await, 201);
    assert_eq!(submit().await, 201);
    assert_eq!(emulator.calls(Endpoint::GetCertification), 1, "kept");

    let id: ImpUid = ADULT.parse().unwrap();
    client.delete_certification(&id).await.expect("deleted");
    assert_eq!(emulator.calls(Endpoint::DeleteCertification), 1);
    assert_eq!(submit().await, 403, "a deleted verification admits nobody");
    assert_eq!(emulator.calls(Endpoint::GetCertification), 2);
}
