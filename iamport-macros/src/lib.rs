//! Procedural macros of [`iamport-tower`](https://docs.rs/iamport-tower).
//!
//! Use them through `iamport_tower::require_certified`; this crate is an implementation detail.

use proc_macro::TokenStream;

/// Guards a handler with a certification policy (expansion pending: refuses to compile so that
/// no handler is ever left unguarded by mistake).
#[proc_macro_attribute]
pub fn require_certified(_attr: TokenStream, _item: TokenStream) -> TokenStream {
    "::core::compile_error!(\"#[require_certified] is not available in this version\");"
        .parse()
        .unwrap_or_default()
}
