//! The signup demo: PortOne's identity-verification guide ("4. Get verification info"),
//! done with iamport-tower.
//!
//! ```text
//! cargo run -p axum-signup            # http://127.0.0.1:3000 (PORT overrides)
//! ```
//!
//! | variable | effect |
//! |---|---|
//! | `IMP_KEY`, `IMP_SECRET` | talk to that PortOne (else: the built-in emulator) |
//! | `PORTONE_API=v2` | use PortOne's v2 API (`identityVerificationId`) instead of v1 (`imp_uid`) |
//! | `PORTONE_API_SECRET`, `PORTONE_STORE_ID`, `PORTONE_CHANNEL_KEY` | real PortOne v2 (implies `PORTONE_API=v2`) |
//! | `IMP_CODE` | merchant code for the browser SDK (`IMP.init`), with real credentials |
//! | `IAMPORT_API_URL` | PortOne's API base URL (e.g. an emulator elsewhere) |
//! | `DATABASE_URL` | keep the accounts in PostgreSQL, each written with its person's key in one transaction (and the reservations there too) |
//! | `REDIS_URL` | keep "one account per person" in Redis (accounts in memory) |
//! | `UNIQUE_KEY_SECRET` | the secret keying CI hashes, at least 32 bytes (`openssl rand -hex 32`, kept in your secret manager: the same value on every start); on the emulator (development mode) a development default when unset, with a warning |
//! | `SIGNUP_BINDING=off` | PortOne's guide's unbound flow: any id is accepted from anyone (for API clients that post a raw `imp_uid`); default: on, each verification bound to the browser session that started it |
//! | `BINDING_SECRET` | the secret keying binding tickets; the same rules as `UNIQUE_KEY_SECRET` |
//! | `SIGNUP_TICKET_LIFETIME_SECS` | how long a binding ticket stays valid (default 1800) |
//! | `PORT` | listen port (default 3000; 0 picks a free one) |
//! | `PUBLIC_URL` | where browsers reach the demo, e.g. `https://signup.example.com` behind a TLS proxy (default: the loopback address it listens on). Its cookies (the binding session, the result page's) are `__Host-` + `Secure` unless this is plain `http://` on loopback (`localhost`, `127.0.0.1`, `[::1]`) — so no sibling subdomain or plain-http response can plant one |
//! | `RUST_LOG` | log filter (default `info`: startup, token fetches, every refusal with its kind and route) |
//!
//! `GET /metrics` serves the library's `iamport_*` metrics in Prometheus' text format.

mod app;
mod pages;
mod prometheus;

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use iamport_mock::Emulator;
use iamport_tower::binding::Binding;
use iamport_tower::unique::{MemoryStore, PostgresStore, RedisStore, StoreKeys, UniqueAdmin};
use iamport_tower::{
    CertificationLayer, CertificationSource, Error, IamportClient, PortOneClient, Secret,
};

use crate::app::{Accounts, App, Sdk};

/// Used when `UNIQUE_KEY_SECRET` is unset. Never in production: anyone who knows it can test
/// whether a given CI has an account.
const DEVELOPMENT_SECRET: &str = "axum-signup-development-secret-do-not-use-in-production";

/// Used when `BINDING_SECRET` is unset; the same warning applies.
const DEVELOPMENT_BINDING_SECRET: &str = "axum-signup-development-binding-secret-not-for-prod";

/// How long a shutdown waits for the unique store's commits and releases still running.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The sample person the demo registers at startup, so "already registered" can be tried.
const ALREADY_REGISTERED: &str = "imp_100000000007";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("axum-signup: {message}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colours for a person at a terminal; plain lines for a file or a log collector.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let metrics = match prometheus::install() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "GET /metrics is off");
            None
        }
    };

    let port: u16 = match env("PORT").map(|p| p.parse()) {
        None => 3000,
        Some(Ok(port)) => port,
        Some(Err(_)) => return fail("PORT must be a port number"),
    };

    // Its cookies are `__Host-` + `Secure` unless browsers reach it over plain http on loopback
    // (where a `Secure` cookie would not come back). It listens on loopback only; PUBLIC_URL
    // says where a proxy in front of it serves it.
    let secure_cookies = match env("PUBLIC_URL").map(|url| plain_http_on_loopback(&url)) {
        None => false,
        Some(Ok(plain)) => !plain,
        Some(Err(error)) => return fail(error),
    };
    if secure_cookies {
        println!("Cookies: __Host- and Secure (PUBLIC_URL is not plain http on loopback)");
        if env("PUBLIC_URL").is_some_and(|url| url.to_ascii_lowercase().starts_with("http:")) {
            tracing::warn!(
                "PUBLIC_URL is plain http on a non-loopback host: browsers keep no Secure \
                 cookie from it, so signups will be refused as unbound; serve it over https"
            );
        }
    }

    // PortOne: v1 or v2, real credentials or the emulator.
    let v2 = env("PORTONE_API").is_some_and(|v| v.eq_ignore_ascii_case("v2"))
        || env("PORTONE_API_SECRET").is_some();
    let real = if v2 {
        env("PORTONE_API_SECRET").is_some()
    } else {
        env("IMP_KEY").is_some() || env("IMP_SECRET").is_some()
    };
    let emulator = if real {
        None
    } else {
        match Emulator::start().await {
            Ok(emulator) => {
                println!(
                    "No PortOne credentials set: using the built-in PortOne emulator ({}) at {}",
                    if v2 { "API v2" } else { "API v1" },
                    emulator.url()
                );
                Some(emulator)
            }
            Err(error) => return fail(format!("cannot start the PortOne emulator: {error}")),
        }
    };
    let (source, sdk): (Arc<dyn CertificationSource>, Sdk) = match (&emulator, v2) {
        (Some(emulator), false) => (
            Arc::new(emulator.client()),
            Sdk::Emulator {
                script_url: emulator.sdk_url(),
            },
        ),
        (Some(emulator), true) => (
            Arc::new(emulator.v2_client()),
            Sdk::EmulatorV2 {
                script_url: emulator.sdk_v2_url(),
            },
        ),
        (None, false) => {
            let client = match IamportClient::from_env() {
                Ok(client) => client,
                Err(error) => return fail(error),
            };
            let code = env("IMP_CODE").unwrap_or_else(|| {
                tracing::warn!("IMP_CODE (your merchant code, 가맹점 식별코드) is not set; the browser SDK needs it");
                String::new()
            });
            println!("Using PortOne (v1) at {}", client.base_url());
            (
                Arc::new(client),
                Sdk::PortOne {
                    merchant_code: code,
                },
            )
        }
        (None, true) => {
            let client = match PortOneClient::from_env() {
                Ok(client) => client,
                Err(error) => return fail(error),
            };
            println!("Using PortOne (v2) at {}", client.base_url());
            let store_id = env("PORTONE_STORE_ID").unwrap_or_default();
            let channel_key = env("PORTONE_CHANNEL_KEY").unwrap_or_else(|| {
                tracing::warn!("PORTONE_CHANNEL_KEY is not set; the browser SDK needs it");
                String::new()
            });
            (
                Arc::new(client),
                Sdk::PortOneV2 {
                    store_id,
                    channel_key,
                },
            )
        }
    };

    // One account per person: with DATABASE_URL the accounts live in PostgreSQL, each one
    // written with its person's key in one transaction, on one pool shared with the store.
    let (store, accounts): (Arc<dyn UniqueAdmin>, Accounts) = if let Some(url) = env("DATABASE_URL")
    {
        let pool = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(&url)
            .await
        {
            Ok(pool) => pool,
            Err(error) => {
                return fail(format!(
                    "cannot connect to PostgreSQL at {}: {error}",
                    postgres_address(&url)
                ));
            }
        };
        let store = PostgresStore::new(pool.clone());
        let migrated = match store.migrate().await {
            Ok(()) => sqlx::raw_sql(app::ACCOUNTS_TABLE)
                .execute(&pool)
                .await
                .map(|_| ()),
            Err(error) => return fail(error),
        };
        if let Err(error) = migrated {
            return fail(format!("cannot create the demo's accounts table: {error}"));
        }
        println!(
            "Accounts and unique store: PostgreSQL at {} (tables demo_accounts, iamport_accounts, \
             iamport_unique_keys)",
            postgres_address(&url)
        );
        (Arc::new(store), Accounts::Postgres(pool))
    } else if let Some(url) = env("REDIS_URL") {
        match RedisStore::new(&url) {
            Ok(store) => {
                println!("Unique store: Redis (accounts in memory)");
                (Arc::new(store), Accounts::Memory(Arc::default()))
            }
            Err(error) => return fail(error),
        }
    } else {
        println!(
            "Accounts and unique store: in memory (set DATABASE_URL to keep them in PostgreSQL)"
        );
        (
            Arc::new(MemoryStore::new()),
            Accounts::Memory(Arc::default()),
        )
    };
    // Development mode: on the built-in emulator, where no real person signs up.
    let development = emulator.is_some();
    let keys = match unique_keys(development) {
        Ok(keys) => keys,
        Err(error) => return fail(error),
    };

    // The access token, once, before the first request (v1; v2 needs none): the first
    // signup costs one round trip to PortOne, not two. Wrong credentials stop the demo here.
    match source.warm_up().await {
        Ok(()) => {}
        Err(error @ (Error::BadCredentials | Error::Config(_))) => return fail(error),
        Err(error) => {
            tracing::warn!(
                ?error,
                "PortOne is not answering yet; the first request will try again"
            );
        }
    }
    if emulator.is_some() {
        preregister(&*source, &*store, &keys).await;
    }

    // Replay-proof verifications: each one bound to the browser session that started it.
    let binding = match env("SIGNUP_BINDING").as_deref() {
        Some("off") => {
            println!("Binding: off (SIGNUP_BINDING=off) — any verification id is accepted");
            None
        }
        None | Some("on") => {
            let secret = match key_secret("BINDING_SECRET", DEVELOPMENT_BINDING_SECRET, development)
            {
                Ok(secret) => secret,
                Err(error) => return fail(error),
            };
            println!(
                "Binding: on — verifications are bound to the browser session that started them"
            );
            let lifetime = match env("SIGNUP_TICKET_LIFETIME_SECS").map(|s| s.parse::<u64>()) {
                None => iamport_tower::binding::DEFAULT_TICKET_LIFETIME,
                Some(Ok(secs)) => std::time::Duration::from_secs(secs),
                Some(Err(_)) => {
                    return fail("SIGNUP_TICKET_LIFETIME_SECS must be a number of seconds");
                }
            };
            Some(
                Binding::new(secret)
                    .secure_cookie(secure_cookies)
                    .lifetime(lifetime),
            )
        }
        Some(other) => {
            return fail(format!(
                "SIGNUP_BINDING must be `on` or `off`, not {other:?}"
            ));
        }
    };

    let mut layer = CertificationLayer::from_shared_source(source).unique_store(store, keys);
    if let Some(binding) = &binding {
        layer = layer.binding(binding.clone());
    }
    // Releases of failed signups' reservations may still run at shutdown: let them land.
    let unique_tasks = layer.unique_tasks();
    let app = App::new(sdk, binding, accounts, metrics).secure_cookies(secure_cookies);
    let router = app::router(app, layer);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            return fail(format!(
                "cannot listen on {addr}: {error} (set PORT to another port)"
            ));
        }
    };
    let url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(error) => return fail(error),
    };
    println!("axum-signup listening on {url}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        return fail(error);
    }
    // Bounded: nothing a 2xx promised depends on these tasks.
    if tokio::time::timeout(SETTLE_TIMEOUT, unique_tasks.settled())
        .await
        .is_err()
    {
        tracing::warn!(
            running = unique_tasks.running(),
            "stopping with unique-store releases still running; their reservations end \
             with their lease"
        );
    }
    ExitCode::SUCCESS
}

/// Whether `url` (PUBLIC_URL) is plain `http://` on a loopback host: the one case the demo's
/// cookies are neither `__Host-` nor `Secure`.
fn plain_http_on_loopback(url: &str) -> Result<bool, String> {
    let invalid = || format!("PUBLIC_URL must be an http:// or https:// URL, not {url:?}");
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(loopback),
        "https" => Ok(false),
        _ => Err(invalid()),
    }
}

/// A key secret from `name`: at least 32 bytes. In development mode (the emulator) a
/// missing one falls back to `development_default` and a short one is accepted, each with a
/// warning; otherwise either stops the demo with a message saying how to make one.
fn key_secret(name: &str, development_default: &str, development: bool) -> Result<Secret, Error> {
    match Secret::key_from_env(name) {
        Ok(secret) => Ok(secret),
        Err(error) if !development => Err(error),
        Err(error) => match Secret::from_env(name) {
            // Set, but shorter than 32 bytes.
            Ok(short) => {
                tracing::warn!(
                    "{error}. Accepted in development mode (the built-in emulator) only"
                );
                Ok(short)
            }
            Err(_) => {
                tracing::warn!(
                    "{name} is not set: using a DEVELOPMENT secret (development mode, the built-in \
                     emulator). Make one with `openssl rand -hex 32` before real people sign up"
                );
                Ok(Secret::new(development_default))
            }
        },
    }
}

/// The unique store's keys from `UNIQUE_KEY_SECRET` ([`StoreKeys::from_env`], the function
/// `iamport-unique` reads it with too). In development mode (the emulator) a missing one
/// falls back to a development secret, with a warning; otherwise it stops the demo with a
/// message saying how to make one and where to keep it.
fn unique_keys(development: bool) -> Result<StoreKeys, Error> {
    match StoreKeys::from_env() {
        Ok(keys) => Ok(keys),
        Err(error) if !development || std::env::var_os("UNIQUE_KEY_SECRET").is_some() => Err(error),
        Err(_) => {
            tracing::warn!(
                "UNIQUE_KEY_SECRET is not set: using a DEVELOPMENT secret (development mode, the \
                 built-in emulator). Before real people sign up, make one with `openssl rand -hex \
                 32`, keep it in your secret manager, and give the same value to every start"
            );
            StoreKeys::new(&Secret::new(DEVELOPMENT_SECRET))
        }
    }
}

/// `host:port/database` of a PostgreSQL URL, for messages (never its credentials).
fn postgres_address(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(options) => format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        ),
        Err(_) => "an unreadable DATABASE_URL".to_owned(),
    }
}

/// Registers the emulator's "already registered" sample person, as if they had signed up
/// before: register their key, as `iamport-unique import` does for existing accounts. Looks
/// the person up through the layer's own source, so it shares the layer's token.
async fn preregister(source: &dyn CertificationSource, store: &dyn UniqueAdmin, keys: &StoreKeys) {
    let Ok(cert) = source.lookup(ALREADY_REGISTERED).await else {
        return;
    };
    let Some(ci) = cert.ci.as_deref() else {
        return;
    };
    if let Err(error) = store.register(&[keys.key_for(ci)]).await {
        tracing::warn!(error = ?error.to_string(), "could not pre-register the sample person");
    }
}

#[cfg(test)]
mod tests {
    use super::plain_http_on_loopback;

    #[test]
    fn only_plain_http_on_loopback_has_plain_cookies() {
        for plain in [
            "http://127.0.0.1:3000",
            "http://localhost:3000/",
            "http://[::1]:3000",
            "HTTP://127.0.0.2",
        ] {
            assert_eq!(plain_http_on_loopback(plain), Ok(true), "{plain}");
        }
        for secure in [
            "https://127.0.0.1:3000",
            "https://signup.example.com",
            "http://signup.example.com",
            "http://127.0.0.1.example.com",
            "http://10.0.0.7:3000",
            "http://localhost@evil.example",
        ] {
            assert_eq!(plain_http_on_loopback(secure), Ok(false), "{secure}");
        }
        assert!(plain_http_on_loopback("signup.example.com").is_err());
        assert!(plain_http_on_loopback("ftp://127.0.0.1").is_err());
    }
}
