use axum::extract::{Json, Path, State};
use axum::routing::{get, post};
use axum::Router;
use iamport_tower::{require_certified, Certified};

#[derive(Clone)]
pub struct AppState;

#[derive(serde::Deserialize)]
pub struct Form {
    nickname: String,
}

/// Doc comments and other attributes stay.
#[require_certified(max_birth_year = 1999, unique = true)]
#[allow(clippy::unused_async)]
pub async fn signup(cert: Certified, State(_): State<AppState>, Json(form): Json<Form>) -> String {
    format!("{} {}", cert.id, form.nickname)
}

#[require_certified(min_age = 19, foreigners = false, fresh_within = "1h30m")]
pub(crate) async fn item(Path(id): Path<u32>) -> Result<String, String> {
    if id == 0 {
        return Err("no item zero".into());
    }
    let parsed: u32 = "7".parse().map_err(|_| "bad".to_string())?;
    Ok(format!("{}", id + parsed))
}

#[require_certified(min_birth_year = 1950, max_birth_year = 2007)]
async fn no_arguments() -> &'static str {
    "ok"
}

#[require_certified()]
async fn any_certified_person(cert: Option<Certified>) -> &'static str {
    if cert.is_some() { "yes" } else { "no" }
}

#[require_certified(min_age = 19)]
async fn generic<T: Send + Sync + Clone + 'static>(State(_): State<T>) -> &'static str {
    "generic"
}

fn main() {
    let _: Router = Router::new()
        .route("/signup", post(signup))
        .route("/items/{id}", get(item))
        .route("/none", get(no_arguments))
        .route("/any", get(any_certified_person))
        .route("/generic", get(generic::<AppState>))
        .with_state(AppState);
}
