//! The `iamport-mock` binary as a tool: `--help`, its banner, its index page.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_iamport-mock");

#[test]
fn help_is_on_stdout_and_lists_flags_credentials_and_people() {
    for flag in ["--help", "-h"] {
        let output = Command::new(BIN).arg(flag).output().unwrap();
        assert!(output.status.success(), "{flag}: exit {:?}", output.status);
        assert!(output.stderr.is_empty(), "nothing on stderr");
        let help = String::from_utf8(output.stdout).unwrap();
        for want in [
            "--listen ADDR",
            "--persons FILE",
            "--no-sample-persons",
            "--token-lifetime",
            "--v2-secret",
            "--v2-store-id",
            iamport_mock::TEST_KEY,
            iamport_mock::TEST_SECRET,
            iamport_mock::TEST_V2_SECRET,
        ] {
            assert!(help.contains(want), "{flag} lacks {want}:\n{help}");
        }
        for (id, shows) in iamport_mock::SAMPLE_GUIDE {
            assert!(help.contains(&format!("{id}  {shows}")), "{id}:\n{help}");
        }
    }
    // A mistake is still a usage error on stderr.
    let output = Command::new(BIN).arg("--nope").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown argument `--nope`"));
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_banner_and_the_index_page_list_every_variable_an_app_needs() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--v2-store-id", "store-banner"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("Ctrl-C");
            banner.push_str(&line);
            banner.push('\n');
            if done {
                let _ = tx.send(banner);
                return;
            }
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(30)).expect("it starts");
    let url = banner
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("PortOne emulator listening on "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    for name in [
        "IMP_KEY",
        "IMP_SECRET",
        "IAMPORT_API_URL",
        "IMP_CODE",
        "PORTONE_API_SECRET",
        "PORTONE_API_URL",
        "PORTONE_STORE_ID",
        "PORTONE_CHANNEL_KEY",
    ] {
        assert!(
            banner.contains(&format!("export {name}=")),
            "{name}:\n{banner}"
        );
    }
    assert!(banner.contains(&format!("IAMPORT_API_URL={url}")));
    assert!(banner.contains("PORTONE_STORE_ID=store-banner"));
    assert!(banner.contains(&format!("{url}/sdk/portone-v2.js")));

    let page = http_get(&format!("{url}/"));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for want in [
        "PORTONE_STORE_ID",
        "store-banner",
        "IMP_SECRET",
        "imp_100000000007",
    ] {
        assert!(page.contains(want), "{want} not on the index page");
    }
}

/// A minimal HTTP/1.1 GET over a TCP socket (no client library needed for one page).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
