use iamport_tower::require_certified;

#[require_certified(min_age = 19)]
fn handler() {}

fn main() {}
