//! `iamport-soak`: the promises of iamport-tower checked the way Jepsen checks databases —
//! the real thing under a mix of load and faults for a long time, invariants checked after.
//!
//! ```text
//! cargo run --release -p iamport-soak -- --minutes 30 --store postgres --seed 42
//! ```
//!
//! It starts, all on loopback: the PortOne emulator with a generated population
//! ([`population`]), two replicas of a guarded signup app as separate processes (this binary
//! re-executed as `iamport-soak replica …`, see [`replica`]) sharing one unique store and
//! each keeping its own accounts table in PostgreSQL, a load generator ([`load`]) and a fault
//! injector on a schedule drawn from the seed ([`faults`]). At the end [`check`] compares
//! what the replicas admitted with the emulator's truth and prints a table; the exit status
//! is 0 only if every invariant held.
//!
//! Everything it starts stops by itself: the load at the deadline, every request at its hard
//! cap, the replicas when the run ends (and, were the soak itself killed, when their standard
//! input closes).

mod bounds;
mod check;
mod faults;
mod fleet;
mod ledger;
mod load;
mod population;
mod replica;
mod run;
mod store;

use std::process::ExitCode;
use std::time::Duration;

use self::store::StoreKind;

/// What a run is asked to do (`iamport-soak --help`).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// How long the load and the faults go on.
    pub(crate) duration: Duration,
    /// Which unique store the replicas share.
    pub(crate) store: StoreKind,
    /// Draws the population, the load mix and the fault schedule.
    pub(crate) seed: u64,
    /// Concurrent virtual users.
    pub(crate) workers: usize,
    /// Generated persons.
    pub(crate) persons: usize,
    /// The most RSS a replica may have after warm-up.
    pub(crate) rss_limit_mib: u64,
    /// PostgreSQL (accounts tables, and the store with `--store postgres`).
    pub(crate) database_url: String,
    /// Redis (`--store redis`).
    pub(crate) redis_url: String,
    /// Redis Cluster nodes (`--store redis-cluster`).
    pub(crate) cluster_urls: Vec<String>,
}

const USAGE: &str = "\
iamport-soak: a chaos soak of two replicas of a guarded signup app

USAGE:
    iamport-soak [--minutes N] [--store postgres|redis|redis-cluster] [--seed S]
                 [--workers N] [--persons N] [--rss-limit-mib N]

    --minutes N        how long load and faults run (default 2; fractions allowed)
    --store KIND       the unique store both replicas share (default postgres)
    --seed S           draws population, load and fault schedule (default: random, printed)
    --workers N        concurrent virtual users (default 6)
    --persons N        generated persons (default 700 per minute, at least 2000: fresh
                       adults must last the whole run, or signups become all 409s)
    --rss-limit-mib N  the most RSS a replica may use after warm-up (default 128)

ENVIRONMENT:
    DATABASE_URL        default postgres://postgres@127.0.0.1:5432/test
    REDIS_URL           default redis://127.0.0.1:6379
    REDIS_CLUSTER_URLS  comma-separated nodes (eval \"$(.ci/redis-cluster)\")

Exits 0 only if every invariant held; otherwise names the first violation and the seed.
";

fn parse(mut args: lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let env = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let mut persons = None;
    let mut options = Options {
        duration: Duration::from_secs(120),
        store: StoreKind::Postgres,
        seed: fastrand::u64(..u64::from(u32::MAX)),
        workers: 6,
        persons: 2000,
        rss_limit_mib: 128,
        database_url: env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        redis_url: env("REDIS_URL", "redis://127.0.0.1:6379"),
        cluster_urls: env("REDIS_CLUSTER_URLS", "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    while let Some(arg) = args.next()? {
        match arg {
            Long("minutes") => {
                let minutes: f64 = args.value()?.parse()?;
                if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
                    return Err("--minutes must be in (0, 1440]".into());
                }
                options.duration = Duration::from_secs_f64(minutes * 60.0);
            }
            Long("store") => options.store = args.value()?.parse()?,
            Long("seed") => options.seed = args.value()?.parse()?,
            Long("workers") => options.workers = args.value()?.parse::<usize>()?.clamp(1, 64),
            Long("persons") => persons = Some(args.value()?.parse::<usize>()?.clamp(50, 200_000)),
            Long("rss-limit-mib") => options.rss_limit_mib = args.value()?.parse()?,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    options.persons = persons.unwrap_or_else(|| {
        let minutes = options.duration.as_secs_f64() / 60.0;
        ((minutes * 700.0) as usize).clamp(2000, 200_000)
    });
    Ok(options)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "replica") {
        return replica::main(args.skip(1).collect());
    }
    let options = match parse(lexopt::Parser::from_args(args)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("iamport-soak: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime("iamport-soak") {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(run::run(options))
}

/// The two-worker runtime the soak and its replicas run on; `who` names the process in the
/// error line (exit code 2).
pub(crate) fn runtime(who: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("{who}: cannot start the runtime: {error}");
            ExitCode::from(2)
        })
}
