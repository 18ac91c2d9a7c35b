use iamport_tower::require_certified;

#[require_certified(unique = "Sign Up")]
async fn spaces_and_capitals() {}

#[require_certified(unique = "")]
async fn empty() {}

#[require_certified(unique = 1)]
async fn a_number() {}

fn main() {}
