use iamport_tower::require_certified;

#[require_certified(max_birth_year = 1999, adult = true)]
async fn handler() {}

fn main() {}
