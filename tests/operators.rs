//! What operators and Korean users see: rejections in the request's language, refusals in
//! the log (kind and route, no personal data), metrics with the agreed names and labels, one
//! token per lifetime from startup on.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use iamport_e2e::{Captured, World, serve_axum, serve_hyper};
use iamport_mock::{Emulator, Endpoint};
use iamport_tower::body::Body;
use iamport_tower::{
    CertificationLayer, CertificationSource, Certified, IamportClient, Rejection, require_certified,
};
use serde_json::{Value, json};

const ADULT: &str = "imp_100000000001";
const MINOR: &str = "imp_100000000002";
const UNKNOWN: &str = "imp_999999999999";
const OTHER_ADULT: &str = "imp_100000000007";

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(person: Certified) -> (StatusCode, String) {
    (StatusCode::CREATED, person.id.clone())
}

#[require_certified(min_age = 19)]
async fn adults() -> &'static str {
    "welcome"
}

fn router(client: IamportClient) -> Router {
    Router::new()
        .route("/certifications", post(signup))
        .route("/adults", get(adults))
        .layer(CertificationLayer::new(client))
}

/// Status, `Content-Language`, `Vary` and the problem body of `GET path` with this
/// `Accept-Language` (none when empty).
async fn ask(w: &World, path: &str, accept_language: &str) -> (u16, String, String, Value) {
    let mut request = w.http.get(w.url(path));
    if !accept_language.is_empty() {
        request = request.header("accept-language", accept_language);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (language, vary) = (header("content-language"), header("vary"));
    let status = response.status().as_u16();
    (status, language, vary, response.json().await.unwrap())
}

#[tokio::test]
async fn rejections_speak_the_language_the_browser_asks_for() {
    let w = World::start(router).await;
    let minor = format!("/adults?imp_uid={MINOR}");

    // A Korean browser (Chrome's default on a Korean system).
    let (status, language, vary, ko) = ask(&w, &minor, "ko-KR,ko;q=0.9").await;
    assert_eq!((status, language.as_str()), (403, "ko"));
    assert!(
        vary.to_ascii_lowercase().contains("accept-language"),
        "{vary}"
    );
    assert_eq!(ko["title"], "이용 조건을 충족하지 않습니다");
    assert_eq!(ko["detail"], "만 19세 이상인 분만 이용할 수 있습니다.");
    // `type` and `status` do not change with the language.
    assert_eq!(ko["type"], "urn:iamport-tower:problem:policy-not-met");
    assert_eq!(ko["status"], 403);

    // English, explicitly and by default.
    for header in [
        "en",
        "en-US,en;q=0.9",
        "",
        "fr-FR,de;q=0.8",
        "ko;q=0, en;q=0.1",
    ] {
        let (status, language, _, en) = ask(&w, &minor, header).await;
        assert_eq!((status, language.as_str()), (403, "en"), "{header:?}");
        assert_eq!(
            en["detail"], "Only people aged 19 or older can use this service.",
            "{header:?}"
        );
        assert_eq!(en["type"], ko["type"]);
    }

    // Quality values decide, not the order.
    let (_, language, _, body) = ask(&w, &minor, "en;q=0.4, ko;q=0.8").await;
    assert_eq!((language.as_str(), &body["title"]), ("ko", &ko["title"]));
    let (_, language, _, _) = ask(&w, &minor, "ko;q=0.4, en-GB;q=0.8").await;
    assert_eq!(language, "en");

    // Every kind the page can meet, in Korean, with its unchanged status.
    let korean = "ko-KR,ko;q=0.9";
    let cases = [
        ("/adults", 400, "본인인증 ID가 없습니다"),
        (
            &format!("/adults?imp_uid={ADULT}&success=false") as &str,
            400,
            "본인인증이 취소되었습니다",
        ),
        (
            "/adults?imp_uid=imp_1/../x",
            400,
            "본인인증 ID 형식이 올바르지 않습니다",
        ),
        (
            &format!("/adults?imp_uid={UNKNOWN}"),
            403,
            "본인인증 내역을 찾을 수 없습니다",
        ),
    ];
    for (path, want, title) in cases {
        let (status, language, _, body) = ask(&w, path, korean).await;
        assert_eq!((status, language.as_str()), (want, "ko"), "{path}");
        assert_eq!(body["title"], title, "{path}");
        assert_eq!(body["status"], want);
    }
    let (_, _, _, body) = ask(&w, "/adults", korean).await;
    assert_eq!(
        body["detail"],
        "본인인증 ID(imp_uid)를 쿼리 문자열이나 JSON 또는 폼 본문에 담아 보내 주세요."
    );

    // Already registered: 409 in both languages.
    let post = |language: &'static str| {
        w.http
            .post(w.url("/certifications"))
            .header("accept-language", language)
            .json(&json!({ "imp_uid": ADULT }))
    };
    assert_eq!(post("ko").send().await.unwrap().status(), 201);
    let again = post("ko-KR").send().await.unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["title"], "이미 가입된 회원입니다");
    assert_eq!(
        body["detail"],
        "한 사람당 계정은 하나만 만들 수 있습니다. 가입이 진행 중이라면 잠시 후 확인해 주세요."
    );
    let body: Value = post("en").send().await.unwrap().json().await.unwrap();
    assert_eq!(body["title"], "Already registered");
}

#[tokio::test]
async fn on_rejection_still_overrides_every_language() {
    let emulator = Emulator::start().await.unwrap();
    let layer = CertificationLayer::new(emulator.client()).on_rejection(|r: &Rejection| {
        Response::builder()
            .status(r.status())
            .body(Bytes::from(format!("custom {}", r.code())))
            .unwrap()
    });
    let app = serve_axum(Router::new().route("/adults", get(adults)).layer(layer)).await;
    let response = iamport_e2e::http()
        .get(format!("{}/adults?imp_uid={MINOR}", app.url))
        .header("accept-language", "ko-KR,ko;q=0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("content-language").is_none());
    assert_eq!(response.text().await.unwrap(), "custom policy-not-met");
}

#[require_certified(min_age = 19)]
async fn hyper_adults(
    _req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from("welcome"))))
}

#[tokio::test]
async fn query_only_says_the_query_string_only() {
    let emulator = Emulator::start().await.unwrap();
    let server = serve_hyper(
        tower::ServiceBuilder::new()
            .layer(CertificationLayer::new(emulator.client()).query_only())
            .service_fn(hyper_adults),
    )
    .await;
    let http = iamport_e2e::http();
    for (language, want) in [
        (
            "en",
            "Send the identity verification id (imp_uid) in the query string.",
        ),
        (
            "ko-KR,ko;q=0.9",
            "본인인증 ID(imp_uid)를 쿼리 문자열에 담아 보내 주세요.",
        ),
    ] {
        let response = http
            .post(&server.url)
            .header("accept-language", language)
            .json(&json!({ "imp_uid": ADULT }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"], want);
        assert!(!want.contains("JSON") && !want.contains("폼"));
    }
}

// The subscriber is per thread: a current-thread runtime keeps everything on this one.
#[tokio::test(flavor = "current_thread")]
async fn refusals_are_logged_with_their_kind_and_route_and_no_personal_data() {
    use tower::ServiceExt as _;
    let (captured, _guard) = Captured::install();
    let emulator = Emulator::start().await.unwrap();
    let app = router(emulator.client());
    let call = |path: String| {
        app.clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
    };
    let status = |path: String| async { call(path).await.unwrap().status().as_u16() };
    assert_eq!(status(format!("/adults?imp_uid={MINOR}")).await, 403);
    assert_eq!(status(format!("/adults?imp_uid={ADULT}")).await, 200);
    assert_eq!(status("/adults".into()).await, 400);
    emulator.fail_next(
        Endpoint::GetCertification,
        3,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(status(format!("/adults?imp_uid={UNKNOWN}")).await, 502);

    let logs = captured.text();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("refused a request"))
        .collect();
    assert_eq!(refusals.len(), 3, "one line per refusal: {logs}");
    for (line, kind, status) in [
        (refusals[0], "policy-not-met", 403),
        (refusals[1], "missing-verification-id", 400),
        (refusals[2], "upstream-failed", 502),
    ] {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(&format!("kind=\"{kind}\"")), "{line}");
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(line.contains("route=\"/adults\""), "{line}");
    }
    // The upstream failure: WARN, with PortOne's status and the latency, inside the lookup's
    // span.
    let failure = logs
        .lines()
        .find(|l| l.contains("lookup failed"))
        .unwrap_or_else(|| panic!("no upstream failure line: {logs}"));
    assert!(failure.contains(" WARN "), "{failure}");
    assert!(failure.contains("status=503"), "{failure}");
    assert!(failure.contains("latency_ms="), "{failure}");
    assert!(failure.contains("iamport_lookup{"), "{failure}");
    assert!(failure.contains("source=\"v1\""), "{failure}");

    // Nothing personal, and never an id (a bearer credential).
    for person in iamport_mock::sample_persons() {
        for field in ["name", "phone", "birthday", "unique_key", "unique_in_site"] {
            if let Some(value) = person[field].as_str() {
                assert!(!logs.contains(value), "{field} leaked: {logs}");
            }
        }
    }
    for id in [ADULT, MINOR, UNKNOWN] {
        assert!(!logs.contains(id), "the id {id} leaked: {logs}");
    }
}

#[tokio::test]
async fn one_token_fetch_from_startup_on() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    client.warm_up().await.unwrap();
    assert_eq!(emulator.calls(Endpoint::GetToken), 1, "fetched at startup");
    // Through the trait too (what an app holding `Arc<dyn CertificationSource>` calls).
    CertificationSource::warm_up(&client).await.unwrap();
    let app = serve_axum(router(client)).await;
    let http = iamport_e2e::http();
    for id in [ADULT, MINOR, OTHER_ADULT] {
        http.get(format!("{}/adults?imp_uid={id}", app.url))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(emulator.calls(Endpoint::GetCertification), 3);
    assert_eq!(
        emulator.calls(Endpoint::GetToken),
        1,
        "the first request did not fetch again"
    );

    // Wrong credentials fail at startup, naming the fix.
    let wrong = emulator
        .client_builder()
        .secret("not-the-secret")
        .build()
        .unwrap();
    let error = wrong.warm_up().await.unwrap_err();
    assert!(
        matches!(error, iamport_tower::Error::BadCredentials),
        "{error}"
    );
    assert!(error.to_string().contains("IMP_SECRET"));
    // v2 needs no token: nothing to fetch.
    CertificationSource::warm_up(&emulator.v2_client())
        .await
        .unwrap();
    assert_eq!(emulator.calls(Endpoint::GetToken), 2);
}

/// Runs `work` on a current-thread runtime with an in-memory recorder installed for this
/// thread, and returns what it recorded as `name{labels} value` lines.
fn recorded(work: impl AsyncFnOnce()) -> Vec<String> {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work());
    });
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(g) => g.to_string(),
                DebugValue::Histogram(h) => format!("{} observations", h.len()),
            };
            format!("{}{{{}}} {value}", key.name(), labels.join(","))
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn metrics_have_the_agreed_names_and_labels() {
    let lines = recorded(async || {
        let emulator = Emulator::start().await.unwrap();
        let client = emulator
            .client_builder()
            .retry(iamport_tower::client::RetryPolicy::NONE)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let layer = CertificationLayer::new(client.clone());
        let settled = layer.settled();
        let app = serve_axum(
            Router::new()
                .route("/certifications", post(signup))
                .route("/adults", get(adults))
                .layer(layer),
        )
        .await;
        client.warm_up().await.unwrap();
        let http = iamport_e2e::http();
        let get = async |path: &str| {
            http.get(format!("{}{path}", app.url))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(get(&format!("/adults?imp_uid={ADULT}")).await, 200);
        assert_eq!(get(&format!("/adults?imp_uid={MINOR}")).await, 403);
        // One account per person: reserve, commit; then the second attempt finds it taken.
        for want in [201, 409] {
            let signup = http
                .post(format!("{}/certifications", app.url))
                .json(&json!({ "imp_uid": ADULT }));
            assert_eq!(signup.send().await.unwrap().status().as_u16(), want);
        }
        assert_eq!(get(&format!("/adults?imp_uid={UNKNOWN}")).await, 403);
        assert_eq!(get("/adults?imp_uid=imp_x.y").await, 400);
        emulator.fail_next(
            Endpoint::GetCertification,
            1,
            StatusCode::SERVICE_UNAVAILABLE,
        );
        // Another adult: ADULT's verification is in the layer's lookup cache by now.
        assert_eq!(get(&format!("/adults?imp_uid={OTHER_ADULT}")).await, 502);
        // Two requests for one id while its lookup is slow: one lookup, one joined (the
        // failure above was not cached).
        emulator.set_latency(Duration::from_millis(1500));
        let url = format!("{}/adults?imp_uid={OTHER_ADULT}", app.url);
        let (a, b) = tokio::join!(http.get(&url).send(), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            http.get(&url).send().await
        });
        assert_eq!(
            (a.unwrap().status(), b.unwrap().status()),
            (StatusCode::OK, StatusCode::OK)
        );
        // The signup's commit ran alongside its response, in the layer's counted tasks.
        tokio::time::timeout(Duration::from_secs(10), settled)
            .await
            .expect("the commit ends");
    });
    let text = lines.join("\n");
    for want in [
        // A minor is verified (and then refused by the policy).
        r#"iamport_lookups_total{result="verified",source="v1"} 3"#,
        r#"iamport_lookups_total{result="not_found",source="v1"} 1"#,
        r#"iamport_lookups_total{result="invalid_id",source="v1"} 1"#,
        r#"iamport_lookups_total{result="failed",source="v1"} 1"#,
        r#"iamport_lookup_dedup_total{effect="joined"} 1"#,
        // ADULT, MINOR, UNKNOWN, OTHER_ADULT failing, then leading; the signups were hits.
        r#"iamport_lookup_cache_total{effect="miss"} 5"#,
        r#"iamport_lookup_cache_total{effect="hit"} 2"#,
        r#"iamport_token_fetches_total{result="ok"} 1"#,
        r#"iamport_rejections_total{kind="policy-not-met"} 1"#,
        r#"iamport_rejections_total{kind="unknown-verification"} 1"#,
        r#"iamport_rejections_total{kind="invalid-verification-id"} 1"#,
        r#"iamport_rejections_total{kind="upstream-failed"} 1"#,
        r#"iamport_rejections_total{kind="already-registered"} 1"#,
        r#"iamport_unique_operations_total{op="reserve",result="reserved"} 1"#,
        r#"iamport_unique_operations_total{op="commit",result="ok"} 1"#,
        r#"iamport_unique_operations_total{op="reserve",result="taken"} 1"#,
        r#"iamport_unique_operation_duration_seconds{op="reserve"} 2 observations"#,
        r#"iamport_unique_operation_duration_seconds{op="commit"} 1 observations"#,
        r#"iamport_upstream_request_duration_seconds{endpoint="get_token",status="200"} 1 observations"#,
        r#"iamport_upstream_request_duration_seconds{endpoint="get_certification",status="200"} 3 observations"#,
        r#"iamport_upstream_request_duration_seconds{endpoint="get_certification",status="404"} 1 observations"#,
        r#"iamport_upstream_request_duration_seconds{endpoint="get_certification",status="503"} 1 observations"#,
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    assert!(!text.contains("unverified"), "{text}");
    // Every name is ours; no label value is an id or a person's data.
    for line in &lines {
        assert!(line.starts_with("iamport_"), "{line}");
        assert!(!line.contains("imp_1") && !line.contains("imp_9"), "{line}");
    }
}
