//! What a rejection says, in each [`Language`]: the problem `title` and `detail`.
//!
//! The Korean text is written as Korean sites write error messages: polite (합니다체), with
//! requests as "…해 주세요". The English text is plain product text ("Only people born in 1999
//! or earlier can use this service."), never a developer's word for the route or markup
//! characters. Both state the rule, never the person's data.

use std::time::Duration;

use super::{Language, Rejection};
use crate::policy::PolicyViolation;
use iamport_client::id::InvalidId;

/// Where the layer looked for the id, for [`Rejection::MissingId`]'s sentence.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHint {
    /// The id's field name (`imp_uid`, `identityVerificationId`); `None`: both APIs' names.
    pub(crate) field: Option<&'static str>,
    /// The layer reads the query string only (`query_only`).
    pub(crate) query_only: bool,
}

pub(crate) fn title(rejection: &Rejection, language: Language) -> &'static str {
    match language {
        Language::English => title_en(rejection),
        Language::Korean => title_ko(rejection),
    }
}

pub(crate) fn detail(rejection: &Rejection, language: Language, hint: IdHint) -> String {
    match language {
        Language::English => detail_en(rejection, hint),
        Language::Korean => detail_ko(rejection, hint),
    }
}

fn title_en(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::MissingId => "No identity verification id in the request",
        Rejection::InvalidId(_) => "Malformed identity verification id",
        Rejection::AmbiguousId => "More than one identity verification id",
        Rejection::MalformedBody => "Unreadable request body",
        Rejection::BodyTimeout => "Request body too slow",
        Rejection::SpeculativeRequest => "Not admitted without a real visit",
        Rejection::Cancelled => "Identity verification cancelled",
        Rejection::PayloadTooLarge { .. } => "Request body too large",
        Rejection::Busy { .. } => "Too many requests in progress",
        Rejection::UnknownId => "Unknown identity verification",
        Rejection::Policy(PolicyViolation::NotCertified) => "Identity verification not completed",
        Rejection::Policy(_) => "Requirements not met",
        Rejection::UnboundVerification => "Identity verification not started in this browser",
        Rejection::AlreadyRegistered => "Already registered",
        Rejection::UpstreamFailed => "Identity verification service failed",
        Rejection::UpstreamUnavailable => "Identity verification service unavailable",
        Rejection::UpstreamTimeout => "Identity verification service timed out",
        Rejection::StoreUnavailable => "Existing accounts cannot be checked right now",
        Rejection::LayerMissing => "Server error",
    }
}

fn title_ko(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::MissingId => "본인인증 ID가 없습니다",
        Rejection::InvalidId(_) => "본인인증 ID 형식이 올바르지 않습니다",
        Rejection::AmbiguousId => "본인인증 ID가 두 번 이상 전달되었습니다",
        Rejection::MalformedBody => "요청 본문을 읽을 수 없습니다",
        Rejection::BodyTimeout => "요청 본문이 제시간에 도착하지 않았습니다",
        Rejection::SpeculativeRequest => "페이지를 직접 열어야 처리됩니다",
        Rejection::Cancelled => "본인인증이 취소되었습니다",
        Rejection::PayloadTooLarge { .. } => "요청 본문이 너무 큽니다",
        Rejection::Busy { .. } => "요청이 많아 지금은 처리할 수 없습니다",
        Rejection::UnknownId => "본인인증 내역을 찾을 수 없습니다",
        Rejection::Policy(PolicyViolation::NotCertified) => "본인인증이 완료되지 않았습니다",
        Rejection::Policy(_) => "이용 조건을 충족하지 않습니다",
        Rejection::UnboundVerification => "이 브라우저에서 진행한 본인인증이 아닙니다",
        Rejection::AlreadyRegistered => "이미 가입된 회원입니다",
        Rejection::UpstreamFailed => "본인인증 서비스에 오류가 발생했습니다",
        Rejection::UpstreamUnavailable => "본인인증 서비스에 연결할 수 없습니다",
        Rejection::UpstreamTimeout => "본인인증 서비스의 응답이 지연되고 있습니다",
        Rejection::StoreUnavailable => "중복 가입 여부를 확인할 수 없습니다",
        Rejection::LayerMissing => "서버 설정에 문제가 있습니다",
    }
}

fn detail_en(rejection: &Rejection, hint: IdHint) -> String {
    match rejection {
        Rejection::MissingId => {
            let field = match hint.field {
                Some(field) => field.to_owned(),
                None => "imp_uid, or identityVerificationId for PortOne v2".into(),
            };
            if hint.query_only {
                format!("Send the identity verification id ({field}) in the query string.")
            } else {
                format!(
                    "Send the identity verification id ({field}) in the query string or in a JSON or form body."
                )
            }
        }
        Rejection::InvalidId(e) => invalid_id_en(e),
        Rejection::AmbiguousId => "Send one identity verification id: the query string and the body, or two spellings of the field, name different ones.".into(),
        Rejection::MalformedBody => "The JSON or form body could not be parsed, or it names the identity verification id more than once.".into(),
        Rejection::BodyTimeout => "The request body did not arrive in time. Please try again.".into(),
        Rejection::SpeculativeRequest => "Previews, prefetches and HEAD or OPTIONS requests are not processed. Please open the page itself.".into(),
        Rejection::Cancelled => "To continue, please verify your identity again.".into(),
        Rejection::PayloadTooLarge { limit } => format!("The request body exceeds {limit} bytes."),
        Rejection::Busy { .. } => "The server is reading too many requests right now. Please try again shortly.".into(),
        Rejection::UnknownId => "No completed identity verification was found. Please verify again.".into(),
        Rejection::Policy(v) => violation_en(v),
        Rejection::UnboundVerification => "Only the browser that started the identity verification can use it. Please verify again.".into(),
        Rejection::AlreadyRegistered => "You already have an account, or one is being created right now.".into(),
        Rejection::UpstreamFailed | Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => {
            "Your identity verification cannot be checked right now. Please try again shortly.".into()
        }
        Rejection::StoreUnavailable => "We cannot check for an existing account right now. Please try again shortly.".into(),
        Rejection::LayerMissing => "Something is wrong on the server; it has been logged. Please try again later.".into(),
    }
}

fn detail_ko(rejection: &Rejection, hint: IdHint) -> String {
    match rejection {
        Rejection::MissingId => {
            let field = match hint.field {
                Some(field) => field.to_owned(),
                None => "imp_uid, PortOne v2는 identityVerificationId".into(),
            };
            if hint.query_only {
                format!("본인인증 ID({field})를 쿼리 문자열에 담아 보내 주세요.")
            } else {
                format!("본인인증 ID({field})를 쿼리 문자열이나 JSON 또는 폼 본문에 담아 보내 주세요.")
            }
        }
        Rejection::InvalidId(e) => invalid_id_ko(e),
        Rejection::AmbiguousId => "쿼리 문자열과 본문, 또는 두 가지 필드 이름에 서로 다른 본인인증 ID가 들어 있습니다. 본인인증 ID는 하나만 보내 주세요.".into(),
        Rejection::MalformedBody => "JSON 또는 폼 본문을 해석할 수 없거나, 본문에 본인인증 ID가 두 번 이상 들어 있습니다.".into(),
        Rejection::BodyTimeout => "요청 본문이 제한 시간 안에 도착하지 않았습니다. 다시 시도해 주세요.".into(),
        Rejection::SpeculativeRequest => "HEAD, OPTIONS 요청과 미리 가져오기(prefetch) 요청은 처리하지 않습니다. 페이지를 직접 열어 주세요.".into(),
        Rejection::Cancelled => "계속하려면 본인인증을 다시 진행해 주세요.".into(),
        Rejection::PayloadTooLarge { limit } => format!("요청 본문이 {limit}바이트를 넘습니다."),
        Rejection::Busy { .. } => "지금은 처리 중인 요청이 많습니다. 잠시 후 다시 시도해 주세요.".into(),
        Rejection::UnknownId => "이 ID로 완료된 본인인증 내역이 없습니다.".into(),
        Rejection::Policy(v) => violation_ko(v),
        Rejection::UnboundVerification => "본인인증을 시작한 브라우저에서만 이용할 수 있습니다. 다시 인증해 주세요.".into(),
        Rejection::AlreadyRegistered => "한 사람당 계정은 하나만 만들 수 있습니다. 가입이 진행 중이라면 잠시 후 확인해 주세요.".into(),
        Rejection::UpstreamFailed | Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => {
            "지금은 본인인증 정보를 확인할 수 없습니다. 잠시 후 다시 시도해 주세요.".into()
        }
        Rejection::StoreUnavailable => "이미 가입한 계정이 있는지 지금은 확인하지 못했습니다. 잠시 후 다시 시도해 주세요.".into(),
        Rejection::LayerMissing => "서버 설정 문제로 요청을 처리하지 못했습니다. 이 문제는 기록되었습니다.".into(),
    }
}

fn invalid_id_ko(e: &InvalidId) -> String {
    match e {
        InvalidId::Empty => "본인인증 ID가 비어 있습니다.".into(),
        InvalidId::TooLong { len, max } => {
            format!("본인인증 ID가 {len}바이트입니다. 최대 {max}바이트까지 보낼 수 있습니다.")
        }
        InvalidId::MissingPrefix => "PortOne v1 본인인증 ID는 imp_로 시작해야 합니다.".into(),
        InvalidId::ForbiddenCharacter { index } => {
            format!("본인인증 ID의 바이트 위치 {index}에 쓸 수 없는 문자가 있습니다.")
        }
        InvalidId::DotSegment => {
            "본인인증 ID는 점 하나나 점 두 개만으로 이루어질 수 없습니다.".into()
        }
        // A reason a later `iamport-client` adds: the general sentence.
        _ => "본인인증 ID의 형식이 올바르지 않습니다.".into(),
    }
}

fn invalid_id_en(e: &InvalidId) -> String {
    match e {
        InvalidId::Empty => "The identity verification id is empty.".into(),
        InvalidId::TooLong { len, max } => format!(
            "The identity verification id is {len} bytes long; at most {max} bytes are allowed."
        ),
        InvalidId::MissingPrefix => {
            "A PortOne v1 identity verification id starts with imp_.".into()
        }
        InvalidId::ForbiddenCharacter { index } => format!(
            "The identity verification id has a character that is not allowed, at byte {index}."
        ),
        InvalidId::DotSegment => {
            "The identity verification id cannot be a single dot or two dots.".into()
        }
        // A reason a later `iamport-client` adds: the general sentence.
        _ => "The identity verification id is malformed.".into(),
    }
}

fn violation_en(v: &PolicyViolation) -> String {
    match v {
        PolicyViolation::NotCertified => {
            "Please complete the identity verification and try again.".into()
        }
        PolicyViolation::BirthDateUnknown => {
            "The identity verification has no birth date, so the age requirement cannot be checked."
                .into()
        }
        PolicyViolation::BornTooEarly { min_birth_year } => {
            format!("Only people born in {min_birth_year} or later can use this service.")
        }
        PolicyViolation::BornTooLate { max_birth_year } => {
            format!("Only people born in {max_birth_year} or earlier can use this service.")
        }
        PolicyViolation::TooYoung { min_age } => {
            format!("Only people aged {min_age} or older can use this service.")
        }
        PolicyViolation::Foreigner => "Only Korean nationals can use this service.".into(),
        PolicyViolation::CiUnknown => "The identity verification has no connecting information \
            (CI), so one account per person cannot be checked."
            .into(),
        PolicyViolation::CertifiedAtUnknown => "The identity verification has no completion \
            time, so the requirements cannot be checked."
            .into(),
        PolicyViolation::Stale { fresh_within } => format!(
            "More than {} have passed since your identity verification. Please verify again.",
            duration_en(*fresh_within)
        ),
    }
}

/// `600s` → `10 minutes`, `5400s` → `1 hour 30 minutes`, `90s` → `90 seconds`.
fn duration_en(d: Duration) -> String {
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let unit = |n: u64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    if seconds != 0 {
        return unit(secs, "second");
    }
    match (hours, minutes) {
        (0, m) => unit(m, "minute"),
        (h, 0) => unit(h, "hour"),
        (h, m) => format!("{} {}", unit(h, "hour"), unit(m, "minute")),
    }
}

fn violation_ko(v: &PolicyViolation) -> String {
    match v {
        PolicyViolation::NotCertified => "본인인증을 끝까지 마친 뒤 다시 시도해 주세요.".into(),
        PolicyViolation::BirthDateUnknown => {
            "본인인증 정보에 생년월일이 없어 이용 조건을 확인할 수 없습니다.".into()
        }
        PolicyViolation::BornTooEarly { min_birth_year } => {
            format!("{min_birth_year}년 또는 그 이후에 태어난 분만 이용할 수 있습니다.")
        }
        PolicyViolation::BornTooLate { max_birth_year } => {
            format!("{max_birth_year}년 또는 그 이전에 태어난 분만 이용할 수 있습니다.")
        }
        PolicyViolation::TooYoung { min_age } => {
            format!("만 {min_age}세 이상인 분만 이용할 수 있습니다.")
        }
        PolicyViolation::Foreigner => "내국인만 이용할 수 있습니다.".into(),
        PolicyViolation::CiUnknown => {
            "본인인증 정보에 연계정보(CI)가 없어 중복 가입 여부를 확인할 수 없습니다.".into()
        }
        PolicyViolation::CertifiedAtUnknown => {
            "본인인증 정보에 인증 완료 시각이 없어 이용 조건을 확인할 수 없습니다.".into()
        }
        PolicyViolation::Stale { fresh_within } => format!(
            "본인인증 후 {}이 지났습니다. 다시 인증해 주세요.",
            duration_ko(*fresh_within)
        ),
    }
}

/// `600s` → `10분`, `5400s` → `1시간 30분`, `90s` → `90초`.
fn duration_ko(d: Duration) -> String {
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if seconds != 0 {
        return format!("{secs}초");
    }
    match (hours, minutes) {
        (0, m) => format!("{m}분"),
        (h, 0) => format!("{h}시간"),
        (h, m) => format!("{h}시간 {m}분"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_rejection() -> Vec<Rejection> {
        vec![
            Rejection::MissingId,
            Rejection::InvalidId(InvalidId::Empty),
            Rejection::InvalidId(InvalidId::TooLong { len: 70, max: 64 }),
            Rejection::InvalidId(InvalidId::MissingPrefix),
            Rejection::InvalidId(InvalidId::ForbiddenCharacter { index: 5 }),
            Rejection::InvalidId(InvalidId::DotSegment),
            Rejection::AmbiguousId,
            Rejection::MalformedBody,
            Rejection::BodyTimeout,
            Rejection::SpeculativeRequest,
            Rejection::Cancelled,
            Rejection::PayloadTooLarge { limit: 65536 },
            Rejection::Busy {
                retry_after: Duration::from_secs(10),
            },
            Rejection::UnknownId,
            Rejection::Policy(PolicyViolation::NotCertified),
            Rejection::Policy(PolicyViolation::BirthDateUnknown),
            Rejection::Policy(PolicyViolation::BornTooEarly {
                min_birth_year: 2000,
            }),
            Rejection::Policy(PolicyViolation::BornTooLate {
                max_birth_year: 1999,
            }),
            Rejection::Policy(PolicyViolation::TooYoung { min_age: 19 }),
            Rejection::Policy(PolicyViolation::Foreigner),
            Rejection::Policy(PolicyViolation::CiUnknown),
            Rejection::Policy(PolicyViolation::CertifiedAtUnknown),
            Rejection::Policy(PolicyViolation::Stale {
                fresh_within: Duration::from_secs(600),
            }),
            Rejection::UnboundVerification,
            Rejection::AlreadyRegistered,
            Rejection::UpstreamFailed,
            Rejection::UpstreamUnavailable,
            Rejection::UpstreamTimeout,
            Rejection::StoreUnavailable,
            Rejection::LayerMissing,
        ]
    }

    fn has_hangul(s: &str) -> bool {
        s.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c))
    }

    #[test]
    fn every_rejection_has_korean_and_english() {
        for rejection in every_rejection() {
            let hint = IdHint::default();
            let (ko_title, ko_detail) = (
                title(&rejection, Language::Korean),
                detail(&rejection, Language::Korean, hint),
            );
            let (en_title, en_detail) = (
                title(&rejection, Language::English),
                detail(&rejection, Language::English, hint),
            );
            assert!(
                has_hangul(ko_title) && has_hangul(&ko_detail),
                "{rejection:?}"
            );
            assert!(
                !has_hangul(en_title) && !has_hangul(&en_detail),
                "{rejection:?}"
            );
            // Titles are headlines (no full stop); details are sentences.
            assert!(
                !ko_title.ends_with('.') && !en_title.ends_with('.'),
                "{rejection:?}"
            );
            assert!(
                ko_detail.ends_with('.') && en_detail.ends_with('.'),
                "{rejection:?}"
            );
            // Polite style throughout: statements end in -니다, requests in -주세요.
            for sentence in ko_detail.split_terminator(". ") {
                let sentence = sentence.trim_end_matches('.');
                assert!(
                    sentence.ends_with("니다") || sentence.ends_with("주세요"),
                    "not polite: {sentence:?} in {ko_detail:?}"
                );
            }
            assert!(ko_title.ends_with("니다"), "{ko_title}");
            // Product text: no developer's words, no markup characters, no headline
            // repeated as the detail.
            for text in [ko_title, en_title, ko_detail.as_str(), en_detail.as_str()] {
                assert!(!text.contains('`') && !text.contains("route"), "{text:?}");
            }
            assert!(
                !ko_detail.contains(ko_title.trim_end_matches("니다")),
                "{ko_detail:?}"
            );
            assert!(
                en_detail.starts_with(|c: char| c.is_ascii_uppercase()),
                "{en_detail:?}"
            );
        }
    }

    #[test]
    fn english_wording() {
        let en = |r: Rejection| detail(&r, Language::English, IdHint::default());
        assert_eq!(
            en(Rejection::Policy(PolicyViolation::BornTooLate {
                max_birth_year: 1999
            })),
            "Only people born in 1999 or earlier can use this service."
        );
        assert_eq!(
            en(Rejection::Policy(PolicyViolation::TooYoung { min_age: 19 })),
            "Only people aged 19 or older can use this service."
        );
        assert_eq!(
            en(Rejection::InvalidId(InvalidId::MissingPrefix)),
            "A PortOne v1 identity verification id starts with imp_."
        );
        assert_eq!(
            en(Rejection::Policy(PolicyViolation::Stale {
                fresh_within: Duration::from_secs(5400)
            })),
            "More than 1 hour 30 minutes have passed since your identity verification. Please \
             verify again."
        );
        assert_eq!(duration_en(Duration::from_secs(60)), "1 minute");
        assert_eq!(duration_en(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn korean_wording() {
        let ko = |r: Rejection| detail(&r, Language::Korean, IdHint::default());
        assert_eq!(
            ko(Rejection::Policy(PolicyViolation::TooYoung { min_age: 19 })),
            "만 19세 이상인 분만 이용할 수 있습니다."
        );
        assert_eq!(
            ko(Rejection::Policy(PolicyViolation::BornTooLate {
                max_birth_year: 1999
            })),
            "1999년 또는 그 이전에 태어난 분만 이용할 수 있습니다."
        );
        assert_eq!(
            ko(Rejection::Policy(PolicyViolation::Stale {
                fresh_within: Duration::from_secs(5400)
            })),
            "본인인증 후 1시간 30분이 지났습니다. 다시 인증해 주세요."
        );
        assert_eq!(duration_ko(Duration::from_secs(90)), "90초");
        assert_eq!(duration_ko(Duration::from_secs(600)), "10분");
        assert_eq!(duration_ko(Duration::from_secs(86400)), "24시간");
    }

    #[test]
    fn the_missing_id_sentence_says_where_to_look() {
        let query_only = IdHint {
            field: Some("imp_uid"),
            query_only: true,
        };
        let bodies = IdHint {
            field: Some("identityVerificationId"),
            query_only: false,
        };
        let en = detail(&Rejection::MissingId, Language::English, query_only);
        assert_eq!(
            en,
            "Send the identity verification id (imp_uid) in the query string."
        );
        let ko = detail(&Rejection::MissingId, Language::Korean, query_only);
        assert_eq!(ko, "본인인증 ID(imp_uid)를 쿼리 문자열에 담아 보내 주세요.");
        let en = detail(&Rejection::MissingId, Language::English, bodies);
        assert!(en.contains("(identityVerificationId)") && en.contains("JSON or form body"));
        assert!(!en.contains("imp_uid"));
    }
}
