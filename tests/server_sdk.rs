//! PortOne's official `@portone/server-sdk` (npm), unmodified, against the emulator: get,
//! not found, unauthorized, another store, list, login/refresh, an unserved path — every
//! error typed. Needs Node.js and `npm ci --prefix tests/portone-sdk`; without them the test
//! prints a SKIPPED line (and fails instead when `REQUIRE_SERVER_SDK=1`, as in `.ci/run`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use iamport_e2e::notice;
use iamport_mock::{Emulator, TEST_V2_SECRET};

const STORE: &str = "store-emulator-sdk";

fn skip_or_fail(reason: &str) {
    if std::env::var("REQUIRE_SERVER_SDK").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_SERVER_SDK=1 but {reason}");
    }
    notice(&format!(
        "SKIPPED official_server_sdk_works_against_the_emulator: {reason} — run: \
         npm ci --prefix tests/portone-sdk"
    ));
}

#[tokio::test]
async fn official_server_sdk_works_against_the_emulator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("portone-sdk");
    if !dir
        .join("node_modules/@portone/server-sdk/package.json")
        .exists()
    {
        return skip_or_fail("@portone/server-sdk is not installed");
    }
    let emulator = Emulator::builder()
        .v2_store_id(STORE)
        .start()
        .await
        .unwrap();
    // A verification made through the v2 browser SDK stand-in, with customer.id and
    // customData, as a page would.
    let http = iamport_e2e::http();
    let flow = [
        ("api", "v2"),
        ("identity_verification_id", "iv-sdk-1"),
        ("customer_id", "customer-sdk"),
        ("custom_data", r#"{"plan":"pro"}"#),
        ("mode", "iframe"),
    ];
    let page = http
        .get(format!("{}/certify", emulator.url()))
        .query(&flow)
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success());
    let mut chosen = flow.to_vec();
    chosen.push(("person", "imp_100000000001"));
    let done = http
        .post(format!("{}/certify", emulator.url()))
        .form(&chosen)
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success());

    let child = match tokio::process::Command::new("node")
        .arg("sdk.mjs")
        .args([emulator.url().as_str(), TEST_V2_SECRET, STORE])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return skip_or_fail(&format!("node cannot be started ({error})")),
    };
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the SDK run finishes within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    notice(&format!(
        "@portone/server-sdk against the emulator:\n{stdout}"
    ));
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(emulator.calls(iamport_mock::Endpoint::GetIdentityVerification) >= 5);
    assert!(emulator.calls(iamport_mock::Endpoint::ListIdentityVerifications) >= 3);
}
