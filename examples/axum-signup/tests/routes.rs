//! The demo's real routes, driven over HTTP against the running binary.

mod support;

use serde_json::{Value, json};

const ADULT: &str = "imp_100000000001";
const MINOR: &str = "imp_100000000002";
const FOREIGNER: &str = "imp_100000000003";
const REGISTERED: &str = "imp_100000000007";

async fn post_json(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let response = http
        .post(format!("{url}/certifications"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

/// `GET url` as a browser does on PortOne's redirect: follows the demo's `303` to the result
/// page with the cookie the redirect set (the page is shown to that browser only).
async fn land(url: String) -> reqwest::Response {
    let http = http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 303, "{url}");
    let location = response.headers()["location"].to_str().unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let origin = &url[..url.find("/certifications").unwrap()];
    http.get(format!("{origin}{location}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_guides_routes_work_end_to_end() {
    // Raw ids, as an API client following PortOne's guide posts them: the unbound flow.
    let demo = support::start_demo(&[("SIGNUP_BINDING", "off")]);
    let http = http_builder().build().unwrap();

    let home = http
        .get(&demo.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("/sdk/iamport.js"),
        "the page loads the emulator's SDK"
    );
    assert!(home.contains("IMP.certification"));

    // Popup flow.
    let (status, body) = post_json(&http, &demo.url, json!({"imp_uid": ADULT})).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["account_id"].as_str().unwrap().starts_with("acct_"));
    // The person sees themselves masked, as Korean sites show it: never the full name, the
    // phone or the CI.
    assert_eq!(body["person"], json!({"name": "김*인", "birth_year": 1990}));
    let shown = body.to_string();
    for personal in ["김성인", "01012345678", "1990-01-01"] {
        assert!(!shown.contains(personal), "{shown}");
    }
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": ADULT}))
            .await
            .0,
        409
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": REGISTERED}))
            .await
            .0,
        409
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": MINOR}))
            .await
            .0,
        403
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": "imp_1/../x"}))
            .await
            .0,
        400
    );
    assert_eq!(post_json(&http, &demo.url, json!({})).await.0, 400);
    let form = http
        .post(format!("{}/certifications", demo.url))
        .form(&[("imp_uid", "imp_100000000006")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 201, "a form body works too");

    // Redirect flow: HTML pages with the outcome's status.
    let page = |query: String| {
        let url = format!("{}/certifications/redirect?{query}", demo.url);
        async move {
            let response = land(url).await;
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, content_type, response.text().await.unwrap())
        }
    };
    let (status, content_type, html) =
        page(format!("imp_uid={FOREIGNER}&merchant_uid=m1&success=true")).await;
    assert_eq!(status, 201);
    assert!(content_type.starts_with("text/html"));
    assert!(html.contains("Account created"));
    assert!(html.contains("Welcome, J**n S***h (born 1988)"), "{html}");
    let (status, content_type, html) = page(format!("imp_uid={FOREIGNER}&success=true")).await;
    assert_eq!((status, content_type.starts_with("text/html")), (409, true));
    assert!(html.contains("Already registered"));
    let (status, _, html) = page(format!("imp_uid={MINOR}&success=true")).await;
    assert_eq!(status, 403);
    assert!(html.contains("You cannot sign up") && html.contains("1999 or earlier"));
    let (status, _, html) = page(format!("imp_uid={ADULT}&success=false")).await;
    assert_eq!(status, 400);
    assert!(html.contains("cancelled"));
    let (status, _, _) = page("imp_uid=imp_999999999999".into()).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_same_flows_with_portone_v2() {
    let demo = support::start_demo(&[("PORTONE_API", "v2"), ("SIGNUP_BINDING", "off")]);
    let http = http_builder().build().unwrap();
    let home = http
        .get(&demo.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("/sdk/portone-v2.js"));
    assert!(home.contains("requestIdentityVerification"));
    let (status, body) =
        post_json(&http, &demo.url, json!({"identityVerificationId": ADULT})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        post_json(&http, &demo.url, json!({"identityVerificationId": ADULT}))
            .await
            .0,
        409
    );
    assert_eq!(
        post_json(
            &http,
            &demo.url,
            json!({"identityVerificationId": REGISTERED})
        )
        .await
        .0,
        409
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"identityVerificationId": MINOR}))
            .await
            .0,
        403
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": FOREIGNER}))
            .await
            .0,
        400
    );
    let cancelled = land(format!(
        "{}/certifications/redirect?identityVerificationId=x&code=IDENTITY_VERIFICATION_CANCELLED",
        demo.url
    ))
    .await;
    assert_eq!(cancelled.status(), 400);
    assert!(cancelled.text().await.unwrap().contains("cancelled"));
}

/// The redirect flow is Post/Redirect/Get: PortOne's redirect is answered with a `303` to a
/// result page; reloading that page (or coming Back to it) shows the outcome again, with the
/// outcome's own status, and signs nobody up twice.
#[tokio::test]
async fn the_redirect_flow_answers_with_a_redirect_to_a_result_page() {
    let demo = support::start_demo(&[("SIGNUP_BINDING", "off")]);
    let http = http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = demo.url.clone();
    // The browser comes back from PortOne with its own Accept-Language.
    let arrive = |query: &str, language: &'static str| {
        let url = format!("{base}/certifications/redirect?{query}");
        let (http, base) = (http.clone(), base.clone());
        async move {
            let response = http
                .get(url)
                .header("accept-language", language)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 303, "PortOne's redirect gets a redirect");
            assert_eq!(response.headers()["cache-control"], "no-store");
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            assert!(
                location.starts_with("/certifications/result/"),
                "{location}"
            );
            // The result page is this browser's: the redirect sets the cookie that shows it.
            let cookie = response.headers()["set-cookie"].to_str().unwrap();
            let cookie = cookie.split(';').next().unwrap().to_owned();
            (format!("{base}{location}"), cookie)
        }
    };
    let open = |(url, cookie): (String, String)| {
        let http = http.clone();
        async move {
            let response = http.get(url).header("cookie", cookie).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    let korean = "ko-KR,ko;q=0.9";
    let created = arrive(&format!("imp_uid={ADULT}&success=true"), korean).await;
    let (status, html) = open(created.clone()).await;
    assert_eq!(status, 201);
    assert!(html.contains(r#"lang="ko""#) && html.contains("가입이 완료되었습니다"));
    assert!(html.contains("김*인님(1990년생), 환영합니다."), "{html}");
    assert!(!html.contains("김성인"));
    // Reload: the same page, no second signup (that would be 409).
    for _ in 0..2 {
        let (status, again) = open(created.clone()).await;
        assert_eq!((status, &again), (201, &html));
    }
    let english = arrive(&format!("imp_uid={FOREIGNER}&success=true"), "en").await;
    let (status, html) = open(english).await;
    assert_eq!(status, 201);
    assert!(html.contains("Welcome, J**n S***h (born 1988). Your account id is acct_000002."));

    // Refusals and cancellations keep their 4xx on the result page, in the browser's
    // language.
    let refused = arrive(&format!("imp_uid={MINOR}&success=true"), korean).await;
    let (status, html) = open(refused.clone()).await;
    assert_eq!(status, 403);
    assert!(html.contains("가입할 수 없습니다"));
    assert!(
        html.contains("1999년 또는 그 이전에 태어난 분만 이용할 수 있습니다."),
        "{html}"
    );
    assert_eq!(open(refused).await.0, 403, "reloaded");
    let again = arrive(&format!("imp_uid={ADULT}&success=true"), "en").await;
    let (status, html) = open(again).await;
    assert_eq!(status, 409);
    assert!(html.contains("Already registered"));
    let cancelled = arrive(&format!("imp_uid={ADULT}&success=false"), "en").await;
    let (status, html) = open(cancelled).await;
    assert_eq!(status, 400);
    assert!(html.contains("To continue, please verify your identity again."));
    let cancelled = arrive(&format!("imp_uid={ADULT}&success=false"), korean).await;
    let (status, html) = open(cancelled).await;
    assert_eq!(status, 400);
    assert!(html.contains("계속하려면 본인인증을 다시 진행해 주세요."));

    // An unknown result id: 404, nothing else.
    let (status, _) = open((
        format!("{}/certifications/result/nope", demo.url),
        String::new(),
    ))
    .await;
    assert_eq!(status, 404);
}

/// The index page follows the browser's language; the cancel sentence is the library's, in
/// both flows.
#[tokio::test]
async fn the_page_follows_the_browsers_language() {
    let demo = support::start_demo(&[]);
    let http = http_builder().build().unwrap();
    let page = |language: &'static str| {
        let request = http.get(&demo.url).header("accept-language", language);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let ko = page("ko-KR,ko;q=0.9,en-US;q=0.8").await;
    assert!(ko.contains(r#"<html lang="ko">"#));
    assert!(ko.contains("본인인증 후 가입하기"));
    assert!(ko.contains("계속하려면 본인인증을 다시 진행해 주세요."));
    assert!(!ko.contains("Sign up with identity verification"));
    let en = page("en-US,en;q=0.9,ko;q=0.5").await;
    assert!(en.contains(r#"<html lang="en">"#));
    assert!(en.contains("Sign up with identity verification"));
    assert!(en.contains("To continue, please verify your identity again."));
    assert!(!en.contains("본인인증 후 가입하기"));
}

/// `GET /metrics` after one admitted and one refused signup: the counters, with the agreed
/// names and labels — and one token fetch, at startup.
#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let demo = support::start_demo(&[("SIGNUP_BINDING", "off")]);
    let http = http_builder().build().unwrap();
    let scrape = || async {
        let response = http
            .get(format!("{}/metrics", demo.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        response.text().await.unwrap()
    };
    let before = scrape().await;
    assert!(
        before.contains(r#"iamport_token_fetches_total{result="ok"} 1"#),
        "the token is fetched at startup: {before}"
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": ADULT}))
            .await
            .0,
        201
    );
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": MINOR}))
            .await
            .0,
        403
    );
    // The signup's commit runs alongside its response: scrape until it is counted (bounded).
    let committed = r#"iamport_unique_operations_total{op="commit",result="ok"} 1"#;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut text = scrape().await;
    while !text.contains(committed) && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        text = scrape().await;
    }
    for want in [
        r#"iamport_lookups_total{source="v1",result="verified"} 2"#,
        r#"iamport_rejections_total{kind="policy-not-met"} 1"#,
        r#"iamport_token_fetches_total{result="ok"} 1"#,
        r#"iamport_unique_operations_total{op="reserve",result="reserved"} 1"#,
        r#"iamport_unique_operations_total{op="commit",result="ok"} 1"#,
        r#"iamport_upstream_request_duration_seconds_bucket{endpoint="get_certification",status="200",le="0.005"}"#,
        r#"iamport_upstream_request_duration_seconds_count{endpoint="get_token",status="200"} 1"#,
        r#"iamport_unique_operation_duration_seconds_count{op="reserve"} 1"#,
        "# HELP iamport_lookups_total ",
        "# TYPE iamport_upstream_request_duration_seconds histogram",
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    for personal in ["김성인", "이청소", ADULT, MINOR] {
        assert!(!text.contains(personal), "{personal} in the metrics");
    }
}

/// Ctrl-C right after a signup: the server shuts down gracefully, waits for the signup's
/// commit (which ran alongside its 201) and exits 0 — well within the demo's 10 s bound on
/// that wait, which a commit never counted as finished would use up.
#[tokio::test]
async fn ctrl_c_stops_the_demo_once_its_commits_settled() {
    let mut demo = support::start_demo(&[("SIGNUP_BINDING", "off")]);
    let http = http_builder().build().unwrap();
    assert_eq!(
        post_json(&http, &demo.url, json!({"imp_uid": ADULT}))
            .await
            .0,
        201
    );
    drop(http);
    let status = demo
        .interrupt(std::time::Duration::from_secs(8))
        .expect("the demo exits within 8 s of Ctrl-C");
    assert!(status.success(), "{status}");
}

/// The emulator's verification window speaks the browser's language — Korean or English,
/// never both — and shows no markup characters; the demo and the emulator have an icon.
#[tokio::test]
async fn the_verification_window_speaks_the_browsers_language() {
    let demo = support::start_demo(&[]);
    let http = http_builder().build().unwrap();
    // The window's page, as a browser asking for `language` gets it.
    let window = async |language: &'static str| -> String {
        http.get(format!(
            "{}/certify?mode=iframe&merchant_uid=m1",
            demo.emulator
        ))
        .header("accept-language", language)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
    };
    let hangul = |s: &str| s.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c));
    let ko = window("ko-KR,ko;q=0.9").await;
    assert!(ko.contains(r#"<html lang="ko">"#), "{ko}");
    assert!(
        ko.contains("인증 취소") && ko.contains("성인, 1990년생"),
        "{ko}"
    );
    assert!(!ko.contains("Cancel") && !ko.contains("Adult"), "{ko}");
    let en = window("en-US,en;q=0.9").await;
    assert!(en.contains(r#"<html lang="en">"#), "{en}");
    assert!(
        en.contains(">Cancel<") && en.contains("Adult, born 1990"),
        "{en}"
    );
    // The window's own words are English; only the test persons' names are Korean.
    let words: String = en
        .lines()
        .filter(|l| !l.contains("<small>"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!hangul(&words), "{words}");
    for page in [&ko, &en] {
        assert!(!page.contains('`'), "markup characters shown: {page}");
        assert!(page.contains(r#"<link rel="icon""#));
    }
    // No 404 for the icon, from the demo or the emulator.
    for origin in [&demo.url, &demo.emulator] {
        let icon = http
            .get(format!("{origin}/favicon.ico"))
            .send()
            .await
            .unwrap();
        assert_eq!(icon.status(), 200, "{origin}");
        assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    }
    let page = http
        .get(&demo.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<link rel="icon""#));
}

/// A `reqwest::ClientBuilder`: this workspace builds reqwest with `rustls-no-provider` (ring
/// is the tree's one crypto provider), so the crate's provider is installed first.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}
