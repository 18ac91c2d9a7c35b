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

#[tokio::test]
async fn the_guides_routes_work_end_to_end() {
    // Raw ids, as an API client following PortOne's guide posts them: the unbound flow.
    let demo = support::start_demo(&[("SIGNUP_BINDING", "off")]);
    let http = reqwest::Client::new();

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
    let shown = body.to_string();
    for personal in ["김성인", "1990", "01012345678"] {
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
        let http = http.clone();
        let url = format!("{}/certifications/redirect?{query}", demo.url);
        async move {
            let response = http.get(url).send().await.unwrap();
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
    let (status, content_type, html) = page(format!("imp_uid={FOREIGNER}&success=true")).await;
    assert_eq!((status, content_type.starts_with("text/html")), (409, true));
    assert!(html.contains("Already registered"));
    let (status, _, html) = page(format!("imp_uid={MINOR}&success=true")).await;
    assert_eq!(status, 403);
    assert!(html.contains("Refused") && html.contains("1999 or earlier"));
    let (status, _, html) = page(format!("imp_uid={ADULT}&success=false")).await;
    assert_eq!(status, 400);
    assert!(html.contains("cancelled"));
    let (status, _, _) = page("imp_uid=imp_999999999999".into()).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_same_flows_with_portone_v2() {
    let demo = support::start_demo(&[("PORTONE_API", "v2"), ("SIGNUP_BINDING", "off")]);
    let http = reqwest::Client::new();
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
    let cancelled = http
        .get(format!(
            "{}/certifications/redirect?identityVerificationId=x&code=IDENTITY_VERIFICATION_CANCELLED",
            demo.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 400);
    assert!(cancelled.text().await.unwrap().contains("cancelled"));
}
