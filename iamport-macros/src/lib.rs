//! Procedural macros of [`iamport-tower`](https://docs.rs/iamport-tower).
//!
//! Use them through `iamport_tower::require_certified`: the generated code names only
//! `::iamport_tower::…` paths, so a direct dependency on this crate is never needed.

mod args;
mod duration;
mod expand;

use proc_macro::TokenStream;

/// Guards an `async fn` handler with a certification policy. See
/// `iamport_tower::require_certified` for the documentation.
#[proc_macro_attribute]
pub fn require_certified(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::require_certified(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
