use iamport_tower::require_certified;

#[require_certified(min_age = 19)]
async fn handler(req: axum::extract::Request) -> String {
    req.uri().to_string()
}

fn main() {}
