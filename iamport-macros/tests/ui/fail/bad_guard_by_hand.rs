//! A guard written by hand is checked when the handler is built into a router: a value the
//! policy's builder refuses, or a word given twice, is a compile error of `cargo build` (a
//! `const` evaluated after monomorphization, which `cargo check` does not evaluate; trybuild
//! builds these cases because the suite has pass cases), never a request-time panic.
use axum::routing::get;
use axum::Router;
use iamport_tower::policy::{MinAge, Scope, Unique, UniqueIn};
use iamport_tower::Guard;

async fn too_old(_: Guard<(MinAge<200>,)>) {}

async fn capitals(_: Guard<(UniqueIn<Scope<'S', 'i', 'g', 'n'>>,)>) {}

async fn twice(_: Guard<(Unique<true>, UniqueIn<Scope<'a'>>)>) {}

fn main() {
    let _: Router = Router::new()
        .route("/too-old", get(too_old))
        .route("/capitals", get(capitals))
        .route("/twice", get(twice));
}
