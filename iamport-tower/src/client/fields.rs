//! Reading PortOne's JSON records field by field, tolerantly.
//!
//! A whole record never fails because of one field: a field that is present but cannot be
//! read (wrong JSON type, a date that is not a date, …) becomes "unknown" (`None`) with a WARN
//! naming the field — never its value, which may be personal data. The rules that need the
//! field then refuse (an age limit without a birth date, `fresh_within` without a completion
//! time), and the others still decide. Both clients read their records through this module.

use jiff::Timestamp;
use jiff::civil::Date;

use super::json::{Json, Object};

/// One JSON object of a PortOne answer, with the path of its fields for log lines.
#[derive(Clone, Copy)]
pub(crate) struct Record<'a> {
    fields: &'a Object<'a>,
    /// Where this object sits, e.g. `verifiedCustomer.` (empty at the top).
    prefix: &'static str,
}

/// Logs that `field` could not be read, naming the field and what was expected only.
pub(crate) fn unreadable(prefix: &str, field: &str, expected: &str) {
    tracing::warn!(
        field = %format_args!("{prefix}{field}"),
        expected,
        "PortOne sent a field this client cannot read; treating it as unknown"
    );
}

impl<'a> Record<'a> {
    pub(crate) fn new(fields: &'a Object<'a>) -> Self {
        Self { fields, prefix: "" }
    }

    /// The value of `field`, `None` when absent or `null`.
    fn get(&self, field: &str) -> Option<&'a Json<'a>> {
        self.fields.get(field).filter(|v| **v != Json::Null)
    }

    /// A non-empty string.
    pub(crate) fn string(&self, field: &str) -> Option<String> {
        self.str(field).map(str::to_owned)
    }

    /// A non-empty string, borrowed from the record.
    pub(crate) fn str(&self, field: &str) -> Option<&'a str> {
        match self.get(field)? {
            Json::Str(s) if s.is_empty() => None,
            Json::Str(s) => Some(s),
            _ => {
                unreadable(self.prefix, field, "a string");
                None
            }
        }
    }

    pub(crate) fn bool(&self, field: &str) -> Option<bool> {
        match self.get(field)? {
            Json::Bool(b) => Some(*b),
            _ => {
                unreadable(self.prefix, field, "a boolean");
                None
            }
        }
    }

    pub(crate) fn integer(&self, field: &str) -> Option<i64> {
        match self.get(field)?.as_i64() {
            Some(n) => Some(n),
            None => {
                unreadable(self.prefix, field, "an integer");
                None
            }
        }
    }

    /// A nested object, e.g. v2's `verifiedCustomer`.
    pub(crate) fn object(&self, field: &'static str, prefix: &'static str) -> Option<Self> {
        match self.get(field)? {
            Json::Object(fields) => Some(Self { fields, prefix }),
            _ => {
                unreadable(self.prefix, field, "an object");
                None
            }
        }
    }

    /// A `yyyy-MM-dd` calendar date.
    pub(crate) fn date(&self, field: &str) -> Option<Date> {
        let text = self.str(field)?;
        match text.parse() {
            Ok(date) => Some(date),
            Err(_) => {
                unreadable(self.prefix, field, "a yyyy-MM-dd date");
                None
            }
        }
    }

    /// An RFC 3339 timestamp, with any number of fraction digits.
    pub(crate) fn timestamp(&self, field: &str) -> Option<Timestamp> {
        let text = self.str(field)?;
        match parse_rfc3339(text) {
            Some(at) => Some(at),
            None => {
                unreadable(self.prefix, field, "an RFC 3339 timestamp");
                None
            }
        }
    }

    /// Unix time in seconds; a number too large to be seconds (after the year 5000) is read
    /// as milliseconds, which some PortOne-compatible backends send.
    pub(crate) fn unix_seconds(&self, field: &str) -> Option<i64> {
        // 100 billion seconds is in the year 5138; 100 billion milliseconds is 1973.
        const MILLIS_FROM: i64 = 100_000_000_000;
        let n = self.integer(field)?;
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

    #[test]
    fn unreadable_fields_are_unknown() {
        let body = br#"{
            "s": 7, "b": "yes", "n": "12", "d": "1990-13-45", "t": "yesterday",
            "ms": 1700000000123, "sec": 1700000000, "neg": -32400,
            "o": [1], "null": null, "empty": "", "f": 1.5, "big": 18446744073709551615
        }"#;
        let Json::Object(fields) = Json::parse(body).unwrap() else {
            panic!("an object")
        };
        let record = Record::new(&fields);
        assert_eq!(record.integer("f"), None);
        assert_eq!(record.integer("big"), None);
        assert_eq!(record.string("s"), None);
        assert_eq!(record.bool("b"), None);
        assert_eq!(record.integer("n"), None);
        assert_eq!(record.date("d"), None);
        assert_eq!(record.timestamp("t"), None);
        assert!(record.object("o", "o.").is_none());
        assert_eq!(record.string("null"), None);
        assert_eq!(record.string("empty"), None);
        assert_eq!(record.unix_seconds("ms"), Some(1_700_000_000));
        assert_eq!(record.unix_seconds("sec"), Some(1_700_000_000));
        assert_eq!(record.unix_seconds("neg"), Some(-32_400));
    }
}
