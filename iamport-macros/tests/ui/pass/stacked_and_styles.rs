//! `#[require_certified]` with axum's `#[debug_handler]`, on methods, on generic handlers, and
//! with the expansion style said explicitly.

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use iamport_tower::body::Body;
use iamport_tower::{require_certified, Certified};

#[derive(Clone)]
struct AppState;

/// Outside `#[debug_handler]`: the debug check sees the hidden guard argument too.
#[require_certified(min_age = 19)]
#[axum::debug_handler]
async fn checked(cert: Certified, State(_): State<AppState>) -> String {
    cert.id.clone()
}

/// An axum handler that takes the whole `axum::extract::Request` and returns
/// `impl IntoResponse`: the type-name guess would say "request style"; `style = axum` says
/// what it is.
#[require_certified(min_age = 19, style = axum)]
async fn whole_request(req: Request) -> impl IntoResponse {
    req.uri().to_string()
}

/// A request type under another name: `style = request` says what it is.
type Incoming = axum::http::Request<Body>;

#[require_certified(min_age = 19, style = request)]
async fn renamed(req: Incoming) -> axum::http::Response<Body> {
    let _ = req;
    axum::http::Response::new(Body::empty())
}

struct Handlers;

impl Handlers {
    /// On an associated function (axum style; the hidden guard goes first, or after `self`).
    #[require_certified(unique = true, bound = true)]
    async fn signup(cert: Certified) -> String {
        cert.id.clone()
    }

    /// A keyspace name of any length, on an associated function.
    #[require_certified(unique = "a-scope-name-much-longer-than-sixteen-bytes")]
    async fn long_scope(cert: Certified) -> String {
        cert.id.clone()
    }

    /// On a method, request style (`Incoming` does not look like a request by name).
    #[require_certified(min_age = 19, style = request)]
    async fn handle(&self, req: Incoming) -> axum::http::Response<Body> {
        let _ = req;
        axum::http::Response::new(Body::empty())
    }
}

/// A named `unique` keyspace.
#[require_certified(unique = "newsletter", max_birth_year = 2007)]
async fn scoped(cert: Certified) -> String {
    cert.id.clone()
}

/// Generic over the state, with a where clause.
#[require_certified(max_birth_year = 1999)]
async fn generic<S>(State(_): State<S>) -> &'static str
where
    S: Clone + Send + Sync + 'static,
{
    "generic"
}

/// The guard the macro adds, written by hand.
async fn by_hand(
    _: iamport_tower::Guard<(
        iamport_tower::policy::MinAge<19>,
        iamport_tower::policy::UniqueIn<iamport_tower::policy::Scope<'h', 'a', 'n', 'd'>>,
    )>,
) -> &'static str {
    "by hand"
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let _: Router = Router::new()
        .route("/checked", get(checked))
        .route("/whole", get(whole_request))
        .route("/signup", get(Handlers::signup))
        .route("/generic", get(generic::<AppState>))
        .route("/scoped", get(scoped))
        .route("/long", get(Handlers::long_scope))
        .route("/by-hand", get(by_hand))
        .with_state(AppState);
    assert_send(renamed(Incoming::new(Body::empty())));
    assert_send(Handlers.handle(Incoming::new(Body::empty())));
}
