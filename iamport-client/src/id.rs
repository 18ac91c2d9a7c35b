//! Verification ids: the v1 `imp_uid` syntax, and why an id is refused before any upstream
//! call ([`InvalidId`]).
//!
//! `ImpUid`: a PortOne v1 verification id, parsed before it goes anywhere near a URL.

use std::fmt;
use std::str::FromStr;

/// The longest id accepted, in bytes. Real ids are `imp_` + 12 digits.
pub const MAX_IMP_UID_LEN: usize = 64;

/// A PortOne v1 certification id (`imp_uid`): `imp_` followed by ASCII letters and digits,
/// at most [`MAX_IMP_UID_LEN`] bytes.
///
/// The browser hands this value to the server, so it is attacker-controlled. Parsing refuses
/// anything that could change the meaning of a URL (`/`, `%`, `..`, whitespace, non-ASCII)
/// before any network call, and the client still percent-encodes it as one path segment.
///
/// ```
/// use iamport_client::ImpUid;
///
/// let id: ImpUid = "imp_123456789012".parse().unwrap();
/// assert_eq!(id.as_str(), "imp_123456789012");
/// assert!("imp_1/../../payments".parse::<ImpUid>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImpUid(Box<str>);

impl ImpUid {
    /// Parses an id; see the type's docs for what is accepted.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if value.is_empty() {
            return Err(InvalidId::Empty);
        }
        if value.len() > MAX_IMP_UID_LEN {
            return Err(InvalidId::TooLong {
                len: value.len(),
                max: MAX_IMP_UID_LEN,
            });
        }
        let Some(rest) = value.strip_prefix("imp_") else {
            return Err(InvalidId::MissingPrefix);
        };
        if rest.is_empty() {
            return Err(InvalidId::Empty);
        }
        if let Some(index) = rest.bytes().position(|b| !b.is_ascii_alphanumeric()) {
            return Err(InvalidId::ForbiddenCharacter { index: index + 4 });
        }
        Ok(Self(value.into()))
    }

    /// The id as sent by PortOne.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImpUid {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for ImpUid {
    type Error = InvalidId;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl AsRef<str> for ImpUid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ImpUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An id is not personal data; it is what support needs to find a record.
        write!(f, "ImpUid({})", self.0)
    }
}

impl fmt::Display for ImpUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a valid verification id ([`ImpUid`], or a v2 id). The message never
/// repeats the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// Nothing after (or no) `imp_`.
    #[error("the verification id is empty")]
    Empty,
    /// Longer than allowed.
    #[error("the verification id is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// The length seen, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// Does not start with `imp_`.
    #[error("imp_uid must start with `imp_`")]
    MissingPrefix,
    /// A character not allowed in this kind of id (for `imp_uid`: anything but ASCII letters
    /// and digits after the prefix).
    #[error("the verification id has a forbidden character at byte {index}")]
    ForbiddenCharacter {
        /// Byte offset of the first offending character.
        index: usize,
    },
    /// `.` or `..`: a path segment URL parsers resolve as "here" / "up", even
    /// percent-encoded, so the request would reach another endpoint.
    #[error("the verification id is `.` or `..`, which cannot be a URL path segment")]
    DotSegment,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_shapes() {
        for ok in ["imp_123456789012", "imp_a1B2", "imp_1"] {
            assert!(ImpUid::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_hostile_input() {
        let long = format!("imp_{}", "1".repeat(61));
        let cases: &[(&str, InvalidId)] = &[
            ("", InvalidId::Empty),
            ("imp_", InvalidId::Empty),
            ("123", InvalidId::MissingPrefix),
            ("IMP_123", InvalidId::MissingPrefix),
            (
                "imp_1/../../payments",
                InvalidId::ForbiddenCharacter { index: 5 },
            ),
            ("imp_1%2F..", InvalidId::ForbiddenCharacter { index: 5 }),
            ("imp_1 2", InvalidId::ForbiddenCharacter { index: 5 }),
            ("imp_..", InvalidId::ForbiddenCharacter { index: 4 }),
            ("imp_12\n", InvalidId::ForbiddenCharacter { index: 6 }),
            ("imp_홍길동", InvalidId::ForbiddenCharacter { index: 4 }),
            ("imp_1?x=1", InvalidId::ForbiddenCharacter { index: 5 }),
            (&long, InvalidId::TooLong { len: 65, max: 64 }),
        ];
        for (input, want) in cases {
            assert_eq!(ImpUid::parse(input).as_ref(), Err(want), "{input:?}");
        }
        assert!(ImpUid::parse(&long[..64]).is_ok());
    }
}
