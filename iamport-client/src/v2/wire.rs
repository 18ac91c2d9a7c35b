//! PortOne v2 wire shapes: the identity verification (tagged by `status`) and error bodies,
//! read with serde, field by field (see the v1 client's [`Lenient`]).

use serde::Deserialize;

use crate::certification::{Carrier, Certification, Gender};
use crate::client::{Lenient, Object, unreadable};
use crate::error::Error;
use crate::korea::{plausible_birth_date, plausible_completion};

/// `{"type": "IDENTITY_VERIFICATION_NOT_FOUND", "message": "…"}`
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) message: Option<String>,
}

/// `GET /identity-verifications/{id}`: the fields read, each tolerant.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Verification {
    status: Lenient<String>,
    id: Lenient<String>,
    custom_data: Lenient<String>,
    channel: Lenient<Object<Channel>>,
    pg_tx_id: Lenient<String>,
    verified_at: Lenient<String>,
    verified_customer: Lenient<Object<Customer>>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Channel {
    pg_provider: Lenient<String>,
    key: Lenient<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Customer {
    id: Lenient<String>,
    name: Lenient<String>,
    operator: Lenient<String>,
    phone_number: Lenient<String>,
    birth_date: Lenient<String>,
    gender: Lenient<String>,
    is_foreigner: Lenient<bool>,
    ci: Lenient<String>,
    di: Lenient<String>,
}

/// `GET /identity-verifications/{id}` → the normalized certification. `VERIFIED` is
/// certified; `READY`, `FAILED` and statuses this version does not know are not. A field that
/// cannot be read is unknown (with a WARN naming it); the record must carry the id asked for.
pub(crate) fn certification(body: &[u8], requested: &str) -> Result<Certification, Error> {
    let Object(r): Object<Verification> =
        serde_json::from_slice(body).map_err(|e| Error::malformed_json(&e))?;
    let verified = r.status.string("status").as_deref() == Some("VERIFIED");
    match r.id.string("id") {
        Some(id) if id == requested => {}
        // Unknown or unfinished: not certified whatever it says; only a claim of
        // `VERIFIED` needs the id to prove it is the record asked for.
        None if !verified => {}
        _ => {
            // Neither id is logged: the ids are bearer credentials.
            tracing::error!(
                "PortOne answered an identity-verification lookup with a record for another id; refusing it"
            );
            return Err(Error::Malformed(
                "the record's `id` is not the id that was asked for".into(),
            ));
        }
    }
    let mut cert = Certification::new(requested, verified);
    cert.custom_data = r.custom_data.string("customData");
    if let Some(Object(channel)) = r.channel.read("channel", "an object") {
        cert.pg_provider = channel
            .pg_provider
            .string("channel.pgProvider")
            .map(|p| p.to_ascii_lowercase());
        cert.channel_key = channel.key.string("channel.key");
    }
    cert.pg_tid = r.pg_tx_id.string("pgTxId");
    if !verified {
        return Ok(cert);
    }
    cert.certified_at = r
        .verified_at
        .timestamp("verifiedAt")
        .and_then(|at| plausible_completion("verifiedAt", at));
    // A verified record without its person (absent or not an object) is logged either way.
    if let Lenient::Value(Object(c)) = r.verified_customer {
        cert.customer_id = c.id.string("verifiedCustomer.id");
        cert.name = c.name.string("verifiedCustomer.name");
        cert.carrier = c
            .operator
            .string("verifiedCustomer.operator")
            .as_deref()
            .map(Carrier::from_wire);
        cert.phone = c.phone_number.string("verifiedCustomer.phoneNumber");
        cert.birth_date = c
            .birth_date
            .date("verifiedCustomer.birthDate")
            .and_then(|date| plausible_birth_date("verifiedCustomer.birthDate", date));
        cert.gender = c
            .gender
            .string("verifiedCustomer.gender")
            .as_deref()
            .and_then(Gender::from_wire);
        cert.foreigner = c.is_foreigner.bool("verifiedCustomer.isForeigner");
        cert.ci = c.ci.string("verifiedCustomer.ci");
        cert.di = c.di.string("verifiedCustomer.di");
    } else {
        unreadable("verifiedCustomer", "an object");
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_as(json: &str, requested: &str) -> Certification {
        certification(json.as_bytes(), requested).unwrap()
    }

    fn decode(json: &str) -> Certification {
        let id = serde_json::from_str::<serde_json::Value>(json).unwrap()["id"]
            .as_str()
            .unwrap_or("req")
            .to_owned();
        decode_as(json, &id)
    }

    #[test]
    fn full_verified_object() {
        let c = decode(
            r#"{"status":"VERIFIED","id":"iv-1","channel":{"type":"LIVE","id":"ch","key":"k",
            "name":"n","pgProvider":"DANAL","pgMerchantId":"m"},"verifiedCustomer":{"id":"cust",
            "name":"홍길동","operator":"LGU_MVNO","phoneNumber":"01000000000","birthDate":"2000-01-01",
            "gender":"OTHER","isForeigner":false,"ci":"CI","di":"DI","futureField":1},
            "customData":"{\"plan\":1}","requestedAt":"2024-01-01T00:00:00Z","updatedAt":"2024-01-01T00:00:01Z",
            "statusChangedAt":"2024-01-01T00:00:01Z","verifiedAt":"2024-01-01T09:00:01+09:00",
            "pgTxId":"tx","pgRawResponse":"{}","version":"V2","brandNew":[1,2]}"#,
        );
        assert!(c.certified);
        assert_eq!(c.id, "iv-1");
        assert_eq!(c.carrier, Some(Carrier::LgUplusMvno));
        assert_eq!(c.gender, Some(Gender::Other));
        assert_eq!(c.birth_date.unwrap().to_string(), "2000-01-01");
        assert_eq!(c.certified_at.unwrap().as_second(), 1_704_067_201);
        assert_eq!(c.pg_provider.as_deref(), Some("danal"));
        assert_eq!(c.foreigner, Some(false));
        assert_eq!(c.customer_id.as_deref(), Some("cust"));
        assert_eq!(c.custom_data.as_deref(), Some(r#"{"plan":1}"#));
        assert_eq!(c.channel_key.as_deref(), Some("k"));
        assert_eq!(c.pg_tid.as_deref(), Some("tx"));
    }

    #[test]
    fn minimal_and_unverified_objects() {
        let c = decode(
            r#"{"status":"VERIFIED","id":"iv-2","verifiedCustomer":{"name":"김"},"requestedAt":"x",
            "updatedAt":"x","statusChangedAt":"x","verifiedAt":"2024-05-05T00:00:00Z","pgTxId":"t",
            "pgRawResponse":"","version":"V1"}"#,
        );
        assert!(c.certified);
        assert_eq!(
            (c.birth_date, c.ci, c.gender, c.carrier),
            (None, None, None, None)
        );
        assert!(!decode(r#"{"status":"READY","id":"iv-3","requestedCustomer":{}}"#).certified);
        assert!(!decode(r#"{"status":"FAILED","id":"iv-4","failure":{"reason":"x"}}"#).certified);
        let unknown = decode_as(r#"{"status":"EXPIRED_SOMEDAY"}"#, "req");
        assert!(!unknown.certified);
        assert_eq!(unknown.id, "req");
        // New enum values inside do not break decoding either.
        let odd = decode(
            r#"{"status":"VERIFIED","id":"iv-6","verifiedCustomer":{"name":"a","operator":"NEW_TELECOM",
            "gender":"UNSPECIFIED"}}"#,
        );
        assert_eq!(odd.carrier, Some(Carrier::Other("NEW_TELECOM".into())));
        assert_eq!(odd.gender, None);
    }

    #[test]
    fn unreadable_fields_are_unknown_not_fatal() {
        let c = decode(
            r#"{"status":"VERIFIED","id":"iv-7","verifiedAt":"2024-01-01T00:00:01.1234567891Z",
            "verifiedCustomer":{"name":5,"birthDate":"01/02/2000","isForeigner":"N","ci":"CI"},
            "channel":"not an object","customData":{"not":"a string"}}"#,
        );
        assert!(c.certified);
        assert_eq!(c.certified_at.unwrap().as_second(), 1_704_067_201);
        assert_eq!((c.name, c.birth_date, c.foreigner), (None, None, None));
        assert_eq!(c.ci.as_deref(), Some("CI"));
        assert_eq!((c.pg_provider, c.custom_data), (None, None));
        let c = decode(r#"{"status":"VERIFIED","id":"iv-8","verifiedAt":"soon"}"#);
        assert!(c.certified);
        assert_eq!((c.certified_at, c.ci), (None, None));
    }

    #[test]
    fn another_records_id_is_refused() {
        for json in [
            r#"{"status":"VERIFIED","id":"iv-other","verifiedCustomer":{"name":"a"}}"#,
            r#"{"status":"VERIFIED","verifiedCustomer":{"name":"a"}}"#,
            r#"{"status":"READY","id":"iv-other"}"#,
        ] {
            assert!(
                matches!(
                    certification(json.as_bytes(), "iv-1"),
                    Err(Error::Malformed(_))
                ),
                "{json}"
            );
        }
        assert!(matches!(
            certification(b"[]", "iv-1"),
            Err(Error::Malformed(_))
        ));
    }
}
