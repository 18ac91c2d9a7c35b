//! Parsing `#[require_certified(key = literal, …)]` into checked policy arguments.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Lit, LitInt, Token};

use crate::duration::parse_seconds;

const KEYS: &str =
    "min_birth_year, max_birth_year, min_age, unique, bound, fresh_within, foreigners, style";

/// A value and where it was written, for errors and for spans in the expansion.
#[derive(Clone, Copy)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// `unique = true | false | "scope"`.
#[derive(Clone)]
pub(crate) enum Unique {
    Flag(bool),
    Scope(String),
}

/// How the handler is guarded (see `expand`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// A hidden extractor argument.
    Axum,
    /// A check on the `Request<B>` parameter's extensions.
    Request,
}

/// The policy words, each at most once. Values have the right types; their ranges are checked
/// by `iamport_tower::Policy`'s const builder in the expansion (the one source of truth for
/// the limits), which reports at the value's span.
#[derive(Default)]
pub(crate) struct PolicyArgs {
    pub(crate) style: Option<Spanned<Style>>,
    pub(crate) min_birth_year: Option<Spanned<u16>>,
    pub(crate) max_birth_year: Option<Spanned<u16>>,
    pub(crate) min_age: Option<Spanned<u8>>,
    pub(crate) unique: Option<Spanned<Unique>>,
    pub(crate) bound: Option<Spanned<bool>>,
    pub(crate) fresh_within: Option<Spanned<u64>>,
    pub(crate) foreigners: Option<Spanned<bool>>,
}

fn int<T: std::str::FromStr>(lit: &Lit, key: &Ident, what: &str) -> syn::Result<(T, LitInt)>
where
    T::Err: std::fmt::Display,
{
    match lit {
        Lit::Int(int) => Ok((
            int.base10_parse::<T>().map_err(|_| {
                syn::Error::new(
                    int.span(),
                    format!("`{key}` is out of range: expected {what}"),
                )
            })?,
            int.clone(),
        )),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{key}` expects {what}, e.g. `{key} = {}`", example(key)),
        )),
    }
}

fn example(key: &Ident) -> &'static str {
    match key.to_string().as_str() {
        "min_age" => "19",
        "unique" | "bound" => "true",
        "foreigners" => "false",
        "fresh_within" => "\"10m\"",
        _ => "1999",
    }
}

fn year(lit: &Lit, key: &Ident) -> syn::Result<Spanned<u16>> {
    let (value, int) = int::<u16>(lit, key, "a birth year (1900 to 2100)")?;
    Ok(Spanned {
        value,
        span: int.span(),
    })
}

fn style(input: ParseStream<'_>) -> syn::Result<Spanned<Style>> {
    let value: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "`style` expects `axum` or `request`, e.g. `style = axum`",
        )
    })?;
    let style = match value.to_string().as_str() {
        "axum" => Style::Axum,
        "request" => Style::Request,
        other => {
            return Err(syn::Error::new(
                value.span(),
                format!("unknown style `{other}`; expected `axum` or `request`"),
            ));
        }
    };
    Ok(Spanned {
        value: style,
        span: value.span(),
    })
}

fn boolean(lit: &Lit, key: &Ident) -> syn::Result<Spanned<bool>> {
    match lit {
        Lit::Bool(b) => Ok(Spanned {
            value: b.value,
            span: b.span,
        }),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{key}` expects `true` or `false`"),
        )),
    }
}

fn set<T>(slot: &mut Option<Spanned<T>>, key: &Ident, value: Spanned<T>) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            key.span(),
            format!("duplicate key `{key}`"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

impl Parse for PolicyArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        while !input.is_empty() {
            let key: Ident = input.parse().map_err(|e| {
                syn::Error::new(e.span(), format!("expected a policy key ({KEYS})"))
            })?;
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    key.span(),
                    format!("`{key}` needs a value, e.g. `{key} = {}`", example(&key)),
                ));
            }
            let eq = input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new(
                    eq.span,
                    format!(
                        "`{key}` needs a value after `=`, e.g. `{key} = {}`",
                        example(&key)
                    ),
                ));
            }
            if key == "style" {
                set(&mut args.style, &key, style(input)?)?;
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
                continue;
            }
            let lit: Lit = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "`{key}` expects a literal, e.g. `{key} = {}`",
                        example(&key)
                    ),
                )
            })?;
            match key.to_string().as_str() {
                "min_birth_year" => set(&mut args.min_birth_year, &key, year(&lit, &key)?)?,
                "max_birth_year" => set(&mut args.max_birth_year, &key, year(&lit, &key)?)?,
                "min_age" => {
                    let (value, int) = int::<u8>(&lit, &key, "an age in whole years (1 to 150)")?;
                    set(
                        &mut args.min_age,
                        &key,
                        Spanned {
                            value,
                            span: int.span(),
                        },
                    )?;
                }
                "unique" => {
                    let value = match &lit {
                        Lit::Str(scope) => Spanned {
                            value: Unique::Scope(scope.value()),
                            span: scope.span(),
                        },
                        Lit::Bool(_) => {
                            let flag = boolean(&lit, &key)?;
                            Spanned {
                                value: Unique::Flag(flag.value),
                                span: flag.span,
                            }
                        }
                        other => {
                            return Err(syn::Error::new(
                                other.span(),
                                "`unique` expects `true`, `false` or a keyspace name, e.g. `unique = \"signup\"`",
                            ));
                        }
                    };
                    set(&mut args.unique, &key, value)?;
                }
                "bound" => set(&mut args.bound, &key, boolean(&lit, &key)?)?,
                "foreigners" => set(&mut args.foreigners, &key, boolean(&lit, &key)?)?,
                "fresh_within" => {
                    let Lit::Str(text) = &lit else {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`fresh_within` expects a duration string, e.g. `fresh_within = \"10m\"`",
                        ));
                    };
                    let secs = parse_seconds(&text.value())
                        .map_err(|e| syn::Error::new(text.span(), e))?;
                    set(
                        &mut args.fresh_within,
                        &key,
                        Spanned {
                            value: secs,
                            span: text.span(),
                        },
                    )?;
                }
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown policy key `{key}`; expected one of: {KEYS}"),
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}
