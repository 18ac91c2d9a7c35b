//! PortOne v1 wire shapes: the response envelope, the token and the certification object.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::certification::{Carrier, Certification, Gender};
use crate::error::Error;
use crate::korea::birth_date_from_unix;

/// `{"code": 0, "message": null, "response": {…}}`
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    #[serde(default)]
    pub(crate) code: i64,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default = "Option::default")]
    pub(crate) response: Option<T>,
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Decodes a 200 body and unwraps `response`; a non-zero `code` is an [`Error::Api`].
    pub(crate) fn decode_success(body: &[u8]) -> Result<T, Error> {
        let envelope: Self = serde_json::from_slice(body).map_err(|e| Error::malformed_json(&e))?;
        if envelope.code != 0 {
            return Err(Error::Api {
                code: envelope.code,
                message: envelope.message,
            });
        }
        envelope
            .response
            .ok_or_else(|| Error::Malformed("`response` is missing or null".into()))
    }
}

/// PortOne's explanation in an error body, if the body is an envelope at all.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(body)
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

/// `GET /certifications/{imp_uid}` → `response`. Every field but the id is optional on the
/// wire (nulls and absent fields both happen); unknown fields are ignored. Deliberately no
/// `Debug`: it holds personal data.
#[derive(Deserialize)]
pub(crate) struct V1Certification {
    imp_uid: String,
    merchant_uid: Option<String>,
    pg_tid: Option<String>,
    pg_provider: Option<String>,
    name: Option<String>,
    gender: Option<String>,
    birthday: Option<String>,
    birth: Option<i64>,
    foreigner: Option<bool>,
    foreigner_v2: Option<bool>,
    phone: Option<String>,
    carrier: Option<String>,
    certified: Option<bool>,
    certified_at: Option<i64>,
    unique_key: Option<String>,
    unique_in_site: Option<String>,
    origin: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl V1Certification {
    pub(crate) fn into_certification(self) -> Result<Certification, Error> {
        // `birthday` ("YYYY-MM-DD") is authoritative; `birth` (midnight KST) is the fallback
        // for records older than the field.
        let birth_date = match non_empty(self.birthday) {
            Some(text) => Some(
                text.parse()
                    .map_err(|_| Error::Malformed("`birthday` is not a YYYY-MM-DD date".into()))?,
            ),
            None => match self.birth {
                Some(seconds) => Some(birth_date_from_unix(seconds).ok_or_else(|| {
                    Error::Malformed("`birth` is out of the representable range".into())
                })?),
                None => None,
            },
        };
        let certified_at = match self.certified_at {
            Some(seconds) if seconds > 0 => Some(
                jiff::Timestamp::from_second(seconds)
                    .map_err(|_| Error::Malformed("`certified_at` is out of range".into()))?,
            ),
            _ => None,
        };
        let mut cert = Certification::new(self.imp_uid, self.certified.unwrap_or(false));
        cert.merchant_uid = non_empty(self.merchant_uid);
        cert.pg_provider = non_empty(self.pg_provider);
        cert.pg_tid = non_empty(self.pg_tid);
        cert.name = non_empty(self.name);
        cert.gender = self.gender.as_deref().and_then(Gender::from_wire);
        cert.birth_date = birth_date;
        cert.phone = non_empty(self.phone);
        cert.carrier = non_empty(self.carrier).map(|c| Carrier::from_wire(&c));
        // `foreigner_v2` is null when the merchant has no foreigner contract, while
        // `foreigner` is then always `false`: prefer the one that can say "unknown".
        cert.foreigner = match (self.foreigner_v2, self.foreigner) {
            (Some(v2), _) => Some(v2),
            (None, Some(true)) => Some(true),
            _ => None,
        };
        cert.certified_at = certified_at;
        cert.unique_key = non_empty(self.unique_key);
        cert.unique_in_site = non_empty(self.unique_in_site);
        cert.origin = non_empty(self.origin);
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn decode(json: &str) -> Result<Certification, Error> {
        Envelope::<V1Certification>::decode_success(json.as_bytes())?.into_certification()
    }

    #[test]
    fn full_record() {
        let c = decode(
            r#"{"code":0,"message":null,"response":{"imp_uid":"imp_123456789012",
            "merchant_uid":"m-1","pg_tid":"t","pg_provider":"danal","name":"홍길동",
            "gender":"male","birthday":"1980-04-28","birth":325695600,"foreigner":false,
            "foreigner_v2":null,"phone":"01012345678","carrier":"LGT_MVNO","certified":true,
            "certified_at":1700000000,"unique_key":"ci","unique_in_site":"di",
            "origin":"https://shop.example/signup","brand_new_field":{"x":1}}}"#,
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
    fn malformed_values_do_not_echo_input() {
        let err = decode(r#"{"code":0,"response":{"imp_uid":"imp_1","name":12345678}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("12345678"), "{err}");
        let err = decode(r#"{"code":0,"response":{"imp_uid":"imp_1","birthday":"1990-13-45"}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("1990"), "{err}");
    }

    #[test]
    fn nonzero_code_is_an_api_error() {
        let err = decode(r#"{"code":-1,"message":"nope","response":null}"#).err();
        assert!(matches!(err, Some(Error::Api { code: -1, .. })));
    }
}
