//! One replica of the guarded signup app, a process of its own (`iamport-soak replica …`) so
//! the soak can kill it with SIGKILL and start it again.
//!
//! Routes: `GET /ticket` (a binding ticket and session cookie), and per API version
//! (`/v1`, `/v2`) the popup flow `POST …/signup` and the redirect flow
//! `GET …/signup/redirect`, guarded by PortOne's guide's adult check plus no foreign nationals,
//! one account per person and binding.
//!
//! It does only what the crate's docs tell an app to do, nothing more. Its accounts live in
//! PostgreSQL (this replica's own accounts table), on one `sqlx::PgPool`. With `--store
//! postgres` the unique store is `PostgresStore::new(pool.clone())` on that same pool, and
//! each account is created in one transaction with `Certified::record_account` — the
//! person's key in the store's accounts' keys table, shared by both replicas — so a SIGKILL at
//! any instant leaves both or neither. With a Redis store the layer commits the reservation
//! before the 201 leaves. There is no startup step: a restarted replica serves at once.
//!
//! Secrets come in the environment, never in argv: `UNIQUE_KEY_SECRET` (read by
//! `StoreKeys::from_env`, as an app reads it) and the binding secret. Standard input is the
//! lifeline: when it closes (the soak ended or died), the replica exits.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use iamport_tower::binding::{Binding, DEFAULT_INSECURE_COOKIE_NAME};
use iamport_tower::unique::{
    PostgresStore, RecordError, RedisClusterStore, RedisStore, StoreKeys, UniqueStore,
};
use iamport_tower::{
    CertificationLayer, Certified, IamportClient, PortOneClient, require_certified,
};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::io::AsyncReadExt as _;

use crate::bounds;
use crate::store::StoreKind;

/// What the soak tells a replica.
#[derive(Debug)]
struct Args {
    name: String,
    port: u16,
    emulator: String,
    /// The app's database (through the freezable proxy when it is also the unique store).
    database_url: String,
    accounts_table: String,
    store: StoreKind,
    /// The Redis store's URL(s) (through the freezable proxy for one Redis).
    store_urls: Vec<String>,
    /// The PostgreSQL store's reservations table or the Redis key prefix.
    store_name: String,
    /// The PostgreSQL store's accounts' keys table (shared by the replicas).
    keys_table: Option<String>,
}

fn parse(args: Vec<OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let (mut name, mut port, mut emulator, mut database_url) = (None, None, None, None);
    let (mut accounts_table, mut store, mut store_urls, mut store_name) =
        (None, None, Vec::new(), None);
    let mut keys_table = None;
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
            Long("keys-table") => keys_table = Some(parser.value()?.string()?),
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
        keys_table,
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

/// The app's one pool. PostgreSQL's own `statement_timeout` aborts a statement server-side
/// before the handler gives up on it (the crate's docs advise it), so a stalled write does
/// not hold the person's key locked long after its request was answered.
fn app_pool(url: &str) -> Result<PgPool, BoxError> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([(
        "statement_timeout",
        bounds::ACCOUNT_STATEMENT_TIMEOUT.as_millis(),
    )]);
    Ok(PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(bounds::ACCOUNT_POOL_TIMEOUT)
        .connect_lazy_with(options))
}

/// The unique store the replicas share. A `PostgresStore` stays concrete: the layer
/// recognises it (or an `Arc` of it) to let handlers record accounts in their transaction.
#[derive(Clone)]
enum Store {
    Postgres(PostgresStore),
    Redis(Arc<dyn UniqueStore>),
}

impl Store {
    fn new(args: &Args, pool: &PgPool) -> Result<Self, BoxError> {
        Ok(match args.store {
            StoreKind::Postgres => {
                let keys = args
                    .keys_table
                    .as_deref()
                    .ok_or("--keys-table is required")?;
                Self::Postgres(
                    PostgresStore::new(pool.clone())
                        .table(&args.store_name)?
                        .accounts_table(keys)?
                        .create_tables(false)
                        .timeout(bounds::STORE_TIMEOUT),
                )
            }
            StoreKind::Redis => {
                let url = args.store_urls.first().ok_or("--store-url is required")?;
                Self::Redis(Arc::new(
                    RedisStore::new(url)?
                        .prefix(args.store_name.clone())
                        .timeout(bounds::STORE_TIMEOUT),
                ))
            }
            StoreKind::RedisCluster => Self::Redis(Arc::new(
                RedisClusterStore::with_timeout(
                    args.store_urls.iter().map(String::as_str),
                    bounds::STORE_TIMEOUT,
                )?
                .prefix(args.store_name.clone()),
            )),
        })
    }

    fn guard(&self, layer: CertificationLayer, keys: StoreKeys) -> CertificationLayer {
        match self {
            Self::Postgres(store) => layer.unique_store(store.clone(), keys),
            Self::Redis(store) => layer.unique_store(store.clone(), keys),
        }
    }
}

/// The replica's state: its pool and its accounts table.
#[derive(Clone)]
struct App {
    pool: PgPool,
    insert: Arc<str>,
    exists: Arc<str>,
    /// The person's key goes in the account's transaction (`--store postgres`).
    records_keys: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

async fn serve(args: Args) -> Result<(), BoxError> {
    let keys = StoreKeys::from_env()?;
    let binding_secret = std::env::var("SOAK_BINDING_SECRET")
        .ok()
        .filter(|s| s.len() >= 32)
        .ok_or("SOAK_BINDING_SECRET is not set (32+ characters)")?;
    let binding = Binding::new(binding_secret).secure_cookie(false);
    let pool = app_pool(&args.database_url)?;
    let store = Store::new(&args, &pool)?;
    let app = App {
        pool,
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
        records_keys: matches!(store, Store::Postgres(_)),
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
        store
            .guard(layer.binding(binding.clone()), keys.clone())
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
    // Releases and retries still running: let them land (nothing a 201 promised needs them).
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

/// Why an account was not created.
enum Refused {
    /// The accounts' keys table already holds the person (`RecordError::AlreadyRegistered`).
    AlreadyRegistered,
    /// The write failed, or its outcome is unknown.
    Failed,
}

/// PortOne's guide's adult check, no foreign nationals, one account per person, and only
/// verifications started by this browser session.
#[require_certified(max_birth_year = 1999, foreigners = false, unique = true, bound = true)]
async fn signup(State(app): State<App>, headers: HeaderMap, person: Certified) -> Response {
    let Some(key) = person.store_key().map(|k| k.to_hex()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no store key").into_response();
    };
    let id = person.certification().id.clone();
    let api = if id.starts_with("imp_") { "v1" } else { "v2" };
    // The account, and with a PostgreSQL store the person's key, in one transaction.
    let create = async {
        let failed = |_| Refused::Failed;
        let mut tx = app.pool.begin().await.map_err(failed)?;
        sqlx::query(AssertSqlSafe(app.insert.clone()))
            .bind(&key)
            .bind(&id)
            .bind(api)
            .bind(session(&headers))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        if app.records_keys {
            person
                .record_account(&mut tx)
                .await
                .map_err(|error| match error {
                    RecordError::AlreadyRegistered => Refused::AlreadyRegistered,
                    _ => Refused::Failed,
                })?;
        }
        tx.commit().await.map_err(failed)
    };
    let created = || {
        (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "created": true })),
        )
            .into_response()
    };
    let unavailable = || (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    match tokio::time::timeout(bounds::ACCOUNT_WRITE_TIMEOUT, create).await {
        Ok(Ok(())) => created(),
        Ok(Err(Refused::AlreadyRegistered)) => {
            // The key landed with an earlier account whose request was answered as failed
            // (its write's outcome was unknown), and that request's reservation was released.
            tracing::warn!("the accounts' keys table refused a second account");
            (StatusCode::CONFLICT, "already registered (accounts' keys)").into_response()
        }
        // The key was in the transaction: if it landed after all, admission refuses the
        // person next time. Nothing to check.
        Ok(Err(Refused::Failed)) | Err(_) if app.records_keys => {
            tracing::warn!("account write failed or timed out");
            unavailable()
        }
        Ok(Err(Refused::Failed)) | Err(_) => {
            // Without the key in the account's transaction, an account that landed after
            // all must be answered as the account it is: a 503 releases the reservation,
            // and the person would sign up again.
            let check = sqlx::query(AssertSqlSafe(app.exists.clone()))
                .bind(&key)
                .bind(&id)
                .fetch_optional(&app.pool);
            match tokio::time::timeout(bounds::ACCOUNT_CHECK_TIMEOUT, check).await {
                Ok(Ok(Some(_))) => {
                    tracing::warn!("an account write reported failure but landed");
                    created()
                }
                Ok(Ok(None)) => {
                    tracing::warn!("account write failed");
                    unavailable()
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::error!("account write outcome unknown");
                    unavailable()
                }
            }
        }
    }
}
