//! The hyper example over a real socket: the running binary, on the built-in emulator.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn adults_in_minors_out() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyper-service"))
        .env("PORT", "0")
        .env_remove("IMP_KEY")
        .env_remove("IMP_SECRET")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("hyper-service listening on ") {
                let _ = tx.send(url.to_owned());
            }
            let _ = lines_tx.send(line);
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example starts");
    let http = http_builder().build().unwrap();

    // It prints ready-to-paste curl lines for the sample ids; each gets the status it says.
    let mut curls = Vec::new();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(2)) {
        let last = line.contains("in Korean");
        if line.trim_start().starts_with("curl ") {
            curls.push(line);
        }
        if last {
            break;
        }
    }
    assert!(curls.len() >= 6, "sample curl lines: {curls:?}");
    for line in &curls {
        let (command, expected) = line.split_once('#').unwrap();
        let want: u16 = expected
            .rsplit("→ ")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let quoted: Vec<&str> = command.split('\'').skip(1).step_by(2).collect();
        let target = quoted.last().unwrap();
        assert!(target.starts_with(&url), "{line}");
        let mut request = http.get(*target);
        if let Some(header) = quoted.iter().find(|q| q.contains(": ")) {
            let (name, value) = header.split_once(": ").unwrap();
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), want, "{line}");
        if line.contains("Korean") {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["detail"], "만 19세 이상인 분만 이용할 수 있습니다.");
        }
    }

    let adult = http
        .get(format!("{url}/?imp_uid=imp_100000000001"))
        .send()
        .await
        .unwrap();
    assert_eq!(adult.status(), 200);
    assert!(
        adult
            .text()
            .await
            .unwrap()
            .contains("imp_100000000001 admitted")
    );

    let minor = http
        .get(format!("{url}/?imp_uid=imp_100000000002"))
        .send()
        .await
        .unwrap();
    assert_eq!(minor.status(), 403);
    assert_eq!(minor.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = minor.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "Only people aged 19 or older can use this service."
    );

    // query_only: a body is never read, so the popup flow's POST needs the id in the URL.
    let body_only = http
        .post(&url)
        .json(&serde_json::json!({"imp_uid": "imp_100000000003"}))
        .send()
        .await
        .unwrap();
    assert_eq!(body_only.status(), 400);
    let problem: serde_json::Value = body_only.json().await.unwrap();
    assert_eq!(
        problem["detail"], "Send the identity verification id (imp_uid) in the query string.",
        "query_only: the query string only"
    );
    let post_with_query = http
        .post(format!("{url}/?imp_uid=imp_100000000003"))
        .body("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(post_with_query.status(), 200);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 400, "no id");
    let cancelled = http
        .get(format!("{url}/?imp_uid=imp_100000000001&success=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 400);
}

/// A `reqwest::ClientBuilder`: this workspace builds reqwest with `rustls-no-provider` (ring
/// is the tree's one crypto provider), so the crate's provider is installed first.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}
