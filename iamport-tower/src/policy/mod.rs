//! `Policy`: who a guarded route admits. The words are the macro's arguments.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use iamport_client::Certification;
use iamport_client::korea::{date_in_korea, full_years};

mod words;

#[cfg(any(feature = "axum", test))]
pub(crate) use self::words::policy_of;
pub use self::words::{
    Bound, Foreigners, FreshWithinSecs, MaxBirthYear, MinAge, MinBirthYear, Scope, ScopeName,
    Unique, UniqueIn, Word, Words,
};

/// The earliest birth year a policy may name.
pub const MIN_POLICY_YEAR: u16 = 1900;
/// The latest birth year a policy may name.
pub const MAX_POLICY_YEAR: u16 = 2100;

/// Who a guarded route admits. `certified == true` is always required; every other rule is
/// off until set. Build it in a `const` (the builder is `const fn`), exactly as
/// `#[require_certified(...)]` does with the same words:
///
/// ```
/// use std::time::Duration;
/// use iamport_tower::Policy;
///
/// // PortOne's guide's adult check, one account per person, verified in the last 10 minutes.
/// const SIGNUP: Policy = Policy::new()
///     .max_birth_year(1999)
///     .unique(true)
///     .fresh_within(Duration::from_secs(600));
/// ```
///
/// | rule | admits |
/// |---|---|
/// | `min_birth_year(Y)` | people born in year Y or later |
/// | `max_birth_year(Y)` | people born in year Y or earlier (the guide's adult check is `max_birth_year(1999)`, "born 1999 or before") |
/// | `min_age(N)` | people at least N full years old today in Korea, by Korean civil law (the precise legal form of an age limit: `min_age(19)`) |
/// | `unique(true)` | a person (by CI) only until one response of this route succeeded for them, ever (per unique store) |
/// | `fresh_within(d)` | verifications completed no longer ago than `d` |
/// | `bound(true)` | verifications started by the requesting browser session (see [`binding`](crate::binding)) |
/// | `foreigners(false)` | no foreign nationals (PortOne reports nationality only under a foreigner contract; a person whose nationality was not reported is admitted) |
///
/// Age rules need a birth date and freshness needs a completion time: a record without one is
/// refused, never waved through.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    min_birth_year: u16,
    max_birth_year: u16,
    min_age: u8,
    unique: bool,
    foreigners: bool,
    bound: bool,
    fresh_within_secs: u64,
    /// The `unique` keyspace's name (`None`: the default keyspace).
    scope: Option<&'static str>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// Admits every certified person.
    pub const fn new() -> Self {
        Self {
            min_birth_year: 0,
            max_birth_year: 0,
            min_age: 0,
            unique: false,
            foreigners: true,
            bound: false,
            fresh_within_secs: 0,
            scope: None,
        }
    }

    /// Born in `year` or later.
    ///
    /// # Panics
    /// When `year` is outside 1900–2100 or after `max_birth_year` (at compile time in a
    /// `const`).
    pub const fn min_birth_year(mut self, year: u16) -> Self {
        assert!(
            year >= MIN_POLICY_YEAR && year <= MAX_POLICY_YEAR,
            "min_birth_year must be between 1900 and 2100"
        );
        assert!(
            self.max_birth_year == 0 || year <= self.max_birth_year,
            "min_birth_year is after max_birth_year: nobody would be admitted"
        );
        self.min_birth_year = year;
        self
    }

    /// Born in `year` or earlier.
    ///
    /// # Panics
    /// When `year` is outside 1900–2100 or before `min_birth_year`.
    pub const fn max_birth_year(mut self, year: u16) -> Self {
        assert!(
            year >= MIN_POLICY_YEAR && year <= MAX_POLICY_YEAR,
            "max_birth_year must be between 1900 and 2100"
        );
        assert!(
            self.min_birth_year == 0 || year >= self.min_birth_year,
            "max_birth_year is before min_birth_year: nobody would be admitted"
        );
        self.max_birth_year = year;
        self
    }

    /// At least `years` full years old today, in Korea's calendar and by Korean civil law
    /// (someone born on 29 February turns a year older on 1 March in common years).
    ///
    /// # Panics
    /// When `years` is 0 or over 150.
    pub const fn min_age(mut self, years: u8) -> Self {
        assert!(
            years >= 1 && years <= 150,
            "min_age must be between 1 and 150"
        );
        self.min_age = years;
        self
    }

    /// One account per person, in the default keyspace (a scope set before is dropped):
    /// admission reserves the person's key in the unique store, a successful (2xx) response
    /// commits it, anything else releases it.
    pub const fn unique(mut self, unique: bool) -> Self {
        self.unique = unique;
        self.scope = None;
        self
    }

    /// Only verifications started by the requesting browser session: the record's ticket
    /// (v1 `merchant_uid`, v2 id) must be genuine, unexpired and minted for this request's
    /// session (see [`binding`](crate::binding); the layer needs
    /// [`CertificationLayer::binding`](crate::CertificationLayer::binding)).
    pub const fn bound(mut self, bound: bool) -> Self {
        self.bound = bound;
        self
    }

    /// Whether this policy is `bound`.
    pub const fn is_bound(&self) -> bool {
        self.bound
    }

    /// Whether foreign nationals are admitted (default `true`).
    pub const fn foreigners(mut self, allowed: bool) -> Self {
        self.foreigners = allowed;
        self
    }

    /// The verification completed no longer ago than `within` (whole seconds).
    ///
    /// # Panics
    /// When `within` is under one second.
    pub const fn fresh_within(mut self, within: Duration) -> Self {
        assert!(
            within.as_secs() >= 1,
            "fresh_within must be at least one second"
        );
        self.fresh_within_secs = within.as_secs();
        self
    }

    /// One account per person *within the keyspace `scope`* (`unique = "signup"` in the
    /// macro): routes naming different scopes admit the same person once each; `unique(true)`
    /// is the default keyspace. A scope is one or more lowercase ASCII letters, digits, `_` and
    /// `-`, of any length; stores keep it only inside the key's HMAC (see
    /// [`StoreKeys::key_in`](crate::unique::StoreKeys::key_in)).
    ///
    /// # Panics
    /// On an empty or otherwise malformed name (at compile time in a `const`). A name read
    /// at runtime (from configuration, say) must live as long as the policy:
    /// `Box::leak(name.into_boxed_str())` once at startup.
    pub const fn unique_in(mut self, scope: &'static str) -> Self {
        let bytes = scope.as_bytes();
        assert!(!bytes.is_empty(), "a unique scope needs a name");
        let mut i = 0;
        while i < bytes.len() {
            assert!(
                is_scope_byte(bytes[i]),
                "a unique scope is made of lowercase ASCII letters, digits, `_` and `-`"
            );
            i += 1;
        }
        self.unique = true;
        self.scope = Some(scope);
        self
    }

    /// The `unique` keyspace's name; `None` for the default keyspace.
    pub const fn unique_scope(&self) -> Option<&'static str> {
        self.scope
    }

    /// Whether this policy is `unique`.
    pub const fn is_unique(&self) -> bool {
        self.unique
    }

    /// Applies the policy at the current time.
    pub fn check(&self, cert: &Certification) -> Result<(), PolicyViolation> {
        self.check_at(cert, Timestamp::now())
    }

    /// Applies the policy as if the time were `now` (ages use the date in Korea at `now`).
    pub fn check_at(&self, cert: &Certification, now: Timestamp) -> Result<(), PolicyViolation> {
        if !cert.certified {
            return Err(PolicyViolation::NotCertified);
        }
        if self.min_birth_year != 0 || self.max_birth_year != 0 || self.min_age != 0 {
            let birth = cert.birth_date.ok_or(PolicyViolation::BirthDateUnknown)?;
            let year = i32::from(birth.year());
            if self.min_birth_year != 0 && year < i32::from(self.min_birth_year) {
                return Err(PolicyViolation::BornTooEarly {
                    min_birth_year: self.min_birth_year,
                });
            }
            if self.max_birth_year != 0 && year > i32::from(self.max_birth_year) {
                return Err(PolicyViolation::BornTooLate {
                    max_birth_year: self.max_birth_year,
                });
            }
            if self.min_age != 0 && full_years(birth, date_in_korea(now)) < i32::from(self.min_age)
            {
                return Err(PolicyViolation::TooYoung {
                    min_age: self.min_age,
                });
            }
        }
        if !self.foreigners && cert.foreigner == Some(true) {
            return Err(PolicyViolation::Foreigner);
        }
        if self.fresh_within_secs != 0 {
            let at = cert
                .certified_at
                .ok_or(PolicyViolation::CertifiedAtUnknown)?;
            let age = now.as_second().saturating_sub(at.as_second());
            if age > i64::try_from(self.fresh_within_secs).unwrap_or(i64::MAX) {
                return Err(PolicyViolation::Stale {
                    fresh_within: Duration::from_secs(self.fresh_within_secs),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Policy");
        if self.min_birth_year != 0 {
            d.field("min_birth_year", &self.min_birth_year);
        }
        if self.max_birth_year != 0 {
            d.field("max_birth_year", &self.max_birth_year);
        }
        if self.min_age != 0 {
            d.field("min_age", &self.min_age);
        }
        if self.fresh_within_secs != 0 {
            d.field("fresh_within", &Duration::from_secs(self.fresh_within_secs));
        }
        if let Some(scope) = self.unique_scope() {
            d.field("unique_scope", &scope);
        }
        d.field("unique", &self.unique)
            .field("bound", &self.bound)
            .field("foreigners", &self.foreigners)
            .finish()
    }
}

/// Why a certified person does not meet a [`Policy`]. The message states the rule, never
/// the person's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The verification did not succeed (`certified == false`).
    #[error("the identity verification was not completed")]
    NotCertified,
    /// An age rule applies but PortOne sent no birth date.
    #[error("the verification carries no birth date, which this route requires")]
    BirthDateUnknown,
    /// Born before `min_birth_year`.
    #[error("this route admits people born in {min_birth_year} or later")]
    BornTooEarly {
        /// The policy's bound.
        min_birth_year: u16,
    },
    /// Born after `max_birth_year`.
    #[error("this route admits people born in {max_birth_year} or earlier")]
    BornTooLate {
        /// The policy's bound.
        max_birth_year: u16,
    },
    /// Younger than `min_age` full years.
    #[error("this route admits people at least {min_age} years old")]
    TooYoung {
        /// The policy's bound.
        min_age: u8,
    },
    /// A foreign national, and the policy refuses them.
    #[error("this route does not admit foreign nationals")]
    Foreigner,
    /// `unique` applies but PortOne sent no CI to tell people apart.
    #[error("the verification carries no CI (unique_key), which one-account-per-person requires")]
    CiUnknown,
    /// Freshness applies but PortOne sent no completion time.
    #[error("the verification carries no completion time, which this route requires")]
    CertifiedAtUnknown,
    /// Completed longer ago than `fresh_within`.
    #[error("the verification is older than this route allows ({}s); verify again", fresh_within.as_secs())]
    Stale {
        /// The policy's bound.
        fresh_within: Duration,
    },
}

/// A byte a `unique` scope's name may hold.
pub(crate) const fn is_scope_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{Date, date};

    fn born(d: Date) -> Certification {
        let mut c = Certification::new("imp_1", true);
        c.birth_date = Some(d);
        c.certified_at = Some(Timestamp::from_second(1_700_000_000).unwrap());
        c
    }

    /// Noon in Korea on `d`.
    fn korea_noon(d: Date) -> Timestamp {
        d.at(12, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::fixed(iamport_client::korea::KST))
            .unwrap()
            .timestamp()
    }

    #[test]
    fn scopes_of_any_length() {
        const S: Policy = Policy::new().min_age(19).unique_in("signup");
        assert_eq!(S.unique_scope(), Some("signup"));
        assert!(S.is_unique());
        assert_eq!(Policy::new().unique(true).unique_scope(), None);
        let long = "a-scope-name-much-longer-than-sixteen-bytes_0123456789";
        assert_eq!(Policy::new().unique_in(long).unique_scope(), Some(long));
    }

    #[test]
    #[should_panic(expected = "lowercase ASCII letters")]
    fn malformed_scopes_panic() {
        let _ = Policy::new().unique_in("Sign Up");
    }

    #[test]
    fn birth_year_bounds_are_inclusive_and_new_year_safe() {
        let adult = Policy::new().max_birth_year(1999);
        let now = Timestamp::now();
        assert!(adult.check_at(&born(date(1999, 12, 31)), now).is_ok());
        assert!(adult.check_at(&born(date(1999, 1, 1)), now).is_ok());
        // Born 2000-01-01 (birth = 1999-12-31T15:00Z): not born in 1999.
        assert_eq!(
            adult.check_at(&born(date(2000, 1, 1)), now),
            Err(PolicyViolation::BornTooLate {
                max_birth_year: 1999
            })
        );
        let young = Policy::new().min_birth_year(1999);
        assert!(young.check_at(&born(date(1999, 1, 1)), now).is_ok());
        assert!(young.check_at(&born(date(1998, 12, 31)), now).is_err());
    }

    #[test]
    fn age_turns_on_the_birthday_in_korea() {
        let p = Policy::new().min_age(19);
        let birth = date(2007, 11, 25);
        assert!(
            p.check_at(&born(birth), korea_noon(date(2026, 11, 24)))
                .is_err()
        );
        assert!(
            p.check_at(&born(birth), korea_noon(date(2026, 11, 25)))
                .is_ok()
        );
        // 2026-11-25 00:30 in Korea is still 2026-11-24 in UTC: Korea decides.
        let just_after_midnight = date(2026, 11, 25)
            .at(0, 30, 0, 0)
            .to_zoned(jiff::tz::TimeZone::fixed(iamport_client::korea::KST))
            .unwrap()
            .timestamp();
        assert!(p.check_at(&born(birth), just_after_midnight).is_ok());
        // Leap-day birthdays.
        let leap = date(2004, 2, 29);
        assert!(
            p.check_at(&born(leap), korea_noon(date(2023, 2, 28)))
                .is_err()
        );
        assert!(
            p.check_at(&born(leap), korea_noon(date(2023, 3, 1)))
                .is_ok()
        );
    }

    #[test]
    fn freshness_foreigners_and_missing_data() {
        let c = born(date(1990, 1, 1));
        let at = c.certified_at.unwrap();
        let fresh = Policy::new().fresh_within(Duration::from_secs(600));
        assert!(fresh.check_at(&c, at + Duration::from_secs(600)).is_ok());
        assert!(matches!(
            fresh.check_at(&c, at + Duration::from_secs(601)),
            Err(PolicyViolation::Stale { .. })
        ));
        let mut foreign = c.clone();
        foreign.foreigner = Some(true);
        assert!(Policy::new().check(&foreign).is_ok());
        assert_eq!(
            Policy::new().foreigners(false).check(&foreign),
            Err(PolicyViolation::Foreigner)
        );
        let mut unknown = c.clone();
        unknown.birth_date = None;
        unknown.certified_at = None;
        assert!(Policy::new().check(&unknown).is_ok());
        assert_eq!(
            Policy::new().min_age(19).check(&unknown),
            Err(PolicyViolation::BirthDateUnknown)
        );
        assert_eq!(
            fresh.check(&unknown),
            Err(PolicyViolation::CertifiedAtUnknown)
        );
        let mut failed = c;
        failed.certified = false;
        assert_eq!(
            Policy::new().check(&failed),
            Err(PolicyViolation::NotCertified)
        );
    }

    #[test]
    #[should_panic(expected = "min_birth_year is after max_birth_year")]
    fn contradictory_years_panic() {
        let _ = Policy::new().max_birth_year(1990).min_birth_year(2000);
    }
}
