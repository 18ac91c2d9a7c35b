use iamport_tower::require_certified;

#[require_certified(fresh_within = "10 minutes")]
async fn words() {}

#[require_certified(fresh_within = "10")]
async fn no_unit() {}

#[require_certified(fresh_within = "0s")]
async fn zero() {}

fn main() {}
