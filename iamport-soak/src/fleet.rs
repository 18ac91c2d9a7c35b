//! The two replica processes: started, watched (RSS), killed with SIGKILL and started again.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How long a replica may take to start serving (it has no startup step: seconds, even on a
/// loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One replica: where it listens and which process is it now.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) name: &'static str,
    pub(crate) url: String,
    /// Arguments after `replica`.
    args: Vec<String>,
    /// Where its standard error goes (appended across restarts).
    log: PathBuf,
    /// Serving now (the load sends only to replicas that are up).
    up: AtomicBool,
    /// Bumped at every kill: a request that started in another generation and lost its
    /// connection was cut by the kill, not left unanswered.
    generation: AtomicU64,
    pid: AtomicU32,
    child: Mutex<Option<Child>>,
    /// Secrets for the environment.
    env: Vec<(String, String)>,
}

impl Replica {
    pub(crate) fn new(
        name: &'static str,
        port: u16,
        args: Vec<String>,
        log: PathBuf,
        env: Vec<(String, String)>,
    ) -> Self {
        Self {
            name,
            url: format!("http://127.0.0.1:{port}"),
            args,
            log,
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            child: Mutex::new(None),
            env,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|&p| p != 0 && self.is_up())
    }

    /// Starts the process and waits for its `ready` line.
    pub(crate) async fn start(&self) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut child = Command::new(exe)
            .arg("replica")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start replica {}: {e}", self.name))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        match ready {
            Ok(Ok(Some(line))) if line.starts_with("ready") => {}
            other => {
                let _ = child.start_kill();
                return Err(format!(
                    "replica {} did not become ready ({other:?}); see {}",
                    self.name,
                    self.log.display()
                ));
            }
        }
        // Keep draining stdout so the replica never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        *self.child.lock().await = Some(child);
        self.up.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// SIGKILL, and proof it died of it.
    pub(crate) async fn kill(&self) -> Result<(), String> {
        let mut slot = self.child.lock().await;
        let Some(mut child) = slot.take() else {
            return Err(format!("replica {} is not running", self.name));
        };
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        child
            .start_kill()
            .map_err(|e| format!("kill {}: {e}", self.name))?;
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .map_err(|_| format!("replica {} did not die within 10 s", self.name))?
            .map_err(|e| format!("wait {}: {e}", self.name))?;
        use std::os::unix::process::ExitStatusExt as _;
        if status.signal() == Some(9) {
            Ok(())
        } else {
            Err(format!(
                "replica {} ended with {status}, not SIGKILL",
                self.name
            ))
        }
    }

    /// Stops it at the end of the run (its standard input closes; then SIGKILL if needed).
    pub(crate) async fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(mut child) = self.child.lock().await.take() {
            drop(child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
    }

    /// Resident set size now, in KiB (Linux `/proc`).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}
