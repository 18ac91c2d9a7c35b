use iamport_tower::body::Body;
use iamport_tower::require_certified;

#[require_certified(min_age = 19)]
async fn handler(_: axum::http::Request<Body>) -> axum::http::Response<Body> {
    axum::http::Response::new(Body::empty())
}

fn main() {}
