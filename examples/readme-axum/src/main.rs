use axum::{Router, extract::State, http::StatusCode, routing::post};
use iamport_tower::unique::{PostgresStore, RecordError, StoreKeys};
use iamport_tower::{CertificationLayer, Certified, IamportClient, Secret, require_certified};
use sqlx::PgPool;
use tracing_subscriber::EnvFilter;

#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(State(db): State<PgPool>, person: Certified) -> Result<StatusCode, RecordError> {
    // Only certified people born in 1999 or earlier, once per person, ever.
    let mut tx = db.begin().await.map_err(RecordError::Database)?;
    sqlx::query("INSERT INTO users (birth_year) VALUES ($1)")
        .bind(person.birth_date.map(|d| i32::from(d.year())))
        .execute(&mut *tx)
        .await
        .map_err(RecordError::Database)?;
    person.record_account(&mut tx).await?; // the person's key, in the account's transaction
    tx.commit().await.map_err(RecordError::Database)?;
    Ok(StatusCode::CREATED)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    tracing::info!("logging at INFO and above (RUST_LOG sets the filter)");

    let client = IamportClient::from_env()?; // IMP_KEY, IMP_SECRET (IAMPORT_API_URL optional)
    let keys = StoreKeys::from_env()?; // UNIQUE_KEY_SECRET: 32+ bytes, the same on every start
    tracing::info!("PortOne at {}", client.base_url());
    client.warm_up().await?; // the access token, once: wrong credentials stop here
    let db = PgPool::connect_lazy(Secret::from_env("DATABASE_URL")?.expose())?; // your pool
    let store = PostgresStore::new(db.clone());
    store.migrate().await?; // its tables; a database it cannot reach stops here, named
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS users (id BIGSERIAL PRIMARY KEY, birth_year INT)")
        .execute(&db)
        .await?;

    let app = Router::new()
        .route("/certifications", post(signup)) // popup flow: {"imp_uid": "…"} as JSON or form
        .with_state(db)
        .layer(CertificationLayer::new(client).unique_store(store, keys));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app).await?;
    Ok(())
}
