//! `Certification`: one normalized identity verification, whichever PortOne API produced it.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;

/// A verified (or not) person, as PortOne reported it.
///
/// Built by the v1 client from `GET /certifications/{imp_uid}` (and by other
/// [`CertificationSource`](crate::CertificationSource)s from their own shapes). Optional fields
/// are `None` when PortOne did not send them: phone and carrier need a carrier contract,
/// gender is often missing with `inicis_unified`, nationality needs the foreigner contract.
///
/// `Debug` masks the verification id (a bearer credential: whoever holds it can present the
/// verification), name, phone, birth date, CI, DI, the merchant's customer id and custom
/// data, so logging a `Certification` by mistake leaks nothing personal.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Certification {
    /// PortOne's id for the verification (`imp_uid`, or v2's `identityVerificationId`).
    pub id: String,
    /// The merchant's own id for the verification (`merchant_uid`).
    pub merchant_uid: Option<String>,
    /// Which verification provider ran it (`danal`, `inicis_unified`, `kcp_v2`, …).
    pub pg_provider: Option<String>,
    /// The provider's transaction id.
    pub pg_tid: Option<String>,
    /// Real name.
    pub name: Option<String>,
    /// Gender, when the provider reports it.
    pub gender: Option<Gender>,
    /// Birth date, a calendar date in Korea.
    pub birth_date: Option<Date>,
    /// Phone number, digits only; absent unless the carrier pre-approved the merchant.
    pub phone: Option<String>,
    /// Mobile carrier; absent likewise.
    pub carrier: Option<Carrier>,
    /// Whether the person is a foreign national; `None` when PortOne did not report it
    /// (the foreigner flag needs a contract with the provider).
    pub foreigner: Option<bool>,
    /// Whether the verification succeeded. Every policy requires `true`.
    pub certified: bool,
    /// When the verification completed.
    pub certified_at: Option<Timestamp>,
    /// CI (PortOne's `unique_key`): one value per person across Korea. Personal data. Not the
    /// store key: that is the keyed hash `Certified::store_key` gives.
    pub ci: Option<String>,
    /// DI (PortOne's `unique_in_site`): one value per person per merchant. Personal data.
    pub di: Option<String>,
    /// URL of the page where the verification ran.
    pub origin: Option<String>,
    /// v2: the merchant's own id for the customer, as the browser passed it in
    /// `customer.id` (`verifiedCustomer.id`). Masked in `Debug`.
    pub customer_id: Option<String>,
    /// v2: the merchant's `customData` string, round-tripped verbatim from the browser call.
    /// Masked in `Debug` (it may hold anything).
    pub custom_data: Option<String>,
    /// v2: the key of the channel (PG contract) that ran the verification (`channel.key`).
    pub channel_key: Option<String>,
}

impl Certification {
    /// A certification with only an id and the `certified` flag; set the other public fields
    /// as needed (useful for custom [`CertificationSource`](crate::CertificationSource)s and
    /// tests).
    pub fn new(id: impl Into<String>, certified: bool) -> Self {
        Self {
            id: id.into(),
            merchant_uid: None,
            pg_provider: None,
            pg_tid: None,
            name: None,
            gender: None,
            birth_date: None,
            phone: None,
            carrier: None,
            foreigner: None,
            certified,
            certified_at: None,
            ci: None,
            di: None,
            origin: None,
            customer_id: None,
            custom_data: None,
            channel_key: None,
        }
    }
}

/// Masks a personal field: shows only whether it is present.
struct Masked(bool);

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "<redacted>" } else { "None" })
    }
}

impl fmt::Debug for Certification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certification")
            .field("id", &Masked(!self.id.is_empty()))
            .field("merchant_uid", &self.merchant_uid)
            .field("pg_provider", &self.pg_provider)
            .field("pg_tid", &self.pg_tid)
            .field("name", &Masked(self.name.is_some()))
            .field("gender", &self.gender)
            .field("birth_date", &Masked(self.birth_date.is_some()))
            .field("phone", &Masked(self.phone.is_some()))
            .field("carrier", &self.carrier)
            .field("foreigner", &self.foreigner)
            .field("certified", &self.certified)
            .field("certified_at", &self.certified_at)
            .field("ci", &Masked(self.ci.is_some()))
            .field("di", &Masked(self.di.is_some()))
            .field("origin", &self.origin)
            .field("customer_id", &Masked(self.customer_id.is_some()))
            .field("custom_data", &Masked(self.custom_data.is_some()))
            .field("channel_key", &self.channel_key)
            .finish()
    }
}

/// Gender as reported by the verification provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Gender {
    /// `male` (v1) / `MALE` (v2).
    Male,
    /// `female` (v1) / `FEMALE` (v2).
    Female,
    /// `OTHER` (v2 only).
    Other,
}

impl Gender {
    /// Parses PortOne's spelling in either API version; unknown values give `None`.
    pub fn from_wire(value: &str) -> Option<Self> {
        let is = |name: &str| value.eq_ignore_ascii_case(name);
        if is("male") {
            Some(Self::Male)
        } else if is("female") {
            Some(Self::Female)
        } else if is("other") {
            Some(Self::Other)
        } else {
            None
        }
    }
}

/// Mobile carrier of the verified phone. v1 spells LG U+ `LGT`, v2 `LGU`; both map to
/// [`Carrier::LgUplus`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Carrier {
    /// SK Telecom.
    Skt,
    /// KT.
    Kt,
    /// LG U+.
    LgUplus,
    /// An MVNO on SK Telecom's network.
    SktMvno,
    /// An MVNO on KT's network.
    KtMvno,
    /// An MVNO on LG U+'s network.
    LgUplusMvno,
    /// A value this version does not know, kept verbatim.
    Other(String),
}

impl Carrier {
    /// Parses PortOne's spelling in either API version.
    pub fn from_wire(value: &str) -> Self {
        match value {
            "SKT" => Self::Skt,
            "KT" => Self::Kt,
            "LGT" | "LGU" => Self::LgUplus,
            "SKT_MVNO" => Self::SktMvno,
            "KT_MVNO" => Self::KtMvno,
            "LGT_MVNO" | "LGU_MVNO" => Self::LgUplusMvno,
            other => Self::Other(other.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_personal_data() {
        let mut c = Certification::new("imp_123456789012", true);
        c.name = Some("홍길동".into());
        c.phone = Some("01012345678".into());
        c.birth_date = Some(jiff::civil::date(1990, 1, 1));
        c.ci = Some("CI-SECRET-VALUE".into());
        c.di = Some("DI-SECRET-VALUE".into());
        c.customer_id = Some("customer-7".into());
        c.custom_data = Some(r#"{"coupon":"SECRET"}"#.into());
        let shown = format!("{c:?} {c:#?}");
        for secret in [
            "홍길동",
            "01012345678",
            "1990",
            "CI-SECRET",
            "DI-SECRET",
            "customer-7",
            "coupon",
            "123456789012",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn wire_enums() {
        assert_eq!(Carrier::from_wire("LGT"), Carrier::LgUplus);
        assert_eq!(Carrier::from_wire("LGU_MVNO"), Carrier::LgUplusMvno);
        assert_eq!(Carrier::from_wire("NEW"), Carrier::Other("NEW".into()));
        assert_eq!(Gender::from_wire("MALE"), Some(Gender::Male));
        assert_eq!(Gender::from_wire("female"), Some(Gender::Female));
        assert_eq!(Gender::from_wire("x"), None);
    }
}
