//! PortOne v1 wire shapes: the response envelope, the token and the certification object,
//! read with serde. Every field of a certification is [`Lenient`]: unreadable is unknown.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::lenient::{Lenient, Object, unreadable};
use crate::certification::{Carrier, Certification, Gender};
use crate::error::Error;
use crate::korea::{birth_date_from_unix, plausible_birth_date, plausible_completion};

/// `{"code": 0, "message": null, "response": {…}}`.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Envelope<T> {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Lenient<String>,
    #[serde(default)]
    response: Lenient<Object<T>>,
}

/// The `response` of a 200 answer. A non-zero `code` is an [`Error::Api`]; a missing or
/// unreadable `response` is [`Error::Malformed`] (there is no record to read at all), as is
/// a body that is not a JSON object, or whose `code` is not an integer.
pub(crate) fn decode_success<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let Object(envelope): Object<Envelope<T>> =
        serde_json::from_slice(body).map_err(|e| Error::malformed_json(&e))?;
    let code = envelope.code.unwrap_or(0);
    if code != 0 {
        return Err(Error::Api {
            code,
            message: envelope.message.read("message", "a string"),
        });
    }
    match envelope.response {
        Lenient::Value(Object(response)) => Ok(response),
        _ => Err(Error::Malformed(
            "`response` is missing or unreadable in a code 0 answer".into(),
        )),
    }
}

/// PortOne's explanation in an error body, if the body is an envelope at all.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Message {
        message: Option<String>,
    }
    serde_json::from_slice::<Message>(body)
        .ok()
        .and_then(|e| e.message)
}

/// `POST /users/getToken` → `response` (every field required).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) now: i64,
    pub(crate) expired_at: i64,
}

impl TokenResponse {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, Error> {
        decode_success(body)
    }
}

/// `GET /certifications/{imp_uid}` → `response`: every field but the id may be absent,
/// `null` or unreadable; unknown fields are ignored. A field named twice makes the record
/// malformed (serde's duplicate-field error), never one of its two values.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireCertification {
    imp_uid: Lenient<String>,
    merchant_uid: Lenient<String>,
    pg_provider: Lenient<String>,
    pg_tid: Lenient<String>,
    name: Lenient<String>,
    gender: Lenient<String>,
    birthday: Lenient<String>,
    birth: Lenient<i64>,
    phone: Lenient<String>,
    carrier: Lenient<String>,
    foreigner: Lenient<bool>,
    foreigner_v2: Lenient<bool>,
    certified: Lenient<bool>,
    certified_at: Lenient<i64>,
    unique_key: Lenient<String>,
    unique_in_site: Lenient<String>,
    origin: Lenient<String>,
}

/// The record as a [`Certification`]; it must be the one asked for.
pub(crate) fn certification(
    response: WireCertification,
    requested: &str,
) -> Result<Certification, Error> {
    let r = response;
    let id = r.imp_uid.string("imp_uid");
    if id.as_deref() != Some(requested) {
        // Neither id is logged: both are bearer credentials.
        tracing::error!(
            "PortOne answered a certification lookup with a record for another id; refusing it"
        );
        return Err(Error::Malformed(
            "the record's `imp_uid` is not the id that was asked for".into(),
        ));
    }
    // `birthday` ("YYYY-MM-DD") is authoritative; `birth` (midnight KST) is the fallback
    // for records older than the field, or whose `birthday` cannot be read.
    let birth_date = match r.birthday.date("birthday") {
        Some(date) => plausible_birth_date("birthday", date),
        None => r.birth.unix_seconds("birth").and_then(|seconds| {
            let Some(date) = birth_date_from_unix(seconds) else {
                unreadable("birth", "a Unix time");
                return None;
            };
            plausible_birth_date("birth", date)
        }),
    };
    let certified_at = r
        .certified_at
        .unix_seconds("certified_at")
        .filter(|seconds| *seconds > 0)
        .and_then(|seconds| {
            let Ok(at) = jiff::Timestamp::from_second(seconds) else {
                unreadable("certified_at", "a Unix time");
                return None;
            };
            plausible_completion("certified_at", at)
        });
    let mut cert = Certification::new(requested, r.certified.bool("certified").unwrap_or(false));
    cert.merchant_uid = r.merchant_uid.string("merchant_uid");
    cert.pg_provider = r.pg_provider.string("pg_provider");
    cert.pg_tid = r.pg_tid.string("pg_tid");
    cert.name = r.name.string("name");
    cert.gender = r
        .gender
        .string("gender")
        .as_deref()
        .and_then(Gender::from_wire);
    cert.birth_date = birth_date;
    cert.phone = r.phone.string("phone");
    cert.carrier = r
        .carrier
        .string("carrier")
        .as_deref()
        .map(Carrier::from_wire);
    // `foreigner_v2` is null when the merchant has no foreigner contract, while
    // `foreigner` is then always `false`: prefer the one that can say "unknown".
    cert.foreigner = match (
        r.foreigner_v2.bool("foreigner_v2"),
        r.foreigner.bool("foreigner"),
    ) {
        (Some(v2), _) => Some(v2),
        (None, Some(true)) => Some(true),
        _ => None,
    };
    cert.certified_at = certified_at;
    cert.ci = r.unique_key.string("unique_key");
    cert.di = r.unique_in_site.string("unique_in_site");
    cert.origin = r.origin.string("origin");
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn decode_as(json: &str, requested: &str) -> Result<Certification, Error> {
        certification(decode_success(json.as_bytes())?, requested)
    }

    fn decode(json: &str) -> Result<Certification, Error> {
        decode_as(json, "imp_1")
    }

    #[test]
    fn full_record() {
        let c = decode_as(
            r#"{"code":0,"message":null,"response":{"imp_uid":"imp_123456789012",
            "merchant_uid":"m-1","pg_tid":"t","pg_provider":"danal","name":"홍길동",
            "gender":"male","birthday":"1980-04-28","birth":325695600,"foreigner":false,
            "foreigner_v2":null,"phone":"01012345678","carrier":"LGT_MVNO","certified":true,
            "certified_at":1700000000,"unique_key":"ci","unique_in_site":"di",
            "origin":"https://shop.example/signup","brand_new_field":{"x":1}}}"#,
            "imp_123456789012",
        )
        .unwrap();
        assert_eq!(c.birth_date, Some(date(1980, 4, 28)));
        assert_eq!(c.carrier, Some(Carrier::LgUplusMvno));
        assert_eq!(c.foreigner, None);
        assert!(c.certified);
        assert_eq!(c.certified_at.unwrap().as_second(), 1_700_000_000);
    }

    #[test]
    fn minimal_record_with_only_birth() {
        let c = decode(
            r#"{"code":0,"message":null,"response":{"imp_uid":"imp_1","birth":946652400,
            "certified":true,"gender":null,"unique_in_site":null}}"#,
        )
        .unwrap();
        assert_eq!(c.birth_date, Some(date(2000, 1, 1)));
        assert_eq!(c.gender, None);
        assert_eq!(c.phone, None);
    }

    #[test]
    fn unreadable_fields_are_unknown_not_fatal() {
        let c = decode(
            r#"{"code":0,"response":{"imp_uid":"imp_1","certified":true,"name":12345678,
            "birthday":"1990-13-45","birth":631119600,"certified_at":1700000000123,
            "unique_key":["x"],"foreigner_v2":"no"}}"#,
        )
        .unwrap();
        assert!(c.certified);
        assert_eq!(c.name, None);
        // An unreadable `birthday` falls back to `birth`.
        assert_eq!(c.birth_date, Some(date(1990, 1, 1)));
        // Milliseconds are recognized.
        assert_eq!(c.certified_at.unwrap().as_second(), 1_700_000_000);
        assert_eq!(c.ci, None);
        assert_eq!(c.foreigner, None);
        let c = decode(r#"{"code":0,"response":{"imp_uid":"imp_1","certified":"yes"}}"#).unwrap();
        assert!(!c.certified, "an unreadable `certified` is not `true`");
    }

    #[test]
    fn implausible_dates_are_unknown() {
        let c = decode(
            r#"{"code":0,"response":{"imp_uid":"imp_1","certified":true,"birth":-99999999999,
            "certified_at":4102444800}}"#,
        )
        .unwrap();
        assert_eq!((c.birth_date, c.certified_at), (None, None));
        let c = decode(
            r#"{"code":0,"response":{"imp_uid":"imp_1","certified":true,"birthday":"1899-12-31",
            "birth":-2209021200}}"#,
        )
        .unwrap();
        assert_eq!(
            c.birth_date, None,
            "an implausible `birthday` is not replaced by `birth`"
        );
    }

    #[test]
    fn deep_nesting_never_reaches_the_stacks_end() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let deep = format!("{}1{}", open.repeat(100_000), close.repeat(100_000));
            let body = format!(r#"{{"code":0,"response":{{"imp_uid":"imp_1","x":{deep}}}}}"#);
            // Refused or read; never a crash.
            let _ = decode(&body);
            let body = format!(r#"{{"code":0,"response":{{"imp_uid":"imp_1","name":{deep}}}}}"#);
            let _ = decode(&body);
        }
    }

    #[test]
    fn a_field_named_twice_or_an_array_is_malformed() {
        let err = decode(r#"{"code":0,"response":{"imp_uid":"imp_1","imp_uid":"imp_2"}}"#);
        assert!(matches!(err, Err(Error::Malformed(_))), "{err:?}");
        let err = decode(r#"{"code":0,"response":["imp_1",null,null,null,null,null,null]}"#);
        assert!(matches!(err, Err(Error::Malformed(_))), "{err:?}");
        let err = decode(r#"[0,null,{"imp_uid":"imp_1","certified":true}]"#);
        assert!(matches!(err, Err(Error::Malformed(_))), "{err:?}");
    }

    #[test]
    fn another_records_id_is_refused() {
        let err = decode(r#"{"code":0,"response":{"imp_uid":"imp_2","certified":true}}"#);
        assert!(matches!(err, Err(Error::Malformed(_))), "{err:?}");
        let err = decode(r#"{"code":0,"response":{"certified":true}}"#);
        assert!(matches!(err, Err(Error::Malformed(_))), "{err:?}");
    }

    #[test]
    fn nonzero_code_is_an_api_error_and_a_missing_response_malformed() {
        let err = decode(r#"{"code":-1,"message":"nope","response":null}"#).err();
        assert!(matches!(err, Some(Error::Api { code: -1, .. })));
        let err = decode(r#"{"code":0,"message":null}"#).err();
        assert!(matches!(err, Some(Error::Malformed(_))));
        let err = decode(r#"[1]"#).err();
        assert!(matches!(err, Some(Error::Malformed(_))));
    }
}
