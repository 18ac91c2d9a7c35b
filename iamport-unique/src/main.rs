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
//! characters, as `Certified::store_key` gives them). The store comes from `--store URL`,
//! else `DATABASE_URL` (PostgreSQL), else `REDIS_URL` (Redis); a Redis Cluster is
//! `redis+cluster://host1:7001,host2:7002` or a comma-separated list of `redis://` nodes. On
//! PostgreSQL, `import` writes the accounts table (`iamport_accounts`, `--accounts-table`) —
//! where the app's handlers record accounts — and `forget` deletes from both tables.
//!
//! Decisions an operator can rely on:
//!
//! - **The secret is the app's, read the app's way**: `UNIQUE_KEY_SECRET` through
//!   `StoreKeys::from_env`, the one function the app uses too. It is trimmed, so a secret
//!   file's trailing newline gives the app's keys; a secret under 32 bytes is refused (exit 2
//!   with the library's message).
//! - **The whole input is checked before the first store call.** A line is a CI when, with
//!   whitespace at either end trimmed, it is 88 characters of standard base64 ending in `==`
//!   (PortOne's CI: 64 bytes, padded); with `--keys`, 64 hex digits. Blank lines are skipped
//!   — `psql -At` prints an account without a CI as one — and still count in line numbers. One line that is neither refuses the whole input:
//!   exit 2 naming the line numbers (never their content), and nothing is written — never
//!   half a file. The keys are held in memory meanwhile (32 bytes a person, at most
//!   50 million lines; split larger files).
//! - **CIs are never printed**: only store keys (`status`), line numbers and counts.
//! - **A run the store stopped halfway can be run again**: the message says how many people
//!   were written; `import` and `forget` are idempotent, so the same input again finishes
//!   the job.
//!
//! Exit status: 0 done, 1 the store failed (its message names the store's address and the
//! cause), 2 bad usage or input.

use std::io::{BufRead, Read as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use iamport_tower::unique::{
    KeyStatus, PostgresStore, RedisClusterStore, RedisStore, StoreError, StoreKey, StoreKeys,
    UniqueAdmin,
};

const USAGE: &str = "\
usage: iamport-unique [OPTIONS] <import | forget [--cooldown DURATION] | status>

Reads one CI per line on standard input (or one hex store key with --keys). The
whole input is checked first: a line that is not a CI (88 characters of base64
ending in `==`; with --keys, 64 hex digits) stops the run with exit 2 and its
line number, before anything is written. Blank lines are skipped.

commands:
  import               register people who already have accounts (signup → 409)
  forget               forget people whose accounts were deleted (signup → admitted)
    --cooldown D       ... but keep them refused for D (e.g. 30d, 12h, 90m) first
  status               print `<key> <status>` for each line

options:
  --store URL          postgres://…, redis://…, redis+cluster://h1:7001,h2:7002
                       (default: $DATABASE_URL, else $REDIS_URL)
  --table NAME         PostgreSQL reservations table (default iamport_unique_keys)
  --accounts-table NAME
                       PostgreSQL accounts table, where `import` writes
                       (default iamport_accounts)
  --prefix PREFIX      Redis key prefix (default iamport:unique:)
  --scope NAME         the `unique = \"NAME\"` scope (default: the default scope)
  --keys               read hex store keys instead of CIs (no secret needed)
  --batch N            keys per store call (default 10000)
  --timeout D          bound of one store call (default 60s)
  -h, --help           this text

environment: UNIQUE_KEY_SECRET (required unless --keys; the app's own secret,
             trimmed as the app trims it), DATABASE_URL, REDIS_URL
exit status: 0 done, 1 the store failed, 2 bad usage or input";

/// The longest line read whole: a CI is 88 bytes, a key 64; anything longer is refused
/// without being held in memory.
const MAX_LINE: usize = 1024;

/// The most people one run holds in memory (32 bytes each) before writing any.
const MAX_PEOPLE: usize = 50_000_000;

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
    accounts_table: Option<String>,
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
        accounts_table: None,
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
            Long("accounts-table") => {
                options.accounts_table = Some(parser.value().map_err(bad)?.string().map_err(bad)?);
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

/// The store an operator named.
struct Store {
    admin: Arc<dyn UniqueAdmin>,
}

impl Store {
    /// The store's own message names its address and the cause.
    fn failed(&self, error: StoreError) -> String {
        error.to_string()
    }
}

/// The store named by `url`. Nothing is connected yet: the first call connects.
fn open_store(url: &str, options: &Options) -> Result<Store, Failure> {
    let invalid = |e: StoreError| usage(format!("--store: {e}"));
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
        return Ok(Store {
            admin: Arc::new(store),
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut store = PostgresStore::connect_lazy(url)
            .map_err(invalid)?
            .timeout(options.timeout);
        if let Some(table) = &options.table {
            store = store.table(table).map_err(invalid)?;
        }
        if let Some(table) = &options.accounts_table {
            store = store.accounts_table(table).map_err(invalid)?;
        }
        return Ok(Store {
            admin: Arc::new(store),
        });
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://") {
        let mut store = RedisStore::new(url)
            .map_err(invalid)?
            .timeout(options.timeout);
        if let Some(prefix) = &options.prefix {
            store = store.prefix(prefix.clone());
        }
        return Ok(Store {
            admin: Arc::new(store),
        });
    }
    Err(usage(
        "--store: the URL must start with postgres://, postgresql://, redis:// or redis+cluster://",
    ))
}

/// How long `line` is, for a message (a line cut at [`MAX_LINE`] was longer).
fn length(line: &[u8]) -> String {
    if line.len() > MAX_LINE {
        format!("over {MAX_LINE} characters")
    } else {
        match String::from_utf8_lossy(line).chars().count() {
            1 => "1 character".into(),
            n => format!("{n} characters"),
        }
    }
}

/// `line` as a CI, or why it is not one: PortOne's CI is 64 bytes in standard base64 with
/// padding, so 86 characters of the alphabet and `==`. (Bits past the 64th byte are not
/// checked: the emulator's CIs do not zero them.)
fn as_ci(line: &[u8]) -> Result<&str, String> {
    if line.len() != 88 {
        let hint = if as_key(line).is_ok() {
            "; a store key? pass --keys"
        } else {
            ""
        };
        return Err(format!("{}, not 88{hint}", length(line)));
    }
    let (body, padding) = line.split_at(86);
    if !body
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    {
        return Err("a character outside standard base64 (A-Z a-z 0-9 + /)".into());
    }
    if padding != b"==" {
        return Err("it does not end in `==`".into());
    }
    std::str::from_utf8(line).map_err(|_| "not UTF-8".into())
}

/// `line` as a store key, or why it is not one: 64 hex digits.
fn as_key(line: &[u8]) -> Result<StoreKey, String> {
    if line.len() != 64 {
        return Err(format!("{}, not 64", length(line)));
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(StoreKey::from_hex)
        .ok_or_else(|| "a character that is not a hex digit".into())
}

/// The next line of `input` without its line ending, into `line`: `Ok(false)` at the end.
/// A line longer than [`MAX_LINE`] is cut there (the rest read and dropped): it is no CI.
fn next_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    let read = input
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        // Drop the rest of this line, a bounded piece at a time.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = input
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut rest)?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
    }
    Ok(true)
}

/// Every person in `input` — CIs turned into keys (`keys`), or hex keys when `keys` is
/// `None` — or, if any line is neither, an error naming the bad lines (never their
/// content). Nothing is written before the whole input passed.
fn read_people(
    mut input: impl BufRead,
    keys: Option<&StoreKeys>,
    scope: Option<&str>,
    nothing_done: &str,
) -> Result<Vec<StoreKey>, Failure> {
    const SHOWN: usize = 10;
    let what = if keys.is_some() {
        "a CI"
    } else {
        "a store key"
    };
    let mut people = Vec::new();
    let mut first_bad: Option<(u64, String)> = None;
    let (mut more_bad, mut more_bad_count) = (Vec::new(), 0u64);
    let mut line = Vec::new();
    let mut number = 0u64;
    while next_line(&mut input, &mut line)
        .map_err(|e| usage(format!("cannot read standard input: {e}")))?
    {
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let person = match keys {
            Some(keys) => as_ci(text).map(|ci| keys.key_in(scope, ci)),
            None => as_key(text),
        };
        match (person, &first_bad) {
            (Err(reason), None) => first_bad = Some((number, reason)),
            (Err(_), Some(_)) => {
                more_bad_count += 1;
                if more_bad.len() < SHOWN {
                    more_bad.push(number.to_string());
                }
            }
            (Ok(_), Some(_)) => {}
            (Ok(_), None) if people.len() == MAX_PEOPLE => {
                return Err(usage(format!(
                    "more than {MAX_PEOPLE} people on standard input: split it; {nothing_done}"
                )));
            }
            (Ok(key), None) => people.push(key),
        }
    }
    let Some((first, reason)) = first_bad else {
        return Ok(people);
    };
    let unshown = more_bad_count - more_bad.len() as u64;
    let tail = match unshown {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let others = match more_bad.as_slice() {
        [] => String::new(),
        [one] => format!(", nor is line {one}"),
        many => format!(", nor are lines {}{tail}", many.join(", ")),
    };
    let shape = match keys {
        Some(_) => "A CI is 88 characters of standard base64 ending in `==`",
        None => "A store key is 64 hex digits",
    };
    Err(usage(format!(
        "line {first} is not {what} ({reason}){others}; {nothing_done}. {shape}"
    )))
}

fn progress(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// "1 person", "2 people".
fn people(n: u64) -> String {
    if n == 1 {
        "1 person".into()
    } else {
        format!("{n} people")
    }
}

/// "was" for one, "were" for any other number.
fn was(n: u64) -> &'static str {
    if n == 1 { "was" } else { "were" }
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
        // The app's function: same bytes, same trimming, same refusals.
        Some(StoreKeys::from_env().map_err(|e| {
            usage(format!(
                "{e} (the CLI needs the app's own secret; or pass --keys with hex store keys)"
            ))
        })?)
    };
    let nothing_done = match options.command {
        Command::Import => "nothing was imported",
        Command::Forget { .. } => "nothing was forgotten",
        Command::Status => "nothing was looked up",
    };
    let input = std::io::stdin().lock();
    let all = read_people(input, keys.as_ref(), options.scope.as_deref(), nothing_done)?;
    let total = all.len() as u64;
    let cooldown_until = match options.command {
        Command::Forget { cooldown: Some(d) } => Some(SystemTime::now() + d),
        _ => None,
    };

    let started = Instant::now();
    let (mut done, mut changed) = (0u64, 0u64);
    let mut stdout = std::io::stdout().lock();
    for batch in all.chunks(options.batch) {
        let failed = |e| {
            store_failure(format!(
                "the store failed after {done} of {} ({changed} changed): {}",
                people(total),
                store.failed(e)
            ))
        };
        match options.command {
            Command::Import => changed += store.admin.register(batch).await.map_err(failed)?,
            Command::Forget { .. } => {
                changed += store
                    .admin
                    .forget(batch, cooldown_until)
                    .await
                    .map_err(failed)?;
            }
            Command::Status => {
                for key in batch {
                    let status = store.admin.status(key).await.map_err(failed)?;
                    let _ = writeln!(stdout, "{} {}", key.to_hex(), describe(status));
                }
            }
        }
        done += batch.len() as u64;
        if done < total && options.command != Command::Status {
            progress(&format!(
                "… {done} of {total} done, {changed} changed ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64().max(1e-3)
            ));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let read = people(total);
    Ok(match options.command {
        Command::Import => format!(
            "imported {read} in {seconds:.1} s: {changed} newly registered, {} already {}",
            total - changed,
            was(total - changed)
        ),
        Command::Forget { cooldown: None } => {
            format!(
                "forgot {read} in {seconds:.1} s ({changed} {} registered, reserved or cooling down)",
                was(changed)
            )
        }
        Command::Forget { cooldown: Some(_) } => {
            let until = cooldown_until
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
                .unwrap_or_default();
            format!(
                "forgot {read} in {seconds:.1} s ({changed} {} registered, reserved or cooling \
                 down); refused until {until}",
                was(changed)
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

    #[test]
    fn plurals() {
        assert_eq!(people(0), "0 people");
        assert_eq!(people(1), "1 person");
        assert_eq!(people(2), "2 people");
        assert_eq!((was(1), was(0), was(2)), ("was", "were", "were"));
    }

    #[test]
    fn what_a_ci_is() {
        let ci = format!("{}==", "Ab+/09".repeat(14) + "xy");
        assert_eq!(ci.len(), 88);
        assert_eq!(as_ci(ci.as_bytes()), Ok(ci.as_str()));
        let not = |line: &str| as_ci(line.as_bytes()).unwrap_err();
        assert!(not("not a ci").contains("8 characters, not 88"));
        assert!(not(&format!("{}A", &ci[..87])).contains("=="));
        assert!(not(&ci.replace('+', "-")).contains("base64"));
        let hex = "ab".repeat(32);
        assert!(not(&hex).contains("pass --keys"));
        assert_eq!(as_key(hex.as_bytes()).ok(), StoreKey::from_hex(&hex));
        let not = |line: &str| as_key(line.as_bytes()).unwrap_err();
        assert!(not("abc").contains("3 characters, not 64"));
        assert!(not("a").contains("1 character, not 64"));
        assert!(not(&"g".repeat(64)).contains("hex"));
    }

    #[test]
    fn lines_are_bounded_and_numbered() {
        let long = "x".repeat(MAX_LINE * 3 + 5);
        let text = format!("a\r\n{long}\n\nb");
        let mut input = std::io::Cursor::new(text.into_bytes());
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while next_line(&mut input, &mut line).unwrap() {
            assert!(line.len() <= MAX_LINE + 1);
            lines.push(String::from_utf8(line.clone()).unwrap());
        }
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "a\r");
        assert!(
            as_ci(lines[1].as_bytes())
                .unwrap_err()
                .contains("over 1024 characters")
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines[3], "b");
    }

    #[test]
    fn a_bad_line_refuses_the_whole_input_by_number() {
        let ci = format!("{}==", "A".repeat(86));
        let input = format!("{ci}\n\nnot a ci\n{ci}\nnope\n{}\n", "x".repeat(5000));
        let keys = StoreKeys::random();
        let Err(failure) = read_people(input.as_bytes(), Some(&keys), None, "nothing was done")
        else {
            panic!("accepted");
        };
        assert!(failure.usage);
        assert!(
            failure.message.starts_with(
                "line 3 is not a CI (8 characters, not 88), nor are lines 5, 6; nothing was done"
            ),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("not a ci"), "{}", failure.message);
        let fine = format!(" {ci} \r\n\n{ci}\n");
        let people = read_people(fine.as_bytes(), Some(&keys), None, "")
            .ok()
            .unwrap();
        assert_eq!(people, vec![keys.key_for(&ci), keys.key_for(&ci)]);
    }
}
