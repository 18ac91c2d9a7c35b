//! Runs the real `axum-signup` binary on a free port, on the built-in emulator.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The demo process; killed on drop.
#[allow(dead_code)] // each test binary uses a part of it
pub struct Demo {
    pub url: String,
    /// The built-in emulator's URL, as the demo printed it.
    pub emulator: String,
    /// Every line the demo printed on stdout (its log too), so far.
    lines: Arc<Mutex<Vec<String>>>,
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Waits, at most `limit`, until `count` printed lines contain `text`; all lines so far.
    #[allow(dead_code)] // each test binary uses a part of it
    pub fn wait_for_lines(&self, text: &str, count: usize, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.iter().filter(|l| l.contains(text)).count() >= count
                || started.elapsed() > limit
            {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits, at most `limit`, for the process to exit.
    #[allow(dead_code)] // each test binary uses a part of it
    pub fn interrupt(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGINT sent");
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts the demo as a user would (`cargo run -p axum-signup`), with `PORT=0` and no PortOne
/// credentials, plus `extra` environment variables; waits for its "listening on" line.
pub fn start_demo(extra: &[(&str, &str)]) -> Demo {
    let mut command = Command::new(env!("CARGO_BIN_EXE_axum-signup"));
    command
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .env("UNIQUE_KEY_SECRET", "demo-test-secret-0123456789abcdef");
    for name in [
        "IMP_KEY",
        "IMP_SECRET",
        "IAMPORT_API_URL",
        "DATABASE_URL",
        "REDIS_URL",
    ] {
        command.env_remove(name);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the axum-signup binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    std::thread::spawn(move || {
        let mut emulator = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line.clone());
            if line.contains("built-in PortOne emulator") {
                emulator = line.rsplit(" at ").next().unwrap_or("").trim().to_owned();
            }
            if let Some(url) = line.strip_prefix("axum-signup listening on ") {
                let _ = tx.send((url.trim().to_owned(), emulator.clone()));
            }
        }
    });
    let started = Instant::now();
    let (url, emulator) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("axum-signup did not start within {:?}", started.elapsed()));
    Demo {
        url,
        emulator,
        lines,
        child,
    }
}
