//! Parsing `#[require_certified(key = literal, …)]` into checked policy arguments.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Lit, LitInt, Token};

use crate::duration::parse_seconds;

const KEYS: &str = "min_birth_year, max_birth_year, min_age, unique, fresh_within, foreigners";
const MIN_YEAR: u16 = 1900;
const MAX_YEAR: u16 = 2100;

/// A value and where it was written, for errors and for spans in the expansion.
#[derive(Clone, Copy)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// The policy words, each at most once. Every value is already range-checked.
#[derive(Default)]
pub(crate) struct PolicyArgs {
    pub(crate) min_birth_year: Option<Spanned<u16>>,
    pub(crate) max_birth_year: Option<Spanned<u16>>,
    pub(crate) min_age: Option<Spanned<u8>>,
    pub(crate) unique: Option<Spanned<bool>>,
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
        "unique" => "true",
        "foreigners" => "false",
        "fresh_within" => "\"10m\"",
        _ => "1999",
    }
}

fn year(lit: &Lit, key: &Ident) -> syn::Result<Spanned<u16>> {
    let (value, int) = int::<u64>(lit, key, "a birth year (an integer)")?;
    if !(u64::from(MIN_YEAR)..=u64::from(MAX_YEAR)).contains(&value) {
        return Err(syn::Error::new(
            int.span(),
            format!(
                "`{key} = {value}` is implausible: birth years must be between {MIN_YEAR} and {MAX_YEAR}"
            ),
        ));
    }
    Ok(Spanned {
        value: u16::try_from(value).unwrap_or(MAX_YEAR),
        span: int.span(),
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
                    let (value, int) = int::<u64>(&lit, &key, "an age in whole years")?;
                    if !(1..=150).contains(&value) {
                        return Err(syn::Error::new(
                            int.span(),
                            format!(
                                "`min_age = {value}` is implausible: ages must be between 1 and 150"
                            ),
                        ));
                    }
                    let value = u8::try_from(value).unwrap_or(u8::MAX);
                    set(
                        &mut args.min_age,
                        &key,
                        Spanned {
                            value,
                            span: int.span(),
                        },
                    )?;
                }
                "unique" => set(&mut args.unique, &key, boolean(&lit, &key)?)?,
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
        if let (Some(min), Some(max)) = (args.min_birth_year, args.max_birth_year)
            && min.value > max.value
        {
            let mut error = syn::Error::new(
                min.span,
                format!(
                    "`min_birth_year = {}` is after `max_birth_year = {}`: nobody would be admitted",
                    min.value, max.value
                ),
            );
            error.combine(syn::Error::new(max.span, "`max_birth_year` set here"));
            return Err(error);
        }
        Ok(args)
    }
}
