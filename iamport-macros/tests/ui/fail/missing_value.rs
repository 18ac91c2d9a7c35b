use iamport_tower::require_certified;

#[require_certified(unique)]
async fn no_value() {}

#[require_certified(min_age = )]
async fn empty_value() {}

#[require_certified(min_age = 19 unique = true)]
async fn missing_comma() {}

fn main() {}
