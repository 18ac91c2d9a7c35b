//! `iamport-mock`: serves the PortOne emulator until stopped.
//!
//! ```text
//! cargo run -p iamport-mock -- \
//!     --listen 127.0.0.1:8080 --persons persons.json
//! cargo run -p iamport-mock -- --help     # flags, credentials, sample people
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use iamport_mock::{Emulator, SAMPLE_GUIDE, TEST_KEY, TEST_SECRET, TEST_V2_SECRET};

const USAGE: &str = "usage: iamport-mock [--listen ADDR] [--persons FILE] [--no-sample-persons]
                    [--token-lifetime SECONDS] [--v2-secret SECRET] [--v2-store-id ID]";

const FLAGS: &str = "  --listen ADDR          address to serve on (default 127.0.0.1:8080)
  --persons FILE         JSON array of v1 certification objects to serve (added to the samples)
  --no-sample-persons    start without the built-in sample persons
  --token-lifetime SECS  access token lifetime (default 1800)
  --v2-secret SECRET     v2 API secret to accept (default: the emulator's test secret)
  --v2-store-id ID       the v2 secret's store: another storeId is 403 FORBIDDEN
  -h, --help             this help";

/// `--help`: what it serves, the flags, the credentials it accepts, the sample people.
fn help() -> String {
    let mut out = format!(
        "iamport-mock: a PortOne emulator — v1 and v2 identity-verification APIs, browser SDK \
         stand-ins and their verification window — for tests and demos. No real person is involved.\n\n\
         {USAGE}\n\n{FLAGS}\n\n\
         Credentials it accepts:\n  \
         v1  IMP_KEY={TEST_KEY}\n      IMP_SECRET={TEST_SECRET}\n  \
         v2  PORTONE_API_SECRET={TEST_V2_SECRET} (or --v2-secret), any PORTONE_STORE_ID unless --v2-store-id\n\n\
         Once it listens it prints every variable an app needs (v1 and v2), and GET / serves the same page.\n\n\
         Sample people (imp_uid; v2 takes the same ids as identityVerificationId):\n"
    );
    for (id, shows) in SAMPLE_GUIDE {
        out.push_str(&format!("  {id}  {shows}\n"));
    }
    out
}

struct Args {
    listen: SocketAddr,
    persons: Option<String>,
    samples: bool,
    token_lifetime: Option<u64>,
    v2_secret: Option<String>,
    v2_store_id: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        persons: None,
        samples: true,
        token_lifetime: None,
        v2_secret: None,
        v2_store_id: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v.parse().map_err(|_| {
                    format!("--listen: `{v}` is not an address like 127.0.0.1:8080")
                })?;
            }
            "--persons" => args.persons = Some(value("--persons")?),
            "--no-sample-persons" => args.samples = false,
            "--token-lifetime" => {
                let v = value("--token-lifetime")?;
                args.token_lifetime =
                    Some(v.parse().map_err(|_| {
                        format!("--token-lifetime: `{v}` is not a number of seconds")
                    })?);
            }
            "--v2-secret" => args.v2_secret = Some(value("--v2-secret")?),
            "--v2-store-id" => args.v2_store_id = Some(value("--v2-store-id")?),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) if message == "help" => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!(
                "iamport-mock: {message}\n{USAGE}\n(--help lists the flags, credentials and sample people)"
            );
            return ExitCode::from(2);
        }
    };
    let mut builder = Emulator::builder().listen(args.listen);
    if !args.samples {
        builder = builder.without_sample_persons();
    }
    if let Some(secs) = args.token_lifetime {
        builder = builder.token_lifetime(
            Duration::from_secs(secs),
            Duration::from_secs(60),
            Duration::from_secs(300),
        );
    }
    if let Some(secret) = &args.v2_secret {
        builder = builder.v2_secret(secret.clone());
    }
    if let Some(store) = &args.v2_store_id {
        builder = builder.v2_store_id(store.clone());
    }
    if let Some(path) = &args.persons {
        builder = match builder.persons_file(path) {
            Ok(builder) => builder,
            Err(error) => {
                eprintln!("iamport-mock: {error}");
                return ExitCode::FAILURE;
            }
        };
    }
    let emulator = match builder.start().await {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("iamport-mock: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("{}", emulator.banner());
    println!("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
