//! One replica of the guarded signup app, a process of its own (`iamport-soak replica …`) so
//! the soak can kill it with SIGKILL and start it again.
//!
//! Routes: `GET /ticket` (a binding ticket and session cookie), and per API version
//! (`/v1`, `/v2`) the popup flow `POST …/signup` and the redirect flow
//! `GET …/signup/redirect`, guarded by PortOne's guide's adult check plus no foreigners, one
//! account per person and binding. Every admitted signup writes a row to this replica's own
//! accounts table with the person's store key under `UNIQUE` (what [`Certified::unique_key`]
//! is for). On start, before serving, the replica registers every key in its table with the
//! store: an account written just before a SIGKILL, whose reservation never got its commit
//! (the layer answers a 201 while its commit still runs), is committed now rather than left to
//! a lease that would let the person in again. A graceful stop (the lifeline closing) waits,
//! bounded, for the commits still running.
//!
//! Secrets (the unique-key and binding secrets) come in the environment, never in argv.
//! Standard input is the lifeline: when it closes (the soak ended or died), the replica exits.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use iamport_tower::binding::{Binding, DEFAULT_INSECURE_COOKIE_NAME};
use iamport_tower::unique::{PostgresStore, RedisClusterStore, RedisStore, UniqueKey, UniqueStore};
use iamport_tower::{
    CertificationLayer, Certified, IamportClient, PortOneClient, require_certified,
};
use tokio::io::AsyncReadExt as _;

use crate::bounds;
use crate::store::StoreKind;

/// What the soak tells a replica.
#[derive(Debug)]
struct Args {
    name: String,
    port: u16,
    emulator: String,
    database_url: String,
    accounts_table: String,
    store: StoreKind,
    /// The store's URL(s): through the freezable proxy for PostgreSQL and Redis.
    store_urls: Vec<String>,
    /// The PostgreSQL store's table or the Redis key prefix.
    store_name: String,
}

fn parse(args: Vec<OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let (mut name, mut port, mut emulator, mut database_url) = (None, None, None, None);
    let (mut accounts_table, mut store, mut store_urls, mut store_name) =
        (None, None, Vec::new(), None);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("name") => name = Some(parser.value()?.string()?),
            Long("port") => port = Some(parser.value()?.parse()?),
            Long("emulator") => emulator = Some(parser.value()?.string()?),
            Long("database-url") => database_url = Some(parser.value()?.string()?),
            Long("accounts-table") => accounts_table = Some(parser.value()?.string()?),
            Long("store") => store = Some(parser.value()?.parse()?),
            Long("store-url") => store_urls.push(parser.value()?.string()?),
            Long("store-name") => store_name = Some(parser.value()?.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let missing = |what: &str| lexopt::Error::from(format!("replica: --{what} is required"));
    Ok(Args {
        name: name.ok_or_else(|| missing("name"))?,
        port: port.ok_or_else(|| missing("port"))?,
        emulator: emulator.ok_or_else(|| missing("emulator"))?,
        database_url: database_url.ok_or_else(|| missing("database-url"))?,
        accounts_table: accounts_table.ok_or_else(|| missing("accounts-table"))?,
        store: store.ok_or_else(|| missing("store"))?,
        store_urls,
        store_name: store_name.ok_or_else(|| missing("store-name"))?,
    })
}

/// `iamport-soak replica …`: serves until standard input closes.
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let args = match parse(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match crate::runtime("replica") {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("replica: {error}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn secret(name: &str) -> Result<String, BoxError> {
    std::env::var(name)
        .ok()
        .filter(|s| s.len() >= 32)
        .ok_or_else(|| format!("{name} is not set (32+ characters)").into())
}

fn shared_store(args: &Args) -> Result<Arc<dyn UniqueStore>, BoxError> {
    Ok(match args.store {
        StoreKind::Postgres => {
            let url = args.store_urls.first().ok_or("--store-url is required")?;
            Arc::new(
                PostgresStore::new(url)?
                    .table(&args.store_name)?
                    .create_table(false)
                    .timeout(bounds::STORE_TIMEOUT),
            )
        }
        StoreKind::Redis => {
            let url = args.store_urls.first().ok_or("--store-url is required")?;
            Arc::new(
                RedisStore::new(url)?
                    .prefix(args.store_name.clone())
                    .timeout(bounds::STORE_TIMEOUT),
            )
        }
        StoreKind::RedisCluster => Arc::new(
            RedisClusterStore::with_timeout(
                args.store_urls.iter().map(String::as_str),
                bounds::STORE_TIMEOUT,
            )?
            .prefix(args.store_name.clone()),
        ),
    })
}

/// The replica's state: its accounts table.
#[derive(Clone)]
struct App {
    accounts: deadpool_postgres::Pool,
    insert: Arc<str>,
    exists: Arc<str>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

fn accounts_pool(url: &str) -> Result<deadpool_postgres::Pool, BoxError> {
    use std::str::FromStr as _;
    let mut config = tokio_postgres::Config::from_str(url)?;
    config.connect_timeout(bounds::ACCOUNT_POOL_TIMEOUT);
    config.options(format!(
        "-c statement_timeout={}",
        bounds::ACCOUNT_STATEMENT_TIMEOUT.as_millis()
    ));
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(8)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(bounds::ACCOUNT_POOL_TIMEOUT))
        .create_timeout(Some(bounds::ACCOUNT_POOL_TIMEOUT))
        .build()?)
}

/// Registers every key of this replica's accounts with the store, retrying within a budget
/// (the store may be stalled by the soak right now).
async fn reconcile(
    pool: &deadpool_postgres::Pool,
    table: &str,
    store: &dyn UniqueStore,
) -> Result<u64, BoxError> {
    let client = pool.get().await?;
    let rows = client
        .query(&format!("SELECT store_key FROM {table}"), &[])
        .await?;
    let keys: Vec<UniqueKey> = rows
        .iter()
        .filter_map(|row| UniqueKey::from_hex(row.get::<_, &str>(0)))
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let mut last = None;
    for _ in 0..30 {
        match tokio::time::timeout(bounds::STORE_TIMEOUT * 2, store.register_all(&keys)).await {
            Ok(Ok(n)) => return Ok(n),
            Ok(Err(error)) => last = Some(error.to_string()),
            Err(_) => last = Some("timed out".into()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(format!(
        "could not register {} keys: {}",
        keys.len(),
        last.unwrap_or_default()
    )
    .into())
}

async fn serve(args: Args) -> Result<(), BoxError> {
    let key_secret = secret("SOAK_KEY_SECRET")?;
    let binding = Binding::new(secret("SOAK_BINDING_SECRET")?).secure_cookie(false);
    let store = shared_store(&args)?;
    let accounts = accounts_pool(&args.database_url)?;
    let recovered = reconcile(&accounts, &args.accounts_table, store.as_ref()).await?;
    if recovered > 0 {
        eprintln!(
            "replica {}: {recovered} account keys had no committed reservation; registered",
            args.name
        );
    }
    let app = App {
        accounts,
        insert: format!(
            "INSERT INTO {} (store_key, verification_id, api, session) VALUES ($1, $2, $3, $4)",
            args.accounts_table
        )
        .into(),
        exists: format!(
            "SELECT 1 FROM {} WHERE store_key = $1 AND verification_id = $2",
            args.accounts_table
        )
        .into(),
    };

    let v1: IamportClient = IamportClient::builder()
        .base_url(&args.emulator)
        .key(iamport_mock::TEST_KEY)
        .secret(iamport_mock::TEST_SECRET)
        .timeout(bounds::UPSTREAM_TIMEOUT)
        .connect_timeout(bounds::UPSTREAM_CONNECT_TIMEOUT)
        .build()?;
    let v2: PortOneClient = PortOneClient::builder()
        .base_url(&args.emulator)
        .secret(iamport_mock::TEST_V2_SECRET)
        .timeout(bounds::UPSTREAM_TIMEOUT)
        .connect_timeout(bounds::UPSTREAM_CONNECT_TIMEOUT)
        .build()?;
    let guarded = || {
        Router::new()
            .route("/signup", axum::routing::post(signup))
            .route("/signup/redirect", get(signup))
    };
    let layer = |layer: CertificationLayer| {
        layer
            .binding(binding.clone())
            .unique_store(store.clone(), key_secret.clone())
            .unique_timeout(bounds::STORE_TIMEOUT)
    };
    let (v1, v2) = (
        layer(CertificationLayer::new(v1)),
        layer(CertificationLayer::new(v2)),
    );
    let unique_tasks = [v1.unique_tasks(), v2.unique_tasks()];
    let router = Router::new()
        .nest("/v1", guarded().with_state(app.clone()).layer(v1))
        .nest("/v2", guarded().with_state(app.clone()).layer(v2))
        .route("/ticket", get(ticket))
        .with_state(binding);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    // The soak waits for this line before sending load.
    println!("ready {}", args.name);
    let lifeline = async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(lifeline)
        .await?;
    // The 201s answered last may still have their commits running: let them land.
    let settled = async {
        for tasks in &unique_tasks {
            tasks.settled().await;
        }
    };
    if tokio::time::timeout(bounds::SETTLE_TIMEOUT, settled)
        .await
        .is_err()
    {
        let running: usize = unique_tasks.iter().map(|t| t.running()).sum();
        eprintln!(
            "replica {}: stopping with {running} unique-store tasks still running",
            args.name
        );
    }
    Ok(())
}

/// A binding ticket for this browser session (and its cookie when it has none).
async fn ticket(State(binding): State<Binding>, headers: HeaderMap) -> Response {
    let (ticket, cookie) = binding.mint(&headers).into_parts();
    let mut response = (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "ticket": ticket })),
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The binding session of a request (the soak checks admissions against it).
fn session(headers: &HeaderMap) -> String {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == DEFAULT_INSECURE_COOKIE_NAME)
        .map(|(_, value)| value.chars().take(64).collect())
        .unwrap_or_default()
}

/// PortOne's guide's adult check, no foreign nationals, one account per person, and only
/// verifications started by this browser session.
#[require_certified(max_birth_year = 1999, foreigners = false, unique = true, bound = true)]
async fn signup(State(app): State<App>, headers: HeaderMap, person: Certified) -> Response {
    let Some(key) = person.unique_key() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no store key").into_response();
    };
    let cert = person.certification();
    let api = if cert.id.starts_with("imp_") {
        "v1"
    } else {
        "v2"
    };
    let write = async {
        let client = app.accounts.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                &*app.insert,
                &[&key.to_hex(), &cert.id, &api, &session(&headers)],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    "duplicate".to_owned()
                } else {
                    e.to_string()
                }
            })
    };
    let created = || {
        (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "created": true })),
        )
            .into_response()
    };
    match tokio::time::timeout(bounds::ACCOUNT_WRITE_TIMEOUT, write).await {
        Ok(Ok(_)) => created(),
        Ok(Err(reason)) if reason == "duplicate" => {
            // The belt and braces caught what the store let through.
            tracing::error!("the accounts table refused a second account for one store key");
            (StatusCode::CONFLICT, "already registered (accounts table)").into_response()
        }
        Ok(Err(_)) | Err(_) => {
            // The write failed, or its outcome is unknown. Answering 503 releases the
            // person's reservation, so first make sure the row is not there: a write that
            // landed after all must be answered as the account it is (the soak found this:
            // a timed-out write that landed, released, let the person sign up again).
            let check = async {
                let client = app.accounts.get().await.ok()?;
                let rows = client
                    .query(&*app.exists, &[&key.to_hex(), &cert.id])
                    .await
                    .ok()?;
                Some(!rows.is_empty())
            };
            match tokio::time::timeout(bounds::ACCOUNT_CHECK_TIMEOUT, check).await {
                Ok(Some(true)) => {
                    tracing::warn!("an account write reported failure but landed");
                    created()
                }
                Ok(Some(false)) => {
                    tracing::warn!("account write failed");
                    (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
                }
                Ok(None) | Err(_) => {
                    tracing::error!("account write outcome unknown");
                    (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
                }
            }
        }
    }
}
