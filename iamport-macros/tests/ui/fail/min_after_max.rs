use iamport_tower::require_certified;

#[require_certified(min_birth_year = 2001, max_birth_year = 1999)]
async fn handler() {}

fn main() {}
