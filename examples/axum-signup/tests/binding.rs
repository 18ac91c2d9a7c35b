//! Replay-proof verifications through the demo's real routes: a cookie-keeping browser
//! stand-in gets a ticket from the page, "verifies" at the emulator exactly as the browser SDK
//! stand-in does (`POST /certify`, redirect mode), and submits the result — and attackers
//! replay, swap and forge.

mod support;

use reqwest::redirect::Policy;
use serde_json::{Value, json};

const ADULT: &str = "imp_100000000001";

/// A browser: its own cookies (the binding session, the result page's), what the page gave
/// it.
struct Browser {
    http: reqwest::Client,
    /// `name=value` pairs, one per name.
    cookies: Vec<String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: http_builder().redirect(Policy::none()).build().unwrap(),
            cookies: Vec::new(),
        }
    }

    /// A browser that arrives with `cookie` (`name=value`) already set, by someone else.
    fn with_planted(cookie: &str) -> Self {
        let mut browser = Self::new();
        browser.cookies.push(cookie.to_owned());
        browser
    }

    fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.cookies.is_empty() {
            return request;
        }
        request.header("cookie", self.cookies.join("; "))
    }

    /// Keeps the cookies a response sets, replacing earlier ones of the same name.
    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Lax"),
                "{set}"
            );
            let pair = set.split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            self.cookies
                .retain(|c| c.split('=').next() != Some(name.as_str()));
            self.cookies.push(pair);
        }
    }

    /// The value of this browser's cookie `name`.
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find_map(|c| c.strip_prefix(name)?.strip_prefix('='))
    }

    /// Opens the page: keeps the session cookie it sets, returns the ticket it carries.
    async fn open_page(&mut self, demo: &support::Demo, attribute: &str) -> String {
        let response = self
            .with_cookie(self.http.get(&demo.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        self.keep_cookies(&response);
        let html = response.text().await.unwrap();
        let needle = format!(r#"{attribute}=""#);
        let start = html
            .find(&needle)
            .unwrap_or_else(|| panic!("no {attribute} in the page"))
            + needle.len();
        let end = start + html[start..].find('"').unwrap();
        html[start..end].to_owned()
    }

    /// Submits a popup-flow body to `/certifications`.
    async fn submit(&self, demo: &support::Demo, body: Value) -> (u16, Value) {
        let response = self
            .with_cookie(self.http.post(format!("{}/certifications", demo.url)))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or_default(),
        )
    }

    /// Follows a redirect-flow return URL to its result page (Post/Redirect/Get): the
    /// status the result page answers with, which is the signup's.
    async fn land(&mut self, url: &str) -> u16 {
        self.land_page(url).await.0
    }

    /// [`land`](Self::land), with the result page's URL and text.
    async fn land_page(&mut self, url: &str) -> (u16, String, String) {
        let response = self.with_cookie(self.http.get(url)).send().await.unwrap();
        assert_eq!(
            response.status(),
            303,
            "the redirect flow answers with a redirect"
        );
        self.keep_cookies(&response);
        let location = response.headers()["location"].to_str().unwrap();
        let origin = &url[..url.find("/certifications").unwrap()];
        let result = format!("{origin}{location}");
        let (status, page) = self.open(&result).await;
        (status, result, page)
    }

    /// `GET url` with this browser's cookies: the status and the page.
    async fn open(&self, url: &str) -> (u16, String) {
        let response = self.with_cookie(self.http.get(url)).send().await.unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }
}

/// Completes a verification of the sample `person` at the emulator with `ticket` as the
/// merchant-chosen id, as the SDK stand-in's page does; returns the redirect URL PortOne sends
/// the browser back to.
async fn verify_at_portone(demo: &support::Demo, api: &str, person: &str, ticket: &str) -> String {
    let http = http_builder().redirect(Policy::none()).build().unwrap();
    let redirect_url = format!("{}/certifications/redirect", demo.url);
    let mut form = vec![
        ("person", person),
        ("mode", "redirect"),
        ("redirect_url", redirect_url.as_str()),
        ("api", api),
    ];
    if api == "v2" {
        form.push(("identity_verification_id", ticket));
    } else {
        form.push(("merchant_uid", ticket));
    }
    let response = http
        .post(format!("{}/certify", demo.emulator))
        .form(&form)
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

/// The id in a return URL (`imp_uid` or `identityVerificationId`).
fn id_in(url: &str, field: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    pairs.into_iter().find(|(k, _)| k == field).unwrap().1
}

fn problem_type(body: &Value) -> &str {
    body["type"].as_str().unwrap_or_default()
}

async fn replay_attempts_are_refused(api: &str) {
    let (attribute, field) = if api == "v2" {
        ("data-identity-verification-id", "identityVerificationId")
    } else {
        ("data-merchant-uid", "imp_uid")
    };
    let demo = support::start_demo(&[("PORTONE_API", api)]);
    let unbound = "urn:iamport-tower:problem:unbound-verification";

    // A raw id without a ticket (the sample person's record carries none of ours).
    let mut a = Browser::new();
    let ticket_a = a.open_page(&demo, attribute).await;
    let raw = json!({ field: ADULT });
    let (status, body) = a.submit(&demo, raw).await;
    assert_eq!(
        (status, problem_type(&body)),
        (403, unbound),
        "raw id: {body}"
    );

    // A verifies with A's ticket; B (another browser) submits A's id: refused.
    let return_url = verify_at_portone(&demo, api, ADULT, &ticket_a).await;
    let id_a = id_in(&return_url, field);
    let mut b = Browser::new();
    let _ = b.open_page(&demo, attribute).await;
    let (status, body) = b.submit(&demo, json!({ field: id_a })).await;
    assert_eq!(
        (status, problem_type(&body)),
        (403, unbound),
        "A's id with B's cookie"
    );
    // The same through the redirect route, with B's cookie.
    assert_eq!(
        b.land(&return_url).await,
        403,
        "A's return URL in B's browser"
    );
    // And with no cookie at all.
    let (status, _) = Browser::new().submit(&demo, json!({ field: id_a })).await;
    assert_eq!(status, 403, "A's id without a session");

    // A ticket minted for session C, verified, then submitted by C with C's cookie: fine for
    // C — but D, holding C's ticket text and its own cookie, is refused.
    let mut c = Browser::new();
    let ticket_c = c.open_page(&demo, attribute).await;
    let mut d = Browser::new();
    let _ = d.open_page(&demo, attribute).await;
    let id_c = id_in(
        &verify_at_portone(&demo, api, "imp_100000000006", &ticket_c).await,
        field,
    );
    let (status, _) = d.submit(&demo, json!({ field: id_c })).await;
    assert_eq!(status, 403, "C's ticket in session D");

    // A forged ticket: one character of a genuine one changed.
    let mut forged = ticket_a.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let id_forged = id_in(
        &verify_at_portone(&demo, api, "imp_100000000006", &forged).await,
        field,
    );
    let (status, body) = a.submit(&demo, json!({ field: id_forged })).await;
    assert_eq!(
        (status, problem_type(&body)),
        (403, unbound),
        "forged ticket"
    );
    // The refusal never says which part failed.
    assert!(!body.to_string().contains("expired") && !body.to_string().contains("cookie"));

    // A, with its own ticket and cookie, signs up — once.
    let (status, body) = a.submit(&demo, json!({ field: id_a })).await;
    assert_eq!(status, 201, "A's own verification: {body}");
    let (status, _) = a.submit(&demo, json!({ field: id_a })).await;
    assert_eq!(status, 409);

    // C signs up through the redirect flow in C's own browser.
    let mut e = Browser::new();
    let ticket_e = e.open_page(&demo, attribute).await;
    let return_url = verify_at_portone(&demo, api, "imp_100000000003", &ticket_e).await;
    assert_eq!(e.land(&return_url).await, 201, "redirect flow, own session");
    drop(c);
}

#[tokio::test]
async fn v1_verifications_are_bound_to_the_browser_that_started_them() {
    replay_attempts_are_refused("v1").await;
}

#[tokio::test]
async fn v2_verifications_are_bound_to_the_browser_that_started_them() {
    replay_attempts_are_refused("v2").await;
}

#[tokio::test]
async fn an_expired_ticket_is_refused() {
    // Tickets that expire at once: a verification completed with one is refused even in the
    // session that minted it.
    let demo = support::start_demo(&[("SIGNUP_TICKET_LIFETIME_SECS", "0")]);
    let mut a = Browser::new();
    let ticket = a.open_page(&demo, "data-merchant-uid").await;
    let id = id_in(
        &verify_at_portone(&demo, "v1", ADULT, &ticket).await,
        "imp_uid",
    );
    // Expiry has one-second resolution: wait past it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = a.submit(&demo, json!({ "imp_uid": id })).await;
    assert_eq!(
        (status, problem_type(&body)),
        (403, "urn:iamport-tower:problem:unbound-verification")
    );
}

#[tokio::test]
async fn a_planted_session_cookie_is_replaced_and_is_no_session() {
    let demo = support::start_demo(&[]);
    // Someone set a well-formed cookie in the victim's browser (a sibling subdomain, a
    // plain-http response), hoping the victim's verification gets bound to it.
    let planted = "iamport_binding=AAAAAAAAAAAAAAAAAAAAAA";
    let mut victim = Browser::with_planted(planted);
    let ticket = victim.open_page(&demo, "data-merchant-uid").await;
    let session = victim.cookie("iamport_binding").unwrap();
    assert_ne!(
        session, "AAAAAAAAAAAAAAAAAAAAAA",
        "the page replaces a session the server never issued"
    );
    let id = id_in(
        &verify_at_portone(&demo, "v1", ADULT, &ticket).await,
        "imp_uid",
    );
    // The attacker, with the planted value, submits the victim's verification: refused.
    let attacker = Browser::with_planted(planted);
    let (status, body) = attacker.submit(&demo, json!({ "imp_uid": id })).await;
    assert_eq!(
        (status, problem_type(&body)),
        (403, "urn:iamport-tower:problem:unbound-verification")
    );
    // The victim signs up.
    let (status, _) = victim.submit(&demo, json!({ "imp_uid": id })).await;
    assert_eq!(status, 201);
}

/// The `Set-Cookie` of the page for a browser without cookies.
async fn page_cookie(demo: &support::Demo) -> String {
    let response = http_builder()
        .build()
        .unwrap()
        .get(&demo.url)
        .send()
        .await
        .unwrap();
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_cookie_is_host_only_and_secure_unless_plain_http_on_loopback() {
    let demo = support::start_demo(&[]);
    let cookie = page_cookie(&demo).await;
    assert!(
        cookie.starts_with("iamport_binding=") && !cookie.contains("Secure"),
        "plain http on loopback: {cookie}"
    );
    drop(demo);
    for public in [
        "https://signup.example.com",
        "https://127.0.0.1:8443",
        "http://signup.example.com",
        "http://10.0.0.7:3000",
    ] {
        let demo = support::start_demo(&[("PUBLIC_URL", public)]);
        let cookie = page_cookie(&demo).await;
        assert!(
            cookie.starts_with("__Host-iamport_binding=")
                && cookie.contains("; Secure")
                && cookie.contains("Path=/")
                && !cookie.contains("Domain"),
            "{public}: {cookie}"
        );
    }
}

#[tokio::test]
async fn the_result_page_is_shown_only_to_the_browser_that_signed_up() {
    let demo = support::start_demo(&[]);
    let mut person = Browser::new();
    let ticket = person.open_page(&demo, "data-merchant-uid").await;
    let return_url = verify_at_portone(&demo, "v1", ADULT, &ticket).await;
    let (status, result, page) = person.land_page(&return_url).await;
    assert_eq!(status, 201);
    assert!(page.contains("김*인") && page.contains("acct_"), "{page}");
    // The same page again in the same browser (a reload).
    assert_eq!(person.open(&result).await, (201, page));
    // The link in another browser — no cookie, or a session of its own: nothing personal.
    let mut other = Browser::new();
    let _ = other.open_page(&demo, "data-merchant-uid").await;
    for browser in [Browser::new(), other] {
        let (status, page) = browser.open(&result).await;
        assert_eq!(status, 404, "{page}");
        for personal in ["김*인", "1990", "acct_"] {
            assert!(!page.contains(personal), "{personal} in {page}");
        }
    }
}

/// curl against the demo: no browser session, so 403 — and once per process, a WARN saying
/// that API clients can run it with `SIGNUP_BINDING=off`.
#[tokio::test]
async fn a_signup_without_a_session_logs_the_api_client_hint_once() {
    let demo = support::start_demo(&[("RUST_LOG", "info")]);
    let curl = http_builder().build().unwrap();
    for _ in 0..2 {
        let response = curl
            .post(format!("{}/certifications", demo.url))
            .json(&json!({ "imp_uid": ADULT }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            problem_type(&body),
            "urn:iamport-tower:problem:unbound-verification"
        );
    }
    // Both refusals are logged (INFO); the hint is written between them, on the same stdout.
    let lines = demo.wait_for_lines(
        "kind=\"unbound-verification\"",
        2,
        std::time::Duration::from_secs(10),
    );
    let refusals = lines
        .iter()
        .filter(|l| l.contains("kind=\"unbound-verification\""))
        .count();
    assert_eq!(refusals, 2, "{lines:#?}");
    let hints: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("SIGNUP_BINDING=off") && l.contains("WARN"))
        .collect();
    assert_eq!(hints.len(), 1, "{lines:#?}");
}

/// The README's "try it with curl" line, run as written against the demo (on its own port),
/// prints what the README shows: with binding on, and with `SIGNUP_BINDING=off` twice.
#[test]
fn the_readmes_curl_line_prints_what_the_readme_shows() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED the_readmes_curl_line_prints_what_the_readme_shows: curl is not \
             installed — run: apt-get install curl"
        );
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/certifications"))
        .expect("the README's curl line");
    // The ```text blocks after it: what binding on prints, then binding off, twice.
    let after = &readme[readme.find(line).unwrap()..];
    let shown: Vec<&str> = after
        .split("```text\n")
        .skip(1)
        .take(2)
        .map(|block| &block[..block.find("```").unwrap()])
        .collect();
    let run = |demo: &support::Demo| {
        let command = line.replace("http://127.0.0.1:3000", &demo.url);
        let output = std::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let bound = support::start_demo(&[]);
    assert_eq!(run(&bound), shown[0]);
    let open = support::start_demo(&[("SIGNUP_BINDING", "off")]);
    assert_eq!(run(&open) + &run(&open), shown[1]);
}

/// A `reqwest::ClientBuilder`: this workspace builds reqwest with `rustls-no-provider` (ring
/// is the tree's one crypto provider), so the crate's provider is installed first.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}
