//! `IdentityVerificationId`: a PortOne v2 verification id, chosen by the merchant.

use std::fmt;

use crate::id::InvalidId;

/// The longest v2 id accepted, in bytes.
pub const MAX_IDENTITY_VERIFICATION_ID_LEN: usize = 256;

/// A PortOne v2 `identityVerificationId`. The merchant chooses it, so almost any string is
/// valid: it must be non-empty, at most [`MAX_IDENTITY_VERIFICATION_ID_LEN`] bytes, free of
/// control characters, and not `.` or `..` (which URL parsers resolve as dot segments even
/// percent-encoded). It always goes out as one percent-encoded path segment, so `/`, `?` or
/// `..` inside it cannot reach another endpoint.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdentityVerificationId(Box<str>);

impl IdentityVerificationId {
    /// Parses an id; see the type's docs for what is accepted.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if value.is_empty() {
            return Err(InvalidId::Empty);
        }
        if value.len() > MAX_IDENTITY_VERIFICATION_ID_LEN {
            return Err(InvalidId::TooLong {
                len: value.len(),
                max: MAX_IDENTITY_VERIFICATION_ID_LEN,
            });
        }
        if value == "." || value == ".." {
            return Err(InvalidId::DotSegment);
        }
        if let Some((index, _)) = value.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidId::ForbiddenCharacter { index });
        }
        Ok(Self(value.into()))
    }

    /// The id as the merchant chose it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for IdentityVerificationId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse(s)
    }
}

impl fmt::Debug for IdentityVerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityVerificationId({:?})", self.0)
    }
}

impl fmt::Display for IdentityVerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids() {
        for ok in [
            "identity-verification-0001",
            "주문/2024/1",
            "a b",
            "../x",
            "imp_1",
        ] {
            assert!(IdentityVerificationId::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(IdentityVerificationId::parse(""), Err(InvalidId::Empty));
        for dots in [".", ".."] {
            assert_eq!(
                IdentityVerificationId::parse(dots),
                Err(InvalidId::DotSegment)
            );
        }
        assert!(IdentityVerificationId::parse("...").is_ok());
        assert_eq!(
            IdentityVerificationId::parse("a\nb"),
            Err(InvalidId::ForbiddenCharacter { index: 1 })
        );
        assert_eq!(
            IdentityVerificationId::parse("a\u{7f}"),
            Err(InvalidId::ForbiddenCharacter { index: 1 })
        );
        assert!(matches!(
            IdentityVerificationId::parse(&"x".repeat(257)),
            Err(InvalidId::TooLong { len: 257, max: 256 })
        ));
    }
}
