//! `#[axum::debug_handler]` must go *below* `#[require_certified]`: above it, it checks the
//! signature before the guard argument is added.
use iamport_tower::{require_certified, Certified};

#[axum::debug_handler]
#[require_certified(min_age = 19)]
async fn handler(cert: Certified) -> String {
    cert.id.clone()
}

fn main() {}
