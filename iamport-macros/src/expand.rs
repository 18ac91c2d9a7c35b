//! The expansion of `#[require_certified]`.
//!
//! - axum style: a hidden first argument (after `self`)
//!   `_: ::iamport_tower::Guard<(MaxBirthYear<1999>, Unique<true>), { valid(policy) }>`, an
//!   extractor that applies the policy before any other extractor runs. The policy travels as
//!   the user's own words and values (readable wherever the compiler names the type);
//!   `valid(policy)` is where the values are checked. Generics, attributes, visibility and
//!   the body are untouched, so `return` and `?` work as written.
//! - request style (a parameter of type `Request<B>`, or `style = request`): a check on
//!   `req.extensions()` first in the body, returning the rejection converted into the
//!   function's own return type.
//!
//! The policy is built with `iamport_tower::Policy`'s const builder inside a `const`, each
//! call spanned at its value: the library's asserts are the only definition of the limits,
//! and a value out of range is a compile error pointing at that value.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ItemFn, Pat, Type, parse_quote};

use crate::args::{PolicyArgs, Style, Unique};

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
    let request = match args.style.map(|s| s.value) {
        Some(Style::Axum) => None,
        Some(Style::Request) => Some(request_param(&function, true)?.ok_or_else(|| {
            syn::Error::new(
                args.style.map_or_else(Span::call_site, |s| s.span),
                "`style = request` needs a parameter of type `Request<B>` bound to a name, \
                 e.g. `req: Request<Incoming>`",
            )
        })?),
        None => request_param(&function, false)?,
    };
    match request {
        Some(request) => {
            let block = &function.block;
            // A mixed-site name: the handler's own code can neither see nor shadow it.
            let rejection = Ident::new("rejection", Span::mixed_site());
            function.block = parse_quote!({
                if let ::core::result::Result::Err(#rejection) =
                    ::iamport_tower::__private::admit_request(
                        ::iamport_tower::__private::RequestParam::request_extensions(&#request),
                        &const { #policy },
                    ).await
                {
                    return ::iamport_tower::FromRejection::from_rejection(#rejection);
                }
                #block
            });
        }
        None => {
            let words = policy_words(&args);
            let guard: FnArg = parse_quote!(
                _: ::iamport_tower::Guard<
                    (#(#words,)*),
                    { ::iamport_tower::__private::valid(#policy) },
                >
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

/// `{ let p = ::iamport_tower::Policy::new(); let p = p.max_birth_year(1999); …; p }`: one
/// statement per word, each spanned at its value, so a const-evaluation error (a value the
/// library refuses) points at that value.
fn policy_expr(args: &PolicyArgs) -> TokenStream {
    let p = Ident::new("policy", Span::mixed_site());
    let mut steps = Vec::new();
    if let Some(y) = args.min_birth_year {
        let lit = spanned_literal(Literal::u16_unsuffixed(y.value), y.span);
        steps.push(
            quote_spanned!(y.span=> let #p = ::iamport_tower::Policy::min_birth_year(#p, #lit);),
        );
    }
    if let Some(y) = args.max_birth_year {
        let lit = spanned_literal(Literal::u16_unsuffixed(y.value), y.span);
        steps.push(
            quote_spanned!(y.span=> let #p = ::iamport_tower::Policy::max_birth_year(#p, #lit);),
        );
    }
    if let Some(a) = args.min_age {
        let lit = spanned_literal(Literal::u8_unsuffixed(a.value), a.span);
        steps.push(quote_spanned!(a.span=> let #p = ::iamport_tower::Policy::min_age(#p, #lit);));
    }
    if let Some(u) = &args.unique {
        steps.push(match &u.value {
            Unique::Flag(value) => {
                quote_spanned!(u.span=> let #p = ::iamport_tower::Policy::unique(#p, #value);)
            }
            Unique::Scope(scope) => {
                let lit = syn::LitStr::new(scope, u.span);
                quote_spanned!(u.span=> let #p = ::iamport_tower::Policy::unique_in(#p, #lit);)
            }
        });
    }
    if let Some(b) = args.bound {
        let value = b.value;
        steps.push(quote_spanned!(b.span=> let #p = ::iamport_tower::Policy::bound(#p, #value);));
    }
    if let Some(f) = args.foreigners {
        let value = f.value;
        steps.push(
            quote_spanned!(f.span=> let #p = ::iamport_tower::Policy::foreigners(#p, #value);),
        );
    }
    if let Some(d) = args.fresh_within {
        let lit = spanned_literal(Literal::u64_unsuffixed(d.value), d.span);
        steps.push(quote_spanned!(d.span=>
            let #p = ::iamport_tower::Policy::fresh_within(#p, ::iamport_tower::__private::Duration::from_secs(#lit));));
    }
    quote!({
        let #p = ::iamport_tower::Policy::new();
        #(#steps)*
        #p
    })
}

/// The policy as a tuple of `::iamport_tower::policy` words, in the builder's order, each
/// value spanned where it was written: `MaxBirthYear<1999>`, `UniqueIn<Scope<'s', …>>`.
fn policy_words(args: &PolicyArgs) -> Vec<TokenStream> {
    let mut words = Vec::new();
    let mut word = |name: &str, value: TokenStream, span: Span| {
        let name = Ident::new(name, span);
        words.push(quote_spanned!(span=> ::iamport_tower::policy::#name<#value>));
    };
    if let Some(y) = args.min_birth_year {
        let lit = spanned_literal(Literal::u16_unsuffixed(y.value), y.span);
        word("MinBirthYear", quote!(#lit), y.span);
    }
    if let Some(y) = args.max_birth_year {
        let lit = spanned_literal(Literal::u16_unsuffixed(y.value), y.span);
        word("MaxBirthYear", quote!(#lit), y.span);
    }
    if let Some(a) = args.min_age {
        let lit = spanned_literal(Literal::u8_unsuffixed(a.value), a.span);
        word("MinAge", quote!(#lit), a.span);
    }
    if let Some(u) = &args.unique {
        match &u.value {
            Unique::Flag(value) => word("Unique", quote_spanned!(u.span=> #value), u.span),
            Unique::Scope(scope) => word("UniqueIn", scope_type(scope, u.span), u.span),
        }
    }
    if let Some(b) = args.bound {
        let value = b.value;
        word("Bound", quote_spanned!(b.span=> #value), b.span);
    }
    if let Some(f) = args.foreigners {
        let value = f.value;
        word("Foreigners", quote_spanned!(f.span=> #value), f.span);
    }
    if let Some(d) = args.fresh_within {
        let lit = spanned_literal(Literal::u64_unsuffixed(d.value), d.span);
        word("FreshWithinSecs", quote!(#lit), d.span);
    }
    words
}

/// `"newsletter"` as `Scope<'n', 'e', 'w', 's', 'l', 'e', 't', 't', Scope<'e', 'r'>>`: eight
/// characters a chunk (only the last may be shorter), the next chunk last.
fn scope_type(scope: &str, span: Span) -> TokenStream {
    let chars: Vec<char> = scope.chars().collect();
    let mut rest: Option<TokenStream> = None;
    for chunk in chars.chunks(8).rev() {
        let chars = chunk
            .iter()
            .map(|&c| spanned_literal(Literal::character(c), span));
        let next = rest.take().map(|r| quote!(, #r));
        rest = Some(quote_spanned!(span=> ::iamport_tower::policy::Scope<#(#chars),* #next>));
    }
    // An empty name has no chunk: `Scope<'\0'>`, which the library refuses at compile time
    // (the builder's check reports it first, at the value).
    rest.unwrap_or_else(|| quote_spanned!(span=> ::iamport_tower::policy::Scope<'\0'>))
}

fn spanned_literal(mut literal: Literal, span: Span) -> Literal {
    literal.set_span(span);
    literal
}

/// The name bound to a `Request<_>` parameter, if the handler takes one. With `forced`
/// (`style = request`) the type is not inspected: the first parameter bound to a plain name
/// whose type is not `self` is taken when no type looks like a request.
fn request_param(function: &ItemFn, forced: bool) -> syn::Result<Option<Ident>> {
    let typed = || {
        function.sig.inputs.iter().filter_map(|input| match input {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
    };
    let chosen = typed()
        .find(|t| is_request(&t.ty))
        .or_else(|| if forced { typed().next() } else { None });
    let Some(typed) = chosen else { return Ok(None) };
    match &*typed.pat {
        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
            Ok(Some(pat.ident.clone()))
        }
        other => Err(syn::Error::new(
            other.span(),
            "#[require_certified] needs the request bound to a name, e.g. `req: Request<Incoming>`",
        )),
    }
}

/// `Request<B>`, `http::Request<B>`, `hyper::Request<B>`, `axum::extract::Request`, a local
/// `type Request = …`: a type path whose last segment is `Request`. (A macro sees only
/// tokens: an alias under another name is not recognized — say `style = request` — and an
/// axum handler taking `axum::extract::Request` is taken for request style — say
/// `style = axum`.)
fn is_request(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Request")
}
