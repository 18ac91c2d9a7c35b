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
//! | `DATABASE_URL` / `REDIS_URL` | keep "one account per person" in PostgreSQL / Redis (else: memory) |
//! | `UNIQUE_KEY_SECRET` | the secret keying CI hashes (a development default, with a warning) |
//! | `SIGNUP_BINDING=off` | PortOne's guide's unbound flow: any id is accepted from anyone (for API clients that post a raw `imp_uid`); default: on, each verification bound to the browser session that started it |
//! | `BINDING_SECRET` | the secret keying binding tickets (a development default, with a warning) |
//! | `SIGNUP_TICKET_LIFETIME_SECS` | how long a binding ticket stays valid (default 1800) |
//! | `PORT` | listen port (default 3000; 0 picks a free one) |

mod app;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use iamport_mock::Emulator;
use iamport_tower::binding::Binding;
use iamport_tower::unique::{MemoryStore, PostgresStore, RedisStore, UniqueKeys, UniqueStore};
use iamport_tower::{
    CertificationLayer, CertificationSource, IamportClient, PortOneClient, Secret,
};

use crate::app::{App, Sdk};

/// Used when `UNIQUE_KEY_SECRET` is unset. Never in production: anyone who knows it can test
/// whether a given CI has an account.
const DEVELOPMENT_SECRET: &str = "axum-signup-development-secret-do-not-use-in-production";

/// Used when `BINDING_SECRET` is unset; the same warning applies.
const DEVELOPMENT_BINDING_SECRET: &str = "axum-signup-development-binding-secret-not-for-prod";

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
        .init();

    let port: u16 = match env("PORT").map(|p| p.parse()) {
        None => 3000,
        Some(Ok(port)) => port,
        Some(Err(_)) => return fail("PORT must be a port number"),
    };

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

    // One account per person.
    let store: Arc<dyn UniqueStore> = if let Some(url) = env("DATABASE_URL") {
        match PostgresStore::new(&url) {
            Ok(store) => {
                println!("Unique store: PostgreSQL (table iamport_unique_keys)");
                Arc::new(store)
            }
            Err(error) => return fail(error),
        }
    } else if let Some(url) = env("REDIS_URL") {
        match RedisStore::new(&url) {
            Ok(store) => {
                println!("Unique store: Redis");
                Arc::new(store)
            }
            Err(error) => return fail(error),
        }
    } else {
        println!("Unique store: in memory (set DATABASE_URL or REDIS_URL to share it)");
        Arc::new(MemoryStore::new())
    };
    let secret = env("UNIQUE_KEY_SECRET")
        .map(Secret::new)
        .unwrap_or_else(|| {
            tracing::warn!(
                "UNIQUE_KEY_SECRET is not set: using a DEVELOPMENT secret to hash CIs. \
             Set a long random UNIQUE_KEY_SECRET before real people sign up."
            );
            Secret::new(DEVELOPMENT_SECRET)
        });

    if let Some(emulator) = &emulator {
        preregister(&emulator.client(), &*store, &UniqueKeys::new(&secret)).await;
    }

    // Replay-proof verifications: each one bound to the browser session that started it.
    let binding = match env("SIGNUP_BINDING").as_deref() {
        Some("off") => {
            println!("Binding: off (SIGNUP_BINDING=off) — any verification id is accepted");
            None
        }
        None | Some("on") => {
            let secret = env("BINDING_SECRET").map(Secret::new).unwrap_or_else(|| {
                tracing::warn!(
                    "BINDING_SECRET is not set: using a DEVELOPMENT secret for binding tickets. \
                     Set a long random BINDING_SECRET in production."
                );
                Secret::new(DEVELOPMENT_BINDING_SECRET)
            });
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
            // The demo serves plain http on loopback: a `Secure` cookie would not come back.
            Some(Binding::new(secret).secure_cookie(false).lifetime(lifetime))
        }
        Some(other) => {
            return fail(format!(
                "SIGNUP_BINDING must be `on` or `off`, not {other:?}"
            ));
        }
    };

    let mut layer = CertificationLayer::from_shared_source(source).unique_store(store, secret);
    if let Some(binding) = &binding {
        layer = layer.binding(binding.clone());
    }
    let router = app::router(App::new(sdk, binding)).layer(layer);

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
    ExitCode::SUCCESS
}

/// Registers the emulator's "already registered" sample person, as if they had signed up
/// before: register their key, as `iamport-unique import` does for existing accounts.
async fn preregister(client: &IamportClient, store: &dyn UniqueStore, keys: &UniqueKeys) {
    let Ok(id) = ALREADY_REGISTERED.parse() else {
        return;
    };
    let Ok(cert) = client.certification(&id).await else {
        return;
    };
    let Some(ci) = cert.unique_key.as_deref() else {
        return;
    };
    if let Err(error) = store.register(&keys.key_for(ci)).await {
        tracing::warn!(%error, "could not pre-register the sample person");
    }
}
