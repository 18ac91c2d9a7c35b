//! A [`Policy`] written as a type, word by word (see [`Words`]).

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use self::sealed::Rule;
use super::{Policy, is_scope_byte};

/// Born in `YEAR` or later ([`Policy::min_birth_year`]).
#[derive(Debug)]
pub struct MinBirthYear<const YEAR: u16>;
/// Born in `YEAR` or earlier ([`Policy::max_birth_year`]).
#[derive(Debug)]
pub struct MaxBirthYear<const YEAR: u16>;
/// At least `YEARS` full years old today in Korea ([`Policy::min_age`]).
#[derive(Debug)]
pub struct MinAge<const YEARS: u8>;
/// One account per person in the default keyspace ([`Policy::unique`]).
#[derive(Debug)]
pub struct Unique<const ON: bool>;
/// One account per person in the keyspace `Name`, a [`Scope`] ([`Policy::unique_in`]).
#[derive(Debug)]
pub struct UniqueIn<Name>(PhantomData<fn() -> Name>);
/// Only verifications started by the requesting session ([`Policy::bound`]).
#[derive(Debug)]
pub struct Bound<const ON: bool>;
/// Whether foreign nationals are admitted ([`Policy::foreigners`]).
#[derive(Debug)]
pub struct Foreigners<const ALLOWED: bool>;
/// Verified no longer ago than `SECS` seconds ([`Policy::fresh_within`]).
#[derive(Debug)]
pub struct FreshWithinSecs<const SECS: u64>;

/// A `unique` keyspace's name, up to eight characters a chunk; `Rest` is the next chunk (or
/// `()`). Unused places hold `'\0'` and are left out when written.
#[derive(Debug)]
pub struct Scope<
    const C0: char,
    const C1: char = '\0',
    const C2: char = '\0',
    const C3: char = '\0',
    const C4: char = '\0',
    const C5: char = '\0',
    const C6: char = '\0',
    const C7: char = '\0',
    Rest = (),
>(PhantomData<fn() -> Rest>);

/// One word of a policy written as a type (see [`Words`]).
pub trait Word: sealed::Word {}

/// A policy written as a type: a tuple of up to seven [`Word`]s, each at most once, e.g.
/// `(MaxBirthYear<1999>, Unique<true>)`.
///
/// This is how `#[require_certified]` hands its policy to the extractor it adds,
/// `Guard<(MaxBirthYear<1999>, Unique<true>)>` (axum feature): the words and values you wrote,
/// so a compiler message that names the guard reads as your attribute did. The macro checks
/// the values at compile time, pointing at the one that is wrong. Written by hand, a guard's
/// words are checked when the handler is built into a router — a `const` evaluation error of
/// `cargo build` (`cargo check` does not evaluate it) — never at request time.
///
/// | word | [`Policy`] builder |
/// |---|---|
/// | `MinBirthYear<Y>` | `min_birth_year(Y)` |
/// | `MaxBirthYear<Y>` | `max_birth_year(Y)` |
/// | `MinAge<N>` | `min_age(N)` |
/// | `Unique<B>` | `unique(B)` |
/// | `UniqueIn<Scope<'s', 'i', 'g', 'n', 'u', 'p'>>` | `unique_in("signup")` |
/// | `Bound<B>` | `bound(B)` |
/// | `Foreigners<B>` | `foreigners(B)` |
/// | `FreshWithinSecs<S>` | `fresh_within(Duration::from_secs(S))` |
///
/// A scope's name is spelled in chunks of up to eight characters, each chunk's last
/// parameter the next chunk: `Scope<'n', 'e', 'w', 's', 'l', 'e', 't', 't', Scope<'e', 'r'>>`
/// is `"newsletter"`. Names have no length limit.
pub trait Words: sealed::Words {}

/// The characters of a [`Scope`] (or `()`, the end of one).
pub trait ScopeName: sealed::ScopeName {}

// Each public trait is its sealed half: only this module's types implement them.
impl<T: sealed::Word> Word for T {}
impl<T: sealed::Words> Words for T {}
impl<T: sealed::ScopeName> ScopeName for T {}

/// The policy `W` spells, its scope's name included.
#[cfg(any(feature = "axum", test))] // only the axum guard reads a policy from a type
pub(crate) fn policy_of<W: Words>() -> Policy {
    let policy = const { W::POLICY };
    match W::scope() {
        Some(scope) => policy.unique_in(scope),
        None => policy,
    }
}

impl Policy {
    /// The policy of `rules`, each through its builder (and so its checks). Each word may
    /// appear once, as in the macro (`Unique` and `UniqueIn` are one word): with two, the
    /// later would silently override the earlier.
    const fn from_rules(rules: &[Rule]) -> Self {
        let mut policy = Self::new();
        let mut i = 0;
        while i < rules.len() {
            let mut j = i + 1;
            while j < rules.len() {
                assert!(
                    rules[i].word() != rules[j].word(),
                    "a policy word appears twice (`Unique` and `UniqueIn` are one word)"
                );
                j += 1;
            }
            policy = policy.with(rules[i]);
            i += 1;
        }
        policy
    }

    /// Applies one word through its builder (and so its checks).
    const fn with(self, rule: Rule) -> Self {
        match rule {
            Rule::MinBirthYear(year) => self.min_birth_year(year),
            Rule::MaxBirthYear(year) => self.max_birth_year(year),
            Rule::MinAge(years) => self.min_age(years),
            Rule::Unique(on) => self.unique(on),
            Rule::Bound(on) => self.bound(on),
            Rule::Foreigners(allowed) => self.foreigners(allowed),
            Rule::FreshWithinSecs(secs) => self.fresh_within(Duration::from_secs(secs)),
        }
    }
}

// The traits' halves users cannot name: nothing outside this module implements `Word`,
// `Words` or `ScopeName` (their items remain usable through a bound, which is harmless).
#[allow(unreachable_pub)]
mod sealed {
    use super::Policy;

    /// What one word does to a policy.
    #[derive(Debug, Clone, Copy)]
    pub enum Rule {
        MinBirthYear(u16),
        MaxBirthYear(u16),
        MinAge(u8),
        Unique(bool),
        Bound(bool),
        Foreigners(bool),
        FreshWithinSecs(u64),
    }

    impl Rule {
        /// Which word this is, whatever its value.
        pub(super) const fn word(self) -> u8 {
            match self {
                Self::MinBirthYear(_) => 0,
                Self::MaxBirthYear(_) => 1,
                Self::MinAge(_) => 2,
                Self::Unique(_) => 3,
                Self::Bound(_) => 4,
                Self::Foreigners(_) => 5,
                Self::FreshWithinSecs(_) => 6,
            }
        }
    }

    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a policy word",
        note = "the words are `iamport_tower::policy`'s MinBirthYear<Y>, MaxBirthYear<Y>, MinAge<N>, Unique<B>, UniqueIn<Scope<…>>, Bound<B>, Foreigners<B> and FreshWithinSecs<S>"
    )]
    pub trait Word {
        const RULE: Rule;
        fn scope() -> Option<&'static str> {
            None
        }
    }

    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a policy written as a type",
        note = "a policy is a tuple of up to seven words, each at most once, e.g. `(MaxBirthYear<1999>, Unique<true>)`"
    )]
    pub trait Words {
        const POLICY: Policy;
        fn scope() -> Option<&'static str>;
    }

    pub trait ScopeName: 'static {
        /// Characters before the first `'\0'` in this chunk and the ones after it.
        const LEN: usize;
        fn push(name: &mut String);
    }
}

macro_rules! words {
    ($($rule:ident($ty:ty)),*) => {$(
        impl<const V: $ty> sealed::Word for $rule<V> {
            const RULE: Rule = Rule::$rule(V);
        }
    )*};
}
words!(
    MinBirthYear(u16),
    MaxBirthYear(u16),
    MinAge(u8),
    Unique(bool),
    Bound(bool),
    Foreigners(bool),
    FreshWithinSecs(u64)
);

impl<Name: ScopeName> sealed::Word for UniqueIn<Name> {
    const RULE: Rule = {
        assert!(Name::LEN > 0, "a unique scope needs a name");
        Rule::Unique(true)
    };
    fn scope() -> Option<&'static str> {
        Some(scope_name::<Name>())
    }
}

macro_rules! tuples {
    ($(($($w:ident),*)),*) => {$(
        #[allow(non_snake_case)]
        impl<$($w: Word),*> sealed::Words for ($($w,)*) {
            const POLICY: Policy = Policy::from_rules(&[$($w::RULE),*]);
            fn scope() -> Option<&'static str> {
                None$(.or_else($w::scope))*
            }
        }
    )*};
}
tuples!(
    (),
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G)
);

impl sealed::ScopeName for () {
    const LEN: usize = 0;
    fn push(_: &mut String) {}
}

impl<
    const C0: char,
    const C1: char,
    const C2: char,
    const C3: char,
    const C4: char,
    const C5: char,
    const C6: char,
    const C7: char,
    Rest: ScopeName,
> sealed::ScopeName for Scope<C0, C1, C2, C3, C4, C5, C6, C7, Rest>
{
    const LEN: usize = {
        let chars = [C0, C1, C2, C3, C4, C5, C6, C7];
        let mut len = 0;
        while len < chars.len() && chars[len] != '\0' {
            assert!(
                chars[len].is_ascii() && is_scope_byte(chars[len] as u8),
                "a unique scope is made of lowercase ASCII letters, digits, `_` and `-`"
            );
            len += 1;
        }
        let mut i = len;
        while i < chars.len() {
            assert!(chars[i] == '\0', "a unique scope's chunk has a gap");
            i += 1;
        }
        assert!(
            len == chars.len() || Rest::LEN == 0,
            "a unique scope's chunk is followed by more after a short one"
        );
        len + Rest::LEN
    };

    fn push(name: &mut String) {
        name.extend(
            [C0, C1, C2, C3, C4, C5, C6, C7]
                .into_iter()
                .filter(|&c| c != '\0'),
        );
        Rest::push(name);
    }
}

/// `Name`'s characters as one string, written once per name for the life of the process
/// (there are as many as the program has scope types); later requests only read.
fn scope_name<Name: ScopeName>() -> &'static str {
    static NAMES: RwLock<Vec<(TypeId, &'static str)>> = RwLock::new(Vec::new());
    let id = TypeId::of::<Name>();
    let find = |names: &[(TypeId, &'static str)]| {
        names
            .iter()
            .find(|(of, _)| *of == id)
            .map(|&(_, name)| name)
    };
    if let Some(name) = find(&NAMES.read().unwrap_or_else(PoisonError::into_inner)) {
        return name;
    }
    let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(name) = find(&names) {
        return name;
    }
    let mut name = String::with_capacity(const { Name::LEN });
    Name::push(&mut name);
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.push((id, name));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_spell_the_builders_policy() {
        type Signup = (
            MinBirthYear<1950>,
            MaxBirthYear<2007>,
            MinAge<19>,
            Unique<true>,
            Bound<true>,
            Foreigners<false>,
            FreshWithinSecs<600>,
        );
        let built = Policy::new()
            .min_birth_year(1950)
            .max_birth_year(2007)
            .min_age(19)
            .unique(true)
            .bound(true)
            .foreigners(false)
            .fresh_within(Duration::from_secs(600));
        assert_eq!(policy_of::<Signup>(), built);
        assert_eq!(policy_of::<()>(), Policy::new());
    }

    #[test]
    #[should_panic(expected = "appears twice")]
    fn a_word_may_appear_once() {
        // `Unique` and `UniqueIn` are one word: together, one would override the other.
        let _ = Policy::from_rules(&[Rule::Unique(true), Rule::MinAge(19), Rule::Unique(false)]);
    }

    #[test]
    fn scopes_are_spelled_in_chunks_of_any_length() {
        type Newsletter = Scope<'n', 'e', 'w', 's', 'l', 'e', 't', 't', Scope<'e', 'r'>>;
        let policy = policy_of::<(MinAge<19>, UniqueIn<Newsletter>)>();
        assert_eq!(policy, Policy::new().min_age(19).unique_in("newsletter"));
        assert_eq!(policy.unique_scope(), Some("newsletter"));
        // The same name is written once.
        assert!(std::ptr::eq(
            scope_name::<Newsletter>(),
            scope_name::<Newsletter>()
        ));
        type Eight = Scope<'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'>;
        assert_eq!(scope_name::<Eight>(), "abcdefgh");
        assert_eq!(<Newsletter as sealed::ScopeName>::LEN, 10);
    }
}
