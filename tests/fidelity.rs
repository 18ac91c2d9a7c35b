//! What PortOne may send, and what the clients must survive: canned spec-valid (and
//! not-quite-valid) answers, dot ids, oversized bodies, records for another id, token outages,
//! retries of non-idempotent requests and the retry budget. Real sockets throughout: the
//! clients talk HTTP to the emulator or to a canned server on a loopback port.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use iamport_e2e::{Captured, serve_axum, status};
use iamport_mock::{Emulator, Endpoint};
use iamport_tower::client::{RetryBudget, RetryPolicy};
use iamport_tower::v2::IdentityVerificationId;
use iamport_tower::{Carrier, CertificationLayer, Certified, Error, Gender, ImpUid, PortOneClient};
use serde_json::{Value, json};

const ADULT: &str = "imp_100000000001";

/// A server that answers every request with `answer(path)` and counts requests and paths.
struct Canned {
    served: iamport_e2e::Served,
    requests: Arc<AtomicU64>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn canned(answer: impl Fn(&str) -> Response + Clone + Send + Sync + 'static) -> Canned {
    let requests = Arc::new(AtomicU64::new(0));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, seen) = (requests.clone(), paths.clone());
    let app = Router::new().fallback(any(move |uri: Uri| {
        let answer = answer.clone();
        let (count, seen) = (count.clone(), seen.clone());
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(uri.path().to_owned());
            answer(uri.path())
        }
    }));
    Canned {
        served: serve_axum(app).await,
        requests,
        paths,
    }
}

fn json_response(body: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn v2_client(url: &str) -> PortOneClient {
    PortOneClient::builder()
        .base_url(url)
        .secret("canned-secret")
        .retry(RetryPolicy::NONE)
        .build()
        .unwrap()
}

fn iv(raw: &str) -> IdentityVerificationId {
    raw.parse().unwrap()
}

/// A spec-valid `VERIFIED` object with the optional blocks left out.
fn verified(id: &str) -> Value {
    json!({
        "status": "VERIFIED", "id": id,
        "verifiedCustomer": { "name": "홍길동" },
        "requestedAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:01Z",
        "statusChangedAt": "2024-01-01T00:00:01Z", "verifiedAt": "2024-01-01T00:00:01Z",
        "pgTxId": "tx", "pgRawResponse": "", "version": "V2"
    })
}

#[tokio::test]
async fn canned_spec_valid_v2_answers_are_admitted() {
    let mut fractions = verified("iv-frac");
    fractions["verifiedAt"] = json!("2024-01-01T09:00:01.1234567891+09:00");
    fractions["requestedAt"] = json!("2024-01-01T00:00:00.000000000000001Z");
    let mut unknown_enums = verified("iv-enums");
    unknown_enums["verifiedCustomer"] = json!({
        "name": "김", "operator": "NEW_TELECOM", "gender": "NONBINARY", "birthDate": "2000-02-29",
        "ci": "CI", "futureField": {"x": [1]}
    });
    unknown_enums["channel"] =
        json!({"type": "SANDBOX", "pgProvider": "NEW_PG", "pgMerchantId": "m"});
    unknown_enums["version"] = json!("V3");
    let mut nulls = verified("iv-nulls");
    nulls["verifiedCustomer"] = json!({
        "name": "이", "id": null, "operator": null, "phoneNumber": null, "birthDate": null,
        "gender": null, "isForeigner": null, "ci": null, "di": null
    });
    nulls["customData"] = Value::Null;
    nulls["channel"] = Value::Null;
    let mut full = verified("iv-full");
    full["customData"] = json!("{\"plan\":\"pro\"}");
    full["channel"] = json!({"type": "LIVE", "key": "channel-key-1", "pgProvider": "KCP_V2", "pgMerchantId": "m"});
    full["verifiedCustomer"] = json!({
        "id": "customer-42", "name": "박", "operator": "LGU", "phoneNumber": "01000000000",
        "birthDate": "1990-01-01", "gender": "FEMALE", "isForeigner": true, "ci": "CI", "di": "DI"
    });
    let answers: Vec<Value> = vec![fractions, unknown_enums, nulls, full];
    let by_path: Arc<Vec<(String, Value)>> = Arc::new(
        answers
            .into_iter()
            .map(|a| {
                (
                    format!("/identity-verifications/{}", a["id"].as_str().unwrap()),
                    a,
                )
            })
            .collect(),
    );
    let server = canned(move |path| {
        by_path.iter().find(|(p, _)| p == path).map_or_else(
            || StatusCode::NOT_FOUND.into_response(),
            |(_, a)| json_response(a),
        )
    })
    .await;
    let client = v2_client(&server.served.url);

    let c = client.identity_verification(&iv("iv-frac")).await.unwrap();
    assert!(c.certified);
    assert_eq!(c.certified_at.unwrap().as_second(), 1_704_067_201);

    let c = client.identity_verification(&iv("iv-enums")).await.unwrap();
    assert!(c.certified);
    assert_eq!(c.carrier, Some(Carrier::Other("NEW_TELECOM".into())));
    assert_eq!(c.gender, None);
    assert_eq!(c.birth_date.unwrap().to_string(), "2000-02-29");
    assert_eq!(c.pg_provider.as_deref(), Some("new_pg"));

    let c = client.identity_verification(&iv("iv-nulls")).await.unwrap();
    assert!(c.certified);
    assert_eq!(c.name.as_deref(), Some("이"));
    assert_eq!((c.birth_date, c.foreigner, c.ci), (None, None, None));

    let c = client.identity_verification(&iv("iv-full")).await.unwrap();
    assert_eq!(c.customer_id.as_deref(), Some("customer-42"));
    assert_eq!(c.custom_data.as_deref(), Some("{\"plan\":\"pro\"}"));
    assert_eq!(c.channel_key.as_deref(), Some("channel-key-1"));
    assert_eq!(c.pg_provider.as_deref(), Some("kcp_v2"));
    assert_eq!((c.gender, c.foreigner), (Some(Gender::Female), Some(true)));
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unreadable_field_refuses_only_the_rules_that_need_it() {
    // `birthDate` is not a date and `verifiedAt` not a time: an age rule and a freshness rule
    // must refuse; a rule needing neither admits; nothing is a 502.
    let mut odd = verified("iv-odd");
    odd["verifiedAt"] = json!("yesterday");
    odd["verifiedCustomer"] = json!({"name": "최", "birthDate": "1990/01/01", "ci": "CI-ODD"});
    let answer = odd.clone();
    let server = canned(move |_| json_response(&answer)).await;
    let client = v2_client(&server.served.url);
    let (logs, _guard) = Captured::install();
    let c = client.identity_verification(&iv("iv-odd")).await.unwrap();
    assert!(c.certified);
    assert_eq!((c.birth_date, c.certified_at), (None, None));
    let text = logs.text();
    for field in ["verifiedCustomer.birthDate", "verifiedAt"] {
        assert!(text.contains(field), "no WARN names {field}: {text}");
    }
    assert!(
        !text.contains("1990/01/01") && !text.contains("CI-ODD"),
        "{text}"
    );
    drop(_guard);

    #[iamport_tower::require_certified]
    async fn any_certified(_person: Certified) -> &'static str {
        "ok"
    }
    #[iamport_tower::require_certified(min_age = 19)]
    async fn adults(_person: Certified) -> &'static str {
        "ok"
    }
    #[iamport_tower::require_certified(fresh_within = "10m")]
    async fn fresh(_person: Certified) -> &'static str {
        "ok"
    }
    let app = Router::new()
        .route("/any", axum::routing::get(any_certified))
        .route("/adults", axum::routing::get(adults))
        .route("/fresh", axum::routing::get(fresh))
        .layer(CertificationLayer::new(client));
    let app = serve_axum(app).await;
    let http = iamport_e2e::http();
    let get = |route: &str| http.get(format!("{}{route}?identityVerificationId=iv-odd", app.url));
    assert_eq!(status(get("/any")).await, 200);
    assert_eq!(status(get("/adults")).await, 403);
    assert_eq!(status(get("/fresh")).await, 403);
}

#[tokio::test]
async fn dot_ids_are_never_sent() {
    for dots in [".", ".."] {
        assert!(IdentityVerificationId::parse(dots).is_err(), "{dots}");
    }
    assert!("imp_..".parse::<ImpUid>().is_err());
    // Behind the layer: 400, and the upstream sees nothing.
    let emulator = Emulator::start().await.unwrap();
    let app = Router::new()
        .route(
            "/signup",
            axum::routing::get(|_p: Certified| async { "ok" }),
        )
        .layer(CertificationLayer::new(emulator.v2_client()));
    let app = serve_axum(app).await;
    let http = iamport_e2e::http();
    for raw in [".", "..", "%2E", "%2E%2E", ".%2E"] {
        let url = format!("{}/signup?identityVerificationId={raw}", app.url);
        assert_eq!(status(http.get(url)).await, 400, "{raw}");
    }
    // Dots inside an id are fine: it is one segment.
    let url = format!("{}/signup?identityVerificationId=...", app.url);
    assert_eq!(status(http.get(url)).await, 403, "unknown, but looked up");
    assert_eq!(emulator.calls(Endpoint::GetIdentityVerification), 1);
    assert_eq!(emulator.calls_for("..."), 1);
}

/// Peak resident memory of this process, in KiB (Linux), for the report line only.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn an_oversized_answer_is_refused_without_reading_it() {
    const TOTAL: usize = 300 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let server = canned(move |path| {
        let counter = counter.clone();
        let chunks = futures_util::stream::unfold(0usize, move |sent| {
            let counter = counter.clone();
            async move {
                (sent < TOTAL).then(|| {
                    counter.fetch_add(CHUNK, Ordering::SeqCst);
                    (
                        Ok::<_, Infallible>(Bytes::from(vec![b' '; CHUNK])),
                        sent + CHUNK,
                    )
                })
            }
        });
        let mut response = Body::from_stream(chunks).into_response();
        if path.ends_with("announced") {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, TOTAL.to_string().parse().unwrap());
        }
        response
    })
    .await;
    let before = peak_rss_kib();
    let client = v2_client(&server.served.url);
    let error = client
        .identity_verification(&iv("streamed"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Malformed(m) if m.contains("limit")),
        "{error:?}"
    );
    let error = client
        .identity_verification(&iv("announced"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Malformed(m) if m.contains("limit")),
        "{error:?}"
    );
    // The server produced at most the 1 MiB cap plus what socket buffers hold, not 300 MB.
    let produced = produced.load(Ordering::SeqCst);
    assert!(
        produced < 32 * 1024 * 1024,
        "{produced} bytes were produced"
    );
    iamport_e2e::notice(&format!(
        "oversized answer: {} KiB produced by the server of 2 x {} MiB offered; peak RSS {:?} -> {:?} KiB",
        produced / 1024,
        TOTAL / 1024 / 1024,
        before,
        peak_rss_kib()
    ));

    // A smaller cap applies to ordinary answers too.
    let emulator = Emulator::start().await.unwrap();
    let tiny = emulator
        .v2_client_builder()
        .max_body_size(64)
        .build()
        .unwrap();
    let error = tiny.identity_verification(&iv(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::Malformed(_)), "{error:?}");
    assert_eq!(emulator.calls_for(ADULT), 1, "not retried");
}

#[tokio::test]
async fn an_answer_in_many_small_chunks_reads_as_one() {
    let record = serde_json::to_vec(&verified("iv-chunked")).unwrap();
    let (size, pieces) = (record.len(), record.len().div_ceil(7));
    let server = canned(move |_| {
        let record = Bytes::from(record.clone());
        // A millisecond apart, so they arrive as separate reads, not one coalesced buffer.
        let chunks = futures_util::stream::unfold(0usize, move |at| {
            let record = record.clone();
            async move {
                (at < record.len()).then_some(())?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                let end = (at + 7).min(record.len());
                Some((Ok::<_, Infallible>(record.slice(at..end)), end))
            }
        });
        let mut response = Body::from_stream(chunks).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        response
    })
    .await;
    let cert = v2_client(&server.served.url)
        .identity_verification(&iv("iv-chunked"))
        .await
        .expect("a record sent in pieces");
    assert!(cert.certified);
    assert!(pieces > 20, "the record went out in {pieces} pieces");
    // The cap counts every piece: exactly the record's size passes, a byte less does not.
    let capped = |limit: usize| {
        PortOneClient::builder()
            .base_url(&server.served.url)
            .secret("canned-secret")
            .retry(RetryPolicy::NONE)
            .max_body_size(limit)
            .build()
            .unwrap()
    };
    capped(size)
        .identity_verification(&iv("iv-chunked"))
        .await
        .expect("a record of exactly the cap");
    let error = capped(size - 1)
        .identity_verification(&iv("iv-chunked"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Malformed(m) if m.contains("limit")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_record_for_another_id_is_refused_and_logged() {
    let server = canned(|_| json_response(&verified("iv-someone-else"))).await;
    let client = v2_client(&server.served.url);
    let (logs, _guard) = Captured::install();
    let error = client
        .identity_verification(&iv("iv-mine"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Malformed(_)), "{error:?}");
    let text = logs.text();
    assert!(
        text.contains("ERROR") && text.contains("another id"),
        "{text}"
    );
    // Ids are bearer credentials: neither is logged, nor is the person.
    for secret in ["iv-someone-else", "iv-mine", "홍길동"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }

    let v1 = canned(|path| {
        if path == "/users/getToken" {
            json_response(&json!({"code": 0, "message": null,
                "response": {"access_token": "t", "now": 0, "expired_at": 1800}}))
        } else {
            json_response(&json!({"code": 0, "message": null,
                "response": {"imp_uid": "imp_999", "certified": true, "name": "x"}}))
        }
    })
    .await;
    let client = iamport_tower::IamportClient::builder()
        .base_url(&v1.served.url)
        .key("k")
        .secret("s")
        .build()
        .unwrap();
    let error = client
        .certification(&"imp_111".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Malformed(_)), "{error:?}");
    assert_eq!(
        v1.paths.lock().unwrap().as_slice(),
        ["/users/getToken", "/certifications/imp_111"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_outage_costs_one_fetch_not_one_per_request() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    emulator.fail_next(Endpoint::GetToken, 10_000, StatusCode::GATEWAY_TIMEOUT);
    let lookups = (0..50).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.certification(&ADULT.parse().unwrap()).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        let error = lookup.unwrap().unwrap_err();
        assert!(
            matches!(error, Error::UpstreamStatus { status, .. } if status == StatusCode::GATEWAY_TIMEOUT),
            "{error:?}"
        );
    }
    let calls = emulator.calls(Endpoint::GetToken);
    iamport_e2e::notice(&format!(
        "token outage: 50 concurrent lookups -> {calls} getToken calls"
    ));
    assert!(
        (1..=3).contains(&calls),
        "one fetch (1 attempt + 2 retries) for 50 requests, got {calls}"
    );
    assert_eq!(emulator.calls(Endpoint::GetCertification), 0);
    // Within the back-off, a new request does not fetch either.
    assert!(client.certification(&ADULT.parse().unwrap()).await.is_err());
    assert_eq!(emulator.calls(Endpoint::GetToken), calls);
}

#[tokio::test]
async fn a_delete_is_not_repeated_once_it_may_have_reached_portone() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    let adult: ImpUid = ADULT.parse().unwrap();
    client.certification(&adult).await.unwrap();
    emulator.fail_next(
        Endpoint::DeleteCertification,
        1,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    let error = client.delete_certification(&adult).await.unwrap_err();
    assert!(matches!(error, Error::UpstreamStatus { .. }), "{error:?}");
    assert_eq!(emulator.calls(Endpoint::DeleteCertification), 1);
    emulator.drop_next(Endpoint::DeleteCertification, 1);
    let error = client.delete_certification(&adult).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    assert_eq!(emulator.calls(Endpoint::DeleteCertification), 2);
    // The record is still there; a plain delete works and a second one is NotFound.
    assert!(client.delete_certification(&adult).await.unwrap().certified);
    assert!(matches!(
        client.delete_certification(&adult).await,
        Err(Error::NotFound)
    ));
    // A lookup is retried as before.
    emulator.fail_next(Endpoint::GetCertification, 2, StatusCode::BAD_GATEWAY);
    emulator.add_person(iamport_mock::person(ADULT, "김성인", "1990-01-01"));
    assert!(client.certification(&adult).await.unwrap().certified);
}

#[tokio::test]
async fn the_retry_budget_caps_retries_across_calls() {
    let emulator = Emulator::start().await.unwrap();
    // 10 % extra traffic and no floor: 40 failing lookups may add 4 retries in all.
    let client = emulator
        .v2_client_builder()
        .retry(RetryPolicy {
            max_retries: 5,
            base_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        })
        .retry_budget(RetryBudget::new(0.1, 0))
        .build()
        .unwrap();
    emulator.fail_next(
        Endpoint::GetIdentityVerification,
        10_000,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    for _ in 0..40 {
        assert!(client.identity_verification(&iv(ADULT)).await.is_err());
    }
    let calls = emulator.calls(Endpoint::GetIdentityVerification);
    iamport_e2e::notice(&format!(
        "retry budget: 40 lookups in an outage -> {calls} upstream calls (5 retries each allowed per call)"
    ));
    assert!((40..=44).contains(&calls), "{calls}");
    // Without a budget the same policy would have sent 240.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_layer_a_token_outage_costs_one_fetch_for_50_requests() {
    let emulator = Emulator::start().await.unwrap();
    let ids: Vec<String> = (0..50).map(|i| format!("imp_2000000000{i:02}")).collect();
    for id in &ids {
        emulator.add_person(iamport_mock::person(id, "동시다발", "1990-01-01"));
    }
    #[iamport_tower::require_certified(min_age = 19)]
    async fn adults(_person: Certified) -> &'static str {
        "ok"
    }
    let app = Router::new()
        .route("/signup", axum::routing::get(adults))
        .layer(CertificationLayer::new(emulator.client()));
    let app = serve_axum(app).await;
    emulator.fail_next(Endpoint::GetToken, 10_000, StatusCode::GATEWAY_TIMEOUT);
    let http = iamport_e2e::http();
    let requests = ids.iter().map(|id| {
        let request = http.get(format!("{}/signup?imp_uid={id}", app.url));
        async move { status(request).await }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    let calls = emulator.calls(Endpoint::GetToken);
    iamport_e2e::notice(&format!(
        "token outage behind the layer: 50 concurrent requests (50 ids) -> {calls} getToken calls, all 502"
    ));
    assert!((1..=3).contains(&calls), "{calls}");
    assert_eq!(emulator.calls(Endpoint::GetCertification), 0);
}
