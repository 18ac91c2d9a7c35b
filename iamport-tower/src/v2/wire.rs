//! PortOne v2 wire shapes: the identity verification (tagged by `status`) and error bodies.

use serde::Deserialize;

use crate::certification::{Carrier, Certification, Gender};
use crate::error::Error;

/// `GET /identity-verifications/{id}` → an object tagged by `status`. Unknown statuses
/// (PortOne may add some) decode as not verified. No `Debug`: it holds personal data.
#[derive(Deserialize)]
#[serde(tag = "status")]
pub(crate) enum IdentityVerification {
    #[serde(rename = "VERIFIED", rename_all = "camelCase")]
    Verified {
        id: String,
        verified_customer: Box<VerifiedCustomer>,
        verified_at: Option<String>,
        pg_tx_id: Option<String>,
        channel: Option<Channel>,
    },
    #[serde(rename = "READY")]
    Ready { id: String },
    #[serde(rename = "FAILED")]
    Failed { id: String },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifiedCustomer {
    name: String,
    operator: Option<String>,
    phone_number: Option<String>,
    birth_date: Option<String>,
    gender: Option<String>,
    is_foreigner: Option<bool>,
    ci: Option<String>,
    di: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Channel {
    pg_provider: Option<String>,
}

/// `{"type": "IDENTITY_VERIFICATION_NOT_FOUND", "message": "…"}`
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) message: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl IdentityVerification {
    /// The normalized certification; `requested_id` names records of unknown status.
    pub(crate) fn into_certification(self, requested_id: &str) -> Result<Certification, Error> {
        match self {
            Self::Verified {
                id,
                verified_customer: c,
                verified_at,
                pg_tx_id,
                channel,
            } => {
                let mut cert = Certification::new(id, true);
                cert.name = Some(c.name).filter(|n| !n.is_empty());
                cert.carrier = non_empty(c.operator).map(|o| Carrier::from_wire(&o));
                cert.phone = non_empty(c.phone_number);
                cert.birth_date = match non_empty(c.birth_date) {
                    Some(text) => Some(text.parse().map_err(|_| {
                        Error::Malformed("`birthDate` is not a yyyy-MM-dd date".into())
                    })?),
                    None => None,
                };
                cert.gender = c.gender.as_deref().and_then(Gender::from_wire);
                cert.foreigner = c.is_foreigner;
                cert.unique_key = non_empty(c.ci);
                cert.unique_in_site = non_empty(c.di);
                cert.pg_tid = non_empty(pg_tx_id);
                cert.pg_provider = channel
                    .and_then(|c| non_empty(c.pg_provider))
                    .map(|p| p.to_ascii_lowercase());
                cert.certified_at = match non_empty(verified_at) {
                    Some(text) => Some(text.parse().map_err(|_| {
                        Error::Malformed("`verifiedAt` is not an RFC 3339 timestamp".into())
                    })?),
                    None => None,
                };
                Ok(cert)
            }
            Self::Ready { id } | Self::Failed { id } => Ok(Certification::new(id, false)),
            Self::Unknown => Ok(Certification::new(requested_id, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Certification {
        serde_json::from_str::<IdentityVerification>(json)
            .map_err(|e| e.to_string())
            .unwrap()
            .into_certification("req")
            .unwrap()
    }

    #[test]
    fn full_verified_object() {
        let c = decode(
            r#"{"status":"VERIFIED","id":"iv-1","channel":{"type":"LIVE","id":"ch","key":"k",
            "name":"n","pgProvider":"DANAL","pgMerchantId":"m"},"verifiedCustomer":{"id":"cust",
            "name":"홍길동","operator":"LGU_MVNO","phoneNumber":"01000000000","birthDate":"2000-01-01",
            "gender":"OTHER","isForeigner":false,"ci":"CI","di":"DI","futureField":1},
            "customData":"{}","requestedAt":"2024-01-01T00:00:00Z","updatedAt":"2024-01-01T00:00:01Z",
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
            (c.birth_date, c.unique_key, c.gender, c.carrier),
            (None, None, None, None)
        );
        assert!(!decode(r#"{"status":"READY","id":"iv-3","requestedCustomer":{}}"#).certified);
        assert!(!decode(r#"{"status":"FAILED","id":"iv-4","failure":{"reason":"x"}}"#).certified);
        let unknown = decode(r#"{"status":"EXPIRED_SOMEDAY","id":"iv-5"}"#);
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
}
