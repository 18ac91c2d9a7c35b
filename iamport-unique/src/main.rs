//! `iamport-unique`: the operator's side of iamport-tower's one-account-per-person stores.
//!
//! ```text
//! iamport-unique [OPTIONS] import            # register people who already have accounts
//! iamport-unique [OPTIONS] forget [--cooldown 30d]   # account deletion, optionally refusing
//!                                            # re-signup until the cooldown ends
//! iamport-unique [OPTIONS] status            # where each person stands
//! ```
//!
//! Each reads one CI per line on standard input (or, with `--keys`, one store key — 64 hex
//! characters, as `Certified::unique_key` gives them). The store comes from `--store URL`,
//! else `DATABASE_URL` (PostgreSQL), else `REDIS_URL` (Redis); a Redis Cluster is
//! `redis+cluster://host1:7001,host2:7002` or a comma-separated list of `redis://` nodes. The
//! key secret comes from `UNIQUE_KEY_SECRET` — the same one the app gives
//! `CertificationLayer::unique_store`. CIs are never printed.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use iamport_tower::Secret;
use iamport_tower::unique::{
    KeyStatus, PostgresStore, RedisClusterStore, RedisStore, UniqueKey, UniqueKeys, UniqueStore,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const USAGE: &str = "\
usage: iamport-unique [OPTIONS] <import | forget [--cooldown DURATION] | status>

Reads one CI per line on standard input (or one hex store key with --keys).

commands:
  import               register people who already have accounts (signup → 409)
  forget               forget people whose accounts were deleted (signup → admitted)
    --cooldown D       ... but keep them refused for D (e.g. 30d, 12h, 90m) first
  status               print `<key> <status>` for each line

options:
  --store URL          postgres://…, redis://…, redis+cluster://h1:7001,h2:7002
                       (default: $DATABASE_URL, else $REDIS_URL)
  --table NAME         PostgreSQL table (default iamport_unique_keys)
  --prefix PREFIX      Redis key prefix (default iamport:unique:)
  --scope NAME         the `unique = \"NAME\"` scope (default: the default scope)
  --keys               read hex store keys instead of CIs (no secret needed)
  --batch N            keys per store call (default 10000)
  --timeout D          bound of one store call (default 60s)
  -h, --help           this text

environment: UNIQUE_KEY_SECRET (required unless --keys), DATABASE_URL, REDIS_URL
exit status: 0 done, 1 the store failed, 2 bad usage or input";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Import,
    Forget { cooldown: Option<Duration> },
    Status,
}

#[derive(Debug)]
struct Options {
    command: Command,
    store: Option<String>,
    table: Option<String>,
    prefix: Option<String>,
    scope: Option<String>,
    keys: bool,
    batch: usize,
    timeout: Duration,
}

/// A failure: its message, and whether it was the operator's input (exit 2) or the store (1).
struct Failure {
    message: String,
    usage: bool,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        usage: true,
    }
}

fn store_failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        usage: false,
    }
}

/// `30d`, `12h`, `90m`, `45s`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        usage(format!(
            "`{text}` is not a duration (e.g. 30d, 12h, 90m, 45s)"
        ))
    })?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        "ms" => return Ok(Duration::from_millis(n)),
        _ => {
            return Err(usage(format!(
                "`{text}`: the unit must be d, h, m, s or ms"
            )));
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| usage(format!("`{text}` is too long")))
}

fn parse_args() -> Result<Options, Failure> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut command = None;
    let mut cooldown = None;
    let mut options = Options {
        command: Command::Status,
        store: None,
        table: None,
        prefix: None,
        scope: None,
        keys: false,
        batch: 10_000,
        timeout: Duration::from_secs(60),
    };
    let bad = |e: lexopt::Error| usage(e.to_string());
    while let Some(arg) = parser.next().map_err(bad)? {
        match arg {
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Long("store") => {
                options.store = Some(parser.value().map_err(bad)?.string().map_err(bad)?);
            }
            Long("table") => {
                options.table = Some(parser.value().map_err(bad)?.string().map_err(bad)?);
            }
            Long("prefix") => {
                options.prefix = Some(parser.value().map_err(bad)?.string().map_err(bad)?);
            }
            Long("scope") => {
                options.scope = Some(parser.value().map_err(bad)?.string().map_err(bad)?);
            }
            Long("keys") => options.keys = true,
            Long("cooldown") => {
                cooldown = Some(parse_duration(
                    &parser.value().map_err(bad)?.string().map_err(bad)?,
                )?);
            }
            Long("batch") => {
                let value = parser.value().map_err(bad)?.string().map_err(bad)?;
                options.batch = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| usage(format!("--batch `{value}`: a positive number")))?;
            }
            Long("timeout") => {
                options.timeout =
                    parse_duration(&parser.value().map_err(bad)?.string().map_err(bad)?)?;
            }
            Value(value) if command.is_none() => {
                command = Some(match value.string().map_err(bad)?.as_str() {
                    "import" => "import",
                    "forget" => "forget",
                    "status" => "status",
                    other => return Err(usage(format!("unknown command `{other}`\n\n{USAGE}"))),
                });
            }
            other => return Err(usage(format!("{}\n\n{USAGE}", other.unexpected()))),
        }
    }
    options.command = match command {
        Some("import") => Command::Import,
        Some("forget") => Command::Forget { cooldown },
        Some(_) => Command::Status,
        None => return Err(usage(format!("a command is missing\n\n{USAGE}"))),
    };
    if cooldown.is_some() && !matches!(options.command, Command::Forget { .. }) {
        return Err(usage("--cooldown goes with `forget`"));
    }
    Ok(options)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The store named by `url`.
fn open_store(url: &str, options: &Options) -> Result<Arc<dyn UniqueStore>, Failure> {
    let invalid = |e: iamport_tower::unique::StoreError| usage(format!("--store: {e}"));
    let cluster_nodes: Option<Vec<String>> =
        if let Some(nodes) = url.strip_prefix("redis+cluster://") {
            Some(
                nodes
                    .split(',')
                    .map(|n| format!("redis://{}", n.trim()))
                    .collect(),
            )
        } else if url.starts_with("redis://") && url.contains(',') {
            Some(url.split(',').map(|n| n.trim().to_owned()).collect())
        } else {
            None
        };
    if let Some(nodes) = cluster_nodes {
        let mut store =
            RedisClusterStore::with_timeout(nodes.iter().map(String::as_str), options.timeout)
                .map_err(invalid)?;
        if let Some(prefix) = &options.prefix {
            store = store.prefix(prefix.clone());
        }
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut store = PostgresStore::new(url)
            .map_err(invalid)?
            .timeout(options.timeout);
        if let Some(table) = &options.table {
            store = store.table(table).map_err(invalid)?;
        }
        return Ok(Arc::new(store));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://") {
        let mut store = RedisStore::new(url)
            .map_err(invalid)?
            .timeout(options.timeout);
        if let Some(prefix) = &options.prefix {
            store = store.prefix(prefix.clone());
        }
        return Ok(Arc::new(store));
    }
    Err(usage(
        "--store: the URL must start with postgres://, postgresql://, redis:// or redis+cluster://",
    ))
}

fn progress(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

fn describe(status: KeyStatus) -> String {
    match status {
        KeyStatus::Free => "free".into(),
        KeyStatus::Reserved => "reserved".into(),
        KeyStatus::Committed => "registered".into(),
        KeyStatus::CoolingDown { until } => match jiff::Timestamp::try_from(until) {
            Ok(at) => format!(
                "cooling-down until {}",
                at.round(jiff::Unit::Second).unwrap_or(at)
            ),
            Err(_) => "cooling-down".into(),
        },
    }
}

async fn run(options: Options) -> Result<String, Failure> {
    let url = options
        .store
        .clone()
        .or_else(|| env("DATABASE_URL"))
        .or_else(|| env("REDIS_URL"))
        .ok_or_else(|| usage("no store: pass --store URL or set DATABASE_URL or REDIS_URL"))?;
    let store = open_store(&url, &options)?;
    let keys = if options.keys {
        None
    } else {
        let secret = env("UNIQUE_KEY_SECRET").ok_or_else(|| {
            usage(
                "UNIQUE_KEY_SECRET is not set (the app's key secret; or pass --keys with hex keys)",
            )
        })?;
        Some(UniqueKeys::new(&Secret::new(secret)))
    };
    let scope = options.scope.as_deref();
    let cooldown_until = match options.command {
        Command::Forget { cooldown: Some(d) } => Some(SystemTime::now() + d),
        _ => None,
    };

    let started = Instant::now();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let (mut read, mut changed, mut line_number) = (0u64, 0u64, 0u64);
    let mut batch: Vec<UniqueKey> = Vec::with_capacity(options.batch);
    let mut stdout = std::io::stdout().lock();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| usage(format!("cannot read standard input: {e}")))?;
        let done = line.is_none();
        if let Some(line) = line {
            line_number += 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let key = match &keys {
                Some(keys) => keys.key_in(scope, line),
                // Never echo the line: it may be a CI pasted by mistake.
                None => UniqueKey::from_hex(line).ok_or_else(|| {
                    usage(format!("line {line_number}: not a 64-hex-digit store key"))
                })?,
            };
            batch.push(key);
            read += 1;
        }
        if batch.len() >= options.batch || (done && !batch.is_empty()) {
            let failed = |e: iamport_tower::unique::StoreError| {
                store_failure(format!(
                    "the store failed after {} lines ({changed} changed): {e}",
                    read - batch.len() as u64
                ))
            };
            match options.command {
                Command::Import => changed += store.register_all(&batch).await.map_err(failed)?,
                Command::Forget { .. } => {
                    changed += store
                        .forget_all(&batch, cooldown_until)
                        .await
                        .map_err(failed)?;
                }
                Command::Status => {
                    for key in &batch {
                        let status = store.status(key).await.map_err(failed)?;
                        let _ = writeln!(stdout, "{} {}", key.to_hex(), describe(status));
                    }
                }
            }
            batch.clear();
            if !done && options.command != Command::Status {
                progress(&format!(
                    "… {read} read, {changed} changed ({:.0}/s)",
                    read as f64 / started.elapsed().as_secs_f64().max(1e-3)
                ));
            }
        }
        if done {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(match options.command {
        Command::Import => format!(
            "imported {read} people in {seconds:.1} s: {changed} newly registered, {} already were",
            read - changed
        ),
        Command::Forget { cooldown: None } => {
            format!(
                "forgot {read} people in {seconds:.1} s ({changed} were registered or reserved)"
            )
        }
        Command::Forget { cooldown: Some(_) } => {
            let until = cooldown_until
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
                .unwrap_or_default();
            format!(
                "forgot {read} people in {seconds:.1} s ({changed} were registered or reserved); \
                 refused until {until}"
            )
        }
        Command::Status => format!("{read} looked up"),
    })
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|options| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| store_failure(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(run(options))
    });
    match result {
        Ok(summary) => {
            progress(&summary);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            progress(&format!("iamport-unique: {}", failure.message));
            ExitCode::from(if failure.usage { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").ok(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_duration("12h").ok(),
            Some(Duration::from_secs(12 * 3_600))
        );
        assert_eq!(
            parse_duration("90m").ok(),
            Some(Duration::from_secs(90 * 60))
        );
        assert_eq!(parse_duration("45s").ok(), Some(Duration::from_secs(45)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        for bad in ["", "d", "30", "30 d", "30w", "-1d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
