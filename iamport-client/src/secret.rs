//! A string that never shows itself in `Debug`, `Display` or logs.

use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// The least length of a secret that keys an HMAC — `UNIQUE_KEY_SECRET` (the unique
/// store's keys), `BINDING_SECRET` (binding tickets): 32 bytes, the output size of
/// HMAC-SHA256. `openssl rand -hex 32` makes a good one (64 characters).
pub const MIN_KEY_SECRET_LEN: usize = 32;

/// A secret value (API secret, access token, HMAC key).
///
/// `Debug` and `Display` print `Secret(<redacted>)`, so a secret inside a config struct, an
/// error or a `tracing` field cannot leak. Read it with [`Secret::expose`] at the one place
/// it goes on the wire. Cloning is cheap (shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The secret itself. Call it only where the value must be sent.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string (usually a configuration mistake).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret in the environment variable `name`, trimmed; an [`Error::Config`] naming
    /// the variable when it is unset, blank or not UTF-8.
    pub fn from_env(name: &str) -> Result<Self, Error> {
        match env_var(name)? {
            Some(value) => Ok(Self::new(value)),
            None => Err(Error::Config(format!("{name} is not set"))),
        }
    }

    /// A key secret (one that keys an HMAC: `UNIQUE_KEY_SECRET`, `BINDING_SECRET`) from the
    /// environment variable `name`: as [`from_env`](Self::from_env), and at least
    /// [`MIN_KEY_SECRET_LEN`] bytes long. The error names the variable and says how to make
    /// a good value.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), iamport_client::Error> {
    /// // UNIQUE_KEY_SECRET="$(openssl rand -hex 32)"
    /// let key_secret = iamport_client::Secret::key_from_env("UNIQUE_KEY_SECRET")?;
    /// // unset:  invalid configuration: UNIQUE_KEY_SECRET is not set; make one with …
    /// // short:  invalid configuration: UNIQUE_KEY_SECRET is 5 bytes long; a key secret needs …
    /// # Ok(()) }
    /// ```
    pub fn key_from_env(name: &str) -> Result<Self, Error> {
        let secret = Self::from_env(name).map_err(|error| match error {
            Error::Config(message) => Error::Config(format!(
                "{message}; make one with `openssl rand -hex 32` and keep it stable"
            )),
            other => other,
        })?;
        secret.check_key_length(name)?;
        Ok(secret)
    }

    /// Whether this secret is long enough to key an HMAC: at least [`MIN_KEY_SECRET_LEN`]
    /// bytes. The error names `name` (the variable or setting it came from) and says how to
    /// make a good value.
    pub fn check_key_length(&self, name: &str) -> Result<(), Error> {
        let len = self.0.len();
        if len >= MIN_KEY_SECRET_LEN {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{name} is {len} bytes long; a key secret needs at least {MIN_KEY_SECRET_LEN} random \
             bytes: make one with `openssl rand -hex 32` (64 hex characters) and keep it stable"
        )))
    }
}

/// An environment variable: `None` when unset or blank, trimmed, an error when not UTF-8.
/// Both clients' `from_env` and every secret read their variables through this.
pub(crate) fn env_var(name: &str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Config(format!("{name} is not valid UTF-8")))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn key_secrets_are_long_enough() {
        let short = Secret::new("short");
        let message = short
            .check_key_length("UNIQUE_KEY_SECRET")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("UNIQUE_KEY_SECRET is 5 bytes long"),
            "{message}"
        );
        assert!(message.contains("openssl rand -hex 32"), "{message}");
        assert!(
            !message.contains("short"),
            "the value itself is never shown: {message}"
        );
        assert!(Secret::new("x".repeat(32)).check_key_length("K").is_ok());
    }

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
