//! PortOne v1 wire shapes: the response envelope, the token and the certification object.

use serde::Deserialize;

use super::fields::{Record, unreadable};
use super::json::{Json, Object};
use crate::certification::{Carrier, Certification, Gender};
use crate::error::Error;
use crate::korea::birth_date_from_unix;

/// `{"code": 0, "message": null, "response": {…}}`: the `response` object of a 200 answer.
/// A non-zero `code` is an [`Error::Api`]; a missing or non-object `response` is
/// [`Error::Malformed`] (there is no record to read at all).
pub(crate) fn decode_success(body: &[u8]) -> Result<Object<'_>, Error> {
    let envelope = Json::parse(body).map_err(|e| Error::malformed_json(&e))?;
    let Json::Object(mut envelope) = envelope else {
        return Err(Error::Malformed("the answer is not a JSON object".into()));
    };
    let code = match envelope.get("code") {
        None | Some(Json::Null) => 0,
        Some(code) => code
            .as_i64()
            .ok_or_else(|| Error::Malformed("`code` is not an integer".into()))?,
    };
    if code != 0 {
        return Err(Error::Api {
            code,
            message: envelope
                .get("message")
                .and_then(Json::as_str)
                .map(str::to_owned),
        });
    }
    match envelope.take("response") {
        Some(Json::Object(response)) => Ok(response),
        _ => Err(Error::Malformed(
            "`response` is missing or not an object in a code 0 answer".into(),
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

/// `POST /users/getToken` → `response`.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) now: i64,
    pub(crate) expired_at: i64,
}

impl TokenResponse {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, Error> {
        let response = decode_success(body)?;
        let integer = |field: &str| {
            response.get(field).and_then(Json::as_i64).ok_or_else(|| {
                Error::Malformed(format!(
                    "the token's `{field}` is missing or not an integer"
                ))
            })
        };
        Ok(Self {
            access_token: response
                .get("access_token")
                .and_then(Json::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::Malformed("the token's `access_token` is missing or not a string".into())
                })?,
            now: integer("now")?,
            expired_at: integer("expired_at")?,
        })
    }
}

/// `GET /certifications/{imp_uid}` → `response`, read field by field: every field but the
/// id may be absent, `null` or unreadable (then unknown, with a WARN); unknown fields are
/// ignored. The record must be the one asked for.
pub(crate) fn certification(
    response: &Object<'_>,
    requested: &str,
) -> Result<Certification, Error> {
    let r = Record::new(response);
    let id = r.str("imp_uid");
    if id != Some(requested) {
        tracing::error!(
            requested,
            received = id.unwrap_or("<none>"),
            "PortOne answered a certification lookup with a record for another id; refusing it"
        );
        return Err(Error::Malformed(
            "the record's `imp_uid` is not the id that was asked for".into(),
        ));
    }
    // `birthday` ("YYYY-MM-DD") is authoritative; `birth` (midnight KST) is the fallback
    // for records older than the field, or whose `birthday` cannot be read.
    let birth_date = r.date("birthday").or_else(|| {
        let seconds = r.unix_seconds("birth")?;
        let date = birth_date_from_unix(seconds);
        if date.is_none() {
            unreadable("", "birth", "a Unix time");
        }
        date
    });
    let certified_at = r
        .unix_seconds("certified_at")
        .filter(|seconds| *seconds > 0)
        .and_then(|seconds| {
            let at = jiff::Timestamp::from_second(seconds).ok();
            if at.is_none() {
                unreadable("", "certified_at", "a Unix time");
            }
            at
        });
    let mut cert = Certification::new(requested, r.bool("certified").unwrap_or(false));
    cert.merchant_uid = r.string("merchant_uid");
    cert.pg_provider = r.string("pg_provider");
    cert.pg_tid = r.string("pg_tid");
    cert.name = r.string("name");
    cert.gender = r.str("gender").and_then(Gender::from_wire);
    cert.birth_date = birth_date;
    cert.phone = r.string("phone");
    cert.carrier = r.str("carrier").map(Carrier::from_wire);
    // `foreigner_v2` is null when the merchant has no foreigner contract, while
    // `foreigner` is then always `false`: prefer the one that can say "unknown".
    cert.foreigner = match (r.bool("foreigner_v2"), r.bool("foreigner")) {
        (Some(v2), _) => Some(v2),
        (None, Some(true)) => Some(true),
        _ => None,
    };
    cert.certified_at = certified_at;
    cert.unique_key = r.string("unique_key");
    cert.unique_in_site = r.string("unique_in_site");
    cert.origin = r.string("origin");
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn decode_as(json: &str, requested: &str) -> Result<Certification, Error> {
        certification(&decode_success(json.as_bytes())?, requested)
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
        assert_eq!(c.unique_key, None);
        assert_eq!(c.foreigner, None);
        let c = decode(r#"{"code":0,"response":{"imp_uid":"imp_1","certified":"yes"}}"#).unwrap();
        assert!(!c.certified, "an unreadable `certified` is not `true`");
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
