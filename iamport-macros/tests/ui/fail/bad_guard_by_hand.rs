//! A guard written by hand is checked when the handler is compiled into a router: a value the
//! policy's builder refuses is a compile error, never a request-time panic.
use axum::routing::get;
use axum::Router;
use iamport_tower::policy::{MinAge, Scope, UniqueIn};
use iamport_tower::Guard;

async fn too_old(_: Guard<(MinAge<200>,)>) {}

async fn capitals(_: Guard<(UniqueIn<Scope<'S', 'i', 'g', 'n'>>,)>) {}

fn main() {
    let _: Router = Router::new()
        .route("/too-old", get(too_old))
        .route("/capitals", get(capitals));
}
