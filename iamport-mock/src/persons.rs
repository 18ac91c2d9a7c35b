//! Test persons in PortOne v1's exact wire shape.

use serde_json::{Value, json};

/// A v1 certification object (the `response` of `GET /certifications/{imp_uid}`) for a
/// verified person, with every field a Danal contract with carrier pre-approval returns.
///
/// CI and DI are derived from name and birthday, so the same person verified twice (two ids)
/// has the same CI — what "one account per person" keys on. `birth` is midnight in Korea of
/// `birthday`, as PortOne sends it.
///
/// ```
/// let p = iamport_mock::person("imp_100000000001", "홍길동", "1990-01-01");
/// assert_eq!(p["birth"], 631119600);
/// ```
pub fn person(imp_uid: &str, name: &str, birthday: &str) -> Value {
    let birth = birthday
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| {
            d.to_zoned(jiff::tz::TimeZone::fixed(iamport_tower::korea::KST))
                .ok()
        })
        .map(|z| z.timestamp().as_second());
    let seed = format!("{name}|{birthday}");
    json!({
        "imp_uid": imp_uid,
        "merchant_uid": format!("mid_{}", imp_uid.trim_start_matches("imp_")),
        "pg_tid": format!("tid{}", imp_uid.trim_start_matches("imp_")),
        "pg_provider": "danal",
        "name": name,
        "gender": "male",
        "birthday": birthday,
        "birth": birth,
        "foreigner": false,
        "foreigner_v2": false,
        "phone": "01012345678",
        "carrier": "SKT",
        "certified": true,
        "certified_at": jiff::Timestamp::now().as_second(),
        "unique_key": pseudo_ci(&seed, 88),
        "unique_in_site": pseudo_ci(&format!("site|{seed}"), 64),
        "origin": "http://localhost/signup",
    })
}

/// A deterministic base64-looking string of `len` characters (a stand-in for CI/DI).
fn pseudo_ci(seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // FNV-1a, then an xorshift stream: not cryptographic, only stable and well spread.
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = String::with_capacity(len);
    for _ in 0..len - 2 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(char::from(ALPHABET[(state % 64) as usize]));
    }
    out.push_str("==");
    out
}

/// The persons every emulator starts with (unless told otherwise), one per situation the
/// examples and tests need. Birth years are fixed, so "minor" stays a minor until 2031.
///
/// | imp_uid | who |
/// |---|---|
/// | `imp_100000000001` | 김성인, adult born 1990-01-01 |
/// | `imp_100000000002` | 이청소, minor born 2012-05-05 |
/// | `imp_100000000003` | John Smith, adult foreign national |
/// | `imp_100000000004` | 박정월, born 2000-01-01 — only `birth` (old record), no `birthday` |
/// | `imp_100000000005` | 최실패, a verification that did not complete (`certified: false`) |
/// | `imp_100000000006` | 정최소, contract without phone/carrier/gender/nationality fields |
/// | `imp_100000000007` | 한가입, adult born 1985-06-15 (the demo registers this person at startup) |
pub fn sample_persons() -> Vec<Value> {
    labeled_sample_persons()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// What each sample person demonstrates, by `imp_uid` (the same ids work as v2
/// `identityVerificationId`s): the `--help` text, the banner and the index page list them.
pub const SAMPLE_GUIDE: &[(&str, &str)] = &[
    (
        "imp_100000000001",
        "an adult (김성인, born 1990-01-01): admitted by every age rule",
    ),
    (
        "imp_100000000002",
        "a minor (이청소, born 2012-05-05): refused by `min_age = 19` and `max_birth_year = 1999` (403)",
    ),
    (
        "imp_100000000003",
        "a foreign national (John Smith, born 1988): refused by `foreigners = false`, admitted otherwise",
    ),
    (
        "imp_100000000004",
        "an old record with only `birth` (박정월, 2000-01-01 in Korea, 1999-12-31 in UTC): refused by `max_birth_year = 1999`",
    ),
    (
        "imp_100000000005",
        "a verification that did not complete (`certified: false`): refused (403 not-certified)",
    ),
    (
        "imp_100000000006",
        "a minimal contract (정최소, born 1985): no phone, carrier, gender or nationality; admitted",
    ),
    (
        "imp_100000000007",
        "an adult (한가입, born 1985) the axum-signup demo registers at startup: 409 already-registered there",
    ),
];

/// What the verification page shows for a person, in Korean and in English: the page speaks
/// the browser's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// 한국어.
    pub ko: &'static str,
    /// English.
    pub en: &'static str,
}

impl Label {
    /// The label in `language`.
    pub fn in_language(&self, language: iamport_tower::Language) -> &'static str {
        match language {
            iamport_tower::Language::Korean => self.ko,
            _ => self.en,
        }
    }
}

/// [`sample_persons`] with the labels the verification page shows.
pub fn labeled_sample_persons() -> Vec<(Label, Value)> {
    let adult = person("imp_100000000001", "김성인", "1990-01-01");
    let minor = person("imp_100000000002", "이청소", "2012-05-05");
    let mut foreigner = person("imp_100000000003", "John Smith", "1988-07-14");
    foreigner["foreigner"] = json!(true);
    foreigner["foreigner_v2"] = json!(true);
    let mut old_record = person("imp_100000000004", "박정월", "2000-01-01");
    if let Some(object) = old_record.as_object_mut() {
        object.remove("birthday");
    }
    let mut failed = person("imp_100000000005", "최실패", "1995-03-03");
    failed["certified"] = json!(false);
    let mut minimal = person("imp_100000000006", "정최소", "1985-12-31");
    if let Some(object) = minimal.as_object_mut() {
        for field in ["phone", "carrier"] {
            object.remove(field);
        }
        object.insert("gender".into(), Value::Null);
        object.insert("foreigner_v2".into(), Value::Null);
    }
    let registered = person("imp_100000000007", "한가입", "1985-06-15");
    let label = |ko, en| Label { ko, en };
    vec![
        (label("성인, 1990년생", "Adult, born 1990"), adult),
        (label("미성년자, 2012년생", "Minor, born 2012"), minor),
        (
            label("외국인, 1988년생", "Foreign national, born 1988"),
            foreigner,
        ),
        (
            label(
                "2000년 1월 1일생, 생년월일 필드가 없는 옛 기록",
                "Born 1 January 2000, an old record without a birthday field",
            ),
            old_record,
        ),
        (
            label("인증을 마치지 않은 사람", "Verification not completed"),
            failed,
        ),
        (
            label(
                "최소 정보: 전화번호, 통신사, 성별 없음",
                "Minimal record: no phone, carrier or gender",
            ),
            minimal,
        ),
        (
            label("데모에 이미 가입한 사람", "Already registered in the demo"),
            registered,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_person_same_ci() {
        let a = person("imp_1", "홍길동", "1990-01-01");
        let b = person("imp_2", "홍길동", "1990-01-01");
        let c = person("imp_3", "홍길동", "1990-01-02");
        assert_eq!(a["unique_key"], b["unique_key"]);
        assert_ne!(a["unique_key"], c["unique_key"]);
        assert_eq!(a["unique_key"].as_str().unwrap().len(), 88);
        assert_eq!(person("imp_4", "x", "2000-01-01")["birth"], 946_652_400);
    }
}
