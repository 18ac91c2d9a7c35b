use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Router, routing::get};
use iamport_tower::binding::Binding;
use iamport_tower::unique::{MemoryStore, StoreKeys};
use iamport_tower::{CertificationLayer, Certified, IamportClient, Secret, require_certified};

/// The page: this browser's ticket (and session cookie), passed to PortOne as merchant_uid.
async fn page(State(binding): State<Binding>, headers: HeaderMap) -> Response {
    let (ticket, cookie) = binding.mint(&headers).into_parts();
    let code = std::env::var("IMP_CODE").unwrap_or_default(); // your merchant code
    let html = format!(
        r#"<script src="https://cdn.iamport.kr/v1/iamport.js"></script>
<button onclick='IMP.init("{code}"); IMP.certification({{merchant_uid: "{ticket}",
  m_redirect_url: location.origin + "/certified"}})'>Verify and sign up</button>"#
    );
    let mut response = Html(html).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// PortOne sends the browser back to /certified?imp_uid=…&merchant_uid=…&success=…
#[require_certified(min_age = 19, unique = true, bound = true)]
async fn certified(_person: Certified) -> StatusCode {
    // Create the account here from the verified person (name, birth date, …).
    tracing::info!("account created"); // never the person's data in a log
    StatusCode::CREATED // a 2xx: the layer commits the person's reservation
}

/// Outside the layer, after it settled `unique` by the handler's status: a 303 to a page the
/// browser can reload without signing up again.
async fn see_other(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let to = if response.status().is_success() {
        "/welcome"
    } else {
        "/sorry"
    };
    Redirect::to(to).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    tracing::info!("logging at INFO and above");
    let client = IamportClient::from_env()?; // IMP_KEY, IMP_SECRET
    let binding = Binding::new(Secret::key_from_env("BINDING_SECRET")?); // 32+ bytes
    let keys = StoreKeys::from_env()?; // UNIQUE_KEY_SECRET: 32+ bytes
    let layer = CertificationLayer::new(client)
        .unique_store(MemoryStore::new(), keys)
        .binding(binding.clone());
    let redirect = Router::new()
        .route("/certified", get(certified))
        .layer(layer)
        .layer(from_fn(see_other));
    let app = Router::new()
        .route("/", get(page))
        .route(
            "/welcome",
            get(|| async { "Welcome! Reloading signs up nobody." }),
        )
        .route("/sorry", get(|| async { "Not signed up." }))
        .with_state(binding)
        .merge(redirect);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("listening on http://localhost:3000");
    axum::serve(listener, app).await?;
    Ok(())
}
