use iamport_tower::require_certified;

#[require_certified(max_birth_year = 1899)]
async fn too_early() {}

#[require_certified(min_birth_year = 2101)]
async fn too_late() {}

#[require_certified(min_birth_year = 99999)]
async fn overflow() {}

fn main() {}
