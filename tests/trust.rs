//! The layer as a trust boundary, over real sockets against the emulator: nothing a client
//! sends spends a PortOne call or a person's signup unless a guard asks; the id the layer
//! checks is the id the handler reads; bodies cannot be held open forever.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use iamport_e2e::World;
use iamport_tower::binding::Binding;
use iamport_tower::{CertificationLayer, Certified, IamportClient, require_certified};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADULT: &str = "imp_100000000001";
const MINOR: &str = "imp_100000000002";
const BODY_TIMEOUT: Duration = Duration::from_secs(1);

/// One account per person, on the redirect (GET) and popup (POST) flows.
#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(cert: Certified) -> (StatusCode, String) {
    (StatusCode::CREATED, cert.id.clone())
}

/// Echoes the raw body after the guard: the handler must see the client's exact bytes.
#[require_certified(max_birth_year = 1999)]
async fn echo(body: Bytes) -> Bytes {
    body
}

fn router(client: IamportClient) -> Router {
    Router::new()
        .route("/", get(|| async { "home" }))
        .route("/certifications", post(signup))
        .route("/certifications/redirect", get(signup))
        .route("/echo", post(echo))
        .route("/unguarded", post(|body: Bytes| async move { body }))
        // In front of the whole router, as the docs now recommend.
        .layer(CertificationLayer::new(client).body_timeout(BODY_TIMEOUT))
}

async fn world() -> World {
    World::start(router).await
}

fn problem_type(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    value["type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn ids_no_guard_asks_about_cost_no_upstream_call() {
    let w = world().await;
    let redirect = format!("/certifications/redirect?imp_uid={ADULT}&success=true");
    let json = format!(r#"{{"imp_uid":"{ADULT}"}}"#);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "404",
            w.http.get(w.url(&format!("/nope?imp_uid={ADULT}"))),
            404,
        ),
        (
            "unguarded page",
            w.http.get(w.url(&format!("/?imp_uid={ADULT}"))),
            200,
        ),
        (
            "unguarded POST with a JSON id",
            w.http
                .post(w.url("/unguarded"))
                .header("content-type", "application/json")
                .body(json.clone()),
            200,
        ),
        (
            "405",
            w.http
                .put(w.url("/certifications"))
                .header("content-type", "application/json")
                .body(json.clone()),
            405,
        ),
        ("HEAD", w.http.head(w.url(&redirect)), 403),
        (
            "OPTIONS",
            w.http.request(reqwest::Method::OPTIONS, w.url(&redirect)),
            // axum answers OPTIONS on a GET-only route with 405 itself; either way no lookup.
            405,
        ),
        (
            "Sec-Purpose: prefetch",
            w.http
                .get(w.url(&redirect))
                .header("sec-purpose", "prefetch"),
            403,
        ),
        (
            "Purpose: prefetch",
            w.http.get(w.url(&redirect)).header("purpose", "prefetch"),
            403,
        ),
    ];
    for (what, request, want) in cases {
        let (status, _) = w.send(request).await;
        assert_eq!(status, want, "{what}");
        assert_eq!(w.lookups(), 0, "{what} reached PortOne");
    }
    // The guarded request is the first and only lookup.
    let (status, body) = w.send(w.http.get(w.url(&redirect))).await;
    assert_eq!((status, body.as_str()), (201, ADULT));
    assert_eq!(w.lookups(), 1);
}

#[tokio::test]
async fn head_then_get_still_signs_up() {
    let w = world().await;
    let redirect = w.url(&format!(
        "/certifications/redirect?imp_uid={ADULT}&success=true"
    ));
    let head = w.http.head(&redirect).send().await.unwrap();
    assert_eq!(head.status(), 403);
    let prefetch = w
        .http
        .get(&redirect)
        .header("sec-purpose", "prefetch;prerender")
        .send()
        .await
        .unwrap();
    assert_eq!(prefetch.status(), 403);
    assert_eq!(
        problem_type(&prefetch.text().await.unwrap()),
        "urn:iamport-tower:problem:speculative-request"
    );
    // The person's real visit: admitted (nothing was reserved or committed before it).
    let (status, _) = w.send(w.http.get(&redirect)).await;
    assert_eq!(status, 201);
    // And only once: `unique` still holds.
    let (status, _) = w.send(w.http.get(&redirect)).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn the_layer_and_the_handler_never_read_different_ids() {
    let w = world().await;
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "duplicate key",
            format!(r#"{{"imp_uid":"{ADULT}","imp_uid":"{MINOR}"}}"#).into_bytes(),
            "application/json",
        ),
        (
            "escaped duplicate key",
            format!(r#"{{"imp_uid":"{ADULT}","imp\u005fuid":"{MINOR}"}}"#).into_bytes(),
            "application/json",
        ),
        (
            "trailing bytes",
            format!(r#"{{"imp_uid":"{ADULT}"}} x"#).into_bytes(),
            "application/json",
        ),
        (
            "two JSON values",
            format!(r#"{{"imp_uid":"{ADULT}"}}{{"imp_uid":"{MINOR}"}}"#).into_bytes(),
            "application/json",
        ),
        (
            "invalid UTF-8 elsewhere in the object",
            [
                format!(r#"{{"imp_uid":"{ADULT}","name":""#).into_bytes(),
                vec![0xff, 0xfe],
                br#""}"#.to_vec(),
            ]
            .concat(),
            "application/json",
        ),
        (
            "duplicate form field",
            format!("imp_uid={ADULT}&imp_uid={MINOR}").into_bytes(),
            "application/x-www-form-urlencoded",
        ),
        (
            "form labelled JSON with two ids",
            format!("imp_uid={ADULT}&imp_uid={MINOR}").into_bytes(),
            "application/json",
        ),
    ];
    for (what, body, content_type) in bad {
        let (status, text) = w
            .send(
                w.http
                    .post(w.url("/echo"))
                    .header("content-type", content_type)
                    .body(body),
            )
            .await;
        assert_eq!(status, 400, "{what}: {text}");
        assert_eq!(
            problem_type(&text),
            "urn:iamport-tower:problem:malformed-body",
            "{what}"
        );
    }
    let (status, text) = w
        .send(w.http.get(w.url(&format!(
            "/certifications/redirect?imp_uid={ADULT}&imp_uid={MINOR}"
        ))))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        problem_type(&text),
        "urn:iamport-tower:problem:ambiguous-verification-id"
    );
    assert_eq!(w.lookups(), 0, "nothing malformed reached PortOne");
}

#[tokio::test]
async fn portones_jquery_snippet_is_admitted_byte_for_byte() {
    let w = world().await;
    // `$.ajax({ headers: {"Content-Type": "application/json"}, data: {imp_uid} })` sends a
    // form body labelled JSON.
    let body = format!("imp_uid={ADULT}&merchant_uid=order_1");
    let (status, echoed) = w
        .send(
            w.http
                .post(w.url("/echo"))
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed, body, "the handler sees the exact bytes");
    assert_eq!(w.lookups(), 1);
    // A minor through the same snippet is refused by the policy, not by the parser.
    let (status, _) = w
        .send(
            w.http
                .post(w.url("/echo"))
                .header("content-type", "application/json")
                .body(format!("imp_uid={MINOR}")),
        )
        .await;
    assert_eq!(status, 403);
}

/// Sends the head and `sent` bytes of a `declared`-byte body, then stalls; returns the
/// status the server answered with (reading until it closes or answers).
async fn stalled_post(addr: std::net::SocketAddr, declared: usize, sent: usize) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /certifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut body = br#"{"imp_uid":"imp_100000000001","pad":""#.to_vec();
    body.resize(sent, b'a');
    stream.write_all(&body).await.unwrap();
    let mut response = vec![0; 512];
    let n = stream.read(&mut response).await.unwrap_or(0);
    let text = String::from_utf8_lossy(&response[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_at_the_timeout() {
    let w = world().await;
    // One body that never completes: answered 408 within the timeout plus a second.
    let status = tokio::time::timeout(
        BODY_TIMEOUT + Duration::from_secs(1),
        stalled_post(w.app.addr, 1000, 100),
    )
    .await
    .expect("a stalled body must be answered within the body timeout + 1 s");
    assert_eq!(status, 408);

    // Many stalled 60 KiB bodies: every one is answered 408 (its buffer dropped with the
    // read), none is held past the timeout.
    let before = rss_kib();
    let stalled: Vec<_> = (0..200)
        .map(|_| tokio::spawn(stalled_post(w.app.addr, 64 * 1024, 60 * 1024)))
        .collect();
    let all = tokio::time::timeout(BODY_TIMEOUT * 4 + Duration::from_secs(5), async {
        let mut statuses = Vec::new();
        for task in stalled {
            statuses.push(task.await.unwrap());
        }
        statuses
    })
    .await
    .expect("stalled bodies must all be answered after the timeout");
    assert!(all.iter().all(|s| *s == 408), "{all:?}");
    if let (Some(before), Some(after)) = (before, rss_kib()) {
        iamport_e2e::notice(&format!(
            "200 stalled 60 KiB bodies: RSS {before} KiB before, {after} KiB after the timeout"
        ));
    }
    assert_eq!(w.lookups(), 0, "a body that never arrived made no lookup");
}

/// A v2 app: the same routes over PortOne's v2 API (`identityVerificationId`).
fn v2_router(client: iamport_tower::PortOneClient) -> Router {
    Router::new()
        .route("/echo", post(echo))
        .route("/redirect", get(echo))
        .layer(CertificationLayer::new(client).body_timeout(BODY_TIMEOUT))
}

#[tokio::test]
async fn an_id_named_twice_is_one_id_or_a_400() {
    let w = world().await;
    let ambiguous = "urn:iamport-tower:problem:ambiguous-verification-id";
    // The query names one person, the body another: whichever the handler reads, it must be
    // the one checked — so neither is.
    let json = format!(r#"{{"imp_uid":"{MINOR}"}}"#);
    let form = format!("imp_uid={MINOR}");
    for (what, body, content_type) in [
        ("JSON", json.as_str(), "application/json"),
        ("form", form.as_str(), "application/x-www-form-urlencoded"),
    ] {
        let (status, text) = w
            .send(
                w.http
                    .post(w.url(&format!("/echo?imp_uid={ADULT}")))
                    .header("content-type", content_type)
                    .body(body.to_owned()),
            )
            .await;
        assert_eq!(
            (status, problem_type(&text).as_str()),
            (400, ambiguous),
            "{what}: {text}"
        );
    }
    assert_eq!(w.lookups(), 0, "an ambiguous request reaches no one");
    // A JSON array a handler's struct could read by position is no object: refused too.
    let (status, text) = w
        .send(
            w.http
                .post(w.url(&format!("/echo?imp_uid={ADULT}")))
                .header("content-type", "application/json")
                .body(format!(r#"["{MINOR}"]"#)),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    // The same id twice is one id; a body without the field leaves the query's.
    for body in [
        format!(r#"{{"imp_uid":"{ADULT}"}}"#),
        r#"{"nickname":"kim"}"#.into(),
    ] {
        let (status, echoed) = w
            .send(
                w.http
                    .post(w.url(&format!("/echo?imp_uid={ADULT}")))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
        assert_eq!((status, echoed.as_str()), (200, body.as_str()));
    }

    // v2's two spellings, in the query and in bodies.
    let emulator = iamport_mock::Emulator::start().await.unwrap();
    let app = iamport_e2e::serve_axum(v2_router(emulator.v2_client())).await;
    let lookups = || emulator.calls(iamport_mock::Endpoint::GetIdentityVerification);
    let http = iamport_e2e::http();
    let query = format!("identityVerificationId={ADULT}&identity_verification_id={MINOR}");
    let response = http
        .get(format!("{}/redirect?{query}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "two spellings in the query");
    let text = response.text().await.unwrap();
    assert_eq!(problem_type(&text), ambiguous);
    for (body, content_type) in [
        (
            format!(
                r#"{{"identityVerificationId":"{ADULT}","identity_verification_id":"{MINOR}"}}"#
            ),
            "application/json",
        ),
        (query.clone(), "application/x-www-form-urlencoded"),
    ] {
        let response = http
            .post(format!("{}/echo", app.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            400,
            "two spellings in a {content_type} body"
        );
        assert_eq!(problem_type(&response.text().await.unwrap()), ambiguous);
    }
    let response = http
        .post(format!("{}/echo?identity_verification_id={MINOR}", app.url))
        .json(&serde_json::json!({ "identityVerificationId": ADULT }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "one spelling in the query, the other in the body"
    );
    assert_eq!(lookups(), 0);
    // Both spellings with one value: one id, admitted.
    let body =
        format!(r#"{{"identityVerificationId":"{ADULT}","identity_verification_id":"{ADULT}"}}"#);
    let response = http
        .post(format!("{}/echo?identityVerificationId={ADULT}", app.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), body);
    let response = http
        .get(format!(
            "{}/redirect?identityVerificationId={ADULT}&identity_verification_id={ADULT}",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(lookups(), 1, "the two admitted requests shared one lookup");
}

#[tokio::test]
async fn link_previews_and_prefetches_are_never_admitted() {
    let w = world().await;
    let redirect = format!("/certifications/redirect?imp_uid={ADULT}&success=true");
    for (name, value) in [("x-purpose", "preview"), ("x-moz", "prefetch")] {
        let (status, text) = w
            .send(w.http.get(w.url(&redirect)).header(name, value))
            .await;
        assert_eq!(status, 403, "{name}: {value}: {text}");
        assert_eq!(
            problem_type(&text),
            "urn:iamport-tower:problem:speculative-request"
        );
    }
    assert_eq!(w.lookups(), 0, "a preview is not looked up");
    // The person's own visit still signs them up.
    assert_eq!(w.get(&redirect).await.0, 201);
}

/// A binding with a plain-http cookie, and a cookie header for a fresh session of it.
fn binding_and_session() -> (Binding, String) {
    let binding =
        Binding::new("binding secret for the trust tests, 32+ bytes").secure_cookie(false);
    let set = binding.mint(&http::HeaderMap::new());
    let set = set.set_cookie().unwrap().to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    (binding, cookie)
}

/// One account per person, bound to the browser session that started the verification.
#[require_certified(max_birth_year = 1999, unique = true, bound = true)]
async fn bound_signup(cert: Certified) -> (StatusCode, String) {
    (StatusCode::CREATED, cert.id.clone())
}

/// Completes a verification of `person` at the emulator with `ticket` as the merchant-chosen
/// id, as the browser SDK stand-in does (redirect mode); returns PortOne's redirect URL.
async fn certify(emulator: &str, api: &str, person: &str, ticket: &str, back: &str) -> String {
    let http = iamport_e2e::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ticket_field = if api == "v2" {
        "identity_verification_id"
    } else {
        "merchant_uid"
    };
    let response = http
        .post(format!("{emulator}/certify"))
        .form(&[
            ("person", person),
            ("mode", "redirect"),
            ("redirect_url", back),
            ("api", api),
            (ticket_field, ticket),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        303,
        "the emulator completed the verification"
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bound_route_refuses_without_a_session_or_with_a_bad_ticket_before_any_lookup() {
    let unbound = "urn:iamport-tower:problem:unbound-verification";
    let (binding, cookie) = binding_and_session();
    let emulator = iamport_mock::Emulator::start().await.unwrap();
    let layer = CertificationLayer::new(emulator.client()).binding(binding.clone());
    let app = iamport_e2e::serve_axum(
        Router::new()
            .route("/certifications", post(bound_signup))
            .route("/certifications/redirect", get(bound_signup))
            .layer(layer),
    )
    .await;
    let http = iamport_e2e::http();
    let lookups = || emulator.calls(iamport_mock::Endpoint::GetCertification);
    // A genuine verification of this session's: its id and its ticket.
    let session = cookie.split_once('=').unwrap().1;
    let ticket = binding.mint_for(session);
    let back = format!("{}/certifications/redirect", app.url);
    let returned = certify(&emulator.url(), "v1", ADULT, &ticket, &back).await;
    let query = returned.split_once('?').unwrap().1.to_owned();
    let imp_uid = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("imp_uid="))
        .unwrap()
        .to_owned();

    // Cookieless requests, many of them: not one lookup.
    for _ in 0..50 {
        let response = http
            .post(format!("{}/certifications", app.url))
            .json(&serde_json::json!({ "imp_uid": imp_uid }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(problem_type(&response.text().await.unwrap()), unbound);
    }
    // A cookie the server never issued.
    let planted = "iamport_binding=AAAAAAAAAAAAAAAAAAAAAA";
    let response = http
        .get(format!("{}/certifications/redirect?{query}", app.url))
        .header("cookie", planted)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "a planted cookie is no session");
    // A real session, but the redirect carries a ticket that is not this session's.
    let forged = binding.mint_for("another session altogether");
    for merchant_uid in [forged.as_str(), "order_1", ""] {
        let response = http
            .get(format!(
                "{}/certifications/redirect?imp_uid={imp_uid}&merchant_uid={merchant_uid}",
                app.url
            ))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "merchant_uid={merchant_uid}");
    }
    assert_eq!(lookups(), 0, "nothing above reached PortOne");

    // The popup flow carries no ticket of its own: the record's is checked after the lookup.
    let (_, other_cookie) = binding_and_session();
    let response = http
        .post(format!("{}/certifications", app.url))
        .header("cookie", &other_cookie)
        .json(&serde_json::json!({ "imp_uid": imp_uid }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "another session's verification");
    assert_eq!(lookups(), 1);
    // The session that started it signs up through the redirect.
    let response = http
        .get(format!("{}/certifications/redirect?{query}", app.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // v2: the id is the ticket, so a bad one is refused before the lookup as well.
    let v2 = iamport_e2e::serve_axum(
        Router::new()
            .route("/certifications", post(bound_signup))
            .layer(CertificationLayer::new(emulator.v2_client()).binding(binding.clone())),
    )
    .await;
    let v2_lookups = || emulator.calls(iamport_mock::Endpoint::GetIdentityVerification);
    let genuine = binding.mint_for(session);
    certify(&emulator.url(), "v2", "imp_100000000003", &genuine, &back).await;
    for (id, cookie) in [
        (ADULT, Some(cookie.as_str())),
        (forged.as_str(), Some(cookie.as_str())),
        (genuine.as_str(), None),
        (genuine.as_str(), Some(other_cookie.as_str())),
    ] {
        let mut request = http
            .post(format!("{}/certifications", v2.url))
            .json(&serde_json::json!({ "identityVerificationId": id }));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{id} with {cookie:?}");
    }
    assert_eq!(v2_lookups(), 0, "no v2 lookup for a bad ticket");
    let response = http
        .post(format!("{}/certifications", v2.url))
        .header("cookie", &cookie)
        .json(&serde_json::json!({ "identityVerificationId": genuine }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(v2_lookups(), 1);
}

/// A PortOne stand-in whose every lookup fails with `message`.
async fn hostile_upstream(message: &'static str) -> iamport_e2e::Served {
    let token = serde_json::json!({"code": 0, "message": null,
        "response": {"access_token": "t", "now": 0, "expired_at": 1800}});
    iamport_e2e::serve_axum(
        Router::new()
            .route(
                "/users/getToken",
                post(move || async move { axum::Json(token.clone()) }),
            )
            .route(
                "/certifications/{id}",
                get(move || async move {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(
                            serde_json::json!({"code": -1, "message": message, "response": null}),
                        ),
                    )
                }),
            ),
    )
    .await
}

// The subscriber is per thread: a current-thread runtime keeps the layer's work on this one.
#[tokio::test(flavor = "current_thread")]
async fn upstream_text_cannot_forge_log_lines() {
    let upstream = hostile_upstream(
        "실패\n1999-01-01T00:00:00.000000Z  INFO axum_signup::app: account created account_id=acct_666\r\u{1b}[2K",
    )
    .await;
    let client = IamportClient::builder()
        .base_url(&upstream.url)
        .key("k")
        .secret("s")
        .retry(iamport_tower::client::RetryPolicy::NONE)
        .build()
        .unwrap();
    let (captured, _guard) = iamport_e2e::Captured::install();
    let app = iamport_e2e::serve_axum(router(client)).await;
    let response = iamport_e2e::http()
        .get(format!(
            "{}/certifications/redirect?imp_uid={ADULT}",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let logs = captured.text();
    assert!(
        logs.contains("identity verification lookup failed"),
        "{logs}"
    );
    assert!(
        logs.contains("실패"),
        "the upstream text is kept, readable: {logs}"
    );
    assert!(
        !logs.lines().any(|line| line.starts_with("1999-01-01")),
        "a forged line: {logs}"
    );
    assert!(!logs.contains('\r') && !logs.contains('\u{1b}'), "{logs:?}");
    let loud = logs
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "));
    for line in loud {
        assert!(!line.contains(ADULT), "an id at INFO or above: {line}");
    }
}

/// Sends a whole small JSON body over a new connection; the status and the response head.
async fn post_whole(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

/// Opens a connection and sends the head and 65 000 bytes of a 65 536-byte JSON body, then
/// holds it (the server answers only when the rest comes, or at once if it refuses).
async fn hold_body(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 65536\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut body = br#"{"imp_uid":"imp_100000000001","pad":""#.to_vec();
    body.resize(65_000, b'a');
    stream.write_all(&body).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bodies_beyond_the_global_budget_are_refused_at_once() {
    // The default layer: 64 KiB per body, a 16 MiB budget across all of them, 10 s to arrive.
    let w = World::start(|client| {
        Router::new()
            .route("/echo", post(echo))
            .layer(CertificationLayer::new(client))
    })
    .await;
    let small = format!(r#"{{"imp_uid":"{ADULT}"}}"#);
    assert_eq!(post_whole(w.app.addr, &small).await.0, 200);
    // More held 64 KiB bodies than 16 MiB holds.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(hold_body(w.app.addr).await);
    }
    // Once the server has read their heads, a new body — however small — is refused at
    // once, with a time to come back.
    let refused = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let (status, text) = post_whole(w.app.addr, &small).await;
            if status == 503 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("with the budget spent, a new body must be refused with 503");
    let head = refused.to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: "), "{refused}");
    assert!(head.contains("application/problem+json"), "{refused}");
    assert!(
        refused.contains("urn:iamport-tower:problem:busy"),
        "{refused}"
    );
    // The held bodies' clients go away: their buffers are dropped, the budget comes back.
    drop(held);
    tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            if post_whole(w.app.addr, &small).await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("once the held bodies are gone, bodies are read again");
}

#[tokio::test]
async fn a_budget_holds_declared_and_chunked_bodies_alike() {
    let layer = std::sync::OnceLock::new();
    let w = World::start(|client| {
        let budget = CertificationLayer::new(client).body_budget(100);
        layer.set(budget.clone()).unwrap();
        Router::new().route("/echo", post(echo)).layer(budget)
    })
    .await;
    let layer = layer.get().unwrap();
    let fits = format!(r#"{{"imp_uid":"{ADULT}"}}"#);
    let too_much = format!(r#"{{"imp_uid":"{ADULT}","pad":"{}"}}"#, "a".repeat(100));
    assert_eq!(post_whole(w.app.addr, &fits).await.0, 200);
    let (status, text) = post_whole(w.app.addr, &too_much).await;
    assert_eq!(status, 503, "a declared length past the budget: {text}");
    // Chunked: no length to reserve up front, so the bytes are reserved as they arrive.
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json";
    let chunks: Vec<&[u8]> = vec![fits.as_bytes()];
    assert_eq!(
        iamport_e2e::post_chunked(w.app.addr, head, &chunks).await,
        200
    );
    let (first, rest) = too_much.as_bytes().split_at(60);
    assert_eq!(
        iamport_e2e::post_chunked(w.app.addr, head, &[first, rest]).await,
        503,
        "a chunked body growing past the budget"
    );
    assert_eq!(layer.buffered_bytes(), 0, "every share was given back");
}
