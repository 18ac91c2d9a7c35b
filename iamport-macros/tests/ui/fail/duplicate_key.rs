use iamport_tower::require_certified;

#[require_certified(min_age = 19, unique = true, min_age = 20)]
async fn handler() {}

fn main() {}
