//! The README's example says what stops it as the README quotes it: runs the real binary
//! with a setting missing or wrong at a time, against the emulator, and checks that its last
//! line is one of the README's `Error: …` lines, exactly — and that it logs from its first
//! line.

use std::process::Command;

use iamport_mock::{Emulator, TEST_KEY, TEST_SECRET};

const SECRET: &str = "readme-axum-test-secret-0123456789abcdef";

/// Runs the example with exactly `env` (and `NO_COLOR`); its stdout and stderr.
fn run(env: &[(&str, &str)]) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_readme-axum"));
    command.env_clear().env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("the example runs");
    assert!(!output.status.success(), "it should stop");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_stops_it_is_the_sentence_the_readme_quotes() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.url();
    // A port nothing listens on: a database that refuses connections.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = refused.local_addr().unwrap().port().to_string();
    drop(refused);
    let database = format!("postgres://postgres@127.0.0.1:{port}/app");

    let portone = [("IMP_KEY", TEST_KEY), ("IAMPORT_API_URL", url.as_str())];
    fn with_key<'a>(mut env: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
        env.push(("UNIQUE_KEY_SECRET", SECRET));
        env
    }
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![],
            "Error: invalid configuration: the API key (IMP_KEY) is not set",
        ),
        (
            vec![portone[0], ("IMP_SECRET", TEST_SECRET), portone[1]],
            "Error: invalid configuration: UNIQUE_KEY_SECRET is not set; make one with \
             `openssl rand -hex 32` and keep it stable",
        ),
        (
            with_key(vec![portone[0], ("IMP_SECRET", "wrong"), portone[1]]),
            "Error: PortOne rejected the API credentials (HTTP 401); check IMP_KEY and IMP_SECRET",
        ),
        (
            with_key(vec![portone[0], ("IMP_SECRET", TEST_SECRET), portone[1]]),
            "Error: invalid configuration: DATABASE_URL is not set",
        ),
        (
            with_key(vec![
                portone[0],
                ("IMP_SECRET", TEST_SECRET),
                portone[1],
                ("DATABASE_URL", database.as_str()),
            ]),
            "Error: unique store unavailable: PostgreSQL at 127.0.0.1:5433/app: error \
             communicating with database: Connection refused (os error 111)",
        ),
    ];
    let readme = readme();
    for (env, quoted) in cases {
        assert!(
            readme.lines().any(|line| line == quoted),
            "the README does not quote {quoted:?}"
        );
        let (stdout, stderr) = run(&env);
        let printed = stderr.lines().last().unwrap_or("");
        // The README's address is an example; the test's database is on a free port.
        assert_eq!(printed, quoted.replace("5433", &port), "{stdout}");
        assert!(
            stdout.contains("INFO readme_axum: logging at INFO and above"),
            "no startup log line: {stdout}"
        );
    }
}
