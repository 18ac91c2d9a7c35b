//! PortOne v2 (`PortOneClient`) against the emulator's v2 endpoint, and behind the layer.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use iamport_e2e::{serve_axum, status};
use iamport_mock::{Emulator, Endpoint, PendingStatus, TEST_V2_SECRET, person};
use iamport_tower::v2::IdentityVerificationId;
use iamport_tower::{
    Carrier, CertificationLayer, Certified, Error, Gender, PortOneClient, require_certified,
};
use serde_json::json;

const ADULT: &str = "imp_100000000001";
const MINOR: &str = "imp_100000000002";
const NOT_CERTIFIED: &str = "imp_100000000005";
const MINIMAL: &str = "imp_100000000006";

fn id(raw: &str) -> IdentityVerificationId {
    raw.parse().unwrap()
}

#[tokio::test]
async fn a_verified_person_maps_to_the_same_certification_as_v1() {
    let emulator = Emulator::start().await.unwrap();
    let v1 = emulator
        .client()
        .certification(&ADULT.parse().unwrap())
        .await
        .unwrap();
    let v2 = emulator
        .v2_client()
        .identity_verification(&id(ADULT))
        .await
        .unwrap();
    assert!(v2.certified);
    assert_eq!(v2.id, ADULT);
    assert_eq!(v2.name, v1.name);
    assert_eq!(v2.birth_date, v1.birth_date);
    assert_eq!(v2.ci, v1.ci, "one CI, whichever API");
    assert_eq!(v2.di, v1.di);
    assert_eq!(v2.phone, v1.phone);
    assert_eq!(v2.carrier, Some(Carrier::Skt));
    assert_eq!(v2.gender, Some(Gender::Male));
    assert_eq!(v2.foreigner, Some(false));
    assert_eq!(v2.certified_at, v1.certified_at);
    assert_eq!(v2.pg_provider.as_deref(), Some("danal"));
    assert_eq!(emulator.calls(Endpoint::GetIdentityVerification), 1);
    assert_eq!(
        emulator.calls(Endpoint::GetToken),
        1,
        "only the v1 lookup fetched a token"
    );
}

#[tokio::test]
async fn minimal_records_lgu_carriers_and_old_birth_fields() {
    let emulator = Emulator::start().await.unwrap();
    let mut lgu = person("iv-lgu", "엘지유", "1980-02-29");
    lgu["carrier"] = json!("LGT_MVNO");
    lgu["gender"] = json!("female");
    lgu.as_object_mut().unwrap().remove("birthday");
    emulator.add_person(lgu);
    let client = emulator.v2_client();
    let c = client.identity_verification(&id("iv-lgu")).await.unwrap();
    assert_eq!(c.carrier, Some(Carrier::LgUplusMvno));
    assert_eq!(c.gender, Some(Gender::Female));
    assert_eq!(c.birth_date.unwrap().to_string(), "1980-02-29");
    let minimal = client.identity_verification(&id(MINIMAL)).await.unwrap();
    assert!(minimal.certified);
    assert_eq!(
        (minimal.phone, minimal.carrier, minimal.gender),
        (None, None, None)
    );
}

#[tokio::test]
async fn ready_failed_unknown_and_unauthorized() {
    let emulator = Emulator::start().await.unwrap();
    emulator.set_pending("iv-ready", PendingStatus::Ready);
    emulator.set_pending("iv-failed", PendingStatus::Failed);
    let client = emulator.v2_client();
    for pending in ["iv-ready", "iv-failed", NOT_CERTIFIED] {
        let c = client.identity_verification(&id(pending)).await.unwrap();
        assert!(!c.certified, "{pending}");
        assert_eq!(c.id, pending);
    }
    assert!(matches!(
        client.identity_verification(&id("iv-unknown")).await,
        Err(Error::NotFound)
    ));
    let wrong = emulator
        .v2_client_builder()
        .secret("wrong-secret")
        .build()
        .unwrap();
    let error = wrong.identity_verification(&id(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::BadApiSecret), "{error:?}");
    // v2's own setting, not v1's.
    let message = error.to_string();
    assert!(message.contains("PORTONE_API_SECRET"), "{message}");
    assert!(!message.contains("IMP_"), "{message}");
    assert!(!format!("{error} {error:?} {wrong:?}").contains("wrong-secret"));
    assert!(!format!("{client:?}").contains(TEST_V2_SECRET));
}

#[tokio::test]
async fn the_wire_format_is_portones() {
    let emulator = Emulator::start().await.unwrap();
    let http = iamport_e2e::http();
    let get = |path: &str, auth: Option<&str>| {
        let mut request = http.get(format!("{}{path}", emulator.url()));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.send()
    };
    let auth = format!("PortOne {TEST_V2_SECRET}");
    let ok = get(
        &format!("/identity-verifications/{ADULT}?storeId=store-1"),
        Some(&auth),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["status"], "VERIFIED");
    for field in [
        "id",
        "verifiedCustomer",
        "requestedAt",
        "updatedAt",
        "statusChangedAt",
        "verifiedAt",
        "pgTxId",
        "pgRawResponse",
        "version",
    ] {
        assert!(!body[field].is_null(), "{field} missing: {body}");
    }
    assert!(body["verifiedAt"].as_str().unwrap().ends_with('Z'));
    let missing = get("/identity-verifications/nope", Some(&auth))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["type"],
        "IDENTITY_VERIFICATION_NOT_FOUND"
    );
    for bad in [None, Some("Bearer x"), Some("PortOne wrong")] {
        let response = get(&format!("/identity-verifications/{ADULT}"), bad)
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["type"],
            "UNAUTHORIZED"
        );
    }
}

#[tokio::test]
async fn ids_are_one_encoded_segment_and_control_characters_never_leave() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.v2_client();
    // Merchant ids may contain anything printable: it arrives as one segment, intact.
    for raw in ["../../payments/x", "주문 2024/1?x=1#y", "%2F..%2F"] {
        emulator.add_person(person(raw, "특수문자", "1990-01-01"));
        let cert = client.identity_verification(&id(raw)).await.unwrap();
        assert_eq!(cert.id, raw);
        assert_eq!(emulator.calls_for(raw), 1, "{raw}");
    }
    let before = emulator.calls(Endpoint::GetIdentityVerification);
    for bad in ["", "a\nb", "a\u{0}", &"x".repeat(300)] {
        assert!(IdentityVerificationId::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(emulator.calls(Endpoint::GetIdentityVerification), before);
}

#[tokio::test]
async fn retries_timeouts_and_garbage() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator
        .v2_client_builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    emulator.fail_next(
        Endpoint::GetIdentityVerification,
        2,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(
        client
            .identity_verification(&id(ADULT))
            .await
            .unwrap()
            .certified
    );
    assert_eq!(emulator.calls_for(ADULT), 3);
    emulator.fail_next(
        Endpoint::GetIdentityVerification,
        3,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    assert!(matches!(
        client.identity_verification(&id(ADULT)).await,
        Err(Error::UpstreamStatus { status, .. }) if status == StatusCode::INTERNAL_SERVER_ERROR
    ));
    emulator.garbage_next(Endpoint::GetIdentityVerification, 1);
    assert!(matches!(
        client.identity_verification(&id(ADULT)).await,
        Err(Error::Malformed(_))
    ));
    emulator.drop_next(Endpoint::GetIdentityVerification, 1);
    assert!(client.identity_verification(&id(ADULT)).await.is_ok());
    emulator.set_latency(Duration::from_secs(30));
    let started = Instant::now();
    assert!(matches!(
        client.identity_verification(&id(ADULT)).await,
        Err(Error::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[require_certified(min_age = 19, unique = true)]
async fn signup(person: Certified) -> (StatusCode, String) {
    (StatusCode::CREATED, person.id.clone())
}

#[tokio::test]
async fn the_layer_and_macro_work_unchanged_with_a_v2_source() {
    let emulator = Emulator::start().await.unwrap();
    emulator.set_pending("iv-ready", PendingStatus::Ready);
    let client: PortOneClient = emulator
        .v2_client_builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let app = serve_axum(
        Router::new()
            .route("/certifications", post(signup))
            .route("/certifications/redirect", get(signup))
            .layer(CertificationLayer::new(client)),
    )
    .await;
    let http = iamport_e2e::http();
    let send = |body: serde_json::Value| {
        status(http.post(format!("{}/certifications", app.url)).json(&body))
    };
    let redirect =
        |query: &str| status(http.get(format!("{}/certifications/redirect?{query}", app.url)));

    assert_eq!(send(json!({"identityVerificationId": ADULT})).await, 201);
    assert_eq!(
        send(json!({"identityVerificationId": ADULT})).await,
        409,
        "unique across requests"
    );
    assert_eq!(send(json!({"identity_verification_id": MINOR})).await, 403);
    assert_eq!(
        send(json!({"identityVerificationId": "iv-ready"})).await,
        403
    );
    assert_eq!(
        send(json!({"identityVerificationId": "iv-none"})).await,
        403
    );
    assert_eq!(
        send(json!({"imp_uid": ADULT})).await,
        400,
        "v2 reads v2 field names"
    );
    assert_eq!(
        send(json!({"identityVerificationId": "a\u{1}b"})).await,
        400
    );
    let form = http
        .post(format!("{}/certifications", app.url))
        .form(&[("identityVerificationId", "imp_100000000007")]);
    assert_eq!(status(form).await, 201);
    emulator.add_person(person("iv-redirect/1", "리디렉트", "1990-03-03"));
    assert_eq!(
        redirect("identityVerificationId=iv-redirect%2F1").await,
        201
    );
    let before = emulator.calls(Endpoint::GetIdentityVerification);
    let cancelled =
        redirect("identityVerificationId=iv-x&code=IDENTITY_VERIFICATION_CANCELLED&message=x")
            .await;
    assert_eq!(cancelled, 400);
    assert_eq!(
        emulator.calls(Endpoint::GetIdentityVerification),
        before,
        "a cancelled verification is not looked up"
    );
    emulator.set_latency(Duration::from_secs(5));
    assert_eq!(
        send(json!({"identityVerificationId": "imp_100000000003"})).await,
        504
    );

    // A v2 secret PortOne refuses is our misconfiguration: 502, never an admission.
    let refused = serve_axum(
        Router::new()
            .route("/certifications", post(signup))
            .layer(CertificationLayer::new(
                emulator
                    .v2_client_builder()
                    .secret("revoked")
                    .build()
                    .unwrap(),
            )),
    )
    .await;
    emulator.set_latency(Duration::ZERO);
    let refused_post = http
        .post(format!("{}/certifications", refused.url))
        .json(&json!({"identityVerificationId": "imp_100000000003"}));
    assert_eq!(status(refused_post).await, 502);
}

/// Runs the v2 browser SDK stand-in's flow over HTTP (open the page, pick a person) and
/// returns what `requestIdentityVerification` resolves with.
async fn browser_verification(
    emulator: &Emulator,
    id: &str,
    extra: &[(&str, &str)],
    person: Option<&str>,
) -> serde_json::Value {
    let http = iamport_e2e::http();
    let mut flow = vec![
        ("api", "v2"),
        ("identity_verification_id", id),
        ("mode", "iframe"),
    ];
    flow.extend_from_slice(extra);
    let page = http
        .get(format!("{}/certify", emulator.url()))
        .query(&flow)
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success());
    match person {
        Some(person) => flow.push(("person", person)),
        None => flow.push(("cancel", "1")),
    }
    let done = http
        .post(format!("{}/certify", emulator.url()))
        .form(&flow)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = done
        .find("response: ")
        .expect("the page posts the response")
        + 10;
    let end = done[start..].find("}, \"*\")").unwrap() + start;
    serde_json::from_str(&done[start..end]).unwrap()
}

#[tokio::test]
async fn the_v2_emulator_keeps_what_the_browser_passed_and_tells_versions_apart() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.v2_client();
    // Opening the window makes a READY verification.
    let http = iamport_e2e::http();
    let page = http
        .get(format!("{}/certify", emulator.url()))
        .query(&[("api", "v2"), ("identity_verification_id", "iv-opened")])
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success());
    let opened = client
        .identity_verification(&id("iv-opened"))
        .await
        .unwrap();
    assert!(!opened.certified);

    let result = browser_verification(
        &emulator,
        "iv-b1",
        &[
            ("customer_id", "customer-77"),
            ("custom_data", r#"{"plan":"pro"}"#),
            ("channel_key", "channel-key-demo"),
        ],
        Some(ADULT),
    )
    .await;
    // Every field of the browser SDK's IdentityVerificationResponse.
    assert_eq!(result["transactionType"], "IDENTITY_VERIFICATION");
    assert_eq!(result["identityVerificationId"], "iv-b1");
    assert!(
        result["identityVerificationTxId"]
            .as_str()
            .is_some_and(|t| t.len() == 36)
    );
    assert!(result.get("code").is_none());
    let b1 = client.identity_verification(&id("iv-b1")).await.unwrap();
    assert!(b1.certified);
    assert_eq!(b1.customer_id.as_deref(), Some("customer-77"));
    assert_eq!(b1.custom_data.as_deref(), Some(r#"{"plan":"pro"}"#));
    assert_eq!(b1.channel_key.as_deref(), Some("channel-key-demo"));

    // A second verification of the same person is a new transaction with the same CI.
    browser_verification(&emulator, "iv-b2", &[], Some(ADULT)).await;
    let b2 = client.identity_verification(&id("iv-b2")).await.unwrap();
    let template = client.identity_verification(&id(ADULT)).await.unwrap();
    assert_eq!(b2.ci, b1.ci);
    assert_ne!(b2.pg_tid, b1.pg_tid);
    assert_ne!(b1.pg_tid, template.pg_tid);
    assert_eq!(b2.customer_id, None, "no customer.id passed: none invented");

    let cancelled = browser_verification(&emulator, "iv-b3", &[], None).await;
    assert_eq!(cancelled["code"], "IDENTITY_VERIFICATION_CANCELLED");
    assert_eq!(cancelled["transactionType"], "IDENTITY_VERIFICATION");
    assert!(cancelled["pgCode"].is_string() && cancelled["pgMessage"].is_string());
    assert!(cancelled["identityVerificationTxId"].is_string());
    assert!(
        !client
            .identity_verification(&id("iv-b3"))
            .await
            .unwrap()
            .certified
    );

    // Raw wire: versions, isForeigner, verifiedCustomer.id.
    let raw = |path: String| {
        http.get(format!("{}/identity-verifications/{path}", emulator.url()))
            .header("Authorization", format!("PortOne {TEST_V2_SECRET}"))
            .send()
    };
    let v2_born: serde_json::Value = raw("iv-b1".into()).await.unwrap().json().await.unwrap();
    assert_eq!(v2_born["version"], "V2");
    assert_eq!(v2_born["verifiedCustomer"]["id"], "customer-77");
    let v1_born: serde_json::Value = raw(ADULT.into()).await.unwrap().json().await.unwrap();
    assert_eq!(v1_born["version"], "V1");
    assert!(
        v1_born["verifiedCustomer"].get("id").is_none(),
        "merchant_uid is not the customer's id"
    );
    let minimal: serde_json::Value = raw(MINIMAL.into()).await.unwrap().json().await.unwrap();
    assert!(
        minimal["verifiedCustomer"].get("isForeigner").is_none(),
        "no foreigner contract: unknown, not false"
    );
    let c = client.identity_verification(&id(MINIMAL)).await.unwrap();
    assert_eq!(c.foreigner, None);
}

#[tokio::test]
async fn v2_authentication_schemes_stores_and_error_shapes() {
    let emulator = Emulator::builder()
        .v2_store_id("store-a")
        .start()
        .await
        .unwrap();
    let http = iamport_e2e::http();
    let url = format!("{}/identity-verifications/{ADULT}", emulator.url());
    let status_of = |auth: String, query: &'static [(&'static str, &'static str)]| {
        http.get(&url)
            .header("Authorization", auth)
            .query(query)
            .send()
    };
    for scheme in ["PortOne", "portone", "PORTONE"] {
        let response = status_of(format!("{scheme} {TEST_V2_SECRET}"), &[])
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let own = status_of(
        format!("PortOne {TEST_V2_SECRET}"),
        &[("storeId", "store-a")],
    );
    assert_eq!(own.await.unwrap().status(), 200);
    let other = status_of(
        format!("PortOne {TEST_V2_SECRET}"),
        &[("storeId", "store-b")],
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 403);
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["type"], "FORBIDDEN");
    // The client's store id goes out as `storeId`.
    let wrong_store = emulator
        .v2_client_builder()
        .store_id("store-b")
        .build()
        .unwrap();
    let error = wrong_store
        .identity_verification(&id(ADULT))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::UpstreamStatus { status, ref message }
            if status == StatusCode::FORBIDDEN && message.as_deref().is_some_and(|m| m.starts_with("FORBIDDEN"))),
        "{error:?}"
    );
    let right_store = emulator
        .v2_client_builder()
        .store_id("store-a")
        .build()
        .unwrap();
    assert!(right_store.identity_verification(&id(ADULT)).await.is_ok());

    // Bearer tokens from the API-secret login.
    let tokens: serde_json::Value = http
        .post(format!("{}/login/api-secret", emulator.url()))
        .json(&json!({ "apiSecret": TEST_V2_SECRET }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["accessToken"].as_str().unwrap();
    let bearer = status_of(format!("bearer {access}"), &[]).await.unwrap();
    assert_eq!(bearer.status(), 200);
    let forged = status_of("Bearer not-a-token".into(), &[]).await.unwrap();
    assert_eq!(forged.status(), 401);

    // Injected faults and unserved paths answer in v2's shape; v1's stay v1's.
    emulator.fail_next(
        Endpoint::GetIdentityVerification,
        1,
        StatusCode::UNAUTHORIZED,
    );
    let faulted = status_of(format!("PortOne {TEST_V2_SECRET}"), &[])
        .await
        .unwrap();
    assert_eq!(faulted.status(), 401);
    let body: serde_json::Value = faulted.json().await.unwrap();
    assert_eq!(body["type"], "UNAUTHORIZED", "{body}");
    assert!(body.get("code").is_none(), "{body}");
    for path in [
        "/identity-verifications/x/send",
        "/identity-verifications/x/confirm",
        "/identity-verifications/x/resend",
        "/login/unknown",
    ] {
        let body: serde_json::Value = http
            .post(format!("{}{path}", emulator.url()))
            .header("Authorization", format!("PortOne {TEST_V2_SECRET}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            body["type"].is_string() && body.get("code").is_none(),
            "{path}: {body}"
        );
    }
    let v1: serde_json::Value = http
        .get(format!("{}/payments/imp_1", emulator.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["code"], -1, "{v1}");
}
