//! A shallow, borrowed JSON tree for reading PortOne's answers in one pass.
//!
//! `serde_json::Value` would do, but it copies every key and string into its own allocation
//! and every object into a `BTreeMap`, then the tolerant reader ([`Record`](super::Record))
//! copies the few fields it keeps once more. Here strings without escapes borrow from the
//! body, objects are a `Vec` of their entries in order (a PortOne record has about twenty:
//! a scan is cheaper than a tree), and arrays — which no field read from a PortOne record
//! is — are skipped, not kept. A duplicated key reads as its last value, as with
//! `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One JSON value, borrowing its strings from the body where it can.
#[derive(Debug, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    /// Every integer that fits an `i64`.
    Int(i64),
    /// Integers above `i64::MAX`, and fractions: never read as a field's value, only told apart.
    OtherNumber,
    Str(Cow<'a, str>),
    /// An array; its elements are skipped.
    Array,
    Object(Object<'a>),
}

/// The entries of a JSON object, in their order in the body.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The value of `key` (its last occurrence).
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Takes the value of `key` (its last occurrence) out of the object.
    pub(crate) fn take(&mut self, key: &str) -> Option<Json<'a>> {
        let index = self.0.iter().rposition(|(k, _)| k == key)?;
        Some(std::mem::replace(&mut self.0[index].1, Json::Null))
    }
}

impl<'a> Json<'a> {
    /// Parses a whole body (no trailing bytes, serde_json's depth limit).
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(i64::try_from(v).map_or(Json::OtherNumber, Json::Int))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json<'de>, E> {
        Ok(Json::OtherNumber)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            entries.push((key.0, map.next_value()?));
        }
        Ok(Json::Object(Object(entries)))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_owns_escaped_ones() {
        let body = br#"{"a":"plain","b":"esc\"aped","c\u0041":1,"d":[1,{"x":2}],"e":{"f":null},
            "g":1.5,"h":18446744073709551615,"i":-3,"a":"last"}"#;
        let Json::Object(mut o) = Json::parse(body).unwrap() else {
            panic!("an object")
        };
        assert!(matches!(o.get("a"), Some(Json::Str(Cow::Borrowed("last")))));
        assert!(matches!(o.get("b"), Some(Json::Str(Cow::Owned(s))) if s == "esc\"aped"));
        assert_eq!(o.get("cA"), Some(&Json::Int(1)));
        assert_eq!(o.get("d"), Some(&Json::Array));
        assert!(
            matches!(o.get("e"), Some(Json::Object(inner)) if inner.get("f") == Some(&Json::Null))
        );
        assert_eq!(o.get("g"), Some(&Json::OtherNumber));
        assert_eq!(o.get("h"), Some(&Json::OtherNumber));
        assert_eq!(o.get("i").and_then(Json::as_i64), Some(-3));
        assert_eq!(o.take("a").as_ref().and_then(Json::as_str), Some("last"));
        assert_eq!(o.get("missing"), None);
    }

    #[test]
    fn malformed_bodies_fail() {
        for body in [&b"{"[..], b"{\"a\":1} x", b"", b"{\"a\":\"\xff\"}"] {
            assert!(Json::parse(body).is_err(), "{body:?}");
        }
        // Deep nesting never reaches the stack's end: objects stop at serde_json's depth
        // limit, arrays are skipped without recursion.
        let deep = |open: &str, close: &str| {
            format!("{}1{}", open.repeat(100_000), close.repeat(100_000)).into_bytes()
        };
        assert!(Json::parse(&deep("{\"a\":", "}")).is_err());
        assert_eq!(Json::parse(&deep("[", "]")).unwrap(), Json::Array);
    }
}
