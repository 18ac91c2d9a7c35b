//! The expansion of `#[require_certified]`.
//!
//! - axum style: a hidden first argument `_: ::iamport_tower::__private::Guard<{ policy }>`,
//!   an extractor that applies the policy before any other extractor runs. The signature,
//!   generics, attributes, visibility and body are otherwise untouched, so `return` and `?`
//!   work as written.
//! - request style (a parameter of type `Request<B>`): a check on `req.extensions()` first in
//!   the body, returning the rejection converted into the function's own return type.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ItemFn, Pat, Type, parse_quote};

use crate::args::PolicyArgs;

pub(crate) fn require_certified(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: PolicyArgs = syn::parse2(attr)?;
    let mut function: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[require_certified] goes on an `async fn` handler",
        )
    })?;
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new(
            function.sig.fn_token.span,
            "#[require_certified] needs an `async fn` (a handler)",
        ));
    }
    let policy = policy_expr(&args);
    match request_param(&function)? {
        Some(request) => {
            let block = &function.block;
            function.block = parse_quote!({
                if let ::core::result::Result::Err(__iamport_rejection) =
                    ::iamport_tower::__private::admit_request(#request.extensions(), const { #policy.to_bits() }).await
                {
                    return ::iamport_tower::FromRejection::from_rejection(__iamport_rejection);
                }
                #block
            });
        }
        None => {
            let guard: FnArg = parse_quote!(
                _: ::iamport_tower::__private::Guard<{ #policy.to_bits() }>
            );
            let at = usize::from(matches!(
                function.sig.inputs.first(),
                Some(FnArg::Receiver(_))
            ));
            function.sig.inputs.insert(at, guard);
        }
    }
    Ok(quote!(#function))
}

/// `::iamport_tower::Policy::new().max_birth_year(1999)…`, each call spanned at its value so
/// a const-evaluation error would point at the attribute.
fn policy_expr(args: &PolicyArgs) -> TokenStream {
    let mut expr = quote!(::iamport_tower::Policy::new());
    if let Some(y) = args.min_birth_year {
        let lit = spanned_literal(Literal::u16_unsuffixed(y.value), y.span);
        expr = quote_spanned!(y.span=> #expr.min_birth_year(#lit));
    }
    if let Some(y) = args.max_birth_year {
        let lit = spanned_literal(Literal::u16_unsuffixed(y.value), y.span);
        expr = quote_spanned!(y.span=> #expr.max_birth_year(#lit));
    }
    if let Some(a) = args.min_age {
        let lit = spanned_literal(Literal::u8_unsuffixed(a.value), a.span);
        expr = quote_spanned!(a.span=> #expr.min_age(#lit));
    }
    if let Some(u) = args.unique {
        let value = u.value;
        expr = quote_spanned!(u.span=> #expr.unique(#value));
    }
    if let Some(f) = args.foreigners {
        let value = f.value;
        expr = quote_spanned!(f.span=> #expr.foreigners(#value));
    }
    if let Some(d) = args.fresh_within {
        let lit = spanned_literal(Literal::u64_unsuffixed(d.value), d.span);
        expr = quote_spanned!(d.span=>
            #expr.fresh_within(::iamport_tower::__private::Duration::from_secs(#lit)));
    }
    expr
}

fn spanned_literal(mut literal: Literal, span: proc_macro2::Span) -> Literal {
    literal.set_span(span);
    literal
}

/// The name bound to a `Request<_>` parameter, if the handler takes one.
fn request_param(function: &ItemFn) -> syn::Result<Option<Ident>> {
    for input in &function.sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        if !is_request(&typed.ty) {
            continue;
        }
        return match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                Ok(Some(pat.ident.clone()))
            }
            other => Err(syn::Error::new(
                other.span(),
                "#[require_certified] needs the request bound to a name, e.g. `req: Request<Incoming>`",
            )),
        };
    }
    Ok(None)
}

/// `Request<B>`, `http::Request<B>`, `hyper::Request<B>`, `axum::extract::Request`, a local
/// `type Request = …`: a type path whose last segment is `Request`. (A macro sees only
/// tokens; an alias under another name is not recognized, and the handler is then treated
/// as an axum handler.)
fn is_request(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Request")
}
