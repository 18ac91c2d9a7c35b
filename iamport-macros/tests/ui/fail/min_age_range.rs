use iamport_tower::require_certified;

#[require_certified(min_age = 0)]
async fn zero() {}

#[require_certified(min_age = 300)]
async fn too_old() {}

fn main() {}
