//! The layer as a trust boundary, over real sockets against the emulator: nothing a client
//! sends spends a PortOne call or a person's signup unless a guard asks; the id the layer
//! checks is the id the handler reads; bodies cannot be held open forever.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use iamport_e2e::World;
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
