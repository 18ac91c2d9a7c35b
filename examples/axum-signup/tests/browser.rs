//! The demo in a real headless Chromium: `e2e/browser.mjs` (playwright-core) clicks through
//! both of PortOne's flows, with the v1 and the v2 API, in English and in Korean, and saves
//! screenshots to `target/screenshots/axum-signup-{v1,v2}`: the pages in both languages, a
//! success with the masked name, refusals, the emulator window closed with Escape and with its
//! close button.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and `npm ci --prefix
//! examples/axum-signup/e2e`; without them it prints a skip notice — unless
//! `REQUIRE_BROWSER=1` (set by CI), when a missing piece fails the test.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn notice(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// What is missing for the browser run, and what to run to install it.
fn missing_piece(e2e: &Path) -> Option<String> {
    const INSTALL: &str = "apt-get install chromium fonts-nanum nodejs npm && npm ci --prefix examples/axum-signup/e2e";
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return Some(format!("Node.js (node) is not installed — run: {INSTALL}"));
    }
    if !Path::new(&chromium).exists() {
        return Some(format!("Chromium is not at {chromium} — run: {INSTALL}"));
    }
    if !e2e.join("node_modules/playwright-core").exists() {
        return Some(
            "playwright-core is not installed — run: npm ci --prefix examples/axum-signup/e2e"
                .into(),
        );
    }
    None
}

#[test]
fn signup_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("e2e");
    if let Some(missing) = missing_piece(&e2e) {
        if std::env::var("REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("REQUIRE_BROWSER=1 but {missing}");
        }
        notice(&format!("SKIPPED signup_in_a_real_browser: {missing}"));
        return;
    }
    // Both PortOne APIs: v1 (`IMP.certification`, `imp_uid`) and v2
    // (`PortOne.requestIdentityVerification`, `identityVerificationId`).
    for api in ["v1", "v2"] {
        let screenshots = root.join(format!("../../target/screenshots/axum-signup-{api}"));
        let demo = support::start_demo(&[("PORTONE_API", api)]);
        let output = Command::new("node")
            .arg(e2e.join("browser.mjs"))
            .arg(&demo.url)
            .arg(&screenshots)
            .current_dir(&e2e)
            .output()
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        notice(&format!("browser run, PortOne API {api}:\n{stdout}"));
        notice(&String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "the {api} browser run failed:\n{stdout}"
        );
        assert!(stdout.contains("24 passed, 0 failed"), "{stdout}");
        for shot in [
            "00-home-en",
            "05a-verification-window-en-window",
            "16-verification-window-ko-window",
            "02-popup-adult-again",
            "05-popup-cancelled",
            "13-popup-cancelled-ko",
            "15-popup-registered-ko",
            "17-redirect-cancelled-ko",
            "01-popup-adult-created-en",
            "04-popup-minor-refused-en",
            "06-redirect-created-en",
            "10-home-ko",
            "11-popup-created-ko",
            "12-popup-minor-refused-ko",
            "14-redirect-minor-refused-ko",
        ] {
            let path = screenshots.join(format!("{shot}.png"));
            assert!(path.exists(), "no screenshot {}", path.display());
        }
    }
}
