use iamport_tower::require_certified;

#[require_certified(min_age = 19, style = tower)]
async fn unknown_style() {}

#[require_certified(min_age = 19, style = "axum")]
async fn quoted_style() {}

#[require_certified(style = request)]
async fn request_style_without_request(name: String) -> String {
    name
}

#[require_certified(min_age = 19, style = axum, style = axum)]
async fn twice() {}

fn main() {}
