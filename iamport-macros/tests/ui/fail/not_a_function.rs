use iamport_tower::require_certified;

#[require_certified(min_age = 19)]
struct Handler;

fn main() {}
