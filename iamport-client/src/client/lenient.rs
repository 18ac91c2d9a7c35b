//! Reading PortOne's JSON records field by field, tolerantly.
//!
//! A whole record never fails because of one field: each field of a wire struct is a
//! [`Lenient`], which accepts any JSON value and keeps it only if it is of the expected
//! type. A field that is present but cannot be read (wrong JSON type, a date that is not a
//! date, …) becomes "unknown" (`None`) with a WARN naming the field — never its value, which
//! may be personal data. The rules that need the field then refuse (an age limit without a
//! birth date, `fresh_within` without a completion time), and the others still decide. Both
//! clients read their records through this module.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::value::RawValue;

/// One field of a PortOne record: absent (or `null`), a `T`, or something else. Read from
/// the answer's bytes only (it borrows the field's text: `serde_json::from_slice`/`from_str`).
#[derive(Debug, Default)]
pub(crate) enum Lenient<T> {
    /// Absent or `null`.
    #[default]
    Absent,
    Value(T),
    /// Present, but not a `T`.
    Unreadable,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any JSON value is accepted (the document is still checked for syntax and depth),
        // borrowed as its text, then read as a `T` on its own.
        let raw = <&RawValue>::deserialize(deserializer)?;
        if raw.get() == "null" {
            return Ok(Self::Absent);
        }
        Ok(serde_json::from_str(raw.get()).map_or(Self::Unreadable, Self::Value))
    }
}

/// A JSON object read as a `T`. A plain `#[derive(Deserialize)]` struct would also read an
/// array, by position; a PortOne record is always an object.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('{') {
            return Err(serde::de::Error::custom("not a JSON object"));
        }
        serde_json::from_str(raw.get())
            .map(Object)
            .map_err(serde::de::Error::custom)
    }
}

/// Logs that `field` could not be read, naming the field and what was expected only.
pub(crate) fn unreadable(field: &str, expected: &str) {
    tracing::warn!(
        field = %field,
        expected,
        "PortOne sent a field this client cannot read; treating it as unknown"
    );
}

impl<T> Lenient<T> {
    /// The value; `None` when absent or unreadable (then with a WARN naming `field`, which
    /// is expected to be `expected`).
    pub(crate) fn read(self, field: &str, expected: &str) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent => None,
            Self::Unreadable => {
                unreadable(field, expected);
                None
            }
        }
    }
}

impl Lenient<String> {
    /// A non-empty string.
    pub(crate) fn string(self, field: &str) -> Option<String> {
        self.read(field, "a string").filter(|s| !s.is_empty())
    }

    /// A `yyyy-MM-dd` calendar date.
    pub(crate) fn date(self, field: &str) -> Option<Date> {
        let text = self.string(field)?;
        let date = text.parse().ok();
        if date.is_none() {
            unreadable(field, "a yyyy-MM-dd date");
        }
        date
    }

    /// An RFC 3339 timestamp, with any number of fraction digits.
    pub(crate) fn timestamp(self, field: &str) -> Option<Timestamp> {
        let text = self.string(field)?;
        let at = parse_rfc3339(&text);
        if at.is_none() {
            unreadable(field, "an RFC 3339 timestamp");
        }
        at
    }
}

impl Lenient<bool> {
    pub(crate) fn bool(self, field: &str) -> Option<bool> {
        self.read(field, "a boolean")
    }
}

impl Lenient<i64> {
    /// Unix time in seconds; a number too large to be seconds (after the year 5000) is read
    /// as milliseconds, which some PortOne-compatible backends send.
    pub(crate) fn unix_seconds(self, field: &str) -> Option<i64> {
        // 100 billion seconds is in the year 5138; 100 billion milliseconds is 1973.
        const MILLIS_FROM: i64 = 100_000_000_000;
        let n = self.read(field, "an integer")?;
        if n.checked_abs().is_none_or(|abs| abs >= MILLIS_FROM) {
            tracing::debug!(field, "reading a Unix time in milliseconds");
            Some(n.div_euclid(1000))
        } else {
            Some(n)
        }
    }
}

/// RFC 3339 with any number of fraction digits (the grammar allows any; Rust parsers stop at
/// nanoseconds): digits past the ninth are dropped, which truncates toward the past.
pub(crate) fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    if let Ok(at) = text.parse::<Timestamp>() {
        return Some(at);
    }
    let dot = text.find('.')?;
    let digits = text[dot + 1..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits <= 9 {
        return None;
    }
    let trimmed = format!("{}{}", &text[..dot + 10], &text[dot + 1 + digits..]);
    trimmed.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_fraction_digits() {
        let ten = parse_rfc3339("2024-01-01T00:00:01.1234567891Z").unwrap();
        assert_eq!(ten.as_second(), 1_704_067_201);
        assert_eq!(ten.subsec_nanosecond(), 123_456_789);
        let many = parse_rfc3339("2024-01-01T09:00:01.123456789123456+09:00").unwrap();
        assert_eq!(many.as_second(), 1_704_067_201);
        assert!(parse_rfc3339("2024-01-01T00:00:01Z").is_some());
        assert!(parse_rfc3339("2024-01-01t00:00:01z").is_some());
        assert!(parse_rfc3339("2024-01-01").is_none());
        assert!(parse_rfc3339("2024-13-01T00:00:01.1234567891Z").is_none());
        assert!(parse_rfc3339("x.1234567891").is_none());
    }

    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        s: Lenient<String>,
        #[serde(default)]
        b: Lenient<bool>,
        #[serde(default)]
        n: Lenient<i64>,
        #[serde(default)]
        f: Lenient<i64>,
        #[serde(default)]
        big: Lenient<i64>,
        #[serde(default)]
        d: Lenient<String>,
        #[serde(default)]
        t: Lenient<String>,
        #[serde(default)]
        ms: Lenient<i64>,
        #[serde(default)]
        sec: Lenient<i64>,
        #[serde(default)]
        neg: Lenient<i64>,
        #[serde(default)]
        null: Lenient<String>,
        #[serde(default)]
        empty: Lenient<String>,
        #[serde(default)]
        missing: Lenient<String>,
    }

    #[test]
    fn unreadable_fields_are_unknown() {
        let body = br#"{
            "s": 7, "b": "yes", "n": "12", "d": "1990-13-45", "t": "yesterday",
            "ms": 1700000000123, "sec": 1700000000, "neg": -32400,
            "o": [1], "null": null, "empty": "", "f": 1.5, "big": 18446744073709551615
        }"#;
        let r: Fields = serde_json::from_slice(body).unwrap();
        assert_eq!(r.f.read("f", "an integer"), None);
        assert_eq!(r.big.read("big", "an integer"), None);
        assert_eq!(r.s.string("s"), None);
        assert_eq!(r.b.bool("b"), None);
        assert_eq!(r.n.read("n", "an integer"), None);
        assert_eq!(r.d.date("d"), None);
        assert_eq!(r.t.timestamp("t"), None);
        assert_eq!(r.null.string("null"), None);
        assert_eq!(r.empty.string("empty"), None);
        assert_eq!(r.missing.string("missing"), None);
        assert_eq!(r.ms.unix_seconds("ms"), Some(1_700_000_000));
        assert_eq!(r.sec.unix_seconds("sec"), Some(1_700_000_000));
        assert_eq!(r.neg.unix_seconds("neg"), Some(-32_400));
    }
}
