use iamport_tower::require_certified;

#[require_certified(max_birth_year = "1999")]
async fn year_as_string() {}

#[require_certified(unique = 1)]
async fn unique_as_number() {}

#[require_certified(fresh_within = 600)]
async fn duration_as_number() {}

fn main() {}
