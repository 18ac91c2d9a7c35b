//! Store keys: a person's key is HMAC-SHA256 of their CI under the application's secret,
//! never the CI itself; and the reservation tokens that prove who holds a key.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use iamport_client::Error;
use iamport_client::Secret;

/// The environment variable every part of the workspace reads the key secret from — the app
/// ([`StoreKeys::from_env`]), the `iamport-unique` command and the soak — by one function.
pub const KEY_SECRET_ENV: &str = "UNIQUE_KEY_SECRET";

/// A person's key in a unique store: HMAC-SHA256(secret, CI). `Debug` shows only a prefix.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters (how the Redis stores name keys).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (either case), as printed by [`to_hex`](Self::to_hex).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(bytes))
    }

    /// A key from raw bytes (for stores reading keys back, and tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The first 8 hex digits: enough to find the key in a store, useless to find the person.
    pub fn prefix(&self) -> String {
        self.to_hex()[..8].to_owned()
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({}…)", self.prefix())
    }
}

/// Random bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

/// Turns CIs into [`StoreKey`]s with an application secret. Keep the secret stable
/// (changing it makes every existing account look new) and out of the source code: in a
/// secret manager or a file only the app can read, given to the app as `UNIQUE_KEY_SECRET`.
///
/// Every way to build one refuses a secret shorter than [`MIN_KEY_SECRET_LEN`](crate::MIN_KEY_SECRET_LEN) bytes, and
/// [`new`](Self::new) refuses one with whitespace at either end, which
/// [`from_env`](Self::from_env) trims: a secret file's trailing newline therefore gives the
/// same keys in the app and in the `iamport-unique` command, or none at all — never two
/// sets of keys for one secret.
#[derive(Clone)]
pub struct StoreKeys {
    mac: Hmac<Sha256>,
}

impl StoreKeys {
    /// Keys under `secret`: at least [`MIN_KEY_SECRET_LEN`](crate::MIN_KEY_SECRET_LEN) bytes (`openssl rand -hex 32`),
    /// without whitespace at either end.
    pub fn new(secret: &Secret) -> Result<Self, Error> {
        Self::named(secret, "the unique key secret")
    }

    /// Keys under the secret in `UNIQUE_KEY_SECRET` ([`KEY_SECRET_ENV`]), trimmed: the one
    /// function the app, the `iamport-unique` command and the soak read it with.
    pub fn from_env() -> Result<Self, Error> {
        Self::named(&Secret::key_from_env(KEY_SECRET_ENV)?, KEY_SECRET_ENV)
    }

    fn named(secret: &Secret, name: &str) -> Result<Self, Error> {
        let value = secret.expose();
        if value.trim() != value {
            return Err(Error::Config(format!(
                "{name} begins or ends with whitespace (a newline from a file?); \
                 trim it, as reading it from {KEY_SECRET_ENV} does"
            )));
        }
        secret.check_key_length(name)?;
        Ok(Self::from_bytes(value.as_bytes()))
    }

    fn from_bytes(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Keys under a random secret: fine for a [`MemoryStore`](super::MemoryStore), whose keys
    /// die with the process.
    pub fn random() -> Self {
        Self::from_bytes(&random_bytes::<32>())
    }

    /// The key of the person with this CI in the default scope: HMAC-SHA256(secret, CI).
    pub fn key_for(&self, ci: &str) -> StoreKey {
        self.key_in(None, ci)
    }

    /// The key of the person with this CI in `scope` (`None`: the default scope, the same as
    /// [`key_for`](Self::key_for)). A named scope `s` keys HMAC-SHA256(secret, `0x00` ‖ s ‖
    /// `0x00` ‖ CI): no CI can collide with a scoped input, as a CI never starts with `0x00`.
    pub fn key_in(&self, scope: Option<&str>, ci: &str) -> StoreKey {
        let mut mac = self.mac.clone();
        if let Some(scope) = scope {
            mac.update(&[0]);
            mac.update(scope.as_bytes());
            mac.update(&[0]);
        }
        mac.update(ci.as_bytes());
        StoreKey(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKeys(<redacted>)")
    }
}

/// Proof of holding a reservation: only its holder can commit or release it. Chosen by the
/// caller *before* [`UniqueStore::reserve`](super::UniqueStore::reserve), so a reservation
/// whose answer was lost can still be released.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationToken(u128);

impl ReservationToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn random() -> Self {
        Self(u128::from_le_bytes(random_bytes::<16>()))
    }

    /// The token as 32 hex digits (how stores persist it).
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses [`to_hex`](Self::to_hex)'s output.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 32 {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(Self)
    }
}

impl fmt::Debug for ReservationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReservationToken({:08x}…)", (self.0 >> 96) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef-a";

    fn keys(secret: &str) -> StoreKeys {
        StoreKeys::new(&Secret::new(secret)).unwrap()
    }

    #[test]
    fn keys_are_keyed_and_stable() {
        let (a, b) = (keys(A), keys(&A.replace('a', "b")));
        let ci = "CI-VALUE-88-CHARS";
        assert_eq!(a.key_for(ci), a.key_for(ci));
        assert_ne!(a.key_for(ci), b.key_for(ci));
        assert_ne!(a.key_for(ci), a.key_for("other"));
        // Against an independently computed HMAC-SHA256.
        let mut mac = Hmac::<Sha256>::new_from_slice(A.as_bytes()).unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        let expected = StoreKey(mac.finalize().into_bytes().into());
        assert_eq!(
            a.key_for("The quick brown fox jumps over the lazy dog"),
            expected
        );
        assert!(!format!("{a:?} {:?}", a.key_for(ci)).contains(ci));
    }

    #[test]
    fn every_way_to_build_keys_refuses_a_short_or_padded_secret() {
        let short = StoreKeys::new(&Secret::new("too short"))
            .unwrap_err()
            .to_string();
        assert!(short.contains("9 bytes long"), "{short}");
        let padded = StoreKeys::new(&Secret::new(format!("{A}\n")))
            .unwrap_err()
            .to_string();
        assert!(padded.contains("whitespace"), "{padded}");
        assert!(
            !padded.contains(A),
            "the secret is never in a message: {padded}"
        );
    }

    #[test]
    fn scopes_are_separate_keyspaces() {
        let keys = keys(A);
        let ci = "CI-VALUE";
        assert_eq!(keys.key_in(None, ci), keys.key_for(ci));
        assert_ne!(keys.key_in(Some("signup"), ci), keys.key_for(ci));
        assert_ne!(
            keys.key_in(Some("signup"), ci),
            keys.key_in(Some("vote"), ci)
        );
        // The derivation is HMAC(secret, 0x00 || scope || 0x00 || CI), independently computed.
        let mut mac = Hmac::<Sha256>::new_from_slice(A.as_bytes()).unwrap();
        mac.update(b"\0signup\0CI-VALUE");
        let expected = StoreKey(mac.finalize().into_bytes().into());
        assert_eq!(keys.key_in(Some("signup"), ci), expected);
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let key = StoreKeys::random().key_for("x");
        assert_eq!(StoreKey::from_hex(&key.to_hex()), Some(key.clone()));
        assert_eq!(StoreKey::from_hex(&key.to_hex().to_uppercase()), Some(key));
        assert_eq!(StoreKey::from_hex("abc"), None);
        assert_eq!(StoreKey::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn tokens_round_trip() {
        assert_ne!(ReservationToken::random(), ReservationToken::random());
        let t = ReservationToken::random();
        assert_eq!(ReservationToken::from_hex(&t.to_hex()), Some(t));
    }
}
