//! Property tests of every parser and rule the trust boundary rests on, against
//! straightforward oracles. A bounded number of cases runs with `cargo test`; run them longer
//! with `PROPTEST_CASES=100000 cargo test -p iamport-tower --lib proptests`.

use jiff::civil::{Date, date};
use proptest::prelude::*;

use crate::binding::Binding;
use crate::extract::{BodyFormat, id_from_body, id_from_query};
use crate::policy::Policy;
use crate::rejection::Rejection;
use iamport_client::Certification;
use iamport_client::id::{ImpUid, MAX_IMP_UID_LEN};
use iamport_client::korea::full_years;
use iamport_client::v2::IdentityVerificationId;

const FIELDS: &[&str] = &["imp_uid"];

fn v1_cancel(key: &str, value: &str) -> bool {
    (key == "success" || key == "imp_success") && value.eq_ignore_ascii_case("false")
}

/// Keys that matter, near misses, and noise.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("imp_uid".to_owned()),
        Just("imp_uid".to_owned()),
        Just("success".to_owned()),
        Just("imp_success".to_owned()),
        Just("merchant_uid".to_owned()),
        Just("imp_uid ".to_owned()),
        "[a-z_]{0,8}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "imp_[0-9]{12}",
        Just("false".to_owned()),
        Just("true".to_owned()),
        any::<String>(),
    ]
}

proptest! {
    /// The query string: never panics, and an id it returns is the one value of the one
    /// `imp_uid` pair serde reads from the same string — the reading a handler's `Query` makes.
    #[test]
    fn query_ids_agree_with_serde(pairs in prop::collection::vec((key(), value()), 0..6), raw in any::<String>()) {
        let encoded = serde_urlencoded::to_string(&pairs).unwrap();
        for query in [encoded.as_str(), raw.as_str()] {
            let found = id_from_query(Some(query), FIELDS, v1_cancel);
            let Ok(parsed) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
                prop_assert!(found.is_none());
                continue;
            };
            let ids: Vec<&String> = parsed.iter().filter(|(k, _)| k == "imp_uid").map(|(_, v)| v).collect();
            let cancelled = parsed.iter().any(|(k, v)| v1_cancel(k, v));
            match found {
                Some(Ok(id)) => {
                    prop_assert!(!cancelled);
                    prop_assert_eq!(ids.len(), 1);
                    prop_assert_eq!(&id, ids[0]);
                }
                Some(Err(Rejection::Cancelled)) => prop_assert!(cancelled),
                Some(Err(Rejection::AmbiguousId)) => prop_assert!(ids.len() > 1),
                Some(Err(other)) => prop_assert!(false, "unexpected {other:?}"),
                None => prop_assert!(ids.is_empty() && !cancelled),
            }
        }
    }

    /// JSON bodies: never panics on any bytes, and an id it returns is what serde reads as the
    /// object's `imp_uid` (serde_json keeps the last of duplicate keys; the layer refuses
    /// duplicates, so the two readings can never differ).
    #[test]
    fn json_ids_agree_with_serde(
        members in prop::collection::vec((key(), value()), 0..6),
        tail in prop_oneof![Just(String::new()), Just(" \n".to_owned()), Just(" x".to_owned()), Just("{}".to_owned())],
        raw in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let object: String = {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
                .collect();
            format!("{{{}}}{tail}", body.join(","))
        };
        for bytes in [object.as_bytes(), raw.as_slice()] {
            let found = id_from_body(BodyFormat::Json, bytes, FIELDS);
            if let Ok(id) = found {
                match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(value) => prop_assert_eq!(value["imp_uid"].as_str(), Some(id.as_str())),
                    // Not JSON: only PortOne's jQuery form, with exactly one id.
                    Err(_) => {
                        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).unwrap();
                        let ids: Vec<_> = pairs.iter().filter(|(k, _)| k == "imp_uid").collect();
                        prop_assert_eq!(ids.len(), 1);
                        prop_assert_eq!(&ids[0].1, &id);
                    }
                }
            }
        }
    }

    /// Form bodies: an id it returns is the one `imp_uid` serde reads.
    #[test]
    fn form_ids_agree_with_serde(pairs in prop::collection::vec((key(), value()), 0..6), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let encoded = serde_urlencoded::to_string(&pairs).unwrap();
        for bytes in [encoded.as_bytes(), raw.as_slice()] {
            if let Ok(id) = id_from_body(BodyFormat::Form, bytes, FIELDS) {
                let parsed: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).unwrap();
                let ids: Vec<_> = parsed.iter().filter(|(k, _)| k == "imp_uid").collect();
                prop_assert_eq!(ids.len(), 1);
                prop_assert_eq!(&ids[0].1, &id);
            }
        }
    }

    /// v1 ids: exactly `imp_` + ASCII letters/digits, at most 64 bytes — by an oracle that
    /// reads the rule literally.
    #[test]
    fn imp_uids_match_the_rule(text in prop_oneof!["imp_[a-zA-Z0-9]{0,70}", "imp_.{0,10}", any::<String>()]) {
        let oracle = text.len() <= MAX_IMP_UID_LEN
            && text.strip_prefix("imp_").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        let parsed = ImpUid::parse(&text);
        prop_assert_eq!(parsed.is_ok(), oracle, "{:?}", text);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), text.as_str());
        }
    }

    /// v2 ids: non-empty, ≤ 256 bytes, no control characters, not a dot segment.
    #[test]
    fn v2_ids_match_the_rule(text in prop_oneof![any::<String>(), Just(".".to_owned()), Just("..".to_owned()), "[ -~]{0,300}"]) {
        let oracle = !text.is_empty() && text.len() <= 256 && text != "." && text != ".."
            && !text.chars().any(char::is_control);
        prop_assert_eq!(IdentityVerificationId::parse(&text).is_ok(), oracle, "{:?}", text);
    }

    /// Tickets: a round trip holds for any session and secret; any change of one character,
    /// and any other session, fails.
    #[test]
    fn tickets_round_trip_and_resist_changes(
        secret in "[ -~]{1,64}",
        session in "[A-Za-z0-9_-]{1,40}",
        other in "[A-Za-z0-9_-]{1,40}",
        position in 0usize..32,
        replacement in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()),
    ) {
        let binding = Binding::new(secret);
        let ticket = binding.mint_for(&session);
        prop_assert!(binding.verify(&ticket, &session));
        prop_assert_eq!(binding.verify(&ticket, &other), other == session);
        let mut changed = ticket.clone().into_bytes();
        prop_assume!(changed[position] != replacement);
        changed[position] = replacement;
        let changed = String::from_utf8(changed).unwrap();
        prop_assert!(!binding.verify(&changed, &session));
    }

    /// Ages and birth years over the whole 1900–2100 range, against a plain reading of Korean
    /// civil law (a year completes on the anniversary; 29 February's anniversary in a common
    /// year is 1 March).
    #[test]
    fn age_rules_match_an_independent_oracle(
        birth in date_in(1900, 2100),
        today in date_in(1900, 2100),
        min_age in 1u8..=150,
        max_year in 1900u16..=2100,
    ) {
        let oracle = oracle_full_years(birth, today);
        prop_assert_eq!(full_years(birth, today), oracle);

        let mut cert = Certification::new("imp_1", true);
        cert.birth_date = Some(birth);
        let noon_in_korea = today
            .at(12, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::fixed(iamport_client::korea::KST))
            .unwrap()
            .timestamp();
        let admitted = Policy::new().min_age(min_age).check_at(&cert, noon_in_korea).is_ok();
        prop_assert_eq!(admitted, oracle >= i32::from(min_age));
        let admitted = Policy::new().max_birth_year(max_year).check_at(&cert, noon_in_korea).is_ok();
        prop_assert_eq!(admitted, i32::from(birth.year()) <= i32::from(max_year));
        let admitted = Policy::new().min_birth_year(max_year).check_at(&cert, noon_in_korea).is_ok();
        prop_assert_eq!(admitted, i32::from(birth.year()) >= i32::from(max_year));
    }
}

fn date_in(from: i16, to: i16) -> impl Strategy<Value = Date> {
    (from..=to, 1i8..=12, 1i8..=31)
        .prop_filter_map("a real date", |(y, m, d)| Date::new(y, m, d).ok())
}

/// Counts anniversaries one by one: no shortcut shared with the code under test.
fn oracle_full_years(birth: Date, today: Date) -> i32 {
    let anniversary = |year: i16| -> Date {
        if birth.month() == 2 && birth.day() == 29 && Date::new(year, 2, 29).is_err() {
            date(year, 3, 1)
        } else {
            date(year, birth.month(), birth.day())
        }
    };
    if today >= birth {
        let mut years = 0;
        while anniversary(birth.year() + years as i16 + 1) <= today {
            years += 1;
        }
        years
    } else {
        let mut years = 0;
        while anniversary(birth.year() - years as i16) > today {
            years += 1;
        }
        -years
    }
}
