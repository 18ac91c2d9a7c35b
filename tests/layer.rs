//! The layer, the policy check and `#[require_certified]`, end to end: an axum router and a
//! hyper 1 server, each in front of the PortOne emulator, driven over loopback sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use iamport_e2e::{Captured, World, post_chunked, serve_axum, serve_hyper, status};
use iamport_mock::{Emulator, Endpoint, person};
use iamport_tower::body::Body;
use iamport_tower::{
    CertificationLayer, Certified, IamportClient, Policy, Rejection, RequireCertifiedLayer,
    require_certified,
};
use serde::Deserialize;
use serde_json::{Value, json};

const ADULT: &str = "imp_100000000001";
const MINOR: &str = "imp_100000000002";
const FOREIGNER: &str = "imp_100000000003";
const BORN_2000_01_01: &str = "imp_100000000004";
const NOT_CERTIFIED: &str = "imp_100000000005";
const UNKNOWN: &str = "imp_999999999999";

#[derive(Clone)]
struct AppState {
    greeting: Arc<str>,
}

#[derive(Deserialize)]
struct SignupForm {
    imp_uid: String,
    nickname: Option<String>,
}

/// The guide's adult check, with the handler's own extractors after the guard.
#[require_certified(max_birth_year = 1999)]
async fn signup(
    cert: Certified,
    State(state): State<AppState>,
    Json(form): Json<SignupForm>,
) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({
            "greeting": &*state.greeting,
            "imp_uid": form.imp_uid,
            "nickname": form.nickname,
            "born_in": cert.birth_date.map(|d| d.year()),
        })),
    )
}

#[require_certified(max_birth_year = 1999)]
async fn signup_form(Form(form): Form<SignupForm>) -> (StatusCode, String) {
    (StatusCode::CREATED, form.nickname.unwrap_or_default())
}

/// Echoes the raw body: the bytes must be exactly those the client sent.
#[require_certified(max_birth_year = 1999)]
async fn echo(body: Bytes) -> Bytes {
    body
}

#[require_certified(min_age = 19)]
async fn adult_path(Path(item): Path<u32>, cert: Certified) -> Result<String, StatusCode> {
    if item == 0 {
        // `return` inside a guarded body still returns from the handler.
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(format!("item {item} for {}", cert.id))
}

#[require_certified(fresh_within = "10m")]
async fn fresh() -> &'static str {
    "fresh"
}

#[require_certified(foreigners = false)]
async fn nationals() -> &'static str {
    "national"
}

#[require_certified(min_birth_year = 2000)]
async fn born_2000_or_later() -> &'static str {
    "young"
}

async fn optional(cert: Option<Certified>) -> String {
    match cert {
        Some(cert) => format!("verified {}", cert.id),
        None => "anonymous".into(),
    }
}

async fn unguarded(body: Bytes) -> String {
    format!("{} bytes", body.len())
}

fn router(client: IamportClient) -> Router {
    let state = AppState {
        greeting: "환영합니다".into(),
    };
    let orders = Router::new()
        .route("/orders", post(|| async { "ordered" }))
        .route_layer(RequireCertifiedLayer::new(Policy::new().min_age(19)));
    Router::new()
        .route("/certifications", post(signup))
        .route("/certifications/redirect", get(signup))
        .route("/form", post(signup_form))
        .route("/echo", post(echo))
        .route("/adult/{item}", get(adult_path).post(adult_path))
        .route("/fresh", get(fresh))
        .route("/nationals", get(nationals))
        .route("/young", get(born_2000_or_later))
        .route("/optional", get(optional))
        .route("/unguarded", post(unguarded))
        .merge(orders)
        .with_state(state)
        .layer(CertificationLayer::new(client).body_limit(1024))
}

async fn world() -> World {
    World::start(router).await
}

fn problem(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn popup_flow_with_json_state_and_the_handlers_own_extractors() {
    let w = world().await;
    let (status, body) = w
        .post_json(
            "/certifications",
            json!({"imp_uid": ADULT, "nickname": "길동"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let body = problem(&body);
    assert_eq!(body["greeting"], "환영합니다");
    assert_eq!(body["nickname"], "길동");
    assert_eq!(body["imp_uid"], ADULT);
    assert_eq!(body["born_in"], 1990);
}

#[tokio::test]
async fn redirect_flow_reads_the_query_string() {
    let w = world().await;
    let url = format!(
        "{}/certifications/redirect?imp_uid={ADULT}&merchant_uid=m1&success=true",
        w.app.url
    );
    // The guarded GET handler also has a Json extractor: a body naming another id is a
    // 400 (the handler would read that one), looked up by nobody.
    let response = w
        .http
        .get(&url)
        .json(&json!({"imp_uid": "from-body", "nickname": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(w.lookups(), 0);
    // The same id in both, or none in the body: the query's.
    let response = w
        .http
        .get(&url)
        .json(&json!({"imp_uid": ADULT, "nickname": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(w.emulator.calls_for(ADULT), 1);
}

#[tokio::test]
async fn form_bodies_work_and_reach_the_handler_intact() {
    let w = world().await;
    let response = w
        .http
        .post(format!("{}/form", w.app.url))
        .form(&[("imp_uid", ADULT), ("nickname", "폼사용자")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.text().await.unwrap(), "폼사용자");
}

#[tokio::test]
async fn the_handler_reads_exactly_the_bytes_the_client_sent() {
    let w = world().await;
    let raw = format!(
        "{{ \"zzz\": [1, 2, {{\"deep\": true}}],\n  \"imp_uid\" : \"{ADULT}\", \"é\": \"✓\" }}"
    );
    let response = w
        .http
        .post(format!("{}/echo", w.app.url))
        .header("content-type", "application/json; charset=utf-8")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), raw);
    // Chunked, several frames.
    let chunks: Vec<&[u8]> = raw.as_bytes().chunks(7).collect();
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json";
    assert_eq!(post_chunked(w.app.addr, head, &chunks).await, 200);
}

#[tokio::test]
async fn every_status_of_the_design_table_axum() {
    let w = world().await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/certifications",
            json!({"nickname": "x"}),
            400,
            "missing-verification-id",
        ),
        (
            "/certifications",
            json!({"imp_uid": "imp_1/../../payments"}),
            400,
            "invalid-verification-id",
        ),
        (
            "/certifications",
            json!({"imp_uid": 12}),
            400,
            "malformed-body",
        ),
        (
            "/certifications",
            json!({"imp_uid": UNKNOWN}),
            403,
            "unknown-verification",
        ),
        (
            "/certifications",
            json!({"imp_uid": NOT_CERTIFIED}),
            403,
            "not-certified",
        ),
        (
            "/certifications",
            json!({"imp_uid": MINOR}),
            403,
            "policy-not-met",
        ),
        (
            "/certifications",
            json!({"imp_uid": BORN_2000_01_01}),
            403,
            "policy-not-met",
        ),
        ("/certifications", json!({"imp_uid": ADULT}), 201, ""),
    ];
    for (path, body, want, code) in cases {
        let (status, text) = w.post_json(path, body.clone()).await;
        assert_eq!(status, want, "{body}: {text}");
        if !code.is_empty() {
            let p = problem(&text);
            assert_eq!(
                p["type"],
                format!("urn:iamport-tower:problem:{code}"),
                "{text}"
            );
            assert_eq!(p["status"], want);
        }
    }
    // Redirect flow: no id, cancelled (both spellings).
    assert_eq!(w.get("/certifications/redirect").await.0, 400);
    let before = w.upstream_calls();
    for query in ["success=false", "imp_success=false"] {
        let (status, text) = w
            .get(&format!("/certifications/redirect?imp_uid={ADULT}&{query}"))
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            problem(&text)["type"],
            "urn:iamport-tower:problem:verification-cancelled"
        );
    }
    assert_eq!(
        w.upstream_calls(),
        before,
        "a cancelled verification is not looked up"
    );
}

#[tokio::test]
async fn upstream_failures_map_to_502_503_504() {
    let w = world().await;
    w.emulator.fail_next(
        Endpoint::GetCertification,
        3,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    let (status, text) = w
        .post_json("/certifications", json!({"imp_uid": ADULT}))
        .await;
    assert_eq!(status, 502, "{text}");
    assert!(
        !text.contains("Internal Server Error"),
        "no upstream detail: {text}"
    );

    w.emulator.garbage_next(Endpoint::GetCertification, 1);
    assert_eq!(
        w.post_json("/certifications", json!({"imp_uid": ADULT}))
            .await
            .0,
        502
    );

    w.emulator.set_latency(Duration::from_secs(30));
    assert_eq!(
        w.post_json("/certifications", json!({"imp_uid": ADULT}))
            .await
            .0,
        504
    );
    w.emulator.set_latency(Duration::ZERO);

    // PortOne gone entirely.
    let url = w.emulator.url();
    drop(w.emulator);
    let client = IamportClient::builder()
        .base_url(url)
        .key("k")
        .secret("s")
        .build()
        .unwrap();
    let app = serve_axum(router(client)).await;
    let response = w
        .http
        .post(format!("{}/certifications", app.url))
        .json(&json!({"imp_uid": ADULT}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_by_header_and_by_stream() {
    let w = world().await;
    let big = json!({"imp_uid": ADULT, "padding": "x".repeat(4096)});
    let (status, text) = w.post_json("/certifications", big.clone()).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(
        problem(&text)["type"],
        "urn:iamport-tower:problem:payload-too-large"
    );
    // No Content-Length: the layer stops reading at the limit.
    let raw = big.to_string();
    let chunks: Vec<&[u8]> = raw.as_bytes().chunks(512).collect();
    let head = "POST /certifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json";
    assert_eq!(post_chunked(w.app.addr, head, &chunks).await, 413);
    assert_eq!(w.upstream_calls(), 0);
    // An unguarded route behind the same layer still gets the whole body.
    let response = w
        .http
        .post(format!("{}/unguarded", w.app.url))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        format!("{} bytes", raw.len())
    );
    let head = "POST /unguarded HTTP/1.1\r\nHost: x\r\nContent-Type: application/json";
    assert_eq!(post_chunked(w.app.addr, head, &chunks).await, 200);
}

#[tokio::test]
async fn other_content_types_are_never_buffered() {
    let w = world().await;
    let response = w
        .http
        .post(format!("{}/certifications", w.app.url))
        .header("content-type", "text/plain")
        .body(format!("imp_uid={ADULT}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(w.upstream_calls(), 0);
}

#[tokio::test]
async fn hostile_ids_are_400_with_zero_upstream_calls() {
    let w = world().await;
    for id in [
        "imp_1/../../payments/imp_2",
        "imp_1%2F..%2Fx",
        "..",
        "imp_1 2",
        "imp_1\n",
        "imp_１",
        "x",
        &format!("imp_{}", "9".repeat(80)),
    ] {
        let (status, _) = w.post_json("/certifications", json!({"imp_uid": id})).await;
        assert_eq!(status, 400, "{id:?}");
    }
    for query in [
        "imp_uid=imp_1%2F..%2F..%2Fpayments",
        "imp_uid=..%2F",
        "imp_uid=imp_%00",
    ] {
        assert_eq!(
            w.get(&format!("/certifications/redirect?{query}")).await.0,
            400,
            "{query}"
        );
    }
    assert_eq!(w.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_concurrent_requests_for_one_id_make_one_lookup() {
    let w = world().await;
    w.emulator.set_latency(Duration::from_millis(200));
    let requests = (0..100).map(|_| {
        let http = w.http.clone();
        let url = format!("{}/certifications", w.app.url);
        async move {
            http.post(url)
                .json(&json!({"imp_uid": ADULT}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, 201);
    }
    assert_eq!(w.emulator.calls_for(ADULT), 1);
    assert_eq!(w.emulator.calls(Endpoint::GetToken), 1);
}

#[tokio::test]
async fn state_path_and_early_return_in_a_guarded_handler() {
    let w = world().await;
    let (status, body) = w.get(&format!("/adult/7?imp_uid={ADULT}")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "item 7 for imp_100000000001")
    );
    assert_eq!(w.get(&format!("/adult/0?imp_uid={ADULT}")).await.0, 404);
    assert_eq!(w.get(&format!("/adult/7?imp_uid={MINOR}")).await.0, 403);
    // Path extraction failures come after the guard: an unverified request never learns more.
    assert_eq!(w.get("/adult/notanumber").await.0, 400);
}

#[tokio::test]
async fn policy_edges_against_todays_date_in_korea() {
    let w = world().await;
    let today = iamport_tower::korea::today_in_korea();
    let nineteen_today = today.checked_sub(jiff::Span::new().years(19)).unwrap();
    let nineteen_tomorrow = nineteen_today.tomorrow().unwrap();
    w.emulator.add_person(person(
        "imp_500000000001",
        "생일자",
        &nineteen_today.to_string(),
    ));
    w.emulator.add_person(person(
        "imp_500000000002",
        "내일생일",
        &nineteen_tomorrow.to_string(),
    ));
    assert_eq!(
        w.get("/adult/1?imp_uid=imp_500000000001").await.0,
        200,
        "19th birthday today"
    );
    assert_eq!(
        w.get("/adult/1?imp_uid=imp_500000000002").await.0,
        403,
        "19th birthday tomorrow"
    );

    // 1 January: born 2000-01-01 (an old record with only `birth`, 1999-12-31T15:00Z).
    assert_eq!(
        w.get(&format!("/young?imp_uid={BORN_2000_01_01}")).await.0,
        200
    );
    w.emulator
        .add_person(person("imp_500000000003", "섣달", "1999-12-31"));
    assert_eq!(w.get("/young?imp_uid=imp_500000000003").await.0, 403);
    // Admitted by max_birth_year = 1999; the handler's own Json extractor then wants a body.
    assert_eq!(
        w.get("/certifications/redirect?imp_uid=imp_500000000003")
            .await
            .0,
        415
    );

    // Freshness: the sample persons were verified "now"; this one a day ago.
    let mut stale = person("imp_500000000004", "어제인증", "1990-05-05");
    stale["certified_at"] = json!(jiff::Timestamp::now().as_second() - 86_400);
    w.emulator.add_person(stale);
    assert_eq!(w.get(&format!("/fresh?imp_uid={ADULT}")).await.0, 200);
    let (status, text) = w.get("/fresh?imp_uid=imp_500000000004").await;
    assert_eq!(status, 403);
    assert!(
        problem(&text)["detail"]
            .as_str()
            .unwrap()
            .contains("10 minutes"),
        "{text}"
    );

    assert_eq!(
        w.get(&format!("/nationals?imp_uid={FOREIGNER}")).await.0,
        403
    );
    assert_eq!(w.get(&format!("/nationals?imp_uid={ADULT}")).await.0, 200);
}

/// Upstream dates outside a plausible range are unknown, so the rules that need them refuse:
/// `birth: -99999999999` with no `birthday` (the year −1199), a birth date after today, a
/// completion an hour in the future (past the documented 5-minute clock skew).
#[tokio::test]
async fn implausible_upstream_dates_are_unknown_so_age_and_freshness_refuse() {
    let w = world().await;
    let mut ancient = person("imp_500000000011", "고대인", "1990-01-01");
    let record = ancient.as_object_mut().unwrap();
    record.remove("birthday");
    record.insert("birth".into(), json!(-99_999_999_999_i64));
    w.emulator.add_person(ancient);
    let (status, text) = w.get("/adult/1?imp_uid=imp_500000000011").await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        w.emulator.calls_for("imp_500000000011"),
        1,
        "it was looked up"
    );
    // The other rules still decide: the record is certified and national.
    assert_eq!(w.get("/nationals?imp_uid=imp_500000000011").await.0, 200);

    let tomorrow = iamport_tower::korea::today_in_korea().tomorrow().unwrap();
    w.emulator
        .add_person(person("imp_500000000012", "미래인", &tomorrow.to_string()));
    assert_eq!(w.get("/young?imp_uid=imp_500000000012").await.0, 403);

    let mut early = person("imp_500000000013", "미래인증", "1990-05-05");
    early["certified_at"] = json!(jiff::Timestamp::now().as_second() + 3_600);
    w.emulator.add_person(early);
    assert_eq!(w.get("/fresh?imp_uid=imp_500000000013").await.0, 403);
    assert_eq!(
        w.emulator.calls_for("imp_500000000013"),
        1,
        "it was looked up"
    );
}

#[tokio::test]
async fn require_certified_layer_and_optional_extractor() {
    let w = world().await;
    let order = |id: &str| {
        w.http
            .post(format!("{}/orders?imp_uid={id}", w.app.url))
            .send()
    };
    assert_eq!(order(ADULT).await.unwrap().status(), 200);
    assert_eq!(order(MINOR).await.unwrap().status(), 403);
    assert_eq!(w.get("/optional").await.1, "anonymous");
    assert_eq!(
        w.get(&format!("/optional?imp_uid={ADULT}")).await.1,
        "verified imp_100000000001"
    );
    assert_eq!(
        w.get(&format!("/optional?imp_uid={NOT_CERTIFIED}")).await.1,
        "anonymous"
    );
}

#[tokio::test]
async fn rejection_bodies_hold_no_personal_data() {
    let w = world().await;
    let emulator_person = |id: &str| {
        iamport_mock::sample_persons()
            .into_iter()
            .find(|p| p["imp_uid"] == id)
            .unwrap()
    };
    for (id, path) in [
        (MINOR, "/certifications/redirect"),
        (FOREIGNER, "/nationals"),
        (MINOR, "/adult/1"),
    ] {
        let p = emulator_person(id);
        let (status, text) = w.get(&format!("{path}?imp_uid={id}")).await;
        assert!(status >= 400);
        for field in ["name", "phone", "birthday", "unique_key", "unique_in_site"] {
            let value = p[field].as_str().unwrap();
            assert!(!text.contains(value), "{field} leaked: {text}");
        }
        assert!(!text.contains("2012"), "birth year leaked: {text}");
    }
}

#[tokio::test]
async fn a_custom_rejection_handler_replaces_the_body() {
    let emulator = Emulator::start().await.unwrap();
    let layer = CertificationLayer::new(emulator.client()).on_rejection(|rejection: &Rejection| {
        Response::builder()
            .status(rejection.status())
            .header("content-type", "application/json")
            .body(Bytes::from(
                json!({"ok": false, "reason": rejection.code()}).to_string(),
            ))
            .unwrap()
    });
    let app = serve_axum(
        Router::new()
            .route("/certifications", post(signup_form))
            .route(
                "/orders",
                post(|| async { "ok" }).route_layer(RequireCertifiedLayer::new(Policy::new())),
            )
            .layer(layer),
    )
    .await;
    let http = iamport_e2e::http();
    for path in ["/certifications", "/orders"] {
        let response = http
            .post(format!("{}{path}?imp_uid={MINOR}", app.url))
            .send()
            .await
            .unwrap();
        let want = if path == "/orders" { 200 } else { 403 };
        assert_eq!(response.status(), want, "{path}");
        if want == 403 {
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                json!({"ok": false, "reason": "policy-not-met"})
            );
        }
    }
    let response = http
        .post(format!("{}/orders?imp_uid={UNKNOWN}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "unknown-verification"
    );
}

#[tokio::test]
async fn an_inner_layer_without_its_own_handler_keeps_the_outer_layers() {
    let emulator = Emulator::start().await.unwrap();
    let outer = CertificationLayer::new(emulator.client()).on_rejection(|rejection: &Rejection| {
        Response::builder()
            .status(rejection.status())
            .body(Bytes::from(format!("outer: {}", rejection.code())))
            .unwrap()
    });
    let inner = || CertificationLayer::new(emulator.client());
    let app = serve_axum(
        Router::new()
            // A route with a layer of its own (say, one with a unique store), without a handler.
            .route("/inner", post(signup_form).layer(inner()))
            .route(
                "/own",
                post(signup_form).layer(inner().on_rejection(|rejection: &Rejection| {
                    Response::builder()
                        .status(rejection.status())
                        .body(Bytes::from(format!("own: {}", rejection.code())))
                        .unwrap()
                })),
            )
            .layer(outer),
    )
    .await;
    let http = iamport_e2e::http();
    for (path, want) in [
        ("/inner", "outer: policy-not-met"),
        ("/own", "own: policy-not-met"),
    ] {
        let response = http
            .post(format!("{}{path}?imp_uid={MINOR}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        assert_eq!(response.text().await.unwrap(), want, "{path}");
    }
}

#[tokio::test]
async fn a_binding_asks_for_the_session_only_when_there_is_an_id() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let emulator = Emulator::start().await.unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let binding = iamport_tower::binding::Binding::new("binding secret for the test, 32+ bytes")
        .session_key(move |_parts| {
            counter.fetch_add(1, Ordering::SeqCst);
            Some("session".into())
        });
    let app = serve_axum(
        Router::new()
            .route("/", get(|| async { "home" }))
            .route("/certifications", post(signup_form))
            .layer(CertificationLayer::new(emulator.client()).binding(binding)),
    )
    .await;
    let http = iamport_e2e::http();
    for path in ["/", "/nope", "/?page=2"] {
        http.get(format!("{}{path}", app.url)).send().await.unwrap();
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "no id, no session looked for"
    );
    let response = http
        .post(format!("{}/certifications", app.url))
        .form(&[("imp_uid", ADULT), ("nickname", "kim")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "an unbound route admits");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the session is read for an id"
    );
}

// The subscriber is per thread: a current-thread runtime keeps the handler on this one.
#[tokio::test(flavor = "current_thread")]
async fn a_missing_layer_logs_the_fix() {
    use tower::ServiceExt as _;
    let (captured, _guard) = Captured::install();
    let app = Router::new().route("/certifications", post(signup_form));
    let response = app
        .oneshot(
            Request::post("/certifications")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("imp_uid={ADULT}")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let logs = captured.text();
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(
        logs.contains(".layer(CertificationLayer::new(client))"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_guarded_handler_without_the_layer_is_500() {
    let app = serve_axum(Router::new().route("/certifications", post(signup_form))).await;
    let response = iamport_e2e::http()
        .post(format!("{}/certifications", app.url))
        .form(&[("imp_uid", ADULT)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:iamport-tower:problem:layer-missing");
}

// ---- hyper 1: `service_fn` + `TowerToHyperService`, no axum routing -------------------------

#[require_certified(min_age = 19)]
async fn hyper_handler(req: Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
    let cert = Certified::from_extensions(req.extensions()).expect("the guard admitted it");
    let id = cert.id.clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{id} {}",
        body.len()
    )))))
}

#[require_certified(min_age = 19)]
async fn hyper_plain_response(req: Request<Body>) -> Response<Full<Bytes>> {
    let _ = &req;
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

#[tokio::test]
async fn every_status_of_the_design_table_hyper() {
    let emulator = Emulator::start().await.unwrap();
    // Generous: a loaded CI machine must not turn a slow answer into a 504.
    let client = emulator
        .client_builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(CertificationLayer::new(client.clone()).body_limit(1024))
        .service_fn(hyper_handler);
    let server = serve_hyper(service).await;
    let plain = serve_hyper(
        tower::ServiceBuilder::new()
            .layer(CertificationLayer::new(client))
            .service_fn(|req| async { Ok::<_, Infallible>(hyper_plain_response(req).await) }),
    )
    .await;
    let http = iamport_e2e::http();
    let post = |body: Value| status(http.post(&server.url).json(&body));
    let get = |url: String| status(http.get(url));

    assert_eq!(post(json!({"imp_uid": ADULT})).await, 200);
    let response = http
        .get(format!("{}/?imp_uid={ADULT}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), format!("{ADULT} 0"));
    let form = http
        .post(&server.url)
        .form(&[("imp_uid", ADULT), ("x", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        form.text().await.unwrap(),
        format!("{ADULT} 28"),
        "the handler got the whole form body back"
    );
    assert_eq!(post(json!({})).await, 400);
    assert_eq!(post(json!({"imp_uid": "imp_../x"})).await, 400);
    assert_eq!(
        get(format!("{}/?imp_uid={ADULT}&success=false", server.url)).await,
        400
    );
    assert_eq!(
        post(json!({"imp_uid": ADULT, "pad": "x".repeat(2000)})).await,
        413
    );
    let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json";
    let pad = format!(
        "{{\"imp_uid\":\"{ADULT}\",\"pad\":\"{}\"}}",
        "y".repeat(3000)
    );
    let chunks: Vec<&[u8]> = pad.as_bytes().chunks(256).collect();
    assert_eq!(post_chunked(server.addr, head, &chunks).await, 413);
    assert_eq!(post(json!({"imp_uid": UNKNOWN})).await, 403);
    assert_eq!(post(json!({"imp_uid": NOT_CERTIFIED})).await, 403);
    let minor = http
        .post(&server.url)
        .json(&json!({"imp_uid": MINOR}))
        .send()
        .await
        .unwrap();
    assert_eq!(minor.status(), 403);
    assert_eq!(minor.headers()["content-type"], "application/problem+json");

    // An id not looked up yet: ADULT's verification is in the layer's lookup cache now.
    emulator.fail_next(Endpoint::GetCertification, 3, StatusCode::BAD_GATEWAY);
    assert_eq!(post(json!({"imp_uid": FOREIGNER})).await, 502);
    emulator.set_latency(Duration::from_secs(30));
    assert_eq!(post(json!({"imp_uid": FOREIGNER})).await, 504);
    emulator.set_latency(Duration::ZERO);

    assert_eq!(get(format!("{}/?imp_uid={ADULT}", plain.url)).await, 200);
    assert_eq!(get(format!("{}/?imp_uid={MINOR}", plain.url)).await, 403);

    // No layer in front of a request-style guarded handler: 500.
    let bare = serve_hyper(tower::service_fn(
        |req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(hyper_plain_response(req.map(Body::new)).await)
        },
    ))
    .await;
    assert_eq!(get(format!("{}/?imp_uid={ADULT}", bare.url)).await, 500);

    // Unreachable PortOne.
    let url = emulator.url();
    drop(emulator);
    let gone = serve_hyper(
        tower::ServiceBuilder::new()
            .layer(CertificationLayer::new(
                IamportClient::builder()
                    .base_url(url)
                    .key("k")
                    .secret("s")
                    .build()
                    .unwrap(),
            ))
            .service_fn(hyper_handler),
    )
    .await;
    assert_eq!(get(format!("{}/?imp_uid={ADULT}", gone.url)).await, 503);
}

// ---- query_only: hyper's own `Request<Incoming>`, untouched --------------------------------

#[require_certified(min_age = 19, unique = true)]
async fn incoming_handler(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

#[tokio::test]
async fn query_only_mode_keeps_the_request_and_its_body_type() {
    let emulator = Emulator::start().await.unwrap();
    let server = serve_hyper(
        tower::ServiceBuilder::new()
            .layer(CertificationLayer::new(emulator.client()).query_only())
            .service_fn(incoming_handler),
    )
    .await;
    let http = iamport_e2e::http();
    let body = json!({"imp_uid": MINOR, "note": "the body is the handler's, unread"}).to_string();
    let response = http
        .post(format!("{}/?imp_uid={ADULT}", server.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.text().await.unwrap(),
        body,
        "passed through untouched"
    );
    let again = http.post(format!("{}/?imp_uid={ADULT}", server.url));
    assert_eq!(status(again).await, 409, "unique works in query_only mode");
    let minor = http.get(format!("{}/?imp_uid={MINOR}", server.url));
    assert_eq!(status(minor).await, 403);
    let in_body_only = http.post(&server.url).json(&json!({"imp_uid": ADULT}));
    assert_eq!(status(in_body_only).await, 400, "bodies are never read");
    let cancelled = http.get(format!("{}/?imp_uid={ADULT}&success=false", server.url));
    assert_eq!(status(cancelled).await, 400);
}

#[tokio::test(flavor = "current_thread")]
async fn the_layer_logs_no_personal_data() {
    use tower::ServiceExt as _;
    let (captured, _guard) = Captured::install();

    let emulator = Emulator::start().await.unwrap();
    let app = router(emulator.client());
    let call = |id: &str| {
        app.clone().oneshot(
            Request::post("/certifications")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"imp_uid": id, "nickname": "n"}).to_string(),
                ))
                .unwrap(),
        )
    };
    for id in [ADULT, MINOR, FOREIGNER, NOT_CERTIFIED, UNKNOWN] {
        call(id).await.unwrap();
    }
    // An id not looked up yet (the others are in the layer's lookup cache).
    emulator.fail_next(Endpoint::GetCertification, 3, StatusCode::BAD_GATEWAY);
    assert_eq!(call(BORN_2000_01_01).await.unwrap().status(), 502);

    let logs = captured.text();
    assert!(logs.contains("lookup failed"), "the capture works: {logs}");
    for person in iamport_mock::sample_persons() {
        for field in ["name", "phone", "birthday", "unique_key", "unique_in_site"] {
            if let Some(value) = person[field].as_str() {
                assert!(
                    !logs.contains(value),
                    "{field} leaked into the logs: {logs}"
                );
            }
        }
    }
}
